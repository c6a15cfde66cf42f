//! `l3 replay` against a real Prometheus whose history is backfilled with `promtool tsdb
//! create-blocks-from openmetrics`: one hour of Linkerd proxy metrics (10 s samples) for a fast
//! backend, a slow one whose counters reset half way (a proxy restart), and none for a third.
//! Also: a bad URL, an empty range, a range without data, a range too large, a policy file with
//! its TrafficSplit, and a window too short for the scrape interval.
//!
//! Without a `prometheus`/`promtool` binary these tests FAIL saying how to install them
//! (`make tools`); `L3_SKIP_PROMETHEUS_TESTS=1` skips them deliberately.

mod support;

use std::fmt::Write as _;
use std::time::Instant;

use clap::Parser as _;
use l3::cli::{Cli, Command};
use l3::replay::{self, Error, ReplayArgs, report, run::Report};

/// Linkerd's latency bucket bounds, ms.
const BUCKETS_MS: [f64; 25] = support::exporter::BUCKETS_MS;
/// Spacing of the backfilled samples (linkerd-viz's scrape interval).
const EVERY: i64 = 10;
/// Requests per second of each backend.
const RPS: f64 = 50.0;

struct Backend {
    service: &'static str,
    /// Every response takes this long, ms (one bucket: p99 is 99 % into it).
    latency_ms: f64,
    /// The proxy restarts at this time: its counters start again from 0.
    reset_at: Option<i64>,
}

/// OpenMetrics text with `request_total`, `response_total` and `response_latency_ms` of
/// `backends` (namespace `shop`, outbound) every [`EVERY`] s over `[start, end]`.
fn history(start: i64, end: i64, backends: &[Backend]) -> String {
    let count = |b: &Backend, t: i64| -> f64 {
        let since = match b.reset_at {
            Some(r) if t >= r => r,
            _ => start - 600,
        };
        RPS * (t - since) as f64
    };
    let labels = |b: &Backend| {
        format!(
            "direction=\"outbound\",dst_namespace=\"shop\",dst_service=\"{}\"",
            b.service
        )
    };
    let times: Vec<i64> = (start..=end).step_by(EVERY as usize).collect();
    let mut out = String::new();
    out.push_str("# TYPE request counter\n");
    for &t in &times {
        for b in backends {
            let _ = writeln!(out, "request_total{{{}}} {} {t}", labels(b), count(b, t));
        }
    }
    out.push_str("# TYPE response counter\n");
    for &t in &times {
        for b in backends {
            let _ = writeln!(
                out,
                "response_total{{{},classification=\"success\",status_code=\"200\"}} {} {t}",
                labels(b),
                count(b, t)
            );
        }
    }
    out.push_str("# TYPE response_latency_ms histogram\n");
    for &t in &times {
        for b in backends {
            let l = format!("{},status_code=\"200\"", labels(b));
            let c = count(b, t);
            for le in BUCKETS_MS {
                let v = if b.latency_ms <= le { c } else { 0.0 };
                let _ = writeln!(out, "response_latency_ms_bucket{{{l},le=\"{le}\"}} {v} {t}");
            }
            let _ = writeln!(out, "response_latency_ms_bucket{{{l},le=\"+Inf\"}} {c} {t}");
            let _ = writeln!(
                out,
                "response_latency_ms_sum{{{l}}} {} {t}",
                c * b.latency_ms
            );
            let _ = writeln!(out, "response_latency_ms_count{{{l}}} {c} {t}");
        }
    }
    out.push_str("# EOF\n");
    out
}

fn args<S: AsRef<str>>(extra: &[S]) -> ReplayArgs {
    let mut argv = vec!["l3", "replay"];
    argv.extend(extra.iter().map(AsRef::as_ref));
    match Cli::try_parse_from(argv)
        .expect("valid command line")
        .command
    {
        Command::Replay(a) => *a,
        other => panic!("not a replay: {other:?}"),
    }
}

async fn replay<S: AsRef<str>>(extra: &[S]) -> Result<(report::Context, Report), Error> {
    replay::replay(&args(extra), |_, _| {}).await
}

fn near(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: got {got}, want {want} ± {:.1} %",
        rel * 100.0
    );
}

/// The one-hour history: `(prometheus, start of the hour)`.
async fn backfilled() -> Option<(support::prometheus::Prometheus, i64)> {
    let bin = support::prometheus::binary()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // An hour that ended an hour ago, on a 10 s grid; five minutes of lead-in for the windows.
    let t0 = (now - 2 * 3600) / EVERY * EVERY;
    let backends = [
        Backend {
            service: "web-a",
            latency_ms: 25.0,
            reset_at: None,
        },
        Backend {
            service: "web-b",
            latency_ms: 250.0,
            // Between two samples, as a restart is.
            reset_at: Some(t0 + 1805),
        },
    ];
    let prom = support::prometheus::Prometheus::start_backfilled(
        &bin,
        &history(t0 - 300, t0 + 3600, &backends),
    )
    .await;
    Some((prom, t0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hour_of_history() {
    let Some((prom, t0)) = backfilled().await else {
        return;
    };
    let (from, to) = (t0.to_string(), (t0 + 3600).to_string());
    let base = [
        "--prometheus-url",
        prom.url.as_str(),
        "--from",
        from.as_str(),
        "--to",
        to.as_str(),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    // The main replay: the split's actual weights are 50/50.
    let started = Instant::now();
    let (ctx, r) = replay(&with(&[
        "--split",
        "shop/web",
        "--backends",
        "web-a=500,web-b=500",
    ]))
    .await
    .expect("replay");
    let elapsed = started.elapsed();
    let table = report::render(report::Format::Table, &ctx, &r);
    eprintln!(
        "one hour at 5 s: {} intervals, {} writes, {} range queries, {elapsed:?}\n{}",
        r.intervals.len(),
        r.writes,
        ctx.queries,
        table.lines().take(22).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(r.intervals.len(), 721);
    assert_eq!(
        ctx.scrape_interval_seconds,
        Some(10.0),
        "learned from the samples"
    );
    assert_eq!(ctx.window_seconds, 40, "auto: four scrapes");
    assert!(ctx.failed_queries.is_empty(), "{:?}", ctx.failed_queries);
    assert!(r.backends_without_data.is_empty());
    assert!(r.writes >= 1 && r.writes <= 20, "{} writes", r.writes);
    assert_eq!(r.writes, r.intervals.iter().filter(|i| i.write).count());
    let last = r.intervals.last().unwrap();
    let (a, b) = (&last.backends[0], &last.backends[1]);
    assert!(a.weight > 900 && b.weight >= 10, "{a:?} {b:?}");
    near("web-a filtered p99", a.latency_seconds, 0.0299, 0.03);
    near("web-b filtered p99", b.latency_seconds, 0.299, 0.03);
    near("web-a filtered rps", a.requests_per_second, RPS, 0.05);
    near("web-b filtered rps", b.requests_per_second, RPS, 0.05);
    // Across web-b's counter reset rate() never spikes or goes negative: at worst the requests
    // between the last scrape and the restart are lost (a quarter of a 40 s window).
    let b_rps: Vec<f64> = r
        .intervals
        .iter()
        .filter_map(|i| i.backends[1].observed_requests_per_second)
        .collect();
    assert_eq!(b_rps.len(), r.intervals.len(), "rps in every interval");
    assert!(
        b_rps.iter().all(|v| (0.7 * RPS..=1.05 * RPS).contains(v)),
        "{:?}",
        b_rps
            .iter()
            .fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
    );
    let dip = b_rps.iter().filter(|v| **v < 0.99 * RPS).count();
    assert!(
        (1..=8).contains(&dip),
        "the reset shows in a few intervals only: {dip}"
    );
    let e = r.estimate.expect("latency was observed");
    assert_eq!(e.actual_from, "split weights");
    near(
        "p99 under the actual weights",
        e.actual_p99_seconds,
        (0.0299 + 0.299) / 2.0,
        0.03,
    );
    assert!(e.change_percent < -50.0, "{e:?}");
    assert!(table.contains("FIRST-ORDER ESTIMATE"), "{table}");

    // The other formats carry the same report.
    let csv = report::render(report::Format::Csv, &ctx, &r);
    assert_eq!(csv.lines().count(), 1 + 2 * 721);
    let json: serde_json::Value =
        serde_json::from_str(&report::render(report::Format::Json, &ctx, &r)).unwrap();
    assert_eq!(json["writes"], r.writes);
    assert_eq!(json["context"]["split"], "shop/web");
    assert!(
        json["estimate"]["label"]
            .as_str()
            .unwrap()
            .starts_with("first-order estimate")
    );
    let svg = report::svg(&ctx, &r);
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");

    // A backend without data, and the actual weights from the observed request shares.
    let (_, r) = replay(&with(&[
        "--split",
        "shop/web",
        "--backends",
        "web-a,web-b,web-c",
    ]))
    .await
    .expect("replay");
    assert_eq!(r.backends_without_data, ["web-c"]);
    let last = r.intervals.last().unwrap();
    assert!(
        last.backends[2].weight <= 11,
        "web-c at the minimum share: {last:?}"
    );
    assert!(last.backends[2].observed_latency_seconds.is_none());
    assert_eq!(
        r.estimate.expect("estimate").actual_from,
        "observed request shares"
    );

    // A long range at 1 s: chunked, with progress.
    let mut seen = Vec::new();
    let (_, r) = replay::replay(
        &args(&with(&[
            "--split",
            "shop/web",
            "--backends",
            "web-a,web-b",
            "--interval",
            "1s",
        ])),
        |done, total| seen.push((done, total)),
    )
    .await
    .expect("replay at 1 s");
    assert_eq!(r.intervals.len(), 3601);
    assert_eq!(
        seen,
        [(1000, 3601), (2000, 3601), (3000, 3601), (3601, 3601)]
    );

    // A range without any data: nothing to do, said so.
    let (early_from, early_to) = ((t0 - 7200).to_string(), (t0 - 3600).to_string());
    let (ctx, r) = replay(&[
        "--prometheus-url",
        prom.url.as_str(),
        "--from",
        early_from.as_str(),
        "--to",
        early_to.as_str(),
        "--split",
        "shop/web",
        "--backends",
        "web-a=500,web-b=500",
    ])
    .await
    .expect("an empty history is a report, not an error");
    assert_eq!(r.writes, 0);
    assert!(r.estimate.is_none());
    assert_eq!(r.backends_without_data, ["web-a", "web-b"]);
    assert!(
        report::render(report::Format::Table, &ctx, &r).contains("no estimate"),
        "the table says there is no estimate"
    );

    // A policy file with its TrafficSplit: settings and actual weights from the manifests.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let manifests = |window: &str| {
        format!(
            "apiVersion: l3.dev/v1alpha1\nkind: LatencyPolicy\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  targetRef:\n    kind: TrafficSplit\n    name: web\n  interval: 10s\n  queryWindow: {window}\n\
             ---\napiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  service: web\n  backends:\n  - service: web-a\n    weight: 100\n  - service: web-b\n    weight: 900\n"
        )
    };
    std::fs::write(&policy, manifests("auto")).unwrap();
    let p = policy.to_str().unwrap();
    let (ctx, r) = replay(&with(&["--policy", p]))
        .await
        .expect("replay from a policy file");
    assert_eq!(ctx.interval_seconds, 10.0);
    assert_eq!(r.intervals.len(), 361);
    let first_write = r.intervals.iter().position(|i| i.write).expect("a write");
    assert!(
        r.intervals[..first_write]
            .iter()
            .all(|i| i.backends[0].weight == 100),
        "the split's weights are in effect until l3's first write"
    );
    assert_eq!(r.estimate.expect("estimate").actual_from, "split weights");
    // An explicit window shorter than two scrape intervals is refused with both numbers.
    std::fs::write(&policy, manifests("15s")).unwrap();
    let e = replay(&with(&["--policy", p])).await.unwrap_err();
    assert!(matches!(e, Error::WindowTooShort { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("15s") && msg.contains("10s") && msg.contains("20s"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_the_flag() {
    // Nothing listens there.
    let port = support::prometheus::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let common = ["--split", "shop/web", "--backends", "web-a,web-b"];
    let with = |extra: &[&str]| {
        let mut v: Vec<String> = ["--prometheus-url", url.as_str()]
            .iter()
            .chain(common.iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect();
        v.insert(0, "replay".into());
        v.insert(0, "l3".into());
        v
    };
    let run = |argv: Vec<String>| async move {
        let a = match Cli::try_parse_from(argv).unwrap().command {
            Command::Replay(a) => *a,
            _ => unreachable!("a replay command line"),
        };
        replay::replay(&a, |_, _| {}).await.map(|_| ())
    };
    let e = run(with(&["--from", "now-1h", "--to", "now"]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoAnswer { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(e.to_string().contains("connect"), "{e}");

    let e = run(with(&["--from", "1700000000", "--to", "1700000000"]))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("--to") && e.to_string().contains("empty"),
        "{e}"
    );

    let e = run(with(&["--from", "now-400d", "--to", "now"]))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("--from"),
        "days are no duration unit: {e}"
    );
    let e = run(with(&["--from", "now-9000h", "--to", "now"]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(
        e.to_string().contains("1000000"),
        "the limit is stated: {e}"
    );

    let e = run(with(&["--from", "yesterday", "--to", "now"]))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("--from"), "{e}");
    let e = run(with(&[
        "--from",
        "now-1h",
        "--to",
        "now",
        "--interval",
        "100ms",
    ]))
    .await
    .unwrap_err();
    assert!(e.to_string().starts_with("--interval"), "{e}");
}
