//! `l3 simulate`: a deterministic discrete-event simulator of a multi-cluster service mesh that
//! replays scenarios through the same algorithm and state code as the operator.

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not built yet.
    #[error("`l3 simulate` is not implemented yet")]
    NotImplemented,
}

/// Result of the simulator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Arguments of `l3 simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {}

/// Run `l3 simulate`.
pub fn main(_args: &SimulateArgs) -> Result<()> {
    Err(Error::NotImplemented)
}
