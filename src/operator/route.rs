//! Gateway API routes (HTTPRoute and GRPCRoute in `gateway.networking.k8s.io/v1`, and Linkerd's
//! `policy.linkerd.io` HTTPRoute) as l3 reads them: the weights of one rule's `backendRefs`.
//!
//! A route is read into the same [`ParsedSplit`] as a TrafficSplit, with a
//! [`Layout::Route`]: its patches send `spec.rules` whole, every rule but the tuned one exactly as
//! read, and in the tuned one only the `weight` of each backendRef changes. The API server
//! refuses such a patch (409) when the route changed since it was read (resourceVersion).
//!
//! A backendRef's weight defaults to 1 when absent; an absent weight is recorded as absent
//! (`null`) in l3's original-weights record and restored as absent.

use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::target::RuleSelector;
use super::trafficsplit::{
    APPLIED_WEIGHTS_ANNOTATION, FAILOVER_LABEL, FOREIGN_CHANGES_ANNOTATION, Layout,
    ORIGINAL_WEIGHTS_ANNOTATION, ParsedSplit, SplitBackend, SplitError, WeightForm, annotation,
};

/// The weight of a backendRef without one (Gateway API: "If unspecified, weight defaults
/// to 1").
pub const DEFAULT_WEIGHT: f64 = 1.0;
/// Largest weight the Gateway API allows.
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// One rule as a condition lists it: index, and name when it has one.
fn describe_rule(index: usize, rule: &Value) -> String {
    let refs = rule
        .get("backendRefs")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    match rule.get("name").and_then(Value::as_str) {
        Some(n) => format!("{index} (name {n:?}, {refs} backendRefs)"),
        None => format!("{index} ({refs} backendRefs)"),
    }
}

/// Pick the rule `selector` names out of `rules`; the error lists the choices.
pub fn select_rule(rules: &[Value], selector: &RuleSelector) -> Result<usize, SplitError> {
    let choices = || {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| describe_rule(i, r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match selector {
        RuleSelector::Index(i) => (*i < rules.len()).then_some(*i),
        RuleSelector::Name(n) => rules
            .iter()
            .position(|r| r.get("name").and_then(Value::as_str) == Some(n.as_str())),
        RuleSelector::Default => {
            let weighted: Vec<usize> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.get("backendRefs")
                        .and_then(Value::as_array)
                        .is_some_and(|b| b.len() >= 2)
                })
                .map(|(i, _)| i)
                .collect();
            match weighted.as_slice() {
                [one] => Some(*one),
                [] => {
                    return Err(SplitError::Rule {
                        reason: "NoWeightedRule",
                        message: format!(
                            "no rule has two or more backendRefs to weigh; rules: [{}]",
                            choices()
                        ),
                    });
                }
                many => {
                    let listed: Vec<String> =
                        many.iter().map(|&i| describe_rule(i, &rules[i])).collect();
                    return Err(SplitError::Rule {
                        reason: "AmbiguousRule",
                        message: format!(
                            "{} rules have two or more backendRefs: [{}]; choose one with \
                             targetRef.ruleName or targetRef.ruleIndex",
                            many.len(),
                            listed.join(", ")
                        ),
                    });
                }
            }
        }
    };
    let index = found.ok_or_else(|| SplitError::Rule {
        reason: "RuleNotFound",
        message: format!("the route has no {selector}; rules: [{}]", choices()),
    })?;
    // A rule named or indexed explicitly must have something to weigh too: with no backendRefs
    // a weights patch would add an empty list, changing the route beyond its weights.
    let refs = rules[index]
        .get("backendRefs")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if refs < 2 {
        return Err(SplitError::Rule {
            reason: "NoWeightedRule",
            message: format!(
                "{selector} has {refs} backendRefs, expected two or more to weigh; rules: [{}]",
                choices()
            ),
        });
    }
    Ok(index)
}

/// Read one rule of a route (`selector` picks it).
pub fn parse(obj: &DynamicObject, selector: &RuleSelector) -> Result<ParsedSplit, SplitError> {
    let route_ns = obj.namespace().unwrap_or_default();
    let rules = obj
        .data
        .get("spec")
        .and_then(|s| s.get("rules"))
        .and_then(Value::as_array)
        .ok_or(SplitError::NoRules)?;
    let rule = select_rule(rules, selector)?;
    let raw = rules[rule]
        .get("backendRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut backends: Vec<SplitBackend> = Vec::with_capacity(raw.len());
    for (index, b) in raw.iter().enumerate() {
        let field = |field: &'static str, message: String| SplitError::BackendRef {
            rule,
            index,
            field,
            message,
        };
        let group = b.get("group").and_then(Value::as_str).unwrap_or("");
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            let group = if group.is_empty() { "core" } else { group };
            return Err(SplitError::NotAService {
                rule,
                index,
                kind: kind.to_owned(),
                group: group.to_owned(),
            });
        }
        let name = b
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| field("name", "expected a non-empty Service name".into()))?;
        let namespace = b
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && *n != route_ns);
        let weight = match b.get("weight") {
            None | Some(Value::Null) => DEFAULT_WEIGHT,
            Some(w) => w
                .as_f64()
                .filter(|w| w.is_finite() && (0.0..=MAX_WEIGHT).contains(w) && w.fract() == 0.0)
                .ok_or_else(|| {
                    field(
                        "weight",
                        format!("{w} is not valid, expected an integer in [0, 1000000]"),
                    )
                })?,
        };
        let service = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        if backends.iter().any(|x| x.service == service) {
            return Err(SplitError::Duplicate(service));
        }
        backends.push(SplitBackend {
            service,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            weight,
        });
    }
    Ok(ParsedSplit {
        service: String::new(),
        backends,
        form: WeightForm::Integer,
        raw_backends: raw,
        layout: Layout::Route {
            rules: rules.clone(),
            rule,
        },
        absent_weight: DEFAULT_WEIGHT,
        resource_version: obj.meta().resource_version.clone(),
        original: annotation(obj, ORIGINAL_WEIGHTS_ANNOTATION),
        applied: annotation(obj, APPLIED_WEIGHTS_ANNOTATION),
        foreign: annotation(obj, FOREIGN_CHANGES_ANNOTATION),
        failover: obj.labels().get(FAILOVER_LABEL).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ApiResource;
    use serde_json::json;

    fn route(rules: Value) -> DynamicObject {
        let ar = ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            plural: "httproutes".into(),
        };
        let mut obj = DynamicObject::new("web", &ar).within("apps");
        obj.data = json!({"spec": {"parentRefs": [{"name": "web", "kind": "Service", "group": ""}], "rules": rules}});
        obj.metadata.resource_version = Some("9".into());
        obj
    }

    fn three() -> Value {
        json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
             "backendRefs": [{"name": "admin", "port": 80}]},
            {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}],
             "backendRefs": [
                {"name": "web-east", "port": 80, "weight": 50},
                {"name": "web-west", "port": 80},
                {"name": "web-north", "namespace": "other", "port": 8080, "weight": 0}
             ]}
        ])
    }

    #[test]
    fn only_weights_change_and_absent_weights_are_restored_absent() {
        let obj = route(three());
        let p = parse(&obj, &RuleSelector::Default).unwrap();
        let names: Vec<&str> = p.names().collect();
        assert_eq!(names, ["web-east", "web-west", "other/web-north"]);
        assert_eq!(p.backends[1].weight, 1.0, "absent is 1");
        assert_eq!(p.backends[2].namespace.as_deref(), Some("other"));
        let patch = p.weights_patch(
            &[
                ("web-east", 500),
                ("web-west", 300),
                ("other/web-north", 200),
            ],
            p.form,
            true,
        );
        assert_eq!(patch["metadata"]["resourceVersion"], "9");
        let mut expected = three();
        expected[1]["backendRefs"][0]["weight"] = json!(500);
        expected[1]["backendRefs"][1]["weight"] = json!(300);
        expected[1]["backendRefs"][2]["weight"] = json!(200);
        assert_eq!(patch["spec"], json!({"rules": expected}));
        let original = patch["metadata"]["annotations"][ORIGINAL_WEIGHTS_ANNOTATION]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            original,
            r#"{"other/web-north":0,"web-east":50,"web-west":null}"#
        );
        // Restore from the written state puts the absent weight back absent.
        let mut written = obj.clone();
        written.data["spec"]["rules"] = expected;
        written.metadata.annotations =
            Some([(ORIGINAL_WEIGHTS_ANNOTATION.to_owned(), original)].into());
        let w = parse(&written, &RuleSelector::Default).unwrap();
        let restore = w.restore_patch(true).unwrap().unwrap();
        assert_eq!(restore["spec"], json!({"rules": three()}));
    }

    #[test]
    fn rule_choice_lists_the_choices() {
        let mut rules = three();
        rules[0]["backendRefs"] = json!([{"name": "a"}, {"name": "b"}]);
        rules[0]["name"] = json!("admin");
        let obj = route(rules);
        let e = parse(&obj, &RuleSelector::Default).unwrap_err();
        assert_eq!(e.reason(), "AmbiguousRule");
        let msg = e.to_string();
        assert!(
            msg.contains(r#"0 (name "admin", 2 backendRefs)"#) && msg.contains("1 (3 backendRefs)"),
            "{msg}"
        );
        assert_eq!(
            parse(&obj, &RuleSelector::Name("admin".into()))
                .unwrap()
                .names()
                .count(),
            2
        );
        assert_eq!(
            parse(&obj, &RuleSelector::Index(1))
                .unwrap()
                .names()
                .count(),
            3
        );
        let e = parse(&obj, &RuleSelector::Name("nope".into())).unwrap_err();
        assert_eq!(e.reason(), "RuleNotFound");
        assert!(e.to_string().contains("admin"), "{e}");
        assert_eq!(
            parse(&obj, &RuleSelector::Index(5)).unwrap_err().reason(),
            "RuleNotFound"
        );
    }

    /// Found by fuzzing: a rule chosen by name with no backendRefs parsed as a rule of zero
    /// backends, and its weights patch would have added `backendRefs: []` to the route.
    #[test]
    fn an_explicitly_chosen_rule_needs_two_backend_refs() {
        let mut rules = three();
        rules[0]["name"] = json!("empty");
        rules[0].as_object_mut().unwrap().remove("backendRefs");
        rules[1]["name"] = json!("one");
        rules[1]["backendRefs"] = json!([{"name": "a"}]);
        let obj = route(rules);
        for selector in [
            RuleSelector::Name("empty".into()),
            RuleSelector::Index(0),
            RuleSelector::Name("one".into()),
        ] {
            let e = parse(&obj, &selector).unwrap_err();
            assert_eq!(e.reason(), "NoWeightedRule", "{selector}: {e}");
            assert!(e.to_string().contains("expected two or more"), "{e}");
        }
    }

    #[test]
    fn a_backend_that_is_not_a_service_is_refused() {
        let mut rules = three();
        rules[1]["backendRefs"][1]["kind"] = json!("ServiceImport");
        rules[1]["backendRefs"][1]["group"] = json!("multicluster.x-k8s.io");
        let e = parse(&route(rules), &RuleSelector::Default).unwrap_err();
        assert_eq!(e.reason(), "UnsupportedBackend");
        assert!(
            e.to_string().starts_with("spec.rules[1].backendRefs[1]: "),
            "{e}"
        );
        assert!(e.to_string().contains("ServiceImport"), "{e}");
    }
}
