//! The operator's eyes: per-backend signals from Prometheus (Linkerd or Istio metrics), fetched
//! in batches (one PromQL query per signal for all backends), as typed outcomes, over a window
//! sized from the scrape interval ([`QueryWindow`], [`WindowInfo`]).
//!
//! This file holds the contract between the source and its consumers (the control loop and
//! `l3 replay`) and the layer's [`Error`]. Beside it: [`query`] (typed PromQL, the metrics
//! profiles, chunking, windows, and the documented choices: in-flight estimator, 5xx exclusion,
//! RPS from requests), [`decode`] (answers → outcomes through `prometheus-http-query`'s types;
//! [`decode::outcomes_from_answer`] is the entry point from raw bytes), [`prometheus`] (the
//! client on `prometheus-http-query`, [`PrometheusSource`], scrape-interval learning),
//! [`telemetry`] (the source's own metrics) and [`canned`] (a programmable source for tests and
//! benchmarks).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub mod canned;
pub mod decode;
pub mod prometheus;
pub mod query;
pub mod telemetry;

pub use canned::CannedSource;
pub use prometheus::{PrometheusConfig, PrometheusSource};
pub use query::{InflightEstimator, MetricsProfile, SignalKind, SourceConfig};

use crate::state::BackendSample;

/// Errors of the source layer. Each has a bounded [`Error::reason`] usable as a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid (names the field and what was expected).
    #[error("invalid source setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// A credential file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    CredentialFile {
        /// `bearer token` or `password`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The source's telemetry could not be registered.
    #[error("cannot register the source's metrics: {0}")]
    Telemetry(#[from] ::prometheus::Error),
    /// A request group is invalid (bad quantile or window).
    #[error("invalid request group: {0}")]
    InvalidGroup(String),
    /// No answer within the timeout.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The server could not be reached or dropped the connection before answering (refused,
    /// DNS, TLS handshake, reset).
    #[error("cannot connect to prometheus: {0}")]
    Connect(String),
    /// A non-2xx HTTP answer that is not an API error, or a failure reading the answer.
    #[error("http error (status {status}): {message}")]
    Http {
        /// HTTP status (0 when there was no answer).
        status: u16,
        /// Detail.
        message: String,
    },
    /// The API answered `status: "error"`.
    #[error("prometheus error {error_type} (http {status}): {message}")]
    Prometheus {
        /// HTTP status.
        status: u16,
        /// The API's `errorType`, e.g. `bad_data`, `timeout`, `execution`.
        error_type: String,
        /// The API's `error`.
        message: String,
    },
    /// The answer is not the API's JSON.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// The answer is not an instant vector.
    #[error("unexpected resultType `{0}`, expected `vector`")]
    ResultType(String),
    /// The answer carries warnings (e.g. a Thanos partial response) and warnings are not
    /// accepted.
    #[error("partial answer: {}", warnings.join("; "))]
    Partial {
        /// The API's warnings (at most five).
        warnings: Vec<String>,
    },
}

impl Error {
    /// A stable, bounded name of the failure, usable as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::CredentialFile { .. } => "credentials",
            Self::Telemetry(_) => "telemetry",
            Self::InvalidGroup(_) => "invalid_request",
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Http { .. } => "http",
            Self::Prometheus { .. } => "prometheus",
            Self::Decode(_) => "decode",
            Self::ResultType(_) => "result_type",
            Self::Partial { .. } => "partial",
        }
    }

    /// Every reason a query can fail with (for pre-initialised error counters).
    pub const QUERY_REASONS: [&'static str; 9] = [
        "credentials",
        "invalid_request",
        "timeout",
        "connect",
        "http",
        "prometheus",
        "decode",
        "result_type",
        "partial",
    ];
}

/// Result of the source layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A backend as Linkerd's outbound metrics name it: `dst_namespace` and `dst_service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// Namespace of the backend Service (`dst_namespace`).
    pub namespace: String,
    /// Name of the backend Service (`dst_service`), e.g. a multicluster mirror `web-east`.
    pub service: String,
}

/// What one signal of one backend came back as. Only [`Outcome::Value`] may reach a filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// A finite, non-negative number.
    Value(f64),
    /// The query answered but had no series for this backend (no traffic in the window).
    NoSeries,
    /// NaN, e.g. `histogram_quantile` over a window without observations.
    NotANumber,
    /// +Inf (or -Inf), e.g. a quantile beyond the last finite histogram bucket.
    Infinite,
    /// The query for this signal failed (error, timeout); see [`Snapshot::errors`].
    QueryFailed,
}

impl Outcome {
    /// Classify a raw value from Prometheus.
    pub fn from_value(v: f64) -> Self {
        if v.is_nan() {
            Self::NotANumber
        } else if v.is_infinite() {
            Self::Infinite
        } else {
            Self::Value(v)
        }
    }

    /// The number, if this is a usable value.
    pub fn value(&self) -> Option<f64> {
        match *self {
            Self::Value(v) if v.is_finite() && v >= 0.0 => Some(v),
            _ => None,
        }
    }

    /// A stable lowercase name, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Value(_) => "value",
            Self::NoSeries => "no_series",
            Self::NotANumber => "nan",
            Self::Infinite => "inf",
            Self::QueryFailed => "query_failed",
        }
    }
}

/// The four signals of one backend for one cycle (plus the median for the C3 baseline).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendSignals {
    /// Latency of successful requests at the requested quantile, seconds.
    pub latency_secs: Outcome,
    /// Success rate in `[0, 1]`.
    pub success_rate: Outcome,
    /// Requests per second.
    pub rps: Outcome,
    /// Estimated in-flight requests.
    pub inflight: Outcome,
}

impl BackendSignals {
    /// Every signal with the same outcome (e.g. all [`Outcome::QueryFailed`]).
    pub fn all(outcome: Outcome) -> Self {
        Self {
            latency_secs: outcome,
            success_rate: outcome,
            rps: outcome,
            inflight: outcome,
        }
    }

    /// The sample the state layer takes: usable values only, everything else `None`.
    pub fn to_sample(&self) -> BackendSample {
        BackendSample {
            latency_secs: self.latency_secs.value(),
            p50_secs: None,
            success_rate: self.success_rate.value(),
            rps: self.rps.value(),
            inflight: self.inflight.value(),
        }
    }
}

/// The range of a group's `rate()` windows (a policy's `queryWindow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueryWindow {
    /// Sized from the scrape interval by [`crate::algorithm::window::auto_window`] (default).
    #[default]
    Auto,
    /// This many seconds; refused as too short below two scrape intervals
    /// ([`crate::algorithm::window::window_fits`]).
    Secs(u64),
}

impl std::fmt::Display for QueryWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Secs(s) => write!(f, "{s}s"),
        }
    }
}

/// Backends that share a quantile and a query window: one PromQL query per signal serves all.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestGroup {
    /// Quantile of the latency signal, in `(0, 1)` (a policy's `percentile`, default 0.99).
    pub quantile: f64,
    /// Range of the `rate()` windows (a policy's `queryWindow`, default `auto`).
    pub window: QueryWindow,
    /// The backends.
    pub backends: Vec<BackendKey>,
}

/// Everything one control cycle asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SignalRequest {
    /// Groups of backends; the source issues one query per signal per group (chunked only when a
    /// query would exceed the size limit).
    pub groups: Vec<RequestGroup>,
}

/// A failed query, typed; never a metric label built from error text.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    /// Index of the [`RequestGroup`].
    pub group: usize,
    /// Which signal: `latency`, `success_rate`, `rps` or `inflight`.
    pub signal: &'static str,
    /// Bounded reason, usable as a label: one of [`Error::QUERY_REASONS`] (`timeout`,
    /// `connect`, `http`, `prometheus`, `decode`, `result_type`, `partial`, `credentials`,
    /// `invalid_request`).
    pub reason: &'static str,
    /// Human-readable detail for logs and status messages.
    pub message: String,
}

/// The window a group was queried with, and the scrape interval it was sized from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowInfo {
    /// Scrape interval of the group's series, seconds: configured, or learned from the spacing
    /// of their samples; `None` while unknown (no samples yet, or the store did not say).
    pub scrape_interval_secs: Option<f64>,
    /// The window the queries used, seconds.
    pub window_secs: u64,
    /// An explicit window shorter than two scrape intervals: its answers cannot be trusted
    /// (`rate()` may see a single sample and return nothing).
    pub too_short: bool,
}

/// One cycle's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Evaluation time of the queries, seconds since the Unix epoch.
    pub timestamp: f64,
    /// Per group (same order as the request), per backend, the signals. Every requested backend
    /// is present; a failed query shows as [`Outcome::QueryFailed`] for that signal.
    pub groups: Vec<BTreeMap<BackendKey, BackendSignals>>,
    /// Queries that failed; the other signals and groups are still answered.
    pub errors: Vec<QueryError>,
    /// Per group (same order as the request), the window used and the scrape interval; empty
    /// when the source does not know (canned sources).
    pub windows: Vec<WindowInfo>,
}

/// Boxed future of a fetch, so that the control loop can hold any source behind `dyn`.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Snapshot> + Send + 'a>>;

/// Something that answers a [`SignalRequest`]: Prometheus in production, a canned source in
/// tests and benchmarks. It never fails as a whole: per-query failures are in
/// [`Snapshot::errors`] and as [`Outcome::QueryFailed`], so one bad query never stops the others.
pub trait SignalSource: Send + Sync {
    /// Fetch every signal of every requested backend.
    fn fetch<'a>(&'a self, request: &'a SignalRequest) -> FetchFuture<'a>;
}
