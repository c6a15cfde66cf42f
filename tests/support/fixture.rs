//! One cluster test's world: its namespace on the shared control plane, a Linkerd-format
//! exporter scraped by a real Prometheus, a TrafficSplit (or a route's rule) whose weights steer
//! the exporter's request mix, l3 installed by helm, and helpers to read the real objects and
//! the audit log.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use l3::operator::crd::LatencyPolicy;
use serde_json::{Value, json};

use super::cluster::{self, AuditEvent, ControlPlane};
use super::exporter::Exporter;
use super::mesh::{self, Mesh, RouteRef};
use super::prometheus::{self, Prometheus};
use super::release::{Install, Release, Replica};

/// The TrafficSplit every fixture creates (apex service of the same name).
pub const SPLIT: &str = "web";
/// The policies' interval: short, so that tests are quick; seconds.
pub const INTERVAL: f64 = 2.0;
/// Lease duration the tests install the chart with, seconds.
pub const LEASE: f64 = 6.0;
/// The short lease needs a write timeout under a third of it.
pub const API_TIMEOUT: &[&str] = &["--api-timeout=1500ms"];
/// Total RPS the mesh spreads over the backends by their weights.
pub const TOTAL_RPS: f64 = 200.0;
/// Annotation l3 records the original weights in.
pub const ORIGINALS: &str = "l3.dev/original-weights";
/// Annotation l3 records its last weights write in.
pub const APPLIED: &str = "l3.dev/applied-weights";
/// Annotation l3 records adopted foreign changes in.
pub const FOREIGN: &str = "l3.dev/foreign-changes";
/// Policy annotation naming the split l3's finalizer is for.
pub const ADOPTED_TARGET: &str = "l3.dev/adopted-target";
/// l3's finalizer on policies.
pub const FINALIZER: &str = "l3.dev/restore-weights";

/// One backend of the test split.
pub struct Backend {
    /// Service name.
    pub service: &'static str,
    /// Initial weight, as stored (e.g. `json!(100)` or `json!("500m")`).
    pub weight: Value,
    /// Typical latency of its successful responses, ms.
    pub ms: f64,
}

/// A backend of the test split: `service` at `weight` answering in about `ms`.
pub fn backend(service: &'static str, weight: Value, ms: f64) -> Backend {
    Backend {
        service,
        weight,
        ms,
    }
}

/// What to set up.
pub struct Setup<'a> {
    /// Namespace of the release, the lease, the split and the policies (must contain `l3`).
    pub namespace: &'a str,
    /// Backends of the split.
    pub backends: Vec<Backend>,
    /// Where the split and the policies live, if not in `namespace`; the chart is then
    /// installed cluster-wide and told to watch only that namespace.
    pub apps_namespace: Option<&'a str>,
    /// Lease duration and write timeout (`--api-timeout`, under a third of it), if not
    /// [`LEASE`] and [`API_TIMEOUT`].
    pub lease: Option<(f64, &'static str)>,
    /// A route to create (the whole object as JSON) whose rule steers the request mix instead
    /// of the split's weights; the route CRDs are installed first. The split is still created.
    pub route: Option<(RouteRef, Value)>,
    /// Extra helm arguments, e.g. `--set=targets.httpRoute=true`.
    pub helm_args: Vec<String>,
}

impl<'a> Setup<'a> {
    /// `backends` in `namespace`, with the chart installed there, the default lease.
    pub fn new(namespace: &'a str, backends: Vec<Backend>) -> Self {
        Setup {
            namespace,
            backends,
            apps_namespace: None,
            lease: None,
            route: None,
            helm_args: Vec::new(),
        }
    }
}

/// A test's world; dropping it stops the replicas, the mesh and Prometheus.
pub struct Fixture {
    /// The shared control plane.
    pub cp: &'static ControlPlane,
    /// An admin client.
    pub admin: kube::Client,
    /// Namespace of the split and the policies.
    pub ns: String,
    /// The helm release.
    pub release: Release,
    /// The exporter the mesh drives.
    pub exporter: Exporter,
    /// The real Prometheus scraping it.
    pub prometheus: Prometheus,
    /// Running l3 replicas.
    pub replicas: Vec<Replica>,
    /// When the fixture was set up (seconds since the epoch), for audit queries.
    pub since: f64,
    /// The `--api-timeout` argument replicas get.
    pub api_timeout: &'static str,
    /// The route the mesh follows, if any.
    pub route: Option<RouteRef>,
    _mesh: Mesh,
}

impl Fixture {
    /// Set everything up; no replica is started yet.
    pub async fn new(setup: Setup<'_>) -> Fixture {
        Self::new_scraped(setup, 1.0).await
    }

    /// Set everything up with Prometheus scraping every `scrape_secs`.
    pub async fn new_scraped(setup: Setup<'_>, scrape_secs: f64) -> Fixture {
        let cp = ControlPlane::shared();
        let since = cluster::now();
        let admin = cp.client().await;
        let exporter = Exporter::start().await;
        let bin = prometheus::binary().expect(
            "the cluster tests need a real Prometheus; L3_SKIP_PROMETHEUS_TESTS=1 cannot skip them",
        );
        let prometheus =
            Prometheus::start_scraping(&bin, &[exporter.addr], scrape_secs.round() as u32).await;
        let mut helm_args = vec![
            format!("--set=prometheus.url={}", prometheus.url),
            format!(
                "--set=leaderElection.leaseDuration={}s",
                setup.lease.map_or(LEASE, |l| l.0)
            ),
            "--set=logLevel=info".to_owned(),
        ];
        helm_args.extend(setup.helm_args.iter().cloned());
        if setup.route.is_some() {
            cluster::install_route_crds(&admin).await;
        }
        let ns = match setup.apps_namespace {
            None => {
                helm_args.push(format!("--set=watchNamespaces[0]={}", setup.namespace));
                setup.namespace.to_owned()
            }
            Some(apps) => {
                helm_args.push(format!(
                    "--set-json=extraArgs=[\"--watch-namespace={apps}\"]"
                ));
                apps.to_owned()
            }
        };
        let release = Release::install(
            cp,
            Install {
                namespace: setup.namespace,
                helm_args,
            },
        )
        .await;
        super::release::create_namespace(&admin, &ns).await;
        let weights: Vec<(&str, Value)> = setup
            .backends
            .iter()
            .map(|b| (b.service, b.weight.clone()))
            .collect();
        mesh::create_split(&admin, &ns, SPLIT, &weights).await;
        let profiles = setup
            .backends
            .iter()
            .map(|b| (b.service.to_owned(), mesh::steady(b.ms)))
            .collect();
        let route = setup.route.as_ref().map(|(r, _)| r.clone());
        let mesh = match &setup.route {
            None => Mesh::follow(&admin, &exporter, &ns, SPLIT, TOTAL_RPS, profiles),
            Some((r, object)) => {
                create_object(&admin, &ns, &r.resource, object.clone()).await;
                Mesh::follow_route(&admin, &exporter, &ns, r, TOTAL_RPS, profiles)
            }
        };
        Fixture {
            route,
            api_timeout: setup.lease.map_or(API_TIMEOUT[0], |l| l.1),
            cp,
            admin,
            ns,
            release,
            exporter,
            prometheus,
            replicas: Vec::new(),
            since,
            _mesh: mesh,
        }
    }

    /// Start replica `l3-<i>`.
    pub async fn start_replica(&mut self, i: usize) {
        let r = self.start_pod(&format!("l3-{i}")).await;
        self.replicas.push(r);
    }

    /// Start a replica as `pod` (again, after it was stopped), without keeping it.
    pub async fn start_pod(&self, pod: &str) -> Replica {
        self.start_pod_with(pod, &[]).await
    }

    /// Start a replica as `pod` with `extra` arguments (overriding the chart's, see
    /// [`Release::start`]).
    pub async fn start_pod_with(&self, pod: &str, extra: &[&str]) -> Replica {
        let mut args = vec![self.api_timeout];
        args.extend_from_slice(extra);
        self.release.start(self.cp, pod, &args).await
    }

    /// The API of `resource` in the test namespace.
    pub fn api(&self, resource: &kube::api::ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.admin.clone(), &self.ns, resource)
    }

    /// The fixture's route as stored.
    pub async fn route_obj(&self) -> DynamicObject {
        let r = self.route.as_ref().expect("the fixture has a route");
        self.api(&r.resource)
            .get(&r.name)
            .await
            .unwrap_or_else(|e| panic!("get route {}: {e}", r.name))
    }

    /// One backend's share in the fixture's route rule now.
    pub async fn route_share(&self, service: &str) -> f64 {
        let r = self.route.as_ref().expect("the fixture has a route");
        mesh::route_shares(&self.route_obj().await, r.rule)
            .into_iter()
            .find(|(s, _)| s == service)
            .map(|(_, w)| w)
            .unwrap_or_else(|| panic!("no backendRef {service}"))
    }

    /// l3's successful writes to objects `name` of `resource` (plural) since `from`.
    pub fn writes_of(&self, resource: &str, name: &str, from: f64) -> Vec<AuditEvent> {
        let mut w: Vec<AuditEvent> = self
            .l3_audit()
            .into_iter()
            .filter(|e| e.at >= from && e.is_write() && e.resource == resource && e.name == name)
            .collect();
        w.sort_by(|a, b| a.at.total_cmp(&b.at));
        w
    }

    /// The policies API of the test namespace.
    pub fn policies(&self) -> Api<LatencyPolicy> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Create policy `name` on the test split, in `mode`, with `spec` merged over the test
    /// defaults (interval 2 s, window 5 s).
    pub async fn create_policy(&self, name: &str, mode: &str, spec: Value) {
        let mut s = json!({
            "targetRef": {"kind": "TrafficSplit", "name": SPLIT},
            "mode": mode,
            "interval": format!("{INTERVAL}s"),
            "queryWindow": "5s",
        });
        if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let p: LatencyPolicy = serde_json::from_value(json!({
            "apiVersion": "l3.dev/v1alpha1",
            "kind": "LatencyPolicy",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": s,
        }))
        .expect("policy");
        self.policies()
            .create(&PostParams::default(), &p)
            .await
            .unwrap_or_else(|e| panic!("create LatencyPolicy {name}: {e}"));
    }

    /// Switch policy `name` to `mode`.
    pub async fn set_mode(&self, name: &str, mode: &str) {
        self.policies()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"mode": mode}})),
            )
            .await
            .unwrap_or_else(|e| panic!("set mode of {name}: {e}"));
    }

    /// Delete policy `name`.
    pub async fn delete_policy(&self, name: &str) {
        self.policies()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }

    /// The split as stored.
    pub async fn split(&self) -> DynamicObject {
        self.split_named(SPLIT).await
    }

    /// Split `name` of the test namespace as stored.
    pub async fn split_named(&self, name: &str) -> DynamicObject {
        mesh::splits(&self.admin, &self.ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get split {name}: {e}"))
    }

    /// Merge-patch split `name` as the admin (another writer than l3, like Argo CD or a user).
    pub async fn patch_split(&self, name: &str, patch: Value) -> DynamicObject {
        mesh::splits(&self.admin, &self.ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch split {name} with {patch}: {e}"))
    }

    /// Set split `name`'s backends to exactly `weights` as the admin (a merge patch replaces
    /// the whole list).
    pub async fn set_weights(&self, name: &str, weights: &[(&str, Value)]) -> DynamicObject {
        let backends: Vec<Value> = weights
            .iter()
            .map(|(s, w)| json!({"service": s, "weight": w}))
            .collect();
        self.patch_split(name, json!({"spec": {"backends": backends}}))
            .await
    }

    /// l3's annotations on split `name` (original, applied, foreign changes) that are set.
    pub async fn l3_annotations(&self, name: &str) -> Vec<(String, String)> {
        self.split_named(name)
            .await
            .annotations()
            .iter()
            .filter(|(k, _)| [ORIGINALS, APPLIED, FOREIGN].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Wait until split `name` has exactly `weights` (as spelled) and no l3 annotation.
    pub async fn wait_restored(&self, name: &str, weights: &[(String, Value)]) {
        super::eventually(mesh::SETTLE, Duration::from_millis(100), || async {
            let w = mesh::raw_weights(&self.split_named(name).await);
            let ann = self.l3_annotations(name).await;
            if w == weights && ann.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{name}: weights {w:?} (want {weights:?}), annotations {ann:?}\n{}",
                    self.logs()
                ))
            }
        })
        .await
    }

    /// Condition `type_` of policy `name`, if reported.
    pub async fn condition(&self, name: &str, type_: &str) -> Option<Condition> {
        let p = self.policies().get(name).await.ok()?;
        p.status?.conditions.into_iter().find(|c| c.type_ == type_)
    }

    /// Wait until condition `type_` of policy `name` has `status` and `reason`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Condition {
        super::eventually(mesh::SETTLE, Duration::from_millis(250), || async {
            match self.condition(name, type_).await {
                Some(c) if c.status == status && c.reason == reason => Ok(c),
                c => Err(format!(
                    "policy {name}: {type_} is {c:?}, waiting for {status} {reason}\n{}",
                    self.logs()
                )),
            }
        })
        .await
    }

    /// The Events (events.k8s.io/v1) about policy `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), &self.ns);
        let mut evs: Vec<Event> = api
            .list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("LatencyPolicy") && r.name.as_deref() == Some(name)
                })
            })
            .collect();
        evs.sort_by_key(|e| e.metadata.creation_timestamp.clone());
        evs
    }

    /// Wait for an Event with `reason` about policy `name`.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Event {
        super::eventually(mesh::SETTLE, Duration::from_millis(250), || async {
            let evs = self.events(name).await;
            evs.iter()
                .find(|e| e.reason.as_deref() == Some(reason))
                .cloned()
                .ok_or_else(|| {
                    let seen: Vec<_> = evs.iter().map(|e| e.reason.clone()).collect();
                    format!(
                        "no {reason} Event for {name} (seen {seen:?})\n{}",
                        self.logs()
                    )
                })
        })
        .await
    }

    /// Wait until policy `name` is gone (deleted, its finalizers released).
    pub async fn wait_policy_gone(&self, name: &str, limit: Duration) {
        super::eventually(limit, Duration::from_millis(100), || async {
            match self.policies().get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(p)) => Err(format!(
                    "policy {name} still there, finalizers {:?}\n{}",
                    p.finalizers(),
                    self.logs()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// The split's original-weights annotation, if any.
    pub async fn originals(&self) -> Option<String> {
        self.split().await.annotations().get(ORIGINALS).cloned()
    }

    /// One backend's share in the split now.
    pub async fn share(&self, service: &str) -> f64 {
        mesh::shares(&self.split().await)
            .into_iter()
            .find(|(s, _)| s == service)
            .map(|(_, w)| w)
            .unwrap_or_else(|| panic!("no backend {service}"))
    }

    /// Make a backend's responses take about `ms` from now on.
    pub fn set_latency(&self, service: &str, ms: f64) {
        let p = mesh::steady(ms);
        self.exporter.update(&self.ns, service, |q| {
            q.ok_cdf = p.ok_cdf;
            q.ok_mean_ms = p.ok_mean_ms;
        });
    }

    /// Wait until the split is adopted by policy `name`: the annotation, l3's finalizer on the
    /// policy, and weights that differ from `initial`. Returns the annotation.
    pub async fn wait_adopted(&self, name: &str, initial: &[(String, Value)]) -> String {
        super::eventually(mesh::SETTLE, Duration::from_millis(250), || async {
            let split = self.split().await;
            let policy = self.policies().get(name).await.map_err(|e| e.to_string())?;
            let ann = split.annotations().get(ORIGINALS).cloned();
            let fin = policy.finalizers().iter().any(|f| f == FINALIZER);
            let weights = mesh::raw_weights(&split);
            match ann {
                Some(a) if fin && weights != initial => Ok(a),
                _ => Err(format!(
                    "annotation {ann:?}, finalizer {fin}, weights {weights:?} (initial {initial:?})\n{}",
                    self.logs()
                )),
            }
        })
        .await
    }

    /// The last lines of every replica's log.
    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.pod, cluster::tail(&r.log, 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Audit events of l3's identity (both replicas) since the fixture was set up.
    pub fn l3_audit(&self) -> Vec<AuditEvent> {
        self.cp
            .audit()
            .into_iter()
            .filter(|e| e.user == self.release.user && e.at >= self.since)
            .collect()
    }

    /// l3's successful writes to the test split since `from`.
    pub fn split_writes(&self, from: f64) -> Vec<AuditEvent> {
        self.writes_to(SPLIT, from)
    }

    /// l3's successful writes to split `name` since `from`, in time order.
    pub fn writes_to(&self, name: &str, from: f64) -> Vec<AuditEvent> {
        self.writes_of("trafficsplits", name, from)
    }

    /// The current holder of the chart's Lease.
    pub async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.admin.clone(), &self.release.namespace);
        leases
            .get_opt("l3-leader")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    /// Wait until some replica holds the lease; returns its index.
    pub async fn wait_leader(&self) -> usize {
        super::eventually(mesh::SETTLE, Duration::from_millis(100), || async {
            let holder = self.lease_holder().await;
            self.replicas
                .iter()
                .position(|r| Some(&r.pod) == holder.as_ref())
                .ok_or_else(|| format!("lease holder {holder:?}\n{}", self.logs()))
        })
        .await
    }
}

/// Create `object` (a whole object as JSON) of `resource` in `ns` as the admin.
pub async fn create_object(
    client: &kube::Client,
    ns: &str,
    resource: &kube::api::ApiResource,
    object: Value,
) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(object).expect("object JSON");
    Api::namespaced_with(client.clone(), ns, resource)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {} {}: {e}", resource.kind, obj.name_any()))
}

/// Seconds since `t`.
pub fn secs_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
