//! The mesh side of the cluster tests: a TrafficSplit whose weights steer the exporter's request
//! mix, read through a real watch, so the metrics answer l3's writes the way client proxies
//! would (each backend's RPS is the total times its share of the weights).

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use super::exporter::{Exporter, Profile};

/// The TrafficSplit resource in `version`.
pub fn split_resource(version: &str) -> ApiResource {
    ApiResource {
        group: "split.smi-spec.io".into(),
        version: version.into(),
        api_version: format!("split.smi-spec.io/{version}"),
        kind: "TrafficSplit".into(),
        plural: "trafficsplits".into(),
    }
}

/// The TrafficSplit API of `ns`, through v1alpha1 (the storage version).
pub fn splits(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &split_resource("v1alpha1"))
}

/// Create a v1alpha1 TrafficSplit `name` for apex service `name` with `backends` given as
/// `(service, weight as JSON)`, e.g. `("web-east", json!("500m"))`.
pub async fn create_split(client: &kube::Client, ns: &str, name: &str, backends: &[(&str, Value)]) {
    let list: Vec<Value> = backends
        .iter()
        .map(|(s, w)| json!({"service": s, "weight": w}))
        .collect();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "split.smi-spec.io/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"service": name, "backends": list},
    }))
    .expect("split");
    splits(client, ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create TrafficSplit {ns}/{name}: {e}"));
}

/// The backends' weights as stored (`service → JSON weight`), in list order.
pub fn raw_weights(obj: &DynamicObject) -> Vec<(String, Value)> {
    obj.data["spec"]["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    (
                        b["service"].as_str().unwrap_or("").to_owned(),
                        b["weight"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Shares of the backends (`service → fraction`) from a split's weights.
pub fn shares(obj: &DynamicObject) -> Vec<(String, f64)> {
    let ws: Vec<(String, f64)> = raw_weights(obj)
        .into_iter()
        .map(|(s, w)| (s, quantity(&w)))
        .collect();
    let total: f64 = ws.iter().map(|(_, w)| w).sum();
    ws.into_iter()
        .map(|(s, w)| (s, if total > 0.0 { w / total } else { 0.0 }))
        .collect()
}

/// The backendRefs' weights of rule `rule` of a route as stored (`name → JSON weight`, `null`
/// when absent), in list order.
pub fn route_weights(obj: &DynamicObject, rule: usize) -> Vec<(String, Value)> {
    obj.data["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    (
                        b["name"].as_str().unwrap_or("").to_owned(),
                        b.get("weight").cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Shares of the backendRefs of rule `rule` of a route, as a data plane splits by them: an
/// absent weight counts as the Gateway API default, 1.
pub fn route_shares(obj: &DynamicObject, rule: usize) -> Vec<(String, f64)> {
    let ws: Vec<(String, f64)> = route_weights(obj, rule)
        .into_iter()
        .map(|(s, w)| (s, if w.is_null() { 1.0 } else { quantity(&w) }))
        .collect();
    let total: f64 = ws.iter().map(|(_, w)| w).sum();
    ws.into_iter()
        .map(|(s, w)| (s, if total > 0.0 { w / total } else { 0.0 }))
        .collect()
}

/// A weight as a number, read with l3's own Quantity parser (`"500m"`, `"1k"`, `"1e3"`, ...),
/// as linkerd-smi reads any valid Quantity; an invalid weight counts as 0.
fn quantity(v: &Value) -> f64 {
    l3::operator::trafficsplit::parse_weight(v).map_or(0.0, |(w, _)| w)
}

/// The closed loop: while alive, every version of the split sets each backend's RPS in the
/// exporter to `total_rps` times its share. Aborted on drop.
pub struct Mesh {
    task: tokio::task::JoinHandle<()>,
}

impl Mesh {
    /// Add the split's backends to the exporter (with `profiles`, in `backends` order) and
    /// follow the split.
    pub fn follow(
        client: &kube::Client,
        exporter: &Exporter,
        ns: &str,
        split: &str,
        total_rps: f64,
        profiles: Vec<(String, Profile)>,
    ) -> Mesh {
        add_profiles(exporter, ns, total_rps, profiles);
        Self::watch(splits(client, ns), exporter, ns, split, total_rps, shares)
    }

    /// Like [`Mesh::follow`], for one rule of a route: the data plane of a route splits by its
    /// backendRefs' weights.
    pub fn follow_route(
        client: &kube::Client,
        exporter: &Exporter,
        ns: &str,
        route: &RouteRef,
        total_rps: f64,
        profiles: Vec<(String, Profile)>,
    ) -> Mesh {
        add_profiles(exporter, ns, total_rps, profiles);
        let api = Api::namespaced_with(client.clone(), ns, &route.resource);
        let rule = route.rule;
        Self::watch(api, exporter, ns, &route.name, total_rps, move |obj| {
            route_shares(obj, rule)
        })
    }

    /// Every version of object `name` sets each backend's RPS to `total_rps` times the share
    /// `shares` reads from it.
    fn watch(
        api: Api<DynamicObject>,
        exporter: &Exporter,
        ns: &str,
        name: &str,
        total_rps: f64,
        shares: impl Fn(&DynamicObject) -> Vec<(String, f64)> + Send + 'static,
    ) -> Mesh {
        let exporter = exporter.clone();
        let ns = ns.to_owned();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(item) = stream.next().await {
                let Ok(obj) = item else { continue };
                for (svc, share) in shares(&obj) {
                    exporter.update(&ns, &svc, |p| p.rps = total_rps * share);
                }
            }
        });
        Mesh { task }
    }
}

/// Add the backends to the exporter, `total_rps` spread evenly until the target's weights say
/// otherwise.
fn add_profiles(exporter: &Exporter, ns: &str, total_rps: f64, profiles: Vec<(String, Profile)>) {
    let n = profiles.len().max(1) as f64;
    for (svc, mut p) in profiles {
        p.rps = total_rps / n;
        // A few requests already counted, so every backend has series from the start.
        exporter.add(ns, &svc, 2, p, 100.0);
    }
}

/// One rule of a route, as the mesh follows it.
#[derive(Clone)]
pub struct RouteRef {
    /// The route's resource (kind, group, version).
    pub resource: ApiResource,
    /// The route's name.
    pub name: String,
    /// Index of the rule whose backendRefs split the traffic.
    pub rule: usize,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend answering every request in about `ms` (all under the next Linkerd bucket), with
/// no failures and one request in flight per 100 RPS.
pub fn steady(ms: f64) -> Profile {
    Profile {
        rps: 0.0,
        success_ratio: 1.0,
        ok_cdf: vec![(ms, 0.5), (ms * 2.0, 1.0)],
        ok_mean_ms: ms * 1.2,
        fail_ms: ms,
        inflight: 0.0,
    }
}

/// How long the tests wait for a poll to converge, at most.
pub const SETTLE: Duration = Duration::from_secs(60);
