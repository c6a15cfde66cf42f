//! Routes as targets on the real control plane: Gateway API HTTPRoute and GRPCRoute (the
//! standard CRDs of the pinned module sigs.k8s.io/gateway-api, copied by `make testenv`) and
//! Linkerd's policy.linkerd.io HTTPRoute (tests/fixtures/linkerd-httproute-crd.yaml), tuned by
//! the real `l3 run` installed by the real helm with the chart's `targets` values, reading a real
//! Prometheus whose exporter follows the tuned rule's weights. Write order and counts come from
//! the API server's audit log.
//!
//! One control plane for this binary; each test has its own namespace and helm release.

mod support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use l3::operator::target::{Kind, RuleSelector, Target};
use serde_json::{Value, json};
use support::eventually;
use support::fixture::{
    ADOPTED_TARGET, APPLIED, Backend, FOREIGN, Fixture, INTERVAL, ORIGINALS, SPLIT, Setup, backend,
    create_object,
};
use support::mesh::{self, RouteRef};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn http_routes() -> ApiResource {
    resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}

fn grpc_routes() -> ApiResource {
    resource("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes")
}

fn linkerd_routes() -> ApiResource {
    resource("policy.linkerd.io", "v1beta3", "HTTPRoute", "httproutes")
}

fn three_backends() -> Vec<Backend> {
    vec![
        backend("web-a", json!(100), 20.0),
        backend("web-b", json!(100), 40.0),
        backend("web-c", json!(100), 80.0),
    ]
}

/// The HTTPRoute of the main test: an unrelated first rule (one backendRef, a match and a
/// filter) and the tuned rule with three weighted backendRefs, a rule filter and a backendRef
/// filter. Every one of these must survive l3's writes byte for byte.
fn three_way_route(ns: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns, "labels": {"team": "web"}},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
            "rules": [
                {
                    "name": "admin",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "filters": [{
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x-admin", "value": "1"}]}
                    }],
                    "backendRefs": [{"name": "web-admin", "port": 80}]
                },
                {
                    "name": "split",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [{
                        "type": "ResponseHeaderModifier",
                        "responseHeaderModifier": {"add": [{"name": "x-l3", "value": "test"}]}
                    }],
                    "backendRefs": [
                        {"name": "web-a", "port": 80, "weight": 100},
                        {"name": "web-b", "port": 80, "weight": 100, "filters": [{
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "x-b", "value": "1"}]}
                        }]},
                        {"name": "web-c", "port": 80, "weight": 100}
                    ]
                }
            ]
        }
    })
}

/// The route as JSON without what l3 may change: the tuned rule's backendRef weights, l3's
/// annotations, and the bookkeeping the API server changes on every write.
fn without_weights(obj: &DynamicObject, rule: usize) -> String {
    let mut v = serde_json::to_value(obj).expect("route JSON");
    if let Some(refs) = v["spec"]["rules"][rule]["backendRefs"].as_array_mut() {
        for r in refs {
            if let Some(o) = r.as_object_mut() {
                o.remove("weight");
            }
        }
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in ["resourceVersion", "managedFields", "generation"] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            for k in [ORIGINALS, APPLIED, FOREIGN] {
                a.remove(k);
            }
        }
        if m.get("annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            m.remove("annotations");
        }
    }
    serde_json::to_string(&v).expect("JSON")
}

/// Lines of `after` that differ from `before` (both pretty JSON), as a unified-style diff.
fn diff(before: &Value, after: &Value) -> String {
    let b = serde_json::to_string_pretty(before).expect("JSON");
    let a = serde_json::to_string_pretty(after).expect("JSON");
    let (bl, al): (Vec<&str>, Vec<&str>) = (b.lines().collect(), a.lines().collect());
    let mut out = String::new();
    // The spec keeps its shape (only weights change), so lines pair up one to one.
    for (x, y) in bl.iter().zip(&al) {
        if x == y {
            out.push_str(&format!("  {x}\n"));
        } else {
            out.push_str(&format!("- {x}\n+ {y}\n"));
        }
    }
    assert_eq!(bl.len(), al.len(), "the spec changed shape:\n{b}\n---\n{a}");
    out
}

/// l3's annotations on `obj` that are set.
fn l3_annotations(obj: &DynamicObject) -> Vec<String> {
    obj.annotations()
        .keys()
        .filter(|k| [ORIGINALS, APPLIED, FOREIGN].contains(&k.as_str()))
        .cloned()
        .collect()
}

async fn wait_route_adopted(f: &Fixture, initial: &[(String, Value)]) -> String {
    let rule = f.route.as_ref().expect("route").rule;
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let route = f.route_obj().await;
        let ann = route.annotations().get(ORIGINALS).cloned();
        let weights = mesh::route_weights(&route, rule);
        match ann {
            Some(a) if weights != initial => Ok(a),
            _ => Err(format!(
                "annotation {ann:?}, weights {weights:?} (initial {initial:?})\n{}",
                f.logs()
            )),
        }
    })
    .await
}

/// An HTTPRoute with three backendRefs, an unrelated rule and filters: DryRun reports and
/// writes nothing; Enforce adopts (originals recorded) and changes only weights; a slowed
/// backend loses traffic; deleting the policy restores the route exactly. The TrafficSplit of
/// the same name is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_dry_run_adoption_reaction_and_restore() {
    let ns = "l3-route";
    let route = RouteRef {
        resource: http_routes(),
        name: "web".into(),
        rule: 1,
    };
    let mut setup = Setup::new(ns, three_backends());
    setup.route = Some((route, three_way_route(ns)));
    setup.helm_args = vec!["--set=targets.httpRoute=true".into()];
    let mut f = Fixture::new(setup).await;
    let start = support::cluster::now();
    let original = f.route_obj().await;
    let initial = mesh::route_weights(&original, 1);
    f.start_replica(0).await;
    f.start_replica(1).await;

    f.create_policy(
        "web",
        "DryRun",
        json!({"targetRef": {"kind": "HTTPRoute", "name": "web"}}),
    )
    .await;
    f.wait_condition("web", "Ready", "True", "DryRun").await;
    let status = eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let p = f.policies().get("web").await.map_err(|e| e.to_string())?;
        let s = p.status.unwrap_or_default();
        if s.backends.len() == 3 {
            Ok(s)
        } else {
            Err(format!("status backends {:?}", s.backends))
        }
    })
    .await;
    let names: Vec<&str> = status.backends.iter().map(|b| b.service.as_str()).collect();
    assert_eq!(names, ["web-a", "web-b", "web-c"]);
    let found = f
        .condition("web", "TargetFound")
        .await
        .expect("TargetFound");
    assert!(found.message.contains("HTTPRoute web"), "{}", found.message);
    assert!(
        f.writes_of("httproutes", "web", start).is_empty(),
        "DryRun wrote the route"
    );

    f.set_mode("web", "Enforce").await;
    let ann = wait_route_adopted(&f, &initial).await;
    let recorded: Value = serde_json::from_str(&ann).expect("annotation is JSON");
    assert_eq!(
        recorded,
        json!({"web-a": 100, "web-b": 100, "web-c": 100}),
        "the original weights are recorded exactly"
    );
    let policy = f.policies().get("web").await.expect("policy");
    assert_eq!(
        policy.annotations().get(ADOPTED_TARGET).map(String::as_str),
        Some("HTTPRoute.gateway.networking.k8s.io/web")
    );
    let tuned = f.route_obj().await;
    assert_eq!(
        without_weights(&original, 1),
        without_weights(&tuned, 1),
        "everything but the tuned rule's weights must stay byte-identical"
    );
    assert_eq!(
        serde_json::to_string(&original.data["spec"]["rules"][0]).unwrap(),
        serde_json::to_string(&tuned.data["spec"]["rules"][0]).unwrap(),
        "the unrelated rule must stay byte-identical"
    );
    eprintln!(
        "HTTPRoute web, spec before and after tuning:\n{}",
        diff(&original.data["spec"], &tuned.data["spec"])
    );

    // Reaction: the fastest backend made 10x slower loses at least half its share.
    eventually(mesh::SETTLE, Duration::from_millis(500), || async {
        let a = f.route_share("web-a").await;
        if a > 0.45 {
            Ok(())
        } else {
            Err(format!("web-a share {a:.3}\n{}", f.logs()))
        }
    })
    .await;
    let before = f.route_share("web-a").await;
    f.set_latency("web-a", 200.0);
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let a = f.route_share("web-a").await;
        if a <= before / 2.0 {
            Ok(())
        } else {
            Err(format!("web-a share {a:.3}, was {before:.3}\n{}", f.logs()))
        }
    })
    .await;
    let reacted = f.route_obj().await;
    assert_eq!(without_weights(&original, 1), without_weights(&reacted, 1));

    f.delete_policy("web").await;
    f.wait_policy_gone("web", mesh::SETTLE).await;
    let restored = f.route_obj().await;
    assert_eq!(
        serde_json::to_string(&restored.data["spec"]).unwrap(),
        serde_json::to_string(&original.data["spec"]).unwrap(),
        "restore puts the route's spec back exactly"
    );
    assert!(
        l3_annotations(&restored).is_empty(),
        "{:?}",
        restored.annotations()
    );
    let route_writes = f.writes_of("httproutes", "web", start);
    assert!(
        route_writes.len() >= 2,
        "adoption and restore: {route_writes:?}"
    );
    assert!(
        f.writes_of("trafficsplits", SPLIT, start).is_empty(),
        "the TrafficSplit of the same name is not the target"
    );
}

/// A GRPCRoute is tuned like an HTTPRoute; a patch from a stale read gets 409; another writer's
/// weights are adopted, not fought, and are what a restore puts back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_is_tuned_and_restored() {
    let ns = "l3-grpc";
    let object = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "api", "namespace": ns},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "api", "port": 9090}],
            "rules": [{
                "matches": [{"method": {"type": "Exact", "service": "shop.Cart", "method": "Get"}}],
                "backendRefs": [
                    {"name": "web-a", "port": 9090, "weight": 1},
                    {"name": "web-b", "port": 9090, "weight": 1}
                ]
            }]
        }
    });
    let route = RouteRef {
        resource: grpc_routes(),
        name: "api".into(),
        rule: 0,
    };
    let mut setup = Setup::new(
        ns,
        vec![
            backend("web-a", json!(1), 20.0),
            backend("web-b", json!(1), 80.0),
        ],
    );
    setup.route = Some((route, object));
    setup.helm_args = vec!["--set=targets.grpcRoute=true".into()];
    let mut f = Fixture::new(setup).await;
    let original = f.route_obj().await;
    let initial = mesh::route_weights(&original, 0);
    f.start_replica(0).await;
    f.create_policy(
        "api",
        "Enforce",
        json!({"targetRef": {"kind": "GRPCRoute", "name": "api"}}),
    )
    .await;
    let ann = wait_route_adopted(&f, &initial).await;
    assert_eq!(
        serde_json::from_str::<Value>(&ann).unwrap(),
        json!({"web-a": 1, "web-b": 1})
    );
    let tuned = f.route_obj().await;
    assert_eq!(without_weights(&original, 0), without_weights(&tuned, 0));
    eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let a = f.route_share("web-a").await;
        if a > 0.55 {
            Ok(())
        } else {
            Err(format!(
                "the faster backend's share is {a:.3}\n{}",
                f.logs()
            ))
        }
    })
    .await;
    // Optimistic concurrency: l3's own patch body, computed from a stale read (the original
    // resourceVersion), is refused by the API server with 409 Conflict.
    let stale = Target {
        kind: Kind::GrpcRoute,
        name: "api".into(),
        rule: RuleSelector::Default,
    }
    .parse(&original)
    .expect("l3 reads the route");
    let patch = stale.weights_patch(&[("web-a", 900), ("web-b", 100)], stale.form, true);
    match f
        .api(&grpc_routes())
        .patch("api", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a patch from a stale read must get 409 Conflict, got {other:?}"),
    }

    // Another writer sets the weights: l3 adopts them as the originals, says so in an Event,
    // and leaves the route alone (no write of l3's for several intervals).
    let mut rules = f.route_obj().await.data["spec"]["rules"].clone();
    rules[0]["backendRefs"][0]["weight"] = json!(3);
    rules[0]["backendRefs"][1]["weight"] = json!(1);
    f.api(&grpc_routes())
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rules": rules}})),
        )
        .await
        .expect("foreign write");
    let foreign_at = support::cluster::now();
    f.wait_event("api", "ForeignWeights").await;
    tokio::time::sleep(Duration::from_secs_f64(3.0 * INTERVAL)).await;
    let l3_writes = f.writes_of("grpcroutes", "api", foreign_at);
    // The adoption of the foreign weights is l3's only write: an annotations-only patch.
    assert!(
        l3_writes.len() <= 1,
        "l3 must not fight the other writer: {l3_writes:?}"
    );
    let after = f.route_obj().await;
    assert_eq!(
        mesh::route_weights(&after, 0),
        vec![
            ("web-a".to_owned(), json!(3)),
            ("web-b".to_owned(), json!(1))
        ],
        "the other writer's weights stay"
    );

    f.delete_policy("api").await;
    f.wait_policy_gone("api", mesh::SETTLE).await;
    let restored = f.route_obj().await;
    // The other writer's weights are the originals now.
    assert_eq!(
        mesh::route_weights(&restored, 0),
        vec![
            ("web-a".to_owned(), json!(3)),
            ("web-b".to_owned(), json!(1))
        ]
    );
    assert_eq!(without_weights(&original, 0), without_weights(&restored, 0));
    assert!(l3_annotations(&restored).is_empty());
}

/// Absent weights (default 1) are recorded as absent and restored absent, not as 1, on
/// Linkerd's HTTPRoute whose schema does not default them. On the Gateway API CRD the API
/// server itself stores the default, 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_weights_are_restored_absent() {
    let ns = "l3-absent";
    let object = json!({
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}],
            "rules": [{
                "backendRefs": [
                    {"name": "web-a", "port": 80},
                    {"name": "web-b", "port": 80}
                ]
            }]
        }
    });
    let route = RouteRef {
        resource: linkerd_routes(),
        name: "web".into(),
        rule: 0,
    };
    let mut setup = Setup::new(
        ns,
        vec![
            backend("web-a", json!(1), 20.0),
            backend("web-b", json!(1), 80.0),
        ],
    );
    setup.route = Some((route, object));
    setup.helm_args = vec!["--set=targets.linkerdHTTPRoute=true".into()];
    let mut f = Fixture::new(setup).await;
    let original = f.route_obj().await;
    let initial = mesh::route_weights(&original, 0);
    assert_eq!(
        initial,
        vec![("web-a".into(), Value::Null), ("web-b".into(), Value::Null)],
        "the fixture CRD keeps absent weights absent"
    );

    // The Gateway API schema defaults an absent weight to 1 at the API server.
    let gw = create_object(
        &f.admin,
        &f.ns,
        &http_routes(),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "defaulted", "namespace": ns},
            "spec": {"rules": [{"backendRefs": [{"name": "web-a", "port": 80}]}]}
        }),
    )
    .await;
    assert_eq!(
        mesh::route_weights(&gw, 0),
        vec![("web-a".into(), json!(1))]
    );

    f.start_replica(0).await;
    f.create_policy(
        "web",
        "Enforce",
        json!({"targetRef": {"kind": "HTTPRoute", "group": "policy.linkerd.io", "name": "web"}}),
    )
    .await;
    let ann = wait_route_adopted(&f, &initial).await;
    assert_eq!(
        serde_json::from_str::<Value>(&ann).unwrap(),
        json!({"web-a": null, "web-b": null}),
        "absent weights are recorded as absent"
    );
    // DryRun gives the weights back.
    f.set_mode("web", "DryRun").await;
    let restored = eventually(mesh::SETTLE, Duration::from_millis(250), || async {
        let r = f.route_obj().await;
        if l3_annotations(&r).is_empty() {
            Ok(r)
        } else {
            Err(format!(
                "not restored yet: {:?}\n{}",
                r.annotations(),
                f.logs()
            ))
        }
    })
    .await;
    assert_eq!(
        serde_json::to_string(&restored.data["spec"]).unwrap(),
        serde_json::to_string(&original.data["spec"]).unwrap(),
        "the weights are absent again, not 1"
    );
    let refs = restored.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .expect("backendRefs");
    assert!(refs.iter().all(|r| r.get("weight").is_none()), "{refs:?}");
}

/// A route with two weighted rules and no rule chosen is refused with a condition listing both;
/// choosing one by index makes it found. A backendRef to a ServiceImport is refused with a
/// condition, and that route is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_rule_and_non_service_backend_are_refused_with_conditions() {
    let ns = "l3-refuse";
    let two_rules = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                 "backendRefs": [{"name": "web-a", "port": 80}, {"name": "web-b", "port": 80}]},
                {"name": "v2", "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                 "backendRefs": [{"name": "web-a", "port": 80}, {"name": "web-b", "port": 80}]}
            ]
        }
    });
    let route = RouteRef {
        resource: http_routes(),
        name: "web".into(),
        rule: 1,
    };
    let mut setup = Setup::new(
        ns,
        vec![
            backend("web-a", json!(1), 20.0),
            backend("web-b", json!(1), 80.0),
        ],
    );
    setup.route = Some((route, two_rules));
    setup.helm_args = vec!["--set=targets.httpRoute=true".into()];
    let mut f = Fixture::new(setup).await;
    let start = support::cluster::now();
    create_object(
        &f.admin,
        &f.ns,
        &http_routes(),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "imports", "namespace": ns},
            "spec": {"rules": [{"backendRefs": [
                {"name": "web-a", "port": 80},
                {"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "web-west", "port": 80}
            ]}]}
        }),
    )
    .await;
    f.start_replica(0).await;
    f.create_policy(
        "web",
        "Enforce",
        json!({"targetRef": {"kind": "HTTPRoute", "name": "web"}}),
    )
    .await;
    f.create_policy(
        "imports",
        "Enforce",
        json!({"targetRef": {"kind": "HTTPRoute", "name": "imports"}}),
    )
    .await;

    let c = f
        .wait_condition("web", "TargetFound", "False", "AmbiguousRule")
        .await;
    eprintln!("ambiguous: {}", c.message);
    assert!(
        c.message.contains("0 (2 backendRefs)")
            && c.message.contains(r#"1 (name "v2", 2 backendRefs)"#)
            && c.message.contains("ruleName"),
        "the condition lists the choices: {}",
        c.message
    );
    let c = f
        .wait_condition("imports", "TargetFound", "False", "UnsupportedBackend")
        .await;
    eprintln!("not a Service: {}", c.message);
    assert!(
        c.message.contains("backendRefs[1]") && c.message.contains("ServiceImport"),
        "{}",
        c.message
    );

    // Choosing the rule by name makes the target usable.
    f.policies()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetRef": {"ruleName": "v2"}}})),
        )
        .await
        .expect("patch policy");
    f.wait_condition("web", "TargetFound", "True", "Found")
        .await;
    let initial = vec![
        ("web-a".to_owned(), json!(1)),
        ("web-b".to_owned(), json!(1)),
    ];
    wait_route_adopted(&f, &initial).await;
    let web = f.route_obj().await;
    assert_eq!(
        mesh::route_weights(&web, 0),
        initial,
        "the rule not chosen keeps its weights"
    );
    assert!(
        f.writes_of("httproutes", "imports", start).is_empty(),
        "a route with a non-Service backend is never written"
    );
}

/// A policy switched from a TrafficSplit to an HTTPRoute restores the split before it writes
/// the route (audit log order), and then tunes the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_from_a_split_to_a_route_restores_the_split_first() {
    let ns = "l3-switch";
    let object = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web-route", "namespace": ns},
        "spec": {"rules": [{"backendRefs": [
            {"name": "web-a", "port": 80, "weight": 50},
            {"name": "web-b", "port": 80, "weight": 50}
        ]}]}
    });
    let route = RouteRef {
        resource: http_routes(),
        name: "web-route".into(),
        rule: 0,
    };
    let mut setup = Setup::new(
        ns,
        vec![
            backend("web-a", json!(100), 20.0),
            backend("web-b", json!(100), 80.0),
        ],
    );
    setup.route = Some((route, object));
    setup.helm_args = vec![
        "--set=targets.trafficSplit=true".into(),
        "--set=targets.httpRoute=true".into(),
    ];
    let mut f = Fixture::new(setup).await;
    let start = support::cluster::now();
    let split_initial = mesh::raw_weights(&f.split().await);
    let route_initial = mesh::route_weights(&f.route_obj().await, 0);
    f.start_replica(0).await;
    f.create_policy("web", "Enforce", json!({})).await;
    f.wait_adopted("web", &split_initial).await;

    f.policies()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"targetRef": {"kind": "HTTPRoute", "name": "web-route"}}}),
            ),
        )
        .await
        .expect("retarget the policy");
    f.wait_restored(SPLIT, &split_initial).await;
    wait_route_adopted(&f, &route_initial).await;
    let split_writes = f.writes_of("trafficsplits", SPLIT, start);
    let route_writes = f.writes_of("httproutes", "web-route", start);
    let restore = split_writes.last().expect("the split was written");
    let first_route = route_writes.first().expect("the route was written");
    assert!(
        restore.at <= first_route.at,
        "the split's restore ({:.3}) must come before the route's first write ({:.3})",
        restore.at,
        first_route.at
    );
    let policy = f.policies().get("web").await.expect("policy");
    assert_eq!(
        policy.annotations().get(ADOPTED_TARGET).map(String::as_str),
        Some("HTTPRoute.gateway.networking.k8s.io/web-route")
    );
}
