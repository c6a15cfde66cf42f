//! The I/O-free half of the control loop: every tick it plans which policies are due, builds
//! one batched [`SignalRequest`] for all of them, and turns the [`Snapshot`] into per-policy
//! [`Decision`]s: filter state update, L3 weights, safety limits, hysteresis, status and
//! condition transitions. The benchmark drives exactly this; [`super::controller`] does the I/O.
//!
//! It also judges whether l3 is the only writer of a split's weights ([`judge`]): a foreign
//! change is adopted as the new originals and pauses tuning; repeated ones (a tug-of-war with
//! a GitOps tool) stop l3's writes until the policy's spec changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::crd::{BackendStatus, LatencyPolicy, LatencyPolicyStatus, PolicySettings};
use super::metrics::Metrics;
use super::status::{
    self, CONFLICT, CONTESTED, Cond, METRICS_AVAILABLE, READY, TARGET_FOUND, Transition,
};
use super::target::{self, Kind, ObjectId, Resources, Target};
use super::trafficsplit::{
    self, FAILOVER_LABEL, ForeignChange, ForeignHistory, ParsedSplit, SplitBackend, SplitError,
    WeightForm, WeightMap,
};
use crate::algorithm::safety;
use crate::source::{BackendKey, QueryWindow, RequestGroup, SignalRequest, Snapshot, WindowInfo};
use crate::state::{BackendSample, SplitState};

/// A policy's namespace and name.
pub type Key = (String, String);

/// Longest pause of a failing policy.
pub const MAX_BACKOFF_SECS: f64 = 300.0;
/// A policy counts as due this slightly early, so that a 1 s tick that fires a hair before
/// the 5 s mark does not stretch the interval to 6 s.
pub const DUE_SLACK_SECS: f64 = 0.5;

/// How often a policy whose spec cannot be used is looked at again: its own `interval` may be
/// the invalid part, so the paper's default cycle is used.
pub const INVALID_SPEC_RECHECK_SECS: f64 = 5.0;

/// How long l3 leaves a split alone after another writer changed its weights. Shorter than
/// half of [`CONTEST_WINDOW_SECS`]: a writer that reverts each of l3's writes at once makes
/// three changes within the window (at 0, ~2 and ~4 minutes) and is caught.
pub const FOREIGN_PAUSE_SECS: i64 = 120;
/// Window in which repeated foreign changes count as a tug-of-war.
pub const CONTEST_WINDOW_SECS: i64 = 600;
/// Foreign changes within [`CONTEST_WINDOW_SECS`] after which l3 stops writing the split until
/// the policy's spec changes.
pub const CONTEST_THRESHOLD: usize = 3;

/// Whether l3 may tune a split, as far as other writers are concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum WriterState {
    /// No other writer changed the weights lately.
    Alone,
    /// Another writer changed the weights; l3 resumes at `until` (seconds since the epoch).
    Paused {
        /// When tuning resumes.
        until: i64,
    },
    /// Another writer keeps changing the weights: no writes until the spec changes.
    Contested {
        /// Foreign changes seen under the current generation, within the window.
        changes: usize,
    },
}

/// A foreign change to take as it is: the new originals and the updated history.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// What changed.
    pub change: ForeignChange,
    /// The originals after the change ([`trafficsplit::rebase_originals`]).
    pub originals: WeightMap,
    /// The foreign-change history to record.
    pub history: ForeignHistory,
}

/// What [`judge`] concluded about a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// A foreign change to adopt now, if any.
    pub adoption: Option<Adoption>,
    /// Whether l3 may write.
    pub state: WriterState,
}

/// Judge a split l3 adopted against the record of l3's own writes, for a policy at
/// `generation`, at `now` (seconds since the epoch). Pure: the record lives on the split, so
/// the judgement is the same after a restart or on a new leader.
///
/// - Weights that differ from what l3 applied are someone else's: they become the originals
///   (on the originals' scale), the change is recorded, and l3 pauses [`FOREIGN_PAUSE_SECS`].
/// - The [`CONTEST_THRESHOLD`]th such change within [`CONTEST_WINDOW_SECS`] marks the split
///   contested for this generation: l3 writes nothing until the policy's spec changes.
/// - Backends added or removed (the others untouched) are adopted too, without a pause: that
///   is a change of the split, not a fight over its weights.
pub fn judge(split: &ParsedSplit, generation: i64, now: f64) -> Result<Judgement, SplitError> {
    let now = now.floor() as i64;
    let mut history = split.foreign_history()?;
    if history.generation != generation {
        // A new spec starts afresh: earlier changes were about the old one.
        history = ForeignHistory {
            generation,
            ..ForeignHistory::default()
        };
    }
    history.times.retain(|t| now - t < CONTEST_WINDOW_SECS);
    let adoption = match split.foreign_change()? {
        Some(change) => {
            let originals = split.originals()?.unwrap_or_default();
            let applied = split.applied_weights()?.unwrap_or_default();
            let originals = trafficsplit::rebase_originals(
                &originals,
                &applied,
                &split.current_weights(),
                split.form == WeightForm::Integer,
                split.absent_weight,
            );
            if change == ForeignChange::Weights {
                history.times.push(now);
                history.contested |= history.times.len() >= CONTEST_THRESHOLD;
            }
            Some(Adoption {
                change,
                originals,
                history: history.clone(),
            })
        }
        None => None,
    };
    let state = if history.contested {
        WriterState::Contested {
            changes: history.times.len(),
        }
    } else {
        match history.times.last() {
            Some(last) if now < last + FOREIGN_PAUSE_SECS => WriterState::Paused {
                until: last + FOREIGN_PAUSE_SECS,
            },
            _ => WriterState::Alone,
        }
    };
    Ok(Judgement { adoption, state })
}

/// The `Contested` condition for a writer state.
fn contested_condition(state: &WriterState) -> Cond {
    match state {
        WriterState::Alone => Cond::new(
            CONTESTED,
            false,
            "NoForeignWriter",
            "no other writer changed the weights lately",
        ),
        WriterState::Paused { until } => Cond::new(
            CONTESTED,
            false,
            "PausedAfterForeignChange",
            format!(
                "another writer changed the weights; l3 took them as the originals and resumes \
                 tuning at {}",
                status::time(*until as f64).0
            ),
        ),
        WriterState::Contested { changes } => Cond::new(
            CONTESTED,
            true,
            "RepeatedForeignChanges",
            format!(
                "another writer changed the weights {changes} times within {CONTEST_WINDOW_SECS}s; \
                 l3 stopped writing them until the policy's spec changes"
            ),
        ),
    }
}

pub use crate::algorithm::safety::{CONFIRM_CYCLES, URGENT_SHARE_CHANGE};

/// Where the control loop finds its targets (reflector stores in production).
pub trait SplitLookup: Send + Sync {
    /// The object of `kind` named `name` in namespace `ns`, if it exists.
    fn split(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<DynamicObject>>;

    /// Why no object of `kind` can exist at all (not enabled, or its CRD is not served), if
    /// that is the case.
    fn unavailable(&self, _kind: Kind) -> Option<String> {
        None
    }
}

/// The lookup while the cluster serves no TrafficSplit CRD (and l3 tunes no other kind):
/// every target is missing.
pub struct CrdMissing;

impl SplitLookup for CrdMissing {
    fn split(&self, _: Kind, _: &str, _: &str) -> Option<Arc<DynamicObject>> {
        None
    }

    fn unavailable(&self, kind: Kind) -> Option<String> {
        Some(kind.missing())
    }
}

/// A reflector store of one target kind.
#[derive(Clone)]
pub struct StoreLookup {
    /// The store.
    pub store: Store<DynamicObject>,
    /// The served resource.
    pub resource: ApiResource,
    /// The kind it holds.
    pub kind: Kind,
}

impl StoreLookup {
    /// A store of TrafficSplits served as `resource`.
    pub fn splits(store: Store<DynamicObject>, resource: ApiResource) -> Self {
        Self {
            store,
            resource,
            kind: Kind::TrafficSplit,
        }
    }
}

impl SplitLookup for StoreLookup {
    fn split(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        if kind != self.kind {
            return None;
        }
        self.store
            .get(&ObjectRef::new_with(name, self.resource.clone()).within(ns))
    }
}

impl SplitLookup for Vec<StoreLookup> {
    fn split(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.iter().find_map(|s| s.split(kind, ns, name))
    }
}

/// The stores of every enabled, served kind, and why the others have none.
pub struct Lookups {
    /// One store per served kind and watched scope.
    pub stores: Vec<StoreLookup>,
    /// The enabled kinds and whether they are served.
    pub resources: Resources,
}

impl SplitLookup for Lookups {
    fn split(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.stores.split(kind, ns, name)
    }

    fn unavailable(&self, kind: Kind) -> Option<String> {
        self.resources.resource(kind).err()
    }
}

/// Objects by namespace and name, whatever their kind (tests and benchmarks).
impl SplitLookup for HashMap<Key, Arc<DynamicObject>> {
    fn split(&self, _: Kind, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.get(&(ns.to_owned(), name.to_owned())).cloned()
    }
}

/// A policy's key.
pub fn key_of(p: &LatencyPolicy) -> Key {
    (p.namespace().unwrap_or_default(), p.name_any())
}

/// Age order of policies: older first, then by name. The oldest policy on a split owns it.
fn age(p: &LatencyPolicy) -> (Option<Time>, String) {
    (p.meta().creation_timestamp.clone(), p.name_any())
}

/// The object a policy's spec targets (kind and name; the rule does not matter: one policy
/// per object). A spec whose `targetRef` cannot be used still claims the name as a
/// TrafficSplit, as before kinds existed.
pub fn object_of(p: &LatencyPolicy) -> ObjectId {
    Target::from_ref(&p.spec.target_ref)
        .map(|t| t.object())
        .unwrap_or_else(|_| (Kind::TrafficSplit, p.spec.target_ref.name.clone()))
}

/// The policy that owns a target object: the oldest among the live (not deleting) policies
/// targeting it, and `candidate` itself.
pub fn owner<'a>(
    policies: &'a [Arc<LatencyPolicy>],
    candidate: &'a LatencyPolicy,
) -> &'a LatencyPolicy {
    let ns = candidate.namespace();
    let target = object_of(candidate);
    policies
        .iter()
        .map(Arc::as_ref)
        .filter(|p| {
            p.meta().deletion_timestamp.is_none() && p.namespace() == ns && object_of(p) == target
        })
        .chain(std::iter::once(candidate))
        .min_by_key(|p| age(p))
        .unwrap_or(candidate)
}

/// Whether `candidate` is responsible for the target recorded as `split` ([`Target::record`])
/// in its namespace (which it may no longer target): no other live policy targeting that
/// object is older.
pub fn owns_split(policies: &[Arc<LatencyPolicy>], candidate: &LatencyPolicy, split: &str) -> bool {
    let ns = candidate.namespace();
    let mine = age(candidate);
    let Some(object) = target::object_of(split) else {
        return true;
    };
    !policies.iter().any(|p| {
        p.meta().deletion_timestamp.is_none()
            && p.namespace() == ns
            && object_of(p) == object
            && age(p) < mine
    })
}

/// The resourceVersion a weights write was computed from, and the weights written.
pub type LastWrite = (Option<String>, Vec<(String, u32)>);

/// The policies that target `split`, an object of `kind` (same namespace, same kind and name):
/// a change of the object triggers their reconcile.
pub fn policies_for_split(
    policies: &[Arc<LatencyPolicy>],
    kind: Kind,
    split: &DynamicObject,
) -> Vec<ObjectRef<LatencyPolicy>> {
    let ns = split.namespace();
    let object = (kind, split.name_any());
    policies
        .iter()
        .filter(|p| p.namespace() == ns && object_of(p) == object)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Per-policy memory of the loop.
#[derive(Default)]
struct Entry {
    filters: Option<crate::state::FilterSettings>,
    state: Option<SplitState>,
    next_due: f64,
    /// The spec generation last planned: a new one makes the policy due at once.
    generation: Option<i64>,
    failures: u32,
    interval: f64,
    written: Option<LatencyPolicyStatus>,
    /// When `written` was written, seconds since the epoch.
    written_at: f64,
    last_weight_update: Option<Time>,
    /// The resourceVersion a weights write was computed from, and the weights written: while
    /// the store still shows that version, our write is the truth (no second write on a lag).
    last_write: Option<LastWrite>,
    /// Consecutive cycles that wanted a write (see [`CONFIRM_CYCLES`]).
    pending: u32,
    /// The target as last parsed, by resourceVersion and target (kind, name, rule).
    split_cache: Option<(String, Target, Arc<ParsedSplit>)>,
    last_conditions: Vec<(String, String)>,
}

/// A policy whose weights are computed this tick.
struct RunWork {
    settings: PolicySettings,
    target: Target,
    split: Arc<ParsedSplit>,
    group: usize,
    /// Other writers of the split (`None` in DryRun: l3 keeps no record then).
    judgement: Option<Judgement>,
}

/// What the plan decided for one policy.
enum Work {
    /// Conditions only: the policy is not acted on.
    Refuse(Vec<Cond>),
    /// Compute weights.
    Run(Box<RunWork>),
}

struct Item {
    key: Key,
    policy: Arc<LatencyPolicy>,
    work: Work,
}

/// Policies due this tick and the batched request for their signals.
pub struct Plan {
    /// One group per (quantile, window).
    pub request: SignalRequest,
    items: Vec<Item>,
}

impl Plan {
    /// Number of policies planned.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no policy is due.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A weights write the leader should make.
#[derive(Debug, Clone)]
pub struct WeightWrite {
    /// The target.
    pub target: Target,
    /// The split as the weights were computed from.
    pub split: ParsedSplit,
    /// `service → weight` out of 1000.
    pub weights: Vec<(String, u32)>,
}

/// Annotations to write on a split to take another writer's change as it is.
#[derive(Debug, Clone)]
pub struct AdoptWrite {
    /// The target.
    pub target: Target,
    /// The split as judged (its resourceVersion guards the patch).
    pub split: ParsedSplit,
    /// What to record.
    pub adoption: Adoption,
    /// The Event to publish once recorded.
    pub event: Transition,
}

/// The outcome of one cycle for one policy.
pub struct Decision {
    /// The policy.
    pub key: Key,
    /// The policy object (for Events).
    pub policy: Arc<LatencyPolicy>,
    /// Weights to write, if any.
    pub write: Option<WeightWrite>,
    /// A foreign change to adopt, if any (never together with `write`).
    pub adopt: Option<AdoptWrite>,
    /// Status as it should be (before a weights write sets `lastWeightUpdate`).
    pub status: LatencyPolicyStatus,
    /// Condition transitions to publish as Events.
    pub transitions: Vec<Transition>,
    /// Seconds until the policy is due again.
    pub interval: f64,
}

/// The I/O-free part of the loop.
pub struct Engine {
    entries: HashMap<Key, Entry>,
    metrics: Metrics,
}

impl Engine {
    /// An engine reporting into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            entries: HashMap::new(),
            metrics,
        }
    }

    fn drop_series(metrics: &Metrics, key: &Key) {
        metrics.backends.remove_policy(&key.0, &key.1);
    }

    /// Decide which policies are due at `now` (seconds since the epoch) and what to ask the
    /// source for. Policies that are gone lose their state and metric series.
    pub fn plan(
        &mut self,
        now: f64,
        policies: &[Arc<LatencyPolicy>],
        splits: &dyn SplitLookup,
    ) -> Plan {
        let live: Vec<&Arc<LatencyPolicy>> = policies
            .iter()
            .filter(|p| p.meta().deletion_timestamp.is_none())
            .collect();
        let keys: HashSet<Key> = live.iter().map(|p| key_of(p)).collect();
        let metrics = &self.metrics;
        self.entries.retain(|k, _| {
            let keep = keys.contains(k);
            if !keep {
                Self::drop_series(metrics, k);
            }
            keep
        });
        // The oldest live policy per target object wins it.
        let mut winners: HashMap<(String, ObjectId), (Option<Time>, String)> = HashMap::new();
        for p in &live {
            let k = (p.namespace().unwrap_or_default(), object_of(p));
            let a = age(p);
            match winners.get(&k) {
                Some(w) if *w <= a => {}
                _ => {
                    winners.insert(k, a);
                }
            }
        }
        let mut groups: HashMap<(u64, QueryWindow), usize> = HashMap::new();
        let mut request = SignalRequest::default();
        let mut items = Vec::new();
        for p in live {
            let key = key_of(p);
            let entry = self.entries.entry(key.clone()).or_default();
            let generation = p.meta().generation;
            if now + DUE_SLACK_SECS < entry.next_due && entry.generation == generation {
                continue;
            }
            entry.generation = generation;
            let ns = key.0.clone();
            let settings = match p.spec.settings() {
                Ok(s) => s,
                Err(e) => {
                    entry.interval = INVALID_SPEC_RECHECK_SECS;
                    entry.next_due = now + entry.interval;
                    items.push(Item {
                        key,
                        policy: p.clone(),
                        work: Work::Refuse(vec![Cond::new(
                            READY,
                            false,
                            "InvalidSpec",
                            e.to_string(),
                        )]),
                    });
                    continue;
                }
            };
            entry.interval = settings.interval_secs;
            entry.next_due = now + settings.interval_secs;
            let target = settings.target.clone();
            let winner = winners
                .get(&(ns.clone(), target.object()))
                .map(|w| w.1.clone())
                .unwrap_or_default();
            let refuse = |conds: Vec<Cond>| Item {
                key: key.clone(),
                policy: p.clone(),
                work: Work::Refuse(conds),
            };
            if winner != key.1 {
                let msg = format!(
                    "{} {} is already tuned by the older LatencyPolicy {winner}",
                    target.kind, target.name
                );
                items.push(refuse(vec![
                    Cond::new(CONFLICT, true, "SplitClaimed", msg.clone()),
                    Cond::new(READY, false, "Conflict", msg),
                ]));
                continue;
            }
            let no_conflict = Cond::new(
                CONFLICT,
                false,
                "NoConflict",
                "no other policy targets this split",
            );
            if let Some(why) = splits.unavailable(target.kind) {
                // The reason TrafficSplits always had; a route kind names itself.
                let reason = match target.kind {
                    Kind::TrafficSplit => "TrafficSplitCRDMissing",
                    _ => "TargetKindUnavailable",
                };
                items.push(refuse(vec![
                    no_conflict.clone(),
                    Cond::new(TARGET_FOUND, false, reason, why.clone()),
                    Cond::new(READY, false, reason, why),
                ]));
                continue;
            }
            let invalid_target = |reason: &'static str, why: String| {
                refuse(vec![
                    no_conflict.clone(),
                    Cond::new(TARGET_FOUND, false, reason, why.clone()),
                    Cond::new(READY, false, "InvalidTarget", why),
                ])
            };
            let Some(obj) = splits.split(target.kind, &ns, &target.name) else {
                let msg = format!("{} {ns}/{} not found", target.kind, target.name);
                items.push(refuse(vec![
                    no_conflict,
                    Cond::new(TARGET_FOUND, false, "NotFound", msg.clone()),
                    Cond::new(READY, false, "TargetNotFound", msg),
                ]));
                continue;
            };
            // Parsing clones the backend list; a split that did not change is parsed once.
            let rv = obj.metadata.resource_version.as_ref();
            let cached = entry
                .split_cache
                .as_ref()
                .filter(|(c, t, _)| rv == Some(c) && *t == target)
                .map(|(_, _, s)| s.clone());
            let parsed = match cached {
                Some(s) => Ok(s),
                None => target.parse(&obj).map(Arc::new),
            };
            entry.split_cache = match (&parsed, rv) {
                (Ok(s), Some(rv)) => Some((rv.clone(), target.clone(), s.clone())),
                _ => None,
            };
            let split = match parsed {
                Ok(s) if s.failover.is_some() => {
                    let msg = format!(
                        "{target} is controlled by linkerd-failover (label \
                         {FAILOVER_LABEL}); l3 leaves its weights alone"
                    );
                    items.push(refuse(vec![
                        Cond::new(CONFLICT, true, "ControlledByFailover", msg.clone()),
                        Cond::new(READY, false, "Conflict", msg),
                    ]));
                    continue;
                }
                Ok(s) if !s.backends.is_empty() => s,
                Ok(_) => {
                    let what = if target.kind.is_route() {
                        "the rule has no backendRefs"
                    } else {
                        "spec.backends is empty"
                    };
                    items.push(invalid_target("InvalidTarget", what.into()));
                    continue;
                }
                Err(e) => {
                    items.push(invalid_target(e.reason(), e.to_string()));
                    continue;
                }
            };
            let judgement = if settings.dry_run {
                None
            } else {
                match judge(&split, p.meta().generation.unwrap_or(0), now) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        items.push(invalid_target(e.reason(), e.to_string()));
                        continue;
                    }
                }
            };
            let gk = (settings.quantile.to_bits(), settings.window);
            let group = *groups.entry(gk).or_insert_with(|| {
                request.groups.push(RequestGroup {
                    quantile: settings.quantile,
                    window: settings.window,
                    backends: Vec::new(),
                });
                request.groups.len() - 1
            });
            request.groups[group]
                .backends
                .extend(split.backends.iter().map(|b| backend_key(&ns, b)));
            items.push(Item {
                key,
                policy: p.clone(),
                work: Work::Run(Box::new(RunWork {
                    settings,
                    target,
                    split,
                    group,
                    judgement,
                })),
            });
        }
        Plan { request, items }
    }

    /// Turn the source's answer into decisions. `now` is used when the snapshot carries no
    /// timestamp.
    pub fn decide(&mut self, now: f64, plan: Plan, snapshot: &Snapshot) -> Vec<Decision> {
        let t = if snapshot.timestamp > 0.0 {
            snapshot.timestamp
        } else {
            now
        };
        let now_time = status::time(t);
        let mut out = Vec::with_capacity(plan.items.len());
        for item in plan.items {
            let Some(entry) = self.entries.get_mut(&item.key) else {
                continue;
            };
            let run = match item.work {
                Work::Refuse(conds) => {
                    entry.state = None;
                    Self::drop_series(&self.metrics, &item.key);
                    RunResult {
                        conds,
                        ..RunResult::default()
                    }
                }
                Work::Run(work) => run_one(
                    &self.metrics,
                    &item.key,
                    entry,
                    t,
                    *work,
                    snapshot,
                    &item.policy,
                ),
            };
            let RunResult {
                conds,
                write,
                adopt,
                backends,
                window,
            } = run;
            let prev = entry
                .written
                .clone()
                .or_else(|| item.policy.status.clone())
                .unwrap_or_default();
            let generation = item.policy.meta().generation;
            let (conditions, transitions) =
                status::merge_conditions(&prev.conditions, &conds, generation, &now_time);
            entry.last_conditions = conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect();
            let last_weight_update = entry
                .last_weight_update
                .clone()
                .or(prev.last_weight_update.clone());
            out.push(Decision {
                key: item.key,
                policy: item.policy,
                write,
                adopt,
                status: LatencyPolicyStatus {
                    observed_generation: generation,
                    conditions,
                    last_weight_update,
                    backends,
                    scrape_interval: window
                        .and_then(|w| w.scrape_interval_secs)
                        .map(status::seconds),
                    query_window: window.map(|w| format!("{}s", w.window_secs)),
                },
                transitions,
                interval: entry.interval,
            });
        }
        out
    }

    /// The status last written for a policy, if any.
    pub fn written(&self, key: &Key) -> Option<&LatencyPolicyStatus> {
        self.entries.get(key).and_then(|e| e.written.as_ref())
    }

    /// Seconds since this replica last wrote the policy's status (infinite if it never did).
    pub fn status_age(&self, key: &Key, now: f64) -> f64 {
        self.entries
            .get(key)
            .filter(|e| e.written.is_some())
            .map_or(f64::INFINITY, |e| now - e.written_at)
    }

    /// Record what the leader did with a decision: a failure pauses the policy exponentially.
    pub fn record(&mut self, key: &Key, now: f64, outcome: &Outcome) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(w) = &outcome.written {
            e.last_write = Some(w.clone());
        }
        if let Some(s) = &outcome.status_written {
            e.written = Some(s.clone());
            e.written_at = now;
            e.last_weight_update = s.last_weight_update.clone();
        }
        if outcome.failed {
            e.failures = e.failures.saturating_add(1);
            let pause = (e.interval * 2f64.powi(e.failures.min(16) as i32)).min(MAX_BACKOFF_SECS);
            e.next_due = now + pause;
        } else {
            e.failures = 0;
        }
    }

    /// Policies by condition type and status, for `l3_policies`.
    pub fn condition_counts(&self) -> BTreeMap<(String, String), i64> {
        let mut m = BTreeMap::new();
        for e in self.entries.values() {
            for c in &e.last_conditions {
                *m.entry(c.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Approximate bytes of per-policy state held by the engine (for the benchmark).
    pub fn state_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, e)| {
                std::mem::size_of::<(Key, Entry)>()
                    + k.0.capacity()
                    + k.1.capacity()
                    + e.state.as_ref().map_or(0, |s| {
                        s.backends()
                            .map(|(n, _)| {
                                n.len()
                                    + std::mem::size_of::<crate::state::BackendState>()
                                    + std::mem::size_of::<String>()
                                    + 64
                            })
                            .sum::<usize>()
                            + std::mem::size_of::<SplitState>()
                    })
                    + e.written.as_ref().map_or(0, status_bytes)
            })
            .sum()
    }
}

fn status_bytes(s: &LatencyPolicyStatus) -> usize {
    std::mem::size_of::<LatencyPolicyStatus>()
        + s.conditions
            .iter()
            .map(|c| {
                std::mem::size_of_val(c)
                    + c.message.len()
                    + c.reason.len()
                    + c.type_.len()
                    + c.status.len()
            })
            .sum::<usize>()
        + s.backends
            .iter()
            .map(|b| std::mem::size_of::<BackendStatus>() + b.service.len())
            .sum::<usize>()
}

/// What one policy's computation decided.
#[derive(Default)]
struct RunResult {
    conds: Vec<Cond>,
    write: Option<WeightWrite>,
    adopt: Option<AdoptWrite>,
    backends: Vec<BackendStatus>,
    window: Option<WindowInfo>,
}

/// The Prometheus key of a backend: its Service, in the target's namespace `ns` unless the
/// backendRef names another.
fn backend_key(ns: &str, b: &SplitBackend) -> BackendKey {
    BackendKey {
        namespace: b.namespace.clone().unwrap_or_else(|| ns.to_owned()),
        service: b.name.clone(),
    }
}

/// The Event for an adopted foreign change.
fn adoption_event(split_name: &Target, split: &ParsedSplit, a: &Adoption) -> Transition {
    let current = serde_json::Value::Object(split.current_weights());
    let originals = serde_json::Value::Object(a.originals.clone());
    match a.change {
        ForeignChange::Weights => Transition {
            warning: true,
            reason: "ForeignWeights",
            note: format!(
                "{split_name}: another writer set the weights to {current}; l3 \
                 took them as the originals ({originals}) and pauses tuning for {FOREIGN_PAUSE_SECS}s"
            ),
        },
        ForeignChange::Backends => Transition {
            warning: false,
            reason: "BackendsChanged",
            note: format!(
                "{split_name}: backends changed by another writer (now {current}); \
                 originals are now {originals}"
            ),
        },
    }
}

/// One policy's computation.
fn run_one(
    metrics: &Metrics,
    key: &Key,
    entry: &mut Entry,
    t: f64,
    work: RunWork,
    snapshot: &Snapshot,
    policy: &LatencyPolicy,
) -> RunResult {
    let RunWork {
        settings,
        target: split_name,
        split,
        group,
        judgement,
    } = work;
    let settings = &settings;
    let ns = &key.0;
    if entry.state.is_none() || entry.filters != Some(settings.filters) {
        entry.state = SplitState::new(settings.filters).ok();
        entry.filters = Some(settings.filters);
    }
    let found = Cond::new(
        TARGET_FOUND,
        true,
        "Found",
        format!("{split_name} has {} backends", split.backends.len()),
    );
    let no_conflict = Cond::new(
        CONFLICT,
        false,
        "NoConflict",
        "no other policy targets this split",
    );
    let Some(state) = entry.state.as_mut() else {
        // Unreachable after validation, but never panic on user data.
        return RunResult {
            conds: vec![
                found,
                no_conflict,
                Cond::new(READY, false, "InvalidSpec", "filter settings are invalid"),
            ],
            ..RunResult::default()
        };
    };
    // Dropped backends lose their series when this policy's list is replaced below.
    let _dropped = state.sync_backends(split.names());
    let errors: Vec<_> = snapshot
        .errors
        .iter()
        .filter(|e| e.group == group)
        .collect();
    let answers = snapshot.groups.get(group);
    let names: Vec<String> = state.backends().map(|(n, _)| n.to_owned()).collect();
    let ours = entry
        .last_write
        .as_ref()
        .filter(|(rv, _)| rv.is_some() && *rv == split.resource_version)
        .map(|(_, w)| w);
    let current_raw: Vec<f64> = names
        .iter()
        .map(|n| match ours {
            Some(w) => w
                .iter()
                .find(|(s, _)| s == n)
                .map_or(0.0, |(_, w)| f64::from(*w)),
            None => split
                .backends
                .iter()
                .find(|b| &b.service == n)
                .map_or(0.0, |b| b.weight),
        })
        .collect();
    let current = safety::shares(&current_raw);
    let total = settings.pipeline.total_weight;
    let mut conds = vec![found, no_conflict];
    let mut write = None;
    // l3 writes only when it is the split's only writer and has nothing to adopt.
    let mut alone = true;
    let mut adopt = None;
    if let Some(j) = &judgement {
        conds.push(contested_condition(&j.state));
        alone = j.adoption.is_none() && j.state == WriterState::Alone;
        adopt = j.adoption.clone().map(|adoption| AdoptWrite {
            event: adoption_event(&split_name, &split, &adoption),
            target: split_name.clone(),
            split: (*split).clone(),
            adoption,
        });
    }
    let window = snapshot.windows.get(group).copied();
    let too_short = window.filter(|w| w.too_short);
    let weights: Vec<u32> = match (too_short, errors.first(), answers) {
        (None, None, Some(answers)) => {
            let samples: BTreeMap<String, BackendSample> = names
                .iter()
                .map(|n| {
                    let k = split.backends.iter().find(|b| &b.service == n).map_or_else(
                        || BackendKey {
                            namespace: ns.clone(),
                            service: n.clone(),
                        },
                        |b| backend_key(ns, b),
                    );
                    (
                        n.clone(),
                        answers.get(&k).map(|s| s.to_sample()).unwrap_or_default(),
                    )
                })
                .collect();
            conds.push(Cond::new(
                METRICS_AVAILABLE,
                true,
                "QueriesSucceeded",
                "the last Prometheus queries succeeded",
            ));
            match state.step_l3(t, &samples, &settings.pipeline) {
                Ok((proposed, rejected)) => {
                    for (backend, r) in &rejected {
                        tracing::debug!(namespace = %ns, policy = %key.1, %backend, signal = r.signal.as_str(), error = %r.error, "sample refused");
                    }
                    let limited = safety::limit_step(
                        &current,
                        &proposed,
                        total,
                        settings.pipeline.min_share,
                        settings.max_share_step,
                    );
                    let limited_shares: Vec<f64> = limited
                        .iter()
                        .map(|&w| f64::from(w) / f64::from(total))
                        .collect();
                    // The finalizer is on, recorded for this very split: the restore is covered.
                    let adopted = policy.adopted_target() == Some(split_name.record());
                    if settings.dry_run {
                        conds.push(Cond::new(
                            READY,
                            true,
                            "DryRun",
                            "weights are computed and reported, never written",
                        ));
                    } else {
                        conds.push(Cond::new(
                            READY,
                            true,
                            "WeightsComputed",
                            "weights are computed every interval",
                        ));
                        if safety::confirm_write(
                            &mut entry.pending,
                            &current,
                            &limited_shares,
                            settings.hysteresis,
                            adopted && alone,
                        ) {
                            write = Some(WeightWrite {
                                target: split_name,
                                split: (*split).clone(),
                                weights: names
                                    .iter()
                                    .cloned()
                                    .zip(limited.iter().copied())
                                    .collect(),
                            });
                        }
                    }
                    limited
                }
                Err(e) => {
                    conds.push(Cond::new(READY, false, "InvalidSpec", e.to_string()));
                    current
                        .iter()
                        .map(|s| (s * f64::from(total)).round() as u32)
                        .collect()
                }
            }
        }
        (short, first, _) => {
            // Keep the current weights; the filters decay toward their defaults.
            let refused = state.update(t, &BTreeMap::new());
            if !refused.is_empty() {
                tracing::debug!(namespace = %ns, policy = %key.1, refused = refused.len(), "decay refused (out-of-order time)");
            }
            let (reason, why) = match (short, first) {
                (Some(w), _) => (
                    "WindowTooShort",
                    format!(
                        "queryWindow {}s is shorter than two scrape intervals: the scrape \
                         interval is {}, so rate() needs at least {}; use `auto` or a longer window",
                        w.window_secs,
                        w.scrape_interval_secs
                            .map_or_else(|| "unknown".into(), status::seconds),
                        w.scrape_interval_secs.map_or_else(
                            || "unknown".into(),
                            |s| status::seconds(crate::algorithm::window::min_window(s))
                        ),
                    ),
                ),
                (None, Some(e)) => (
                    "QueryFailed",
                    format!("{} query failed ({}): {}", e.signal, e.reason, e.message),
                ),
                (None, None) => (
                    "QueryFailed",
                    "no answer for this policy's query group".to_owned(),
                ),
            };
            conds.push(Cond::new(METRICS_AVAILABLE, false, reason, why.clone()));
            conds.push(Cond::new(
                READY,
                false,
                "MetricsUnavailable",
                format!("keeping the current weights: {why}"),
            ));
            current
                .iter()
                .map(|s| (s * f64::from(total)).round() as u32)
                .collect()
        }
    };
    let mut backends = Vec::with_capacity(names.len());
    let mut series = Vec::with_capacity(names.len());
    for ((name, b), w) in state.backends().zip(&weights) {
        let s = b.signals();
        let share = f64::from(*w) / f64::from(total);
        series.push((
            name.to_owned(),
            [
                f64::from(*w),
                share,
                s.latency_secs,
                s.success_rate,
                s.rps,
                s.inflight,
            ],
        ));
        backends.push(BackendStatus {
            service: name.to_owned(),
            weight: *w,
            // Three decimals of a share is a tenth of a weight point; three significant
            // digits of latency, RPS and in-flight is finer than anyone reads them. Success
            // rate keeps four decimals: 99.99 % and 99.9 % are different services.
            share: status::round(share, 3),
            latency_seconds: status::significant(s.latency_secs, 3),
            success_rate: status::round(s.success_rate, 4),
            requests_per_second: status::significant(s.rps, 3),
            inflight: status::significant(s.inflight, 3),
            last_sample_time: b.last_sample().map(status::time),
        });
    }
    metrics.backends.set_policy(ns, &key.1, series);
    RunResult {
        conds,
        write,
        adopt,
        backends,
        window,
    }
}

/// What the leader did with one decision.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The status now on the object, if it was written.
    pub status_written: Option<LatencyPolicyStatus>,
    /// Whether a weights write happened.
    pub weights_written: bool,
    /// The resourceVersion the written weights were computed from, and the weights.
    pub written: Option<LastWrite>,
    /// Whether a write failed (the policy backs off).
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::LatencyPolicySpec;
    use crate::operator::trafficsplit::SplitVersion;
    use serde_json::{Value, json};

    fn p(ns: &str, name: &str, target: &str, created: i64) -> Arc<LatencyPolicy> {
        let mut p = LatencyPolicy::new(name, LatencyPolicySpec::for_split(target));
        p.metadata.namespace = Some(ns.into());
        p.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        Arc::new(p)
    }

    #[test]
    fn split_changes_map_to_the_policies_that_target_them() {
        let ps = vec![
            p("a", "one", "web", 0),
            p("a", "two", "api", 0),
            p("b", "three", "web", 0),
        ];
        let split = trafficsplit::object(SplitVersion::V1alpha1, "a", "web", &[]);
        let refs = policies_for_split(&ps, Kind::TrafficSplit, &split);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "one");
        assert_eq!(refs[0].namespace.as_deref(), Some("a"));
    }

    #[test]
    fn the_oldest_live_policy_owns_a_split() {
        let old = p("a", "old", "web", 0);
        let new = p("a", "new", "web", 10);
        let ps = vec![new.clone(), old.clone()];
        assert_eq!(owner(&ps, &new).name_any(), "old");
        assert_eq!(owner(&ps, &old).name_any(), "old");
        // A deleting owner still owns the split for its own cleanup, but not for the others.
        let mut gone = (*old).clone();
        gone.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let ps = vec![new.clone(), Arc::new(gone.clone())];
        assert_eq!(owner(&ps, &gone).name_any(), "old");
        assert_eq!(owner(&ps, &new).name_any(), "new");
        // Responsibility for a split the candidate no longer targets.
        assert!(owns_split(&ps, &new, "api"));
        assert!(!owns_split(std::slice::from_ref(&old), &new, "web"));
    }

    fn adopted(weights: Value, applied: Value, history: Option<&ForeignHistory>) -> ParsedSplit {
        let backends: Vec<(&str, Value)> = weights
            .as_object()
            .unwrap()
            .iter()
            .map(|(s, w)| (s.as_str(), w.clone()))
            .collect();
        let mut obj = trafficsplit::object(SplitVersion::V1alpha2, "a", "web", &backends);
        let mut a = std::collections::BTreeMap::from([
            (
                trafficsplit::ORIGINAL_WEIGHTS_ANNOTATION.to_owned(),
                r#"{"x":1,"y":1}"#.to_owned(),
            ),
            (
                trafficsplit::APPLIED_WEIGHTS_ANNOTATION.to_owned(),
                applied.to_string(),
            ),
        ]);
        if let Some(h) = history {
            a.insert(
                trafficsplit::FOREIGN_CHANGES_ANNOTATION.to_owned(),
                serde_json::to_string(h).unwrap(),
            );
        }
        obj.metadata.annotations = Some(a);
        trafficsplit::parse(&obj).unwrap()
    }

    #[test]
    fn l3_alone_tunes_and_a_foreign_change_is_adopted_then_paused() {
        let ours = adopted(
            json!({"x": 700, "y": 300}),
            json!({"x": 700, "y": 300}),
            None,
        );
        let j = judge(&ours, 1, 1000.0).unwrap();
        assert_eq!(j.state, WriterState::Alone);
        assert!(j.adoption.is_none());
        // Someone drains y.
        let drained = adopted(json!({"x": 700, "y": 0}), json!({"x": 700, "y": 300}), None);
        let j = judge(&drained, 1, 1000.0).unwrap();
        let a = j.adoption.unwrap();
        assert_eq!(a.change, ForeignChange::Weights);
        assert_eq!(
            a.originals,
            json!({"x": 1, "y": 0}).as_object().unwrap().clone()
        );
        assert_eq!(a.history.times, vec![1000]);
        assert!(!a.history.contested);
        assert_eq!(
            j.state,
            WriterState::Paused {
                until: 1000 + FOREIGN_PAUSE_SECS
            }
        );
        // After adoption (applied = current) the pause runs out.
        let after = adopted(
            json!({"x": 700, "y": 0}),
            json!({"x": 700, "y": 0}),
            Some(&a.history),
        );
        let j = judge(&after, 1, 1100.0).unwrap();
        assert!(j.adoption.is_none());
        assert!(matches!(j.state, WriterState::Paused { .. }));
        let j = judge(&after, 1, 1000.0 + FOREIGN_PAUSE_SECS as f64).unwrap();
        assert_eq!(j.state, WriterState::Alone);
    }

    #[test]
    fn repeated_foreign_changes_contest_the_split_until_the_generation_changes() {
        // Someone set 1/1 over l3's 700/300, with earlier changes at `times` (generation 4).
        let revert = |times: Vec<i64>| {
            let h = ForeignHistory {
                generation: 4,
                times,
                contested: false,
            };
            adopted(
                json!({"x": 1, "y": 1}),
                json!({"x": 700, "y": 300}),
                Some(&h),
            )
        };
        let j = judge(&revert(vec![1000, 1300]), 4, 1500.0).unwrap();
        let a = j.adoption.unwrap();
        assert!(a.history.contested, "third change within 10 minutes");
        assert_eq!(j.state, WriterState::Contested { changes: 3 });
        // Contested stays, however long it is quiet, for this generation.
        let quiet = adopted(
            json!({"x": 1, "y": 1}),
            json!({"x": 1, "y": 1}),
            Some(&a.history),
        );
        let j = judge(&quiet, 4, 1500.0 + 10.0 * CONTEST_WINDOW_SECS as f64).unwrap();
        assert!(matches!(j.state, WriterState::Contested { .. }));
        // A new spec starts afresh.
        let j = judge(&quiet, 5, 1600.0).unwrap();
        assert_eq!(j.state, WriterState::Alone);
        // Changes spread beyond the window never add up to a contest.
        let j = judge(&revert(vec![100, 1000]), 4, 1700.0).unwrap();
        assert!(!j.adoption.unwrap().history.contested);
    }

    #[test]
    fn an_added_backend_is_adopted_without_a_pause() {
        let added = adopted(
            json!({"x": 600, "y": 400, "z": 300}),
            json!({"x": 600, "y": 400}),
            None,
        );
        let j = judge(&added, 1, 1000.0).unwrap();
        let a = j.adoption.unwrap();
        assert_eq!(a.change, ForeignChange::Backends);
        assert!(a.history.times.is_empty());
        assert_eq!(
            a.originals,
            json!({"x": 10, "y": 10, "z": 6})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(j.state, WriterState::Alone);
    }

    fn engine() -> Engine {
        Engine::new(Metrics::new(&prometheus::Registry::new()).expect("metrics register"))
    }

    #[test]
    fn a_new_generation_is_due_at_once() {
        let mut e = engine();
        let splits: HashMap<Key, Arc<DynamicObject>> = HashMap::new();
        let mut policy = LatencyPolicy::clone(&p("a", "one", "web", 0));
        policy.metadata.generation = Some(1);
        let v1 = vec![Arc::new(policy.clone())];
        assert_eq!(e.plan(1000.0, &v1, &splits).len(), 1);
        assert_eq!(e.plan(1001.0, &v1, &splits).len(), 0, "not due yet");
        policy.metadata.generation = Some(2);
        let v2 = vec![Arc::new(policy)];
        assert_eq!(
            e.plan(1001.0, &v2, &splits).len(),
            1,
            "a spec change is due now"
        );
        assert_eq!(e.plan(1002.0, &v2, &splits).len(), 0);
    }

    #[test]
    fn a_route_kind_not_enabled_or_not_served_is_a_clear_condition() {
        let mut e = engine();
        let mut route = LatencyPolicy::clone(&p("a", "one", "web", 0));
        route.spec.target_ref.kind = crate::operator::crd::TargetKind::HttpRoute;
        let ps = vec![Arc::new(route)];
        let disabled = Lookups {
            stores: Vec::new(),
            resources: Resources::split(SplitVersion::V1alpha1),
        };
        let mut missing = Resources::split(SplitVersion::V1alpha1);
        missing.kinds.insert(Kind::HttpRoute, None);
        let not_served = Lookups {
            stores: Vec::new(),
            resources: missing,
        };
        for (lookup, says) in [
            (&disabled, "--target-kinds"),
            (&not_served, "Gateway API standard CRDs"),
        ] {
            let plan = e.plan(1000.0, &ps, lookup);
            let d = e.decide(1000.0, plan, &Snapshot::default());
            let c = d[0]
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == TARGET_FOUND)
                .expect("TargetFound is set");
            assert_eq!(c.reason, "TargetKindUnavailable");
            assert!(c.message.contains(says), "{}", c.message);
            // A fresh engine, so that the policy is due at once for the next lookup.
            e = engine();
        }
    }

    #[test]
    fn a_missing_trafficsplit_crd_is_reported_on_every_policy() {
        let mut e = engine();
        let ps = vec![p("a", "one", "web", 0), p("b", "two", "api", 0)];
        let plan = e.plan(1000.0, &ps, &CrdMissing);
        let decisions = e.decide(1000.0, plan, &Snapshot::default());
        assert_eq!(decisions.len(), 2);
        for d in decisions {
            let c = d
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == TARGET_FOUND)
                .expect("TargetFound is set");
            assert_eq!(c.status, "False");
            assert_eq!(c.reason, "TrafficSplitCRDMissing");
            assert!(c.message.contains("linkerd-smi"), "{}", c.message);
            assert!(d.write.is_none());
        }
    }
}
