//! Raw weights → integer TrafficSplit weights that sum exactly to a fixed total, with a floor.

use super::{Error, Result};

/// Default sum of the integer weights written to a TrafficSplit.
pub const DEFAULT_TOTAL_WEIGHT: u32 = 1000;

/// Default minimum share of a backend: 1 % of the traffic.
pub const DEFAULT_MIN_SHARE: f64 = 0.01;

/// The smallest integer weight a backend may get: `ceil(min_share * total)`, so that its share
/// `weight / total` is never below `min_share`.
pub fn floor_units(total: u32, min_share: f64) -> u32 {
    (min_share * f64::from(total)).ceil().max(0.0) as u32
}

/// Checks that `backends` backends can each get `min_share` of `total`.
pub fn validate(backends: usize, total: u32, min_share: f64) -> Result<()> {
    if total == 0 {
        return Err(Error::InvalidParameter {
            name: "total_weight",
            value: 0.0,
            expected: "a whole number greater than 0",
        });
    }
    if !min_share.is_finite() || !(0.0..1.0).contains(&min_share) {
        return Err(Error::InvalidParameter {
            name: "min_share",
            value: min_share,
            expected: "a fraction in [0, 1)",
        });
    }
    let floor = u64::from(floor_units(total, min_share));
    if floor * backends as u64 > u64::from(total) {
        return Err(Error::Infeasible {
            backends,
            min_share,
            total,
        });
    }
    Ok(())
}

/// Turn raw weights into integer weights summing exactly to `total`, each at least
/// [`floor_units`]`(total, min_share)`.
///
/// This replaces the paper's `if w_b < 1 then w_b ← 1` (Algorithm 1 lines 15-17, Algorithm 2
/// lines 13-15): raw weights have no absolute scale, so "1" meant nothing fixed; a minimum
/// *share* guarantees every backend the traffic needed to keep measuring it, whatever the scale.
///
/// Method: water-filling (backends whose proportional share falls below the floor are pinned to
/// it and the rest is shared proportionally among the others), then largest-remainder rounding
/// (ties go to the larger raw weight, then the earlier backend). Both steps are monotone: a
/// larger raw weight never gets a smaller integer weight. Non-finite or non-positive raw weights
/// count as 0; if every weight is 0 the split is equal.
pub fn normalise(raw: &[f64], total: u32, min_share: f64) -> Result<Vec<u32>> {
    validate(raw.len(), total, min_share)?;
    let n = raw.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut w: Vec<f64> = raw
        .iter()
        .map(|&x| if x.is_finite() && x > 0.0 { x } else { 0.0 })
        .collect();
    if w.iter().sum::<f64>() <= 0.0 {
        w.iter_mut().for_each(|x| *x = 1.0);
    }
    let floor = floor_units(total, min_share);
    let exact = water_fill(&w, f64::from(total), f64::from(floor));

    let mut out: Vec<u32> = exact
        .iter()
        .map(|&x| (x.floor().max(0.0) as u32).max(floor))
        .collect();
    let assigned: u64 = out.iter().map(|&x| u64::from(x)).sum();
    let mut order: Vec<usize> = (0..n).collect();
    if assigned <= u64::from(total) {
        // Largest remainder first; ties by raw weight, then position.
        order.sort_by(|&a, &b| {
            let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
            rb.total_cmp(&ra)
                .then(w[b].total_cmp(&w[a]))
                .then(a.cmp(&b))
        });
        let missing = (u64::from(total) - assigned) as usize;
        for &i in order.iter().cycle().take(missing) {
            out[i] += 1;
        }
    } else {
        // Only possible through floating-point error on values pinned to the floor: take the
        // excess back from the smallest remainders among backends above the floor.
        order.sort_by(|&a, &b| {
            let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
            ra.total_cmp(&rb)
                .then(w[a].total_cmp(&w[b]))
                .then(b.cmp(&a))
        });
        let mut excess = assigned - u64::from(total);
        for &i in order.iter().cycle() {
            if excess == 0 {
                break;
            }
            if out[i] > floor {
                out[i] -= 1;
                excess -= 1;
            }
        }
    }
    Ok(out)
}

/// Real-valued allocation of `total` proportional to `w`, with every value at least `floor`.
fn water_fill(w: &[f64], total: f64, floor: f64) -> Vec<f64> {
    let n = w.len();
    let mut pinned = vec![false; n];
    loop {
        let free = (0..n).filter(|&i| !pinned[i]).count();
        let free_total = total - floor * (n - free) as f64;
        let free_weight: f64 = (0..n).filter(|&i| !pinned[i]).map(|i| w[i]).sum();
        let alloc: Vec<f64> = (0..n)
            .map(|i| match (pinned[i], free_weight > 0.0) {
                (true, _) => floor,
                (false, true) => free_total * w[i] / free_weight,
                (false, false) => free_total / free.max(1) as f64,
            })
            .collect();
        let mut changed = false;
        for i in 0..n {
            if !pinned[i] && alloc[i] < floor {
                pinned[i] = true;
                changed = true;
            }
        }
        if !changed {
            return alloc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_exactly_and_respects_the_floor() {
        let w = normalise(&[1000.0, 1.0, 1e-9], 1000, 0.01).unwrap();
        assert_eq!(w.iter().sum::<u32>(), 1000);
        assert_eq!(w, vec![980, 10, 10]);
    }

    #[test]
    fn largest_remainder_rounding() {
        let w = normalise(&[1.0, 1.0, 1.0], 1000, 0.01).unwrap();
        assert_eq!(w, vec![334, 333, 333]);
        let w = normalise(&[2.0, 1.0], 1000, 0.0).unwrap();
        assert_eq!(w, vec![667, 333]);
    }

    #[test]
    fn all_zero_or_garbage_gives_equal_split() {
        let w = normalise(&[0.0, f64::NAN, -3.0, f64::INFINITY], 1000, 0.01).unwrap();
        assert_eq!(w, vec![250, 250, 250, 250]);
    }

    #[test]
    fn infeasible_floor_is_an_error_naming_the_field() {
        let err = normalise(&[1.0; 101], 1000, 0.01).unwrap_err();
        assert!(matches!(err, Error::Infeasible { backends: 101, .. }));
        let err = normalise(&[1.0], 1000, 1.5).unwrap_err();
        assert!(err.to_string().contains("min_share"), "{err}");
        assert!(normalise(&[1.0], 0, 0.01).is_err());
    }

    #[test]
    fn exactly_feasible_floor() {
        let w = normalise(&[5.0, 1.0, 0.0, 0.0], 100, 0.25).unwrap();
        assert_eq!(w, vec![25, 25, 25, 25]);
    }

    #[test]
    fn empty_input() {
        assert!(normalise(&[], 1000, 0.01).unwrap().is_empty());
    }
}
