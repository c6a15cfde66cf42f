//! The Prometheus client: connection settings (flags of `l3 run`, each also an `L3_*` env var),
//! credentials (bearer token or basic-auth password files, re-read when they change), and
//! [`PrometheusSource`], the production [`SignalSource`].
//!
//! A cycle is planned by [`super::query::plan`] (four queries per group of backends, chunked
//! only by size), sent as POST form requests to `/api/v1/query` with one shared `time`, and
//! decoded by [`super::decode`]. Every failure is per query: it marks that signal of that
//! chunk's backends [`Outcome::QueryFailed`], is listed in [`Snapshot::errors`] with a bounded
//! reason and counted in the telemetry; the other queries are unaffected.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tracing::{Instrument as _, debug, warn};

use super::canned::slot;
use super::decode::{Series, decode_answer, outcomes};
use super::query::{PlannedQuery, SignalKind, SourceConfig, plan};
use super::telemetry::Telemetry;
use super::{
    BackendSignals, Error, FetchFuture, Outcome, QueryError, Result, SignalRequest, SignalSource,
    Snapshot,
};

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

/// Path of the instant-query endpoint under the base URL.
const QUERY_PATH: &str = "/api/v1/query";

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

    /// From the flags of `l3 run`; errors name the flag.
    pub fn from_args(args: &PrometheusArgs, source: SourceConfig) -> Result<Self> {
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
            timeout: parse_duration("prometheus_timeout", &args.prometheus_timeout)?,
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
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// The production [`SignalSource`]: batched PromQL over the Prometheus HTTP API (POST
/// `/api/v1/query`), all queries of a cycle at the same evaluation `time`, at most
/// [`SourceConfig::max_concurrent_queries`] in flight, each bounded by the timeout (also sent
/// to the server as its `timeout` parameter so that it stops working when we stop waiting).
#[derive(Debug)]
pub struct PrometheusSource {
    client: reqwest::Client,
    query_url: String,
    bearer: Option<SecretFile>,
    basic: Option<(String, SecretFile)>,
    headers: HeaderMap,
    timeout: Duration,
    config: SourceConfig,
    telemetry: Telemetry,
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
        let query_url = format!("{}{QUERY_PATH}", config.url.trim_end_matches('/'));
        Ok(Self {
            client,
            query_url,
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

    fn auth(&self) -> Result<Auth> {
        if let Some(f) = &self.bearer {
            return Ok(Auth::Bearer(f.read()?));
        }
        if let Some((user, f)) = &self.basic {
            return Ok(Auth::Basic(user.clone(), f.read()?));
        }
        Ok(Auth::None)
    }

    async fn run(&self, q: &PlannedQuery, time: f64, auth: &Auth) -> Result<Vec<Series>> {
        let started = Instant::now();
        let mut body = String::new();
        form_pair(&mut body, "query", &q.promql);
        body.push('&');
        form_pair(&mut body, "time", &format!("{time:.3}"));
        body.push('&');
        form_pair(
            &mut body,
            "timeout",
            &format!("{}ms", self.timeout.as_millis().max(1)),
        );
        let mut req = self
            .client
            .post(&self.query_url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        let result = async {
            let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
            decode_answer(status, &bytes, self.config.accept_warnings)
        }
        .await;
        self.telemetry
            .observe(q.signal, started.elapsed().as_secs_f64());
        result
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

    async fn fetch_all(&self, request: &SignalRequest) -> Snapshot {
        let timestamp = now_secs();
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
        let plan = plan(&self.config, request);
        let queries = plan.queries.len();
        for (gi, e) in &plan.invalid_groups {
            for signal in SignalKind::ALL {
                errors.push(query_error(*gi, signal, e, ""));
            }
            for s in groups[*gi].values_mut() {
                *s = BackendSignals::all(Outcome::QueryFailed);
            }
        }
        let results: Vec<(PlannedQuery, Result<Vec<Series>>)> = match self.auth() {
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

/// Append `key=value`, form-urlencoded (RFC 3986 unreserved characters kept, the rest
/// percent-encoded; Prometheus decodes `%20` as a space).
fn form_pair(out: &mut String, key: &str, value: &str) {
    for (i, part) in [key, value].into_iter().enumerate() {
        if i == 1 {
            out.push('=');
        }
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
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

    #[test]
    fn form_encoding_escapes_everything_but_unreserved() {
        let mut s = String::new();
        form_pair(&mut s, "query", "sum by (a) (x{b=~\"c|d\"}) + 1&z");
        assert_eq!(
            s,
            "query=sum%20by%20%28a%29%20%28x%7Bb%3D~%22c%7Cd%22%7D%29%20%2B%201%26z"
        );
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
        let c = PrometheusConfig::from_args(
            &args(&[
                "--prometheus-url",
                "http://127.0.0.1:9/prom/",
                "--prometheus-header",
                "X-Scope-OrgID: tenant-1",
                "--prometheus-timeout",
                "750ms",
            ]),
            SourceConfig::default(),
        )
        .unwrap();
        assert_eq!(c.headers, vec![("X-Scope-OrgID".into(), "tenant-1".into())]);
        assert_eq!(c.timeout, Duration::from_millis(750));
        let s = PrometheusSource::new(c, &::prometheus::Registry::new()).unwrap();
        assert_eq!(s.query_url, "http://127.0.0.1:9/prom/api/v1/query");

        let e = PrometheusConfig::from_args(
            &args(&["--prometheus-header", "no-colon"]),
            SourceConfig::default(),
        )
        .unwrap_err();
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
