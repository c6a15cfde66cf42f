//! Bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, one line each) and of the seed-corpus
//! replay (`tests/fuzz_corpus.rs`): every parser of data from the network or from users, fed
//! arbitrary bytes. A body returns normally for any input, valid or not; it panics only when a
//! parser panics or breaks one of the properties checked here, which is what a fuzzer reports.
//!
//! Not part of l3's interface: it exists so that `cargo fuzz` and `make test` run the same code.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use crate::operator::crd::{self, LatencyPolicySpec};
use crate::operator::route;
use crate::operator::target::RuleSelector;
use crate::operator::trafficsplit::{self, ORIGINAL_WEIGHTS_ANNOTATION, ParsedSplit, WeightForm};
use crate::sim::Scenario;
use crate::source::decode;
use crate::source::{
    BackendKey, Error as SourceError, Outcome, QueryWindow, SignalKind, SourceConfig,
};

/// A target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the seed corpus
/// `fuzz/corpus/<name>/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("prometheus_answer", prometheus_answer),
    ("scenario_yaml", scenario_yaml),
    ("weight_quantity", weight_quantity),
    ("policy_spec", policy_spec),
    ("traffic_split", traffic_split),
    ("route", route),
    ("original_weights", original_weights),
    ("duration", duration),
];

/// HTTP statuses a Prometheus answer is tried with (picked by the first input byte).
const STATUSES: [u16; 6] = [200, 204, 400, 422, 500, 503];

/// One raw `/api/v1/query` answer (HTTP status, body) turned into typed outcomes, one map per
/// signal, for the backends the answer names plus one it does not. This is the one place the
/// Prometheus target meets the decoder: when the decoder changes, only this function does.
pub fn decode_query_answer(
    status: u16,
    body: &[u8],
    accept_warnings: bool,
) -> Result<Vec<BTreeMap<BackendKey, Outcome>>, SourceError> {
    let config = SourceConfig {
        accept_warnings,
        ..SourceConfig::default()
    };
    // The backends the answer names (when it decodes at all), plus one it does not.
    let mut requested: Vec<BackendKey> = decode::decode_answer(status, body, accept_warnings)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| {
            Some(BackendKey {
                namespace: s.labels.get(&config.namespace_label)?.clone(),
                service: s.labels.get(&config.service_label)?.clone(),
            })
        })
        .collect();
    requested.push(BackendKey {
        namespace: "absent".into(),
        service: "absent".into(),
    });
    SignalKind::ALL
        .iter()
        .map(|&signal| decode::outcomes_from_answer(&config, signal, &requested, status, body))
        .collect()
}

/// Prometheus answers: byte 0 picks the HTTP status and whether warnings are accepted, the rest
/// is the body. Every requested backend gets an outcome; a value is finite; a failure has one
/// of the bounded reasons.
pub fn prometheus_answer(data: &[u8]) {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(head) % STATUSES.len()];
    let accept_warnings = head & 0x80 != 0;
    match decode_query_answer(status, body, accept_warnings) {
        Ok(per_signal) => {
            for outcomes in per_signal {
                assert!(
                    outcomes.contains_key(&BackendKey {
                        namespace: "absent".into(),
                        service: "absent".into(),
                    }),
                    "a requested backend has no outcome"
                );
                for o in outcomes.values() {
                    if let Outcome::Value(v) = o {
                        assert!(v.is_finite(), "Outcome::Value({v}) is not finite");
                    }
                }
            }
        }
        Err(e) => {
            assert!(
                SourceError::QUERY_REASONS.contains(&e.reason()),
                "reason {:?} is not a bounded query reason",
                e.reason()
            );
            let _ = e.to_string();
        }
    }
}

/// Scenario YAML: parsed and validated, or refused with an error; a valid scenario's series are
/// readable at any time.
pub fn scenario_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::from_yaml(text, "fuzz") {
        Ok(sc) => {
            for b in &sc.backends {
                for t in [-1.0, 0.0, sc.duration / 2.0, sc.duration, f64::MAX] {
                    for s in [&b.p50_ms, &b.p99_ms, &b.success] {
                        let _ = s.at(t);
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Weight quantities: the input as a Quantity string and as JSON. An accepted weight is finite
/// and non-negative, and what l3 writes in each form reads back as the same weight.
pub fn weight_quantity(data: &[u8]) {
    let check = |v: &Value| {
        if let Ok((w, form)) = trafficsplit::parse_weight(v) {
            assert!(w.is_finite() && w >= 0.0, "{v} parsed as {w}");
            if let Value::String(s) = v {
                assert_eq!(
                    form == WeightForm::Milli,
                    s.ends_with('m'),
                    "{s:?}: {form:?}"
                );
            }
        }
    };
    if let Ok(s) = std::str::from_utf8(data) {
        check(&Value::String(s.to_owned()));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check(&v);
    }
    if let Some(bytes) = data.get(..4) {
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        for (form, unit) in [
            (WeightForm::Integer, 1.0),
            (WeightForm::String, 1.0),
            (WeightForm::Milli, 0.001),
        ] {
            let written = form.render(n);
            let read = trafficsplit::parse_weight(&written)
                .unwrap_or_else(|e| panic!("l3's own weight {written} does not parse: {e}"));
            assert_eq!(read, (f64::from(n) * unit, form), "{written}");
        }
    }
}

/// LatencyPolicy specs (JSON, as the API server hands them over): settings, or an error naming
/// a spec field. Accepted settings are within the documented bounds.
pub fn policy_spec(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<LatencyPolicySpec>(data) else {
        return;
    };
    match spec.settings() {
        Ok(s) => {
            assert!(
                s.interval_secs.is_finite() && s.interval_secs >= 1.0,
                "interval {}",
                s.interval_secs
            );
            if let QueryWindow::Secs(w) = s.window {
                assert!(w >= 2, "window {w}");
            }
            assert!(
                (0.5..=0.999).contains(&s.quantile),
                "quantile {}",
                s.quantile
            );
            assert!(
                (0.0..=0.5).contains(&s.hysteresis),
                "hysteresis {}",
                s.hysteresis
            );
            assert!(
                (0.0..=0.5).contains(&s.pipeline.min_share),
                "minShare {}",
                s.pipeline.min_share
            );
            let f = &s.filters;
            for h in [
                f.latency_half_life,
                f.inflight_half_life,
                f.success_rate_half_life,
                f.rps_half_life,
            ] {
                assert!(h.is_finite() && h > 0.0, "half-life {h}");
            }
            if let Some(step) = s.max_share_step {
                assert!(step > s.hysteresis && step <= 1.0, "maxShareStep {step}");
            }
        }
        Err(e) => assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}"),
    }
}

/// Read a split and everything l3 derives from it for a write or a restore.
fn exercise_split(obj: &DynamicObject) {
    if let Ok(p) = trafficsplit::parse(obj) {
        exercise_parsed(&p, |patch| {
            patch["spec"]["backends"].as_array().map(Vec::len)
        });
    }
}

/// What l3 derives from a parsed target (TrafficSplit or one rule of a route): annotations
/// read and rebased, the restore patch and a weights patch. `written` finds the backend list
/// in a patch (its length), which must hold every backend.
fn exercise_parsed(p: &ParsedSplit, written: impl Fn(&Value) -> Option<usize>) {
    let names: Vec<String> = p.names().map(str::to_owned).collect();
    let _ = p.original_weights_json();
    let _ = p.foreign_history();
    let _ = p.foreign_change();
    if let (Ok(Some(originals)), Ok(applied)) = (p.originals(), p.applied_weights()) {
        let current = p.current_weights();
        let reference = applied.unwrap_or_else(|| current.clone());
        for integers_only in [false, true] {
            let rebased = trafficsplit::rebase_originals(
                &originals,
                &reference,
                &current,
                integers_only,
                p.absent_weight,
            );
            for (s, w) in &rebased {
                assert!(
                    w.is_null() || trafficsplit::parse_weight(w).is_ok(),
                    "rebased original of {s} is not a weight: {w}"
                );
            }
        }
    }
    for integers_only in [false, true] {
        if let Ok(Some(patch)) = p.restore_patch(integers_only) {
            assert!(written(&patch).is_some(), "{patch}");
        }
    }
    let weights: Vec<(&str, u32)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), (i as u32 * 337) % 1001))
        .collect();
    let patch = p.weights_patch(&weights, p.form, true);
    assert_eq!(written(&patch), Some(p.raw_backends.len()), "{patch}");
}

/// TrafficSplits (JSON objects as the API server hands them over): parsed, then the patches
/// and annotations l3 derives from them.
pub fn traffic_split(data: &[u8]) {
    if let Ok(obj) = serde_json::from_slice::<DynamicObject>(data) {
        exercise_split(&obj);
    }
}

/// Routes (HTTPRoute or GRPCRoute JSON objects; byte 0 picks the rule selector: the default,
/// an index or the name `split`): one rule parsed, then the patches l3 derives from it. A
/// weights patch changes only the weights: every other rule, and every other field of the
/// tuned rule's backendRefs, is the route's own.
pub fn route(data: &[u8]) {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let Ok(obj) = serde_json::from_slice::<DynamicObject>(body) else {
        return;
    };
    let selector = match head % 3 {
        0 => RuleSelector::Default,
        1 => RuleSelector::Index(usize::from(head >> 2) % 4),
        _ => RuleSelector::Name("split".into()),
    };
    let Ok(p) = route::parse(&obj, &selector) else {
        return;
    };
    let rules = obj.data["spec"]["rules"]
        .as_array()
        .expect("a parsed route has rules");
    let rule = route::select_rule(rules, &selector).expect("a parsed route's rule is found");
    exercise_parsed(&p, |patch| {
        patch["spec"]["rules"][rule]["backendRefs"]
            .as_array()
            .map(Vec::len)
    });
    let weights: Vec<(&str, u32)> = p.names().map(|n| (n, 7)).collect();
    let patch = p.weights_patch(&weights, p.form, true);
    let patched = patch["spec"]["rules"]
        .as_array()
        .expect("rules in the patch");
    assert_eq!(patched.len(), rules.len(), "{patch}");
    for (i, (before, after)) in rules.iter().zip(patched).enumerate() {
        if i != rule {
            assert_eq!(before, after, "rule {i} changed: {patch}");
            continue;
        }
        let strip = |r: &Value| {
            let mut r = r.clone();
            if let Some(refs) = r.get_mut("backendRefs").and_then(Value::as_array_mut) {
                for b in refs.iter_mut().filter_map(Value::as_object_mut) {
                    b.remove("weight");
                }
            }
            r
        };
        assert_eq!(
            strip(before),
            strip(after),
            "rule {i} changed beyond its weights"
        );
    }
}

/// The original-weights annotation (any text) on a split of three backends in mixed forms:
/// read, rebased and restored; l3's own annotation of the split reads back as its weights.
pub fn original_weights(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut obj = trafficsplit::object(
        trafficsplit::SplitVersion::V1alpha1,
        "ns",
        "web",
        &[("a", json!("500m")), ("b", json!(1)), ("c", Value::Null)],
    );
    let own = trafficsplit::parse(&obj)
        .expect("the fixed split parses")
        .original_weights_json();
    obj.metadata.annotations = Some(
        [(ORIGINAL_WEIGHTS_ANNOTATION.to_owned(), text.to_owned())]
            .into_iter()
            .collect(),
    );
    exercise_split(&obj);
    obj.metadata.annotations = Some(
        [(ORIGINAL_WEIGHTS_ANNOTATION.to_owned(), own.clone())]
            .into_iter()
            .collect(),
    );
    let p = trafficsplit::parse(&obj).expect("the fixed split parses");
    assert_eq!(
        p.originals().ok().flatten(),
        Some(p.current_weights()),
        "l3's own annotation {own} does not read back"
    );
}

/// Whether `s` matches [`crd::DURATION_PATTERN`] (`^[0-9]+(\.[0-9]+)?(ms|s|m)$`).
fn matches_duration_pattern(s: &str) -> bool {
    let num = ["ms", "s", "m"]
        .iter()
        .find_map(|u| s.strip_suffix(u))
        .unwrap_or("");
    let (int, frac) = num.split_once('.').unwrap_or((num, "1"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

/// Duration strings: the shared parser and the three callers' rules. A duration is finite and
/// non-negative, prints back to itself, and every string the CRD schema admits (short enough
/// to be finite) is accepted.
pub fn duration(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let secs = crate::duration::parse_secs(s);
    if let Some(v) = secs {
        assert!(v.is_finite() && v >= 0.0, "{s:?} parsed as {v}");
        assert_eq!(
            crate::duration::parse_secs(&format!("{v}s")),
            Some(v),
            "{s:?}"
        );
    }
    let in_crd = crd::parse_duration(s);
    if !s.trim_end().ends_with('h') {
        assert_eq!(in_crd.ok(), secs, "{s:?}: CRD and shared parser disagree");
    }
    if matches_duration_pattern(s) && s.len() <= 300 {
        assert!(
            in_crd.is_ok(),
            "{s:?} matches the CRD pattern but is refused"
        );
    }
    if let Ok(d) = crate::source::prometheus::parse_duration("fuzz", s) {
        assert!(d.as_secs_f64() > 0.0 && d.as_secs_f64() <= 3600.0, "{s:?}");
    }
}
