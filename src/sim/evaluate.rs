//! `make evaluate`: every built-in scenario × every policy × several seeds, summarised beside the
//! paper's published figures (§5.3, Figures 9–12) as the Markdown of `docs/evaluation.md`.
//!
//! Runs are spread over std threads (one job per scenario and seed); the output does not depend
//! on the number of threads or their timing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::builtin;
use super::engine::{RunResult, run};
use super::policy::PolicyKind;
use super::scenario::Scenario;
use super::{Error, Result};

/// A figure the paper published for a scenario: p99 change of L3 vs round-robin and vs C3 (%),
/// and success rates where it gave them.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Scenario name.
    pub scenario: &'static str,
    /// L3's p99 change vs round-robin, %.
    pub vs_rr: f64,
    /// L3's p99 change vs C3, % (not published for the failure scenarios).
    pub vs_c3: Option<f64>,
    /// Where the paper states it.
    pub source: &'static str,
}

/// The paper's figures (§5.3, Figures 9–12).
pub const PUBLISHED: [Published; 8] = [
    Published {
        scenario: "hotel-reservation",
        vs_rr: -26.0,
        vs_c3: Some(-22.0),
        source: "§5.3.1, Fig. 9",
    },
    Published {
        scenario: "scenario-1",
        vs_rr: -22.0,
        vs_c3: Some(-8.0),
        source: "§5.3.1, Fig. 10a",
    },
    Published {
        scenario: "scenario-2",
        vs_rr: -35.0,
        vs_c3: Some(-9.0),
        source: "§5.3.1, Fig. 10b",
    },
    Published {
        scenario: "scenario-3",
        vs_rr: -19.0,
        vs_c3: Some(-11.0),
        source: "§5.3.1, Fig. 10c",
    },
    Published {
        scenario: "scenario-4",
        vs_rr: -9.0,
        vs_c3: Some(-5.0),
        source: "§5.3.1, Fig. 10d (§5.2.2 reports -28.4 % EWMA / -26.7 % PeakEWMA on the same trace)",
    },
    Published {
        scenario: "scenario-5",
        vs_rr: -9.0,
        vs_c3: Some(-3.0),
        source: "§5.3.1, Fig. 10e",
    },
    Published {
        scenario: "failure-1",
        vs_rr: -18.5,
        vs_c3: None,
        source: "§5.3.2, Fig. 11; success 91.4 % (rr) → 92.4 % (l3), Fig. 12a",
    },
    Published {
        scenario: "failure-2",
        vs_rr: -35.0,
        vs_c3: None,
        source: "§5.3.2, Fig. 11; success ≈ 98.6 % (rr) and slightly above 98 % for all, Fig. 12b",
    },
];

/// Mean, minimum and maximum over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Over the values (NaN for none).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        Self {
            mean: values.iter().sum::<f64>() / n,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    fn pct(&self) -> String {
        format!("{:+.1} % [{:+.1}, {:+.1}]", self.mean, self.min, self.max)
    }

    fn ms(&self) -> String {
        format!("{:.1} [{:.1}, {:.1}]", self.mean, self.min, self.max)
    }
}

/// Results of one scenario: `runs[seed index][policy index]`.
pub struct ScenarioResults {
    /// The scenario.
    pub scenario: Scenario,
    /// Per seed, per policy.
    pub runs: Vec<Vec<RunResult>>,
}

/// Runs every built-in × `policies` × `seeds` in parallel.
pub fn run_all(
    policies: &[PolicyKind],
    seeds: &[u64],
    duration: Option<f64>,
) -> Result<Vec<ScenarioResults>> {
    run_grid(builtin::all()?, policies, seeds, duration)
}

/// Runs every scenario × `policies` × `seeds` in parallel.
pub fn run_grid(
    scenarios: Vec<Scenario>,
    policies: &[PolicyKind],
    seeds: &[u64],
    duration: Option<f64>,
) -> Result<Vec<ScenarioResults>> {
    let jobs: Vec<(usize, usize)> = (0..scenarios.len())
        .flat_map(|s| (0..seeds.len()).map(move |k| (s, k)))
        .collect();
    type Slot = Option<Result<Vec<RunResult>>>;
    let slots: Vec<Mutex<Slot>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let progress = Mutex::new(super::Progress::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(jobs.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, k)) = jobs.get(j) else { break };
                    let res: Result<Vec<RunResult>> = policies
                        .iter()
                        .map(|&p| {
                            let r = run(&scenarios[s], p, seeds[k], duration, &mut |_| {})?;
                            super::check_measured(
                                &scenarios[s],
                                std::slice::from_ref(&r),
                                duration.unwrap_or(scenarios[s].duration),
                            )?;
                            Ok(r)
                        })
                        .collect();
                    if let Ok(mut slot) = slots[j].lock() {
                        *slot = Some(res);
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Ok(mut p) = progress.lock() {
                        p.update("the evaluation", finished as f64 / jobs.len() as f64);
                    }
                }
            });
        }
    });
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    let mut results: Vec<ScenarioResults> = scenarios
        .into_iter()
        .map(|scenario| ScenarioResults {
            scenario,
            runs: Vec::new(),
        })
        .collect();
    for ((s, _), slot) in jobs.iter().zip(slots) {
        let res = slot
            .into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| Error::Invalid("an evaluation worker thread died".into()))??;
        results[*s].runs.push(res);
    }
    Ok(results)
}

fn spread_of(r: &ScenarioResults, f: impl Fn(&[RunResult]) -> Option<f64>) -> Option<Spread> {
    let v: Option<Vec<f64>> = r.runs.iter().map(|seed| f(seed)).collect();
    v.filter(|v| !v.is_empty()).map(|v| Spread::of(&v))
}

fn find(runs: &[RunResult], k: PolicyKind) -> Option<&RunResult> {
    runs.iter().find(|r| r.policy == k)
}

fn change_vs(runs: &[RunResult], k: PolicyKind, base: PolicyKind) -> Option<f64> {
    let a = find(runs, k)?.quantile_ms(0.99);
    let b = find(runs, base)?.quantile_ms(0.99);
    Some((a - b) / b * 100.0)
}

/// The whole `docs/evaluation.md`.
pub fn markdown(policies: &[PolicyKind], seeds: &[u64], duration: Option<f64>) -> Result<String> {
    let results = run_all(policies, seeds, duration)?;
    let seeds_txt = seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    out += "# Evaluation: `l3 simulate` beside the paper\n\n";
    out += "<!-- Generated by `make evaluate`; edit src/sim/evaluate.rs, not this file. -->\n\n";
    out += &format!(
        "Every built-in scenario × policies {} × seeds {seeds_txt}, simulated by \
         `l3 simulate --evaluate --seeds {}` (release build). Figures are the **mean over seeds \
         [min, max]**. A p99 change is `(p99_policy - p99_baseline) / p99_baseline` per seed; \
         negative is better. Latency is end to end as the client sees it (WAN round trip + \
         queueing + service, retries included), over every user request of the measured \
         period, from a histogram with 3 significant digits (quantiles within 0.1 %). The loop \
         is observed as the operator sees it: three client proxies per client, each a scrape \
         target at its own phase; the operator's auto window; query latency and propagation \
         delay (settings in each scenario's header, model in `docs/scenarios.md`). The paper's \
         figures are from its §5.3, Figures 9–12.\n\n",
        policies
            .iter()
            .map(|p| format!("`{}`", p.name()))
            .collect::<Vec<_>>()
            .join(", "),
        seeds.len()
    );
    out += "## L3 versus the baselines\n\n";
    out += "p99 change of the first policy against the second (negative: the first is faster). \
            `c3` is the paper's C3 (log-normal mean), `c3-p99` the same driven by p99, `p2c` \
            Linkerd's per-request balancer over every replica of every cluster (a federated \
            service), `l3+p2c` L3's weights across clusters with P2C inside each.\n\n";
    out += "| scenario | paper: l3 vs rr | ours: l3 vs rr | paper: l3 vs c3 | ours: l3 vs c3 | ours: l3 vs c3-p99 | ours: l3 vs p2c | ours: l3+p2c vs p2c | ours: l3-peak vs rr | l3 p99 < rr p99 in every seed | lowest mean p99 |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in &results {
        let name = r.scenario.name.as_str();
        let paper = PUBLISHED.iter().find(|p| p.scenario == name);
        let cell = |s: Option<Spread>| s.map_or("-".to_owned(), |s| s.pct());
        let vs = |a: PolicyKind, b: PolicyKind| spread_of(r, |x| change_vs(x, a, b));
        let l3_rr = vs(PolicyKind::L3, PolicyKind::RoundRobin);
        let below = l3_rr.map_or("-".to_owned(), |s| {
            if s.max < 0.0 { "yes" } else { "**no**" }.to_owned()
        });
        let best = policies
            .iter()
            .filter_map(|&p| {
                spread_of(r, |x| find(x, p).map(|run| run.quantile_ms(0.99))).map(|s| (p, s.mean))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("-".to_owned(), |(p, _)| format!("`{}`", p.name()));
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {below} | {best} |\n",
            paper.map_or("-".to_owned(), |p| format!("{:+.1} %", p.vs_rr)),
            cell(l3_rr),
            paper
                .and_then(|p| p.vs_c3)
                .map_or("-".to_owned(), |v| format!("{v:+.1} %")),
            cell(vs(PolicyKind::L3, PolicyKind::C3)),
            cell(vs(PolicyKind::L3, PolicyKind::C3P99)),
            cell(vs(PolicyKind::L3, PolicyKind::P2c)),
            cell(vs(PolicyKind::L3P2c, PolicyKind::P2c)),
            cell(vs(PolicyKind::L3Peak, PolicyKind::RoundRobin)),
        );
    }
    out += "\nSources of the paper's figures: ";
    out += &PUBLISHED
        .iter()
        .map(|p| format!("{}: {}", p.scenario, p.source))
        .collect::<Vec<_>>()
        .join("; ");
    out += ".\n\n## Per scenario\n\n";
    for r in &results {
        out += &format!("### {}\n\n{}\n\n", r.scenario.name, r.scenario.note.trim());
        out += "| policy | p50 ms | p99 ms | p99.9 ms | success % | requests (mean) |\n";
        out += "|---|---|---|---|---|---|\n";
        for &p in policies {
            let q = |q: f64| spread_of(r, |x| find(x, p).map(|run| run.quantile_ms(q)));
            let sr = spread_of(r, |x| find(x, p).map(|run| run.success_rate() * 100.0));
            let n = spread_of(r, |x| find(x, p).map(|run| run.requests() as f64));
            let cell = |s: Option<Spread>| s.map_or("-".to_owned(), |s| s.ms());
            out += &format!(
                "| {} | {} | {} | {} | {} | {:.0} |\n",
                p.name(),
                cell(q(0.5)),
                cell(q(0.99)),
                cell(q(0.999)),
                sr.map_or("-".to_owned(), |s| format!(
                    "{:.2} [{:.2}, {:.2}]",
                    s.mean, s.min, s.max
                )),
                n.map_or(0.0, |s| s.mean),
            );
        }
        out += "\n";
    }
    out += &knobs(seeds, duration)?;
    out += DISCUSSION;
    Ok(out)
}

/// A change to the built-in observation and failure settings, for the knob table.
struct Knob {
    name: &'static str,
    apply: fn(&mut Scenario),
    /// Only meaningful where requests fail.
    failures_only: bool,
}

/// The knobs the discussion explains, each applied alone to the built-in settings.
const KNOBS: [Knob; 5] = [
    Knob {
        name: "as built in (scrape 5 s, window auto = 20 s, query 0.1 s, propagation 1 s)",
        apply: |_| {},
        failures_only: false,
    },
    Knob {
        name: "idealised loop: window 10 s, no query latency, no propagation delay",
        apply: |sc| {
            sc.query_window = super::scenario::QueryWindow::Secs(10.0);
            sc.query_latency = 0.0;
            sc.propagation_delay = 0.0;
        },
        failures_only: false,
    },
    Knob {
        name: "scrape 10 s (linkerd-viz), window auto = 40 s",
        apply: |sc| {
            sc.scrape_interval = 10.0;
            sc.query_window = super::scenario::QueryWindow::Auto;
        },
        failures_only: false,
    },
    Knob {
        name: "propagation delay 5 s",
        apply: |sc| sc.propagation_delay = 5.0,
        failures_only: false,
    },
    Knob {
        name: "failures answered fast (p50 2 ms, p99 20 ms)",
        apply: |sc| {
            for b in &mut sc.backends {
                b.failure_latency_ms = Some(super::scenario::FailureLatency::LogNormal {
                    p50_ms: 2.0,
                    p99_ms: 20.0,
                });
            }
        },
        failures_only: true,
    },
];

/// Scenarios of the knob table: the paper's headline, the spikiest trace, the two failure ones.
const KNOB_SCENARIOS: [&str; 4] = ["hotel-reservation", "scenario-2", "failure-1", "failure-2"];

/// Policies of the knob table.
const KNOB_POLICIES: [PolicyKind; 4] = [
    PolicyKind::RoundRobin,
    PolicyKind::C3P99,
    PolicyKind::P2c,
    PolicyKind::L3,
];

/// The "what each knob does" section: each knob alone on a few built-ins.
fn knobs(seeds: &[u64], duration: Option<f64>) -> Result<String> {
    let mut scenarios = Vec::new();
    let mut knob_of = Vec::new();
    for name in KNOB_SCENARIOS {
        let base = builtin::get(name).ok_or_else(|| Error::UnknownScenario(name.to_owned()))??;
        let fails = base.backends.iter().any(|b| b.success.min() < 1.0);
        for knob in KNOBS.iter().filter(|k| fails || !k.failures_only) {
            knob_of.push(knob);
            let mut sc = base.clone();
            (knob.apply)(&mut sc);
            sc.validate()?;
            scenarios.push(sc);
        }
    }
    let results = run_grid(scenarios, &KNOB_POLICIES, seeds, duration)?;
    let mut out = String::from("## What each knob does\n\n");
    out += "Each row changes one setting of the built-in scenario and keeps the rest; same seeds \
            as above. The p99 changes are mean [min, max] over seeds; success is the mean.\n\n";
    out += "| scenario | setting | l3 vs rr | l3 vs p2c | c3-p99 vs rr | p2c vs rr | success rr / p2c / l3 % |\n";
    out += "|---|---|---|---|---|---|---|\n";
    for (r, knob) in results.iter().zip(knob_of) {
        let vs = |a: PolicyKind, b: PolicyKind| {
            spread_of(r, |x| change_vs(x, a, b)).map_or("-".to_owned(), |s| s.pct())
        };
        let sr = |p: PolicyKind| {
            spread_of(r, |x| find(x, p).map(|run| run.success_rate() * 100.0))
                .map_or("-".to_owned(), |s| format!("{:.2}", s.mean))
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
            r.scenario.name,
            knob.name,
            vs(PolicyKind::L3, PolicyKind::RoundRobin),
            vs(PolicyKind::L3, PolicyKind::P2c),
            vs(PolicyKind::C3P99, PolicyKind::RoundRobin),
            vs(PolicyKind::P2c, PolicyKind::RoundRobin),
            sr(PolicyKind::RoundRobin),
            sr(PolicyKind::P2c),
            sr(PolicyKind::L3),
        );
    }
    out += "\n";
    Ok(out)
}

/// Written after reading the measured figures; regenerate and re-read when the model changes.
const DISCUSSION: &str = include_str!("evaluation_discussion.md");
