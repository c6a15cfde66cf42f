//! The control loop's I/O: [`Operator`] runs the [`Engine`] against the API server every tick
//! (one batched fetch, leader-only writes, per-policy exponential backoff), and the kube-rs
//! Controller on LatencyPolicies reconciles their lifecycle (finalizer; restoring weights on
//! delete or a switch to DryRun), triggered also by TrafficSplit changes mapped back to the
//! policies that target them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::actuator::{Actuator, WriteOutcome};
use super::crd::{FINALIZER, LatencyPolicy, Mode};
use super::engine::{Decision, Engine, Key, MAX_BACKOFF_SECS, Outcome, SplitLookup, key_of, owner};
use super::leader::Leadership;
use super::metrics::Metrics;
use super::status::{self, Transition};
use super::{Error, Result};
use crate::source::{SignalRequest, SignalSource, Snapshot};

/// Bound on one batched fetch, on top of the source's per-query timeouts, so that a stuck
/// source cannot stall the loop.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The answer to `request` when the whole fetch timed out: every group failed.
fn timed_out(request: &SignalRequest) -> Snapshot {
    Snapshot {
        timestamp: 0.0,
        groups: Vec::new(),
        errors: (0..request.groups.len())
            .map(|group| crate::source::QueryError {
                group,
                signal: "latency",
                reason: "timeout",
                message: format!(
                    "the whole fetch took longer than {}s",
                    FETCH_TIMEOUT.as_secs()
                ),
            })
            .collect(),
    }
}

/// Concurrent API writes of one cycle.
pub const WRITE_CONCURRENCY: usize = 16;

/// Everything the running operator shares between the loop, the controller and the servers.
pub struct Operator {
    /// The I/O-free engine.
    pub engine: Mutex<Engine>,
    /// API writes.
    pub actuator: Actuator,
    /// Signals.
    pub source: Arc<dyn SignalSource>,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// LatencyPolicies (the controllers' stores, one per watched scope).
    pub policies: Vec<Store<LatencyPolicy>>,
    /// TrafficSplits.
    pub splits: Box<dyn SplitLookup>,
    /// Events; `None` disables them.
    pub recorder: Option<Recorder>,
    /// Set after the first full cycle, for `/readyz`.
    pub first_cycle_done: AtomicBool,
    /// Per-object failures of the controller, for exponential backoff.
    failures: Mutex<HashMap<Key, u32>>,
}

impl Operator {
    /// Assemble an operator.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        actuator: Actuator,
        source: Arc<dyn SignalSource>,
        metrics: Metrics,
        leadership: Leadership,
        policies: Vec<Store<LatencyPolicy>>,
        splits: Box<dyn SplitLookup>,
        recorder: Option<Recorder>,
    ) -> Self {
        Self {
            engine: Mutex::new(Engine::new(metrics.clone())),
            // Every write checks the same deadline the lease task keeps.
            actuator: actuator.with_leadership(leadership.clone()),
            source,
            metrics,
            leadership,
            policies,
            splits,
            recorder,
            first_cycle_done: AtomicBool::new(false),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Every known LatencyPolicy.
    pub fn all_policies(&self) -> Vec<Arc<LatencyPolicy>> {
        self.policies.iter().flat_map(Store::state).collect()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One control cycle at `now` (seconds since the epoch): plan, one batched fetch, decide,
    /// and (leader only) write. Returns the outcomes by policy.
    pub async fn cycle(&self, now: f64) -> Vec<(Key, Outcome)> {
        let start = Instant::now();
        let policies = self.all_policies();
        let plan = self.engine().plan(now, &policies, self.splits.as_ref());
        let snapshot = if plan.request.groups.is_empty() {
            Snapshot::default()
        } else {
            match tokio::time::timeout(FETCH_TIMEOUT, self.source.fetch(&plan.request)).await {
                Ok(s) => s,
                Err(_) => {
                    warn!(
                        timeout_secs = FETCH_TIMEOUT.as_secs(),
                        "signal fetch timed out"
                    );
                    timed_out(&plan.request)
                }
            }
        };
        let decisions = self.engine().decide(now, plan, &snapshot);
        let outcomes: Vec<(Key, Outcome)> = futures::stream::iter(decisions)
            .map(|d| async move {
                let key = d.key.clone();
                (key, self.apply(d, now).await)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        {
            let mut engine = self.engine();
            for (k, o) in &outcomes {
                engine.record(k, now, o);
            }
            self.metrics.policies.reset();
            for ((c, s), n) in engine.condition_counts() {
                self.metrics.policies.with_label_values(&[&c, &s]).set(n);
            }
        }
        self.metrics
            .cycle_duration
            .observe(start.elapsed().as_secs_f64());
        self.first_cycle_done.store(true, Ordering::Relaxed);
        outcomes
    }

    /// Carry out one decision: nothing unless this replica leads.
    #[instrument(skip_all, fields(namespace = %d.key.0, policy = %d.key.1))]
    async fn apply(&self, d: Decision, now: f64) -> Outcome {
        let mut out = Outcome::default();
        if !self.leadership.is_leader() {
            return out;
        }
        let mut status = d.status;
        if let Some(w) = &d.write {
            match self
                .actuator
                .write_weights(&d.key.0, &w.split_name, &w.split, &w.weights)
                .await
            {
                Ok(WriteOutcome::Written) => {
                    out.weights_written = true;
                    out.written = Some((w.split.resource_version.clone(), w.weights.clone()));
                    status.last_weight_update = Some(status::time(now));
                    info!(split = %w.split_name, weights = ?w.weights, "weights written");
                }
                Ok(WriteOutcome::BackendsChanged | WriteOutcome::AlreadySet) => {}
                Err(error) => {
                    warn!(%error, split = %w.split_name, "weights write failed");
                    out.failed = true;
                }
            }
        }
        let prev = self
            .engine()
            .written(&d.key)
            .cloned()
            .or_else(|| d.policy.status.clone());
        if !self.leadership.is_leader() || !status::changed(prev.as_ref(), &status) {
            return out;
        }
        match self
            .actuator
            .write_status(&d.key.0, &d.key.1, &status)
            .await
        {
            Ok(()) => {
                self.publish(&d.policy, &d.transitions).await;
                out.status_written = Some(status);
            }
            Err(error) => {
                warn!(%error, "status write failed");
                out.failed = true;
            }
        }
        out
    }

    async fn publish(&self, policy: &LatencyPolicy, transitions: &[Transition]) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let reference = policy.object_ref(&());
        for t in transitions {
            let ev = KubeEvent {
                type_: if t.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: t.reason.to_owned(),
                note: Some(t.note.clone()),
                action: "Reconcile".into(),
                secondary: None,
            };
            let start = Instant::now();
            let r = recorder.publish(&ev, &reference).await;
            self.metrics
                .write("event", r.is_ok(), start.elapsed().as_secs_f64());
            if let Err(error) = r {
                warn!(%error, reason = t.reason, "event not published");
            }
        }
    }
}

/// Reconcile one LatencyPolicy's lifecycle (the periodic work is the cycle's): keep l3's
/// finalizer on enforcing owners, and restore the split's original weights when the policy
/// is deleted or switched to DryRun.
#[instrument(skip_all, fields(namespace = %policy.namespace().unwrap_or_default(), policy = %policy.name_any()))]
pub async fn reconcile(policy: Arc<LatencyPolicy>, op: Arc<Operator>) -> Result<Action> {
    if !op.leadership.is_leader() {
        // Followers write nothing; look again once they may have become the leader.
        return Ok(Action::requeue(Duration::from_secs(15)));
    }
    let ns = policy.namespace().unwrap_or_default();
    let target = policy.spec.target_ref.name.clone();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);
    let policies = op.all_policies();
    let owns = owner(&policies, &policy).name_any() == policy.name_any();
    let result = async {
        if policy.meta().deletion_timestamp.is_some() || policy.spec.mode == Mode::DryRun {
            if has_finalizer {
                if owns && op.actuator.restore(&ns, &target).await? {
                    info!(split = %target, "original weights restored");
                }
                op.actuator.set_finalizer(&policy, false).await?;
            }
            return Ok(Action::await_change());
        }
        if owns && policy.spec.settings().is_ok() {
            op.actuator.set_finalizer(&policy, true).await?;
        }
        Ok(Action::requeue(Duration::from_secs(300)))
    }
    .await;
    if result.is_ok()
        && let Ok(mut f) = op.failures.lock()
    {
        f.remove(&key_of(&policy));
    }
    result
}

/// Exponential backoff per object: 1 s, 2 s, 4 s, ... up to 5 minutes.
pub fn error_policy(policy: Arc<LatencyPolicy>, error: &Error, op: Arc<Operator>) -> Action {
    let n = op
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key_of(&policy)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let secs = 2f64.powi(n.min(9) as i32 - 1).min(MAX_BACKOFF_SECS);
    warn!(%error, policy = %policy.name_any(), retry_in_secs = secs, "reconcile failed");
    Action::requeue(Duration::from_secs_f64(secs))
}
