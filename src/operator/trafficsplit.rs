//! SMI TrafficSplit (`split.smi-spec.io`) as l3 reads and writes it: v1alpha1 (weights are
//! Quantities such as `"500m"`; l3 keeps the form the object uses) and v1alpha2 (integers),
//! accessed as `DynamicObject`s so that every field l3 does not own survives a write.

use kube::api::{ApiResource, DynamicObject};
use kube::discovery::ApiGroup;
use serde_json::{Map, Value, json};

/// API group of the SMI TrafficSplit.
pub const GROUP: &str = "split.smi-spec.io";
/// Annotation holding a split's weights from before l3 adopted it (JSON), written once.
pub const ORIGINAL_WEIGHTS_ANNOTATION: &str = "l3.dev/original-weights";

/// Errors reading a TrafficSplit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
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
    /// The original-weights annotation cannot be read.
    #[error("annotation {ORIGINAL_WEIGHTS_ANNOTATION} is not valid: {0}")]
    BadAnnotation(String),
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

/// One backend of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitBackend {
    /// Service name.
    pub service: String,
    /// Weight, in units (`"500m"` is 0.5).
    pub weight: f64,
}

/// The parts of a TrafficSplit l3 reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSplit {
    /// `spec.service`, the apex service.
    pub service: String,
    /// Backends in list order.
    pub backends: Vec<SplitBackend>,
    /// Form of the weights.
    pub form: WeightForm,
    /// The raw backend entries, to keep every field l3 does not own.
    pub raw_backends: Vec<Value>,
    /// `metadata.resourceVersion`, for optimistic concurrency.
    pub resource_version: Option<String>,
    /// The original-weights annotation, if l3 adopted the split.
    pub original: Option<String>,
}

/// Parse a Quantity weight: an integer, or a decimal string with an optional `m` suffix.
fn parse_weight(v: &Value) -> Result<(f64, WeightForm), String> {
    const EXPECTED: &str = "expected a non-negative integer or a quantity such as \"500m\"";
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| (w, WeightForm::Integer))
            .ok_or_else(|| format!("{n} is not valid, {EXPECTED}")),
        Value::String(s) => {
            let (num, scale, form) = match s.strip_suffix('m') {
                Some(n) => (n, 0.001, WeightForm::Milli),
                None => (s.as_str(), 1.0, WeightForm::String),
            };
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(format!("{s:?} is not valid, {EXPECTED}"));
            }
            num.parse::<f64>()
                .map(|w| (w * scale, form))
                .map_err(|_| format!("{s:?} is not valid, {EXPECTED}"))
        }
        other => Err(format!("{other} is not valid, {EXPECTED}")),
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
        backends.push(SplitBackend {
            service: service.to_owned(),
            weight,
        });
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
        resource_version: obj.metadata.resource_version.clone(),
        original: obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ORIGINAL_WEIGHTS_ANNOTATION))
            .cloned(),
    })
}

impl ParsedSplit {
    /// Service names in list order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|b| b.service.as_str())
    }

    /// The original-weights annotation value for this split: `{service: weight}` with each
    /// weight exactly as the object spells it.
    pub fn original_weights_json(&self) -> String {
        let mut m = Map::new();
        for b in &self.raw_backends {
            if let Some(s) = b.get("service").and_then(Value::as_str) {
                m.insert(
                    s.to_owned(),
                    b.get("weight").cloned().unwrap_or(Value::Null),
                );
            }
        }
        Value::Object(m).to_string()
    }

    /// The split's backends as they are, each passed with its service name to `edit`: patches
    /// send the whole list (merge patches replace lists), so every other field must survive.
    fn backends_with(&self, mut edit: impl FnMut(&str, &mut Map<String, Value>)) -> Vec<Value> {
        self.raw_backends
            .iter()
            .map(|b| {
                let mut b = b.clone();
                let svc = b.get("service").and_then(Value::as_str).map(str::to_owned);
                if let (Some(svc), Some(obj)) = (svc, b.as_object_mut()) {
                    edit(&svc, obj);
                }
                b
            })
            .collect()
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
    /// With `adopt`, the original weights are recorded (only if not recorded yet).
    pub fn weights_patch(&self, weights: &[(&str, u32)], form: WeightForm, adopt: bool) -> Value {
        let backends = self.backends_with(|svc, obj| {
            if let Some((_, w)) = weights.iter().find(|(n, _)| *n == svc) {
                obj.insert("weight".into(), form.render(*w));
            }
        });
        let mut metadata = self.guarded_metadata();
        if adopt && self.original.is_none() {
            metadata.insert(
                "annotations".into(),
                json!({ ORIGINAL_WEIGHTS_ANNOTATION: self.original_weights_json() }),
            );
        }
        json!({ "metadata": metadata, "spec": { "backends": backends } })
    }

    /// JSON merge patch that puts the recorded original weights back and removes the
    /// annotation, or `None` if l3 never adopted this split. Backends added since keep their
    /// current weight.
    pub fn restore_patch(&self) -> Result<Option<Value>, SplitError> {
        let Some(original) = &self.original else {
            return Ok(None);
        };
        let map: Map<String, Value> =
            serde_json::from_str(original).map_err(|e| SplitError::BadAnnotation(e.to_string()))?;
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
            json!({ ORIGINAL_WEIGHTS_ANNOTATION: Value::Null }),
        );
        Ok(Some(
            json!({ "metadata": metadata, "spec": { "backends": backends } }),
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
        assert!(again["metadata"].get("annotations").is_none());
        let restore = adopted.restore_patch().unwrap().unwrap();
        assert_eq!(restore["spec"]["backends"][0]["weight"], "1");
        assert!(restore["metadata"]["annotations"][ORIGINAL_WEIGHTS_ANNOTATION].is_null());
        assert_eq!(p.restore_patch().unwrap(), None);
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
