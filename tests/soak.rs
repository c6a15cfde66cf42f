//! The soak benchmark (`make soak`; not part of `make test`: `test = false` in Cargo.toml).
//!
//! On the real control plane, with the real Prometheus scraping the Linkerd-format exporter and
//! two real `l3 run` replicas installed by helm: `SOAK_POLICIES` (1,000) LatencyPolicies, each
//! on its own TrafficSplit of three backends whose request mix follows the weights l3 writes,
//! with ±3 % noise. `SOAK_STEADY_SECS` (600) of steady signals, then faults in turn, each
//! followed by `SOAK_FAULT_SECS` (60) to settle and a check of every split's originals:
//! kill -9 the leader; restart kube-apiserver; Prometheus down for 60 s; one backend slowed in
//! 100 splits; an etcd compaction. At the end every policy is deleted and every split must be
//! back at exactly its original weights.
//!
//! The figures (API requests per minute by verb and resource from the audit log, RSS and CPU
//! of the l3 processes from /proc, cycle duration from l3's histogram, takeover time,
//! mismatches) go to `docs/operations.md` (or `SOAK_REPORT`), with the machine, the date and
//! the load average. Speed and memory goals are reported, not asserted; the run fails only on
//! mismatched originals or restores (correctness) or when a step cannot be carried out.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use l3::operator::crd::LatencyPolicy;
use serde_json::{Value, json};
use support::cluster::{self, AuditEvent};
use support::eventually;
use support::exporter::Exporter;
use support::fixture::{APPLIED, FOREIGN, Fixture, ORIGINALS, Setup, backend};
use support::mesh;

/// Relative noise of every backend's rate and latency between scrapes.
const JITTER: f64 = 0.03;
/// Requests per second each split's backends share (by weight).
const SPLIT_RPS: f64 = 100.0;
/// Latency of the three backends of every split, ms.
const BACKEND_MS: [(&str, f64); 3] = [("a", 20.0), ("b", 40.0), ("c", 80.0)];
/// Latency of the slowed backend, ms.
const SLOW_MS: f64 = 400.0;
/// How many splits get a slowed backend (at most all).
const SLOWED_SPLITS: usize = 100;
/// How long Prometheus stays down.
const PROMETHEUS_DOWN: Duration = Duration::from_secs(60);
/// Lease and write timeout of the replicas: the chart's production defaults.
const LEASE: (f64, &str) = (15.0, "--api-timeout=4s");
/// The policies' interval, and l3's status interval (the `--status-interval` default).
const POLICY_INTERVAL_SECS: f64 = 5.0;
const STATUS_INTERVAL_SECS: f64 = 30.0;
/// The largest finite bucket bound of `l3_control_loop_duration_seconds`, seconds.
const CYCLE_BUCKETS_TOP: f64 = 5.0;
/// Concurrent requests while creating or deleting objects.
const PARALLEL: usize = 16;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// What the soak runs.
struct Params {
    policies: usize,
    steady_secs: f64,
    fault_secs: f64,
    scrape_secs: f64,
}

impl Params {
    fn from_env() -> Self {
        Self {
            policies: env_or("SOAK_POLICIES", 1000.0) as usize,
            steady_secs: env_or("SOAK_STEADY_SECS", 600.0),
            fault_secs: env_or("SOAK_FAULT_SECS", 60.0),
            // Linkerd-viz's own Prometheus scrapes every 10 s.
            scrape_secs: env_or("SOAK_SCRAPE_SECS", 10.0),
        }
    }

    /// The query window: l3's automatic rule (four scrapes, at least 10 s).
    fn window_secs(&self) -> u64 {
        l3::algorithm::window::auto_window(self.scrape_secs).ceil() as u64
    }
}

/// Kinds of target the soak puts policies on. HTTPRoutes join here when l3 supports them
/// (their own create / read-weights functions below, and a count of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    TrafficSplit,
}

/// One target and its true original weights (as spelled when created).
struct Target {
    kind: Kind,
    name: String,
    backends: Vec<(String, Value, f64)>,
}

impl Target {
    /// Target `i`: three backends whose weights use one of the three spellings l3 keeps.
    fn split(i: usize) -> Self {
        let weights = match i % 3 {
            0 => [json!(100), json!(200), json!(300)],
            1 => [json!("1"), json!("2"), json!("2")],
            _ => [json!("250m"), json!("250m"), json!("500m")],
        };
        Target {
            kind: Kind::TrafficSplit,
            name: format!("s{i}"),
            backends: BACKEND_MS
                .iter()
                .zip(weights)
                .map(|((b, ms), w)| (format!("s{i}-{b}"), w, *ms))
                .collect(),
        }
    }

    fn originals(&self) -> Vec<(String, Value)> {
        self.backends
            .iter()
            .map(|(s, w, _)| (s.clone(), w.clone()))
            .collect()
    }

    /// The originals as l3's annotation records them: `{service: weight}`.
    fn originals_map(&self) -> Value {
        Value::Object(self.originals().into_iter().collect())
    }
}

/// Create the target and its backends in the exporter (each at its original share).
async fn create_target(client: &kube::Client, exporter: &Exporter, ns: &str, t: &Target) {
    match t.kind {
        Kind::TrafficSplit => {
            let weights: Vec<(&str, Value)> = t
                .backends
                .iter()
                .map(|(s, w, _)| (s.as_str(), w.clone()))
                .collect();
            mesh::create_split(client, ns, &t.name, &weights).await;
        }
    }
    let shares = shares_of(&t.originals());
    for ((svc, _, ms), (_, share)) in t.backends.iter().zip(shares) {
        let mut p = mesh::steady(*ms);
        p.rps = SPLIT_RPS * share;
        exporter.add(ns, svc, 1, p, 100.0);
        exporter.set_jitter(ns, svc, JITTER);
    }
}

/// Shares from weights as spelled, read with l3's own Quantity parser.
fn shares_of(weights: &[(String, Value)]) -> Vec<(String, f64)> {
    let ws: Vec<(String, f64)> = weights
        .iter()
        .map(|(s, w)| {
            let units = l3::operator::trafficsplit::parse_weight(w).map_or(0.0, |(u, _)| u);
            (s.clone(), units)
        })
        .collect();
    let total: f64 = ws.iter().map(|(_, w)| w).sum();
    ws.into_iter()
        .map(|(s, w)| (s, if total > 0.0 { w / total } else { 0.0 }))
        .collect()
}

/// What the mesh saw of the splits' versions: weight moves (by the largest share change) and
/// versions that kept the weights (annotations or status only).
#[derive(Default, Clone)]
struct Moves {
    last: HashMap<String, (String, Vec<(String, f64)>)>,
    /// (time, split, largest share change) of every version whose weights differ.
    moves: Vec<(f64, String, f64)>,
    /// (time, split) of every new version with the same weights.
    same: Vec<(f64, String)>,
}

/// The closed loop for every split of the namespace over one watch: each version sets its
/// backends' RPS in the exporter to their share of [`SPLIT_RPS`], and is recorded in `Moves`.
fn follow_all(
    client: &kube::Client,
    exporter: &Exporter,
    ns: &str,
    moves: Arc<Mutex<Moves>>,
) -> tokio::task::JoinHandle<()> {
    let api = mesh::splits(client, ns);
    let exporter = exporter.clone();
    let ns = ns.to_owned();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(item) = stream.next().await {
            let Ok(obj) = item else { continue };
            let name = obj.name_any();
            if !name.starts_with('s') {
                continue;
            }
            let shares = mesh::shares(&obj);
            for (svc, share) in &shares {
                exporter.update(&ns, svc, |p| p.rps = SPLIT_RPS * share);
            }
            let rv = obj.resource_version().unwrap_or_default();
            let now = cluster::now();
            let mut m = moves.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((last_rv, last_shares)) = m.last.get(&name).cloned()
                && last_rv != rv
            {
                let delta = shares
                    .iter()
                    .zip(&last_shares)
                    .map(|((_, a), (_, b))| (a - b).abs())
                    .fold(0.0, f64::max);
                if shares.len() != last_shares.len() || delta > 1e-12 {
                    m.moves.push((now, name.clone(), delta));
                } else {
                    m.same.push((now, name.clone()));
                }
            }
            m.last.insert(name, (rv, shares));
        }
    })
}

/// A sample of one process: when, RSS bytes, CPU seconds so far.
#[derive(Clone, Copy)]
struct ProcSample {
    at: f64,
    rss: u64,
    cpu_secs: f64,
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ProcSample {
        at: cluster::now(),
        rss: rss_kb * 1024,
        cpu_secs: ticks / hz,
    })
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Samples of every l3 process (by pod name and pid) and of the load average, every 5 s.
#[derive(Default)]
struct Samples {
    procs: BTreeMap<(String, u32), Vec<ProcSample>>,
    load: Vec<(f64, f64)>,
}

/// A phase of the soak: its name and time span (seconds since the epoch).
struct Phase {
    name: String,
    from: f64,
    to: f64,
    /// Splits whose original-weights annotation differs from the truth at the end of it.
    mismatches: Option<usize>,
    note: String,
}

/// A cumulative histogram as `/metrics` shows it: (upper bound, count).
fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, v) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v.trim().parse().ok()?))
        })
        .collect()
}

/// Quantile `q` of the observations between two cumulative histograms, interpolated linearly
/// in its bucket (as `histogram_quantile` does); `None` without observations.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - b)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in &counts {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = c - prev.1;
            return Some(if span > 0.0 {
                prev.0 + (le - prev.0) * (rank - prev.1) / span
            } else {
                le
            });
        }
        prev = (le, c);
    }
    None
}

async fn get_text(url: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}

/// Every split of the soak namespace, by name.
async fn splits_by_name(f: &Fixture) -> HashMap<String, DynamicObject> {
    mesh::splits(&f.admin, &f.ns)
        .list(&ListParams::default())
        .await
        .expect("list splits")
        .items
        .into_iter()
        .map(|o| (o.name_any(), o))
        .collect()
}

/// Splits whose original-weights annotation is missing or differs from the truth.
async fn count_mismatches(f: &Fixture, targets: &[Target]) -> (usize, Vec<String>) {
    let by_name = splits_by_name(f).await;
    let mut bad = Vec::new();
    for t in targets {
        let recorded = by_name
            .get(&t.name)
            .and_then(|o| o.annotations().get(ORIGINALS).cloned());
        let parsed = recorded
            .as_deref()
            .and_then(|a| serde_json::from_str::<Value>(a).ok());
        if parsed.as_ref() != Some(&t.originals_map()) {
            bad.push(format!("{}: {:?}", t.name, recorded));
        }
    }
    (bad.len(), bad)
}

/// Splits that are not back at exactly their original weights, or still carry an annotation.
async fn count_unrestored(f: &Fixture, targets: &[Target]) -> (usize, Vec<String>) {
    let by_name = splits_by_name(f).await;
    let mut bad = Vec::new();
    for t in targets {
        let Some(obj) = by_name.get(&t.name) else {
            bad.push(format!("{}: gone", t.name));
            continue;
        };
        let weights = mesh::raw_weights(obj);
        let left: Vec<&String> = obj
            .annotations()
            .keys()
            .filter(|k| [ORIGINALS, APPLIED, FOREIGN].contains(&k.as_str()))
            .collect();
        if weights != t.originals() || !left.is_empty() {
            bad.push(format!("{}: {weights:?}, annotations {left:?}", t.name));
        }
    }
    (bad.len(), bad)
}

/// Run `f` over `items` with [`PARALLEL`] requests in flight.
async fn parallel<T, F, Fut>(items: impl IntoIterator<Item = T>, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let p = Params::from_env();
    let run_started = cluster::now();
    let mut f = Fixture::new_scraped(
        Setup {
            lease: Some(LEASE),
            ..Setup::new("l3-soak", vec![backend("unused", json!(1), 10.0)])
        },
        p.scrape_secs,
    )
    .await;
    eprintln!(
        "soak: {} policies, steady {} s, settle {} s per fault, scrape {} s, window {} s",
        p.policies,
        p.steady_secs,
        p.fault_secs,
        p.scrape_secs,
        p.window_secs()
    );
    let targets: Vec<Target> = (0..p.policies).map(Target::split).collect();
    let t0 = Instant::now();
    parallel(&targets, |t| create_target(&f.admin, &f.exporter, &f.ns, t)).await;
    eprintln!(
        "soak: {} splits created in {:.0} s",
        targets.len(),
        t0.elapsed().as_secs_f64()
    );
    let moves = Arc::new(Mutex::new(Moves::default()));
    let follower = follow_all(&f.admin, &f.exporter, &f.ns, Arc::clone(&moves));

    f.start_replica(0).await;
    f.start_replica(1).await;
    let pods: Vec<String> = f.replicas.iter().map(|r| r.pod.clone()).collect();

    // Sampling of the l3 processes and the load average, every 5 s, for the whole run.
    let samples = Arc::new(Mutex::new(Samples::default()));
    let pids: Arc<Mutex<Vec<(String, u32)>>> = Arc::new(Mutex::new(
        f.replicas
            .iter()
            .map(|r| (r.pod.clone(), r.pid()))
            .collect(),
    ));
    let sampler = {
        let samples = Arc::clone(&samples);
        let pids = Arc::clone(&pids);
        tokio::spawn(async move {
            loop {
                let now = pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
                {
                    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
                    for (pod, pid) in now {
                        if let Some(x) = proc_sample(pid) {
                            s.procs.entry((pod, pid)).or_default().push(x);
                        }
                    }
                    s.load.push((cluster::now(), loadavg()));
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };

    let create_from = cluster::now();
    let window = format!("{}s", p.window_secs());
    let policies = f.policies();
    parallel(&targets, |t| {
        let policies = policies.clone();
        let ns = f.ns.clone();
        let window = window.clone();
        async move {
            let lp: LatencyPolicy = serde_json::from_value(json!({
                "apiVersion": "l3.dev/v1alpha1",
                "kind": "LatencyPolicy",
                "metadata": {"name": format!("p{}", &t.name[1..]), "namespace": ns},
                "spec": {
                    "targetRef": {"kind": "TrafficSplit", "name": t.name},
                    "interval": format!("{POLICY_INTERVAL_SECS}s"),
                    "queryWindow": window,
                },
            }))
            .expect("policy");
            policies
                .create(&PostParams::default(), &lp)
                .await
                .unwrap_or_else(|e| panic!("create policy for {}: {e}", t.name));
        }
    })
    .await;
    let created = cluster::now();
    // Every split adopted (bounded), then warm-up: the filters leave their start values and the
    // mesh follows the weights, over several query windows.
    let adopt_limit = Duration::from_secs(300 + p.policies as u64 / 2);
    eventually(adopt_limit, Duration::from_secs(5), || async {
        let (n, bad) = count_mismatches(&f, &targets).await;
        if n == 0 {
            Ok(())
        } else {
            Err(format!(
                "{n} of {} splits not adopted (or wrong originals), e.g. {:?}\n{}",
                targets.len(),
                bad.iter().take(3).collect::<Vec<_>>(),
                f.logs()
            ))
        }
    })
    .await;
    let adopted = cluster::now();
    eprintln!(
        "soak: policies created in {:.0} s, all splits adopted {:.0} s later",
        created - create_from,
        adopted - created
    );
    let warmup = (4 * p.window_secs()) as f64;
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;

    let mut phases: Vec<Phase> = vec![Phase {
        name: "adoption and warm-up".into(),
        from: create_from,
        to: cluster::now(),
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!(
            "{} policies created in {:.0} s; every split adopted {:.0} s after the last; {warmup:.0} s warm-up",
            p.policies,
            created - create_from,
            adopted - created
        ),
    }];

    // --- steady ---
    let leader = f.wait_leader().await;
    let leader_pod = f.replicas[leader].pod.clone();
    let metrics_before = get_text(&format!("{}/metrics", f.replicas[leader].metrics))
        .await
        .unwrap_or_default();
    let steady_from = cluster::now();
    tokio::time::sleep(Duration::from_secs_f64(p.steady_secs)).await;
    let steady_to = cluster::now();
    let metrics_after = get_text(&format!("{}/metrics", f.replicas[leader].metrics))
        .await
        .unwrap_or_default();
    let (h0, h1) = (
        histogram(&metrics_before, "l3_control_loop_duration_seconds"),
        histogram(&metrics_after, "l3_control_loop_duration_seconds"),
    );
    let cycles = h1.last().map_or(0.0, |x| x.1) - h0.last().map_or(0.0, |x| x.1);
    let cycle_p50 = quantile(&h0, &h1, 0.5);
    let cycle_p99 = quantile(&h0, &h1, 0.99);
    phases.push(Phase {
        name: "steady".into(),
        from: steady_from,
        to: steady_to,
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!("leader {leader_pod}; {cycles:.0} cycles"),
    });

    // --- fault 1: kill -9 the leader ---
    let leader = f.wait_leader().await;
    let killed_pod = f.replicas[leader].pod.clone();
    let from = cluster::now();
    f.replicas[leader].kill();
    let killed_at = Instant::now();
    let new_holder = eventually(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || async {
            match f.lease_holder().await {
                Some(h) if h != killed_pod => Ok(h),
                h => Err(format!("lease holder {h:?}\n{}", f.logs())),
            }
        },
    )
    .await;
    let lease_takeover = killed_at.elapsed().as_secs_f64();
    // The killed replica comes back as the standby.
    let replacement = f.start_pod(&killed_pod).await;
    pids.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((replacement.pod.clone(), replacement.pid()));
    f.replicas[leader] = replacement;
    tokio::time::sleep(Duration::from_secs_f64(p.fault_secs)).await;
    phases.push(Phase {
        name: "kill -9 the leader".into(),
        from,
        to: cluster::now(),
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!(
            "{killed_pod} killed; {new_holder} held the lease {lease_takeover:.1} s later (lease {} s)",
            LEASE.0
        ),
    });

    // --- fault 2: restart kube-apiserver ---
    let from = cluster::now();
    let t = Instant::now();
    f.cp.restart_apiserver_hard().await;
    let api_down = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(p.fault_secs)).await;
    let running = f
        .replicas
        .iter_mut()
        .map(|r| r.running())
        .filter(|r| *r)
        .count();
    phases.push(Phase {
        name: "restart kube-apiserver".into(),
        from,
        to: cluster::now(),
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!(
            "kill -9 and start again: ready after {api_down:.1} s; {running} of 2 replicas running after"
        ),
    });

    // --- fault 3: Prometheus down for 60 s ---
    let from = cluster::now();
    f.prometheus.stop();
    tokio::time::sleep(PROMETHEUS_DOWN).await;
    let down_to = cluster::now();
    f.prometheus.restart().await;
    tokio::time::sleep(Duration::from_secs_f64(p.fault_secs)).await;
    let down_moves = {
        let m = moves.lock().unwrap_or_else(|e| e.into_inner());
        m.moves
            .iter()
            .filter(|(t, _, _)| *t >= from && *t < down_to)
            .count()
    };
    phases.push(Phase {
        name: "Prometheus down 60 s".into(),
        from,
        to: cluster::now(),
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!("weight moves while it was down: {down_moves}"),
    });

    // --- fault 4: one backend slowed in 100 splits ---
    let slowed: Vec<&Target> = targets.iter().take(SLOWED_SPLITS).collect();
    let share_of_a = |obj: &DynamicObject| mesh::shares(obj).first().map_or(0.0, |x| x.1);
    let mut before = HashMap::new();
    for t in &slowed {
        before.insert(t.name.clone(), share_of_a(&f.split_named(&t.name).await));
    }
    let from = cluster::now();
    for t in &slowed {
        f.set_latency(&t.backends[0].0, SLOW_MS);
    }
    tokio::time::sleep(Duration::from_secs_f64(
        p.fault_secs.max(3.0 * p.window_secs() as f64),
    ))
    .await;
    let mut reacted = 0;
    for t in &slowed {
        if share_of_a(&f.split_named(&t.name).await) < before[&t.name] * 0.5 {
            reacted += 1;
        }
    }
    phases.push(Phase {
        name: format!("one backend slowed in {} splits", slowed.len()),
        from,
        to: cluster::now(),
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!(
            "backend a {} ms -> {SLOW_MS} ms; its share fell below half of what it was in {reacted} of {} splits",
            BACKEND_MS[0].1,
            slowed.len()
        ),
    });

    // --- fault 5: etcd compaction ---
    let from = cluster::now();
    let rev = f.cp.compact_etcd().await;
    tokio::time::sleep(Duration::from_secs_f64(p.fault_secs)).await;
    phases.push(Phase {
        name: "etcd compaction".into(),
        from,
        to: cluster::now(),
        mismatches: Some(count_mismatches(&f, &targets).await.0),
        note: format!("compacted to revision {rev}"),
    });

    // --- the end: delete every policy; every split back at exactly its originals ---
    let from = cluster::now();
    let names: Vec<String> = f
        .policies()
        .list(&ListParams::default())
        .await
        .expect("list policies")
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    parallel(names, |n| {
        let policies = policies.clone();
        async move {
            policies
                .delete(&n, &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("delete {n}: {e}"));
        }
    })
    .await;
    eventually(adopt_limit, Duration::from_secs(2), || async {
        let left = f
            .policies()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} policies left\n{}", f.logs()))
        }
    })
    .await;
    let deleted_in = cluster::now() - from;
    let (unrestored, unrestored_list) = count_unrestored(&f, &targets).await;
    phases.push(Phase {
        name: "delete every policy".into(),
        from,
        to: cluster::now(),
        mismatches: Some(unrestored),
        note: format!(
            "all {} policies gone {deleted_in:.0} s after the deletes; mismatches = splits not at exactly their original weights or still annotated",
            p.policies
        ),
    });
    follower.abort();
    sampler.abort();

    // --- figures ---
    let audit: Vec<AuditEvent> = f.l3_audit();
    let query_failures = query_failures(f.replicas.iter().map(|r| r.log.as_path()));
    let moves = moves.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let report = Report {
        p: &p,
        run_started,
        pods: &pods,
        phases: &phases,
        audit: &audit,
        query_failures: &query_failures,
        moves: &moves,
        samples: &samples,
        steady: (steady_from, steady_to),
        leader_pod: &leader_pod,
        cycles,
        cycle_p50,
        cycle_p99,
        lease_takeover,
        killed_at: from_instant(killed_at),
        killed_pod: &killed_pod,
        new_holder: &new_holder,
    }
    .render();
    let path = std::env::var("SOAK_REPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| cluster::repo().join("docs/operations.md"));
    std::fs::write(&path, &report).expect("write the report");
    eprintln!("{report}\nsoak: report written to {}", path.display());

    let total: usize = phases.iter().filter_map(|ph| ph.mismatches).sum();
    assert_eq!(
        total,
        0,
        "{total} mismatched originals or restores; unrestored: {:?}",
        unrestored_list.iter().take(10).collect::<Vec<_>>()
    );
}

/// When the replicas logged a failed Prometheus query (seconds since the epoch), from their
/// JSON logs (the killed replica's process and its successor share a log).
fn query_failures<'a>(logs: impl Iterator<Item = &'a std::path::Path>) -> Vec<f64> {
    let mut logs: Vec<&std::path::Path> = logs.collect();
    logs.sort();
    logs.dedup();
    logs.iter()
        .flat_map(|l| {
            let text = std::fs::read_to_string(l).unwrap_or_default();
            text.lines()
                .filter(|line| line.contains("\"prometheus query failed\""))
                .filter_map(|line| {
                    let v: Value = serde_json::from_str(line).ok()?;
                    let ts = v["timestamp"]
                        .as_str()?
                        .parse::<k8s_openapi::jiff::Timestamp>()
                        .ok()?;
                    Some(ts.as_millisecond() as f64 / 1000.0)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Seconds since the epoch of an `Instant` in the past.
fn from_instant(t: Instant) -> f64 {
    cluster::now() - t.elapsed().as_secs_f64()
}

/// Everything the report is made of.
struct Report<'a> {
    p: &'a Params,
    run_started: f64,
    pods: &'a [String],
    phases: &'a [Phase],
    audit: &'a [AuditEvent],
    /// When a replica logged a failed Prometheus query.
    query_failures: &'a [f64],
    moves: &'a Moves,
    samples: &'a Samples,
    steady: (f64, f64),
    leader_pod: &'a str,
    cycles: f64,
    cycle_p50: Option<f64>,
    cycle_p99: Option<f64>,
    lease_takeover: f64,
    killed_at: f64,
    killed_pod: &'a str,
    new_holder: &'a str,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn utc(t: f64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond((t * 1000.0) as i64)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn mib(b: f64) -> String {
    format!("{:.1}", b / 1024.0 / 1024.0)
}

impl Report<'_> {
    fn in_window(&self, from: f64, to: f64) -> impl Iterator<Item = &AuditEvent> {
        self.audit.iter().filter(move |e| e.at >= from && e.at < to)
    }

    /// The first process of `pod` sampled in the window.
    fn proc_figures(&self, pod: &str, from: f64, to: f64) -> Option<(f64, f64, f64)> {
        self.samples
            .procs
            .iter()
            .filter(|((p, _), _)| p == pod)
            .find_map(|((_, pid), _)| self.pid_figures(pod, *pid, from, to))
    }

    /// (mean RSS, peak RSS, CPU % of one core) of one process over a window.
    fn pid_figures(&self, pod: &str, pid: u32, from: f64, to: f64) -> Option<(f64, f64, f64)> {
        let xs: Vec<ProcSample> = self
            .samples
            .procs
            .get(&(pod.to_owned(), pid))?
            .iter()
            .copied()
            .filter(|s| s.at >= from && s.at < to)
            .collect();
        let (first, last) = (xs.first()?, xs.last()?);
        let mean = xs.iter().map(|s| s.rss as f64).sum::<f64>() / xs.len() as f64;
        let peak = xs.iter().map(|s| s.rss).max()? as f64;
        let cpu = if last.at > first.at && last.cpu_secs >= first.cpu_secs {
            100.0 * (last.cpu_secs - first.cpu_secs) / (last.at - first.at)
        } else {
            f64::NAN
        };
        Some((mean, peak, cpu))
    }

    fn load(&self, from: f64, to: f64) -> String {
        let xs: Vec<f64> = self
            .samples
            .load
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, l)| *l)
            .collect();
        if xs.is_empty() {
            return "n/a".into();
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let max = xs.iter().copied().fold(0.0, f64::max);
        format!("{mean:.1} (max {max:.1})")
    }

    fn render(&self) -> String {
        let p = self.p;
        let (s0, s1) = self.steady;
        let minutes = (s1 - s0) / 60.0;
        let n = p.policies as f64;
        let end = self.phases.last().map_or(s1, |ph| ph.to);
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# Operations: l3 at scale\n\n\
             Generated by `make soak` (tests/soak.rs); do not edit by hand. Run of {} to {}, \
             l3 binary {}, on {}.\n\n\
             The machine was shared with other builds during the run: the 1-minute load average \
             is given for every phase below (2 cores: a load above 2 means l3, the control plane, \
             Prometheus and the harness were queueing for CPU), so the CPU and cycle figures are \
             upper bounds of what l3 needs on a machine of its own.\n",
            utc(self.run_started),
            utc(end),
            std::env::var("L3_BIN").map_or("(debug build by cargo test)".into(), |b| format!(
                "{b} ({})",
                if b.contains("/release/") {
                    "release build"
                } else {
                    "as given"
                }
            )),
            machine()
        );
        let _ = writeln!(
            o,
            "## Set-up\n\n\
             - {} LatencyPolicies, each on its own SMI TrafficSplit of 3 backends (weights as \
               integers, quantity strings and thousandths, a third each); policy interval {} s, \
               query window {} s, l3's status interval {} s.\n\
             - The real control plane (etcd, kube-apiserver with an audit log, \
               kube-controller-manager), l3 installed by its helm chart, two `l3 run` replicas \
               (lease {} s, write timeout 4 s), the real Prometheus scraping a Linkerd-format \
               exporter every {} s ({} backend series families), each split's request mix \
               following the weights l3 writes, ±{:.0} % noise on every backend's rate and latency \
               between scrapes.\n\
             - Steady for {:.0} s, then faults in turn, each followed by {:.0} s to settle.\n\
             - Failed Prometheus queries: both replicas' `prometheus query failed` log lines (the \
               standby runs the same cycles, so its filters stay warm); l3's default query \
               timeout (2 s) was kept.\n",
            p.policies,
            POLICY_INTERVAL_SECS,
            p.window_secs(),
            STATUS_INTERVAL_SECS,
            LEASE.0,
            p.scrape_secs,
            3 * p.policies,
            JITTER * 100.0,
            p.steady_secs,
            p.fault_secs
        );

        // Summary against the goals.
        let leader = self.proc_figures(self.leader_pod, s0, s1);
        let standby = self
            .pods
            .iter()
            .find(|x| x.as_str() != self.leader_pod)
            .and_then(|pod| self.proc_figures(pod, s0, s1));
        let peak_rss = self
            .samples
            .procs
            .values()
            .flat_map(|v| v.iter().map(|s| s.rss))
            .max()
            .unwrap_or(0) as f64;
        let steady_events: Vec<&AuditEvent> = self.in_window(s0, s1).collect();
        let split_writes = steady_events
            .iter()
            .filter(|e| e.is_write() && e.resource == "trafficsplits")
            .count();
        let mut status_per_policy: BTreeMap<&str, usize> = BTreeMap::new();
        for e in steady_events.iter().filter(|e| {
            e.is_write() && e.resource == "latencypolicies" && e.subresource == "status"
        }) {
            *status_per_policy.entry(e.name.as_str()).or_default() += 1;
        }
        let status_total: usize = status_per_policy.values().sum();
        let status_max = status_per_policy.values().copied().max().unwrap_or(0) as f64 / minutes;
        // A weights write is reported in the status at once (lastWeightUpdate); the others are
        // figure refreshes, which the status interval bounds.
        let split_write_times: Vec<(&str, f64)> = steady_events
            .iter()
            .filter(|e| e.is_write() && e.resource == "trafficsplits")
            .map(|e| (e.name.as_str(), e.at))
            .collect();
        let mut refreshes_per_policy: BTreeMap<&str, usize> = BTreeMap::new();
        for e in steady_events.iter().filter(|e| {
            e.is_write() && e.resource == "latencypolicies" && e.subresource == "status"
        }) {
            let split = format!("s{}", e.name.trim_start_matches('p'));
            let with_write = split_write_times
                .iter()
                .any(|(n, t)| *n == split && (t - e.at).abs() <= 3.0);
            if !with_write {
                *refreshes_per_policy.entry(e.name.as_str()).or_default() += 1;
            }
        }
        let refreshes: usize = refreshes_per_policy.values().sum();
        let refresh_max =
            refreshes_per_policy.values().copied().max().unwrap_or(0) as f64 / minutes;
        let status_limit = 60.0 / STATUS_INTERVAL_SECS;
        let steady_moves: Vec<&(f64, String, f64)> = self
            .moves
            .moves
            .iter()
            .filter(|(t, _, _)| *t >= s0 && *t < s1)
            .collect();
        let small_moves = steady_moves.iter().filter(|m| m.2 < 0.01 - 1e-9).count();
        let same = self
            .moves
            .same
            .iter()
            .filter(|(t, _)| *t >= s0 && *t < s1)
            .count();
        let first_write_after_kill = self
            .audit
            .iter()
            .filter(|e| {
                e.at >= self.killed_at
                    && e.is_write()
                    && e.pod.as_deref() == Some(self.new_holder)
                    && e.resource != "leases"
            })
            .map(|e| e.at - self.killed_at)
            .fold(f64::INFINITY, f64::min);
        let mismatches: usize = self.phases.iter().filter_map(|ph| ph.mismatches).sum();
        let yes = |ok: bool| if ok { "met" } else { "**not met**" };
        // A quantile in the +Inf bucket is only known to be above the last bound.
        let last_bound = CYCLE_BUCKETS_TOP;
        let fmt_opt = |v: Option<f64>| match v {
            None => "n/a".into(),
            Some(v) if v >= last_bound => format!("> {last_bound} s (beyond the last bucket)"),
            Some(v) => format!("{v:.3} s"),
        };
        let _ = writeln!(o, "## Summary against the goals\n");
        let _ = writeln!(o, "| Figure | Measured | Goal | |\n|---|---|---|---|");
        if let Some((mean, peak, cpu)) = leader {
            let _ = writeln!(
                o,
                "| Leader RSS, steady (mean / peak) | {} / {} MiB | < 64 MB | {} |",
                mib(mean),
                mib(peak),
                yes(peak < 64e6)
            );
            let _ = writeln!(
                o,
                "| Leader CPU, steady | {cpu:.2} % of one core | < 5 % | {} |",
                yes(cpu < 5.0)
            );
        }
        if let Some((mean, _, cpu)) = standby {
            let _ = writeln!(
                o,
                "| Standby RSS / CPU, steady | {} MiB / {cpu:.2} % | | |",
                mib(mean)
            );
        }
        let _ = writeln!(
            o,
            "| Peak RSS of any l3 process, whole run | {} MiB | < 64 MB | {} |",
            mib(peak_rss),
            yes(peak_rss < 64e6)
        );
        let _ = writeln!(
            o,
            "| Cycle duration p50 / p99, steady ({:.0} cycles, from `l3_control_loop_duration_seconds`) | {} / {} | < 1 s | {} |",
            self.cycles,
            fmt_opt(self.cycle_p50),
            fmt_opt(self.cycle_p99),
            yes(self.cycle_p99.is_some_and(|v| v < 1.0))
        );
        let _ = writeln!(
            o,
            "| Split writes, steady | {:.2} per policy per minute ({split_writes} in {minutes:.1} min); of the weight changes the mesh saw, {small_moves} of {} moved a share by less than 1 point | only on real moves | {} |",
            split_writes as f64 / n / minutes,
            steady_moves.len(),
            yes(small_moves == 0)
        );
        let _ = writeln!(
            o,
            "| Status writes, steady, all | {:.2} per policy per minute on average, {status_max:.2} at most | | |",
            status_total as f64 / n / minutes,
        );
        let _ = writeln!(
            o,
            "| Status writes, steady, without a weights write within 3 s (figure refreshes) | {:.2} per policy per minute on average, {refresh_max:.2} at most | at most {status_limit:.0} (once per {STATUS_INTERVAL_SECS} s) | {} |",
            refreshes as f64 / n / minutes,
            yes(refresh_max <= status_limit + 1.0 / minutes)
        );
        let _ = writeln!(
            o,
            "| Takeover after kill -9 of the leader | lease {:.1} s, first write {} | within the lease ({} s) plus a cycle | {} |",
            self.lease_takeover,
            if first_write_after_kill.is_finite() {
                format!("{first_write_after_kill:.1} s")
            } else {
                "none seen".into()
            },
            LEASE.0,
            yes(self.lease_takeover <= LEASE.0 + POLICY_INTERVAL_SECS)
        );
        let _ = writeln!(
            o,
            "| Mismatched originals after faults, unrestored splits at the end | {mismatches} | 0 | {} |",
            yes(mismatches == 0)
        );
        let _ = writeln!(
            o,
            "\nSplit versions that kept their weights during the steady phase (annotation-only \
             writes): {same}. Killed replica: {}.\n",
            self.killed_pod
        );

        // Phases.
        let _ = writeln!(
            o,
            "## Phases\n\n| Phase | Start (UTC) | Length | Load average | l3 writes/min (splits, status) | Failed Prometheus queries | Mismatches | Notes |\n|---|---|---|---|---|---|---|---|"
        );
        for ph in self.phases {
            let m = (ph.to - ph.from) / 60.0;
            let ev: Vec<&AuditEvent> = self.in_window(ph.from, ph.to).collect();
            let w = |res: &str, sub: &str| {
                ev.iter()
                    .filter(|e| e.is_write() && e.resource == res && e.subresource == sub)
                    .count() as f64
                    / m
            };
            let failed = self
                .query_failures
                .iter()
                .filter(|t| **t >= ph.from && **t < ph.to)
                .count();
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} s | {} | {:.1}, {:.1} | {failed} | {} | {} |",
                ph.name,
                utc(ph.from),
                ph.to - ph.from,
                self.load(ph.from, ph.to),
                w("trafficsplits", ""),
                w("latencypolicies", "status"),
                ph.mismatches.map_or("-".into(), |x| x.to_string()),
                ph.note
            );
        }

        // API requests by verb and resource.
        let _ = writeln!(
            o,
            "\n## API requests of l3 per minute, by verb and resource (audit log)\n\n\
             Both replicas' requests, from the API server's audit log (user \
             `system:serviceaccount:l3-soak:…`). Watches count once when opened.\n"
        );
        let mut header = "| Verb resource |".to_owned();
        let mut rule = "|---|".to_owned();
        let mut columns: Vec<BTreeMap<String, usize>> = Vec::new();
        let mut lengths = Vec::new();
        for ph in self.phases {
            let _ = write!(header, " {} |", ph.name);
            rule.push_str("---|");
            columns.push(cluster::count_by_verb_resource(
                self.in_window(ph.from, ph.to),
            ));
            lengths.push((ph.to - ph.from) / 60.0);
        }
        let _ = writeln!(o, "{header}\n{rule}");
        let mut keys: Vec<&String> = columns.iter().flat_map(|c| c.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let label = if k.ends_with(' ') {
                format!("{k}(non-resource URL)")
            } else {
                k.clone()
            };
            let mut row = format!("| {label} |");
            for (c, m) in columns.iter().zip(&lengths) {
                let _ = write!(row, " {:.1} |", c.get(k).copied().unwrap_or(0) as f64 / m);
            }
            let _ = writeln!(o, "{row}");
        }

        // Processes.
        let _ = writeln!(
            o,
            "\n## l3 processes (from /proc, sampled every 5 s)\n\n| Process | Phase | RSS mean / peak (MiB) | CPU (% of one core) |\n|---|---|---|---|"
        );
        for (pod, pid) in self.samples.procs.keys() {
            for ph in self.phases {
                if let Some((mean, peak, cpu)) = self.pid_figures(pod, *pid, ph.from, ph.to) {
                    let _ = writeln!(
                        o,
                        "| {pod} (pid {pid}) | {} | {} / {} | {cpu:.2} |",
                        ph.name,
                        mib(mean),
                        mib(peak)
                    );
                }
            }
        }
        o
    }
}
