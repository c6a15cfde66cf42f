//! Linkerd's per-request proxy balancer, as the `p2c` and `l3+p2c` baselines use it: power of two
//! choices over a Peak-EWMA cost.
//!
//! The linkerd2-proxy balances with tower's `p2c::Balance` over `PeakEwma` endpoints (decay
//! 10 s, default RTT 30 ms). Each endpoint's cost is `rtt_estimate × (pending + 1)`, where
//! `pending` counts this proxy's outstanding requests to the endpoint and `rtt_estimate` is a
//! peak-sensitive moving average of the response times this proxy saw from it: a response slower
//! than the estimate replaces it, a faster one is averaged in with weight `1 - exp(-dt/decay)`,
//! and reading the cost first decays the estimate toward zero by the time since its last update
//! (tower `load::peak_ewma`). Every response counts, failed or not: the balancer does not see
//! status codes. The balancer draws two distinct endpoints at random and takes the cheaper
//! (the first on a tie).
//!
//! Written here rather than used from tower: tower's version reads `Instant::now()` and wraps
//! services, while the simulator needs the same arithmetic on a simulated clock. Only the
//! simulator uses it, so it lives in `sim`, not in the operator's `algorithm`.

use super::rng::Rng;

/// Linkerd's default RTT for an endpoint nothing has been measured from, seconds.
pub const DEFAULT_RTT_SECS: f64 = 0.030;
/// Linkerd's Peak-EWMA decay (time constant), seconds.
pub const DECAY_SECS: f64 = 10.0;

/// One endpoint as one proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Endpoint {
    /// Peak-EWMA response-time estimate, seconds.
    pub rtt: f64,
    /// When the estimate was last updated or decayed.
    pub updated: f64,
    /// This proxy's outstanding requests to the endpoint.
    pub pending: u32,
}

impl Endpoint {
    /// A fresh endpoint at the default RTT.
    pub fn new(now: f64) -> Self {
        Self {
            rtt: DEFAULT_RTT_SECS,
            updated: now,
            pending: 0,
        }
    }

    fn decay_weight(&self, now: f64) -> f64 {
        (-(now - self.updated).max(0.0) / DECAY_SECS).exp()
    }

    /// The cost at `now`, decaying the estimate toward zero first as tower does on every read.
    pub fn cost(&mut self, now: f64) -> f64 {
        self.rtt *= self.decay_weight(now);
        self.updated = now;
        self.rtt * (f64::from(self.pending) + 1.0)
    }

    /// A request was sent.
    pub fn on_send(&mut self) {
        self.pending += 1;
    }

    /// A response (any status) arrived at `now`, `rtt` seconds after its request left.
    pub fn on_response(&mut self, now: f64, rtt: f64) {
        self.pending = self.pending.saturating_sub(1);
        if self.rtt < rtt {
            self.rtt = rtt;
        } else {
            let decay = self.decay_weight(now);
            self.rtt = self.rtt * decay + rtt * (1.0 - decay);
        }
        self.updated = now;
    }
}

/// Power of two choices over `endpoints` (indices into `all`): two distinct random candidates,
/// the cheaper wins. `None` only for an empty candidate list.
pub fn choose(
    all: &mut [Endpoint],
    candidates: std::ops::Range<usize>,
    now: f64,
    rng: &mut Rng,
) -> Option<usize> {
    let n = candidates.len();
    match n {
        0 => None,
        1 => Some(candidates.start),
        _ => {
            let a = (rng.uniform() * n as f64) as usize % n;
            // A second index distinct from the first, uniformly among the others.
            let mut b = (rng.uniform() * (n - 1) as f64) as usize % (n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates.start + a, candidates.start + b);
            let (ca, cb) = (all[a].cost(now), all[b].cost(now));
            Some(if ca <= cb { a } else { b })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slower_response_is_the_new_peak_a_faster_one_is_averaged() {
        let mut e = Endpoint::new(0.0);
        e.on_send();
        e.on_response(1.0, 0.2);
        assert_eq!(e.rtt, 0.2);
        assert_eq!(e.pending, 0);
        // 10 s later a 0 s response: decay exp(-1) keeps 36.8 % of the peak.
        e.on_response(11.0, 0.0);
        assert!((e.rtt - 0.2 * (-1.0f64).exp()).abs() < 1e-12, "{}", e.rtt);
    }

    #[test]
    fn cost_counts_pending_and_decays_with_time() {
        let mut e = Endpoint::new(0.0);
        e.on_send();
        e.on_send();
        assert!((e.cost(0.0) - 3.0 * DEFAULT_RTT_SECS).abs() < 1e-12);
        let later = e.cost(10.0);
        assert!((later - 3.0 * DEFAULT_RTT_SECS * (-1.0f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn two_choices_pick_the_cheaper_and_never_the_worst_of_three() {
        let mut all = vec![Endpoint::new(0.0); 3];
        all[0].rtt = 0.001;
        all[1].rtt = 0.010;
        all[2].rtt = 1.0;
        let mut rng = Rng::new(1, 1);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let i = choose(&mut all, 0..3, 0.0, &mut rng).unwrap();
            counts[i] += 1;
        }
        assert_eq!(
            counts[2], 0,
            "the most expensive of three is never the cheaper of two"
        );
        // Endpoint 0 wins whenever drawn (2 of 3 pairs), endpoint 1 only against 2 (1 of 3).
        assert!(counts[0] > 1800 && counts[1] > 800, "{counts:?}");
        assert_eq!(choose(&mut all, 1..2, 0.0, &mut rng), Some(1));
        assert_eq!(choose(&mut all, 1..1, 0.0, &mut rng), None);
    }
}
