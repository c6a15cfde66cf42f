//! l3: latency-aware load balancing for multi-cluster Linkerd service meshes.
//!
//! Data flows one way: Prometheus → [`source`] (batched PromQL → per-backend samples) →
//! [`state`] (filters per backend) → [`algorithm`] (weights, rate control, normalisation) →
//! [`operator`] (control loop, TrafficSplit patch, status). [`sim`] replays scenarios through the
//! same algorithm and state code; [`cli`] wires the binary's subcommands.

pub mod algorithm;
pub mod cli;
pub mod duration;
#[doc(hidden)]
pub mod fuzzing;
pub mod operator;
pub mod replay;
pub mod sim;
pub mod source;
pub mod state;
pub mod tls;
