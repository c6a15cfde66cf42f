//! The discrete-event engine: Poisson clients spread over their proxies, weighted or per-request
//! (P2C) routing, WAN round trips, replicas with finite concurrency and FIFO queues, retries, and
//! the loop of a real deployment: every proxy scraped at its own phase, a control tick that
//! queries Prometheus, waits for the answer, writes weights, and the weights reaching the proxies
//! after a propagation delay.
//!
//! One binary heap of events ordered by time and then by scheduling order, and one seeded random
//! stream per model component, so a run is a pure function of (scenario, policy, seed). Memory
//! does not grow with the number of requests: latencies go into histograms
//! ([`super::latency`]) and the over-time p99 of a window is computed once its last request is
//! answered.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use super::Result;
use super::latency::Latencies;
use super::observe::{self, Counters, Scrape};
use super::p2c::{self, Endpoint};
use super::policy::{Policy, PolicyKind, Routing};
use super::rng::Rng;
use super::scenario::{FailureLatency, Scenario};
use crate::algorithm::c3::Z_P99;

/// Longest measured run, seconds (30 days): bounds the memory of the over-time series.
pub const MAX_DURATION_SECS: f64 = 30.0 * 86_400.0;

/// Width of the windows of the over-time series (p99, shares), seconds.
pub const TIMELINE_WINDOW_SECS: f64 = 10.0;

/// Significant digits of the per-window p99 of the over-time series (1 % precision is plenty
/// for a plot).
const TIMELINE_DIGITS: u8 = 2;

/// `replica` of a request whose replica is chosen on arrival at the backend.
const NO_REPLICA: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Request {
    group: u32,
    proxy: u32,
    backend: u32,
    /// Chosen by the client's P2C, or on arrival (join the shortest queue).
    replica: u32,
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
    Complete(Request),
    Response(Request),
    Scrape { group: u32, proxy: u32 },
    Control,
    Apply { group: u32 },
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
    /// Index of this backend's first replica among all endpoints.
    first_endpoint: usize,
    rng: Rng,
}

/// One client pod: its proxy's counters (one scrape target) and its balancer's view.
struct Proxy {
    counters: Vec<Counters>,
    scrapes: Vec<Scrape>,
    /// Per endpoint (every replica of every backend), for the P2C routings.
    endpoints: Vec<Endpoint>,
}

struct Group {
    cluster: usize,
    max_retries: u32,
    rate_max: f64,
    arrivals: Rng,
    routing: Rng,
    next_proxy: u32,
    proxies: Vec<Proxy>,
    /// Cumulative weights the proxies route by.
    cumulative: Vec<f64>,
    /// Weights written but not yet at the proxies, with the time they arrive.
    in_flight_weights: VecDeque<(f64, Vec<u32>)>,
    policy: Box<dyn Policy + Send>,
}

/// One window of the over-time series.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Start of the window, seconds.
    pub t: f64,
    /// p99 of the user requests that started in it, ms (NaN if none), 1 % precision.
    pub p99_ms: f64,
    /// Share of the attempts sent to each backend in it (NaN if none).
    pub shares: Vec<f64>,
}

/// What one run of one policy measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The policy.
    pub policy: PolicyKind,
    /// End-to-end latency of every measured user request (retries included).
    pub latency: Latencies,
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
        self.latency.count()
    }

    /// Quantile of the end-to-end latency, ms, within 0.1 % (NaN without requests).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.quantile_ms(q)
    }

    /// Mean end-to-end latency, ms (NaN without requests).
    pub fn mean_ms(&self) -> f64 {
        self.latency.mean_ms()
    }

    /// Fraction of user requests that succeeded (NaN without requests).
    pub fn success_rate(&self) -> f64 {
        if self.requests() == 0 {
            return f64::NAN;
        }
        self.successes as f64 / self.requests() as f64
    }
}

/// Requests of one timeline window still in flight, and the latencies of those answered.
struct OpenWindow {
    latencies: Latencies,
    outstanding: u64,
}

struct Sim<'a> {
    sc: &'a Scenario,
    routing: Routing,
    window_secs: f64,
    heap: BinaryHeap<Event>,
    seq: u64,
    backends: Vec<BackendSim>,
    groups: Vec<Group>,
    latency: Latencies,
    successes: u64,
    attempts: Vec<u64>,
    open: BTreeMap<usize, OpenWindow>,
    win_p99: Vec<f64>,
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
    let mut first_endpoint = 0;
    let backends: Vec<BackendSim> = sc
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let be = BackendSim {
                cluster: sc.cluster_index(&b.cluster).unwrap_or(0),
                concurrency: b.concurrency,
                replicas: (0..b.replicas).map(|_| Replica::default()).collect(),
                first_endpoint,
                rng: Rng::new(seed, 3000 + i as u64),
            };
            first_endpoint += b.replicas as usize;
            be
        })
        .collect();
    let endpoints = first_endpoint;
    let start = -sc.warmup;
    let window_secs = sc.window_secs();
    let mut groups = Vec::with_capacity(sc.clients.len());
    for (i, c) in sc.clients.iter().enumerate() {
        groups.push(Group {
            cluster: sc.cluster_index(&c.cluster).unwrap_or(0),
            max_retries: c.max_retries,
            rate_max: c.rps.max(),
            arrivals: Rng::new(seed, 1000 + i as u64),
            routing: Rng::new(seed, 2000 + i as u64),
            next_proxy: 0,
            proxies: (0..c.proxies)
                .map(|_| Proxy {
                    counters: vec![Counters::default(); nb],
                    scrapes: Vec::new(),
                    endpoints: vec![Endpoint::new(start); endpoints],
                })
                .collect(),
            cumulative: (1..=nb).map(|k| k as f64).collect(),
            in_flight_weights: VecDeque::new(),
            policy: policy.build(&names)?,
        });
    }
    let windows = (duration / TIMELINE_WINDOW_SECS).ceil().max(1.0) as usize;
    let mut sim = Sim {
        sc,
        routing: policy.routing(),
        window_secs,
        heap: BinaryHeap::new(),
        seq: 0,
        backends,
        groups,
        latency: Latencies::default(),
        successes: 0,
        attempts: vec![0; nb],
        open: BTreeMap::new(),
        win_p99: vec![f64::NAN; windows],
        win_attempts: vec![vec![0; nb]; windows],
        duration,
    };
    for g in 0..sim.groups.len() {
        sim.schedule_arrival(g, start);
    }
    // Phases: Prometheus spreads its targets over the scrape interval, and the operator's loop
    // starts whenever it starts. Drawn from their own streams, the same for every policy.
    let mut phases = Rng::new(seed, 4000);
    let first_tick = |interval: f64, phase: f64| {
        let k = ((start - phase) / interval).ceil();
        phase + k * interval
    };
    for g in 0..sim.groups.len() {
        for p in 0..sim.groups[g].proxies.len() {
            let phase = phases.uniform() * sc.scrape_interval;
            sim.push(
                first_tick(sc.scrape_interval, phase),
                Kind::Scrape {
                    group: g as u32,
                    proxy: p as u32,
                },
            );
        }
    }
    let control_phase = phases.uniform() * sc.control_interval;
    sim.push(
        first_tick(sc.control_interval, control_phase),
        Kind::Control,
    );
    while let Some(ev) = sim.heap.pop() {
        match ev.kind {
            Kind::Arrival { group } => sim.on_arrival(ev.t, group as usize),
            Kind::AtBackend(req) => sim.on_at_backend(ev.t, req),
            Kind::Complete(req) => sim.on_complete(ev.t, req),
            Kind::Response(req) => sim.on_response(ev.t, req),
            Kind::Scrape { group, proxy } => sim.on_scrape(ev.t, group as usize, proxy as usize),
            Kind::Control => {
                sim.on_control(ev.t)?;
                progress(ev.t.max(0.0));
            }
            Kind::Apply { group } => sim.on_apply(ev.t, group as usize),
        }
    }
    sim.close_windows(f64::INFINITY);
    let timeline = sim
        .win_p99
        .into_iter()
        .zip(sim.win_attempts)
        .enumerate()
        .map(|(i, (p99_ms, att))| {
            let total: u64 = att.iter().sum();
            Window {
                t: i as f64 * TIMELINE_WINDOW_SECS,
                p99_ms,
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
        latency: sim.latency,
        successes: sim.successes,
        attempts: sim.attempts,
        timeline,
    })
}

/// Index of the backend a uniform draw `x` in `[0, total)` falls on.
fn weighted_pick(cumulative: &[f64], x: f64) -> usize {
    cumulative
        .partition_point(|&c| c <= x)
        .min(cumulative.len().saturating_sub(1))
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
        Some(((t / TIMELINE_WINDOW_SECS) as usize).min(self.win_p99.len() - 1))
    }

    /// Computes the p99 of every window that has ended before `now` with nothing in flight.
    fn close_windows(&mut self, now: f64) {
        let done: Vec<usize> = self
            .open
            .iter()
            .filter(|(w, o)| o.outstanding == 0 && (**w + 1) as f64 * TIMELINE_WINDOW_SECS <= now)
            .map(|(w, _)| *w)
            .collect();
        for w in done {
            if let Some(o) = self.open.remove(&w) {
                self.win_p99[w] = o.latencies.quantile_ms(0.99);
            }
        }
    }

    fn on_arrival(&mut self, now: f64, g: usize) {
        self.schedule_arrival(g, now);
        let rate = self.sc.clients[g].rps.at(now);
        let group = &mut self.groups[g];
        if group.arrivals.uniform() * group.rate_max >= rate {
            return;
        }
        let proxy = group.next_proxy;
        group.next_proxy = (proxy + 1) % group.proxies.len() as u32;
        if let Some(w) = self.window(now) {
            self.open
                .entry(w)
                .or_insert_with(|| OpenWindow {
                    latencies: Latencies::new(TIMELINE_DIGITS),
                    outstanding: 0,
                })
                .outstanding += 1;
        }
        self.dispatch(now, g, proxy as usize, now, 0);
    }

    fn dispatch(&mut self, now: f64, g: usize, proxy: usize, user_start: f64, attempt: u32) {
        let nb = self.backends.len();
        let group = &mut self.groups[g];
        let all = 0..group.proxies[proxy].endpoints.len();
        let (b, replica) = match self.routing {
            Routing::Weighted | Routing::WeightedP2c => {
                let total = group.cumulative.last().copied().unwrap_or(0.0);
                let b = weighted_pick(&group.cumulative, group.routing.uniform() * total);
                if self.routing == Routing::Weighted {
                    (b, NO_REPLICA)
                } else {
                    let be = &self.backends[b];
                    let range = be.first_endpoint..be.first_endpoint + be.replicas.len();
                    let e = p2c::choose(
                        &mut group.proxies[proxy].endpoints,
                        range,
                        now,
                        &mut group.routing,
                    )
                    .unwrap_or(be.first_endpoint);
                    (b, (e - be.first_endpoint) as u32)
                }
            }
            Routing::P2c => {
                let e = p2c::choose(
                    &mut group.proxies[proxy].endpoints,
                    all,
                    now,
                    &mut group.routing,
                )
                .unwrap_or(0);
                let b = self
                    .backends
                    .partition_point(|be| be.first_endpoint <= e)
                    .saturating_sub(1)
                    .min(nb - 1);
                (b, (e - self.backends[b].first_endpoint) as u32)
            }
        };
        let px = &mut group.proxies[proxy];
        px.counters[b].on_request();
        if replica != NO_REPLICA {
            px.endpoints[self.backends[b].first_endpoint + replica as usize].on_send();
        }
        let rtt = self.sc.rtt_ms[group.cluster][self.backends[b].cluster] / 1000.0;
        if user_start >= 0.0 {
            self.attempts[b] += 1;
            if let Some(w) = self.window(now) {
                self.win_attempts[w][b] += 1;
            }
        }
        let req = Request {
            group: g as u32,
            proxy: proxy as u32,
            backend: b as u32,
            replica,
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
        if req.replica == NO_REPLICA {
            // Join the replica with the fewest outstanding requests (an idealised in-cluster
            // balancer with a global view); ties go to the lowest index.
            let r = be
                .replicas
                .iter()
                .enumerate()
                .min_by_key(|(_, rep)| rep.busy as usize + rep.queue.len())
                .map_or(0, |(r, _)| r);
            req.replica = r as u32;
        }
        let rep = &mut be.replicas[req.replica as usize];
        if rep.busy < be.concurrency {
            rep.busy += 1;
            self.start_service(now, req);
        } else {
            rep.queue.push_back(req);
        }
    }

    fn start_service(&mut self, now: f64, req: Request) {
        let b = req.backend as usize;
        let spec = &self.sc.backends[b];
        let rng = &mut self.backends[b].rng;
        let service_ms = match (req.success, spec.failure_latency_ms) {
            (false, Some(FailureLatency::Fixed(f))) => f,
            (false, Some(FailureLatency::LogNormal { p50_ms, p99_ms })) => {
                let sigma = (p99_ms.ln() - p50_ms.ln()) / Z_P99;
                rng.lognormal(p50_ms.ln(), sigma)
                    .min(p99_ms * spec.tail_cap)
            }
            _ => {
                let p50 = spec.p50_ms.at(now);
                let p99 = spec.p99_ms.at(now).max(p50);
                let sigma = (p99.ln() - p50.ln()) / Z_P99;
                rng.lognormal(p50.ln(), sigma).min(p99 * spec.tail_cap)
            }
        };
        self.push(now + service_ms / 1000.0, Kind::Complete(req));
    }

    fn on_complete(&mut self, now: f64, req: Request) {
        let b = req.backend as usize;
        let rep = &mut self.backends[b].replicas[req.replica as usize];
        if let Some(next) = rep.queue.pop_front() {
            self.start_service(now, next);
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
        let px = &mut self.groups[g].proxies[req.proxy as usize];
        px.counters[b].on_response(req.success, (now - req.sent) * 1000.0);
        if self.routing != Routing::Weighted {
            let e = self.backends[b].first_endpoint + req.replica as usize;
            px.endpoints[e].on_response(now, now - req.sent);
        }
        if !req.success && req.attempt < self.groups[g].max_retries {
            self.dispatch(now, g, req.proxy as usize, req.user_start, req.attempt + 1);
            return;
        }
        if req.user_start >= 0.0 {
            let ms = (now - req.user_start) * 1000.0;
            self.latency.record(ms);
            if req.success {
                self.successes += 1;
            }
            if let Some(w) = self.window(req.user_start)
                && let Some(o) = self.open.get_mut(&w)
            {
                o.latencies.record(ms);
                o.outstanding -= 1;
            }
        }
    }

    fn on_scrape(&mut self, now: f64, g: usize, p: usize) {
        // Keep what a query window can still reach, plus the sample before it.
        let keep_after = now - self.window_secs - self.sc.scrape_interval;
        let px = &mut self.groups[g].proxies[p];
        px.scrapes.retain(|s| s.t > keep_after);
        px.scrapes.push(Scrape::take(now, &px.counters));
        let next = now + self.sc.scrape_interval;
        if next < self.duration {
            self.push(
                next,
                Kind::Scrape {
                    group: g as u32,
                    proxy: p as u32,
                },
            );
        }
    }

    fn on_control(&mut self, now: f64) -> Result<()> {
        let nb = self.backends.len();
        // The query is evaluated at `now`; its answer arrives `query_latency` later, the weights
        // are written then and reach the proxies `propagation_delay` after the write.
        let arrive = now + self.sc.query_latency + self.sc.propagation_delay;
        for g in 0..self.groups.len() {
            let group = &mut self.groups[g];
            let targets: Vec<&[Scrape]> =
                group.proxies.iter().map(|p| p.scrapes.as_slice()).collect();
            let samples = observe::query_targets(&targets, now, self.window_secs, nb);
            let w = group
                .policy
                .weights(now + self.sc.query_latency, &samples)?;
            group.in_flight_weights.push_back((arrive, w));
            self.push(arrive, Kind::Apply { group: g as u32 });
        }
        self.close_windows(now);
        let next = now + self.sc.control_interval;
        if next < self.duration {
            self.push(next, Kind::Control);
        }
        Ok(())
    }

    fn on_apply(&mut self, now: f64, g: usize) {
        let group = &mut self.groups[g];
        // Every write has the same delay, so they arrive in the order they were written.
        while group
            .in_flight_weights
            .front()
            .is_some_and(|(t, _)| *t <= now)
        {
            if let Some((_, w)) = group.in_flight_weights.pop_front() {
                let mut acc = 0.0;
                for (c, w) in group.cumulative.iter_mut().zip(w) {
                    acc += f64::from(w);
                    *c = acc;
                }
            }
        }
    }
}
