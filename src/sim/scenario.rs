//! The scenario schema (what a scenario YAML file may contain) and its validation.
//!
//! Every struct denies unknown fields, so a typo is an error that names the field. Units: times
//! and durations in seconds, latencies in milliseconds, rates in requests per second, success
//! probabilities in `[0, 1]`. `docs/scenarios.md` documents the schema for users.

use serde::{Deserialize, Serialize};

use super::series::Series;
use super::{Error, Result};
use crate::algorithm::window;

/// Scrape interval when a scenario names none: linkerd-viz's Prometheus scrapes every 10 s.
pub const DEFAULT_SCRAPE_INTERVAL_SECS: f64 = 10.0;
/// Time from a control tick's query to its answer, seconds: a few range queries over a handful
/// of series on an unloaded Prometheus.
pub const DEFAULT_QUERY_LATENCY_SECS: f64 = 0.1;
/// Time from a weight write to the client proxies routing by it, seconds (the path and the
/// range are in `docs/scenarios.md`).
pub const DEFAULT_PROPAGATION_DELAY_SECS: f64 = 1.0;
/// Largest propagation delay a scenario may ask for, seconds.
pub const MAX_PROPAGATION_DELAY_SECS: f64 = 60.0;
/// Largest query latency a scenario may ask for, seconds.
pub const MAX_QUERY_LATENCY_SECS: f64 = 30.0;

/// The PromQL range window: `auto` (the operator's rule, [`window::auto_window`]) or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum QueryWindow {
    /// Four scrape intervals, at least 10 s.
    #[default]
    Auto,
    /// An explicit window, seconds; at least two scrape intervals.
    Secs(f64),
}

impl QueryWindow {
    /// The window in seconds for a scrape interval.
    pub fn secs(self, scrape_interval: f64) -> f64 {
        match self {
            Self::Auto => window::auto_window(scrape_interval),
            Self::Secs(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for FailureLatency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Dist {
            p50_ms: f64,
            p99_ms: f64,
        }
        const EXPECTED: &str = "a number of ms or a map {p50_ms, p99_ms}";
        let v = serde_yaml::Value::deserialize(d)?;
        if let Some(f) = v.as_f64() {
            return Ok(Self::Fixed(f));
        }
        if v.is_mapping() {
            return serde_yaml::from_value::<Dist>(v)
                .map(|x| Self::LogNormal {
                    p50_ms: x.p50_ms,
                    p99_ms: x.p99_ms,
                })
                .map_err(|e| serde::de::Error::custom(format!("{e}, expected {EXPECTED}")));
        }
        Err(serde::de::Error::custom(format!("expected {EXPECTED}")))
    }
}

impl Serialize for QueryWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Secs(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for QueryWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(v) => Ok(Self::Secs(v)),
            Raw::Word(w) if w == "auto" => Ok(Self::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "query_window: is {w:?}, expected \"auto\" or a number of seconds"
            ))),
        }
    }
}

/// How long a failed request takes to be answered, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FailureLatency {
    /// Every failure takes this long.
    Fixed(f64),
    /// A log-normal of its own, fixed by its median and 99th percentile.
    LogNormal {
        /// Median, ms.
        p50_ms: f64,
        /// 99th percentile, ms (at least `p50_ms`).
        p99_ms: f64,
    },
}

fn default_warmup() -> f64 {
    30.0
}
fn default_scrape_interval() -> f64 {
    DEFAULT_SCRAPE_INTERVAL_SECS
}
fn default_control_interval() -> f64 {
    5.0
}
fn default_query_latency() -> f64 {
    DEFAULT_QUERY_LATENCY_SECS
}
fn default_propagation_delay() -> f64 {
    DEFAULT_PROPAGATION_DELAY_SECS
}
fn default_proxies() -> u32 {
    3
}
fn default_replicas() -> u32 {
    3
}
fn default_tail_cap() -> f64 {
    3.0
}
fn default_success() -> Series {
    Series::constant(1.0)
}

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in reports.
    pub name: String,
    /// What the scenario follows (paper section/figure) and what it assumes.
    #[serde(default)]
    pub note: String,
    /// Measured run length, seconds (series time runs from 0 to `duration`).
    pub duration: f64,
    /// Run before the measurement so that the filters have a baseline (paper §5.1); requests
    /// sent during it are not counted. Series hold their first value during the warm-up.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    /// Prometheus scrape interval, seconds (default 10 s, linkerd-viz's). Every client proxy is
    /// a target scraped at its own phase within the interval.
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval: f64,
    /// Control-loop interval of the policy, seconds.
    #[serde(default = "default_control_interval")]
    pub control_interval: f64,
    /// PromQL range window (`rate(...[20s])`): `auto` (the operator's rule: four scrape
    /// intervals, at least 10 s) or seconds, at least two scrape intervals.
    #[serde(default)]
    pub query_window: QueryWindow,
    /// Seconds from a control tick's query to its answer; the weights computed from it are
    /// written then.
    #[serde(default = "default_query_latency")]
    pub query_latency: f64,
    /// Seconds from a weight write to the client proxies routing by the new weights.
    #[serde(default = "default_propagation_delay")]
    pub propagation_delay: f64,
    /// Cluster names.
    pub clusters: Vec<String>,
    /// Round-trip time between clusters, ms: `rtt_ms[i][j]` from cluster `i` to cluster `j`.
    pub rtt_ms: Vec<Vec<f64>>,
    /// Client groups (each behind its own TrafficSplit and policy instance).
    pub clients: Vec<Client>,
    /// Backends of the split (one per cluster in the paper).
    pub backends: Vec<Backend>,
}

/// A group of clients in one cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Name, shown in errors.
    pub name: String,
    /// Cluster the clients run in.
    pub cluster: String,
    /// Offered request rate, requests per second (Poisson arrivals around it).
    pub rps: Series,
    /// How often a failed request is tried again (each retry is routed anew).
    #[serde(default)]
    pub max_retries: u32,
    /// Client pods (proxies) of the group: requests are spread over them in turn, each keeps its
    /// own balancer state and counters and is its own scrape target.
    #[serde(default = "default_proxies")]
    pub proxies: u32,
}

/// One backend of the split: a service in one cluster with its replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Name (the TrafficSplit backend service).
    pub name: String,
    /// Cluster the backend runs in.
    pub cluster: String,
    /// Replicas; requests join the replica with the fewest outstanding requests.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Requests one replica serves at once; more wait in its FIFO queue.
    pub concurrency: u32,
    /// Median service time, ms.
    pub p50_ms: Series,
    /// 99th-percentile service time, ms; with `p50_ms` it fixes a log-normal
    /// (`sigma = (ln p99 - ln p50) / 2.326`).
    pub p99_ms: Series,
    /// Service times are cut at `tail_cap × p99`: the traces give p50 and p99 only, and a
    /// log-normal fitted to a tail spike (p99 hundreds of times p50) would otherwise invent
    /// requests of many seconds beyond anything the trace shows.
    #[serde(default = "default_tail_cap")]
    pub tail_cap: f64,
    /// Probability that a request succeeds.
    #[serde(default = "default_success")]
    pub success: Series,
    /// Service time of a failed request, ms: a number, or `{p50_ms, p99_ms}` for a log-normal
    /// of its own; without it a failure takes a normal service time.
    #[serde(default)]
    pub failure_latency_ms: Option<FailureLatency>,
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(msg()))
    }
}

fn positive(path: &str, v: f64) -> Result<()> {
    check(v.is_finite() && v > 0.0, || {
        format!("{path}: is {v}, expected a finite number greater than 0")
    })
}

fn series(s: &Series, path: &str, lo: f64, hi: f64, expected: &str) -> Result<()> {
    s.validate(path, lo, hi, expected).map_err(Error::Invalid)
}

impl Scenario {
    /// Parses and validates a scenario; `origin` names the file or built-in in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let sc: Scenario = serde_yaml::from_str(text).map_err(|e| Error::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        sc.validate()?;
        Ok(sc)
    }

    /// The query window in seconds (`auto` resolved with the scrape interval).
    pub fn window_secs(&self) -> f64 {
        self.query_window.secs(self.scrape_interval)
    }

    /// Index of a cluster by name.
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c == name)
    }

    /// Checks every field; the error names the field path and what was expected.
    pub fn validate(&self) -> Result<()> {
        check(!self.name.trim().is_empty(), || {
            "name: expected a non-empty string".into()
        })?;
        positive("duration", self.duration)?;
        check(self.duration <= super::engine::MAX_DURATION_SECS, || {
            format!(
                "duration: is {} s, expected at most {} s",
                self.duration,
                super::engine::MAX_DURATION_SECS
            )
        })?;
        check(self.warmup.is_finite() && self.warmup >= 0.0, || {
            format!(
                "warmup: is {}, expected a finite number of seconds >= 0",
                self.warmup
            )
        })?;
        positive("scrape_interval", self.scrape_interval)?;
        positive("control_interval", self.control_interval)?;
        if let QueryWindow::Secs(w) = self.query_window {
            positive("query_window", w)?;
            check(window::window_fits(w, self.scrape_interval), || {
                format!(
                    "query_window: is {w} s, expected \"auto\" or at least two scrape intervals ({} s) so that rate() has two samples",
                    window::min_window(self.scrape_interval)
                )
            })?;
        }
        check(
            self.query_latency.is_finite()
                && (0.0..=MAX_QUERY_LATENCY_SECS).contains(&self.query_latency),
            || {
                format!(
                    "query_latency: is {}, expected seconds in [0, {MAX_QUERY_LATENCY_SECS}]",
                    self.query_latency
                )
            },
        )?;
        check(
            self.propagation_delay.is_finite()
                && (0.0..=MAX_PROPAGATION_DELAY_SECS).contains(&self.propagation_delay),
            || {
                format!(
                    "propagation_delay: is {}, expected seconds in [0, {MAX_PROPAGATION_DELAY_SECS}]",
                    self.propagation_delay
                )
            },
        )?;
        check(!self.clusters.is_empty(), || {
            "clusters: expected at least one cluster name".into()
        })?;
        for (i, c) in self.clusters.iter().enumerate() {
            check(!self.clusters[..i].contains(c), || {
                format!("clusters[{i}]: duplicate cluster name {c:?}")
            })?;
        }
        let n = self.clusters.len();
        check(self.rtt_ms.len() == n, || {
            format!(
                "rtt_ms: has {} rows, expected one per cluster ({n})",
                self.rtt_ms.len()
            )
        })?;
        for (i, row) in self.rtt_ms.iter().enumerate() {
            check(row.len() == n, || {
                format!(
                    "rtt_ms[{i}]: has {} values, expected one per cluster ({n})",
                    row.len()
                )
            })?;
            for (j, v) in row.iter().enumerate() {
                check(v.is_finite() && *v >= 0.0, || {
                    format!("rtt_ms[{i}][{j}]: is {v}, expected a finite number of ms >= 0")
                })?;
            }
        }
        check(!self.clients.is_empty(), || {
            "clients: expected at least one client group".into()
        })?;
        for (i, c) in self.clients.iter().enumerate() {
            let p = format!("clients[{i}]");
            check(self.cluster_index(&c.cluster).is_some(), || {
                format!(
                    "{p}.cluster: is {:?}, expected one of {:?}",
                    c.cluster, self.clusters
                )
            })?;
            series(
                &c.rps,
                &format!("{p}.rps"),
                0.0,
                1e7,
                "requests per second in [0, 1e7]",
            )?;
            check(c.max_retries <= 10, || {
                format!("{p}.max_retries: is {}, expected at most 10", c.max_retries)
            })?;
            check(c.proxies >= 1 && c.proxies <= 1000, || {
                format!("{p}.proxies: is {}, expected 1 to 1000", c.proxies)
            })?;
        }
        check(!self.backends.is_empty(), || {
            "backends: expected at least one backend".into()
        })?;
        for (i, b) in self.backends.iter().enumerate() {
            let p = format!("backends[{i}]");
            check(!b.name.is_empty(), || {
                format!("{p}.name: expected a non-empty string")
            })?;
            check(!self.backends[..i].iter().any(|o| o.name == b.name), || {
                format!("{p}.name: duplicate backend name {:?}", b.name)
            })?;
            check(self.cluster_index(&b.cluster).is_some(), || {
                format!(
                    "{p}.cluster: is {:?}, expected one of {:?}",
                    b.cluster, self.clusters
                )
            })?;
            check(b.replicas >= 1 && b.replicas <= 1000, || {
                format!("{p}.replicas: is {}, expected 1 to 1000", b.replicas)
            })?;
            check(b.concurrency >= 1 && b.concurrency <= 100_000, || {
                format!(
                    "{p}.concurrency: is {}, expected 1 to 100000",
                    b.concurrency
                )
            })?;
            series(
                &b.p50_ms,
                &format!("{p}.p50_ms"),
                1e-3,
                1e6,
                "a latency in ms in [0.001, 1e6]",
            )?;
            series(
                &b.p99_ms,
                &format!("{p}.p99_ms"),
                1e-3,
                1e6,
                "a latency in ms in [0.001, 1e6]",
            )?;
            series(
                &b.success,
                &format!("{p}.success"),
                0.0,
                1.0,
                "a probability in [0, 1]",
            )?;
            check(b.tail_cap.is_finite() && b.tail_cap >= 1.0, || {
                format!(
                    "{p}.tail_cap: is {}, expected a finite number >= 1",
                    b.tail_cap
                )
            })?;
            match b.failure_latency_ms {
                None => {}
                Some(FailureLatency::Fixed(f)) => check(f.is_finite() && f >= 0.0, || {
                    format!("{p}.failure_latency_ms: is {f}, expected a finite number of ms >= 0")
                })?,
                Some(FailureLatency::LogNormal { p50_ms, p99_ms }) => {
                    check((1e-3..=1e6).contains(&p50_ms), || {
                        format!(
                            "{p}.failure_latency_ms.p50_ms: is {p50_ms}, expected a latency in ms in [0.001, 1e6]"
                        )
                    })?;
                    check(
                        p99_ms.is_finite() && p99_ms >= p50_ms && p99_ms <= 1e6,
                        || {
                            format!(
                                "{p}.failure_latency_ms.p99_ms: is {p99_ms}, expected a latency in ms in [p50_ms ({p50_ms}), 1e6]"
                            )
                        },
                    )?;
                }
            }
            // p99 below p50 would make sigma negative: check at every point of either series.
            let times = b.p50_ms.points.iter().chain(&b.p99_ms.points).map(|p| p.0);
            for t in times {
                let (p50, p99) = (b.p50_ms.at(t), b.p99_ms.at(t));
                check(p99 >= p50, || {
                    format!(
                        "{p}.p99_ms: is {p99} at t={t} s, expected at least p50_ms ({p50}) at that time"
                    )
                })?;
            }
        }
        Ok(())
    }
}
