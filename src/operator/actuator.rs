//! Every write l3 makes to the API server: TrafficSplit weights (adopting the split on the
//! first write), restoring the original weights, the policy's finalizer and its status.
//!
//! Each write is a JSON merge patch carrying the resourceVersion it was computed from, bounded
//! by a timeout and counted; a 409 Conflict is retried on a fresh read, a bounded number of
//! times. Every write and every retry first takes a [`WritePermit`] from the replica's
//! [`Leadership`]: no permit (not the leader, or the lease deadline passed), no request, and
//! each request is cut off when the deadline comes.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, instrument};

use super::crd::{FINALIZER, LatencyPolicy, LatencyPolicyStatus};
use super::leader::{Leadership, WritePermit};
use super::metrics::Metrics;
use super::trafficsplit::{self, ParsedSplit, SplitVersion, WeightForm};
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
}

/// Writes to the API server.
#[derive(Clone)]
pub struct Actuator {
    client: kube::Client,
    version: SplitVersion,
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
        Self {
            client,
            version,
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

    fn splits(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.version.api_resource())
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

    async fn fresh_split(&self, ns: &str, name: &str) -> Result<ParsedSplit> {
        let obj = tokio::time::timeout(self.timeout, self.splits(ns).get(name))
            .await
            .map_err(|_| Error::Timeout("read"))?
            .map_err(Error::Kube)?;
        Ok(trafficsplit::parse(&obj)?)
    }

    /// Set the split's weights (`service → weight out of 1000`), recording the original
    /// weights first if l3 never adopted it. `split` is the object the weights were computed
    /// from; on a 409 the split is read again and, if its backends are still the same, the
    /// same weights are written on top of the fresh version.
    #[instrument(skip_all, fields(namespace = %ns, split = %name))]
    pub async fn write_weights(
        &self,
        ns: &str,
        name: &str,
        split: &ParsedSplit,
        weights: &[(String, u32)],
    ) -> Result<WriteOutcome> {
        let w: Vec<(&str, u32)> = weights.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        let mut current = split.clone();
        for attempt in 1..=MAX_ATTEMPTS {
            let form = match self.version {
                SplitVersion::V1alpha2 => WeightForm::Integer,
                SplitVersion::V1alpha1 => current.form,
            };
            let patch = current.weights_patch(&w, form, true);
            let api = self.splits(ns);
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
                    current = self.fresh_split(ns, name).await?;
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

    /// Put back the weights recorded when l3 adopted the split and drop the record. Returns
    /// whether anything was written (nothing if the split is gone or was never adopted).
    #[instrument(skip_all, fields(namespace = %ns, split = %name))]
    pub async fn restore(&self, ns: &str, name: &str) -> Result<bool> {
        for attempt in 1..=MAX_ATTEMPTS {
            let current = match self.fresh_split(ns, name).await {
                Ok(c) => c,
                Err(Error::Kube(kube::Error::Api(s))) if s.is_not_found() => return Ok(false),
                Err(e) => return Err(e),
            };
            let Some(patch) = current.restore_patch()? else {
                return Ok(false);
            };
            let api = self.splits(ns);
            let pp = PatchParams::apply(FIELD_MANAGER);
            match self
                .call("restore", api.patch(name, &pp, &Patch::Merge(&patch)))
                .await
            {
                Ok(_) => return Ok(true),
                Err(Error::Kube(kube::Error::Api(s)))
                    if s.is_conflict() && attempt < MAX_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflicts(MAX_ATTEMPTS))
    }

    /// Add or remove l3's finalizer on a policy, keeping any other finalizer.
    #[instrument(skip_all, fields(namespace = %policy.namespace().unwrap_or_default(), policy = %policy.name_any()))]
    pub async fn set_finalizer(&self, policy: &LatencyPolicy, present: bool) -> Result<()> {
        let ns = policy.namespace().unwrap_or_default();
        let name = policy.name_any();
        let mut obj = policy.clone();
        for attempt in 1..=MAX_ATTEMPTS {
            let mut fins: Vec<String> = obj.finalizers().to_vec();
            let has = fins.iter().any(|f| f == FINALIZER);
            if has == present {
                return Ok(());
            }
            if present {
                fins.push(FINALIZER.to_owned());
            } else {
                fins.retain(|f| f != FINALIZER);
            }
            let patch = json!({"metadata": {
                "finalizers": fins,
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
