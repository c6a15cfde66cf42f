//! Status of a LatencyPolicy: the conditions (`Ready`, `TargetFound`, `MetricsAvailable`,
//! `Conflict`, `Contested`) with observedGeneration and stable transition times, the
//! transitions that become Events, and when a status is worth writing. Values are rounded so
//! that noise below what anyone reads does not count as a change; what someone acts on (a
//! condition, the generation, a weight write, the backend list) is written at once, the rest
//! (filtered signals, DryRun weights) at most every status interval.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::crd::LatencyPolicyStatus;

/// Condition: the policy is acting (or, in DryRun, computing) normally.
pub const READY: &str = "Ready";
/// Condition: the TrafficSplit named by `targetRef` exists and is usable.
pub const TARGET_FOUND: &str = "TargetFound";
/// Condition: the last Prometheus queries for this policy succeeded.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
/// Condition: another, older policy targets the same split; this one is refused.
pub const CONFLICT: &str = "Conflict";
/// Condition: another writer keeps changing the split's weights; l3 has stopped writing it
/// until the policy's spec changes. False while l3 is alone, or paused after one change.
pub const CONTESTED: &str = "Contested";
/// Every condition type, for the `l3_policies` metric.
pub const CONDITION_TYPES: [&str; 5] =
    [READY, TARGET_FOUND, METRICS_AVAILABLE, CONFLICT, CONTESTED];

/// One condition as the cycle decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Cond {
    /// A condition.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// A condition that changed status (or appeared), to be published as an Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Whether it is bad news (an Event of type Warning).
    pub warning: bool,
    /// Event reason: the condition's reason.
    pub reason: &'static str,
    /// Event note.
    pub note: String,
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Merge `conds` into `existing`: a condition keeps its lastTransitionTime unless its status
/// changed. Returns the new list (sorted by type) and the transitions.
pub fn merge_conditions(
    existing: &[Condition],
    conds: &[Cond],
    generation: Option<i64>,
    now: &Time,
) -> (Vec<Condition>, Vec<Transition>) {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !conds.iter().any(|n| n.type_ == c.type_))
        .cloned()
        .collect();
    let mut transitions = Vec::new();
    for c in conds {
        let prev = existing.iter().find(|e| e.type_ == c.type_);
        let status = status_str(c.status);
        let changed = prev.is_none_or(|p| p.status != status);
        let last_transition_time = match prev {
            Some(p) if !changed => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        // Conflict=True, Contested=True and every other condition False are the bad news.
        let warning = if c.type_ == CONFLICT || c.type_ == CONTESTED {
            c.status
        } else {
            !c.status
        };
        // A policy's first Conflict=False, or first success, is not news.
        if changed && (prev.is_some() || warning) {
            transitions.push(Transition {
                warning,
                reason: c.reason,
                note: format!("{} is {status}: {}", c.type_, c.message),
            });
        }
        out.push(Condition {
            type_: c.type_.to_owned(),
            status: status.to_owned(),
            reason: c.reason.to_owned(),
            message: c.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    (out, transitions)
}

/// Round to `digits` decimal places, so that status comparisons ignore noise.
pub fn round(v: f64, digits: i32) -> f64 {
    let s = 10f64.powi(digits);
    if v.is_finite() {
        (v * s).round() / s
    } else {
        0.0
    }
}

/// A duration for the status, three significant digits, e.g. `10s` or `2.5s`.
pub fn seconds(v: f64) -> String {
    format!("{}s", significant(v, 3))
}

/// Round to `digits` significant digits (latency, RPS and in-flight span orders of magnitude:
/// 0.0123 s and 1230 RPS are read to three digits alike).
pub fn significant(v: f64, digits: i32) -> f64 {
    if !v.is_finite() {
        return 0.0;
    }
    if v == 0.0 {
        return 0.0;
    }
    let magnitude = v.abs().log10().floor() as i32;
    round(v, digits - 1 - magnitude)
}

/// Whether `new` differs from `old` in something a reader acts on: a condition's status or
/// reason, the observed generation, the time of the last weight write, or the backend list.
/// Such a change is written at once; see [`due`].
pub fn significant_change(old: &LatencyPolicyStatus, new: &LatencyPolicyStatus) -> bool {
    let conds = |s: &LatencyPolicyStatus| -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    };
    let services = |s: &LatencyPolicyStatus| -> Vec<String> {
        s.backends.iter().map(|b| b.service.clone()).collect()
    };
    old.observed_generation != new.observed_generation
        || old.last_weight_update != new.last_weight_update
        || conds(old) != conds(new)
        || services(old) != services(new)
}

/// Whether to write `new` now: always if nothing was written yet or on a significant change;
/// otherwise only if it [`changed`] and at least `interval_secs` passed since the last write
/// (`since_last_secs`). With noisy signals the rounded figures change every cycle, so without
/// this bound every policy would be written every interval.
pub fn due(
    old: Option<&LatencyPolicyStatus>,
    new: &LatencyPolicyStatus,
    since_last_secs: f64,
    interval_secs: f64,
) -> bool {
    let Some(o) = old else {
        return true;
    };
    significant_change(o, new) || (since_last_secs >= interval_secs && changed(old, new))
}

/// How stale a backend's reported `lastSampleTime` may get before the status is rewritten for
/// it alone. Stale metrics show at once anyway, through the `MetricsAvailable` condition.
pub const SAMPLE_TIME_REFRESH_SECS: i64 = 300;

/// Relative move of a backend's latency, RPS or in-flight figure worth a refresh: noise of a few
/// percent between cycles is not news to anyone reading the status.
pub const FIGURE_MOVE: f64 = 0.10;
/// Move of a backend's share (and of its weight out of 1000) worth a refresh: one point, the
/// default hysteresis. A smaller move is not written to the split either, so the computed share
/// jittering below it is noise to the reader too.
pub const SHARE_MOVE: f64 = 0.01;
/// Move of a backend's success rate worth a refresh: a tenth of a point.
pub const SUCCESS_MOVE: f64 = 0.001;

/// Whether `new` differs materially from what was last written: anything but the backends'
/// figures differs, or a figure moved by more than [`FIGURE_MOVE`] (relative), [`SHARE_MOVE`]
/// or [`SUCCESS_MOVE`], or a backend's `lastSampleTime` is [`SAMPLE_TIME_REFRESH_SECS`] ahead of
/// the written one. Comparing against what was written, not the last cycle, means a slow drift
/// is refreshed once it adds up, while noise that stays within the bands never is.
pub fn changed(old: Option<&LatencyPolicyStatus>, new: &LatencyPolicyStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    let strip = |s: &LatencyPolicyStatus| {
        let mut s = s.clone();
        s.backends.clear();
        s
    };
    if strip(old) != strip(new) || old.backends.len() != new.backends.len() {
        return true;
    }
    let moved = |a: f64, b: f64| {
        let scale = a.abs().max(b.abs());
        scale > 0.0 && (a - b).abs() > FIGURE_MOVE * scale
    };
    old.backends.iter().zip(&new.backends).any(|(o, n)| {
        let sample_time = match (&o.last_sample_time, &n.last_sample_time) {
            (Some(o), Some(n)) => n.0.as_second() - o.0.as_second() >= SAMPLE_TIME_REFRESH_SECS,
            (o, n) => o.is_some() != n.is_some(),
        };
        o.service != n.service
            || f64::from(o.weight.abs_diff(n.weight)) >= SHARE_MOVE * 1000.0
            || (o.share - n.share).abs() >= SHARE_MOVE
            || (o.success_rate - n.success_rate).abs() >= SUCCESS_MOVE
            || moved(o.latency_seconds, n.latency_seconds)
            || moved(o.requests_per_second, n.requests_per_second)
            || moved(o.inflight, n.inflight)
            || sample_time
    })
}

/// Seconds since the epoch as a Kubernetes Time (whole seconds, as the API server stores it).
pub fn time(secs: f64) -> Time {
    let s = if secs.is_finite() {
        secs.floor() as i64
    } else {
        0
    };
    Time(
        k8s_openapi::jiff::Timestamp::from_second(s)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = time(100.0);
        let t1 = time(200.0);
        let (c, tr) = merge_conditions(
            &[],
            &[Cond::new(READY, true, "WeightsComputed", "ok")],
            Some(1),
            &t0,
        );
        assert!(tr.is_empty(), "a first success is not news: {tr:?}");
        let (c2, tr) = merge_conditions(
            &c,
            &[Cond::new(READY, true, "WeightsComputed", "still ok")],
            Some(2),
            &t1,
        );
        assert_eq!(c2[0].last_transition_time, t0);
        assert_eq!(c2[0].observed_generation, Some(2));
        assert!(tr.is_empty());
        let (c3, tr) = merge_conditions(
            &c2,
            &[Cond::new(READY, false, "MetricsUnavailable", "down")],
            Some(2),
            &t1,
        );
        assert_eq!(c3[0].last_transition_time, t1);
        assert_eq!(tr.len(), 1);
        assert!(tr[0].warning);
    }

    #[test]
    fn figures_round_to_what_is_read() {
        assert_eq!(significant(0.012_345, 3), 0.0123);
        assert_eq!(significant(1234.5, 3), 1230.0);
        assert_eq!(significant(0.0, 3), 0.0);
        assert_eq!(significant(f64::NAN, 3), 0.0);
    }

    #[test]
    fn noise_is_not_news_a_drift_waits_for_the_interval_and_conditions_do_not() {
        let t0 = time(100.0);
        let (conditions, _) = merge_conditions(
            &[],
            &[Cond::new(READY, true, "WeightsComputed", "ok")],
            Some(1),
            &t0,
        );
        let old = LatencyPolicyStatus {
            observed_generation: Some(1),
            conditions,
            last_weight_update: None,
            backends: vec![crate::operator::crd::BackendStatus {
                service: "a".into(),
                weight: 500,
                latency_seconds: 0.0123,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut noisy = old.clone();
        noisy.backends[0].latency_seconds = 0.0124;
        noisy.backends[0].weight = 501;
        assert!(!due(Some(&old), &noisy, 5.0, 30.0), "noise waits");
        assert!(
            !due(Some(&old), &noisy, 300.0, 30.0),
            "and, within the bands, is never news"
        );
        let mut drift = old.clone();
        drift.backends[0].latency_seconds = 0.0150;
        drift.backends[0].weight = 520;
        assert!(!due(Some(&old), &drift, 5.0, 30.0), "a drift waits");
        assert!(due(Some(&old), &drift, 30.0, 30.0), "and is refreshed");
        assert!(!due(Some(&old), &old, 300.0, 30.0), "no change, no write");
        let mut generation = old.clone();
        generation.observed_generation = Some(2);
        assert!(due(Some(&old), &generation, 0.0, 30.0));
        let mut reason = old.clone();
        reason.conditions[0].reason = "DryRun".into();
        assert!(due(Some(&old), &reason, 0.0, 30.0));
        let mut written = old.clone();
        written.last_weight_update = Some(time(105.0));
        assert!(due(Some(&old), &written, 0.0, 30.0));
        assert!(due(None, &old, 0.0, 30.0));
    }
}
