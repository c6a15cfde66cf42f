//! Simulator speed: a 10-minute scenario at 1,000 RPS with 9 backends, per policy, in release
//! mode. Target: well under 1 s per policy. Reports the median of repeated runs.

use std::time::{Duration, Instant};

use l3::sim::{PolicyKind, Scenario, run};

const RUNS: usize = 7;

fn scenario() -> Scenario {
    let mut backends = String::new();
    for c in 0..3 {
        for s in 0..3 {
            let p50 = 10 + 5 * (c * 3 + s);
            backends += &format!(
                "  - {{name: b{c}{s}, cluster: c{c}, replicas: 3, concurrency: 8, \
                 p50_ms: [[0, {p50}], [300, {}], [600, {p50}]], p99_ms: [[0, {}], [200, {}], [600, {}]], \
                 success: [[0, 1], [100, 0.95], [200, 1]]}}\n",
                p50 * 2,
                p50 * 4,
                p50 * 12,
                p50 * 4
            );
        }
    }
    let yaml = format!(
        "name: bench-9\nduration: 600\nwarmup: 0\nclusters: [c0, c1, c2]\n\
         rtt_ms: [[0.5, 8, 9], [8, 0.5, 12], [9, 12, 0.5]]\n\
         clients: [{{name: load, cluster: c0, rps: 1000}}]\nbackends:\n{backends}"
    );
    match Scenario::from_yaml(&yaml, "bench") {
        Ok(sc) => sc,
        Err(e) => panic!("the benchmark scenario is invalid: {e}"),
    }
}

fn main() {
    let sc = scenario();
    println!(
        "sim: 600 s at 1000 RPS, 9 backends, median of {RUNS} runs (release: {})",
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
            "  {:<8} median {:>7.1} ms  (min {:.1}, max {:.1})  {} requests, {:.2} M requests/s",
            policy.name(),
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[RUNS - 1].as_secs_f64() * 1e3,
            requests,
            requests as f64 / median.as_secs_f64() / 1e6
        );
    }
}
