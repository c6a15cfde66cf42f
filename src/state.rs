//! Per-backend filtered state (the "state" stage of the data path): one filter per signal and
//! backend, plus the filtered total rate of a split for rate control.
//!
//! Shared by the operator and the simulator. Samples arrive as `Option<f64>` per signal; a
//! missing, NaN, infinite or negative value never reaches a filter: it counts as "no sample this
//! cycle" and the filter converges toward its default (§4, "EWMA default values").

use std::collections::BTreeMap;

use crate::algorithm::{
    self, C3Signals, Filter, FilterKind, PipelineConfig, Signals, TotalRate, filter::Ewma,
};

/// Default latency of a new backend (paper §4): 5 s, pessimistic so that a backend without a
/// baseline is not flooded.
pub const DEFAULT_LATENCY_SECS: f64 = 5.0;
/// Default success rate of a new backend: 100 %.
pub const DEFAULT_SUCCESS_RATE: f64 = 1.0;
/// Default requests per second of a new backend: 0.
pub const DEFAULT_RPS: f64 = 0.0;
/// Default in-flight requests of a new backend: 0.
pub const DEFAULT_INFLIGHT: f64 = 0.0;

/// Filter kind and half-lives (seconds) of the four signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterSettings {
    /// EWMA or PeakEWMA, for every signal.
    pub kind: FilterKind,
    /// Half-life of the latency filters (paper: 5 s).
    pub latency_half_life: f64,
    /// Half-life of the in-flight filter (paper: 5 s).
    pub inflight_half_life: f64,
    /// Half-life of the success-rate filter (paper: 10 s).
    pub success_rate_half_life: f64,
    /// Half-life of the RPS filters (paper: 10 s).
    pub rps_half_life: f64,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            kind: FilterKind::Ewma,
            latency_half_life: 5.0,
            inflight_half_life: 5.0,
            success_rate_half_life: 10.0,
            rps_half_life: 10.0,
        }
    }
}

/// One cycle's raw observation of a backend; `None` where the source had no value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendSample {
    /// Quantile latency of successful requests (p99 by default), seconds.
    pub latency_secs: Option<f64>,
    /// Median latency, seconds (only the C3 baseline reads it).
    pub p50_secs: Option<f64>,
    /// Success rate in `[0, 1]`.
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub rps: Option<f64>,
    /// In-flight requests.
    pub inflight: Option<f64>,
}

/// The signals a sample carries, for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Quantile latency.
    Latency,
    /// Median latency.
    P50,
    /// Success rate.
    SuccessRate,
    /// Requests per second.
    Rps,
    /// In-flight requests.
    Inflight,
}

impl Signal {
    /// A stable lowercase name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::P50 => "p50",
            Self::SuccessRate => "success_rate",
            Self::Rps => "rps",
            Self::Inflight => "inflight",
        }
    }
}

/// A sample value the state refused; the filter decayed toward its default instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Which signal.
    pub signal: Signal,
    /// Why.
    pub error: algorithm::Error,
}

/// Refused sample values, by backend name.
pub type RejectedByBackend = Vec<(String, Rejected)>;

/// Filtered signals of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendState {
    latency: Filter,
    p50: Filter,
    success_rate: Filter,
    rps: Filter,
    inflight: Filter,
    last_sample: Option<f64>,
}

impl BackendState {
    /// A backend at the paper's defaults.
    pub fn new(settings: &FilterSettings) -> algorithm::Result<Self> {
        let k = settings.kind;
        Ok(Self {
            latency: Filter::new(k, settings.latency_half_life, DEFAULT_LATENCY_SECS)?,
            p50: Filter::new(k, settings.latency_half_life, DEFAULT_LATENCY_SECS)?,
            success_rate: Filter::new(k, settings.success_rate_half_life, DEFAULT_SUCCESS_RATE)?,
            rps: Filter::new(k, settings.rps_half_life, DEFAULT_RPS)?,
            inflight: Filter::new(k, settings.inflight_half_life, DEFAULT_INFLIGHT)?,
            last_sample: None,
        })
    }

    /// Feed one cycle's sample taken at `t` seconds. Each signal is handled on its own: a value
    /// that is present and valid is observed; one that is missing or invalid makes that filter
    /// decay toward its default. Returns what was refused (an out-of-order timestamp refuses
    /// every signal and changes nothing).
    pub fn update(&mut self, t: f64, sample: &BackendSample) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        let mut any = false;
        for (signal, filter, value) in [
            (Signal::Latency, &mut self.latency, sample.latency_secs),
            (Signal::P50, &mut self.p50, sample.p50_secs),
            (
                Signal::SuccessRate,
                &mut self.success_rate,
                sample.success_rate.map(|v| v.min(1.0)),
            ),
            (Signal::Rps, &mut self.rps, sample.rps),
            (Signal::Inflight, &mut self.inflight, sample.inflight),
        ] {
            let outcome = match value {
                Some(v) => match filter.observe(t, v) {
                    Ok(_) => {
                        any = true;
                        continue;
                    }
                    Err(error) => {
                        rejected.push(Rejected { signal, error });
                        filter.decay_toward_default(t)
                    }
                },
                None => filter.decay_toward_default(t),
            };
            if let Err(error) = outcome {
                // Out of order or a non-finite timestamp: the filter is untouched.
                if !rejected.iter().any(|r| r.signal == signal) {
                    rejected.push(Rejected { signal, error });
                }
            }
        }
        if any {
            self.last_sample = Some(t);
        }
        rejected
    }

    /// A cycle without any data for this backend (e.g. Prometheus unreachable): every filter
    /// converges toward its default.
    pub fn decay(&mut self, t: f64) -> algorithm::Result<()> {
        for f in self.filters_mut() {
            f.decay_toward_default(t)?;
        }
        Ok(())
    }

    /// The filtered signals, as Algorithm 1 reads them.
    pub fn signals(&self) -> Signals {
        Signals {
            latency_secs: self.latency.value(),
            success_rate: self.success_rate.value(),
            rps: self.rps.value(),
            inflight: self.inflight.value(),
        }
    }

    /// The filtered signals, as the C3 baseline reads them.
    pub fn c3_signals(&self) -> C3Signals {
        C3Signals {
            p50_secs: self.p50.value(),
            p99_secs: self.latency.value(),
            rps: self.rps.value(),
            inflight: self.inflight.value(),
        }
    }

    /// Time of the last cycle in which at least one signal had a valid value.
    pub fn last_sample(&self) -> Option<f64> {
        self.last_sample
    }

    fn filters_mut(&mut self) -> [&mut Filter; 5] {
        [
            &mut self.latency,
            &mut self.p50,
            &mut self.success_rate,
            &mut self.rps,
            &mut self.inflight,
        ]
    }
}

/// Filtered state of one TrafficSplit: its backends by name and the total rate.
#[derive(Debug, Clone)]
pub struct SplitState {
    settings: FilterSettings,
    /// A backend at the defaults; new backends are clones of it, so adding one cannot fail.
    template: BackendState,
    backends: BTreeMap<String, BackendState>,
    total_rps: Ewma,
    last_total: Option<f64>,
}

impl SplitState {
    /// Empty state with the given filter settings.
    pub fn new(settings: FilterSettings) -> algorithm::Result<Self> {
        Ok(Self {
            settings,
            template: BackendState::new(&settings)?,
            backends: BTreeMap::new(),
            total_rps: Ewma::new(settings.rps_half_life, DEFAULT_RPS)?,
            last_total: None,
        })
    }

    /// The filter settings.
    pub fn settings(&self) -> &FilterSettings {
        &self.settings
    }

    /// Make the set of tracked backends equal `names`: new ones start at the defaults, removed
    /// ones are dropped. Returns the names that were dropped.
    pub fn sync_backends<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let wanted: std::collections::BTreeSet<&str> = names.into_iter().collect();
        let dropped: Vec<String> = self
            .backends
            .keys()
            .filter(|k| !wanted.contains(k.as_str()))
            .cloned()
            .collect();
        for name in &dropped {
            self.backends.remove(name);
        }
        for name in wanted {
            if !self.backends.contains_key(name) {
                self.backends.insert(name.to_owned(), self.template.clone());
            }
        }
        dropped
    }

    /// A backend's state.
    pub fn backend(&self, name: &str) -> Option<&BackendState> {
        self.backends.get(name)
    }

    /// All backends, by name.
    pub fn backends(&self) -> impl Iterator<Item = (&str, &BackendState)> {
        self.backends.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Feed one cycle at time `t`. Backends absent from `samples` decay; unknown names are
    /// ignored. Returns the refused values per backend.
    pub fn update(
        &mut self,
        t: f64,
        samples: &BTreeMap<String, BackendSample>,
    ) -> RejectedByBackend {
        let mut rejected = Vec::new();
        let mut total = 0.0;
        let mut any_rps = false;
        for (name, state) in &mut self.backends {
            let sample = samples.get(name).copied().unwrap_or_default();
            if let Some(r) = sample.rps.filter(|r| r.is_finite() && *r >= 0.0) {
                total += r;
                any_rps = true;
            }
            rejected.extend(
                state
                    .update(t, &sample)
                    .into_iter()
                    .map(|r| (name.clone(), r)),
            );
        }
        // RPS_EWMA is read *before* this cycle's sample: c compares the latest total with the
        // trend so far (Algorithm 2, line 1), not with a trend that already contains it.
        self.last_total = any_rps.then_some(total);
        let _ = match self.last_total {
            Some(total) => self.total_rps.observe(t, total),
            None => self.total_rps.decay_toward_default(t),
        };
        rejected
    }

    /// The current filtered total rate.
    pub fn filtered_total_rps(&self) -> f64 {
        self.total_rps.value()
    }

    /// Feed one cycle and compute the L3 weights, in backend-name order.
    pub fn step_l3(
        &mut self,
        t: f64,
        samples: &BTreeMap<String, BackendSample>,
        cfg: &PipelineConfig,
    ) -> algorithm::Result<(Vec<u32>, RejectedByBackend)> {
        let before = self.total_rps.value();
        let rejected = self.update(t, samples);
        let signals: Vec<Signals> = self.backends.values().map(BackendState::signals).collect();
        let rate = self.last_total.map(|last| TotalRate {
            filtered: before,
            last,
        });
        let weights = algorithm::l3_weights(&signals, rate, cfg)?;
        Ok((weights, rejected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency: f64, sr: f64, rps: f64) -> BackendSample {
        BackendSample {
            latency_secs: Some(latency),
            p50_secs: Some(latency / 2.0),
            success_rate: Some(sr),
            rps: Some(rps),
            inflight: Some(1.0),
        }
    }

    #[test]
    fn nan_inf_and_missing_never_reach_a_filter() {
        let mut b = BackendState::new(&FilterSettings::default()).unwrap();
        b.update(0.0, &sample(0.1, 1.0, 10.0));
        for t in 1..=10 {
            b.update(t as f64 * 5.0, &sample(0.1, 1.0, 10.0));
        }
        let good = b.signals();
        let bad = BackendSample {
            latency_secs: Some(f64::NAN),
            p50_secs: Some(f64::INFINITY),
            success_rate: Some(-1.0),
            rps: None,
            inflight: Some(f64::NEG_INFINITY),
        };
        let rejected = b.update(55.0, &bad);
        assert_eq!(rejected.len(), 4, "{rejected:?}");
        let s = b.signals();
        for v in [s.latency_secs, s.success_rate, s.rps, s.inflight] {
            assert!(v.is_finite(), "{s:?}");
        }
        // Decayed toward the defaults, not toward the garbage.
        assert!(s.latency_secs > good.latency_secs && s.latency_secs < DEFAULT_LATENCY_SECS);
        assert!(s.rps < good.rps && s.rps > 0.0);
    }

    #[test]
    fn out_of_order_cycle_changes_nothing() {
        let mut b = BackendState::new(&FilterSettings::default()).unwrap();
        b.update(10.0, &sample(0.1, 1.0, 10.0));
        b.update(15.0, &sample(0.1, 1.0, 10.0));
        let before = b.clone();
        let rejected = b.update(12.0, &sample(9.0, 0.0, 0.0));
        assert_eq!(rejected.len(), 5);
        assert_eq!(b, before);
    }

    #[test]
    fn split_tracks_backend_set_changes() {
        let mut s = SplitState::new(FilterSettings::default()).unwrap();
        assert!(s.sync_backends(["a", "b"]).is_empty());
        assert_eq!(s.sync_backends(["b", "c"]), vec!["a".to_string()]);
        let names: Vec<&str> = s.backends().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(
            s.backend("c").unwrap().signals().latency_secs,
            DEFAULT_LATENCY_SECS
        );
    }

    #[test]
    fn step_moves_traffic_to_the_fast_backend() {
        let mut s = SplitState::new(FilterSettings::default()).unwrap();
        s.sync_backends(["fast", "slow"]);
        let mut samples = BTreeMap::new();
        samples.insert("fast".to_string(), sample(0.05, 1.0, 50.0));
        samples.insert("slow".to_string(), sample(0.5, 1.0, 50.0));
        let cfg = PipelineConfig::default();
        let mut w = vec![];
        for i in 0..20 {
            w = s.step_l3(i as f64 * 5.0, &samples, &cfg).unwrap().0;
        }
        assert_eq!(w.iter().sum::<u32>(), 1000);
        assert!(w[0] > 800, "{w:?}");
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let bad = FilterSettings {
            latency_half_life: 0.0,
            ..FilterSettings::default()
        };
        assert!(SplitState::new(bad).is_err());
    }
}
