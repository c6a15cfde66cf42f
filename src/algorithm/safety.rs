//! Safety limits on weight changes: hysteresis (is a change worth a write?) and the largest
//! share step per interval (so a sudden shift cannot double the load on a remote cluster).

/// Shares of weights on any scale; a zero or invalid total gives equal shares.
pub fn shares(weights: &[f64]) -> Vec<f64> {
    let clean: Vec<f64> = weights
        .iter()
        .map(|&w| if w.is_finite() && w > 0.0 { w } else { 0.0 })
        .collect();
    let sum: f64 = clean.iter().sum();
    if sum <= 0.0 {
        let n = weights.len().max(1) as f64;
        return vec![1.0 / n; weights.len()];
    }
    clean.iter().map(|w| w / sum).collect()
}

/// Largest absolute change of any share between `current` and `proposed` (same order).
pub fn max_share_change(current: &[f64], proposed: &[f64]) -> f64 {
    current
        .iter()
        .zip(proposed)
        .map(|(c, p)| (p - c).abs())
        .fold(0.0, f64::max)
}

/// Whether moving from `current` to `proposed` shares is worth a write: some share moved by
/// more than `hysteresis`, or the backend lists differ in length.
pub fn worth_writing(current: &[f64], proposed: &[f64], hysteresis: f64) -> bool {
    current.len() != proposed.len() || max_share_change(current, proposed) > hysteresis
}

/// Consecutive cycles a move beyond the hysteresis must persist before it is written: a
/// single noisy sample crosses the hysteresis now and then, a real shift stays across.
pub const CONFIRM_CYCLES: u32 = 3;
/// A move of any share by more than this is written at once (a backend failing or slowing
/// down sharply must not wait for confirmation).
pub const URGENT_SHARE_CHANGE: f64 = 0.05;

/// Whether this cycle's `proposed` shares get written over the `current` ones: the move must be
/// [`worth_writing`] and `allowed` (l3 may write at all), and persist [`CONFIRM_CYCLES`]
/// consecutive cycles unless some share moves by more than [`URGENT_SHARE_CHANGE`] (or the
/// backend lists differ). `pending` counts the consecutive cycles that wanted a write; it is
/// the caller's per-split state (the operator and `l3 replay` both keep one).
pub fn confirm_write(
    pending: &mut u32,
    current: &[f64],
    proposed: &[f64],
    hysteresis: f64,
    allowed: bool,
) -> bool {
    let wanted = allowed && worth_writing(current, proposed, hysteresis);
    *pending = if wanted { pending.saturating_add(1) } else { 0 };
    let urgent = current.len() != proposed.len()
        || max_share_change(current, proposed) > URGENT_SHARE_CHANGE;
    if wanted && (urgent || *pending >= CONFIRM_CYCLES) {
        *pending = 0;
        true
    } else {
        false
    }
}

/// Move from `current` shares toward `proposed` integer weights (summing to `total`) so that no
/// share changes by more than `max_step` (to within one weight unit of rounding).
///
/// Every backend moves by the same fraction of its way to the target, so the direction of the
/// change and the sum are kept; a convex combination of two splits that respect the minimum
/// share respects it too. The current split is the user's until l3 first writes it and may leave
/// a backend below `min_share`: such a backend is lifted to the minimum share at once (the floor
/// outranks the step limit, or that backend would starve of the traffic needed to measure it).
/// Without a limit, or when the target is within reach, `proposed` is returned unchanged.
pub fn limit_step(
    current: &[f64],
    proposed: &[u32],
    total: u32,
    min_share: f64,
    max_step: Option<f64>,
) -> Vec<u32> {
    let Some(step) = max_step.filter(|s| s.is_finite() && *s > 0.0) else {
        return proposed.to_vec();
    };
    if current.len() != proposed.len() || total == 0 {
        return proposed.to_vec();
    }
    let t = f64::from(total);
    let target: Vec<f64> = proposed.iter().map(|&w| f64::from(w) / t).collect();
    let largest = max_share_change(current, &target);
    if largest <= step {
        return proposed.to_vec();
    }
    let alpha = step / largest;
    let exact: Vec<f64> = current
        .iter()
        .zip(&target)
        .map(|(c, p)| (c + alpha * (p - c)) * t)
        .collect();
    let stepped: Vec<f64> = round_to_total(&exact, total)
        .into_iter()
        .map(f64::from)
        .collect();
    // Integer weights that already respect the floor come back unchanged (their proportional
    // shares are exact); `proposed` respects it by construction, so it is the safe fallback.
    super::normalise(&stepped, total, min_share).unwrap_or_else(|_| proposed.to_vec())
}

/// Largest-remainder rounding of non-negative reals that sum to `total`.
fn round_to_total(exact: &[f64], total: u32) -> Vec<u32> {
    let mut out: Vec<u32> = exact.iter().map(|x| x.max(0.0).floor() as u32).collect();
    let assigned: u64 = out.iter().map(|&x| u64::from(x)).sum();
    let mut left = u64::from(total).saturating_sub(assigned);
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 || exact.is_empty() {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_waits_for_confirmation_unless_urgent() {
        let mut pending = 0;
        let (cur, small) = ([0.5, 0.5], [0.52, 0.48]);
        assert!(!confirm_write(&mut pending, &cur, &small, 0.01, true));
        assert!(!confirm_write(&mut pending, &cur, &small, 0.01, true));
        assert!(confirm_write(&mut pending, &cur, &small, 0.01, true));
        assert_eq!(pending, 0);
        assert!(confirm_write(&mut pending, &cur, &[0.6, 0.4], 0.01, true));
        assert!(!confirm_write(&mut pending, &cur, &[0.6, 0.4], 0.01, false));
        assert!(!confirm_write(
            &mut pending,
            &cur,
            &[0.505, 0.495],
            0.01,
            true
        ));
        assert_eq!(pending, 0);
    }
    use proptest::prelude::*;

    #[test]
    fn shares_of_any_scale() {
        assert_eq!(shares(&[500.0, 500.0]), vec![0.5, 0.5]);
        assert_eq!(shares(&[1.0, 3.0]), vec![0.25, 0.75]);
        assert_eq!(shares(&[0.0, 0.0]), vec![0.5, 0.5]);
        assert_eq!(shares(&[f64::NAN, 1.0]), vec![0.0, 1.0]);
    }

    #[test]
    fn hysteresis_is_strict() {
        assert!(!worth_writing(&[0.5, 0.5], &[0.51, 0.49], 0.01 + 1e-12));
        assert!(worth_writing(&[0.5, 0.5], &[0.52, 0.48], 0.01));
        assert!(!worth_writing(&[0.5, 0.5], &[0.5, 0.5], 0.0));
        assert!(worth_writing(&[0.5, 0.5], &[0.3, 0.3, 0.4], 0.5));
    }

    #[test]
    fn step_is_limited_and_direction_kept() {
        // 50/50 → 90/10 with a 10-point step: 60/40.
        assert_eq!(
            limit_step(&[0.5, 0.5], &[900, 100], 1000, 0.01, Some(0.1)),
            vec![600, 400]
        );
        // Within reach: unchanged.
        assert_eq!(
            limit_step(&[0.5, 0.5], &[550, 450], 1000, 0.01, Some(0.1)),
            vec![550, 450]
        );
        // No limit: unchanged.
        assert_eq!(
            limit_step(&[0.5, 0.5], &[990, 10], 1000, 0.01, None),
            vec![990, 10]
        );
    }

    #[test]
    fn a_backend_below_the_floor_is_lifted_despite_the_step_limit() {
        // The user's split starved the second backend; l3 never writes less than 1 %.
        let out = limit_step(&[1.0, 0.0], &[500, 500], 1000, 0.01, Some(0.001));
        assert_eq!(out.iter().sum::<u32>(), 1000);
        assert!(out[1] >= 10, "{out:?}");
        assert!(
            out[1] < 500,
            "the rest of the move is still limited: {out:?}"
        );
    }

    proptest! {
        #[test]
        fn limited_steps_sum_to_total_and_stay_within_the_step(
            raw in proptest::collection::vec(0.0f64..100.0, 1..6),
            target_raw in proptest::collection::vec(1u32..1000, 1..6),
            step in 0.01f64..1.0,
            min_share in 0.0f64..0.1,
        ) {
            let n = raw.len().min(target_raw.len());
            let current = shares(&raw[..n]);
            let t = &target_raw[..n];
            let sum: u32 = t.iter().sum();
            // Integer target summing to 1000.
            let mut proposed: Vec<u32> = t.iter().map(|&x| x * 1000 / sum).collect();
            let missing = 1000 - proposed.iter().sum::<u32>();
            proposed[0] += missing;
            let floor = crate::algorithm::normalise::floor_units(1000, min_share);
            prop_assume!(super::super::normalise::validate(n, 1000, min_share).is_ok());
            // Targets come from the normaliser, so they respect the floor.
            let proposed = crate::algorithm::normalise(
                &proposed.iter().map(|&w| f64::from(w)).collect::<Vec<_>>(), 1000, min_share,
            ).unwrap();
            let out = limit_step(&current, &proposed, 1000, min_share, Some(step));
            prop_assert_eq!(out.iter().sum::<u32>(), 1000);
            for &o in &out {
                prop_assert!(o >= floor, "{:?} below floor {}", out, floor);
            }
            if current.iter().all(|&c| c * 1000.0 >= f64::from(floor)) {
                for (o, c) in out.iter().zip(&current) {
                    prop_assert!((f64::from(*o) / 1000.0 - c).abs() <= step + 0.001 + 1e-9);
                }
            }
        }
    }
}
