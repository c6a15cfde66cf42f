//! SMI TrafficSplit (`split.smi-spec.io`) as l3 reads and writes it: v1alpha1 (weights are
//! Quantities such as `"500m"` or `"1k"`; l3 keeps the form the object uses) and v1alpha2
//! (integers), accessed as `DynamicObject`s so that every field l3 does not own survives a write.
//! [`ParsedSplit`] is the shape every target kind is read into (see [`super::target`]); its
//! patches carry the backend list where its [`Layout`] says the list lives.
//!
//! It also owns the records l3 keeps on a split it adopted, as annotations written in the same
//! patch as the weights: the original weights (what a restore puts back), the weights l3 last
//! applied (a split whose weights differ was changed by someone else) and the history of such
//! foreign changes. Keeping them on the split makes them survive restarts and leader failover.

use kube::api::{ApiResource, DynamicObject};
use kube::discovery::ApiGroup;
use serde_json::{Map, Value, json};

/// API group of the SMI TrafficSplit.
pub const GROUP: &str = "split.smi-spec.io";
/// Annotation holding a split's weights from before l3 adopted it (JSON `{service: weight}`,
/// each weight as the object spelled it). Written on adoption; replaced only when someone else
/// changes the weights or the backends (their change becomes the new original).
pub const ORIGINAL_WEIGHTS_ANNOTATION: &str = "l3.dev/original-weights";
/// Annotation holding the weights of l3's last write (JSON `{service: weight}` as written): a
/// split whose weights differ from it was changed by another writer.
pub const APPLIED_WEIGHTS_ANNOTATION: &str = "l3.dev/applied-weights";
/// Annotation holding the recent foreign changes of the weights ([`ForeignHistory`] as JSON).
pub const FOREIGN_CHANGES_ANNOTATION: &str = "l3.dev/foreign-changes";
/// Label linkerd-failover puts on the splits it controls: l3 leaves those alone.
pub const FAILOVER_LABEL: &str = "failover.linkerd.io/controlled-by";
/// Largest power of ten an integer-only split's originals are multiplied by so that a backend
/// added later gets an exact share on their scale (see [`rebase_originals`]).
const MAX_INTEGER_RESCALE: i32 = 3;

/// Weights by service, each as a JSON value spelled as on the object (`1`, `"1"`, `"500m"`).
pub type WeightMap = Map<String, Value>;

/// Errors reading a target (a TrafficSplit, or a route's rule).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// A route without `spec.rules`.
    #[error("spec.rules is missing or not a list")]
    NoRules,
    /// The rule to tune cannot be chosen.
    #[error("{message}")]
    Rule {
        /// The condition reason (`AmbiguousRule`, `RuleNotFound`, `NoWeightedRule`).
        reason: &'static str,
        /// The choices there are.
        message: String,
    },
    /// A route's backendRef is malformed.
    #[error("spec.rules[{rule}].backendRefs[{index}].{field}: {message}")]
    BackendRef {
        /// Rule index.
        rule: usize,
        /// Position in the backendRefs.
        index: usize,
        /// `name` or `weight`.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// A route's backendRef is not a Service: l3 reads signals per Service.
    #[error(
        "spec.rules[{rule}].backendRefs[{index}]: kind {kind} (group {group}) is not a Service; \
         l3 tunes the weights of Service backends only"
    )]
    NotAService {
        /// Rule index.
        rule: usize,
        /// Position in the backendRefs.
        index: usize,
        /// The backendRef's kind.
        kind: String,
        /// The backendRef's group (`core` for the empty group).
        group: String,
    },
    /// The split has no `spec.backends` list.
    #[error("spec.backends is missing or not a list")]
    NoBackends,
    /// A backend entry is malformed.
    #[error("spec.backends[{index}].{field}: {message}")]
    Backend {
        /// Position in the list.
        index: usize,
        /// `service` or `weight`.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// Two backends name the same Service.
    #[error("spec.backends lists the service {0:?} twice")]
    Duplicate(String),
    /// Neither served version is known to l3.
    #[error(
        "the cluster serves none of the TrafficSplit versions l3 supports (v1alpha1, v1alpha2)"
    )]
    NoSupportedVersion,
    /// One of l3's annotations cannot be read.
    #[error("annotation {annotation} is not valid: {message}")]
    BadAnnotation {
        /// The annotation.
        annotation: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl SplitError {
    /// The reason of the `TargetFound=False` condition this error gives.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Rule { reason, .. } => reason,
            Self::NotAService { .. } => "UnsupportedBackend",
            _ => "InvalidTarget",
        }
    }
}

/// TrafficSplit versions l3 can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitVersion {
    /// Weights are Quantities (`1`, `"1"`, `"500m"`).
    V1alpha1,
    /// Weights are integers.
    V1alpha2,
}

impl SplitVersion {
    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1alpha1 => "v1alpha1",
            Self::V1alpha2 => "v1alpha2",
        }
    }

    /// The resource for `Api<DynamicObject>`.
    pub fn api_resource(self) -> ApiResource {
        ApiResource {
            group: GROUP.into(),
            version: self.as_str().into(),
            api_version: format!("{GROUP}/{}", self.as_str()),
            kind: "TrafficSplit".into(),
            plural: "trafficsplits".into(),
        }
    }

    /// Pick the version to use from the versions a cluster serves. v1alpha1 is preferred: it
    /// is linkerd-smi's storage version and its Quantity weights accept both forms, so reading
    /// a split written by someone else through it never fails to decode.
    pub fn choose<'a>(served: impl IntoIterator<Item = &'a str>) -> Result<Self, SplitError> {
        let served: Vec<&str> = served.into_iter().collect();
        if served.contains(&"v1alpha1") {
            Ok(Self::V1alpha1)
        } else if served.contains(&"v1alpha2") {
            Ok(Self::V1alpha2)
        } else {
            Err(SplitError::NoSupportedVersion)
        }
    }
}

/// What a cluster says to l3 about TrafficSplit when it is missing: the condition message and
/// the log line name the fix.
pub const CRD_MISSING: &str = "the cluster serves no split.smi-spec.io TrafficSplit \
    (v1alpha1 or v1alpha2): install linkerd-smi (or the SMI TrafficSplit CRD)";

/// Ask the API server which TrafficSplit versions it serves; `None` when it serves none.
/// A connection failure is reported as such ([`super::Error::Unreachable`]), never as a
/// missing linkerd-smi.
pub async fn discover_version(client: &kube::Client) -> Result<Option<SplitVersion>, super::Error> {
    let group: ApiGroup = match kube::discovery::group(client, GROUP).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => {
            return Ok(None);
        }
        Err(e) => return Err(super::Error::from_api(e, super::Error::Discovery)),
    };
    // Only versions that actually serve the TrafficSplit kind count.
    let versions: Vec<String> = group
        .versions()
        .filter(|v| {
            group
                .versioned_resources(v)
                .iter()
                .any(|(ar, _)| ar.kind == "TrafficSplit")
        })
        .map(str::to_owned)
        .collect();
    Ok(SplitVersion::choose(versions.iter().map(String::as_str)).ok())
}

/// How a split spells its weights; l3 writes back in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightForm {
    /// JSON integers (`600`).
    Integer,
    /// Quantity strings without suffix (`"600"`).
    String,
    /// Quantity strings in thousandths (`"600m"`).
    Milli,
}

impl WeightForm {
    /// A weight out of 1000 in this form.
    pub fn render(self, weight: u32) -> Value {
        match self {
            Self::Integer => json!(weight),
            Self::String => json!(weight.to_string()),
            Self::Milli => json!(format!("{weight}m")),
        }
    }
}

/// One backend of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitBackend {
    /// The backend's identity in l3's records and status: the Service name, or
    /// `namespace/name` for a route's backendRef to a Service in another namespace.
    pub service: String,
    /// The Service's namespace when it is not the target's (a route's backendRef `namespace`).
    pub namespace: Option<String>,
    /// The Service name, as Prometheus labels it.
    pub name: String,
    /// Weight, in units (`"500m"` is 0.5; an absent weight is the kind's default).
    pub weight: f64,
}

impl SplitBackend {
    /// A backend in the target's own namespace.
    pub fn local(service: &str, weight: f64) -> Self {
        Self {
            service: service.to_owned(),
            namespace: None,
            name: service.to_owned(),
            weight,
        }
    }
}

/// Where a target keeps its backend list, and so how a patch carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// A TrafficSplit: `spec.backends`, entries named by `service`.
    Split,
    /// A route: `spec.rules[rule].backendRefs`. `rules` is the whole list as read: a merge patch
    /// replaces lists whole, so every other rule is sent back exactly as it was.
    Route {
        /// `spec.rules` as read.
        rules: Vec<Value>,
        /// Index of the tuned rule.
        rule: usize,
    },
}

/// The parts of a target l3 reads (a TrafficSplit, or one rule of a route): the same for
/// every kind, so that the engine, the actuator and the restore logic are shared.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSplit {
    /// `spec.service`, the apex service (empty for a route).
    pub service: String,
    /// Backends in list order.
    pub backends: Vec<SplitBackend>,
    /// Form of the weights.
    pub form: WeightForm,
    /// The raw backend entries, to keep every field l3 does not own (one per backend, in
    /// the same order).
    pub raw_backends: Vec<Value>,
    /// Where the backend list lives.
    pub layout: Layout,
    /// The weight an entry without one has: 0 on a TrafficSplit, 1 on a route.
    pub absent_weight: f64,
    /// `metadata.resourceVersion`, for optimistic concurrency.
    pub resource_version: Option<String>,
    /// The original-weights annotation, if l3 adopted the split.
    pub original: Option<String>,
    /// The applied-weights annotation: what l3 last wrote.
    pub applied: Option<String>,
    /// The foreign-changes annotation.
    pub foreign: Option<String>,
    /// The value of linkerd-failover's label, if it controls this split.
    pub failover: Option<String>,
}

/// Parse a weight: a JSON number, or any Kubernetes Quantity string (`"1"`, `"+1"`, `"1k"`,
/// `"1e3"`, `"500m"`, `"1Ki"`). The Quantity grammar is kube_quantity's; on top, a weight must
/// be finite, non-negative and spell at least one digit (kube_quantity reads a bare suffix such
/// as `"k"` as zero, the API server's parser refuses it).
pub fn parse_weight(v: &Value) -> Result<(f64, WeightForm), String> {
    const EXPECTED: &str =
        "expected a non-negative integer or a quantity such as \"500m\", \"1k\" or \"1e3\"";
    let invalid = |v: &dyn std::fmt::Display| format!("{v} is not valid, {EXPECTED}");
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| (w, WeightForm::Integer))
            .ok_or_else(|| invalid(n)),
        Value::String(s) => {
            if !s.bytes().any(|b| b.is_ascii_digit()) {
                return Err(invalid(&format!("{s:?}")));
            }
            let q = kube_quantity::ParsedQuantity::try_from(s.as_str())
                .map_err(|e| format!("{s:?} is not valid ({e}), {EXPECTED}"))?;
            let w = q
                .to_bytes_f64()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| invalid(&format!("{s:?}")))?;
            let form = if s.ends_with('m') {
                WeightForm::Milli
            } else {
                WeightForm::String
            };
            Ok((w, form))
        }
        other => Err(invalid(other)),
    }
}

/// Read a TrafficSplit.
pub fn parse(obj: &DynamicObject) -> Result<ParsedSplit, SplitError> {
    let spec = obj.data.get("spec");
    let raw = spec
        .and_then(|s| s.get("backends"))
        .and_then(Value::as_array)
        .ok_or(SplitError::NoBackends)?;
    let mut backends = Vec::with_capacity(raw.len());
    let mut form = WeightForm::Integer;
    for (index, b) in raw.iter().enumerate() {
        let service = b
            .get("service")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SplitError::Backend {
                index,
                field: "service",
                message: "expected a non-empty Service name".into(),
            })?;
        let (weight, f) = match b.get("weight") {
            None | Some(Value::Null) => (0.0, WeightForm::Integer),
            Some(w) => parse_weight(w).map_err(|message| SplitError::Backend {
                index,
                field: "weight",
                message,
            })?,
        };
        // Any thousandths make the whole list thousandths; otherwise any string makes strings.
        form = match (form, f) {
            (WeightForm::Milli, _) | (_, WeightForm::Milli) => WeightForm::Milli,
            (WeightForm::String, _) | (_, WeightForm::String) => WeightForm::String,
            _ => WeightForm::Integer,
        };
        if backends.iter().any(|x: &SplitBackend| x.service == service) {
            return Err(SplitError::Duplicate(service.to_owned()));
        }
        backends.push(SplitBackend::local(service, weight));
    }
    Ok(ParsedSplit {
        service: spec
            .and_then(|s| s.get("service"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        backends,
        form,
        raw_backends: raw.clone(),
        layout: Layout::Split,
        absent_weight: 0.0,
        resource_version: obj.metadata.resource_version.clone(),
        original: annotation(obj, ORIGINAL_WEIGHTS_ANNOTATION),
        applied: annotation(obj, APPLIED_WEIGHTS_ANNOTATION),
        foreign: annotation(obj, FOREIGN_CHANGES_ANNOTATION),
        failover: obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(FAILOVER_LABEL))
            .cloned(),
    })
}

/// An annotation of the object, if set.
pub fn annotation(obj: &DynamicObject, key: &str) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

/// Read one of l3's `{service: weight}` annotations.
fn weight_map(annotation: &'static str, text: &str) -> Result<WeightMap, SplitError> {
    let bad = |message: String| SplitError::BadAnnotation {
        annotation,
        message,
    };
    let map: WeightMap = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    for (service, w) in &map {
        if !w.is_null() {
            parse_weight(w).map_err(|e| bad(format!("{service}: {e}")))?;
        }
    }
    Ok(map)
}

/// A weight of a [`WeightMap`] in units; a missing weight (`null`) is `absent` (0 on a split,
/// 1 on a route).
fn units(v: &Value, absent: f64) -> f64 {
    if v.is_null() {
        return absent;
    }
    parse_weight(v).map_or(0.0, |(w, _)| w)
}

/// The foreign changes of a split's weights that count for the current spec of its policy:
/// when it was changed (seconds since the epoch) and whether l3 gave up on the split.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForeignHistory {
    /// The policy generation the changes were seen under; another generation starts afresh.
    pub generation: i64,
    /// When each foreign change was seen, seconds since the epoch, oldest first.
    pub times: Vec<i64>,
    /// l3 stopped writing this split until the policy's spec changes.
    pub contested: bool,
}

/// How the weights on a split differ from what l3 last applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignChange {
    /// A backend l3 wrote has another weight now: someone changed the weights.
    Weights,
    /// Backends were added or removed; the others kept l3's weights.
    Backends,
}

/// New originals after a foreign change, on the scale of the old ones. A backend whose weight
/// is still the one l3 applied keeps its original; a backend another writer set (or added) gets
/// its new weight scaled by `sum(originals) / sum(current)` over the untouched backends, so its
/// share relative to them is exactly the one that writer chose. If no backend is untouched
/// (or their weights sum to 0) there is no common scale: the current weights become the
/// originals as they are spelled.
///
/// `reference` is what l3 applied; at restore time without a record it is the current weights
/// (everything untouched, only added backends scaled). With `integers_only` (v1alpha2), if a
/// scaled weight is not whole, every original is multiplied by the smallest power of ten (up
/// to 1000) that makes them whole, then rounded: the ratios, which is all the proxies use,
/// stay exact to 1/1000.
pub fn rebase_originals(
    originals: &WeightMap,
    reference: &WeightMap,
    current: &WeightMap,
    integers_only: bool,
    absent: f64,
) -> WeightMap {
    let units = |v: &Value| units(v, absent);
    let untouched = |s: &String, w: &Value| {
        originals.contains_key(s)
            && reference
                .get(s)
                .is_some_and(|r| (units(r) - units(w)).abs() < 1e-9)
    };
    let (orig_sum, cur_sum) = current
        .iter()
        .filter(|(s, w)| untouched(s, w))
        .fold((0.0, 0.0), |(o, c), (s, w)| {
            (o + originals.get(s).map_or(0.0, units), c + units(w))
        });
    if orig_sum <= 0.0 || cur_sum <= 0.0 {
        return current.clone();
    }
    let k = orig_sum / cur_sum;
    // Originals of backends no longer on the split are kept: a backend that comes back
    // is scaled again, since it is absent from what l3 applied.
    let mut scaled: Vec<(String, Result<Value, f64>)> = originals
        .iter()
        .filter(|(s, _)| !current.contains_key(*s))
        .map(|(s, w)| (s.clone(), Ok(w.clone())))
        .collect();
    for (s, w) in current {
        let v = if untouched(s, w) {
            Ok(originals[s].clone())
        } else {
            Err(units(w) * k)
        };
        scaled.push((s.clone(), v));
    }
    let whole = |x: f64| (x - x.round()).abs() < 1e-9;
    let factor = if integers_only {
        (0..=MAX_INTEGER_RESCALE)
            .map(|p| 10f64.powi(p))
            .find(|f| {
                scaled
                    .iter()
                    .all(|(_, v)| v.as_ref().map_or_else(|x| whole(x * f), |_| true))
            })
            .unwrap_or(10f64.powi(MAX_INTEGER_RESCALE))
    } else {
        1.0
    };
    scaled
        .into_iter()
        .map(|(s, v)| {
            let value = match v {
                Ok(w) if factor == 1.0 => w,
                Ok(w) => json!((units(&w) * factor).round() as u64),
                Err(x) if integers_only => json!((x * factor).round() as u64),
                // Thousandths, the resolution Linkerd reads weights at.
                Err(x) if whole(x) => json!((x.round() as u64).to_string()),
                Err(x) => json!(format!("{}m", (x * 1000.0).round() as u64)),
            };
            (s, value)
        })
        .collect()
}

impl ParsedSplit {
    /// Service names in list order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|b| b.service.as_str())
    }

    /// The split's weights now: `{service: weight}` with each weight exactly as the object
    /// spells it.
    pub fn current_weights(&self) -> WeightMap {
        self.backends
            .iter()
            .zip(&self.raw_backends)
            .map(|(b, raw)| {
                (
                    b.service.clone(),
                    raw.get("weight").cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// The original-weights annotation value for this split as it is now.
    pub fn original_weights_json(&self) -> String {
        Value::Object(self.current_weights()).to_string()
    }

    /// The recorded original weights, if l3 adopted the split.
    pub fn originals(&self) -> Result<Option<WeightMap>, SplitError> {
        self.original
            .as_deref()
            .map(|t| weight_map(ORIGINAL_WEIGHTS_ANNOTATION, t))
            .transpose()
    }

    /// The weights of l3's last write, if recorded.
    pub fn applied_weights(&self) -> Result<Option<WeightMap>, SplitError> {
        self.applied
            .as_deref()
            .map(|t| weight_map(APPLIED_WEIGHTS_ANNOTATION, t))
            .transpose()
    }

    /// The foreign changes recorded on the split (empty if none).
    pub fn foreign_history(&self) -> Result<ForeignHistory, SplitError> {
        self.foreign
            .as_deref()
            .map_or(Ok(ForeignHistory::default()), |t| {
                serde_json::from_str(t).map_err(|e| SplitError::BadAnnotation {
                    annotation: FOREIGN_CHANGES_ANNOTATION,
                    message: e.to_string(),
                })
            })
    }

    /// How the split differs from l3's last write; `None` if it does not, or if l3 has no
    /// record of a write (not adopted yet, or adopted by an l3 that kept none).
    pub fn foreign_change(&self) -> Result<Option<ForeignChange>, SplitError> {
        if self.original.is_none() {
            return Ok(None);
        }
        let Some(applied) = self.applied_weights()? else {
            return Ok(None);
        };
        let current = self.current_weights();
        let weights_differ = current.iter().any(|(s, w)| {
            applied.get(s).is_some_and(|a| {
                (units(a, self.absent_weight) - units(w, self.absent_weight)).abs() > 1e-9
            })
        });
        let same_backends =
            current.len() == applied.len() && current.keys().all(|s| applied.contains_key(s));
        Ok(if weights_differ {
            Some(ForeignChange::Weights)
        } else if !same_backends {
            Some(ForeignChange::Backends)
        } else {
            None
        })
    }

    /// The split's backends as they are, each passed with its service name to `edit`: patches
    /// send the whole list (merge patches replace lists), so every other field must survive.
    fn backends_with(&self, mut edit: impl FnMut(&str, &mut Map<String, Value>)) -> Vec<Value> {
        self.backends
            .iter()
            .zip(&self.raw_backends)
            .map(|(backend, b)| {
                let mut b = b.clone();
                if let Some(obj) = b.as_object_mut() {
                    edit(&backend.service, obj);
                }
                b
            })
            .collect()
    }

    /// The `spec` of a patch that sets the backend list to `backends`, where the layout says it
    /// lives: a route's other rules go back exactly as they were read.
    fn spec_with(&self, backends: Vec<Value>) -> Value {
        match &self.layout {
            Layout::Split => json!({ "backends": backends }),
            Layout::Route { rules, rule } => {
                let mut rules = rules.clone();
                if let Some(r) = rules.get_mut(*rule).and_then(Value::as_object_mut) {
                    r.insert("backendRefs".into(), Value::Array(backends));
                }
                json!({ "rules": rules })
            }
        }
    }

    /// Patch metadata carrying the resourceVersion, so the API server refuses the patch (409)
    /// when the split changed since it was read.
    fn guarded_metadata(&self) -> Map<String, Value> {
        let mut metadata = Map::new();
        if let Some(rv) = &self.resource_version {
            metadata.insert("resourceVersion".into(), json!(rv));
        }
        metadata
    }

    /// JSON merge patch that sets the weights (`service → weight out of 1000`) and keeps every
    /// other field of every backend. Merge patches replace lists whole, so the whole list is
    /// sent; the resourceVersion makes the API server refuse it if the split changed meanwhile.
    /// The weights written are recorded as the applied weights. With `adopt`, the original
    /// weights are recorded (only if not recorded yet).
    pub fn weights_patch(&self, weights: &[(&str, u32)], form: WeightForm, adopt: bool) -> Value {
        let mut applied = Map::new();
        let backends = self.backends_with(|svc, obj| {
            if let Some((_, w)) = weights.iter().find(|(n, _)| *n == svc) {
                obj.insert("weight".into(), form.render(*w));
            }
            applied.insert(
                svc.to_owned(),
                obj.get("weight").cloned().unwrap_or(Value::Null),
            );
        });
        let mut annotations = Map::new();
        annotations.insert(
            APPLIED_WEIGHTS_ANNOTATION.into(),
            json!(Value::Object(applied).to_string()),
        );
        if adopt && self.original.is_none() {
            annotations.insert(
                ORIGINAL_WEIGHTS_ANNOTATION.into(),
                json!(self.original_weights_json()),
            );
        }
        let mut metadata = self.guarded_metadata();
        metadata.insert("annotations".into(), Value::Object(annotations));
        json!({ "metadata": metadata, "spec": self.spec_with(backends) })
    }

    /// JSON merge patch that takes the split's current weights, set by another writer, as
    /// they are: `originals` become the recorded originals, the current weights the applied
    /// ones (so the change is seen once), and `history` the foreign-change record. The weights
    /// themselves are not touched.
    pub fn adopt_patch(&self, originals: &WeightMap, history: &ForeignHistory) -> Value {
        let mut metadata = self.guarded_metadata();
        metadata.insert(
            "annotations".into(),
            json!({
                ORIGINAL_WEIGHTS_ANNOTATION: Value::Object(originals.clone()).to_string(),
                APPLIED_WEIGHTS_ANNOTATION: self.original_weights_json(),
                FOREIGN_CHANGES_ANNOTATION: json!(history).to_string(),
            }),
        );
        json!({ "metadata": metadata })
    }

    /// JSON merge patch that puts the recorded original weights back and removes l3's
    /// annotations, or `None` if l3 never adopted this split. A backend added since l3 last
    /// wrote (so absent from the originals) is put on the originals' scale by
    /// [`rebase_originals`]: it keeps its share relative to the backends l3 tuned, instead of
    /// its raw weight dwarfing (or vanishing next to) originals on another scale.
    pub fn restore_patch(&self, integers_only: bool) -> Result<Option<Value>, SplitError> {
        let Some(originals) = self.originals()? else {
            return Ok(None);
        };
        let current = self.current_weights();
        let map = if current.keys().all(|s| originals.contains_key(s)) {
            originals
        } else {
            let reference = self.applied_weights()?.unwrap_or_else(|| current.clone());
            rebase_originals(
                &originals,
                &reference,
                &current,
                integers_only,
                self.absent_weight,
            )
        };
        let backends = self.backends_with(|svc, obj| match map.get(svc) {
            Some(Value::Null) => {
                obj.remove("weight");
            }
            Some(w) => {
                obj.insert("weight".into(), w.clone());
            }
            None => {}
        });
        let mut metadata = self.guarded_metadata();
        metadata.insert(
            "annotations".into(),
            json!({
                ORIGINAL_WEIGHTS_ANNOTATION: Value::Null,
                APPLIED_WEIGHTS_ANNOTATION: Value::Null,
                FOREIGN_CHANGES_ANNOTATION: Value::Null,
            }),
        );
        Ok(Some(
            json!({ "metadata": metadata, "spec": self.spec_with(backends) }),
        ))
    }
}

/// Build a TrafficSplit object (for tests, examples and benchmarks).
pub fn object(
    version: SplitVersion,
    ns: &str,
    name: &str,
    backends: &[(&str, Value)],
) -> DynamicObject {
    let ar = version.api_resource();
    let mut obj = DynamicObject::new(name, &ar).within(ns);
    obj.data = json!({
        "spec": {
            "service": name,
            "backends": backends
                .iter()
                .map(|(s, w)| json!({"service": s, "weight": w}))
                .collect::<Vec<_>>(),
        }
    });
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_keep_their_form() {
        let obj = object(
            SplitVersion::V1alpha1,
            "ns",
            "web",
            &[("a", json!("500m")), ("b", json!("500m"))],
        );
        let p = parse(&obj).unwrap();
        assert_eq!(p.form, WeightForm::Milli);
        assert_eq!(p.backends[0].weight, 0.5);
        let patch = p.weights_patch(&[("a", 700), ("b", 300)], p.form, false);
        assert_eq!(
            patch["spec"]["backends"],
            json!([{"service": "a", "weight": "700m"}, {"service": "b", "weight": "300m"}])
        );
        let ints = object(
            SplitVersion::V1alpha2,
            "ns",
            "web",
            &[("a", json!(1)), ("b", json!(3))],
        );
        let p = parse(&ints).unwrap();
        assert_eq!(p.form, WeightForm::Integer);
        assert_eq!(p.backends[1].weight, 3.0);
    }

    #[test]
    fn bad_backends_name_the_field() {
        let obj = object(SplitVersion::V1alpha1, "ns", "web", &[("a", json!("lots"))]);
        let e = parse(&obj).unwrap_err();
        assert!(
            e.to_string().starts_with("spec.backends[0].weight: "),
            "{e}"
        );
        let obj = object(
            SplitVersion::V1alpha1,
            "ns",
            "web",
            &[("a", json!(1)), ("a", json!(1))],
        );
        assert_eq!(parse(&obj).unwrap_err(), SplitError::Duplicate("a".into()));
    }

    #[test]
    fn other_fields_survive_and_restore_puts_originals_back() {
        let mut obj = object(SplitVersion::V1alpha1, "ns", "web", &[]);
        obj.data["spec"]["backends"] = json!([
            {"service": "a", "weight": "1", "x-extra": true},
            {"service": "b", "weight": "1"}
        ]);
        obj.metadata.resource_version = Some("7".into());
        let p = parse(&obj).unwrap();
        let patch = p.weights_patch(&[("a", 900), ("b", 100)], p.form, true);
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(patch["spec"]["backends"][0]["x-extra"], true);
        assert_eq!(patch["spec"]["backends"][0]["weight"], "900");
        let ann = patch["metadata"]["annotations"][ORIGINAL_WEIGHTS_ANNOTATION]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(ann, r#"{"a":"1","b":"1"}"#);
        // Once adopted, the annotation is never written again.
        let mut adopted = p.clone();
        adopted.original = Some(ann);
        let again = adopted.weights_patch(&[("a", 800), ("b", 200)], p.form, true);
        assert!(
            again["metadata"]["annotations"]
                .get(ORIGINAL_WEIGHTS_ANNOTATION)
                .is_none()
        );
        let restore = adopted.restore_patch(false).unwrap().unwrap();
        assert_eq!(restore["spec"]["backends"][0]["weight"], "1");
        assert!(restore["metadata"]["annotations"][ORIGINAL_WEIGHTS_ANNOTATION].is_null());
        assert_eq!(p.restore_patch(false).unwrap(), None);
        for a in [
            ORIGINAL_WEIGHTS_ANNOTATION,
            APPLIED_WEIGHTS_ANNOTATION,
            FOREIGN_CHANGES_ANNOTATION,
        ] {
            assert!(restore["metadata"]["annotations"][a].is_null(), "{a}");
        }
        assert_eq!(
            patch["metadata"]["annotations"][APPLIED_WEIGHTS_ANNOTATION],
            r#"{"a":"900","b":"100"}"#,
            "what l3 wrote is recorded with the write"
        );
    }

    #[test]
    fn every_quantity_is_a_weight() {
        for (q, units) in [
            ("1", 1.0),
            ("+1", 1.0),
            ("1k", 1000.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            (".5", 0.5),
            ("1Ki", 1024.0),
            ("0", 0.0),
        ] {
            let (w, _) = parse_weight(&json!(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!((w - units).abs() < 1e-9, "{q} is {w}, expected {units}");
        }
        assert_eq!(parse_weight(&json!("500m")).unwrap().1, WeightForm::Milli);
        assert_eq!(parse_weight(&json!("1k")).unwrap().1, WeightForm::String);
        for bad in ["", "k", "-1", "lots", "1..5", "1 k", "nan", "inf"] {
            assert!(
                parse_weight(&json!(bad)).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(parse_weight(&json!(-3)).is_err());
    }

    fn map(v: Value) -> WeightMap {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_backend_added_after_adoption_is_restored_on_the_originals_scale() {
        // Originals 1/1; l3 wrote 600/400; someone added "c" at 300 next to them.
        let originals = map(json!({"a": "1", "b": "1"}));
        let applied = map(json!({"a": "600", "b": "400"}));
        let current = map(json!({"a": "600", "b": "400", "c": "300"}));
        let new = rebase_originals(&originals, &applied, &current, false, 0.0);
        assert_eq!(new, map(json!({"a": "1", "b": "1", "c": "600m"})));
        // c's share is the one its writer chose next to a and b: 300 / 1300.
        let share: f64 = 0.6 / 2.6;
        assert!((share - 300.0 / 1300.0).abs() < 1e-9);
        // Integers only (v1alpha2): everything times ten.
        let ints = rebase_originals(
            &map(json!({"a": 1, "b": 1})),
            &map(json!({"a": 600, "b": 400})),
            &map(json!({"a": 600, "b": 400, "c": 300})),
            true,
            0.0,
        );
        assert_eq!(ints, map(json!({"a": 10, "b": 10, "c": 6})));
        // Someone drains b (a untouched): b's original becomes 0, a keeps its own.
        let drained = rebase_originals(
            &originals,
            &applied,
            &map(json!({"a": "600", "b": "0"})),
            false,
            0.0,
        );
        assert_eq!(drained, map(json!({"a": "1", "b": "0"})));
        // Every weight rewritten (a GitOps revert): the new weights are the originals as they
        // are spelled.
        let reverted = map(json!({"a": "1", "b": "3"}));
        assert_eq!(
            rebase_originals(&originals, &applied, &reverted, false, 0.0),
            reverted
        );
    }

    #[test]
    fn restore_scales_a_backend_l3_never_wrote() {
        let mut obj = object(
            SplitVersion::V1alpha2,
            "ns",
            "web",
            &[("a", json!(600)), ("b", json!(400)), ("c", json!(300))],
        );
        obj.metadata.annotations = Some(
            [
                (
                    ORIGINAL_WEIGHTS_ANNOTATION.to_owned(),
                    r#"{"a":1,"b":1}"#.to_owned(),
                ),
                (
                    APPLIED_WEIGHTS_ANNOTATION.to_owned(),
                    r#"{"a":600,"b":400}"#.to_owned(),
                ),
            ]
            .into(),
        );
        let p = parse(&obj).unwrap();
        assert_eq!(p.foreign_change().unwrap(), Some(ForeignChange::Backends));
        let r = p.restore_patch(true).unwrap().unwrap();
        assert_eq!(
            r["spec"]["backends"],
            json!([
                {"service": "a", "weight": 10},
                {"service": "b", "weight": 10},
                {"service": "c", "weight": 6}
            ])
        );
    }

    #[test]
    fn foreign_changes_are_told_from_l3s_own_writes() {
        let mut obj = object(
            SplitVersion::V1alpha1,
            "ns",
            "web",
            &[("a", json!("600m")), ("b", json!("400m"))],
        );
        let with = |obj: &mut DynamicObject, applied: &str| {
            obj.metadata.annotations = Some(
                [
                    (
                        ORIGINAL_WEIGHTS_ANNOTATION.to_owned(),
                        r#"{"a":"1","b":"1"}"#.to_owned(),
                    ),
                    (APPLIED_WEIGHTS_ANNOTATION.to_owned(), applied.to_owned()),
                ]
                .into(),
            );
        };
        assert_eq!(
            parse(&obj).unwrap().foreign_change().unwrap(),
            None,
            "not adopted"
        );
        with(&mut obj, r#"{"a":"600m","b":"400m"}"#);
        assert_eq!(parse(&obj).unwrap().foreign_change().unwrap(), None);
        // The same weight spelled differently is no change.
        with(&mut obj, r#"{"a":"0.6","b":"0.4"}"#);
        assert_eq!(parse(&obj).unwrap().foreign_change().unwrap(), None);
        with(&mut obj, r#"{"a":"500m","b":"500m"}"#);
        assert_eq!(
            parse(&obj).unwrap().foreign_change().unwrap(),
            Some(ForeignChange::Weights)
        );
        with(&mut obj, "not json");
        assert!(matches!(
            parse(&obj).unwrap().foreign_change(),
            Err(SplitError::BadAnnotation {
                annotation: APPLIED_WEIGHTS_ANNOTATION,
                ..
            })
        ));
    }

    #[test]
    fn version_choice() {
        assert_eq!(
            SplitVersion::choose(["v1alpha2", "v1alpha1"]),
            Ok(SplitVersion::V1alpha1)
        );
        assert_eq!(
            SplitVersion::choose(["v1alpha2"]),
            Ok(SplitVersion::V1alpha2)
        );
        assert_eq!(
            SplitVersion::choose(["v1alpha3"]),
            Err(SplitError::NoSupportedVersion)
        );
    }
}
