//! The simulated mesh behaves like the model says: queueing theory on a single server, an
//! overloaded backend gets slower, and L3 beats round-robin where a backend is persistently
//! slow.

use l3::sim::{PolicyKind, Scenario, builtin, run};

fn single_server(concurrency: u32, rps: f64) -> Scenario {
    Scenario::from_yaml(
        &format!(
            r#"
name: mdl
duration: 400
warmup: 20
clusters: [a]
rtt_ms: [[0]]
clients: [{{name: c, cluster: a, rps: {rps}}}]
backends:
  - {{name: x, cluster: a, replicas: 1, concurrency: {concurrency}, p50_ms: 8, p99_ms: 8}}
"#
        ),
        "mdl",
    )
    .unwrap()
}

#[test]
fn a_single_server_queue_matches_m_d_1() {
    // Poisson arrivals at 100/s, deterministic 8 ms service: rho = 0.8, and Pollaczek-Khinchine
    // gives a mean wait of rho / (2 mu (1 - rho)) = 0.8 / (2 * 125 * 0.2) = 16 ms.
    let r = run(
        &single_server(1, 100.0),
        PolicyKind::RoundRobin,
        3,
        None,
        &mut |_| {},
    )
    .unwrap();
    let m = r.mean_ms();
    assert!(
        (m - 24.0).abs() < 24.0 * 0.12,
        "mean latency {m} ms, M/D/1 says 24 ms"
    );
    // With ample concurrency nobody waits.
    let r = run(
        &single_server(16, 100.0),
        PolicyKind::RoundRobin,
        3,
        None,
        &mut |_| {},
    )
    .unwrap();
    let m = r.mean_ms();
    assert!(
        (m - 8.0).abs() < 0.01,
        "mean latency {m} ms without queueing"
    );
}

#[test]
fn sending_more_traffic_to_a_backend_makes_it_slower() {
    let light = run(
        &single_server(2, 50.0),
        PolicyKind::RoundRobin,
        5,
        None,
        &mut |_| {},
    )
    .unwrap();
    let heavy = run(
        &single_server(2, 240.0),
        PolicyKind::RoundRobin,
        5,
        None,
        &mut |_| {},
    )
    .unwrap();
    let (l99, h99) = (light.quantile_ms(0.99), heavy.quantile_ms(0.99));
    assert!(
        h99 > 2.0 * l99,
        "p99 at 96 % load {h99} ms vs at 20 % load {l99} ms"
    );
}

#[test]
fn l3_p99_is_below_round_robin_where_a_backend_is_persistently_slow() {
    // scenario-1 and failure-1 have one cluster whose median is often above the others' p99:
    // L3 wins there in every seed (docs/evaluation.md, about -26 % and -18 %). On the spiky
    // traces the result depends on the seed (scrape and control phases) and on the loop's
    // delays, so no per-seed claim is made for them here; `make evaluate` has the spread.
    let mut failures = Vec::new();
    for name in ["scenario-1", "failure-1"] {
        let sc = builtin::get(name).unwrap().unwrap();
        for seed in [1, 2] {
            let rr = run(&sc, PolicyKind::RoundRobin, seed, Some(240.0), &mut |_| {}).unwrap();
            let l3 = run(&sc, PolicyKind::L3, seed, Some(240.0), &mut |_| {}).unwrap();
            let (a, b) = (rr.quantile_ms(0.99), l3.quantile_ms(0.99));
            if b >= 0.9 * a {
                failures.push(format!(
                    "{name} seed {seed}: l3 p99 {b:.1} ms not 10 % below rr p99 {a:.1} ms"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn l3_moves_traffic_away_from_a_slow_backend() {
    let sc = builtin::get("scenario-1").unwrap().unwrap();
    let l3 = run(&sc, PolicyKind::L3, 2, Some(120.0), &mut |_| {}).unwrap();
    let total: u64 = l3.attempts.iter().sum();
    // api-cluster-2's median is often above the others' p99 (paper Fig. 1a).
    let slow_share = l3.attempts[1] as f64 / total as f64;
    assert!(
        slow_share < 0.2,
        "slow backend kept {slow_share:.2} of the traffic"
    );
}

#[test]
fn retries_raise_the_success_rate_and_add_latency() {
    let sc = |retries: u32| {
        Scenario::from_yaml(
            &format!(
                r#"
name: retry
duration: 200
warmup: 0
clusters: [a]
rtt_ms: [[2]]
clients: [{{name: c, cluster: a, rps: 100, max_retries: {retries}}}]
backends:
  - {{name: x, cluster: a, concurrency: 50, p50_ms: 10, p99_ms: 10, success: 0.5, failure_latency_ms: 1}}
"#
            ),
            "retry",
        )
        .unwrap()
    };
    let none = run(&sc(0), PolicyKind::RoundRobin, 9, None, &mut |_| {}).unwrap();
    let two = run(&sc(2), PolicyKind::RoundRobin, 9, None, &mut |_| {}).unwrap();
    // Three tries at 50 %: 1 - 0.5^3 = 87.5 % succeed.
    assert!(
        (none.success_rate() - 0.5).abs() < 0.02,
        "{}",
        none.success_rate()
    );
    assert!(
        (two.success_rate() - 0.875).abs() < 0.02,
        "{}",
        two.success_rate()
    );
    assert_eq!(
        none.requests(),
        two.requests(),
        "a retried request counts once"
    );
    // A success after one failure costs a failed try (2 ms RTT + 1 ms) plus a successful one.
    // Quantiles come from a histogram with 3 significant digits: within 0.1 %.
    assert!(
        (none.quantile_ms(0.99) - 12.0).abs() <= 12.0 * 1e-3,
        "{}",
        none.quantile_ms(0.99)
    );
    assert!(
        (two.quantile_ms(0.99) - 18.0).abs() <= 18.0 * 1e-3,
        "{}",
        two.quantile_ms(0.99)
    );
}
