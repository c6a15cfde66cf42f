//! Status of a LatencyPolicy: the conditions (`Ready`, `TargetFound`, `MetricsAvailable`,
//! `Conflict`) with observedGeneration and stable transition times, and the transitions that
//! become Events. Values are rounded so that noise below what anyone reads does not count as
//! a change: a status is written only when it differs from the last one written.

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
/// Every condition type, for the `l3_policies` metric.
pub const CONDITION_TYPES: [&str; 4] = [READY, TARGET_FOUND, METRICS_AVAILABLE, CONFLICT];

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
        // Conflict=True and every other condition False are the bad news.
        let warning = if c.type_ == CONFLICT {
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

/// How stale a backend's reported `lastSampleTime` may get before the status is rewritten for
/// it alone.
pub const SAMPLE_TIME_REFRESH_SECS: i64 = 60;

/// Whether `new` differs from what was last written. A backend's `lastSampleTime` advances
/// every cycle while traffic flows; on its own it triggers a write only once it is
/// [`SAMPLE_TIME_REFRESH_SECS`] ahead of the written one, so a steady state stays quiet.
pub fn changed(old: Option<&LatencyPolicyStatus>, new: &LatencyPolicyStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    let strip = |s: &LatencyPolicyStatus| {
        let mut s = s.clone();
        for b in &mut s.backends {
            b.last_sample_time = None;
        }
        s
    };
    if strip(old) != strip(new) {
        return true;
    }
    old.backends.iter().zip(&new.backends).any(|(o, n)| {
        match (&o.last_sample_time, &n.last_sample_time) {
            (Some(o), Some(n)) => n.0.as_second() - o.0.as_second() >= SAMPLE_TIME_REFRESH_SECS,
            (o, n) => o.is_some() != n.is_some(),
        }
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
}
