//! Typed PromQL for the four signals: metric and label names, matchers, window and quantile come
//! from a [`SourceConfig`]; backend names are regex-escaped and string-escaped before they enter
//! a query; a group's backends are split into chunks only when a query would exceed
//! [`SourceConfig::max_query_bytes`].
//!
//! # The queries (Linkerd defaults)
//!
//! For a chunk of backends, `SEL` is `direction="outbound", dst_namespace=~"ns1|ns2",
//! dst_service=~"a|b|c"` (a cross product: a series of a namespace/service pair that was not
//! requested is ignored when decoding, so over-selection is harmless) and `W` the group's window:
//!
//! - latency: `histogram_quantile(Q, sum by (le, dst_namespace, dst_service)
//!   (rate(response_latency_ms_bucket{SEL, status_code!~"5.."}[W])))`, converted from ms to
//!   seconds by the decoder. The latency histogram has no `classification` label but carries
//!   `status_code`: linkerd2-proxy's integration test `test_response_latency`
//!   (`linkerd/app/integration/src/tests/telemetry/mod.rs`) asserts
//!   `response_latency_ms_bucket{status_code="200", le="1000"}`, and its
//!   `response_classification` test shows `classification="failure"` exactly for 5xx. So
//!   excluding `5..` selects the latency of successful requests; gRPC failures ride on HTTP 200
//!   and remain included (an approximation).
//! - success rate: `sum by (dst_namespace, dst_service, classification)
//!   (rate(response_total{SEL}[W]))`; the decoder computes success / (all classifications). One
//!   query instead of a PromQL division so that a backend whose every request fails answers 0
//!   (a division would drop it: no `success` series) and one without traffic answers NaN.
//! - RPS: `sum by (dst_namespace, dst_service) (rate(request_total{SEL}[W]))`. Requests, not
//!   responses: the offered load is what the weights and the rate controller reason about; a
//!   backend that stalls keeps receiving requests while its responses dry up, and a response
//!   rate would show it as *less* loaded exactly when it is overloaded.
//! - in-flight, two estimators ([`InflightEstimator`]):
//!   - Little's law (default): `sum by (dst_namespace, dst_service)
//!     (rate(response_latency_ms_sum{SEL}[W]))` × 0.001. The latency sum grows by every
//!     response's latency, so its rate is throughput × mean latency (Little's `L = λW`), i.e.
//!     RPS × mean latency computed in one query, over the same window as the other signals.
//!   - instant: `sum by (...) (request_total{SEL}) - sum by (...) (response_total{SEL})`, what
//!     the paper's code did. It reads one scrape (noisy), drifts forever for requests that never
//!     get a response (cancelled, reset), and breaks when a client proxy restarts (its counters
//!     reset independently). Kept for comparison; clamped at 0.
//!
//!   Little's law is the default because it uses `rate()` (robust to counter resets and pod
//!   churn), averages over the query window like the other three signals, and cannot drift.
//!   Its limit: it counts time to first byte (what the histogram measures), so streaming
//!   responses count as finished once their headers arrive.
//!
//! # The Istio profile ([`MetricsProfile::Istio`], `--metrics-profile istio`)
//!
//! Istio's standard metrics as the client's sidecar reports them: `SEL` is
//! `reporter="source", destination_service_namespace=~"…", destination_service_name=~"…"`.
//!
//! - latency: `histogram_quantile(Q, sum by (le, destination_service_namespace,
//!   destination_service_name) (rate(istio_request_duration_milliseconds_bucket{SEL,
//!   response_code!~"5.."}[W])))`, ms → s. Istio's default buckets end at 3,600,000 ms.
//! - success rate: `sum by (…, response_code) (rate(istio_requests_total{SEL}[W]))`; Istio has
//!   no classification label, so the decoder counts a response as failed when its code is 5xx
//!   (Istio's own dashboards' "non-5xx" success rate) or `0` (no response at all: the
//!   connection was reset or timed out before one came).
//! - RPS: `sum by (…) (rate(istio_requests_total{SEL}[W]))`.
//! - in-flight: Little's law over `istio_request_duration_milliseconds_sum`, as for Linkerd.
//!   Istio has no separate request and response counters, so the instant estimator is refused.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use super::{BackendKey, Error, QueryWindow, RequestGroup, Result, SignalRequest, WindowInfo};
use crate::algorithm::window;

/// Default histogram of response latency (Linkerd proxy, milliseconds).
pub const DEFAULT_LATENCY_BUCKET_METRIC: &str = "response_latency_ms_bucket";
/// Default sum series of that histogram.
pub const DEFAULT_LATENCY_SUM_METRIC: &str = "response_latency_ms_sum";
/// Default response counter (labels `classification`, `status_code`).
pub const DEFAULT_RESPONSE_METRIC: &str = "response_total";
/// Default request counter.
pub const DEFAULT_REQUEST_METRIC: &str = "request_total";
/// Default label naming the backend's namespace.
pub const DEFAULT_NAMESPACE_LABEL: &str = "dst_namespace";
/// Default label naming the backend's Service.
pub const DEFAULT_SERVICE_LABEL: &str = "dst_service";
/// Default label classifying responses.
pub const DEFAULT_CLASSIFICATION_LABEL: &str = "classification";
/// Value of the classification label for a successful response.
pub const DEFAULT_SUCCESS_VALUE: &str = "success";
/// Default label carrying the HTTP status on the latency histogram.
pub const DEFAULT_STATUS_CODE_LABEL: &str = "status_code";
/// Linkerd's latency buckets are milliseconds.
pub const DEFAULT_LATENCY_UNIT_SECS: f64 = 0.001;
/// Linkerd's last finite latency bucket, ms. `histogram_quantile` answers this bound (not +Inf)
/// when the quantile lies in the `+Inf` bucket, so an answer at or above it means "beyond the
/// last bucket".
pub const DEFAULT_LATENCY_LAST_FINITE_BUCKET: f64 = 50_000.0;
/// Default size limit of one query, bytes of PromQL. Prometheus itself accepts far more (POST
/// form bodies up to 10 MiB); the limit protects proxies and query frontends in front of it.
/// About 5,000 typical backends fit in one query.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 128 * 1024;
/// Default number of queries in flight at once.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 8;

/// Istio's request duration histogram (milliseconds).
pub const ISTIO_LATENCY_BUCKET_METRIC: &str = "istio_request_duration_milliseconds_bucket";
/// Sum series of Istio's request duration histogram.
pub const ISTIO_LATENCY_SUM_METRIC: &str = "istio_request_duration_milliseconds_sum";
/// Istio's request counter (one series per response code).
pub const ISTIO_REQUEST_METRIC: &str = "istio_requests_total";
/// Istio's label naming the destination Service's namespace.
pub const ISTIO_NAMESPACE_LABEL: &str = "destination_service_namespace";
/// Istio's label naming the destination Service.
pub const ISTIO_SERVICE_LABEL: &str = "destination_service_name";
/// Istio's label carrying the HTTP status (`0` when no response came).
pub const ISTIO_RESPONSE_CODE_LABEL: &str = "response_code";
/// Istio's last finite default duration bucket, ms (one hour).
pub const ISTIO_LATENCY_LAST_FINITE_BUCKET: f64 = 3_600_000.0;

/// Which mesh's standard metrics the source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MetricsProfile {
    /// Linkerd proxy metrics (`response_latency_ms`, `response_total`, `request_total`,
    /// `dst_namespace`, `dst_service`).
    #[default]
    Linkerd,
    /// Istio standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
    /// `destination_service_namespace`, `destination_service_name`, `reporter="source"`).
    Istio,
}

/// How the success-rate query's series are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuccessRule {
    /// A success when the classification label has exactly this value (Linkerd's
    /// `classification="success"`).
    Equals(String),
    /// A success unless the label (an HTTP status) is 5xx or `0` (Istio's `response_code`).
    NotServerError,
}

impl SuccessRule {
    /// Whether a series with this label value counts as successful responses.
    pub fn is_success(&self, value: Option<&str>) -> bool {
        match self {
            Self::Equals(v) => value == Some(v.as_str()),
            Self::NotServerError => match value {
                None | Some("0") => false,
                Some(code) => !(code.len() == 3 && code.starts_with('5')),
            },
        }
    }
}

/// The four signals the source fetches, one query each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignalKind {
    /// Quantile latency of successful requests.
    Latency,
    /// Success rate.
    SuccessRate,
    /// Requests per second.
    Rps,
    /// In-flight requests.
    Inflight,
}

impl SignalKind {
    /// Every signal, in query order.
    pub const ALL: [SignalKind; 4] = [
        SignalKind::Latency,
        SignalKind::SuccessRate,
        SignalKind::Rps,
        SignalKind::Inflight,
    ];

    /// A stable lowercase name, usable as a metric label (same names as [`crate::state::Signal`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::SuccessRate => "success_rate",
            Self::Rps => "rps",
            Self::Inflight => "inflight",
        }
    }
}

/// How in-flight requests are estimated (the proxy exports no gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InflightEstimator {
    /// Little's law: rate of the latency histogram's sum (= throughput × mean latency).
    #[default]
    LittlesLaw,
    /// `request_total - response_total` at the evaluation instant.
    Instant,
}

/// Comparison of a label matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored RE2)
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

/// One label matcher, e.g. `direction="outbound"`. The value is written as a PromQL string
/// literal (escaped); for regex operators it is a regex as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Label name.
    pub label: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value (a regex for `=~`/`!~`).
    pub value: String,
}

impl Matcher {
    /// A matcher.
    pub fn new(label: &str, op: MatchOp, value: &str) -> Self {
        Self {
            label: label.to_owned(),
            op,
            value: value.to_owned(),
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str(&self.label);
        out.push_str(self.op.as_str());
        push_string_literal(out, &self.value);
    }
}

/// What to query and how to read it: metric names, label names, matchers and limits. The
/// defaults read Linkerd proxy metrics as clients see them (`direction="outbound"`).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Latency histogram buckets (default `response_latency_ms_bucket`).
    pub latency_bucket_metric: String,
    /// Sum of the latency histogram, for Little's law (default `response_latency_ms_sum`).
    pub latency_sum_metric: String,
    /// Seconds per unit of the latency histogram (default 0.001: milliseconds).
    pub latency_unit_secs: f64,
    /// Last finite bucket bound of the latency histogram, in its unit; a quantile at or above
    /// it is reported as [`super::Outcome::Infinite`]. `None` turns this off.
    pub latency_last_finite_bucket: Option<f64>,
    /// Response counter (default `response_total`).
    pub response_metric: String,
    /// Request counter (default `request_total`).
    pub request_metric: String,
    /// Label naming the backend's namespace (default `dst_namespace`).
    pub namespace_label: String,
    /// Label naming the backend's Service (default `dst_service`).
    pub service_label: String,
    /// Label classifying responses (default `classification`).
    pub classification_label: String,
    /// Which values of the classification label are successes (default: `success`).
    pub success: SuccessRule,
    /// Matchers added to every selector (default `direction="outbound"`).
    pub matchers: Vec<Matcher>,
    /// Matchers added to the latency selector only, to keep successful requests (default
    /// `status_code!~"5.."`).
    pub latency_matchers: Vec<Matcher>,
    /// In-flight estimator (default Little's law).
    pub inflight: InflightEstimator,
    /// Size limit of one query's PromQL, bytes.
    pub max_query_bytes: usize,
    /// Queries in flight at once.
    pub max_concurrent_queries: usize,
    /// Scrape interval of the queried series, seconds; `None` (default): learned from the
    /// spacing of their samples (see [`super::prometheus`]).
    pub scrape_interval_secs: Option<f64>,
    /// Use answers that carry warnings (e.g. Thanos partial responses). Off by default: a
    /// partial answer may aggregate over only some clusters' proxies and look plausible while
    /// being wrong, so it counts as a failed query.
    pub accept_warnings: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            latency_bucket_metric: DEFAULT_LATENCY_BUCKET_METRIC.to_owned(),
            latency_sum_metric: DEFAULT_LATENCY_SUM_METRIC.to_owned(),
            latency_unit_secs: DEFAULT_LATENCY_UNIT_SECS,
            latency_last_finite_bucket: Some(DEFAULT_LATENCY_LAST_FINITE_BUCKET),
            response_metric: DEFAULT_RESPONSE_METRIC.to_owned(),
            request_metric: DEFAULT_REQUEST_METRIC.to_owned(),
            namespace_label: DEFAULT_NAMESPACE_LABEL.to_owned(),
            service_label: DEFAULT_SERVICE_LABEL.to_owned(),
            classification_label: DEFAULT_CLASSIFICATION_LABEL.to_owned(),
            success: SuccessRule::Equals(DEFAULT_SUCCESS_VALUE.to_owned()),
            matchers: vec![Matcher::new("direction", MatchOp::Equal, "outbound")],
            latency_matchers: vec![Matcher::new(
                DEFAULT_STATUS_CODE_LABEL,
                MatchOp::NotRegex,
                "5..",
            )],
            inflight: InflightEstimator::default(),
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT_QUERIES,
            scrape_interval_secs: None,
            accept_warnings: false,
        }
    }
}

impl SourceConfig {
    /// The defaults for a mesh's standard metrics.
    pub fn for_profile(profile: MetricsProfile) -> Self {
        match profile {
            MetricsProfile::Linkerd => Self::default(),
            MetricsProfile::Istio => Self {
                latency_bucket_metric: ISTIO_LATENCY_BUCKET_METRIC.to_owned(),
                latency_sum_metric: ISTIO_LATENCY_SUM_METRIC.to_owned(),
                latency_last_finite_bucket: Some(ISTIO_LATENCY_LAST_FINITE_BUCKET),
                response_metric: ISTIO_REQUEST_METRIC.to_owned(),
                request_metric: ISTIO_REQUEST_METRIC.to_owned(),
                namespace_label: ISTIO_NAMESPACE_LABEL.to_owned(),
                service_label: ISTIO_SERVICE_LABEL.to_owned(),
                classification_label: ISTIO_RESPONSE_CODE_LABEL.to_owned(),
                success: SuccessRule::NotServerError,
                matchers: vec![Matcher::new("reporter", MatchOp::Equal, "source")],
                latency_matchers: vec![Matcher::new(
                    ISTIO_RESPONSE_CODE_LABEL,
                    MatchOp::NotRegex,
                    "5..",
                )],
                ..Self::default()
            },
        }
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn config_error(field: &'static str, expected: &str, got: impl std::fmt::Display) -> Error {
    Error::Config {
        field,
        message: format!("expected {expected}, got `{got}`"),
    }
}

impl SourceConfig {
    /// Check every name and limit; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("latency_bucket_metric", &self.latency_bucket_metric),
            ("latency_sum_metric", &self.latency_sum_metric),
            ("response_metric", &self.response_metric),
            ("request_metric", &self.request_metric),
        ] {
            if !is_metric_name(value) {
                return Err(config_error(
                    field,
                    "a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                    value,
                ));
            }
        }
        for (field, value) in [
            ("namespace_label", &self.namespace_label),
            ("service_label", &self.service_label),
            ("classification_label", &self.classification_label),
        ] {
            if !is_label_name(value) {
                return Err(config_error(
                    field,
                    "a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    value,
                ));
            }
        }
        for (field, list) in [
            ("matchers", &self.matchers),
            ("latency_matchers", &self.latency_matchers),
        ] {
            if let Some(m) = list.iter().find(|m| !is_label_name(&m.label)) {
                return Err(config_error(field, "a Prometheus label name", &m.label));
            }
        }
        if !(self.latency_unit_secs.is_finite() && self.latency_unit_secs > 0.0) {
            return Err(config_error(
                "latency_unit_secs",
                "a positive number of seconds",
                self.latency_unit_secs,
            ));
        }
        if let Some(b) = self.latency_last_finite_bucket
            && !(b.is_finite() && b > 0.0)
        {
            return Err(config_error(
                "latency_last_finite_bucket",
                "a positive finite bucket bound",
                b,
            ));
        }
        if self.inflight == InflightEstimator::Instant
            && self.request_metric == self.response_metric
        {
            return Err(config_error(
                "inflight",
                "Little's law when requests and responses share one counter (Istio)",
                "instant",
            ));
        }
        if let Some(s) = self.scrape_interval_secs
            && !(s.is_finite() && s > 0.0)
        {
            return Err(config_error(
                "scrape_interval_secs",
                "a positive number of seconds",
                s,
            ));
        }
        if self.max_query_bytes < 1024 {
            return Err(config_error(
                "max_query_bytes",
                "at least 1024",
                self.max_query_bytes,
            ));
        }
        if self.max_concurrent_queries == 0 {
            return Err(config_error(
                "max_concurrent_queries",
                "at least 1",
                self.max_concurrent_queries,
            ));
        }
        Ok(())
    }
}

/// Escape a literal so that an RE2 regex matches exactly it.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Append `s` as a double-quoted PromQL string literal.
pub fn push_string_literal(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bytes an alternative adds to a regex literal (escaped, plus one `|`).
fn alternative_len(value: &str) -> usize {
    let mut lit = String::new();
    push_string_literal(&mut lit, &regex_escape(value));
    lit.len() - 2 + 1
}

fn alternation<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push('|');
        }
        out.push_str(&regex_escape(v));
    }
    out
}

/// The label matchers selecting `backends`' series (without braces).
fn selector(config: &SourceConfig, backends: &[BackendKey]) -> String {
    let namespaces: BTreeSet<&str> = backends.iter().map(|b| b.namespace.as_str()).collect();
    let services: BTreeSet<&str> = backends.iter().map(|b| b.service.as_str()).collect();
    let mut sel = String::new();
    for m in &config.matchers {
        m.render(&mut sel);
        sel.push_str(", ");
    }
    Matcher::new(
        &config.namespace_label,
        MatchOp::Regex,
        &alternation(namespaces.into_iter()),
    )
    .render(&mut sel);
    sel.push_str(", ");
    Matcher::new(
        &config.service_label,
        MatchOp::Regex,
        &alternation(services.into_iter()),
    )
    .render(&mut sel);
    sel
}

/// Raw samples of the request counter of `backends` over the last `range_secs`: the spacing of
/// their timestamps is the scrape interval.
pub fn scrape_probe(config: &SourceConfig, backends: &[BackendKey], range_secs: u64) -> String {
    format!(
        "{}{{{}}}[{range_secs}s]",
        config.request_metric,
        selector(config, backends)
    )
}

/// The PromQL of one signal over one chunk of backends.
pub fn build(
    config: &SourceConfig,
    signal: SignalKind,
    quantile: f64,
    window_secs: u64,
    backends: &[BackendKey],
) -> String {
    let sel = selector(config, backends);
    let by = format!("{}, {}", config.namespace_label, config.service_label);
    let mut q = String::new();
    // `write!` into a String cannot fail.
    let _ = match signal {
        SignalKind::Latency => {
            let mut lsel = sel.clone();
            for m in &config.latency_matchers {
                lsel.push_str(", ");
                m.render(&mut lsel);
            }
            write!(
                q,
                "histogram_quantile({quantile}, sum by (le, {by}) (rate({}{{{lsel}}}[{window_secs}s])))",
                config.latency_bucket_metric
            )
        }
        SignalKind::SuccessRate => write!(
            q,
            "sum by ({by}, {}) (rate({}{{{sel}}}[{window_secs}s]))",
            config.classification_label, config.response_metric
        ),
        SignalKind::Rps => write!(
            q,
            "sum by ({by}) (rate({}{{{sel}}}[{window_secs}s]))",
            config.request_metric
        ),
        SignalKind::Inflight => match config.inflight {
            InflightEstimator::LittlesLaw => write!(
                q,
                "sum by ({by}) (rate({}{{{sel}}}[{window_secs}s]))",
                config.latency_sum_metric
            ),
            InflightEstimator::Instant => write!(
                q,
                "sum by ({by}) ({}{{{sel}}}) - sum by ({by}) ({}{{{sel}}})",
                config.request_metric, config.response_metric
            ),
        },
    };
    q
}

/// Split a group's backends (sorted, deduplicated) into chunks whose every query stays within
/// `config.max_query_bytes`. A single backend whose query alone exceeds the limit still gets a
/// chunk of its own (it cannot be split further; the server decides).
pub fn chunk(
    config: &SourceConfig,
    quantile: f64,
    window_secs: u64,
    backends: &[BackendKey],
) -> Vec<Vec<BackendKey>> {
    let mut sorted: Vec<BackendKey> = backends.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.is_empty() {
        return Vec::new();
    }
    // Fixed part: the longest of the four queries with empty alternations. Each selector
    // appears at most twice in a query (the instant estimator), so alternatives count twice.
    let repeats = match config.inflight {
        InflightEstimator::Instant => 2,
        InflightEstimator::LittlesLaw => 1,
    };
    let overhead = SignalKind::ALL
        .iter()
        .map(|&s| build(config, s, quantile, window_secs, &[]).len())
        .max()
        .unwrap_or(0);
    let mut chunks = Vec::new();
    let mut current: Vec<BackendKey> = Vec::new();
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    let mut services: BTreeSet<String> = BTreeSet::new();
    let mut size = overhead;
    for b in sorted {
        let mut added = 0;
        if !namespaces.contains(&b.namespace) {
            added += alternative_len(&b.namespace) * repeats;
        }
        if !services.contains(&b.service) {
            added += alternative_len(&b.service) * repeats;
        }
        if !current.is_empty() && size + added > config.max_query_bytes {
            chunks.push(std::mem::take(&mut current));
            namespaces.clear();
            services.clear();
            size = overhead;
            added = (alternative_len(&b.namespace) + alternative_len(&b.service)) * repeats;
        }
        size += added;
        namespaces.insert(b.namespace.clone());
        services.insert(b.service.clone());
        current.push(b);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// One query of a cycle: which group, chunk and signal, its PromQL and the backends it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedQuery {
    /// Index of the request group.
    pub group: usize,
    /// Index of the chunk within the group.
    pub chunk: usize,
    /// The signal.
    pub signal: SignalKind,
    /// The PromQL.
    pub promql: String,
    /// The backends of the chunk (shared by its four queries).
    pub backends: Arc<Vec<BackendKey>>,
}

/// Every query of a cycle, plus the groups that cannot be queried.
#[derive(Debug, Default)]
pub struct Plan {
    /// Queries: four per chunk, one chunk per group unless a query would exceed the limit.
    pub queries: Vec<PlannedQuery>,
    /// Groups refused, with why.
    pub invalid_groups: Vec<(usize, Error)>,
}

fn check_group(g: &RequestGroup) -> Result<()> {
    if !(g.quantile.is_finite() && g.quantile > 0.0 && g.quantile < 1.0) {
        return Err(Error::InvalidGroup(format!(
            "field `quantile`: expected a number in (0, 1), got {}",
            g.quantile
        )));
    }
    if g.window == QueryWindow::Secs(0) {
        return Err(Error::InvalidGroup(
            "field `window`: expected at least 1 second, got 0".into(),
        ));
    }
    Ok(())
}

/// Scrape interval assumed while it is unknown (nothing learned yet, and none configured):
/// linkerd-viz's Prometheus scrapes every 10 s. Unknown means no samples were found, so the
/// signals are missing anyway; the assumption only sizes the `auto` window meanwhile.
pub const ASSUMED_SCRAPE_INTERVAL_SECS: f64 = 10.0;

/// The window a group is queried with, for a scrape interval (`None`: unknown), by the rule of
/// [`crate::algorithm::window`].
pub fn resolve_window(requested: QueryWindow, scrape_interval_secs: Option<f64>) -> WindowInfo {
    match requested {
        QueryWindow::Auto => WindowInfo {
            scrape_interval_secs,
            window_secs: window::auto_window(
                scrape_interval_secs.unwrap_or(ASSUMED_SCRAPE_INTERVAL_SECS),
            )
            .ceil() as u64,
            too_short: false,
        },
        QueryWindow::Secs(w) => WindowInfo {
            scrape_interval_secs,
            window_secs: w,
            too_short: scrape_interval_secs.is_some_and(|s| !window::window_fits(w as f64, s)),
        },
    }
}

/// Plan a cycle with the configured scrape interval (or the assumed one); see [`plan_with`].
pub fn plan(config: &SourceConfig, request: &SignalRequest) -> Plan {
    let windows: Vec<WindowInfo> = request
        .groups
        .iter()
        .map(|g| resolve_window(g.window, config.scrape_interval_secs))
        .collect();
    plan_with(config, request, &windows)
}

/// Plan a cycle whose groups use `windows` (one per group): the number of queries is
/// 4 × chunks, independent of the number of backends until a query would exceed
/// [`SourceConfig::max_query_bytes`].
pub fn plan_with(config: &SourceConfig, request: &SignalRequest, windows: &[WindowInfo]) -> Plan {
    let mut out = Plan::default();
    for (gi, g) in request.groups.iter().enumerate() {
        if let Err(e) = check_group(g) {
            out.invalid_groups.push((gi, e));
            continue;
        }
        let window_secs = windows.get(gi).map_or_else(
            || resolve_window(g.window, None).window_secs,
            |w| w.window_secs,
        );
        for (ci, backends) in chunk(config, g.quantile, window_secs, &g.backends)
            .into_iter()
            .enumerate()
        {
            let backends = Arc::new(backends);
            for signal in SignalKind::ALL {
                out.queries.push(PlannedQuery {
                    group: gi,
                    chunk: ci,
                    signal,
                    promql: build(config, signal, g.quantile, window_secs, &backends),
                    backends: Arc::clone(&backends),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_four_queries_per_group_and_refuses_bad_groups() {
        let g = |q: f64, w: u64, n: usize| RequestGroup {
            quantile: q,
            window: QueryWindow::Secs(w),
            backends: (0..n).map(|i| key("p", &format!("s{i}"))).collect(),
        };
        let req = SignalRequest {
            groups: vec![
                g(0.99, 10, 1000),
                g(0.5, 30, 3),
                g(1.5, 10, 2),
                g(0.9, 0, 2),
                g(0.9, 10, 0),
            ],
        };
        let p = plan(&SourceConfig::default(), &req);
        assert_eq!(p.queries.len(), 8);
        let bad: Vec<usize> = p.invalid_groups.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![2, 3]);
        assert!(p.invalid_groups[0].1.to_string().contains("quantile"));
        assert!(p.invalid_groups[1].1.to_string().contains("window"));
    }

    fn key(ns: &str, svc: &str) -> BackendKey {
        BackendKey {
            namespace: ns.to_owned(),
            service: svc.to_owned(),
        }
    }

    #[test]
    fn regex_metacharacters_are_escaped() {
        assert_eq!(regex_escape("web-east"), "web-east");
        assert_eq!(regex_escape("a.b"), "a\\.b");
        assert_eq!(
            regex_escape(r"x|y(z)*+?[]{}^$\"),
            r"x\|y\(z\)\*\+\?\[\]\{\}\^\$\\"
        );
    }

    #[test]
    fn string_literal_escapes_quotes_and_backslashes() {
        let mut s = String::new();
        push_string_literal(&mut s, "a\\.b\"c\n");
        assert_eq!(s, r#""a\\.b\"c\n""#);
    }

    #[test]
    fn names_are_escaped_in_the_query() {
        let q = build(
            &SourceConfig::default(),
            SignalKind::Rps,
            0.99,
            10,
            &[key("prod", "web.v2"), key("prod", "a|b\"")],
        );
        assert_eq!(
            q,
            r#"sum by (dst_namespace, dst_service) (rate(request_total{direction="outbound", dst_namespace=~"prod", dst_service=~"a\\|b\"|web\\.v2"}[10s]))"#
        );
    }

    #[test]
    fn latency_query_excludes_5xx_and_keeps_le() {
        let q = build(
            &SourceConfig::default(),
            SignalKind::Latency,
            0.95,
            30,
            &[key("n", "s")],
        );
        assert_eq!(
            q,
            r#"histogram_quantile(0.95, sum by (le, dst_namespace, dst_service) (rate(response_latency_ms_bucket{direction="outbound", dst_namespace=~"n", dst_service=~"s", status_code!~"5.."}[30s])))"#
        );
    }

    #[test]
    fn inflight_estimators() {
        let mut c = SourceConfig::default();
        let b = [key("n", "s")];
        assert_eq!(
            build(&c, SignalKind::Inflight, 0.99, 10, &b),
            r#"sum by (dst_namespace, dst_service) (rate(response_latency_ms_sum{direction="outbound", dst_namespace=~"n", dst_service=~"s"}[10s]))"#
        );
        c.inflight = InflightEstimator::Instant;
        assert_eq!(
            build(&c, SignalKind::Inflight, 0.99, 10, &b),
            r#"sum by (dst_namespace, dst_service) (request_total{direction="outbound", dst_namespace=~"n", dst_service=~"s"}) - sum by (dst_namespace, dst_service) (response_total{direction="outbound", dst_namespace=~"n", dst_service=~"s"})"#
        );
    }

    #[test]
    fn windows_follow_the_scrape_interval() {
        let auto = resolve_window(QueryWindow::Auto, Some(10.0));
        assert_eq!((auto.window_secs, auto.too_short), (40, false));
        assert_eq!(resolve_window(QueryWindow::Auto, Some(1.0)).window_secs, 10);
        assert_eq!(resolve_window(QueryWindow::Auto, Some(2.6)).window_secs, 11);
        assert_eq!(resolve_window(QueryWindow::Auto, None).window_secs, 40);
        assert!(resolve_window(QueryWindow::Secs(10), Some(10.0)).too_short);
        assert!(!resolve_window(QueryWindow::Secs(20), Some(10.0)).too_short);
        assert!(!resolve_window(QueryWindow::Secs(10), None).too_short);
    }

    #[test]
    fn istio_profile_queries() {
        let c = SourceConfig::for_profile(MetricsProfile::Istio);
        c.validate().unwrap();
        let b = [key("shop", "cart")];
        let q = |s| build(&c, s, 0.99, 40, &b);
        assert_eq!(
            q(SignalKind::Latency),
            r#"histogram_quantile(0.99, sum by (le, destination_service_namespace, destination_service_name) (rate(istio_request_duration_milliseconds_bucket{reporter="source", destination_service_namespace=~"shop", destination_service_name=~"cart", response_code!~"5.."}[40s])))"#
        );
        assert_eq!(
            q(SignalKind::SuccessRate),
            r#"sum by (destination_service_namespace, destination_service_name, response_code) (rate(istio_requests_total{reporter="source", destination_service_namespace=~"shop", destination_service_name=~"cart"}[40s]))"#
        );
        assert_eq!(
            q(SignalKind::Rps),
            r#"sum by (destination_service_namespace, destination_service_name) (rate(istio_requests_total{reporter="source", destination_service_namespace=~"shop", destination_service_name=~"cart"}[40s]))"#
        );
        assert_eq!(
            q(SignalKind::Inflight),
            r#"sum by (destination_service_namespace, destination_service_name) (rate(istio_request_duration_milliseconds_sum{reporter="source", destination_service_namespace=~"shop", destination_service_name=~"cart"}[40s]))"#
        );
        let instant = SourceConfig {
            inflight: InflightEstimator::Instant,
            ..c
        };
        assert!(
            instant
                .validate()
                .unwrap_err()
                .to_string()
                .contains("inflight")
        );
        for (code, ok) in [("200", true), ("404", true), ("503", false), ("0", false)] {
            assert_eq!(
                SuccessRule::NotServerError.is_success(Some(code)),
                ok,
                "{code}"
            );
        }
    }

    #[test]
    fn custom_names_are_used() {
        let c = SourceConfig {
            request_metric: "outbound_http_route_backend_requests_total".into(),
            namespace_label: "backend_namespace".into(),
            service_label: "backend_name".into(),
            matchers: vec![],
            ..SourceConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(
            build(&c, SignalKind::Rps, 0.99, 20, &[key("n", "s")]),
            r#"sum by (backend_namespace, backend_name) (rate(outbound_http_route_backend_requests_total{backend_namespace=~"n", backend_name=~"s"}[20s]))"#
        );
    }

    #[test]
    fn invalid_config_names_the_field() {
        let c = SourceConfig {
            service_label: "dst-service".into(),
            ..SourceConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("service_label"), "{err}");
        let c = SourceConfig {
            request_metric: "1abc".into(),
            ..SourceConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("request_metric")
        );
    }

    #[test]
    fn small_groups_are_one_chunk() {
        let b: Vec<_> = (0..1000)
            .map(|i| key("prod", &format!("svc-{i:04}")))
            .collect();
        let chunks = chunk(&SourceConfig::default(), 0.99, 10, &b);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), 1000);
    }

    #[test]
    fn chunks_respect_the_size_limit_and_cover_every_backend() {
        for inflight in [InflightEstimator::LittlesLaw, InflightEstimator::Instant] {
            let c = SourceConfig {
                max_query_bytes: 4096,
                inflight,
                ..SourceConfig::default()
            };
            let b: Vec<_> = (0..500)
                .map(|i| key(&format!("ns-{}", i % 7), &format!("service.{i}")))
                .collect();
            let chunks = chunk(&c, 0.99, 10, &b);
            assert!(chunks.len() > 1, "expected several chunks");
            let mut seen: Vec<BackendKey> = chunks.iter().flatten().cloned().collect();
            seen.sort();
            let mut want = b.clone();
            want.sort();
            assert_eq!(seen, want);
            for ch in &chunks {
                for s in SignalKind::ALL {
                    let q = build(&c, s, 0.99, 10, ch);
                    assert!(q.len() <= c.max_query_bytes, "{} > limit", q.len());
                }
            }
        }
    }

    #[test]
    fn duplicates_are_removed_and_oversized_backends_get_their_own_chunk() {
        let c = SourceConfig {
            max_query_bytes: 1024,
            ..SourceConfig::default()
        };
        let long = "x".repeat(2000);
        let b = vec![key("n", "a"), key("n", "a"), key("n", &long), key("n", "b")];
        let chunks = chunk(&c, 0.99, 10, &b);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 3);
        assert!(
            chunks
                .iter()
                .any(|ch| ch.len() == 1 && ch[0].service == long)
        );
    }
}
