//! Readiness: what stops l3 from doing its job (a missing CRD, a missing permission, an
//! unreachable API server), found by periodic checks, served by `/readyz` with the reason and
//! logged once per change with the fix. l3 never waits silently.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};
use tracing::{error, info};

use super::crd::LatencyPolicy;
use super::is_unreachable;

/// The fix for a missing LatencyPolicy CRD.
pub const INSTALL_CRD: &str = "install it: kubectl apply -f crds/latencypolicies.l3.dev.yaml";

/// One API permission l3 needs.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource, with `/subresource` if any.
    pub resource: &'static str,
    /// Verb.
    pub verb: &'static str,
}

const fn need(group: &'static str, resource: &'static str, verb: &'static str) -> Need {
    Need {
        group,
        resource,
        verb,
    }
}

/// Permissions in each watched scope with the default target kinds (TrafficSplit only).
pub const SCOPE_NEEDS: &[Need] = &[
    need("l3.dev", "latencypolicies", "list"),
    need("l3.dev", "latencypolicies", "watch"),
    need("l3.dev", "latencypolicies", "patch"),
    need("l3.dev", "latencypolicies/status", "patch"),
    need("split.smi-spec.io", "trafficsplits", "list"),
    need("split.smi-spec.io", "trafficsplits", "watch"),
    need("split.smi-spec.io", "trafficsplits", "patch"),
    need("events.k8s.io", "events", "create"),
];

/// Permissions in each watched scope for the enabled target `kinds`: list, watch and patch on
/// each kind's resource, besides the policies' and the Events'.
pub fn scope_needs(kinds: &[super::target::Kind]) -> Vec<Need> {
    let mut needs: Vec<Need> = SCOPE_NEEDS
        .iter()
        .filter(|n| n.group != "split.smi-spec.io")
        .copied()
        .collect();
    for k in kinds {
        for verb in ["list", "watch", "patch"] {
            needs.push(need(k.group(), k.plural(), verb));
        }
    }
    needs
}

/// Permissions on the Lease, in its namespace.
pub const LEASE_NEEDS: &[Need] = &[
    need("coordination.k8s.io", "leases", "get"),
    need("coordination.k8s.io", "leases", "create"),
    need("coordination.k8s.io", "leases", "patch"),
];

/// The readiness verdict, shared by the checks, the control loop and `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness {
    problems: Mutex<BTreeMap<String, String>>,
    cycled: AtomicBool,
}

impl Readiness {
    /// Record the outcome of the check `key`: `Some(reason)` while it fails. A new or changed
    /// reason is logged at error, a cleared one at info.
    pub fn report(&self, key: &str, problem: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(reason) => {
                if p.get(key) != Some(&reason) {
                    error!(check = key, %reason, "l3 cannot work until this is fixed");
                    p.insert(key.to_owned(), reason);
                }
            }
            None => {
                if p.remove(key).is_some() {
                    info!(check = key, "fixed");
                }
            }
        }
    }

    /// The first control cycle has run.
    pub fn cycle_done(&self) {
        self.cycled.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready, else every reason, one a line.
    pub fn verdict(&self) -> Result<(), String> {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if !p.is_empty() {
            return Err(p.values().cloned().collect::<Vec<_>>().join("\n"));
        }
        if !self.cycled.load(Ordering::Relaxed) {
            return Err("waiting for the watches to sync and the first control cycle".into());
        }
        Ok(())
    }
}

fn scope_text(ns: Option<&str>) -> String {
    ns.map_or_else(
        || "cluster-wide".to_owned(),
        |n| format!("in namespace {n}"),
    )
}

/// Whether the LatencyPolicy CRD is served and listable in `ns` (`None`: all namespaces).
pub async fn check_policies(client: &kube::Client, ns: Option<&str>) -> Option<String> {
    let api: Api<LatencyPolicy> = match ns {
        Some(n) => Api::namespaced(client.clone(), n),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 404 => Some(format!(
            "the LatencyPolicy CRD (latencypolicies.l3.dev) is not installed: {INSTALL_CRD}"
        )),
        Err(kube::Error::Api(s)) if s.code == 403 => Some(format!(
            "forbidden to list latencypolicies.l3.dev {}: grant verbs list and watch on \
             latencypolicies in API group l3.dev to l3's service account",
            scope_text(ns)
        )),
        Err(e) if is_unreachable(&e) => {
            Some(format!("cannot reach the Kubernetes API server: {e}"))
        }
        Err(e) => Some(format!("listing latencypolicies.l3.dev failed: {e}")),
    }
}

/// The permissions of `needs` (in `ns`, `None`: cluster-wide; on the object `name` if given,
/// for rules limited by resourceNames) this identity lacks, asked with SelfSubjectAccessReviews;
/// `None` when none is missing.
pub async fn check_access(
    client: &kube::Client,
    ns: Option<&str>,
    name: Option<&str>,
    needs: &[Need],
) -> Option<String> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for n in needs {
        let (resource, subresource) = match n.resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_owned())),
            None => (n.resource, None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(n.group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource,
                    verb: Some(n.verb.to_owned()),
                    namespace: ns.map(str::to_owned),
                    name: name.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => missing.push(format!("{} {}.{}", n.verb, n.resource, n.group)),
            Err(e) if is_unreachable(&e) => {
                return Some(format!("cannot reach the Kubernetes API server: {e}"));
            }
            // The review API itself refused: say so rather than guess at permissions.
            Err(e) => return Some(format!("checking permissions failed: {e}")),
        }
    }
    (!missing.is_empty()).then(|| {
        format!(
            "missing permissions {}: grant {} to l3's service account (see charts/l3/templates/)",
            scope_text(ns),
            missing.join(", ")
        )
    })
}

/// Whether the Lease can be read (the rest of its permissions are in [`LEASE_NEEDS`]).
pub async fn check_lease(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 403 => Some(format!(
            "forbidden to read Lease {ns}/{name}: grant verbs get, create and patch on leases in \
             API group coordination.k8s.io in namespace {ns}"
        )),
        Err(e) if is_unreachable(&e) => {
            Some(format!("cannot reach the Kubernetes API server: {e}"))
        }
        Err(e) => Some(format!("reading Lease {ns}/{name} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_every_problem_and_waits_for_the_first_cycle() {
        let r = Readiness::default();
        assert!(r.verdict().unwrap_err().contains("first control cycle"));
        r.cycle_done();
        assert_eq!(r.verdict(), Ok(()));
        r.report("crd", Some("the LatencyPolicy CRD is not installed".into()));
        r.report("rbac", Some("missing permissions".into()));
        let why = r.verdict().unwrap_err();
        assert!(why.contains("CRD") && why.contains("permissions"), "{why}");
        r.report("crd", None);
        r.report("rbac", None);
        assert_eq!(r.verdict(), Ok(()));
    }
}
