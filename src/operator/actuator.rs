//! Every write l3 makes to the API server: target weights (a TrafficSplit's, or a route rule's
//! backendRefs'; adopting the target on the first write), adopting another writer's weights,
//! restoring the original weights, the policy's finalizer and its status. Every target kind goes
//! through the same code: only the [`Target`] (which resource, which rule) differs.
//!
//! Each write is a JSON merge patch carrying the resourceVersion it was computed from, bounded
//! by a timeout and counted; a 409 Conflict is retried on a fresh read, a bounded number of
//! times. Every write and every retry first takes a [`WritePermit`] from the replica's
//! [`Leadership`]: no permit (not the leader, or the lease deadline passed), no request, and
//! each request is cut off when the deadline comes. A retry happens only if the fresh read
//! shows that l3 still owns the weights (its original-weights record is there and nobody else
//! changed them), and it never adopts a split: a split that lost its record was restored
//! meanwhile, and writing it again would undo the restore.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, instrument};

use super::crd::{ADOPTED_TARGET_ANNOTATION, FINALIZER, LatencyPolicy, LatencyPolicyStatus};
use super::engine::Adoption;
use super::leader::{Leadership, WritePermit};
use super::metrics::Metrics;
use super::target::{Kind, Resources, Target};
use super::trafficsplit::{ORIGINAL_WEIGHTS_ANNOTATION, ParsedSplit, SplitVersion, WeightForm};
use super::{Error, Result};

/// Field manager of every l3 write.
pub const FIELD_MANAGER: &str = "l3-operator";
/// Attempts of a write that keeps hitting 409 Conflict.
pub const MAX_ATTEMPTS: usize = 3;

/// What a weights write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The split now has the weights.
    Written,
    /// The split's backends changed under us; the next cycle recomputes.
    BackendsChanged,
    /// The fresh read already had these weights (our own earlier write): nothing to do.
    AlreadySet,
    /// The split lost l3's original-weights record meanwhile (it was restored): l3 gives up.
    Restored,
    /// Another writer changed the weights meanwhile: the next cycle adopts them.
    ForeignChange,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The original weights are back and l3's records are gone.
    Restored,
    /// The split carries no record of l3's: nothing to restore.
    NotAdopted,
    /// The split is gone.
    Gone,
    /// The split cannot be restored and never will be without a human: l3 releases its
    /// finalizer anyway and reports the originals, so that no deletion blocks.
    Impossible {
        /// Why.
        why: String,
        /// The original-weights annotation as found, if it could be read at all.
        originals: Option<String>,
    },
}

/// Writes to the API server.
#[derive(Clone)]
pub struct Actuator {
    client: kube::Client,
    resources: Resources,
    metrics: Metrics,
    timeout: Duration,
    leadership: Leadership,
}

impl Actuator {
    /// An actuator writing TrafficSplits of `version`, each write bounded by `timeout`. On its
    /// own it writes unconditionally; [`super::controller::Operator::new`] ties it to the
    /// replica's leadership with [`Actuator::with_leadership`].
    pub fn new(
        client: kube::Client,
        version: SplitVersion,
        metrics: Metrics,
        timeout: Duration,
    ) -> Self {
        Self::for_kinds(client, Resources::split(version), metrics, timeout)
    }

    /// An actuator writing the served kinds of `resources`.
    pub fn for_kinds(
        client: kube::Client,
        resources: Resources,
        metrics: Metrics,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            resources,
            metrics,
            timeout,
            leadership: Leadership::always(),
        }
    }

    /// Write only while `leadership` allows it.
    #[must_use]
    pub fn with_leadership(self, leadership: Leadership) -> Self {
        Self { leadership, ..self }
    }

    /// The API of the target's kind; a kind that is not enabled or not served is an error
    /// naming the fix.
    fn splits(&self, ns: &str, kind: Kind) -> Result<Api<DynamicObject>> {
        let ar = self
            .resources
            .resource(kind)
            .map_err(Error::TargetUnavailable)?;
        Ok(Api::namespaced_with(self.client.clone(), ns, ar))
    }

    fn policies(&self, ns: &str) -> Api<LatencyPolicy> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Run one API write under the timeout and count it; refused without a request when this
    /// replica may not write, and cut off at the leadership deadline (the write future is only
    /// polled, i.e. sent, once the permit is held).
    async fn call<T>(
        &self,
        kind: &'static str,
        f: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        let Some(permit) = self.leadership.write_permit() else {
            return Err(Error::NotLeader(kind));
        };
        let limit = self.timeout.min(permit.remaining());
        let start = Instant::now();
        let r = match tokio::time::timeout(limit, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Kube(e)),
            Err(_) if limit < self.timeout => Err(Error::LeaseDeadline(kind)),
            Err(_) => Err(Error::Timeout(kind)),
        };
        drop::<WritePermit>(permit);
        self.metrics
            .write(kind, r.is_ok(), start.elapsed().as_secs_f64());
        r
    }

    async fn fresh_object(&self, ns: &str, target: &Target) -> Result<DynamicObject> {
        let api = self.splits(ns, target.kind)?;
        tokio::time::timeout(self.timeout, api.get(&target.name))
            .await
            .map_err(|_| Error::Timeout("read"))?
            .map_err(Error::Kube)
    }

    async fn fresh_split(&self, ns: &str, target: &Target) -> Result<ParsedSplit> {
        Ok(target.parse(&self.fresh_object(ns, target).await?)?)
    }

    /// Whether the TrafficSplits are served as v1alpha2 (integer weights).
    fn split_v1alpha2(&self) -> bool {
        self.resources
            .resource(Kind::TrafficSplit)
            .is_ok_and(|ar| ar.version == SplitVersion::V1alpha2.as_str())
    }

    /// Whether weights written to the cluster must be whole numbers: v1alpha2's and the
    /// routes' schemas say so, and a split spelled in integers stays so.
    fn integers_only(&self, target: &Target, split: &ParsedSplit) -> bool {
        target.kind.is_route() || self.split_v1alpha2() || split.form == WeightForm::Integer
    }

    /// Set the split's weights (`service → weight out of 1000`), recording the original
    /// weights first if l3 never adopted it. `split` is the object the weights were computed
    /// from; on a 409 the split is read again and the same weights are written on top of the
    /// fresh version only if it still carries l3's original-weights record, its weights are
    /// still the ones l3 applied, and its backends are the same.
    #[instrument(skip_all, fields(namespace = %ns, object = %target))]
    pub async fn write_weights(
        &self,
        ns: &str,
        target: &Target,
        split: &ParsedSplit,
        weights: &[(String, u32)],
    ) -> Result<WriteOutcome> {
        let name = target.name.as_str();
        let w: Vec<(&str, u32)> = weights.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        let mut current = split.clone();
        for attempt in 1..=MAX_ATTEMPTS {
            let form = if self.integers_only(target, &current) {
                WeightForm::Integer
            } else {
                current.form
            };
            let patch = current.weights_patch(&w, form, true);
            let api = self.splits(ns, target.kind)?;
            let pp = PatchParams::apply(FIELD_MANAGER);
            match self
                .call("weights", api.patch(name, &pp, &Patch::Merge(&patch)))
                .await
            {
                Ok(_) => return Ok(WriteOutcome::Written),
                Err(Error::Kube(kube::Error::Api(s)))
                    if s.is_conflict() && attempt < MAX_ATTEMPTS =>
                {
                    debug!(attempt, "split changed meanwhile, retrying on a fresh read");
                    current = self.fresh_split(ns, target).await?;
                    if current.original.is_none() {
                        // Restored meanwhile (or, on a first write, adopted by no one yet):
                        // a retry must not adopt, the next cycle decides afresh.
                        return Ok(WriteOutcome::Restored);
                    }
                    if current.foreign_change()?.is_some() {
                        return Ok(WriteOutcome::ForeignChange);
                    }
                    let mut a: Vec<&str> = current.names().collect();
                    let mut b: Vec<&str> = split.names().collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    if a != b {
                        return Ok(WriteOutcome::BackendsChanged);
                    }
                    if has_weights(&current, &w) {
                        return Ok(WriteOutcome::AlreadySet);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflicts(MAX_ATTEMPTS))
    }

    /// Record another writer's weights as they are (see [`Adoption`]), guarded by the
    /// resourceVersion they were judged on. Returns false, writing nothing, if the split
    /// changed meanwhile: the next cycle judges the fresh version.
    #[instrument(skip_all, fields(namespace = %ns, object = %target))]
    pub async fn adopt(
        &self,
        ns: &str,
        target: &Target,
        split: &ParsedSplit,
        adoption: &Adoption,
    ) -> Result<bool> {
        let patch = split.adopt_patch(&adoption.originals, &adoption.history);
        let api = self.splits(ns, target.kind)?;
        let pp = PatchParams::apply(FIELD_MANAGER);
        match self
            .call("adopt", api.patch(&target.name, &pp, &Patch::Merge(&patch)))
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Kube(kube::Error::Api(s))) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Put back the weights recorded when l3 adopted the split and drop l3's records. A split
    /// that cannot be read, parsed or written for good (403, 422, a broken record) is
    /// [`RestoreOutcome::Impossible`], not an error: the caller must not block on it.
    #[instrument(skip_all, fields(namespace = %ns, object = %target))]
    pub async fn restore(&self, ns: &str, target: &Target) -> Result<RestoreOutcome> {
        for attempt in 1..=MAX_ATTEMPTS {
            let obj = match self.fresh_object(ns, target).await {
                Ok(o) => o,
                Err(e) => return final_failure(e, None),
            };
            let recorded = obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINAL_WEIGHTS_ANNOTATION))
                .cloned();
            let patch = target.parse(&obj).and_then(|current| {
                let integers = self.integers_only(target, &current);
                current.restore_patch(integers)
            });
            let patch = match patch {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(RestoreOutcome::NotAdopted),
                Err(e) => {
                    return Ok(RestoreOutcome::Impossible {
                        why: e.to_string(),
                        originals: recorded,
                    });
                }
            };
            let api = self.splits(ns, target.kind)?;
            let pp = PatchParams::apply(FIELD_MANAGER);
            match self
                .call(
                    "restore",
                    api.patch(&target.name, &pp, &Patch::Merge(&patch)),
                )
                .await
            {
                Ok(_) => return Ok(RestoreOutcome::Restored),
                Err(Error::Kube(kube::Error::Api(s)))
                    if s.is_conflict() && attempt < MAX_ATTEMPTS => {}
                Err(e) => return final_failure(e, recorded),
            }
        }
        Err(Error::Conflicts(MAX_ATTEMPTS))
    }

    /// Add l3's finalizer to a policy together with the record of the split it adopts
    /// (`Some(target)`), or remove both (`None`), keeping any other finalizer.
    #[instrument(skip_all, fields(namespace = %policy.namespace().unwrap_or_default(), policy = %policy.name_any()))]
    pub async fn set_finalizer(&self, policy: &LatencyPolicy, target: Option<&str>) -> Result<()> {
        let ns = policy.namespace().unwrap_or_default();
        let name = policy.name_any();
        let present = target.is_some();
        let mut obj = policy.clone();
        for attempt in 1..=MAX_ATTEMPTS {
            let mut fins: Vec<String> = obj.finalizers().to_vec();
            let has = fins.iter().any(|f| f == FINALIZER);
            let recorded = obj.annotations().get(ADOPTED_TARGET_ANNOTATION);
            if has == present && recorded.map(String::as_str) == target {
                return Ok(());
            }
            if present && !has {
                fins.push(FINALIZER.to_owned());
            } else if !present {
                fins.retain(|f| f != FINALIZER);
            }
            let patch = json!({"metadata": {
                "finalizers": fins,
                "annotations": { ADOPTED_TARGET_ANNOTATION: target },
                "resourceVersion": obj.meta().resource_version,
            }});
            let api = self.policies(&ns);
            let pp = PatchParams::apply(FIELD_MANAGER);
            match self
                .call("finalizer", api.patch(&name, &pp, &Patch::Merge(&patch)))
                .await
            {
                Ok(_) => return Ok(()),
                Err(Error::Kube(kube::Error::Api(s))) if s.is_not_found() && !present => {
                    return Ok(());
                }
                Err(Error::Kube(kube::Error::Api(s)))
                    if s.is_conflict() && attempt < MAX_ATTEMPTS =>
                {
                    obj = tokio::time::timeout(self.timeout, api.get(&name))
                        .await
                        .map_err(|_| Error::Timeout("read"))?
                        .map_err(Error::Kube)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflicts(MAX_ATTEMPTS))
    }

    /// Replace the policy's status (the status subresource; conditions are sent whole).
    #[instrument(skip_all, fields(namespace = %ns, policy = %name))]
    pub async fn write_status(
        &self,
        ns: &str,
        name: &str,
        status: &LatencyPolicyStatus,
    ) -> Result<()> {
        let patch: Value = json!({ "status": status });
        let api = self.policies(ns);
        let pp = PatchParams::apply(FIELD_MANAGER);
        self.call("status", api.patch_status(name, &pp, &Patch::Merge(&patch)))
            .await
            .map(|_| ())
    }
}

/// Sort a failed read or write of a split being restored: gone, impossible for good (the
/// caller releases its finalizer), or worth retrying (an error).
fn final_failure(e: Error, originals: Option<String>) -> Result<RestoreOutcome> {
    match e {
        Error::Kube(kube::Error::Api(s)) if s.is_not_found() => Ok(RestoreOutcome::Gone),
        // 403: l3's RoleBinding went with a terminating namespace; 422: the API server
        // refuses the originals. Neither heals by retrying.
        Error::Kube(kube::Error::Api(s)) if s.is_forbidden() || s.code == 422 => {
            Ok(RestoreOutcome::Impossible {
                why: format!("{} ({})", s.message, s.code),
                originals,
            })
        }
        Error::Split(e) => Ok(RestoreOutcome::Impossible {
            why: e.to_string(),
            originals,
        }),
        // The kind is no longer enabled or served: nothing l3 can write.
        Error::TargetUnavailable(why) => Ok(RestoreOutcome::Impossible { why, originals }),
        e => Err(e),
    }
}

/// Whether `split` already carries exactly `weights` (out of 1000).
fn has_weights(split: &ParsedSplit, weights: &[(&str, u32)]) -> bool {
    let scale = if split.form == WeightForm::Milli {
        1000.0
    } else {
        1.0
    };
    weights.iter().all(|(n, w)| {
        split
            .backends
            .iter()
            .find(|b| b.service == *n)
            .is_some_and(|b| (b.weight * scale - f64::from(*w)).abs() < 1e-6)
    })
}
