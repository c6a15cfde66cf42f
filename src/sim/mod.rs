//! `l3 simulate`: a deterministic discrete-event simulator of a multi-cluster service mesh that
//! replays scenarios through the same algorithm and state code as the operator.
//!
//! Modules: [`scenario`] (schema and validation) with [`series`] (time series), [`builtin`]
//! (embedded scenarios), [`rng`] (seeded PRNG and samplers), [`engine`] (the event loop),
//! [`observe`] (Prometheus as the operator's queries see it), [`policy`] (rr, c3, l3, l3-peak),
//! [`report`] (table, JSON, Markdown), [`plot`] (SVG) and [`evaluate`] (`make evaluate`).

pub mod builtin;
pub mod engine;
pub mod evaluate;
pub mod observe;
pub mod plot;
pub mod policy;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod series;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub use engine::{RunResult, run};
pub use policy::{Policy, PolicyKind};
pub use report::Report;
pub use scenario::Scenario;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario file or built-in that is not valid YAML for the schema.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A scenario that parsed but has an invalid value (the message names the field).
    #[error("invalid scenario: {0}")]
    Invalid(String),
    /// Neither a built-in name nor a readable file.
    #[error(
        "scenario {0:?} is neither a built-in scenario (see `l3 simulate --list`) nor a readable file"
    )]
    UnknownScenario(String),
    /// Reading a scenario file failed.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A policy name not in `rr, c3, l3, l3-peak`.
    #[error("unknown policy {0:?}, expected a comma-separated list of rr, c3, l3, l3-peak")]
    UnknownPolicy(String),
    /// A bad command-line value.
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    /// Writing the plot or the report failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// The algorithm refused the configuration (e.g. too many backends for the minimum share).
    #[error(transparent)]
    Algorithm(#[from] crate::algorithm::Error),
}

/// Result of the simulator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text table.
    Table,
    /// Pretty JSON (stable fields, see docs/scenarios.md).
    Json,
    /// Markdown table.
    Markdown,
}

/// Arguments of `l3 simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Built-in scenario name (see --list) or path to a scenario YAML file.
    #[arg(long, default_value = builtin::DEFAULT)]
    pub scenario: String,
    /// Comma-separated policies to compare: rr, c3, l3, l3-peak.
    #[arg(long, default_value = "rr,c3,l3,l3-peak")]
    pub policy: String,
    /// Seed of the random streams; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Measured duration instead of the scenario's, e.g. 600, 90s, 10m.
    #[arg(long)]
    pub duration: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write an SVG with p99 and backend shares over time to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Run every built-in scenario with every selected policy over --seeds seeds and print the
    /// Markdown evaluation report (what `make evaluate` writes to docs/evaluation.md).
    #[arg(long, conflicts_with_all = ["list", "plot"])]
    pub evaluate: bool,
    /// Number of seeds (1..=N) for --evaluate.
    #[arg(long, default_value_t = 3, requires = "evaluate")]
    pub seeds: u64,
}

/// Parses a duration such as `600`, `90s`, `10m` or `1h` into seconds.
pub fn parse_duration(s: &str) -> Result<f64> {
    // A bare number means seconds.
    let secs = s
        .trim()
        .parse::<f64>()
        .ok()
        .or_else(|| crate::duration::parse_secs(s));
    match secs {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(Error::Flag {
            flag: "--duration",
            message: format!(
                "is {s:?}, expected a positive number of seconds, optionally with s, m or h"
            ),
        }),
    }
}

/// Parses a comma-separated policy list (duplicates dropped, order kept).
pub fn parse_policies(s: &str) -> Result<Vec<PolicyKind>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let k = PolicyKind::parse(part)?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        return Err(Error::UnknownPolicy(s.to_owned()));
    }
    Ok(out)
}

/// A built-in scenario by name, else a YAML file by path.
pub fn load_scenario(name_or_path: &str) -> Result<Scenario> {
    if let Some(sc) = builtin::get(name_or_path) {
        return sc;
    }
    let path = std::path::Path::new(name_or_path);
    if !path.exists() {
        return Err(Error::UnknownScenario(name_or_path.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: name_or_path.to_owned(),
        source,
    })?;
    Scenario::from_yaml(&text, name_or_path)
}

/// Reports progress on stderr: live when stderr is a terminal, otherwise only once a run has
/// taken more than [`Progress::QUIET_FOR`], and never on stdout.
pub struct Progress {
    started: Instant,
    last: Option<Instant>,
    tty: bool,
    shown: bool,
}

impl Progress {
    /// Runs shorter than this print nothing when stderr is not a terminal.
    pub const QUIET_FOR: Duration = Duration::from_secs(2);

    /// A new indicator.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Reports that `what` has reached `fraction` (0 to 1).
    pub fn update(&mut self, what: &str, fraction: f64) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.started);
        let period = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        if !self.tty && elapsed < Self::QUIET_FOR {
            return;
        }
        if self.last.is_some_and(|l| now.duration_since(l) < period) {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let pct = (fraction * 100.0).clamp(0.0, 100.0);
        let mut err = std::io::stderr().lock();
        // Progress output is best effort: a closed stderr must not fail the run.
        let _ = if self.tty {
            write!(err, "\r\x1b[Ksimulating {what}: {pct:3.0} %")
        } else {
            writeln!(err, "simulating {what}: {pct:3.0} %")
        };
    }

    /// Clears the live line.
    pub fn finish(&mut self) {
        if self.tty && self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs every policy on a scenario, reporting progress.
pub fn run_policies(
    sc: &Scenario,
    policies: &[PolicyKind],
    seed: u64,
    duration: Option<f64>,
    progress: &mut Progress,
) -> Result<Vec<RunResult>> {
    let total = duration.unwrap_or(sc.duration);
    let n = policies.len() as f64;
    policies
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let what = format!("{} ({})", sc.name, k.name());
            run(sc, k, seed, duration, &mut |t| {
                progress.update(&what, (i as f64 + t / total) / n)
            })
        })
        .collect()
}

/// Run `l3 simulate`.
pub fn main(args: &SimulateArgs) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let write_out = |out: &mut std::io::StdoutLock, text: &str| {
        out.write_all(text.as_bytes())
            .map_err(|source| Error::Write {
                path: "stdout".into(),
                source,
            })
    };
    if args.list {
        return write_out(&mut stdout, &builtin::list()?);
    }
    let policies = parse_policies(&args.policy)?;
    let duration = args.duration.as_deref().map(parse_duration).transpose()?;
    if args.evaluate {
        if args.seeds == 0 {
            return Err(Error::Flag {
                flag: "--seeds",
                message: "is 0, expected at least 1".into(),
            });
        }
        let seeds: Vec<u64> = (1..=args.seeds).collect();
        let text = evaluate::markdown(&policies, &seeds, duration)?;
        return write_out(&mut stdout, &text);
    }
    let sc = load_scenario(&args.scenario)?;
    let mut progress = Progress::new();
    let runs = run_policies(&sc, &policies, args.seed, duration, &mut progress);
    progress.finish();
    let runs = runs?;
    let report = Report::new(&sc, args.seed, duration.unwrap_or(sc.duration), &runs);
    let text = match args.format {
        Format::Table => report.to_table(),
        Format::Json => report.to_json(),
        Format::Markdown => report.to_markdown(),
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&sc, args.seed, &runs)).map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    write_out(&mut stdout, &text)
}
