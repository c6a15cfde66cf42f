//! Reports of a simulation: the per-policy summary and its table, JSON and Markdown renderings.
//!
//! The JSON layout is stable (documented in `docs/scenarios.md`): fields are only ever added.

use serde::Serialize;

use super::engine::RunResult;
use super::policy::PolicyKind;
use super::scenario::Scenario;

/// Latency quantiles of the end-to-end (user) latency, ms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// One policy's results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyReport {
    /// Policy name (`rr`, `c3`, `l3`, `l3-peak`).
    pub policy: String,
    /// Measured user requests (a retried request counts once).
    pub requests: u64,
    /// Fraction of user requests that finally succeeded.
    pub success_rate: f64,
    /// End-to-end latency quantiles (all user requests, retries included), ms, within 0.1 % of
    /// the nearest-rank quantile (HdrHistogram, 3 significant digits).
    pub latency_ms: Latency,
    /// `(p99 - p99_rr) / p99_rr * 100`; `null` when `rr` was not run.
    pub p99_change_vs_rr_pct: Option<f64>,
    /// `(p99 - p99_c3) / p99_c3 * 100`; `null` when `c3` was not run.
    pub p99_change_vs_c3_pct: Option<f64>,
    /// `(p99 - p99_p2c) / p99_p2c * 100`; `null` when `p2c` was not run.
    pub p99_change_vs_p2c_pct: Option<f64>,
    /// Share of the attempts each backend received, in scenario order.
    pub backend_share: Vec<BackendShare>,
}

/// A backend's share of the attempts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackendShare {
    /// Backend name.
    pub backend: String,
    /// Fraction of attempts.
    pub share: f64,
}

/// The whole report of one `l3 simulate` run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Measured seconds.
    pub duration_secs: f64,
    /// Warm-up seconds before the measurement.
    pub warmup_secs: f64,
    /// One entry per policy, in the order they ran.
    pub policies: Vec<PolicyReport>,
}

/// Rounds to 1e-3 so that reports stay readable (and identical across runs anyway).
fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn change(v: f64, base: f64) -> f64 {
    r3((v - base) / base * 100.0)
}

impl Report {
    /// Summarises the runs.
    pub fn new(sc: &Scenario, seed: u64, duration: f64, runs: &[RunResult]) -> Self {
        let p99_of = |k: PolicyKind| {
            runs.iter()
                .find(|r| r.policy == k)
                .map(|r| r.quantile_ms(0.99))
        };
        let (rr, c3, p2c) = (
            p99_of(PolicyKind::RoundRobin),
            p99_of(PolicyKind::C3),
            p99_of(PolicyKind::P2c),
        );
        let policies = runs
            .iter()
            .map(|r| {
                let p99 = r.quantile_ms(0.99);
                let total: u64 = r.attempts.iter().sum();
                PolicyReport {
                    policy: r.policy.name().to_owned(),
                    requests: r.requests(),
                    success_rate: (r.success_rate() * 1e6).round() / 1e6,
                    latency_ms: Latency {
                        p50: r3(r.quantile_ms(0.5)),
                        p90: r3(r.quantile_ms(0.9)),
                        p99: r3(p99),
                        p999: r3(r.quantile_ms(0.999)),
                    },
                    p99_change_vs_rr_pct: rr.map(|b| change(p99, b)),
                    p99_change_vs_c3_pct: c3.map(|b| change(p99, b)),
                    p99_change_vs_p2c_pct: p2c.map(|b| change(p99, b)),
                    backend_share: sc
                        .backends
                        .iter()
                        .zip(&r.attempts)
                        .map(|(b, &a)| BackendShare {
                            backend: b.name.clone(),
                            share: if total > 0 {
                                (a as f64 / total as f64 * 1e4).round() / 1e4
                            } else {
                                0.0
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            scenario: sc.name.clone(),
            seed,
            duration_secs: duration,
            warmup_secs: sc.warmup,
            policies,
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    fn rows(&self) -> Vec<[String; 10]> {
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:+.1} %"));
        self.policies
            .iter()
            .map(|p| {
                [
                    p.policy.clone(),
                    format!("{:.1}", p.latency_ms.p50),
                    format!("{:.1}", p.latency_ms.p90),
                    format!("{:.1}", p.latency_ms.p99),
                    format!("{:.1}", p.latency_ms.p999),
                    format!("{:.2} %", p.success_rate * 100.0),
                    p.requests.to_string(),
                    pct(p.p99_change_vs_rr_pct),
                    pct(p.p99_change_vs_c3_pct),
                    pct(p.p99_change_vs_p2c_pct),
                ]
            })
            .collect()
    }

    const HEADER: [&'static str; 10] = [
        "policy",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "success",
        "requests",
        "p99 vs rr",
        "p99 vs c3",
        "p99 vs p2c",
    ];

    fn title(&self) -> String {
        format!(
            "scenario {} · seed {} · {} s measured after {} s warm-up",
            self.scenario, self.seed, self.duration_secs, self.warmup_secs
        )
    }

    /// Aligned plain-text table.
    pub fn to_table(&self) -> String {
        let rows = self.rows();
        let mut widths = Self::HEADER.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i == 0 {
                    s += &format!("{c:<w$}");
                } else {
                    s += &format!("  {c:>w$}");
                }
            }
            s + "\n"
        };
        let mut out = self.title() + "\n";
        out += &line(Self::HEADER.to_vec());
        for r in &rows {
            out += &line(r.iter().map(String::as_str).collect());
        }
        out
    }

    /// GitHub-flavoured Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("**{}**\n\n", self.title());
        out += &format!("| {} |\n", Self::HEADER.join(" | "));
        out += &format!("|{}\n", "---|".repeat(Self::HEADER.len()));
        for r in self.rows() {
            out += &format!("| {} |\n", r.join(" | "));
        }
        out
    }
}
