//! Source benchmarks: cost of planning a cycle (PromQL building and chunking) and of decoding
//! an answer, for 1,000 and 10,000 backends; prints the number of queries per cycle.
//! Median of repeated runs; `make bench`.

use std::hint::black_box;
use std::time::Instant;

use l3::source::decode::{decode_answer, outcomes};
use l3::source::query::{SignalKind, plan};
use l3::source::{BackendKey, QueryWindow, RequestGroup, SignalRequest, SourceConfig};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let samples = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(samples)
}

fn backends(n: usize) -> Vec<BackendKey> {
    (0..n)
        .map(|i| BackendKey {
            namespace: format!("team-{}", i % 20),
            service: format!("service-{i:05}-east"),
        })
        .collect()
}

fn main() {
    let config = SourceConfig::default();
    for n in [1_000usize, 10_000] {
        let request = SignalRequest {
            groups: vec![RequestGroup {
                quantile: 0.99,
                window: QueryWindow::Secs(10),
                backends: backends(n),
            }],
        };
        let p = plan(&config, &request);
        let longest = p.queries.iter().map(|q| q.promql.len()).max().unwrap_or(0);
        let plan_secs = time(31, || plan(&config, &request));
        println!(
            "source/plan n={n}: {} queries per cycle ({} per signal), longest {longest} B, median {:.3} ms",
            p.queries.len(),
            p.queries
                .iter()
                .filter(|q| q.signal == SignalKind::Rps)
                .count(),
            plan_secs * 1e3
        );
        let mut body =
            String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
        for (i, b) in request.groups[0].backends.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"metric":{{"dst_namespace":"{}","dst_service":"{}"}},"value":[1700000000,"{}"]}}"#,
                b.namespace, b.service, i
            ));
        }
        body.push_str("]}}");
        let decode_secs = time(31, || {
            let series = decode_answer(200, body.as_bytes(), false).expect("valid answer");
            outcomes(
                &config,
                SignalKind::Rps,
                &series,
                &request.groups[0].backends,
            )
        });
        println!(
            "source/decode n={n}: {} KiB answer, median {:.3} ms",
            body.len() / 1024,
            decode_secs * 1e3
        );
    }
}
