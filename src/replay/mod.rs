//! `l3 replay`: what l3 would have done on a split's own history. The operator's queries are
//! sent as range queries ([`history`], batched and chunked), and every interval goes through
//! the operator's state, algorithm and safety code ([`run`]); the results are rendered as a
//! table, JSON, CSV or an SVG plot ([`report`]). This file holds the command line, the checks
//! of its input and the layer's [`Error`].
//!
//! The same URL and auth flags as `l3 run` reach anything that speaks the Prometheus HTTP API
//! (Prometheus, Thanos Query, Mimir, VictoriaMetrics).

pub mod history;
pub mod report;
pub mod run;

use std::path::PathBuf;
use std::time::Instant;

use kube::api::DynamicObject;

use crate::operator::crd::{LatencyPolicy, LatencyPolicySpec, PolicySettings};
use crate::operator::trafficsplit;
use crate::source::prometheus::{PrometheusArgs, PrometheusConfig, PrometheusSource};
use crate::source::query::resolve_window;
use crate::source::{BackendKey, RequestGroup};

pub use report::Format;

/// The most backend-intervals one replay holds (about 64 bytes each, plus the answers being
/// decoded): e.g. three backends over 19 days at 5 s. Longer ranges are refused up front.
pub const MAX_BACKEND_INTERVALS: usize = 1_000_000;

/// Errors of `l3 replay`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value is unusable.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The policy file is unusable.
    #[error("{}: {message}", path.display())]
    PolicyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The source refused its settings or a request.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// Every range query failed: nothing to replay.
    #[error("no answer from {url}: every range query failed; first: {first}")]
    NoAnswer {
        /// The Prometheus URL.
        url: String,
        /// The first failure.
        first: String,
    },
    /// The range holds more than [`MAX_BACKEND_INTERVALS`].
    #[error(
        "the range is too large: {intervals} intervals × {backends} backends = {cells} \
         backend-intervals, the limit is {limit}; shorten the range or lengthen --interval"
    )]
    TooLarge {
        /// Intervals asked for.
        intervals: usize,
        /// Backends.
        backends: usize,
        /// Their product.
        cells: usize,
        /// [`MAX_BACKEND_INTERVALS`].
        limit: usize,
    },
    /// An explicit window cannot hold two samples at the learned scrape interval.
    #[error(
        "queryWindow {window}s is shorter than two scrape intervals (scrape interval {scrape}s, \
         needs at least {min}s)"
    )]
    WindowTooShort {
        /// The window, seconds.
        window: u64,
        /// The scrape interval, seconds.
        scrape: f64,
        /// Two scrape intervals, seconds.
        min: f64,
    },
    /// The algorithm refused the settings.
    #[error("algorithm: {0}")]
    Algorithm(String),
    /// Writing the output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being written.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// `l3 replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Where the history is.
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    /// A LatencyPolicy manifest (YAML); it may carry its TrafficSplit as a second document,
    /// whose backends and weights are then used.
    #[arg(long, conflicts_with = "split", required_unless_present = "split")]
    pub policy: Option<PathBuf>,
    /// The split as `NAMESPACE/NAME` (with the default policy settings).
    #[arg(long, requires = "backends")]
    pub split: Option<String>,
    /// Backends `svc,svc,...`, or with their actual weights `svc=500,svc=500`.
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// Start: RFC 3339 (`2026-11-28T06:00:00Z`), Unix seconds, or `now-1h` / `now`.
    #[arg(long)]
    pub from: String,
    /// End, same forms as --from.
    #[arg(long)]
    pub to: String,
    /// Interval between evaluations (default: the policy's `interval`, 5s).
    #[arg(long)]
    pub interval: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write an SVG plot of the shares and filtered latencies to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Parse a time: RFC 3339, Unix seconds, `now` or `now-<duration>`.
pub fn parse_time(flag: &'static str, s: &str, now: f64) -> Result<f64, Error> {
    let bad = || Error::Flag {
        flag,
        message: format!(
            "expected RFC 3339 (2026-11-28T06:00:00Z), Unix seconds or now-<duration>, got `{s}`"
        ),
    };
    let s = s.trim();
    if s == "now" {
        return Ok(now.floor());
    }
    if let Some(d) = s.strip_prefix("now-") {
        let secs = crate::duration::parse_secs(d).ok_or_else(bad)?;
        return Ok((now - secs).floor());
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse::<f64>().map_err(|_| bad());
    }
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t.as_second() as f64)
        .map_err(|_| bad())
}

/// The split a replay is about.
#[derive(Debug, Clone)]
struct Target {
    namespace: String,
    name: String,
    settings: PolicySettings,
    /// `(service, actual weight)`, weights `None` when not given.
    backends: Vec<(String, Option<f64>)>,
}

fn flag_backends(list: &[String]) -> Result<Vec<(String, Option<f64>)>, Error> {
    list.iter()
        .map(|b| match b.split_once('=') {
            None if !b.trim().is_empty() => Ok((b.trim().to_owned(), None)),
            Some((svc, w)) if !svc.trim().is_empty() => match w.trim().parse::<f64>() {
                Ok(w) if w.is_finite() && w >= 0.0 => Ok((svc.trim().to_owned(), Some(w))),
                _ => Err(Error::Flag {
                    flag: "backends",
                    message: format!("expected a non-negative weight in `{b}`"),
                }),
            },
            _ => Err(Error::Flag {
                flag: "backends",
                message: format!("expected `svc` or `svc=weight`, got `{b}`"),
            }),
        })
        .collect()
}

fn target(args: &ReplayArgs) -> Result<Target, Error> {
    let from_flags = flag_backends(&args.backends)?;
    let Some(path) = &args.policy else {
        let split = args.split.as_deref().unwrap_or_default();
        let (namespace, name) = split
            .split_once('/')
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
            .ok_or_else(|| Error::Flag {
                flag: "split",
                message: format!("expected NAMESPACE/NAME, got `{split}`"),
            })?;
        let settings = LatencyPolicySpec::for_split(name)
            .settings()
            .map_err(|e| Error::Algorithm(e.to_string()))?;
        return Ok(Target {
            namespace: namespace.into(),
            name: name.into(),
            settings,
            backends: from_flags,
        });
    };
    let file_err = |message: String| Error::PolicyFile {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let mut policy: Option<LatencyPolicy> = None;
    let mut split: Option<DynamicObject> = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| file_err(format!("not YAML: {e}")))?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("LatencyPolicy") => {
                policy = Some(
                    serde_json::from_value(value)
                        .map_err(|e| file_err(format!("the LatencyPolicy: {e}")))?,
                );
            }
            Some("TrafficSplit") => {
                split = Some(
                    serde_json::from_value(value)
                        .map_err(|e| file_err(format!("the TrafficSplit: {e}")))?,
                );
            }
            Some(_) | None => {}
        }
    }
    let policy =
        policy.ok_or_else(|| file_err("expected a document of kind LatencyPolicy".into()))?;
    let namespace =
        policy.metadata.namespace.clone().ok_or_else(|| {
            file_err("metadata.namespace: expected the policy's namespace".into())
        })?;
    let settings = policy
        .spec
        .settings()
        .map_err(|e| file_err(e.to_string()))?;
    let backends = match (&split, from_flags.is_empty()) {
        (_, false) => from_flags,
        (Some(obj), true) => trafficsplit::parse(obj)
            .map_err(|e| file_err(format!("the TrafficSplit: {e}")))?
            .backends
            .into_iter()
            .map(|b| (b.service, Some(b.weight)))
            .collect(),
        (None, true) => {
            return Err(file_err(
                "no TrafficSplit document in the file: give --backends".into(),
            ));
        }
    };
    Ok(Target {
        namespace,
        name: policy.spec.target_ref.name.clone(),
        settings,
        backends,
    })
}

/// Run `l3 replay`: print the report on stdout, progress on stderr.
pub fn main(args: &ReplayArgs) -> Result<(), Error> {
    crate::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".into(),
            source,
        })?;
    let (ctx, report) = rt.block_on(replay(args, |done, total| {
        eprintln!(
            "l3 replay: {done}/{total} intervals fetched ({:.0} %)",
            100.0 * done as f64 / total.max(1) as f64
        );
    }))?;
    use std::io::Write as _;
    let text = report::render(args.format, &ctx, &report);
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|source| Error::Io {
            context: "writing the report".into(),
            source,
        })?;
    if let Some(path) = &args.plot {
        std::fs::write(path, report::svg(&ctx, &report)).map_err(|source| Error::Io {
            context: format!("writing the plot {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

/// Fetch and replay; `progress(done, total)` is called after each chunk of a range of more
/// than one chunk. The library entry point of `l3 replay` (tests call it).
pub async fn replay(
    args: &ReplayArgs,
    mut progress: impl FnMut(usize, usize),
) -> Result<(report::Context, run::Report), Error> {
    let started = Instant::now();
    let now = crate::source::prometheus::now_secs();
    let from = parse_time("from", &args.from, now)?;
    let to = parse_time("to", &args.to, now)?;
    if to <= from {
        return Err(Error::Flag {
            flag: "to",
            message: format!(
                "the range is empty: --to ({}) must be after --from ({})",
                report::rfc3339(to),
                report::rfc3339(from)
            ),
        });
    }
    let mut target = target(args)?;
    if target.backends.is_empty() {
        return Err(Error::Flag {
            flag: "backends",
            message: "expected at least one backend".into(),
        });
    }
    target.backends.sort_by(|a, b| a.0.cmp(&b.0));
    target.backends.dedup_by(|a, b| a.0 == b.0);
    let step = match &args.interval {
        Some(i) => {
            let secs = crate::duration::parse_secs(i)
                .filter(|s| *s >= 1.0)
                .ok_or_else(|| Error::Flag {
                    flag: "interval",
                    message: format!("expected a duration of at least 1s, e.g. 5s, got `{i}`"),
                })?;
            (secs * 1000.0).round() / 1000.0
        }
        None => target.settings.interval_secs,
    };
    let steps = ((to - from) / step).floor() as usize + 1;
    let cells = steps.saturating_mul(target.backends.len());
    if cells > MAX_BACKEND_INTERVALS {
        return Err(Error::TooLarge {
            intervals: steps,
            backends: target.backends.len(),
            cells,
            limit: MAX_BACKEND_INTERVALS,
        });
    }
    let config = PrometheusConfig::from_args(&args.prometheus)?;
    let url = config.url.clone();
    let source = PrometheusSource::new(config, &prometheus::Registry::new())?;
    let keys: Vec<BackendKey> = target
        .backends
        .iter()
        .map(|(s, _)| BackendKey {
            namespace: target.namespace.clone(),
            service: s.clone(),
        })
        .collect();
    let auth = source.auth()?;
    let group = RequestGroup {
        quantile: target.settings.quantile,
        window: target.settings.window,
        backends: keys.clone(),
    };
    let scrape = source.scrape_interval(&group, to, &auth).await;
    let window = resolve_window(target.settings.window, scrape);
    if window.too_short {
        let s = scrape.unwrap_or_default();
        return Err(Error::WindowTooShort {
            window: window.window_secs,
            scrape: s,
            min: crate::algorithm::window::min_window(s),
        });
    }
    let request = history::HistoryRequest {
        backends: keys,
        quantile: target.settings.quantile,
        window,
        from: from as i64,
        step,
        steps,
    };
    let chunked = steps > history::STEPS_PER_CHUNK;
    let hist = history::fetch(&source, &request, |done, total| {
        if chunked {
            progress(done, total);
        }
    })
    .await?;
    if hist.queries > 0 && hist.errors.len() == hist.queries {
        return Err(Error::NoAnswer {
            url,
            first: hist.errors[0].message.clone(),
        });
    }
    let actual = target
        .backends
        .iter()
        .map(|(_, w)| *w)
        .collect::<Option<Vec<f64>>>();
    let input = run::ReplayInput {
        settings: target.settings.clone(),
        backends: target.backends.iter().map(|(s, _)| s.clone()).collect(),
        actual_weights: actual,
        from,
        step,
    };
    let report = run::run(&input, &hist)?;
    tracing::debug!(elapsed = ?started.elapsed(), "replay done");
    let ctx = report::Context {
        split: format!("{}/{}", target.namespace, target.name),
        from: report::rfc3339(from),
        to: report::rfc3339(to),
        interval_seconds: step,
        window_seconds: window.window_secs,
        query_window: target.settings.window.to_string(),
        scrape_interval_seconds: scrape,
        quantile: target.settings.quantile,
        queries: hist.queries,
        failed_queries: hist
            .errors
            .iter()
            .map(|e| format!("{}: {}: {}", e.signal, e.reason, e.message))
            .collect(),
    };
    Ok((ctx, report))
}
