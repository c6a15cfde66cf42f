//! Command-line interface of the `l3` binary: argument parsing and dispatch to the subcommands.

use clap::{Parser, Subcommand};

/// Errors surfaced by the command line, one variant per subcommand's layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `l3 simulate` failed.
    #[error(transparent)]
    Simulate(#[from] crate::sim::Error),
    /// `l3 run` or `l3 crdgen` failed.
    #[error(transparent)]
    Operator(#[from] crate::operator::Error),
    /// `l3 replay` failed.
    #[error(transparent)]
    Replay(#[from] crate::replay::Error),
}

/// Result of the command line.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Latency-aware load balancing for multi-cluster Linkerd service meshes.
///
/// l3 reads each backend's p99 latency, success rate, RPS and in-flight requests from Prometheus,
/// filters them, computes weights with the L3 algorithm (Middleware '24) and writes them into SMI
/// TrafficSplits, so traffic flows to the replicas that answer fast.
#[derive(Debug, Parser)]
#[command(name = "l3", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: watch LatencyPolicies and keep their TrafficSplits' weights tuned.
    Run(Box<crate::operator::RunArgs>),
    /// Put every adopted TrafficSplit's original weights back and release l3's finalizers
    /// (for uninstalling l3 with LatencyPolicies left; run it once the operator has stopped).
    Restore(crate::operator::restore::RestoreArgs),
    /// Print the LatencyPolicy CustomResourceDefinition as YAML.
    Crdgen,
    /// Replay a scenario through the L3 algorithm and compare p99 latency with round-robin and C3.
    Simulate(crate::sim::SimulateArgs),
    /// What l3 would have done on a split's own history in Prometheus: per-interval weights,
    /// writes after hysteresis, filtered signals and a first-order estimate of the effect.
    Replay(Box<crate::replay::ReplayArgs>),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => Ok(crate::operator::main(&args)?),
        Command::Restore(args) => Ok(crate::operator::restore::main(&args)?),
        Command::Crdgen => Ok(crate::operator::crdgen()?),
        Command::Simulate(args) => Ok(crate::sim::main(&args)?),
        Command::Replay(args) => Ok(crate::replay::main(&args)?),
    }
}
