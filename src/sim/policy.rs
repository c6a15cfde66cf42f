//! Load-balancing policies the simulator compares. Each turns one control tick's per-backend
//! samples into TrafficSplit weights, through the operator's own state and algorithm code, and
//! names how the client proxies route ([`Routing`]): by those weights, or per request with
//! Linkerd's P2C balancer ([`super::p2c`]).
//!
//! New variants implement [`Policy`] and get a name in [`PolicyKind`].

use std::collections::BTreeMap;

use crate::algorithm::c3::C3Estimate;
use crate::algorithm::{self, DEFAULT_MIN_SHARE, DEFAULT_TOTAL_WEIGHT, FilterKind, PipelineConfig};
use crate::state::{BackendSample, BackendState, FilterSettings, SplitState};

use super::{Error, Result};

/// A load-balancing policy for one TrafficSplit.
pub trait Policy {
    /// Weights for the backends (in scenario order) from this tick's samples taken at `t`.
    fn weights(&mut self, t: f64, samples: &[BackendSample]) -> Result<Vec<u32>>;
}

/// How a client proxy picks where an attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// A backend with probability proportional to the policy's weights; inside the backend the
    /// replica with the fewest outstanding requests (an idealised in-cluster balancer).
    Weighted,
    /// Linkerd's P2C over every replica of every backend (a federated service); the policy's
    /// weights are not used.
    P2c,
    /// A backend by the policy's weights, then P2C among that backend's replicas.
    WeightedP2c,
}

/// The policies `l3 simulate` knows, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// Equal weights: Linkerd's behaviour without a latency-aware split.
    RoundRobin,
    /// The paper's adapted C3 (`algorithm::c3`), EWMA-filtered signals, driven by the mean of
    /// the fitted log-normal.
    C3,
    /// The same C3 driven by the filtered p99.
    C3P99,
    /// Linkerd's proxy balancer per request over all endpoints of all clusters.
    P2c,
    /// L3 with the paper's defaults and EWMA filters.
    L3,
    /// L3's weights across backends, P2C among each backend's replicas.
    L3P2c,
    /// L3 with PeakEWMA filters (paper §5.2.2).
    L3Peak,
}

impl PolicyKind {
    /// Every policy, in report order.
    pub const ALL: [PolicyKind; 7] = [
        Self::RoundRobin,
        Self::C3,
        Self::C3P99,
        Self::P2c,
        Self::L3,
        Self::L3P2c,
        Self::L3Peak,
    ];

    /// The command-line and report name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "rr",
            Self::C3 => "c3",
            Self::C3P99 => "c3-p99",
            Self::P2c => "p2c",
            Self::L3 => "l3",
            Self::L3P2c => "l3+p2c",
            Self::L3Peak => "l3-peak",
        }
    }

    /// The names, comma-separated (for messages).
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| Error::UnknownPolicy(s.to_owned()))
    }

    /// How the proxies route under this policy.
    pub fn routing(self) -> Routing {
        match self {
            Self::P2c => Routing::P2c,
            Self::L3P2c => Routing::WeightedP2c,
            _ => Routing::Weighted,
        }
    }

    /// A fresh policy for the given backend names (scenario order).
    pub fn build(self, backends: &[String]) -> Result<Box<dyn Policy + Send>> {
        Ok(match self {
            Self::RoundRobin | Self::P2c => Box::new(RoundRobin { n: backends.len() }),
            Self::C3 => Box::new(C3::new(backends, C3Estimate::LogNormalMean)?),
            Self::C3P99 => Box::new(C3::new(backends, C3Estimate::P99)?),
            Self::L3 | Self::L3P2c => Box::new(L3::new(backends, FilterKind::Ewma)?),
            Self::L3Peak => Box::new(L3::new(backends, FilterKind::PeakEwma)?),
        })
    }
}

/// Equal weights.
#[derive(Debug)]
pub struct RoundRobin {
    n: usize,
}

impl Policy for RoundRobin {
    fn weights(&mut self, _t: f64, _samples: &[BackendSample]) -> Result<Vec<u32>> {
        Ok(vec![1; self.n])
    }
}

/// Maps between scenario order and the state's name order (a `BTreeMap`).
#[derive(Debug)]
struct Names {
    names: Vec<String>,
    /// `sorted_to_scenario[k]` = scenario index of the k-th backend in name order.
    sorted_to_scenario: Vec<usize>,
}

impl Names {
    fn new(backends: &[String]) -> Self {
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by(|&a, &b| backends[a].cmp(&backends[b]));
        Self {
            names: backends.to_vec(),
            sorted_to_scenario: order,
        }
    }

    fn samples(&self, samples: &[BackendSample]) -> BTreeMap<String, BackendSample> {
        self.names
            .iter()
            .cloned()
            .zip(samples.iter().copied())
            .collect()
    }

    fn to_scenario_order(&self, sorted: &[u32]) -> Vec<u32> {
        let mut out = vec![0; sorted.len()];
        for (k, &w) in sorted.iter().enumerate() {
            out[self.sorted_to_scenario[k]] = w;
        }
        out
    }
}

/// L3: `SplitState::step_l3` with the paper's defaults.
#[derive(Debug)]
pub struct L3 {
    names: Names,
    state: SplitState,
    cfg: PipelineConfig,
}

impl L3 {
    /// L3 over the given backends with the given filter kind and the paper's half-lives.
    pub fn new(backends: &[String], kind: FilterKind) -> Result<Self> {
        let mut state = SplitState::new(FilterSettings {
            kind,
            ..FilterSettings::default()
        })?;
        state.sync_backends(backends.iter().map(String::as_str));
        let cfg = PipelineConfig::default();
        cfg.validate(backends.len())?;
        Ok(Self {
            names: Names::new(backends),
            state,
            cfg,
        })
    }
}

impl Policy for L3 {
    fn weights(&mut self, t: f64, samples: &[BackendSample]) -> Result<Vec<u32>> {
        let map = self.names.samples(samples);
        let (w, _rejected) = self.state.step_l3(t, &map, &self.cfg)?;
        Ok(self.names.to_scenario_order(&w))
    }
}

/// The adapted C3 over EWMA-filtered p50, p99, RPS and in-flight.
#[derive(Debug)]
pub struct C3 {
    names: Names,
    state: SplitState,
    estimate: C3Estimate,
}

impl C3 {
    /// C3 over the given backends with the given latency estimate.
    pub fn new(backends: &[String], estimate: C3Estimate) -> Result<Self> {
        let mut state = SplitState::new(FilterSettings::default())?;
        state.sync_backends(backends.iter().map(String::as_str));
        algorithm::normalise::validate(backends.len(), DEFAULT_TOTAL_WEIGHT, DEFAULT_MIN_SHARE)?;
        Ok(Self {
            names: Names::new(backends),
            state,
            estimate,
        })
    }
}

impl Policy for C3 {
    fn weights(&mut self, t: f64, samples: &[BackendSample]) -> Result<Vec<u32>> {
        let map = self.names.samples(samples);
        self.state.update(t, &map);
        let signals: Vec<_> = self
            .state
            .backends()
            .map(|(_, b)| BackendState::c3_signals(b))
            .collect();
        let w = algorithm::c3_weights_with(
            &signals,
            self.estimate,
            DEFAULT_TOTAL_WEIGHT,
            DEFAULT_MIN_SHARE,
        )?;
        Ok(self.names.to_scenario_order(&w))
    }
}
