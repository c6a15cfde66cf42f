//! `l3 simulate`: a deterministic discrete-event simulator of a multi-cluster service mesh that
//! replays scenarios through the same algorithm and state code as the operator.
//!
//! Modules: [`scenario`] (schema and validation) with [`series`] (time series), [`builtin`]
//! (embedded scenarios), [`rng`] (seeded PRNG and samplers), [`engine`] (the event loop),
//! [`observe`] (Prometheus as the operator's queries see it), [`policy`] (rr, c3, c3-p99, p2c,
//! l3, l3+p2c, l3-peak) with [`p2c`] (Linkerd's proxy balancer), [`latency`] (bounded-memory
//! quantiles), [`report`] (table, JSON, Markdown), [`plot`] (SVG, PNG) and [`evaluate`]
//! (`make evaluate`).

pub mod builtin;
pub mod engine;
pub mod evaluate;
pub mod latency;
pub mod observe;
pub mod p2c;
pub mod plot;
pub mod policy;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod series;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub use engine::{RunResult, run};
pub use policy::{Policy, PolicyKind, Routing};
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
    /// A policy name not in [`PolicyKind::ALL`].
    #[error("unknown policy {0:?}, expected a comma-separated list of {names}", names = PolicyKind::names())]
    UnknownPolicy(String),
    /// A run in which no user request was measured: nothing to report.
    #[error("{0}")]
    NothingMeasured(String),
    /// Rendering the plot as PNG failed.
    #[error("cannot render {path}: {message}")]
    Render { path: String, message: String },
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
    /// Comma-separated policies to compare: rr, c3, c3-p99, p2c, l3, l3+p2c, l3-peak.
    #[arg(long, default_value = "rr,c3,c3-p99,p2c,l3,l3+p2c,l3-peak")]
    pub policy: String,
    /// Seed of the random streams; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    pub seed: u64,
    /// Measured duration instead of the scenario's, e.g. 600, 90s, 10m.
    // Hyphen values are let through so that `--duration -5m` reaches parse_duration and gets
    // its message instead of clap's "unexpected argument".
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also plot p99 and backend shares over time to this file: SVG, or PNG when the name ends
    /// in .png.
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<std::path::PathBuf>,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Run every built-in scenario with every selected policy over --seeds seeds and print the
    /// Markdown evaluation report (what `make evaluate` writes to docs/evaluation.md).
    #[arg(long, conflicts_with_all = ["list", "plot"])]
    pub evaluate: bool,
    /// Number of seeds (1..=N) for --evaluate.
    #[arg(
        long,
        default_value_t = 3,
        requires = "evaluate",
        allow_hyphen_values = true
    )]
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

/// Parses a comma-separated policy list (duplicates dropped, order kept); an empty item
/// (`rr,,l3`, a trailing comma) is an error.
pub fn parse_policies(s: &str) -> Result<Vec<PolicyKind>> {
    let mut out = Vec::new();
    for (i, part) in s.split(',').enumerate() {
        if part.trim().is_empty() {
            return Err(Error::Flag {
                flag: "--policy",
                message: format!(
                    "item {} of {s:?} is empty, expected a comma-separated list of {}",
                    i + 1,
                    PolicyKind::names()
                ),
            });
        }
        let k = PolicyKind::parse(part)?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// What `--plot` writes, by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    /// `.svg`.
    Svg,
    /// `.png`, rendered from the SVG with resvg.
    Png,
}

/// The plot format for a path: `.svg` or `.png` (any case); anything else is refused.
pub fn plot_format(path: &std::path::Path) -> Result<PlotFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("svg") => Ok(PlotFormat::Svg),
        Some("png") => Ok(PlotFormat::Png),
        _ => Err(Error::Flag {
            flag: "--plot",
            message: format!(
                "is {:?}, expected a file name ending in .svg or .png",
                path.display().to_string()
            ),
        }),
    }
}

/// Refuses a run set in which no user request was measured (the report would be all NaN), naming
/// why when a client offers no traffic.
pub fn check_measured(sc: &Scenario, runs: &[RunResult], duration: f64) -> Result<()> {
    let Some(empty) = runs.iter().find(|r| r.requests() == 0) else {
        return Ok(());
    };
    let idle: Vec<&str> = sc
        .clients
        .iter()
        .filter(|c| c.rps.max() <= 0.0)
        .map(|c| c.name.as_str())
        .collect();
    let why = if idle.len() == sc.clients.len() {
        format!(
            "every client offers 0 RPS ({}), so no request was sent",
            idle.join(", ")
        )
    } else {
        format!(
            "the clients sent no request that started in the {duration} s measured (is the rate 0 there, or the duration too short?)"
        )
    };
    Err(Error::NothingMeasured(format!(
        "scenario {}: nothing measured for policy {}: {why}",
        sc.name,
        empty.policy.name()
    )))
}

/// Notes on stderr for clients that offer no traffic at all (the run goes on with the others).
fn warn_idle_clients(sc: &Scenario) {
    for c in sc.clients.iter().filter(|c| c.rps.max() <= 0.0) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "note: scenario {}: client {} offers 0 RPS throughout and sends no request",
            sc.name,
            c.name
        );
    }
}

/// Writes the plot of `runs` to `path` as SVG or PNG (by extension).
pub fn write_plot(
    path: &std::path::Path,
    sc: &Scenario,
    seed: u64,
    runs: &[RunResult],
) -> Result<()> {
    let format = plot_format(path)?;
    let svg = plot::svg(sc, seed, runs);
    let bytes = match format {
        PlotFormat::Svg => svg.into_bytes(),
        PlotFormat::Png => plot::png(&svg).map_err(|message| Error::Render {
            path: path.display().to_string(),
            message,
        })?,
    };
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.display().to_string(),
        source,
    })
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
    // Refuse a bad plot name before spending the run on it.
    if let Some(path) = &args.plot {
        plot_format(path)?;
    }
    let sc = load_scenario(&args.scenario)?;
    warn_idle_clients(&sc);
    let mut progress = Progress::new();
    let runs = run_policies(&sc, &policies, args.seed, duration, &mut progress);
    progress.finish();
    let runs = runs?;
    let measured = duration.unwrap_or(sc.duration);
    check_measured(&sc, &runs, measured)?;
    let report = Report::new(&sc, args.seed, measured, &runs);
    let text = match args.format {
        Format::Table => report.to_table(),
        Format::Json => report.to_json(),
        Format::Markdown => report.to_markdown(),
    };
    write_out(&mut stdout, &text)?;
    if let Some(path) = &args.plot {
        write_plot(path, &sc, args.seed, &runs)?;
        // Where it went, on stderr so that stdout stays the report alone.
        let _ = writeln!(
            std::io::stderr().lock(),
            "plot written to {}",
            path.display()
        );
    }
    Ok(())
}
