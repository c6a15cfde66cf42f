//! The baselines and the loop's delays behave as their models say: P2C follows response times
//! and does not see failures, C3-p99 and L3 move away from a slow backend, the propagation delay
//! postpones a move, the window rule is the operator's, and failures have their own latency.

use l3::sim::{PolicyKind, RunResult, Scenario, builtin, run};

fn scenario(extra: &str, backends: &str) -> Scenario {
    let yaml = format!(
        "name: t\nduration: 240\nwarmup: 20\nscrape_interval: 5\nclusters: [a, b]\n\
         rtt_ms: [[0.5, 10], [10, 0.5]]\n{extra}\
         clients: [{{name: c, cluster: a, rps: 200}}]\nbackends:\n{backends}"
    );
    Scenario::from_yaml(&yaml, "test").unwrap()
}

fn share(r: &RunResult, b: usize) -> f64 {
    r.attempts[b] as f64 / r.attempts.iter().sum::<u64>() as f64
}

const FAST_SLOW: &str = "  - {name: fast, cluster: a, concurrency: 20, p50_ms: 5, p99_ms: 15}\n  \
     - {name: slow, cluster: b, concurrency: 20, p50_ms: 80, p99_ms: 200}\n";

#[test]
fn every_latency_aware_policy_moves_away_from_a_slow_backend() {
    let sc = scenario("", FAST_SLOW);
    for p in [
        PolicyKind::C3,
        PolicyKind::C3P99,
        PolicyKind::P2c,
        PolicyKind::L3,
        PolicyKind::L3P2c,
        PolicyKind::L3Peak,
    ] {
        let r = run(&sc, p, 1, None, &mut |_| {}).unwrap();
        assert!(
            share(&r, 1) < 0.2,
            "{}: slow share {}",
            p.name(),
            share(&r, 1)
        );
    }
    let rr = run(&sc, PolicyKind::RoundRobin, 1, None, &mut |_| {}).unwrap();
    assert!((share(&rr, 1) - 0.5).abs() < 0.02);
}

#[test]
fn p2c_does_not_see_failures_but_l3_does() {
    // Both backends equally fast; one fails half its requests in 1 ms. P2C's cost only sees the
    // fast answers and sends it more; L3's success-rate penalty sends it less.
    let sc = scenario(
        "",
        "  - {name: ok, cluster: a, concurrency: 20, p50_ms: 20, p99_ms: 40}\n  \
         - {name: flaky, cluster: a, concurrency: 20, p50_ms: 20, p99_ms: 40, success: 0.5, failure_latency_ms: 1}\n",
    );
    let p2c = run(&sc, PolicyKind::P2c, 2, None, &mut |_| {}).unwrap();
    let l3 = run(&sc, PolicyKind::L3, 2, None, &mut |_| {}).unwrap();
    assert!(share(&p2c, 1) > 0.5, "p2c flaky share {}", share(&p2c, 1));
    assert!(share(&l3, 1) < 0.2, "l3 flaky share {}", share(&l3, 1));
    assert!(l3.success_rate() > p2c.success_rate() + 0.1);
}

#[test]
fn the_propagation_delay_postpones_the_move() {
    // The second backend turns slow at t = 100 s; with a 30 s propagation delay L3's weights
    // reach the proxies 30 s later, so the window right after the change still splits evenly.
    let backends = "  - {name: x, cluster: a, concurrency: 20, p50_ms: 10, p99_ms: 30}\n  \
         - {name: y, cluster: a, concurrency: 20, p50_ms: {interpolation: step, points: [[0, 10], [100, 150]]}, \
         p99_ms: {interpolation: step, points: [[0, 30], [100, 400]]}}\n";
    let quick = scenario("query_latency: 0\npropagation_delay: 0\n", backends);
    let late = scenario("query_latency: 0\npropagation_delay: 30\n", backends);
    let q = run(&quick, PolicyKind::L3, 3, None, &mut |_| {}).unwrap();
    let l = run(&late, PolicyKind::L3, 3, None, &mut |_| {}).unwrap();
    // Window [120, 130): 20-30 s after the change.
    let (qs, ls) = (q.timeline[12].shares[1], l.timeline[12].shares[1]);
    assert!(
        qs < 0.25 && ls > 0.4,
        "share of y at 120 s: no delay {qs}, 30 s delay {ls}"
    );
    assert!(
        l.timeline[20].shares[1] < 0.25,
        "the move arrives in the end"
    );
    assert!(l.quantile_ms(0.99) > q.quantile_ms(0.99));
}

#[test]
fn the_window_is_the_operators_rule() {
    let sc = |extra: &str| {
        Scenario::from_yaml(
            &format!(
                "name: w\nduration: 10\n{extra}clusters: [a]\nrtt_ms: [[0]]\n\
                 clients: [{{name: c, cluster: a, rps: 1}}]\n\
                 backends: [{{name: x, cluster: a, concurrency: 1, p50_ms: 1, p99_ms: 2}}]\n"
            ),
            "w",
        )
    };
    assert_eq!(
        sc("").unwrap().scrape_interval,
        10.0,
        "linkerd-viz's default"
    );
    assert_eq!(sc("").unwrap().window_secs(), 40.0);
    assert_eq!(sc("scrape_interval: 5\n").unwrap().window_secs(), 20.0);
    assert_eq!(sc("scrape_interval: 1\n").unwrap().window_secs(), 10.0);
    assert_eq!(
        sc("scrape_interval: 10\nquery_window: 20\n")
            .unwrap()
            .window_secs(),
        20.0
    );
    let e = sc("scrape_interval: 10\nquery_window: 15\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("query_window") && e.contains("20 s"), "{e}");
    let e = sc("query_window: often\n").unwrap_err().to_string();
    assert!(e.contains("auto"), "{e}");
    let e = sc("propagation_delay: -1\n").unwrap_err().to_string();
    assert!(e.contains("propagation_delay"), "{e}");
    let e = sc("query_latency: .inf\n").unwrap_err().to_string();
    assert!(e.contains("query_latency"), "{e}");
}

#[test]
fn failures_can_have_a_latency_distribution_of_their_own() {
    let sc = |failure: &str| {
        Scenario::from_yaml(
            &format!(
                "name: f\nduration: 120\nwarmup: 0\nclusters: [a]\nrtt_ms: [[0]]\n\
                 clients: [{{name: c, cluster: a, rps: 100}}]\n\
                 backends: [{{name: x, cluster: a, concurrency: 50, p50_ms: 5, p99_ms: 6, \
                 success: 0, failure_latency_ms: {failure}}}]\n"
            ),
            "f",
        )
    };
    let r = run(
        &sc("{p50_ms: 200, p99_ms: 800}").unwrap(),
        PolicyKind::RoundRobin,
        4,
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.success_rate(), 0.0);
    let (p50, p99) = (r.quantile_ms(0.5), r.quantile_ms(0.99));
    assert!((p50 - 200.0).abs() < 15.0, "failure p50 {p50}");
    assert!((p99 - 800.0).abs() < 120.0, "failure p99 {p99}");
    let e = sc("{p50_ms: 20, p99_ms: 10}").unwrap_err().to_string();
    assert!(e.contains("failure_latency_ms.p99_ms"), "{e}");
    let e = sc("{p50_ms: 20, p95_ms: 30}").unwrap_err().to_string();
    assert!(e.contains("p95_ms") && e.contains("p50_ms, p99_ms"), "{e}");
}

#[test]
fn every_policy_runs_every_builtin_deterministically() {
    for sc in builtin::all().unwrap() {
        for p in PolicyKind::ALL {
            let a = run(&sc, p, 5, Some(20.0), &mut |_| {}).unwrap();
            let b = run(&sc, p, 5, Some(20.0), &mut |_| {}).unwrap();
            assert!(a.requests() > 0, "{} {}", sc.name, p.name());
            assert_eq!(a.latency, b.latency, "{} {}", sc.name, p.name());
            assert_eq!(a.attempts, b.attempts, "{} {}", sc.name, p.name());
        }
    }
}
