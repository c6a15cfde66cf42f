//! Connection settings of the Prometheus source (flags of `l3 run`, each also an `L3_*` env var).
//!
//! The source itself (batched PromQL, typed outcomes, telemetry) is built on these.

use std::path::PathBuf;

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
}
