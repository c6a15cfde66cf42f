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
    let scenarios = builtin::all()?;
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
                        .map(|&p| run(&scenarios[s], p, seeds[k], duration, &mut |_| {}))
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
         period. The paper's figures are from its §5.3, Figures 9–12.\n\n",
        policies
            .iter()
            .map(|p| format!("`{}`", p.name()))
            .collect::<Vec<_>>()
            .join(", "),
        seeds.len()
    );
    out += "## L3 versus the baselines\n\n";
    out += "| scenario | paper: l3 vs rr | ours: l3 vs rr | paper: l3 vs c3 | ours: l3 vs c3 | ours: l3-peak vs rr | l3 p99 < rr p99 in every seed |\n";
    out += "|---|---|---|---|---|---|---|\n";
    for r in &results {
        let name = r.scenario.name.as_str();
        let paper = PUBLISHED.iter().find(|p| p.scenario == name);
        let cell = |s: Option<Spread>| s.map_or("-".to_owned(), |s| s.pct());
        let l3_rr = spread_of(r, |x| change_vs(x, PolicyKind::L3, PolicyKind::RoundRobin));
        let l3_c3 = spread_of(r, |x| change_vs(x, PolicyKind::L3, PolicyKind::C3));
        let peak_rr = spread_of(r, |x| {
            change_vs(x, PolicyKind::L3Peak, PolicyKind::RoundRobin)
        });
        let below = l3_rr.map_or("-".to_owned(), |s| {
            if s.max < 0.0 { "yes" } else { "**no**" }.to_owned()
        });
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} | {below} |\n",
            paper.map_or("-".to_owned(), |p| format!("{:+.1} %", p.vs_rr)),
            cell(l3_rr),
            paper
                .and_then(|p| p.vs_c3)
                .map_or("-".to_owned(), |v| format!("{v:+.1} %")),
            cell(l3_c3),
            cell(peak_rr),
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
    out += DISCUSSION;
    Ok(out)
}

/// Written after reading the measured figures; regenerate and re-read when the model changes.
const DISCUSSION: &str = include_str!("evaluation_discussion.md");
