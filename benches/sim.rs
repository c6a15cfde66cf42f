//! Simulator speed: a 10-minute scenario at 1,000 RPS with 9 backends (`benches/sim-9-backends.yaml`),
//! per policy, in release mode. Target: under 1 s per policy. Reports the median of repeated
//! runs. The memory of a 24-hour run of the same scenario is `make sim-memory`.

use std::time::{Duration, Instant};

use l3::sim::{PolicyKind, Scenario, run};

const RUNS: usize = 5;

fn scenario() -> Scenario {
    match Scenario::from_yaml(include_str!("sim-9-backends.yaml"), "sim-9-backends.yaml") {
        Ok(sc) => sc,
        Err(e) => panic!("the benchmark scenario is invalid: {e}"),
    }
}

fn main() {
    let sc = scenario();
    println!(
        "sim: 600 s at 1000 RPS, 9 backends x 3 replicas, {} client proxies, median of {RUNS} runs (release: {})",
        sc.clients.iter().map(|c| c.proxies).sum::<u32>(),
        !cfg!(debug_assertions)
    );
    for policy in PolicyKind::ALL {
        let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
        let mut requests = 0;
        for seed in 0..RUNS as u64 {
            let t0 = Instant::now();
            let r = match run(&sc, policy, seed, None, &mut |_| {}) {
                Ok(r) => r,
                Err(e) => panic!("{} failed: {e}", policy.name()),
            };
            times.push(t0.elapsed());
            requests = r.requests();
        }
        times.sort();
        let median = times[RUNS / 2];
        println!(
            "  {:<8} median {:>7.1} ms  (min {:.1}, max {:.1})  {} requests, {:.2} M requests/s{}",
            policy.name(),
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[RUNS - 1].as_secs_f64() * 1e3,
            requests,
            requests as f64 / median.as_secs_f64() / 1e6,
            if median > Duration::from_secs(1) {
                "  ABOVE the 1 s target"
            } else {
                ""
            }
        );
    }
}
