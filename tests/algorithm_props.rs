//! Property tests over the L3 pipeline: random signals (zeros included) through Algorithm 1,
//! Algorithm 2 and normalisation.

use l3::algorithm::{
    PipelineConfig, Signals, TotalRate, l3_weights, normalise, normalise::floor_units,
    rate_control, raw_weight,
};
use proptest::prelude::*;

fn latency() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..0.01, 0.0..10.0, Just(5.0)]
}
fn success_rate() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0]
}
fn rps() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..1.0, 0.0..5000.0]
}
fn inflight() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..2000.0]
}
fn signals() -> impl Strategy<Value = Signals> {
    (latency(), success_rate(), rps(), inflight()).prop_map(|(l, s, r, i)| Signals {
        latency_secs: l,
        success_rate: s,
        rps: r,
        inflight: i,
    })
}
fn total_rate() -> impl Strategy<Value = Option<TotalRate>> {
    prop::option::of((rps(), rps()).prop_map(|(filtered, last)| TotalRate { filtered, last }))
}
fn config() -> impl Strategy<Value = PipelineConfig> {
    (
        0.0..3.0f64,
        any::<bool>(),
        prop_oneof![Just(1000u32), 10u32..100_000],
        0.0..0.05f64,
    )
        .prop_map(|(p, rc, total, min_share)| {
            let mut cfg = PipelineConfig {
                rate_control: rc,
                total_weight: total,
                min_share,
                ..PipelineConfig::default()
            };
            cfg.weighting.penalty_secs = p;
            cfg
        })
}

/// `a` is at least as good as `b` in every signal: lower or equal latency and in-flight per
/// request, higher or equal success rate.
fn dominates(a: &Signals, b: &Signals) -> bool {
    a.latency_secs <= b.latency_secs
        && a.success_rate >= b.success_rate
        && a.normalised_inflight() <= b.normalised_inflight()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn raw_weights_are_finite_and_positive(s in signals(), p in 0.0..100.0f64) {
        let w = raw_weight(&s, &l3::algorithm::WeightingParams { penalty_secs: p });
        prop_assert!(w.is_finite() && w > 0.0, "{:?} -> {}", s, w);
    }

    #[test]
    fn integer_weights_sum_exactly_and_respect_the_floor(
        backends in prop::collection::vec(signals(), 1..20),
        rate in total_rate(),
        cfg in config(),
    ) {
        prop_assume!(cfg.validate(backends.len()).is_ok());
        let w = l3_weights(&backends, rate, &cfg).unwrap();
        prop_assert_eq!(w.len(), backends.len());
        prop_assert_eq!(w.iter().map(|&x| u64::from(x)).sum::<u64>(), u64::from(cfg.total_weight));
        let floor = floor_units(cfg.total_weight, cfg.min_share);
        for &x in &w {
            prop_assert!(x >= floor, "{:?} below floor {}", w, floor);
            prop_assert!(f64::from(x) / f64::from(cfg.total_weight) >= cfg.min_share - 1e-12);
        }
    }

    #[test]
    fn a_dominating_backend_never_gets_less(
        backends in prop::collection::vec(signals(), 2..12),
        rate in total_rate(),
        cfg in config(),
    ) {
        prop_assume!(cfg.validate(backends.len()).is_ok());
        let w = l3_weights(&backends, rate, &cfg).unwrap();
        // The real-valued weights the normaliser sees (after Algorithm 2).
        let mut adjusted: Vec<f64> = backends.iter().map(|b| raw_weight(b, &cfg.weighting)).collect();
        if let (true, Some(r)) = (cfg.rate_control, rate) {
            rate_control::apply(&mut adjusted, rate_control::relative_change(r.filtered, r.last));
        }
        for i in 0..backends.len() {
            for j in 0..backends.len() {
                if i != j && dominates(&backends[i], &backends[j]) {
                    prop_assert!(adjusted[i] >= adjusted[j], "{:?} vs {:?}", adjusted[i], adjusted[j]);
                    if adjusted[i] > adjusted[j] {
                        prop_assert!(w[i] >= w[j], "{:?} dominates {:?} but {:?}", backends[i], backends[j], w);
                    } else {
                        // Equal real weights (or equal after floating-point rounding): the
                        // largest-remainder step may hand the one leftover unit to either.
                        prop_assert!(w[i] + 1 >= w[j], "{:?}", w);
                    }
                }
            }
        }
    }

    #[test]
    fn rate_control_preserves_order(
        ws in prop::collection::vec(0.0..1e6f64, 2..10),
        c in -1.0..20.0f64,
    ) {
        let mut adj = ws.clone();
        rate_control::apply(&mut adj, c);
        for i in 0..ws.len() {
            prop_assert!(adj[i].is_finite() && adj[i] >= 0.0);
            for j in 0..ws.len() {
                if ws[i] > ws[j] {
                    prop_assert!(adj[i] >= adj[j], "{:?} -> {:?}", ws, adj);
                }
            }
        }
    }

    #[test]
    fn normalise_is_monotone_in_raw_weight(
        raw in prop::collection::vec(prop_oneof![Just(0.0), 0.0..1e9f64], 1..30),
        total in 1u32..100_000,
        min_share in 0.0..0.03f64,
    ) {
        prop_assume!(l3::algorithm::normalise::validate(raw.len(), total, min_share).is_ok());
        let w = normalise(&raw, total, min_share).unwrap();
        prop_assert_eq!(w.iter().map(|&x| u64::from(x)).sum::<u64>(), u64::from(total));
        for i in 0..raw.len() {
            for j in 0..raw.len() {
                if raw[i] > raw[j] {
                    prop_assert!(w[i] >= w[j], "{:?} -> {:?}", raw, w);
                }
            }
        }
    }
}
