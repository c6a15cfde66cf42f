//! The Helm chart and the plain manifests as a cluster would read them, without a cluster.
//!
//! Renders `charts/l3` with the real helm binary (`make tools-helm` puts it in `.tools/bin`),
//! parses every manifest into its k8s-openapi type and fails on any field that does not survive
//! the round trip: a misspelt or misplaced field is dropped by the typed parse, so it shows up as
//! missing. Also pins what the chart promises (replicas, pod security, probes, least-privilege
//! RBAC) and that `deploy/` and `charts/l3/crds/` match what they are generated from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const RELEASE: &str = "l3";
const NAMESPACE: &str = "l3-system";
const ALL_FEATURES: &str = "charts/l3/ci/all-features-values.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> PathBuf {
    let helm = root().join(".tools/bin/helm");
    assert!(
        helm.is_file(),
        "{} is missing: run `make tools-helm` (make test does this first)",
        helm.display()
    );
    helm
}

/// `helm template` of the chart with the given extra arguments, CRDs included.
fn render(extra: &[&str]) -> String {
    let out = Command::new(helm())
        .current_dir(root())
        .args(["template", RELEASE, "charts/l3", "--namespace", NAMESPACE])
        .arg("--include-crds")
        .args(extra)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// Every non-empty YAML document of a multi-document stream, as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("every rendered document is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn defaults() -> Vec<Value> {
    documents(&render(&[]))
}

fn all_features() -> Vec<Value> {
    documents(&render(&["-f", ALL_FEATURES]))
}

/// Paths where `before` and `after` differ: what the typed parse lost, changed or invented.
fn diff(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}/{k}");
                match b.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(format!("lost {p} = {va}")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("invented {path}/{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}/{i}"), va, vb, out);
            }
        }
        _ if before == after => {}
        _ => out.push(format!("changed {path}: {before} -> {after}")),
    }
}

fn roundtrip<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| format!("parse: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("serialise: {e}"))?;
    let mut lost = Vec::new();
    diff("", doc, &back, &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(lost.join("\n  "))
    }
}

fn str_at<'a>(doc: &'a Value, pointer: &str) -> &'a str {
    doc.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn ident(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        str_at(doc, "/kind"),
        str_at(doc, "/metadata/namespace"),
        str_at(doc, "/metadata/name")
    )
}

/// Parses one manifest into its type (or checks its shape for prometheus-operator kinds).
fn check_manifest(doc: &Value) -> Result<(), String> {
    let kind = (str_at(doc, "/apiVersion"), str_at(doc, "/kind"));
    match kind {
        ("apps/v1", "Deployment") => roundtrip::<Deployment>(doc).map(drop),
        ("v1", "Service") => roundtrip::<Service>(doc).map(drop),
        ("v1", "ServiceAccount") => roundtrip::<ServiceAccount>(doc).map(drop),
        ("v1", "ConfigMap") => roundtrip::<ConfigMap>(doc).map(drop),
        ("v1", "Namespace") => roundtrip::<Namespace>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip::<ClusterRole>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            roundtrip::<ClusterRoleBinding>(doc).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => roundtrip::<Role>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => roundtrip::<RoleBinding>(doc).map(drop),
        ("policy/v1", "PodDisruptionBudget") => roundtrip::<PodDisruptionBudget>(doc).map(drop),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            roundtrip::<CustomResourceDefinition>(doc).map(drop)
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => check_service_monitor(doc),
        ("monitoring.coreos.com/v1", "PrometheusRule") => check_prometheus_rule(doc),
        (api, kind) => Err(format!(
            "no typed check for {api} {kind}: add it to check_manifest"
        )),
    }
}

fn check_service_monitor(doc: &Value) -> Result<(), String> {
    let spec = doc.get("spec").ok_or("no spec")?;
    let allowed = ["selector", "namespaceSelector", "endpoints"];
    let keys = spec.as_object().ok_or("spec is not a map")?;
    if let Some(k) = keys.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unexpected spec field {k}"));
    }
    if spec.pointer("/selector/matchLabels").is_none() {
        return Err("spec.selector.matchLabels missing".into());
    }
    let endpoints = spec
        .get("endpoints")
        .and_then(Value::as_array)
        .ok_or("spec.endpoints is not a list")?;
    let endpoint_fields = ["port", "path", "interval", "scrapeTimeout", "honorLabels"];
    for e in endpoints {
        let e = e.as_object().ok_or("endpoint is not a map")?;
        if let Some(k) = e.keys().find(|k| !endpoint_fields.contains(&k.as_str())) {
            return Err(format!("unexpected endpoint field {k}"));
        }
        if e.get("port").and_then(Value::as_str) != Some("metrics") {
            return Err("endpoint does not scrape the `metrics` port".into());
        }
    }
    Ok(())
}

fn check_prometheus_rule(doc: &Value) -> Result<(), String> {
    let groups = doc
        .pointer("/spec/groups")
        .and_then(Value::as_array)
        .ok_or("spec.groups is not a list")?;
    let rule_fields = ["alert", "expr", "for", "labels", "annotations"];
    let mut alerts = Vec::new();
    for g in groups {
        let rules = g
            .get("rules")
            .and_then(Value::as_array)
            .ok_or("group without rules")?;
        for r in rules {
            let r = r.as_object().ok_or("rule is not a map")?;
            if let Some(k) = r.keys().find(|k| !rule_fields.contains(&k.as_str())) {
                return Err(format!("unexpected rule field {k}"));
            }
            let alert = r
                .get("alert")
                .and_then(Value::as_str)
                .ok_or("rule without alert")?;
            let expr = r.get("expr").and_then(Value::as_str).unwrap_or("");
            if !expr.contains("l3_") {
                return Err(format!("{alert}: expr does not use an l3_ metric: {expr}"));
            }
            if r.get("labels").and_then(|l| l.get("severity")).is_none() {
                return Err(format!("{alert}: no severity label"));
            }
            alerts.push(alert.to_string());
        }
    }
    for wanted in ["L3NoLeader", "L3PolicyMetricsUnavailable", "L3WeightsStale"] {
        if !alerts.iter().any(|a| a == wanted) {
            return Err(format!("alert {wanted} missing (have {alerts:?})"));
        }
    }
    Ok(())
}

fn check_all(docs: &[Value]) {
    assert!(!docs.is_empty(), "the chart rendered nothing");
    let failures: Vec<String> = docs
        .iter()
        .filter_map(|d| {
            check_manifest(d)
                .err()
                .map(|e| format!("{}:\n  {e}", ident(d)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "manifests that do not round-trip:\n{}",
        failures.join("\n")
    );
}

fn kinds(docs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in docs {
        *m.entry(str_at(d, "/kind").to_string()).or_insert(0) += 1;
    }
    m
}

fn one<T: DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = docs.iter().filter(|d| str_at(d, "/kind") == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    serde_json::from_value(found[0].clone()).expect("typed parse (checked by check_all)")
}

#[test]
fn default_values_round_trip() {
    let docs = defaults();
    check_all(&docs);
    let k = kinds(&docs);
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
    ] {
        assert!(k.contains_key(kind), "default render lacks a {kind}: {k:?}");
    }
    for optional in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(
            !k.contains_key(optional),
            "{optional} must be off by default: {k:?}"
        );
    }
}

#[test]
fn all_features_round_trip() {
    let docs = all_features();
    check_all(&docs);
    let k = kinds(&docs);
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert_eq!(
            k.get(kind),
            Some(&1),
            "all-features render lacks a {kind}: {k:?}"
        );
    }
    // watchNamespaces: [team-a, team-b] binds the ClusterRole per namespace, not cluster-wide.
    assert!(!k.contains_key("ClusterRoleBinding"), "{k:?}");
    let bound: Vec<&str> = docs
        .iter()
        .filter(|d| {
            str_at(d, "/kind") == "RoleBinding" && str_at(d, "/roleRef/kind") == "ClusterRole"
        })
        .map(|d| str_at(d, "/metadata/namespace"))
        .collect();
    assert_eq!(bound, ["team-a", "team-b"]);
}

#[test]
fn the_round_trip_catches_a_misspelt_field() {
    let mut docs = defaults();
    let dep = docs
        .iter_mut()
        .find(|d| str_at(d, "/kind") == "Deployment")
        .expect("a Deployment");
    dep.pointer_mut("/spec/template/spec/containers/0")
        .and_then(Value::as_object_mut)
        .expect("a container")
        .insert(
            "readinesProbe".into(),
            serde_json::json!({"httpGet": {"path": "/readyz"}}),
        );
    let err = check_manifest(dep).expect_err("a misspelt field must be reported");
    assert!(err.contains("readinesProbe"), "{err}");
}

#[test]
fn deployment_is_ha_hardened_and_probed() {
    let dep: Deployment = one(&defaults(), "Deployment");
    let spec = dep.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod spec");
    let anti = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    assert_eq!(anti.len(), 1, "one preferred anti-affinity term");
    assert_eq!(
        anti[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );

    let psc = pod.security_context.expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".into())
    );

    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".into()])
    );
    assert_eq!(
        sc.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".into())
    );
    let res = c.resources.clone().expect("resources");
    assert!(
        res.requests
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    assert!(res.limits.is_some_and(|l| l.contains_key("memory")));

    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| (h.path.clone().unwrap_or_default(), h.port.clone()))
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let probes = IntOrString::String("probes".into());
    assert_eq!(
        probe_path(&c.liveness_probe),
        Some(("/healthz".into(), probes.clone()))
    );
    assert_eq!(
        probe_path(&c.readiness_probe),
        Some(("/readyz".into(), probes))
    );
    let ports: Vec<(String, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(ports, [("metrics".into(), 8080), ("probes".into(), 8081)]);

    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    for want in [
        "--lease-namespace=l3-system",
        "--lease-name=l3-leader",
        "--lease-duration=15s",
        "--metrics-addr=0.0.0.0:8080",
        "--probe-addr=0.0.0.0:8081",
        "--log-format=json",
        "--prometheus-url=http://prometheus.linkerd-viz.svc.cluster.local:9090",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "missing arg {want}: {args:?}"
        );
    }

    let pdb: PodDisruptionBudget = one(&defaults(), "PodDisruptionBudget");
    let pdb = pdb.spec.expect("pdb spec");
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(
        pdb.selector.and_then(|s| s.match_labels),
        spec.selector.match_labels,
        "the PDB selects the Deployment's pods"
    );
}

fn verbs_for(rules: &[PolicyRule], group: &str, resource: &str) -> Vec<String> {
    let mut v: Vec<String> = rules
        .iter()
        .filter(|r| r.api_groups.iter().flatten().any(|g| g == group))
        .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
        .flat_map(|r| r.verbs.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn rbac_is_least_privilege() {
    let docs = defaults();
    let cr: ClusterRole = one(&docs, "ClusterRole");
    let rules = cr.rules.unwrap_or_default();
    for r in &rules {
        let words = r
            .api_groups
            .iter()
            .flatten()
            .chain(r.resources.iter().flatten())
            .chain(r.verbs.iter());
        for w in words {
            assert!(!w.contains('*'), "wildcard in ClusterRole rule {r:?}");
        }
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        verbs_for(&rules, "l3.dev", "latencypolicies"),
        s(&["get", "list", "patch", "update", "watch"])
    );
    for sub in ["latencypolicies/status", "latencypolicies/finalizers"] {
        assert_eq!(
            verbs_for(&rules, "l3.dev", sub),
            s(&["get", "patch", "update"]),
            "{sub}"
        );
    }
    assert_eq!(
        verbs_for(&rules, "split.smi-spec.io", "trafficsplits"),
        s(&["get", "list", "patch", "watch"])
    );
    assert_eq!(
        verbs_for(&rules, "events.k8s.io", "events"),
        s(&["create", "patch"])
    );
    assert_eq!(verbs_for(&rules, "", "events"), s(&["create"]));
    assert!(
        verbs_for(&rules, "coordination.k8s.io", "leases").is_empty(),
        "leases belong in the namespaced Role"
    );
    let covered = rules.iter().all(|r| {
        r.resources.iter().flatten().all(|x| {
            [
                "latencypolicies",
                "latencypolicies/status",
                "latencypolicies/finalizers",
                "trafficsplits",
                "events",
            ]
            .contains(&x.as_str())
        })
    });
    assert!(
        covered,
        "ClusterRole grants something unexpected: {rules:?}"
    );

    let role: Role = one(&docs, "Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    let rules = role.rules.unwrap_or_default();
    assert_eq!(
        verbs_for(&rules, "coordination.k8s.io", "leases"),
        s(&["create", "get", "patch", "update"])
    );
    assert!(
        rules
            .iter()
            .all(|r| r.resources == Some(vec!["leases".into()]))
    );

    let crb: ClusterRoleBinding = one(&docs, "ClusterRoleBinding");
    let sa: ServiceAccount = one(&docs, "ServiceAccount");
    let subjects = crb.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(crb.role_ref.name, cr.metadata.name.unwrap_or_default());
}

#[test]
fn dashboard_is_valid_json_showing_shares_latency_and_success() {
    let cm: ConfigMap = one(&all_features(), "ConfigMap");
    let labels = cm.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("grafana_dashboard").map(String::as_str),
        Some("1")
    );
    let data = cm.data.unwrap_or_default();
    let json = data.get("l3.json").expect("l3.json in the ConfigMap");
    let dash: Value = serde_json::from_str(json).expect("the dashboard is valid JSON");
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for metric in [
        "l3_backend_share_ratio",
        "l3_backend_latency_seconds",
        "l3_backend_success_ratio",
        "l3_leader",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel shows {metric}"
        );
    }
}

fn yaml_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            files.insert(name, text);
        }
    }
    files
}

#[test]
fn deploy_dir_matches_the_chart() {
    helm();
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = Command::new(root().join("scripts/gen-deploy.sh"))
        .arg(tmp.path())
        .output()
        .expect("scripts/gen-deploy.sh runs");
    assert!(
        out.status.success(),
        "scripts/gen-deploy.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = yaml_files(tmp.path());
    let have = yaml_files(&root().join("deploy"));
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "deploy/ has different files than `make deploy` generates"
    );
    for (name, text) in &want {
        assert!(
            have.get(name) == Some(text),
            "deploy/{name} is out of date with charts/l3: run `make deploy` and commit"
        );
    }
    // What `kubectl apply -f deploy/` sends must parse, too.
    let docs: Vec<Value> = have.values().flat_map(|t| documents(t)).collect();
    check_all(&docs);
    assert_eq!(kinds(&docs).get("Namespace"), Some(&1));
}

#[test]
fn chart_crds_match_generated_crds() {
    let generated = root().join("crds");
    let chart = root().join("charts/l3/crds");
    assert!(
        generated.join("latencypolicies.l3.dev.yaml").is_file(),
        "crds/latencypolicies.l3.dev.yaml does not exist: it is generated by `l3 crdgen` \
         (operator, issue 5); once it exists run `make chart-crds deploy`"
    );
    let want = yaml_files(&generated);
    let have = yaml_files(&chart);
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "charts/l3/crds/ holds different files than crds/"
    );
    for (name, text) in &want {
        assert!(
            have.get(name) == Some(text),
            "charts/l3/crds/{name} differs from crds/{name}: run `make chart-crds deploy`"
        );
    }
}

/// Keys of values.yaml that neither appear in charts/l3/README.md nor have an ancestor there.
fn undocumented(path: &str, value: &Value, readme: &str, out: &mut Vec<String>) {
    if !path.is_empty() && readme.contains(&format!("| `{path}` |")) {
        return;
    }
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                undocumented(&child, v, readme, out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

#[test]
fn every_value_is_in_the_readme_table() {
    let values =
        std::fs::read_to_string(root().join("charts/l3/values.yaml")).expect("values.yaml");
    let values: Value = serde_yaml::from_str(&values).expect("values.yaml parses");
    let readme = std::fs::read_to_string(root().join("charts/l3/README.md")).expect("README.md");
    let mut missing = Vec::new();
    undocumented("", &values, &readme, &mut missing);
    assert!(
        missing.is_empty(),
        "values missing from charts/l3/README.md's table: {missing:?}"
    );
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases: [(&str, &str); 4] = [
        ("logFormat=xml", "logFormat"),
        ("replicaCont=2", "replicaCont"),
        ("prometheus.url=prometheus:9090", "prometheus.url"),
        ("prometheus.headers[0]=X-A: 1\\,2", "prometheus.headers"),
    ];
    for (set, field) in cases {
        let out = Command::new(helm())
            .current_dir(root())
            .args(["template", RELEASE, "charts/l3", "--set", set])
            .output()
            .expect("helm runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains(field),
            "--set {set}: error does not name {field}:\n{stderr}"
        );
    }
}
