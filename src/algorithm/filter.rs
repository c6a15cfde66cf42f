//! Time-driven smoothing filters: EWMA (paper Eq. 1) and PeakEWMA (paper Eq. 2).
//!
//! Both are driven by the timestamps of the samples, never by the wall clock, so the result of a
//! sequence of samples does not depend on when or how often the caller runs. Time is plain `f64`
//! seconds (any epoch) because Prometheus sample timestamps are exactly that.

use super::{Error, Result};

/// `beta` in Eq. 1 for a given half-life: after `half_life` seconds the old value has half its
/// weight, so `exp(-half_life / beta) = 1/2`, i.e. `beta = half_life / ln 2`.
pub fn beta_from_half_life(half_life_secs: f64) -> Result<f64> {
    if !half_life_secs.is_finite() || half_life_secs <= 0.0 {
        return Err(Error::InvalidParameter {
            name: "half_life",
            value: half_life_secs,
            expected: "a finite number of seconds greater than 0",
        });
    }
    Ok(half_life_secs / std::f64::consts::LN_2)
}

/// Which filter smooths a signal. The paper evaluated both (§5.2.2) and chose EWMA as default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterKind {
    /// Exponentially weighted moving average, Eq. 1.
    #[default]
    Ewma,
    /// Finagle's PeakEWMA, Eq. 2: jumps up to a higher sample, decays like an EWMA otherwise.
    PeakEwma,
}

/// Exponentially weighted moving average over timestamped samples (paper Eq. 1).
///
/// `E_now = Y * (1 - exp(-dt/beta)) + E_prev * exp(-dt/beta)`.
///
/// Like the paper, the filter starts at a default value `lambda` (`E_prev = ∅ → λ`). The first
/// sample only anchors the time axis: with no previous timestamp there is no `dt`, and starting
/// from the default is what keeps a new backend from being flooded before it has a baseline (§4,
/// "EWMA default values"). Invalid samples (negative, NaN, infinite, or older than the last one)
/// are rejected with a typed error and leave the state untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    value: f64,
    default: f64,
    beta: f64,
    last: Option<f64>,
}

impl Ewma {
    /// A filter with the given half-life (seconds) that starts at `default`.
    pub fn new(half_life_secs: f64, default: f64) -> Result<Self> {
        let beta = beta_from_half_life(half_life_secs)?;
        check_value("default", default)?;
        Ok(Self {
            value: default,
            default,
            beta,
            last: None,
        })
    }

    /// The current filtered value (the default before any sample).
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The value this filter starts at and converges back to without samples.
    pub fn default_value(&self) -> f64 {
        self.default
    }

    /// Timestamp of the last sample or decay step, if any.
    pub fn last_update(&self) -> Option<f64> {
        self.last
    }

    /// Incorporate sample `y` taken at time `t` (seconds). Returns the new value.
    pub fn observe(&mut self, t: f64, y: f64) -> Result<f64> {
        let alpha = self.validate(t, y)?;
        self.value = blend(self.value, y, alpha);
        self.last = Some(t);
        Ok(self.value)
    }

    /// A cycle without a sample: move toward the default as if the default had been sampled at
    /// `now` (§4: "converging toward the initial value of the EWMAs in small increments").
    ///
    /// Because the step is `exp(-dt/beta)`, decaying once over 10 s equals decaying ten times over
    /// 1 s: the outcome does not depend on how often the control loop calls this.
    pub fn decay_toward_default(&mut self, now: f64) -> Result<f64> {
        let alpha = self.validate(now, self.default)?;
        self.value = blend(self.value, self.default, alpha);
        self.last = Some(now);
        Ok(self.value)
    }

    /// Checks a sample and returns its blending factor `1 - exp(-dt/beta)`.
    fn validate(&self, t: f64, y: f64) -> Result<f64> {
        if !t.is_finite() {
            return Err(Error::InvalidTimestamp { timestamp: t });
        }
        check_value("sample", y)?;
        match self.last {
            // Eq. 1, first case: no previous value, the filter stays at its default.
            None => Ok(0.0),
            Some(last) if t < last => Err(Error::OutOfOrder { last, timestamp: t }),
            Some(last) => Ok(1.0 - (-(t - last) / self.beta).exp()),
        }
    }
}

/// PeakEWMA (paper Eq. 2): a sample above the current value replaces it at once; lower samples
/// are blended in like an EWMA, so the filter reacts quickly to spikes and recovers cautiously.
#[derive(Debug, Clone, PartialEq)]
pub struct PeakEwma {
    inner: Ewma,
}

impl PeakEwma {
    /// A filter with the given half-life (seconds) that starts at `default`.
    pub fn new(half_life_secs: f64, default: f64) -> Result<Self> {
        Ok(Self {
            inner: Ewma::new(half_life_secs, default)?,
        })
    }

    /// The current filtered value.
    pub fn value(&self) -> f64 {
        self.inner.value
    }

    /// Timestamp of the last sample or decay step, if any.
    pub fn last_update(&self) -> Option<f64> {
        self.inner.last
    }

    /// Incorporate sample `y` taken at `t`; a sample above the current value is taken as is.
    pub fn observe(&mut self, t: f64, y: f64) -> Result<f64> {
        let alpha = self.inner.validate(t, y)?;
        // The first sample anchors time only, exactly as in the EWMA (Eq. 2, first case).
        if self.inner.last.is_some() && y > self.inner.value {
            self.inner.value = y;
        } else {
            self.inner.value = blend(self.inner.value, y, alpha);
        }
        self.inner.last = Some(t);
        Ok(self.inner.value)
    }

    /// Converge toward the default without samples. Deliberately no jump even when the default is
    /// above the value: the absence of data is not a latency spike.
    pub fn decay_toward_default(&mut self, now: f64) -> Result<f64> {
        self.inner.decay_toward_default(now)
    }
}

/// A filter chosen at run time (the policy's `filter` setting).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// See [`Ewma`].
    Ewma(Ewma),
    /// See [`PeakEwma`].
    Peak(PeakEwma),
}

impl Filter {
    /// A filter of the given kind, half-life (seconds) and default.
    pub fn new(kind: FilterKind, half_life_secs: f64, default: f64) -> Result<Self> {
        Ok(match kind {
            FilterKind::Ewma => Self::Ewma(Ewma::new(half_life_secs, default)?),
            FilterKind::PeakEwma => Self::Peak(PeakEwma::new(half_life_secs, default)?),
        })
    }

    /// The current filtered value.
    pub fn value(&self) -> f64 {
        match self {
            Self::Ewma(f) => f.value(),
            Self::Peak(f) => f.value(),
        }
    }

    /// Timestamp of the last sample or decay step, if any.
    pub fn last_update(&self) -> Option<f64> {
        match self {
            Self::Ewma(f) => f.last_update(),
            Self::Peak(f) => f.last_update(),
        }
    }

    /// Incorporate a sample; see [`Ewma::observe`] and [`PeakEwma::observe`].
    pub fn observe(&mut self, t: f64, y: f64) -> Result<f64> {
        match self {
            Self::Ewma(f) => f.observe(t, y),
            Self::Peak(f) => f.observe(t, y),
        }
    }

    /// Converge toward the default; see [`Ewma::decay_toward_default`].
    pub fn decay_toward_default(&mut self, now: f64) -> Result<f64> {
        match self {
            Self::Ewma(f) => f.decay_toward_default(now),
            Self::Peak(f) => f.decay_toward_default(now),
        }
    }
}

fn blend(prev: f64, sample: f64, alpha: f64) -> f64 {
    sample * alpha + prev * (1.0 - alpha)
}

fn check_value(name: &'static str, y: f64) -> Result<()> {
    if !y.is_finite() {
        return Err(Error::NonFinite { name, value: y });
    }
    if y < 0.0 {
        return Err(Error::Negative { name, value: y });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn ewma_is_halfway_after_one_half_life() {
        let mut e = Ewma::new(5.0, 0.0).unwrap();
        e.observe(100.0, 0.0).unwrap();
        let v = e.observe(105.0, 10.0).unwrap();
        assert!(close(v, 5.0), "got {v}");
        // And a quarter of the remaining distance after another half-life.
        let v = e.observe(110.0, 10.0).unwrap();
        assert!(close(v, 7.5), "got {v}");
    }

    #[test]
    fn first_sample_anchors_time_and_keeps_the_default() {
        let mut e = Ewma::new(5.0, 5.0).unwrap();
        assert_eq!(e.value(), 5.0);
        assert_eq!(e.observe(1.0, 0.05).unwrap(), 5.0);
        assert_eq!(e.last_update(), Some(1.0));
    }

    #[test]
    fn step_size_does_not_depend_on_call_frequency() {
        let mut once = Ewma::new(5.0, 0.0).unwrap();
        let mut often = once.clone();
        once.observe(0.0, 0.0).unwrap();
        often.observe(0.0, 0.0).unwrap();
        once.observe(10.0, 4.0).unwrap();
        for i in 1..=10 {
            often.observe(i as f64, 4.0).unwrap();
        }
        assert!(close(once.value(), often.value()));
    }

    #[test]
    fn invalid_samples_are_rejected_and_leave_state_untouched() {
        let mut e = Ewma::new(5.0, 1.0).unwrap();
        e.observe(10.0, 2.0).unwrap();
        e.observe(15.0, 3.0).unwrap();
        let before = e.clone();
        assert!(matches!(
            e.observe(20.0, f64::NAN),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            e.observe(20.0, f64::INFINITY),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(e.observe(20.0, -1.0), Err(Error::Negative { .. })));
        assert!(matches!(
            e.observe(14.0, 1.0),
            Err(Error::OutOfOrder { .. })
        ));
        assert!(matches!(
            e.observe(f64::NAN, 1.0),
            Err(Error::InvalidTimestamp { .. })
        ));
        assert!(matches!(
            e.decay_toward_default(1.0),
            Err(Error::OutOfOrder { .. })
        ));
        assert_eq!(e, before);
    }

    #[test]
    fn invalid_configuration_is_rejected() {
        assert!(Ewma::new(0.0, 1.0).is_err());
        assert!(Ewma::new(-1.0, 1.0).is_err());
        assert!(Ewma::new(f64::NAN, 1.0).is_err());
        assert!(Ewma::new(5.0, f64::INFINITY).is_err());
        assert!(Ewma::new(5.0, -1.0).is_err());
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let mut p = PeakEwma::new(5.0, 0.1).unwrap();
        p.observe(0.0, 0.1).unwrap();
        assert_eq!(
            p.observe(5.0, 2.0).unwrap(),
            2.0,
            "a spike is taken at once"
        );
        let v = p.observe(10.0, 0.0).unwrap();
        assert!(close(v, 1.0), "decays by half over one half-life, got {v}");
        let mut e = Ewma::new(5.0, 0.1).unwrap();
        e.observe(0.0, 0.1).unwrap();
        assert!(
            e.observe(5.0, 2.0).unwrap() < 2.0,
            "a plain EWMA does not jump"
        );
    }

    #[test]
    fn converges_back_to_default_without_samples() {
        let mut f = Filter::new(FilterKind::Ewma, 5.0, 5.0).unwrap();
        f.observe(0.0, 5.0).unwrap();
        for t in 1..=100 {
            f.observe(t as f64, 0.05).unwrap();
        }
        let low = f.value();
        assert!(low < 0.1, "settled near the samples, got {low}");
        let v = f.decay_toward_default(105.0).unwrap();
        assert!(
            close(v, (low + 5.0) / 2.0),
            "halfway back after one half-life, got {v}"
        );
        f.decay_toward_default(300.0).unwrap();
        assert!(
            (f.value() - 5.0).abs() < 1e-6,
            "back at the default, got {}",
            f.value()
        );

        // PeakEWMA decays the same way, without jumping to the (higher) default.
        let mut p = Filter::new(FilterKind::PeakEwma, 5.0, 5.0).unwrap();
        p.observe(0.0, 1.0).unwrap();
        p.observe(10.0, 0.0).unwrap();
        let start = p.value();
        let v = p.decay_toward_default(15.0).unwrap();
        assert!(close(v, (start + 5.0) / 2.0), "got {v}");
    }
}
