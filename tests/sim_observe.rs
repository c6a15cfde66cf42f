//! The observation model against hand-computed Prometheus answers.

use l3::sim::observe::{
    Counters, LINKERD_BUCKETS_MS, Scrape, extrapolated_rate, histogram_quantile, query,
    query_targets,
};

const INF: f64 = f64::INFINITY;

#[test]
fn histogram_quantile_interpolates_linearly_inside_the_bucket() {
    // Cumulative: 50 at or below 10, 90 at or below 20, 100 at or below 30.
    let b = [(10.0, 50.0), (20.0, 90.0), (30.0, 100.0), (INF, 100.0)];
    // rank 50 → first bucket, which starts at 0: 0 + 10 * 50/50.
    assert_eq!(histogram_quantile(0.5, &b), 10.0);
    // rank 70 → (10, 20]: 10 + 10 * (70-50)/40 = 15.
    assert_eq!(histogram_quantile(0.7, &b), 15.0);
    // rank 99 → (20, 30]: 20 + 10 * (99-90)/10 = 29.
    assert!((histogram_quantile(0.99, &b) - 29.0).abs() < 1e-12);
    // rank 25 → first bucket: 10 * 25/50 = 5.
    assert_eq!(histogram_quantile(0.25, &b), 5.0);
}

#[test]
fn histogram_quantile_edge_cases_follow_prometheus() {
    // A rank in +Inf returns the highest finite bound.
    let b = [(10.0, 50.0), (INF, 100.0)];
    assert_eq!(histogram_quantile(0.99, &b), 10.0);
    // No observations, or no +Inf bucket: NaN.
    assert!(histogram_quantile(0.5, &[(10.0, 0.0), (INF, 0.0)]).is_nan());
    assert!(histogram_quantile(0.5, &[(10.0, 5.0), (20.0, 5.0)]).is_nan());
    // Out-of-range q.
    assert_eq!(histogram_quantile(1.5, &b), INF);
    assert_eq!(histogram_quantile(-0.1, &b), f64::NEG_INFINITY);
    // Non-monotonic counts (rate rounding) are made monotonic first.
    let bumpy = [(10.0, 60.0), (20.0, 50.0), (30.0, 100.0), (INF, 100.0)];
    // After the fix: 60, 60, 100 → rank 80 lies in (20, 30]: 20 + 10 * 20/40 = 25.
    assert_eq!(histogram_quantile(0.8, &bumpy), 25.0);
}

#[test]
fn extrapolated_rate_matches_prometheus_arithmetic() {
    // Three samples at 2, 6, 10 in [0, 10]: increase 40 over 8 s, avg interval 4 s; the start
    // gap (2 s) is below 1.1 * 4, so extrapolate to 10 s: 40 * 10/8 / 10 = 5.
    let r = extrapolated_rate(&[(2.0, 100.0), (6.0, 120.0), (10.0, 140.0)], 0.0, 10.0).unwrap();
    assert!((r - 5.0).abs() < 1e-12, "{r}");
    // A counter that started near zero is not extrapolated below zero: from 5 → 15 over
    // [5, 10], the zero point is 2.5 s before the first sample, so 10 * 7.5/5 / 10 = 1.5.
    let r = extrapolated_rate(&[(5.0, 5.0), (10.0, 15.0)], 0.0, 10.0).unwrap();
    assert!((r - 1.5).abs() < 1e-12, "{r}");
}

#[test]
fn query_reads_p99_p50_success_rps_and_inflight_like_promql() {
    let mut c = vec![Counters::default()];
    let s0 = Scrape::take(0.0, &c);
    // 100 requests in 5 s: 98 succeed at 60 ms (bucket (50, 100]), 2 fail, 3 still in flight.
    for _ in 0..103 {
        c[0].on_request();
    }
    for _ in 0..98 {
        c[0].on_response(true, 60.0);
    }
    c[0].on_response(false, 5.0);
    c[0].on_response(false, 5.0);
    let s1 = Scrape::take(5.0, &c);
    let got = query(&[s0, s1], 5.0, 10.0, 1);
    let s = got[0];
    // Window (−5, 5] holds the scrapes at 0 and 5; rate extrapolates to 10 s but ratios cancel.
    // p99: 50 + 50 * 0.99 = 99.5 ms; p50: 50 + 50 * 0.5 = 75 ms.
    assert!((s.latency_secs.unwrap() - 0.0995).abs() < 1e-12, "{s:?}");
    assert!((s.p50_secs.unwrap() - 0.075).abs() < 1e-12, "{s:?}");
    assert!((s.success_rate.unwrap() - 0.98).abs() < 1e-12, "{s:?}");
    // request_total went 0 → 103 between the scrapes; the counter's zero point is the first
    // sample, so Prometheus does not extrapolate toward the window start: 103 / 10 s.
    assert!((s.rps.unwrap() - 10.3).abs() < 1e-9, "{s:?}");
    // In-flight by Little's law, the operator's default: rate(response_latency_ms_sum) in s.
    // 98 × 60 ms + 2 × 5 ms = 5890 ms over the same extrapolated 10 s: 0.589 requests.
    assert!((s.inflight.unwrap() - 0.589).abs() < 1e-9, "{s:?}");
    assert_eq!(LINKERD_BUCKETS_MS[10], 100.0);
}

#[test]
fn query_without_two_scrapes_or_without_successes_has_no_value() {
    let mut c = vec![Counters::default()];
    c[0].on_request();
    c[0].on_response(false, 1.0);
    let s0 = Scrape::take(0.0, &c);
    let only_one = query(std::slice::from_ref(&s0), 0.0, 10.0, 1)[0];
    assert_eq!(only_one.rps, None);
    assert_eq!(only_one.latency_secs, None);
    c[0].on_request();
    c[0].on_response(false, 1.0);
    let s1 = Scrape::take(5.0, &c);
    let failing = query(&[s0, s1], 5.0, 10.0, 1)[0];
    assert_eq!(failing.success_rate, Some(0.0));
    assert_eq!(
        failing.latency_secs, None,
        "latency is of successful requests only"
    );
}

#[test]
fn targets_are_rated_at_their_own_phases_and_summed() {
    // Two proxies, scraped at phases 1 s and 3 s of a 5 s interval, each counting 10 requests per
    // second. Query at t = 20 over (10, 20]: proxy A has samples at 11, 16 (two), proxy B at 13,
    // 18 (two). Each rate extrapolates by Prometheus' rule, then they add up.
    let mut a = vec![Counters::default()];
    let mut b = vec![Counters::default()];
    let mut sa = Vec::new();
    let mut sb = Vec::new();
    for t in 0..=20 {
        let t = f64::from(t);
        if t > 0.0 {
            for _ in 0..10 {
                a[0].on_request();
                a[0].on_response(true, 7.0);
                b[0].on_request();
                b[0].on_response(true, 7.0);
            }
        }
        if (t - 1.0) % 5.0 == 0.0 {
            sa.push(Scrape::take(t, &a));
        }
        if (t - 3.0) % 5.0 == 0.0 {
            sb.push(Scrape::take(t, &b));
        }
    }
    let both = query_targets(&[&sa, &sb], 20.0, 10.0, 1)[0];
    let ra = extrapolated_rate(&[(11.0, 110.0), (16.0, 160.0)], 10.0, 20.0).unwrap();
    let rb = extrapolated_rate(&[(13.0, 130.0), (18.0, 180.0)], 10.0, 20.0).unwrap();
    assert!((both.rps.unwrap() - (ra + rb)).abs() < 1e-9, "{both:?}");
    // Each target's own extrapolation: A's gaps to the range edges (1 s before its first sample,
    // 4 s after its last) are both under 1.1 average intervals, so it extrapolates over the whole
    // 10 s: 50 * 10/5 / 10 = 10 per second.
    assert!((ra - 10.0).abs() < 1e-9, "{ra}");
    // Every response took 7 ms: Little's law gives throughput × 7 ms.
    assert!(
        (both.inflight.unwrap() - (ra + rb) * 0.007).abs() < 1e-9,
        "{both:?}"
    );
    // A target with one sample in the window adds nothing; the other still answers.
    let short = query_targets(&[&sa[..3], &sb], 20.0, 10.0, 1)[0];
    assert!((short.rps.unwrap() - rb).abs() < 1e-9, "{short:?}");
    // 5..10 ms bucket: the p99 interpolates inside (5, 10].
    assert!(both.latency_secs.unwrap() > 0.005 && both.latency_secs.unwrap() <= 0.010);
}
