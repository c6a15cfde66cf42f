//! l3: latency-aware load balancing for multi-cluster Linkerd service meshes.
//!
//! Data flows one way: Prometheus → `source` (batched PromQL → per-backend samples) →
//! [`state`] (filters per backend) → [`algorithm`] (weights, rate control, normalisation) →
//! `actuator` (TrafficSplit patch, status). [`cli`] wires the binary's subcommands.

pub mod algorithm;
pub mod cli;
pub mod state;
