//! One control cycle of the operator's engine (plan → batched fetch from a canned source →
//! filter update, L3 weights, safety limits, status and metrics) for 1,000 and 10,000
//! policies of 3 backends each, in steady state; and the memory the engine keeps per backend.
//!
//! Targets: < 50 ms and < 500 ms per cycle; < 2 KB of state per backend. API writes are not
//! part of the cycle measured here (in steady state there are none).
//!
//! Run: `make bench` or `cargo bench --bench operator`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use l3::operator::crd::{FINALIZER, LatencyPolicy, LatencyPolicySpec};
use l3::operator::engine::{Engine, Key};
use l3::operator::metrics::Metrics;
use l3::operator::testing::{FixedSource, signals};
use l3::operator::trafficsplit::{self, SplitVersion};
use l3::source::SignalSource;
use serde_json::json;

/// Counts live heap bytes, to measure what the engine keeps.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BACKENDS: usize = 3;
const TARGET_BYTES_PER_BACKEND: f64 = 2048.0;

fn inputs(n: usize) -> (Vec<Arc<LatencyPolicy>>, HashMap<Key, Arc<DynamicObject>>) {
    let mut policies = Vec::with_capacity(n);
    let mut splits = HashMap::with_capacity(n);
    for i in 0..n {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let mut p = LatencyPolicy::new(&name, LatencyPolicySpec::for_split(&name));
        p.metadata.namespace = Some(ns.clone());
        p.metadata.generation = Some(1);
        p.metadata.finalizers = Some(vec![FINALIZER.into()]);
        p.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        policies.push(Arc::new(p));
        let backends: Vec<(String, serde_json::Value)> = (0..BACKENDS)
            .map(|b| (format!("{name}-c{b}"), json!(333 + u32::from(b == 0))))
            .collect();
        let refs: Vec<(&str, serde_json::Value)> = backends
            .iter()
            .map(|(s, w)| (s.as_str(), w.clone()))
            .collect();
        splits.insert(
            (ns.clone(), name.clone()),
            Arc::new(trafficsplit::object(
                SplitVersion::V1alpha2,
                &ns,
                &name,
                &refs,
            )),
        );
    }
    (policies, splits)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(rt: &tokio::runtime::Runtime, n: usize, runs: usize, target_ms: f64) -> bool {
    let (policies, splits) = inputs(n);
    // Identical backends: the split is already right, so steady state writes nothing.
    let source = FixedSource::new(signals(0.05, 1.0, 100.0, 5.0));
    let before = LIVE.load(Ordering::Relaxed);
    let registry = prometheus::Registry::new();
    let mut engine = Engine::new(Metrics::new(&registry).expect("metrics register"));
    let mut t = 1_800_000_000.0;
    let mut writes = 0;
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    let mut cycle = |engine: &mut Engine, t: f64| {
        let a = Instant::now();
        let plan = engine.plan(t, &policies, &splits);
        assert_eq!(plan.len(), n, "every policy is due");
        let b = Instant::now();
        let snap = rt.block_on(source.fetch(&plan.request));
        let c = Instant::now();
        let decisions = engine.decide(t, plan, &snap);
        let writes = decisions.iter().filter(|d| d.write.is_some()).count();
        drop(decisions);
        let d = Instant::now();
        phases[0].push((b - a).as_secs_f64() * 1000.0);
        phases[1].push((c - b).as_secs_f64() * 1000.0);
        phases[2].push((d - c).as_secs_f64() * 1000.0);
        writes
    };
    // Warm up: filters converge, series exist.
    for _ in 0..10 {
        writes = cycle(&mut engine, t);
        t += 5.0;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        writes = cycle(&mut engine, t);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        t += 5.0;
    }
    let [plan_ms, fetch_ms, decide_ms] = phases.map(median);
    println!(
        "  phases (median over all cycles): plan {plan_ms:.1} ms, canned fetch {fetch_ms:.1} ms, decide {decide_ms:.1} ms"
    );
    let live = (LIVE.load(Ordering::Relaxed) - before) as f64;
    let per_backend = live / (n * BACKENDS) as f64;
    let estimate = engine.state_bytes() as f64 / (n * BACKENDS) as f64;
    let med = median(times.clone());
    let ok = med < target_ms && per_backend < TARGET_BYTES_PER_BACKEND;
    println!(
        "operator cycle, {n} policies x {BACKENDS} backends: median {med:.1} ms (min {:.1}, max {:.1}, {runs} runs; target < {target_ms} ms), writes in steady state: {writes}; engine + metrics heap {per_backend:.0} B/backend (counting allocator), state estimate {estimate:.0} B/backend (target < {TARGET_BYTES_PER_BACKEND} B) {}",
        times.iter().copied().fold(f64::INFINITY, f64::min),
        times.iter().copied().fold(0.0, f64::max),
        if ok { "OK" } else { "MISSED" }
    );
    drop(engine);
    ok
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let a = bench(&rt, 1_000, 21, 50.0);
    let b = bench(&rt, 10_000, 11, 500.0);
    if !(a && b) {
        eprintln!("operator benchmark: a target was missed");
        std::process::exit(1);
    }
}
