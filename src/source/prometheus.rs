//! The Prometheus client: connection settings (flags of `l3 run`, each also an `L3_*` env var),
//! credentials (bearer token or basic-auth password files, re-read when they change), and
//! [`PrometheusSource`], the production [`SignalSource`].
//!
//! A cycle is planned by [`super::query::plan`] (four queries per group of backends, chunked
//! only by size), sent as POST form requests to `/api/v1/query` with one shared `time`, and
//! decoded by [`super::decode`]. Every failure is per query: it marks that signal of that
//! chunk's backends [`Outcome::QueryFailed`], is listed in [`Snapshot::errors`] with a bounded
//! reason and counted in the telemetry; the other queries are unaffected.
//!
//! Transport is `prometheus-http-query`'s [`Client`] over a `reqwest` client that l3 builds
//! (timeouts, extra CA certificates). What the crate lacks, and how it is wrapped here:
//! - `InstantQueryBuilder::at` takes whole seconds; one cycle's shared evaluation time is sent
//!   with millisecond precision through the builder's generic `query("time", ..)` parameter.
//! - Credentials: the crate has no auth settings; bearer and basic credentials are read from
//!   their files each cycle (rotation) and sent as an `Authorization` header per request.
//! - Its decoding (`post()`) requires a JSON content type and drops the `warnings` and the
//!   HTTP status, so l3 sends with `post_raw()` and decodes the body in [`super::decode`]
//!   (serde into the crate's types; see there why the envelope is l3's).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::StreamExt as _;
use prometheus_http_query::Client;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tracing::{Instrument as _, debug, warn};

use super::canned::slot;
use super::decode::{RangeSeries, Series, decode_answer, decode_matrix, outcomes};
use super::query::{
    MetricsProfile, PlannedQuery, SignalKind, SourceConfig, plan_with, resolve_window, scrape_probe,
};
use super::telemetry::Telemetry;
use super::{
    BackendKey, BackendSignals, Error, FetchFuture, Outcome, QueryError, RequestGroup, Result,
    SignalRequest, SignalSource, Snapshot,
};

/// How long a learned scrape interval is trusted before it is measured again.
pub const SCRAPE_INTERVAL_TTL: Duration = Duration::from_secs(300);
/// How soon a scrape interval that could not be learned is tried again.
pub const SCRAPE_INTERVAL_RETRY: Duration = Duration::from_secs(15);
/// Range of raw samples read to measure the scrape interval: two samples even at a 1 min
/// scrape interval.
pub const SCRAPE_PROBE_RANGE_SECS: u64 = 150;
/// Backends of a group whose samples are measured (bounds the probe's answer).
pub const SCRAPE_PROBE_BACKENDS: usize = 3;

/// Learned scrape intervals by the probed backends: when measured, and the result.
type ScrapeIntervals = HashMap<Vec<BackendKey>, (Instant, Option<f64>)>;

/// The scrape interval of some series: the median spacing of consecutive samples over all of
/// them (robust to a missed scrape); `None` without two samples in any series. Sample
/// timestamps are taken when a scrape starts and drift by tens of milliseconds on a loaded
/// server (10.021 s was measured for a 10 s interval), while scrape intervals are configured in
/// whole seconds in practice: a median within [`SNAP_TOLERANCE`] of a whole number of seconds
/// is snapped to it, anything else is kept to the millisecond. Without the snap a 20 s window
/// would count as shorter than two 10.021 s scrapes.
pub fn sample_spacing(series: &[RangeSeries]) -> Option<f64> {
    let mut gaps: Vec<f64> = series
        .iter()
        .flat_map(|s| s.samples.windows(2).map(|w| w[1].0 - w[0].0))
        .filter(|g| g.is_finite() && *g > 0.0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    let whole = median.round();
    if whole >= 1.0 && (median - whole).abs() <= SNAP_TOLERANCE * whole {
        Some(whole)
    } else {
        Some((median * 1000.0).round() / 1000.0)
    }
}

/// Relative distance from a whole number of seconds within which a measured scrape interval is
/// taken to be that number (see [`sample_spacing`]).
pub const SNAP_TOLERANCE: f64 = 0.05;

/// Default Prometheus: the one Linkerd viz installs.
pub const DEFAULT_PROMETHEUS_URL: &str = "http://prometheus.linkerd-viz.svc.cluster.local:9090";

/// How to reach anything that speaks the Prometheus HTTP API (Prometheus, Thanos, Mimir,
/// VictoriaMetrics).
#[derive(Debug, Clone, clap::Args)]
pub struct PrometheusArgs {
    /// Base URL of the Prometheus HTTP API.
    #[arg(long, env = "L3_PROMETHEUS_URL", default_value = DEFAULT_PROMETHEUS_URL)]
    pub prometheus_url: String,
    /// File holding a bearer token; re-read when it changes (projected service-account tokens
    /// rotate).
    #[arg(long, env = "L3_PROMETHEUS_BEARER_TOKEN_FILE")]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// User name for HTTP basic auth.
    #[arg(
        long,
        env = "L3_PROMETHEUS_USERNAME",
        requires = "prometheus_password_file"
    )]
    pub prometheus_username: Option<String>,
    /// File holding the password for HTTP basic auth.
    #[arg(
        long,
        env = "L3_PROMETHEUS_PASSWORD_FILE",
        requires = "prometheus_username"
    )]
    pub prometheus_password_file: Option<PathBuf>,
    /// PEM file with extra CA certificates to trust.
    #[arg(long, env = "L3_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Extra HTTP header `Name: value` sent with every query (repeatable), e.g.
    /// `X-Scope-OrgID: tenant-1` for Mimir or Cortex.
    #[arg(
        long = "prometheus-header",
        env = "L3_PROMETHEUS_HEADERS",
        value_delimiter = ','
    )]
    pub prometheus_headers: Vec<String>,
    /// Timeout of one query, e.g. `2s` or `500ms`.
    #[arg(long, env = "L3_PROMETHEUS_TIMEOUT", default_value = "2s")]
    pub prometheus_timeout: String,
    /// Which mesh's standard metrics to read: `linkerd` (proxy metrics, `dst_service`) or
    /// `istio` (`istio_requests_total`, `reporter="source"`, `destination_service_name`).
    #[arg(long, env = "L3_METRICS_PROFILE", value_enum, default_value_t = MetricsProfile::Linkerd)]
    pub metrics_profile: MetricsProfile,
    /// Scrape interval of the mesh metrics: `auto` learns it from the spacing of the queried
    /// series' samples; a duration (e.g. `10s`) states it. Sizes `queryWindow: auto` and checks
    /// explicit windows.
    #[arg(long, env = "L3_PROMETHEUS_SCRAPE_INTERVAL", default_value = "auto")]
    pub prometheus_scrape_interval: String,
}

/// Seconds since the Unix epoch, rounded to milliseconds (the precision sent as `time`).
pub fn now_secs() -> f64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    ms as f64 / 1000.0
}

/// Parse a duration such as `2s`, `500ms`, `1.5s` or `1m`; the error names `field`.
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration> {
    let secs = crate::duration::parse_secs(s).unwrap_or(f64::NAN);
    // At least a millisecond: a tiny positive number (`0.0000000001s`) would otherwise round to a
    // zero Duration, a timeout that fails every request.
    if !(0.001..=3600.0).contains(&secs) {
        return Err(Error::Config {
            field,
            message: format!(
                "expected a duration from 1ms up to 1h with a unit (`2s`, `500ms`, `1m`), got `{s}`"
            ),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Everything [`PrometheusSource::new`] needs, validated.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus HTTP API (`/api/v1/query` is appended).
    pub url: String,
    /// Bearer token file, re-read when it changes.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth: user name and password file (re-read when it changes).
    pub basic_auth: Option<(String, PathBuf)>,
    /// Extra CA certificates (PEM bundle).
    pub ca_file: Option<PathBuf>,
    /// Extra headers sent with every query.
    pub headers: Vec<(String, String)>,
    /// Timeout of one query (connect, send, answer).
    pub timeout: Duration,
    /// What to query and how.
    pub source: SourceConfig,
}

impl PrometheusConfig {
    /// Defaults for `url`: no auth, no extra CA or headers, 2 s timeout, Linkerd metrics.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bearer_token_file: None,
            basic_auth: None,
            ca_file: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(2),
            source: SourceConfig::default(),
        }
    }

    /// From the flags of `l3 run` and `l3 replay`; errors name the flag.
    pub fn from_args(args: &PrometheusArgs) -> Result<Self> {
        let mut source = SourceConfig::for_profile(args.metrics_profile);
        source.scrape_interval_secs = match args.prometheus_scrape_interval.as_str() {
            "auto" => None,
            s => Some(
                parse_duration("prometheus_scrape_interval", s)
                    .map_err(|_| Error::Config {
                        field: "prometheus_scrape_interval",
                        message: format!("expected `auto` or a duration such as `10s`, got `{s}`"),
                    })?
                    .as_secs_f64(),
            ),
        };
        let basic_auth = match (&args.prometheus_username, &args.prometheus_password_file) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(Error::Config {
                    field: "prometheus_username",
                    message: "expected both --prometheus-username and --prometheus-password-file"
                        .into(),
                });
            }
        };
        let headers = args
            .prometheus_headers
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| Error::Config {
                        field: "prometheus_header",
                        message: format!("expected `Name: value`, got `{h}`"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            url: args.prometheus_url.clone(),
            bearer_token_file: args.prometheus_bearer_token_file.clone(),
            basic_auth,
            ca_file: args.prometheus_ca_file.clone(),
            headers,
            timeout: parse_duration("--prometheus-timeout", &args.prometheus_timeout)?,
            source,
        })
    }
}

/// Identity of a file's content as far as the file system tells: a change of any of these
/// means "re-read". Projected service-account tokens are replaced by a symlink swap, which
/// changes all of them.
#[derive(Debug, Clone, PartialEq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

/// A credential file, read again only when its stamp changes.
#[derive(Debug)]
struct SecretFile {
    what: &'static str,
    path: PathBuf,
    cache: Mutex<Option<(FileStamp, String)>>,
}

impl SecretFile {
    fn new(what: &'static str, path: PathBuf) -> Self {
        Self {
            what,
            path,
            cache: Mutex::new(None),
        }
    }

    fn read(&self) -> Result<String> {
        let err = |source| Error::CredentialFile {
            what: self.what,
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(err)?;
        let stamp = FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        };
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, value)) = cache.as_ref()
            && *s == stamp
        {
            return Ok(value.clone());
        }
        let value = std::fs::read_to_string(&self.path)
            .map_err(err)?
            .trim()
            .to_owned();
        debug!(path = %self.path.display(), what = self.what, "credential file (re)read");
        *cache = Some((stamp, value.clone()));
        Ok(value)
    }
}

/// The credentials of one cycle.
pub(crate) enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// The production [`SignalSource`]: batched PromQL over the Prometheus HTTP API (POST
/// `/api/v1/query`), all queries of a cycle at the same evaluation `time`, at most
/// [`SourceConfig::max_concurrent_queries`] in flight, each bounded by the timeout (also sent
/// to the server as its `timeout` parameter so that it stops working when we stop waiting).
pub struct PrometheusSource {
    client: Client,
    bearer: Option<SecretFile>,
    basic: Option<(String, SecretFile)>,
    headers: HeaderMap,
    timeout: Duration,
    config: SourceConfig,
    telemetry: Telemetry,
    /// Learned scrape intervals by the probed backends: when measured, and the result.
    scrape_intervals: Mutex<ScrapeIntervals>,
}

impl std::fmt::Debug for PrometheusSource {
    // The crate's `Client` is not `Debug`; its base URL is what identifies it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.client.base_url().as_str())
            .field("timeout", &self.timeout)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// Validate `config`, build the HTTP client and register the telemetry into `registry`.
    pub fn new(config: PrometheusConfig, registry: &::prometheus::Registry) -> Result<Self> {
        config.source.validate()?;
        let url = reqwest::Url::parse(&config.url).map_err(|e| Error::Config {
            field: "prometheus_url",
            message: format!("expected an http(s) URL, got `{}`: {e}", config.url),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config {
                field: "prometheus_url",
                message: format!("expected scheme http or https, got `{}`", url.scheme()),
            });
        }
        if config.bearer_token_file.is_some() && config.basic_auth.is_some() {
            return Err(Error::Config {
                field: "prometheus_bearer_token_file",
                message: "expected either a bearer token or basic auth, not both".into(),
            });
        }
        if config.timeout.is_zero() {
            return Err(Error::Config {
                field: "prometheus_timeout",
                message: "expected a positive duration".into(),
            });
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| Error::Config {
                field: "prometheus_header",
                message: format!("expected a valid header name, got `{name}`: {e}"),
            })?;
            let v = HeaderValue::from_str(value).map_err(|e| Error::Config {
                field: "prometheus_header",
                message: format!("expected a valid value for header `{name}`: {e}"),
            })?;
            headers.append(n, v);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| Error::Config {
                field: "prometheus_ca_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                field: "prometheus_ca_file",
                message: format!("expected PEM certificates in {}: {e}", path.display()),
            })?;
            if certs.is_empty() {
                return Err(Error::Config {
                    field: "prometheus_ca_file",
                    message: format!(
                        "expected PEM certificates in {}, found none",
                        path.display()
                    ),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| Error::Config {
            field: "prometheus_ca_file",
            message: format!("cannot build the HTTP client: {e}"),
        })?;
        // The crate joins `api/v1/query` to the base path with a `/` of its own.
        let client =
            Client::from(client, config.url.trim_end_matches('/')).map_err(|e| Error::Config {
                field: "prometheus_url",
                message: format!("expected an http(s) URL, got `{}`: {e}", config.url),
            })?;
        Ok(Self {
            client,
            bearer: config
                .bearer_token_file
                .map(|p| SecretFile::new("bearer token", p)),
            basic: config
                .basic_auth
                .map(|(u, p)| (u, SecretFile::new("password", p))),
            headers,
            timeout: config.timeout,
            config: config.source,
            telemetry: Telemetry::register(registry)?,
            scrape_intervals: Mutex::new(HashMap::new()),
        })
    }

    /// The source's metrics (query counts per signal, errors).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// What is queried and how.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    pub(crate) fn auth(&self) -> Result<Auth> {
        if let Some(f) = &self.bearer {
            return Ok(Auth::Bearer(f.read()?));
        }
        if let Some((user, f)) = &self.basic {
            return Ok(Auth::Basic(user.clone(), f.read()?));
        }
        Ok(Auth::None)
    }

    /// The per-request headers: the extra ones, then the credentials.
    fn request_headers(&self, auth: &Auth) -> Result<HeaderMap> {
        let mut headers = self.headers.clone();
        let value = match auth {
            Auth::None => return Ok(headers),
            Auth::Bearer(t) => format!("Bearer {t}"),
            Auth::Basic(u, p) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            let file = self
                .bearer
                .as_ref()
                .or(self.basic.as_ref().map(|(_, f)| f))
                .map_or_else(PathBuf::new, |f| f.path.clone());
            Error::CredentialFile {
                what: "credential",
                path: file,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "it holds characters not allowed in an HTTP header",
                ),
            }
        })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
        Ok(headers)
    }

    /// Send one instant query (POST form) evaluated at `time`; the raw answer.
    async fn post_instant(&self, promql: &str, time: f64, auth: &Auth) -> Result<(u16, Vec<u8>)> {
        let mut builder = self
            .client
            .query(promql)
            .query("time", format!("{time:.3}"))
            .timeout(i64::try_from(self.timeout.as_millis().max(1)).unwrap_or(i64::MAX));
        for (name, value) in &self.request_headers(auth)? {
            builder = builder.header(name.clone(), value.clone());
        }
        self.read(builder.post_raw().await).await
    }

    /// Send one range query (POST form) over `[start, end]` at `step` seconds; the raw answer.
    pub(crate) async fn post_range(
        &self,
        promql: &str,
        start: i64,
        end: i64,
        step: f64,
        auth: &Auth,
    ) -> Result<(u16, Vec<u8>)> {
        let mut builder = self
            .client
            .query_range(promql, start, end, step)
            .timeout(i64::try_from(self.timeout.as_millis().max(1)).unwrap_or(i64::MAX));
        for (name, value) in &self.request_headers(auth)? {
            builder = builder.header(name.clone(), value.clone());
        }
        self.read(builder.post_raw().await).await
    }

    async fn read(
        &self,
        sent: std::result::Result<reqwest::Response, prometheus_http_query::Error>,
    ) -> Result<(u16, Vec<u8>)> {
        let resp = sent.map_err(|e| self.client_error(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        Ok((status, bytes.to_vec()))
    }

    /// Ask once for `vector(1)`, the way the cycles query (client, TLS, credentials, headers,
    /// timeout): `l3 run` checks at start that Prometheus can be used at all.
    pub async fn probe(&self) -> Result<()> {
        let auth = self.auth()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let (status, body) = self.post_instant("vector(1)", now, &auth).await?;
        decode_answer(status, &body, true).map(|_| ())
    }

    async fn run(&self, q: &PlannedQuery, time: f64, auth: &Auth) -> Result<Vec<Series>> {
        let started = Instant::now();
        let result = async {
            let (status, body) = self.post_instant(&q.promql, time, auth).await?;
            decode_answer(status, &body, self.config.accept_warnings)
        }
        .await;
        self.telemetry
            .observe(q.signal, started.elapsed().as_secs_f64());
        result
    }

    fn client_error(&self, e: &prometheus_http_query::Error) -> Error {
        match e {
            prometheus_http_query::Error::Client(c) => match c.inner() {
                Some(inner) => self.transport_error(inner),
                None => Error::Http {
                    status: 0,
                    message: c.to_string(),
                },
            },
            other => Error::Http {
                status: 0,
                message: other.to_string(),
            },
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let _ = write!(message, ": {s}");
            source = s.source();
        }
        if e.is_timeout() {
            Error::Timeout(self.timeout)
        } else if e.is_connect() || (e.is_request() && e.status().is_none()) {
            // No HTTP answer at all. A Prometheus that just died leaves pooled keep-alive
            // connections that fail "closed before message completed" rather than refused:
            // the same outage, so the same reason.
            Error::Connect(message)
        } else {
            Error::Http {
                status: e.status().map(|s| s.as_u16()).unwrap_or(0),
                message,
            }
        }
    }

    /// The scrape interval of a group's series: configured, else learned from the spacing of
    /// the raw samples of its first few backends' request counters (cached for
    /// [`SCRAPE_INTERVAL_TTL`]; retried after [`SCRAPE_INTERVAL_RETRY`] when unknown). A probe
    /// that fails is logged and leaves the interval unknown; it never fails the signals.
    pub(crate) async fn scrape_interval(
        &self,
        group: &RequestGroup,
        time: f64,
        auth: &Auth,
    ) -> Option<f64> {
        if let Some(s) = self.config.scrape_interval_secs {
            return Some(s);
        }
        let mut probe: Vec<BackendKey> = group.backends.clone();
        probe.sort();
        probe.dedup();
        probe.truncate(SCRAPE_PROBE_BACKENDS);
        if probe.is_empty() {
            return None;
        }
        let cached = self
            .scrape_intervals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&probe)
            .copied();
        if let Some((at, value)) = cached {
            let ttl = if value.is_some() {
                SCRAPE_INTERVAL_TTL
            } else {
                SCRAPE_INTERVAL_RETRY
            };
            if at.elapsed() < ttl {
                return value;
            }
        }
        let promql = scrape_probe(&self.config, &probe, SCRAPE_PROBE_RANGE_SECS);
        let learned = match self
            .post_instant(&promql, time, auth)
            .await
            .and_then(|(status, body)| decode_matrix(status, &body, self.config.accept_warnings))
        {
            Ok(series) => sample_spacing(&series),
            Err(e) => {
                warn!(reason = e.reason(), error = %e, "cannot learn the scrape interval");
                None
            }
        };
        debug!(?learned, "scrape interval measured");
        self.scrape_intervals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(probe, (Instant::now(), learned));
        learned
    }

    async fn fetch_all(&self, request: &SignalRequest) -> Snapshot {
        let timestamp = now_secs();
        let auth = self.auth();
        let mut windows = Vec::with_capacity(request.groups.len());
        for g in &request.groups {
            let scrape = match &auth {
                Ok(a) => self.scrape_interval(g, timestamp, a).await,
                Err(_) => self.config.scrape_interval_secs,
            };
            windows.push(resolve_window(g.window, scrape));
        }
        let mut groups: Vec<_> = request
            .groups
            .iter()
            .map(|g| {
                g.backends
                    .iter()
                    .map(|b| (b.clone(), BackendSignals::all(Outcome::NoSeries)))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .collect();
        let mut errors = Vec::new();
        let plan = plan_with(&self.config, request, &windows);
        let queries = plan.queries.len();
        for (gi, e) in &plan.invalid_groups {
            for signal in SignalKind::ALL {
                errors.push(query_error(*gi, signal, e, ""));
            }
            for s in groups[*gi].values_mut() {
                *s = BackendSignals::all(Outcome::QueryFailed);
            }
        }
        let results: Vec<(PlannedQuery, Result<Vec<Series>>)> = match auth {
            Ok(auth) => {
                let auth = &auth;
                futures::stream::iter(plan.queries)
                    .map(|q| async move {
                        let r = self.run(&q, timestamp, auth).await;
                        (q, r)
                    })
                    .buffer_unordered(self.config.max_concurrent_queries)
                    .collect()
                    .await
            }
            Err(e) => plan
                .queries
                .into_iter()
                .map(|q| {
                    // `Error` holds an io::Error (not Clone): rebuild it per query.
                    let e = match &e {
                        Error::CredentialFile { what, path, source } => Error::CredentialFile {
                            what,
                            path: path.clone(),
                            source: std::io::Error::new(source.kind(), source.to_string()),
                        },
                        other => Error::Http {
                            status: 0,
                            message: other.to_string(),
                        },
                    };
                    (q, Err(e))
                })
                .collect(),
        };
        for (q, r) in results {
            let group = &mut groups[q.group];
            match r {
                Ok(series) => {
                    for (b, o) in outcomes(&self.config, q.signal, &series, &q.backends) {
                        if let Some(s) = group.get_mut(&b) {
                            *slot(s, q.signal) = o;
                        }
                    }
                }
                Err(e) => {
                    self.telemetry.error(q.signal, e.reason());
                    warn!(
                        group = q.group,
                        chunk = q.chunk,
                        signal = q.signal.as_str(),
                        reason = e.reason(),
                        error = %e,
                        "prometheus query failed"
                    );
                    for b in q.backends.iter() {
                        if let Some(s) = group.get_mut(b) {
                            *slot(s, q.signal) = Outcome::QueryFailed;
                        }
                    }
                    let chunk = format!(" (chunk {})", q.chunk);
                    errors.push(query_error(q.group, q.signal, &e, &chunk));
                }
            }
        }
        errors.sort_by(|a, b| (a.group, a.signal).cmp(&(b.group, b.signal)));
        debug!(queries, errors = errors.len(), "prometheus fetch done");
        Snapshot {
            timestamp,
            groups,
            errors,
            windows,
        }
    }
}

fn query_error(group: usize, signal: SignalKind, e: &Error, suffix: &str) -> QueryError {
    QueryError {
        group,
        signal: signal.as_str(),
        reason: e.reason(),
        message: format!("{e}{suffix}"),
    }
}

impl SignalSource for PrometheusSource {
    fn fetch<'a>(&'a self, request: &'a SignalRequest) -> FetchFuture<'a> {
        let backends: usize = request.groups.iter().map(|g| g.backends.len()).sum();
        let span = tracing::info_span!("prometheus_fetch", groups = request.groups.len(), backends);
        Box::pin(self.fetch_all(request).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_errors_name_the_field() {
        assert_eq!(parse_duration("f", "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("f", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("f", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("f", "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_duration("f", "1ms").unwrap(),
            Duration::from_millis(1)
        );
        // Found by fuzzing: positive, but zero once a Duration.
        for bad in ["", "2", "0s", "-1s", "abc", "2h", "0.0000000001s", "0.5ms"] {
            let e = parse_duration("prometheus_timeout", bad).unwrap_err();
            assert!(e.to_string().contains("prometheus_timeout"), "{bad}: {e}");
        }
    }

    fn args(extra: &[&str]) -> PrometheusArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            p: PrometheusArgs,
        }
        let mut v = vec!["l3"];
        v.extend_from_slice(extra);
        <Cli as clap::Parser>::try_parse_from(v).unwrap().p
    }

    #[test]
    fn config_from_flags() {
        let c = PrometheusConfig::from_args(&args(&[
            "--prometheus-url",
            "http://127.0.0.1:9/prom/",
            "--prometheus-header",
            "X-Scope-OrgID: tenant-1",
            "--prometheus-timeout",
            "750ms",
        ]))
        .unwrap();
        assert_eq!(c.source, SourceConfig::default());
        let istio = PrometheusConfig::from_args(&args(&[
            "--metrics-profile",
            "istio",
            "--prometheus-scrape-interval",
            "15s",
        ]))
        .unwrap();
        assert_eq!(istio.source.request_metric, "istio_requests_total");
        assert_eq!(istio.source.scrape_interval_secs, Some(15.0));
        let e = PrometheusConfig::from_args(&args(&["--prometheus-scrape-interval", "often"]))
            .unwrap_err();
        assert!(e.to_string().contains("prometheus_scrape_interval"), "{e}");
        assert_eq!(c.headers, vec![("X-Scope-OrgID".into(), "tenant-1".into())]);
        assert_eq!(c.timeout, Duration::from_millis(750));
        let s = PrometheusSource::new(c, &::prometheus::Registry::new()).unwrap();
        assert_eq!(s.client.base_url().as_str(), "http://127.0.0.1:9/prom");

        let e =
            PrometheusConfig::from_args(&args(&["--prometheus-header", "no-colon"])).unwrap_err();
        assert!(e.to_string().contains("prometheus_header"), "{e}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        let reg = ::prometheus::Registry::new();
        let e = PrometheusSource::new(PrometheusConfig::new("ftp://x"), &reg).unwrap_err();
        assert!(e.to_string().contains("prometheus_url"), "{e}");
        let e = PrometheusSource::new(PrometheusConfig::new("not a url"), &reg).unwrap_err();
        assert!(e.to_string().contains("prometheus_url"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut c = PrometheusConfig::new("https://127.0.0.1:9");
        c.ca_file = Some(ca);
        let e = PrometheusSource::new(c, &reg).unwrap_err();
        assert!(e.to_string().contains("prometheus_ca_file"), "{e}");
        let mut c = PrometheusConfig::new("http://127.0.0.1:9");
        c.headers = vec![("Bad Header".into(), "v".into())];
        let e = PrometheusSource::new(c, &reg).unwrap_err();
        assert!(e.to_string().contains("prometheus_header"), "{e}");
    }

    /// A throwaway self-signed CA certificate (public part only), made with
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=l3-test-ca`.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfjCCASWgAwIBAgIUcDw9eu2k4b3NK3zauZAmF3b87t0wCgYIKoZIzj0EAwIw\nFTETMBEGA1UEAwwKbDMtdGVzdC1jYTAeFw0yNjExMjYxNzAwMTNaFw0zNjExMjMx\nNzAwMTNaMBUxEzARBgNVBAMMCmwzLXRlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjO\nPQMBBwNCAARQKEdNpqDdTkp/Sti6bi/mo6RLnWoxAUiCN8dnZdLybrt+GJYX+eSE\nrFrRb13OEBJdXs8rYZt3QQhcdeLK1cOdo1MwUTAdBgNVHQ4EFgQUVpcvdg3RfXuj\nFS9m5iMGH72dEEUwHwYDVR0jBBgwFoAUVpcvdg3RfXujFS9m5iMGH72dEEUwDwYD\nVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiA0fS96R0XhwfTKXDC0lSc/\nSHGdI94uvNSyohpqQzG2tgIgG0Uh+KlLvGGRdRDKqB49YrGUuFl+KQNuB7usoIGj\nQ+Q=\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_valid_ca_file_builds_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, TEST_CA_PEM).unwrap();
        let mut c = PrometheusConfig::new("https://prometheus.example:9090");
        c.ca_file = Some(ca);
        PrometheusSource::new(c, &::prometheus::Registry::new()).unwrap();
    }

    #[test]
    fn sample_spacing_is_the_median_gap_snapped_to_whole_seconds() {
        let series = |times: &[f64]| RangeSeries {
            labels: Default::default(),
            samples: times.iter().map(|&t| (t, 1.0)).collect(),
        };
        // Jitter of a loaded server, and one missed scrape.
        let jittery = series(&[0.0, 10.021, 20.05, 40.06, 50.08, 60.1]);
        assert_eq!(sample_spacing(&[jittery]), Some(10.0));
        assert_eq!(sample_spacing(&[series(&[0.0, 2.5, 5.0, 7.5])]), Some(2.5));
        assert_eq!(sample_spacing(&[series(&[0.0, 0.5, 1.0])]), Some(0.5));
        assert_eq!(sample_spacing(&[series(&[3.0]), series(&[])]), None);
        // The median over all series: one slow series does not decide.
        let fast = series(&[0.0, 1.0, 2.0, 3.0]);
        let slow = series(&[0.0, 30.0]);
        assert_eq!(sample_spacing(&[fast, slow]), Some(1.0));
    }

    #[test]
    fn a_credential_that_cannot_be_a_header_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "first line\nsecond line").unwrap();
        let mut c = PrometheusConfig::new("http://127.0.0.1:9");
        c.bearer_token_file = Some(token);
        let s = PrometheusSource::new(c, &::prometheus::Registry::new()).unwrap();
        let auth = s.auth().unwrap();
        let e = s.request_headers(&auth).unwrap_err();
        assert_eq!(e.reason(), "credentials");
        assert!(e.to_string().contains("token"), "{e}");
        let h = s
            .request_headers(&Auth::Basic("l3".into(), "pw".into()))
            .unwrap();
        assert_eq!(h[AUTHORIZATION], "Basic bDM6cHc=");
        assert!(h[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn secret_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let f = SecretFile::new("bearer token", path.clone());
        assert_eq!(f.read().unwrap(), "one");
        // Replace the file the way a projected volume does: a new file renamed over it.
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "second").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(f.read().unwrap(), "second");
        std::fs::remove_file(&path).unwrap();
        let e = f.read().unwrap_err();
        assert_eq!(e.reason(), "credentials");
        assert!(e.to_string().contains("token"), "{e}");
    }
}
