//! `l3 run`: the operator. Watches LatencyPolicies and keeps their TrafficSplits' weights tuned.

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not built yet.
    #[error("`l3 {0}` is not implemented yet")]
    NotImplemented(&'static str),
}

/// Result of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Arguments of `l3 run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {}

/// Run the operator until a shutdown signal.
pub fn main(_args: &RunArgs) -> Result<()> {
    Err(Error::NotImplemented("run"))
}

/// Print the LatencyPolicy CRD as YAML.
pub fn crdgen() -> Result<()> {
    Err(Error::NotImplemented("crdgen"))
}
