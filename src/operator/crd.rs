//! The `LatencyPolicy` custom resource (group `l3.dev`, version `v1alpha1`): its spec with the
//! paper's defaults, the schema validation `kubectl apply` enforces, the checks the schema cannot
//! express, and the status the operator reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::algorithm::{FilterKind, PipelineConfig, WeightingParams};
use crate::source::QueryWindow;
use crate::state::FilterSettings;

use super::target::Target;

/// API group of the LatencyPolicy.
pub const GROUP: &str = "l3.dev";
/// Finalizer that lets the operator restore a split's original weights before a policy goes.
pub const FINALIZER: &str = "l3.dev/restore-weights";
/// Annotation on a policy naming the split it adopted (set with the finalizer), so that after
/// a change of `targetRef`, or a restart, l3 still knows which split to restore.
pub const ADOPTED_TARGET_ANNOTATION: &str = "l3.dev/adopted-target";
/// Durations: a decimal number followed by `ms`, `s` or `m`, e.g. `5s`, `600ms`, `1.5s`.
pub const DURATION_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$";

/// `queryWindow`: `auto` or a duration.
pub const QUERY_WINDOW_PATTERN: &str = r"^(auto|[0-9]+(\.[0-9]+)?(ms|s|m))$";
/// The `queryWindow` that sizes itself from the scrape interval.
pub const QUERY_WINDOW_AUTO: &str = "auto";

/// A LatencyPolicy: l3 keeps the weights of one SMI TrafficSplit, or of one rule of an
/// HTTPRoute or GRPCRoute, tuned by the L3 algorithm.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "l3.dev",
    version = "v1alpha1",
    kind = "LatencyPolicy",
    plural = "latencypolicies",
    shortname = "lp",
    namespaced,
    status = "LatencyPolicyStatus",
    derive = "Default",
    doc = "LatencyPolicy tunes the backend weights of one SMI TrafficSplit, HTTPRoute or GRPCRoute rule by observed latency (L3).",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Update","type":"date","jsonPath":".status.lastWeightUpdate"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LatencyPolicySpec {
    /// The TrafficSplit or route whose weights this policy tunes (same namespace; one target
    /// per policy).
    pub target_ref: TargetRef,
    /// `Enforce` writes weights; `DryRun` computes and reports them but never writes.
    #[serde(default)]
    pub mode: Mode,
    /// Latency quantile the algorithm reads, in [0.5, 0.999]. Paper: 0.99.
    #[serde(default = "default_percentile")]
    #[schemars(range(min = 0.5, max = 0.999))]
    pub percentile: f64,
    /// Latency charged for a failed request (P in Algorithm 1). Paper: 600ms.
    #[serde(default = "default_penalty")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub penalty_factor: String,
    /// Half-life of the latency filter. Paper: 5s.
    #[serde(default = "default_5s")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub latency_half_life: String,
    /// Half-life of the in-flight filter. Paper: 5s.
    #[serde(default = "default_5s")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub inflight_half_life: String,
    /// Half-life of the success-rate filter. Paper: 10s.
    #[serde(default = "default_10s")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub success_rate_half_life: String,
    /// Half-life of the requests-per-second filter. Paper: 10s.
    #[serde(default = "default_10s")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub rps_half_life: String,
    /// Filter of every signal: `EWMA` or `PeakEWMA`.
    #[serde(default)]
    pub filter: FilterName,
    /// Whether Algorithm 2 (rate control) runs.
    #[serde(default = "default_true")]
    pub rate_control: bool,
    /// Smallest share any backend keeps, a fraction in [0, 0.5]. Default 0.01 (1 %).
    #[serde(default = "default_min_share")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub min_share: f64,
    /// How often the weights are recomputed, at least 1s. Default 5s.
    #[serde(default = "default_5s")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: String,
    /// Range of the PromQL `rate()` windows: `auto` (default) is four scrape intervals, never
    /// under 10s, with the scrape interval learned from Prometheus; or whole seconds, which
    /// must span at least two scrape intervals (else `MetricsAvailable=False`,
    /// `WindowTooShort`).
    #[serde(default = "default_query_window")]
    #[schemars(pattern(QUERY_WINDOW_PATTERN))]
    pub query_window: String,
    /// Smallest change of any backend's share worth a write, a fraction in [0, 0.5].
    /// Default 0.01 (one percentage point).
    #[serde(default = "default_hysteresis")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub hysteresis: f64,
    /// Largest change of a backend's share per interval, a fraction in [0.001, 1]. Unset: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub max_share_step: Option<f64>,
}

/// The object a policy tunes: an SMI TrafficSplit, or one rule of a Gateway API (or Linkerd)
/// HTTPRoute or GRPCRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Kind of the target: `TrafficSplit`, `HTTPRoute` or `GRPCRoute`.
    pub kind: TargetKind,
    /// API group of the target. Default: `split.smi-spec.io` for a TrafficSplit,
    /// `gateway.networking.k8s.io` for a route; `policy.linkerd.io` selects Linkerd's HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<TargetGroup>,
    /// Name of the target, in the policy's namespace.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Routes only: the `name` of the rule whose backendRefs' weights are tuned. Default: the
    /// only rule with two or more backendRefs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub rule_name: Option<String>,
    /// Routes only: the index (from 0) of the rule whose backendRefs' weights are tuned, for
    /// rules without a name. Not together with `ruleName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 63))]
    pub rule_index: Option<u32>,
}

/// Kinds a policy can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetKind {
    /// SMI `TrafficSplit` (split.smi-spec.io v1alpha1 or v1alpha2).
    TrafficSplit,
    /// `HTTPRoute` (gateway.networking.k8s.io/v1, or policy.linkerd.io).
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// `GRPCRoute` (gateway.networking.k8s.io/v1).
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
}

/// API groups of the kinds a policy can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetGroup {
    /// SMI (TrafficSplit).
    #[serde(rename = "split.smi-spec.io")]
    Smi,
    /// Gateway API (HTTPRoute, GRPCRoute).
    #[serde(rename = "gateway.networking.k8s.io")]
    Gateway,
    /// Linkerd's policy API (HTTPRoute).
    #[serde(rename = "policy.linkerd.io")]
    Linkerd,
}

/// Whether a policy writes weights.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Compute and write weights.
    #[default]
    Enforce,
    /// Compute and report weights in the status; never write the split.
    DryRun,
}

/// Filter names as the spec spells them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FilterName {
    /// Exponentially weighted moving average.
    #[default]
    #[serde(rename = "EWMA")]
    Ewma,
    /// EWMA that jumps up to a sample above the current value.
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
}

fn default_percentile() -> f64 {
    0.99
}
fn default_penalty() -> String {
    "600ms".into()
}
fn default_5s() -> String {
    "5s".into()
}
fn default_10s() -> String {
    "10s".into()
}
fn default_query_window() -> String {
    QUERY_WINDOW_AUTO.into()
}
fn default_true() -> bool {
    true
}
fn default_min_share() -> f64 {
    0.01
}
fn default_hysteresis() -> f64 {
    0.01
}

impl Default for LatencyPolicySpec {
    /// Every default, with an empty target name (which the schema refuses).
    fn default() -> Self {
        Self::for_split("")
    }
}

impl LatencyPolicySpec {
    /// A spec with every default, targeting the split `name`.
    pub fn for_split(name: &str) -> Self {
        Self {
            target_ref: TargetRef {
                kind: TargetKind::TrafficSplit,
                group: None,
                name: name.to_owned(),
                rule_name: None,
                rule_index: None,
            },
            mode: Mode::Enforce,
            percentile: default_percentile(),
            penalty_factor: default_penalty(),
            latency_half_life: default_5s(),
            inflight_half_life: default_5s(),
            success_rate_half_life: default_10s(),
            rps_half_life: default_10s(),
            filter: FilterName::Ewma,
            rate_control: true,
            min_share: default_min_share(),
            interval: default_5s(),
            query_window: default_query_window(),
            hysteresis: default_hysteresis(),
            max_share_step: None,
        }
    }

    /// Check what the schema cannot express and turn the spec into the settings the control
    /// loop uses. The error names the field and what was expected.
    pub fn settings(&self) -> Result<PolicySettings, SpecError> {
        let secs = |field: &'static str, v: &str| {
            parse_duration(v).map_err(|expected| SpecError {
                field,
                message: format!("{v:?} is not a duration, expected {expected}"),
            })
        };
        let range = |field: &'static str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(SpecError {
                    field,
                    message: format!("{v} is out of range, expected a number in [{lo}, {hi}]"),
                })
            }
        };
        let positive = |field: &'static str, v: f64| {
            if v > 0.0 {
                Ok(v)
            } else {
                Err(SpecError {
                    field,
                    message: "must be longer than 0s".into(),
                })
            }
        };
        let interval = secs("interval", &self.interval)?;
        if interval < 1.0 {
            return Err(SpecError {
                field: "interval",
                message: format!("{:?} is too short, expected at least 1s", self.interval),
            });
        }
        let window = if self.query_window == QUERY_WINDOW_AUTO {
            QueryWindow::Auto
        } else {
            let w = parse_duration(&self.query_window).map_err(|expected| SpecError {
                field: "queryWindow",
                message: format!(
                    "{:?} is not a window, expected `auto` or {expected}",
                    self.query_window
                ),
            })?;
            if w < 2.0 || w.fract() != 0.0 {
                return Err(SpecError {
                    field: "queryWindow",
                    message: format!(
                        "{:?} is invalid, expected `auto` or whole seconds, at least 2s (two scrapes)",
                        self.query_window
                    ),
                });
            }
            QueryWindow::Secs(w as u64)
        };
        let filters = FilterSettings {
            kind: match self.filter {
                FilterName::Ewma => FilterKind::Ewma,
                FilterName::PeakEwma => FilterKind::PeakEwma,
            },
            latency_half_life: positive(
                "latencyHalfLife",
                secs("latencyHalfLife", &self.latency_half_life)?,
            )?,
            inflight_half_life: positive(
                "inflightHalfLife",
                secs("inflightHalfLife", &self.inflight_half_life)?,
            )?,
            success_rate_half_life: positive(
                "successRateHalfLife",
                secs("successRateHalfLife", &self.success_rate_half_life)?,
            )?,
            rps_half_life: positive("rpsHalfLife", secs("rpsHalfLife", &self.rps_half_life)?)?,
        };
        let pipeline = PipelineConfig {
            weighting: WeightingParams {
                penalty_secs: secs("penaltyFactor", &self.penalty_factor)?,
            },
            rate_control: self.rate_control,
            min_share: range("minShare", self.min_share, 0.0, 0.5)?,
            ..PipelineConfig::default()
        };
        pipeline.weighting.validate().map_err(|e| SpecError {
            field: "penaltyFactor",
            message: e.to_string(),
        })?;
        let hysteresis = range("hysteresis", self.hysteresis, 0.0, 0.5)?;
        if let Some(step) = self.max_share_step
            && step <= hysteresis
        {
            return Err(SpecError {
                field: "maxShareStep",
                message: format!(
                    "{step} is not above hysteresis {hysteresis}: no step could ever be written"
                ),
            });
        }
        let target = Target::from_ref(&self.target_ref)?;
        Ok(PolicySettings {
            target,
            quantile: range("percentile", self.percentile, 0.5, 0.999)?,
            filters,
            pipeline,
            interval_secs: interval,
            window,
            hysteresis,
            max_share_step: self
                .max_share_step
                .map(|s| range("maxShareStep", s, 0.001, 1.0))
                .transpose()?,
            dry_run: self.mode == Mode::DryRun,
        })
    }
}

impl LatencyPolicy {
    /// The record ([`Target::record`]) of the target this policy's spec names, or `None` when
    /// the spec's `targetRef` cannot be used.
    pub fn target_record(&self) -> Option<String> {
        Target::from_ref(&self.spec.target_ref)
            .ok()
            .map(|t| t.record())
    }

    /// The target whose original weights this policy is responsible for, as a
    /// [`Target::record`]: the one recorded with its finalizer. A finalizer without a record
    /// (set by an l3 that kept none, which tuned TrafficSplits only) stands for the current
    /// target.
    pub fn adopted_target(&self) -> Option<String> {
        let recorded = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ADOPTED_TARGET_ANNOTATION))
            .cloned();
        let has_finalizer = self
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
        recorded.or_else(|| has_finalizer.then(|| self.target_record()).flatten())
    }
}

/// A spec value the schema let through but the operator cannot act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct SpecError {
    /// The spec field, as the user writes it.
    pub field: &'static str,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A validated spec, in the units the algorithm and state layers take.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    /// The object and rule tuned.
    pub target: Target,
    /// Latency quantile.
    pub quantile: f64,
    /// Filter kind and half-lives, seconds.
    pub filters: FilterSettings,
    /// Algorithm 1 + 2 + normalisation settings.
    pub pipeline: PipelineConfig,
    /// Control interval, seconds.
    pub interval_secs: f64,
    /// PromQL window: auto, or whole seconds.
    pub window: QueryWindow,
    /// Smallest share change worth a write, a fraction.
    pub hysteresis: f64,
    /// Largest share change per interval, a fraction.
    pub max_share_step: Option<f64>,
    /// Never write weights.
    pub dry_run: bool,
}

/// Parse `5s`, `600ms`, `1.5s`, `2m` into seconds; the error says what was expected.
pub fn parse_duration(s: &str) -> Result<f64, &'static str> {
    const EXPECTED: &str = "a number followed by ms, s or m, e.g. 5s or 600ms";
    // The schema pattern allows ms, s and m only; hours make no sense for these settings.
    if s.trim_end().ends_with('h') {
        return Err(EXPECTED);
    }
    crate::duration::parse_secs(s).ok_or(EXPECTED)
}

/// What the operator reports about a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyPolicyStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `TargetFound`, `MetricsAvailable`, `Conflict`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When l3 last wrote the target's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_weight_update: Option<Time>,
    /// Per backend: weight, share and the filtered signals.
    #[serde(default)]
    pub backends: Vec<BackendStatus>,
    /// Scrape interval of the backends' metrics as l3 learned it from Prometheus (or as
    /// configured), e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<String>,
    /// The PromQL window the last cycle used, e.g. `40s` (what `queryWindow: auto` became).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_window: Option<String>,
}

/// One backend as the last cycle saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// Backend Service: `spec.backends[].service` of a TrafficSplit, the backendRef's `name` of
    /// a route (`namespace/name` when the Service is in another namespace than the route).
    pub service: String,
    /// Weight computed by l3 (written unless DryRun), out of 1000.
    pub weight: u32,
    /// Share of the traffic, a fraction.
    pub share: f64,
    /// Filtered latency at the policy's percentile, seconds.
    pub latency_seconds: f64,
    /// Filtered success rate, a fraction.
    pub success_rate: f64,
    /// Filtered requests per second.
    pub requests_per_second: f64,
    /// Filtered in-flight requests.
    pub inflight: f64,
    /// Time of the last usable sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sample_time: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_name_the_format() {
        assert_eq!(parse_duration("5s"), Ok(5.0));
        assert_eq!(parse_duration("600ms"), Ok(0.6));
        assert_eq!(parse_duration("1.5s"), Ok(1.5));
        assert_eq!(parse_duration("2m"), Ok(120.0));
        for bad in ["", "s", "5", "-5s", "5h", "1e3s", "5 s", "..s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_the_papers() {
        let spec: LatencyPolicySpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"kind": "TrafficSplit", "name": "web"}
        }))
        .unwrap();
        assert_eq!(spec, LatencyPolicySpec::for_split("web"));
        let s = spec.settings().unwrap();
        assert_eq!(s.quantile, 0.99);
        assert_eq!(s.pipeline.weighting.penalty_secs, 0.6);
        assert_eq!(s.filters, FilterSettings::default());
        assert_eq!(s.interval_secs, 5.0);
        assert_eq!(s.window, QueryWindow::Auto);
        assert_eq!(s.hysteresis, 0.01);
        assert_eq!(s.pipeline.min_share, 0.01);
        assert!(s.pipeline.rate_control && !s.dry_run && s.max_share_step.is_none());
    }

    #[test]
    fn schema_refuses_bad_values_before_they_reach_l3() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(LatencyPolicy::crd()).unwrap();
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["subresources"]["status"], serde_json::json!({}));
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["percentile"]["minimum"], 0.5);
        assert_eq!(spec["percentile"]["maximum"], 0.999);
        assert_eq!(spec["minShare"]["maximum"], 0.5);
        assert_eq!(spec["hysteresis"]["default"], 0.01);
        assert_eq!(spec["maxShareStep"]["minimum"], 0.001);
        for d in [
            "penaltyFactor",
            "latencyHalfLife",
            "inflightHalfLife",
            "successRateHalfLife",
            "rpsHalfLife",
            "interval",
        ] {
            assert_eq!(spec[d]["pattern"], DURATION_PATTERN, "{d}");
        }
        assert_eq!(spec["queryWindow"]["pattern"], QUERY_WINDOW_PATTERN);
        assert_eq!(spec["queryWindow"]["default"], "auto");
        assert_eq!(
            spec["mode"]["enum"],
            serde_json::json!(["Enforce", "DryRun"])
        );
        assert_eq!(
            spec["filter"]["enum"],
            serde_json::json!(["EWMA", "PeakEWMA"])
        );
        assert_eq!(
            spec["targetRef"]["properties"]["kind"]["enum"],
            serde_json::json!(["TrafficSplit", "HTTPRoute", "GRPCRoute"])
        );
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cols,
            ["Kind", "Target", "Mode", "Ready", "Last Update", "Age"]
        );
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["lp"])
        );
    }

    #[test]
    fn what_the_schema_cannot_express_is_refused_with_the_field() {
        let mut spec = LatencyPolicySpec::for_split("web");
        spec.query_window = "1500ms".into();
        let e = spec.settings().unwrap_err();
        assert_eq!(e.field, "queryWindow");
        assert!(e.to_string().starts_with("spec.queryWindow: "), "{e}");
        spec.query_window = "30s".into();
        assert_eq!(spec.settings().unwrap().window, QueryWindow::Secs(30));
        spec.query_window = "often".into();
        assert!(spec.settings().unwrap_err().to_string().contains("auto"));
        let mut spec = LatencyPolicySpec::for_split("web");
        spec.latency_half_life = "0s".into();
        assert_eq!(spec.settings().unwrap_err().field, "latencyHalfLife");
        let mut spec = LatencyPolicySpec::for_split("web");
        spec.interval = "100ms".into();
        assert_eq!(spec.settings().unwrap_err().field, "interval");
        let mut spec = LatencyPolicySpec::for_split("web");
        spec.max_share_step = Some(0.01);
        assert_eq!(spec.settings().unwrap_err().field, "maxShareStep");
        spec.max_share_step = Some(0.05);
        assert!(spec.settings().is_ok());
    }
}
