//! The discrete-event engine: Poisson clients, weighted routing, WAN round trips, replicas with
//! finite concurrency and FIFO queues, retries, and the scrape/control ticks that feed a policy.
//!
//! One binary heap of events ordered by time and then by scheduling order, and one seeded random
//! stream per model component, so a run is a pure function of (scenario, policy, seed).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::Result;
use super::observe::{self, Counters, Scrape};
use super::policy::{Policy, PolicyKind};
use super::rng::Rng;
use super::scenario::Scenario;
use crate::algorithm::c3::Z_P99;

/// Longest measured run, seconds (30 days): bounds the memory of the over-time series.
pub const MAX_DURATION_SECS: f64 = 30.0 * 86_400.0;

/// Width of the windows of the over-time series (p99, shares), seconds.
pub const TIMELINE_WINDOW_SECS: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
struct Request {
    group: u32,
    backend: u32,
    attempt: u32,
    success: bool,
    /// When the user's request first left the client (retries keep it).
    user_start: f64,
    /// When this attempt left the client.
    sent: f64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Arrival { group: u32 },
    AtBackend(Request),
    Complete { replica: u32, req: Request },
    Response(Request),
    Scrape,
    Control,
}

#[derive(Debug)]
struct Event {
    t: f64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // Reversed: BinaryHeap is a max-heap and the earliest event must come out first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then_with(|| o.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Default)]
struct Replica {
    busy: u32,
    queue: VecDeque<Request>,
}

struct BackendSim {
    cluster: usize,
    concurrency: u32,
    replicas: Vec<Replica>,
    rng: Rng,
}

struct Group {
    cluster: usize,
    max_retries: u32,
    rate_max: f64,
    arrivals: Rng,
    routing: Rng,
    /// Cumulative weights for the routing draw.
    cumulative: Vec<f64>,
    counters: Vec<Counters>,
    scrapes: Vec<Scrape>,
    policy: Box<dyn Policy + Send>,
}

/// One window of the over-time series.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Start of the window, seconds.
    pub t: f64,
    /// p99 of the user requests that started in it, ms (NaN if none).
    pub p99_ms: f64,
    /// Share of the attempts sent to each backend in it.
    pub shares: Vec<f64>,
}

/// What one run of one policy measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The policy.
    pub policy: PolicyKind,
    /// End-to-end latency of every measured user request (retries included), ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// Measured user requests that finally succeeded.
    pub successes: u64,
    /// Attempts sent to each backend during the measurement.
    pub attempts: Vec<u64>,
    /// Over-time series.
    pub timeline: Vec<Window>,
}

impl RunResult {
    /// Measured user requests.
    pub fn requests(&self) -> u64 {
        self.latencies_ms.len() as u64
    }

    /// Nearest-rank quantile of the end-to-end latency, ms (NaN without requests).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        nearest_rank(&self.latencies_ms, q)
    }

    /// Fraction of user requests that succeeded (NaN without requests).
    pub fn success_rate(&self) -> f64 {
        self.successes as f64 / self.latencies_ms.len() as f64
    }
}

/// Nearest-rank quantile of sorted values.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Sim<'a> {
    sc: &'a Scenario,
    heap: BinaryHeap<Event>,
    seq: u64,
    backends: Vec<BackendSim>,
    groups: Vec<Group>,
    latencies_ms: Vec<f64>,
    successes: u64,
    attempts: Vec<u64>,
    win_latencies: Vec<Vec<f64>>,
    win_attempts: Vec<Vec<u64>>,
    duration: f64,
}

/// Runs `policy` on the scenario for `duration` seconds (the scenario's if `None`) with `seed`;
/// `progress` is told the simulated time after every control tick.
pub fn run(
    sc: &Scenario,
    policy: PolicyKind,
    seed: u64,
    duration: Option<f64>,
    progress: &mut dyn FnMut(f64),
) -> Result<RunResult> {
    // Fields are public, so a scenario built in code may never have been validated.
    sc.validate()?;
    let duration = duration.unwrap_or(sc.duration);
    if !(duration.is_finite() && duration > 0.0 && duration <= MAX_DURATION_SECS) {
        return Err(super::Error::Flag {
            flag: "--duration",
            message: format!(
                "is {duration} s, expected more than 0 and at most {MAX_DURATION_SECS} s"
            ),
        });
    }
    let names: Vec<String> = sc.backends.iter().map(|b| b.name.clone()).collect();
    let nb = sc.backends.len();
    let backends = sc
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| BackendSim {
            cluster: sc.cluster_index(&b.cluster).unwrap_or(0),
            concurrency: b.concurrency,
            replicas: (0..b.replicas).map(|_| Replica::default()).collect(),
            rng: Rng::new(seed, 3000 + i as u64),
        })
        .collect();
    let mut groups = Vec::with_capacity(sc.clients.len());
    for (i, c) in sc.clients.iter().enumerate() {
        groups.push(Group {
            cluster: sc.cluster_index(&c.cluster).unwrap_or(0),
            max_retries: c.max_retries,
            rate_max: c.rps.max(),
            arrivals: Rng::new(seed, 1000 + i as u64),
            routing: Rng::new(seed, 2000 + i as u64),
            cumulative: (1..=nb).map(|k| k as f64).collect(),
            counters: vec![Counters::default(); nb],
            scrapes: Vec::new(),
            policy: policy.build(&names)?,
        });
    }
    let windows = (duration / TIMELINE_WINDOW_SECS).ceil().max(1.0) as usize;
    let mut sim = Sim {
        sc,
        heap: BinaryHeap::new(),
        seq: 0,
        backends,
        groups,
        latencies_ms: Vec::new(),
        successes: 0,
        attempts: vec![0; nb],
        win_latencies: vec![Vec::new(); windows],
        win_attempts: vec![vec![0; nb]; windows],
        duration,
    };
    let start = -sc.warmup;
    for g in 0..sim.groups.len() {
        sim.schedule_arrival(g, start);
    }
    let first_tick = |interval: f64| (start / interval).ceil() * interval;
    sim.push(first_tick(sc.scrape_interval), Kind::Scrape);
    sim.push(first_tick(sc.control_interval), Kind::Control);
    while let Some(ev) = sim.heap.pop() {
        match ev.kind {
            Kind::Arrival { group } => sim.on_arrival(ev.t, group as usize),
            Kind::AtBackend(req) => sim.on_at_backend(ev.t, req),
            Kind::Complete { replica, req } => sim.on_complete(ev.t, replica as usize, req),
            Kind::Response(req) => sim.on_response(ev.t, req),
            Kind::Scrape => sim.on_scrape(ev.t),
            Kind::Control => {
                sim.on_control(ev.t)?;
                progress(ev.t.max(0.0));
            }
        }
    }
    let mut latencies_ms = sim.latencies_ms;
    latencies_ms.sort_by(f64::total_cmp);
    let timeline = sim
        .win_latencies
        .into_iter()
        .zip(sim.win_attempts)
        .enumerate()
        .map(|(i, (mut lat, att))| {
            lat.sort_by(f64::total_cmp);
            let total: u64 = att.iter().sum();
            Window {
                t: i as f64 * TIMELINE_WINDOW_SECS,
                p99_ms: nearest_rank(&lat, 0.99),
                shares: att
                    .iter()
                    .map(|&a| {
                        if total > 0 {
                            a as f64 / total as f64
                        } else {
                            f64::NAN
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(RunResult {
        policy,
        latencies_ms,
        successes: sim.successes,
        attempts: sim.attempts,
        timeline,
    })
}

impl Sim<'_> {
    fn push(&mut self, t: f64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Event {
            t,
            seq: self.seq,
            kind,
        });
    }

    /// Next candidate arrival of a non-homogeneous Poisson process by thinning against the
    /// series' maximum rate.
    fn schedule_arrival(&mut self, g: usize, now: f64) {
        let rate = self.groups[g].rate_max;
        if rate <= 0.0 {
            return;
        }
        let t = now + self.groups[g].arrivals.exponential(rate);
        if t < self.duration {
            self.push(t, Kind::Arrival { group: g as u32 });
        }
    }

    fn window(&self, t: f64) -> Option<usize> {
        if t < 0.0 || t >= self.duration {
            return None;
        }
        Some(((t / TIMELINE_WINDOW_SECS) as usize).min(self.win_latencies.len() - 1))
    }

    fn on_arrival(&mut self, now: f64, g: usize) {
        self.schedule_arrival(g, now);
        let rate = self.sc.clients[g].rps.at(now);
        let group = &mut self.groups[g];
        if group.arrivals.uniform() * group.rate_max >= rate {
            return;
        }
        self.dispatch(now, g, now, 0);
    }

    fn dispatch(&mut self, now: f64, g: usize, user_start: f64, attempt: u32) {
        let group = &mut self.groups[g];
        let total = group.cumulative.last().copied().unwrap_or(0.0);
        let x = group.routing.uniform() * total;
        let b = group
            .cumulative
            .partition_point(|&c| c <= x)
            .min(self.backends.len() - 1);
        group.counters[b].on_request();
        let rtt = self.sc.rtt_ms[group.cluster][self.backends[b].cluster] / 1000.0;
        if user_start >= 0.0 {
            self.attempts[b] += 1;
            if let Some(w) = self.window(now) {
                self.win_attempts[w][b] += 1;
            }
        }
        let req = Request {
            group: g as u32,
            backend: b as u32,
            attempt,
            success: true,
            user_start,
            sent: now,
        };
        self.push(now + rtt / 2.0, Kind::AtBackend(req));
    }

    fn on_at_backend(&mut self, now: f64, mut req: Request) {
        let b = req.backend as usize;
        let spec = &self.sc.backends[b];
        let p = spec.success.at(now);
        let be = &mut self.backends[b];
        req.success = p >= 1.0 || be.rng.uniform() < p;
        // Join the replica with the fewest outstanding requests (Linkerd balances inside a
        // cluster by load); ties go to the lowest index.
        let (r, _) = be
            .replicas
            .iter()
            .enumerate()
            .min_by_key(|(_, rep)| rep.busy as usize + rep.queue.len())
            .unwrap_or((0, &be.replicas[0]));
        if be.replicas[r].busy < be.concurrency {
            be.replicas[r].busy += 1;
            self.start_service(now, r, req);
        } else {
            be.replicas[r].queue.push_back(req);
        }
    }

    fn start_service(&mut self, now: f64, replica: usize, req: Request) {
        let b = req.backend as usize;
        let spec = &self.sc.backends[b];
        let service_ms = match (req.success, spec.failure_latency_ms) {
            (false, Some(f)) => f,
            _ => {
                let p50 = spec.p50_ms.at(now);
                let p99 = spec.p99_ms.at(now).max(p50);
                let sigma = (p99.ln() - p50.ln()) / Z_P99;
                let cap = p99 * spec.tail_cap;
                self.backends[b].rng.lognormal(p50.ln(), sigma).min(cap)
            }
        };
        self.push(
            now + service_ms / 1000.0,
            Kind::Complete {
                replica: replica as u32,
                req,
            },
        );
    }

    fn on_complete(&mut self, now: f64, replica: usize, req: Request) {
        let b = req.backend as usize;
        let rep = &mut self.backends[b].replicas[replica];
        if let Some(next) = rep.queue.pop_front() {
            self.start_service(now, replica, next);
        } else {
            rep.busy -= 1;
        }
        let g = req.group as usize;
        let rtt = self.sc.rtt_ms[self.groups[g].cluster][self.backends[b].cluster] / 1000.0;
        self.push(now + rtt / 2.0, Kind::Response(req));
    }

    fn on_response(&mut self, now: f64, req: Request) {
        let g = req.group as usize;
        let b = req.backend as usize;
        self.groups[g].counters[b].on_response(req.success, (now - req.sent) * 1000.0);
        if !req.success && req.attempt < self.groups[g].max_retries {
            self.dispatch(now, g, req.user_start, req.attempt + 1);
            return;
        }
        if req.user_start >= 0.0 {
            let ms = (now - req.user_start) * 1000.0;
            self.latencies_ms.push(ms);
            if req.success {
                self.successes += 1;
            }
            if let Some(w) = self.window(req.user_start) {
                self.win_latencies[w].push(ms);
            }
        }
    }

    fn on_scrape(&mut self, now: f64) {
        let keep_after = now - self.sc.query_window - self.sc.scrape_interval;
        for g in &mut self.groups {
            g.scrapes.retain(|s| s.t > keep_after);
            g.scrapes.push(Scrape::take(now, &g.counters));
        }
        let next = now + self.sc.scrape_interval;
        if next < self.duration {
            self.push(next, Kind::Scrape);
        }
    }

    fn on_control(&mut self, now: f64) -> Result<()> {
        let nb = self.backends.len();
        for g in &mut self.groups {
            let samples = observe::query(&g.scrapes, now, self.sc.query_window, nb);
            let w = g.policy.weights(now, &samples)?;
            let mut acc = 0.0;
            for (c, w) in g.cumulative.iter_mut().zip(w) {
                acc += f64::from(w);
                *c = acc;
            }
        }
        let next = now + self.sc.control_interval;
        if next < self.duration {
            self.push(next, Kind::Control);
        }
        Ok(())
    }
}
