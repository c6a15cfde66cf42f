//! The control loop's I/O: [`Operator`] runs the [`Engine`] against the API server every tick
//! (one batched fetch, leader-only writes, per-policy exponential backoff), and the kube-rs
//! Controller on LatencyPolicies reconciles their lifecycle (finalizer; restoring weights on
//! delete, a switch to DryRun or a change of `targetRef`, such as from a TrafficSplit to an
//! HTTPRoute), triggered also by changes of the targets (TrafficSplits, routes) mapped back to
//! the policies that target them.
//!
//! A restore is final: the cycle's writes and the restores of a split are serialised by one
//! async lock per split, and under it the cycle checks that the policy still enforces on that
//! split (the store's latest copy, and the policies reconcile retired) before it writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use kube::runtime::reflector::ObjectRef;

use super::actuator::{Actuator, RestoreOutcome, WriteOutcome};
use super::crd::{FINALIZER, LatencyPolicy, Mode};
use super::engine::{
    Decision, Engine, Key, MAX_BACKOFF_SECS, Outcome, SplitLookup, key_of, owner, owns_split,
};
use super::leader::Leadership;
use super::metrics::Metrics;
use super::status::{self, Transition};
use super::target::{ObjectId, Target};
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
        windows: Vec::new(),
    }
}

/// Concurrent API writes of one cycle.
pub const WRITE_CONCURRENCY: usize = 16;

/// Default of `--status-interval`: how often a status whose only changes are noise (filtered
/// signals, DryRun weights) is refreshed.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Most characters of an Event note (the API allows 1 kB).
const EVENT_NOTE_MAX: usize = 1000;

/// A target object: namespace, and kind and name.
type SplitKey = (String, ObjectId);

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
    /// Per-object failures of the controller, for exponential backoff.
    failures: Mutex<HashMap<Key, u32>>,
    /// How often a status that only changed by noise is refreshed.
    status_interval: Duration,
    /// One lock per split, held across "still enforcing? → write" and across a restore.
    split_locks: Mutex<HashMap<SplitKey, Arc<tokio::sync::Mutex<()>>>>,
    /// (policy, split) pairs reconcile restored, with the policy's uid: the cycle must not
    /// write them even if its store has not seen the change yet.
    retired: Mutex<HashMap<(Key, String), String>>,
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
            failures: Mutex::new(HashMap::new()),
            status_interval: DEFAULT_STATUS_INTERVAL,
            split_locks: Mutex::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
        }
    }

    /// Refresh noise-only status changes at most every `interval` (`--status-interval`).
    pub fn with_status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    /// The lock of one target object.
    fn split_lock(&self, ns: &str, target: &Target) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.split_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry((ns.to_owned(), target.object()))
            .or_default()
            .clone()
    }

    fn retired(&self) -> std::sync::MutexGuard<'_, HashMap<(Key, String), String>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `policy` (as planned) may still write the target recorded as `split`
    /// ([`Target::record`]): call with the target's lock held. The store's latest copy must
    /// still be the same object, live, enforcing, targeting and having adopted that target, and
    /// reconcile must not have restored it meanwhile.
    fn may_write(&self, planned: &LatencyPolicy, split: &str) -> bool {
        let key = key_of(planned);
        let reference = ObjectRef::<LatencyPolicy>::new(&key.1).within(&key.0);
        let latest = self
            .policies
            .iter()
            .find_map(|s| s.get(&reference))
            .unwrap_or_else(|| Arc::new(planned.clone()));
        let live = latest.uid() == planned.uid()
            && latest.meta().deletion_timestamp.is_none()
            && latest.spec.mode == Mode::Enforce
            && latest.target_record().as_deref() == Some(split)
            && latest.adopted_target().as_deref() == Some(split);
        let retired = self
            .retired()
            .get(&(key, split.to_owned()))
            .is_some_and(|uid| Some(uid) == latest.uid().as_ref());
        live && !retired
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
        {
            // A retired mark matters while its policy may still be planned.
            let uids: std::collections::HashSet<String> =
                policies.iter().filter_map(|p| p.uid()).collect();
            self.retired().retain(|_, uid| uids.contains(uid));
        }
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
        if let Some(a) = &d.adopt {
            let lock = self.split_lock(&d.key.0, &a.target);
            let _held = lock.lock().await;
            if self.may_write(&d.policy, &a.target.record()) {
                match self
                    .actuator
                    .adopt(&d.key.0, &a.target, &a.split, &a.adoption)
                    .await
                {
                    Ok(true) => {
                        warn!(object = %a.target, change = ?a.adoption.change, "another writer changed the target's weights; adopted");
                        self.publish(&d.policy, std::slice::from_ref(&a.event))
                            .await;
                    }
                    // Changed again meanwhile: the next cycle judges the fresh version.
                    Ok(false) => {}
                    Err(error) => {
                        warn!(%error, object = %a.target, "adopting a foreign change failed");
                        out.failed = true;
                    }
                }
            }
        }
        if let Some(w) = &d.write {
            let lock = self.split_lock(&d.key.0, &w.target);
            let _held = lock.lock().await;
            let written = if self.may_write(&d.policy, &w.target.record()) {
                self.actuator
                    .write_weights(&d.key.0, &w.target, &w.split, &w.weights)
                    .await
            } else {
                Ok(WriteOutcome::Restored)
            };
            match written {
                Ok(WriteOutcome::Written) => {
                    out.weights_written = true;
                    out.written = Some((w.split.resource_version.clone(), w.weights.clone()));
                    status.last_weight_update = Some(status::time(now));
                    info!(object = %w.target, weights = ?w.weights, "weights written");
                }
                Ok(
                    o @ (WriteOutcome::Restored
                    | WriteOutcome::ForeignChange
                    | WriteOutcome::BackendsChanged),
                ) => {
                    info!(object = %w.target, outcome = ?o, "weights not written: the target changed hands or shape");
                }
                Ok(WriteOutcome::AlreadySet) => {}
                Err(error) => {
                    warn!(%error, object = %w.target, "weights write failed");
                    out.failed = true;
                }
            }
        }
        let (prev, age) = {
            let engine = self.engine();
            (
                engine
                    .written(&d.key)
                    .cloned()
                    .or_else(|| d.policy.status.clone()),
                engine.status_age(&d.key, now),
            )
        };
        if !self.leadership.is_leader()
            || !status::due(
                prev.as_ref(),
                &status,
                age,
                self.status_interval.as_secs_f64(),
            )
        {
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

    /// Put back the original weights of `split`, which `policy` adopted, unless another live
    /// policy owns it now. Under the split's lock, and marking the pair retired first, so that
    /// no write of the cycle lands after the restore. A split that cannot be restored is
    /// reported in an Event carrying the originals, and counts as done: a finalizer must
    /// never block a deletion.
    async fn give_back(&self, policy: &LatencyPolicy, split: &str) -> Result<()> {
        let key = key_of(policy);
        let Some(target) = Target::from_record(split) else {
            warn!(record = %split, "the adopted-target record cannot be read; nothing to restore");
            return Ok(());
        };
        let lock = self.split_lock(&key.0, &target);
        let _held = lock.lock().await;
        if let Some(uid) = policy.uid() {
            self.retired().insert((key.clone(), split.to_owned()), uid);
        }
        if !owns_split(&self.all_policies(), policy, split) {
            return Ok(());
        }
        let split = &target;
        match self.actuator.restore(&key.0, split).await? {
            RestoreOutcome::Restored => info!(object = %split, "original weights restored"),
            RestoreOutcome::NotAdopted | RestoreOutcome::Gone => {}
            RestoreOutcome::Impossible { why, originals } => {
                let originals = originals.or_else(|| {
                    self.splits
                        .split(split.kind, &key.0, &split.name)
                        .and_then(|o| {
                            o.annotations()
                                .get(super::trafficsplit::ORIGINAL_WEIGHTS_ANNOTATION)
                                .cloned()
                        })
                });
                let originals = originals.unwrap_or_else(|| "unknown".into());
                warn!(object = %split, %why, %originals, "original weights cannot be restored; releasing the finalizer");
                let note = format!(
                    "{split} cannot be restored ({why}); releasing the finalizer. \
                     Original weights: {originals}"
                );
                self.publish(
                    policy,
                    &[Transition {
                        warning: true,
                        reason: "OriginalsNotRestored",
                        note,
                    }],
                )
                .await;
            }
        }
        Ok(())
    }

    async fn publish(&self, policy: &LatencyPolicy, transitions: &[Transition]) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let reference = policy.object_ref(&());
        for t in transitions {
            let mut note = t.note.clone();
            if note.len() > EVENT_NOTE_MAX {
                let mut cut = EVENT_NOTE_MAX - 3;
                while !note.is_char_boundary(cut) {
                    cut -= 1;
                }
                note.truncate(cut);
                note.push_str("...");
            }
            let ev = KubeEvent {
                type_: if t.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: t.reason.to_owned(),
                note: Some(note),
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
/// finalizer, with the record of the adopted split, on enforcing owners; restore the adopted
/// split's original weights when the policy is deleted, switched to DryRun, or retargeted
/// (before the new target is tuned).
#[instrument(skip_all, fields(namespace = %policy.namespace().unwrap_or_default(), policy = %policy.name_any()))]
pub async fn reconcile(policy: Arc<LatencyPolicy>, op: Arc<Operator>) -> Result<Action> {
    if !op.leadership.is_leader() {
        // Followers write nothing; look again once they may have become the leader.
        return Ok(Action::requeue(Duration::from_secs(15)));
    }
    let key = key_of(&policy);
    let target = policy.target_record();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);
    let adopted = policy.adopted_target();
    let policies = op.all_policies();
    let owns = owner(&policies, &policy).name_any() == policy.name_any();
    let result = async {
        if policy.meta().deletion_timestamp.is_some() || policy.spec.mode == Mode::DryRun {
            if has_finalizer {
                if let Some(split) = &adopted {
                    op.give_back(&policy, split).await?;
                }
                op.actuator.set_finalizer(&policy, None).await?;
            }
            return Ok(Action::await_change());
        }
        if let Some(old) = adopted.as_ref().filter(|a| Some(*a) != target.as_ref()) {
            // Retargeted (another name, rule or kind, such as a TrafficSplit replaced by an
            // HTTPRoute): the old target gets its originals back before the new one is tuned
            // (the cycle writes a target only once it is the recorded one).
            op.give_back(&policy, old).await?;
        }
        if let Some(target) = target
            .as_ref()
            .filter(|_| owns && policy.spec.settings().is_ok())
        {
            op.actuator.set_finalizer(&policy, Some(target)).await?;
            op.retired().remove(&(key.clone(), target.clone()));
        } else if has_finalizer && !owns {
            // Not (or no longer) the owner: the split is another policy's to restore.
            op.actuator.set_finalizer(&policy, None).await?;
        }
        Ok(Action::requeue(Duration::from_secs(300)))
    }
    .await;
    if result.is_ok()
        && let Ok(mut f) = op.failures.lock()
    {
        f.remove(&key);
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
