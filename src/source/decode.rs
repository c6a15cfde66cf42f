//! Decoding of Prometheus HTTP API answers (`/api/v1/query`) into typed series, and of series
//! into per-backend [`Outcome`]s. Everything here reads data from the network: no panics, every
//! malformation is a typed [`Error`].

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::query::{InflightEstimator, SignalKind, SourceConfig};
use super::{BackendKey, Error, Outcome, Result};

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its value (may be NaN or ±Inf).
    pub value: f64,
}

#[derive(Deserialize)]
struct Envelope {
    status: Option<String>,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: HashMap<String, String>,
    value: (serde_json::Value, String),
}

/// Parse a Prometheus sample value (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Decode an answer: HTTP status and body. Errors: [`Error::Prometheus`] (status `error`),
/// [`Error::Http`] (non-2xx without an API error body), [`Error::Decode`] (not the API's JSON),
/// [`Error::ResultType`] (not a vector), [`Error::Partial`] (warnings, unless accepted).
pub fn decode_answer(status: u16, body: &[u8], accept_warnings: bool) -> Result<Vec<Series>> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            if (200..300).contains(&status) {
                return Err(Error::Decode(format!("answer is not the API's JSON: {e}")));
            }
            return Err(Error::Http {
                status,
                message: truncate(&String::from_utf8_lossy(body), 200),
            });
        }
    };
    if envelope.status.as_deref() != Some("success") {
        if envelope.status.as_deref() == Some("error") || envelope.error.is_some() {
            return Err(Error::Prometheus {
                status,
                error_type: envelope.error_type.unwrap_or_else(|| "unknown".into()),
                message: truncate(&envelope.error.unwrap_or_default(), 500),
            });
        }
        return Err(Error::Decode(format!(
            "field `status`: expected \"success\" or \"error\", got {:?}",
            envelope.status
        )));
    }
    if !(200..300).contains(&status) {
        return Err(Error::Http {
            status,
            message: "status \"success\" with a non-2xx HTTP status".into(),
        });
    }
    if !envelope.warnings.is_empty() && !accept_warnings {
        return Err(Error::Partial {
            warnings: envelope
                .warnings
                .iter()
                .take(5)
                .map(|w| truncate(w, 200))
                .collect(),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| Error::Decode("field `data`: missing".into()))?;
    if data.result_type != "vector" {
        return Err(Error::ResultType(data.result_type));
    }
    let samples: Vec<VectorSample> = serde_json::from_value(data.result)
        .map_err(|e| Error::Decode(format!("field `data.result`: {e}")))?;
    samples
        .into_iter()
        .map(|s| {
            let value = parse_value(&s.value.1).ok_or_else(|| {
                Error::Decode(format!(
                    "field `value`: expected a number, NaN or ±Inf, got {:?}",
                    truncate(&s.value.1, 50)
                ))
            })?;
            Ok(Series {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

fn backend_of(config: &SourceConfig, s: &Series) -> Option<BackendKey> {
    Some(BackendKey {
        namespace: s.labels.get(&config.namespace_label)?.clone(),
        service: s.labels.get(&config.service_label)?.clone(),
    })
}

/// Turn one signal's series into outcomes for the requested backends. A requested backend
/// without a series is [`Outcome::NoSeries`]; series of backends that were not requested
/// (the selector is a namespace × service cross product) are ignored.
pub fn outcomes(
    config: &SourceConfig,
    signal: SignalKind,
    series: &[Series],
    requested: &[BackendKey],
) -> BTreeMap<BackendKey, Outcome> {
    let mut out: BTreeMap<BackendKey, Outcome> = requested
        .iter()
        .map(|b| (b.clone(), Outcome::NoSeries))
        .collect();
    match signal {
        SignalKind::SuccessRate => {
            // (success, total) per backend.
            let mut sums: HashMap<BackendKey, (f64, f64)> = HashMap::new();
            for s in series {
                let Some(b) = backend_of(config, s) else {
                    continue;
                };
                if !out.contains_key(&b) {
                    continue;
                }
                let e = sums.entry(b).or_insert((0.0, 0.0));
                if s.labels.get(&config.classification_label) == Some(&config.success_value) {
                    e.0 += s.value;
                }
                e.1 += s.value;
            }
            for (b, (ok, total)) in sums {
                // 0/0 (series but no traffic in the window) is NaN: undefined, not 0 or 1.
                out.insert(b, Outcome::from_value(ok / total));
            }
        }
        _ => {
            for s in series {
                let Some(b) = backend_of(config, s) else {
                    continue;
                };
                let Some(slot) = out.get_mut(&b) else {
                    continue;
                };
                *slot = classify(config, signal, s.value);
            }
        }
    }
    out
}

fn classify(config: &SourceConfig, signal: SignalKind, v: f64) -> Outcome {
    match signal {
        SignalKind::Latency => {
            if let Some(last) = config.latency_last_finite_bucket
                && v.is_finite()
                && v >= last
            {
                return Outcome::Infinite;
            }
            Outcome::from_value(v * config.latency_unit_secs)
        }
        SignalKind::Inflight => match config.inflight {
            InflightEstimator::LittlesLaw => Outcome::from_value(v * config.latency_unit_secs),
            // Scrape skew can make requests - responses slightly negative: nothing in flight.
            InflightEstimator::Instant => Outcome::from_value(if v < 0.0 { 0.0 } else { v }),
        },
        SignalKind::SuccessRate | SignalKind::Rps => Outcome::from_value(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, svc: &str) -> BackendKey {
        BackendKey {
            namespace: ns.into(),
            service: svc.into(),
        }
    }

    const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"dst_namespace":"prod","dst_service":"a"},"value":[1700000000.5,"150"]},
        {"metric":{"dst_namespace":"prod","dst_service":"b"},"value":[1700000000.5,"NaN"]},
        {"metric":{"dst_namespace":"prod","dst_service":"c"},"value":[1700000000.5,"+Inf"]},
        {"metric":{"dst_namespace":"prod","dst_service":"d"},"value":[1700000000.5,"50000"]},
        {"metric":{"dst_namespace":"other","dst_service":"a"},"value":[1700000000.5,"1"]},
        {"metric":{"dst_service":"a"},"value":[1700000000.5,"1"]}
    ]}}"#;

    #[test]
    fn decodes_values_nan_and_inf() {
        let s = decode_answer(200, VECTOR.as_bytes(), false).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].value, 150.0);
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::INFINITY);
    }

    #[test]
    fn latency_outcomes_are_typed_and_in_seconds() {
        let s = decode_answer(200, VECTOR.as_bytes(), false).unwrap();
        let want = [
            key("prod", "a"),
            key("prod", "b"),
            key("prod", "c"),
            key("prod", "d"),
            key("prod", "e"),
        ];
        let o = outcomes(&SourceConfig::default(), SignalKind::Latency, &s, &want);
        assert_eq!(o.len(), 5, "only requested backends: {o:?}");
        assert_eq!(o[&key("prod", "a")], Outcome::Value(0.15));
        assert_eq!(o[&key("prod", "b")], Outcome::NotANumber);
        assert_eq!(o[&key("prod", "c")], Outcome::Infinite);
        // The last finite bucket bound is how Prometheus reports "beyond the last bucket".
        assert_eq!(o[&key("prod", "d")], Outcome::Infinite);
        assert_eq!(o[&key("prod", "e")], Outcome::NoSeries);
    }

    #[test]
    fn success_rate_from_classifications() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"dst_namespace":"p","dst_service":"a","classification":"success"},"value":[1,"9"]},
            {"metric":{"dst_namespace":"p","dst_service":"a","classification":"failure"},"value":[1,"1"]},
            {"metric":{"dst_namespace":"p","dst_service":"b","classification":"failure"},"value":[1,"4"]},
            {"metric":{"dst_namespace":"p","dst_service":"c","classification":"success"},"value":[1,"0"]},
            {"metric":{"dst_namespace":"p","dst_service":"c","classification":"failure"},"value":[1,"0"]}
        ]}}"#;
        let s = decode_answer(200, body.as_bytes(), false).unwrap();
        let want = [key("p", "a"), key("p", "b"), key("p", "c"), key("p", "d")];
        let o = outcomes(&SourceConfig::default(), SignalKind::SuccessRate, &s, &want);
        assert_eq!(o[&key("p", "a")], Outcome::Value(0.9));
        assert_eq!(o[&key("p", "b")], Outcome::Value(0.0));
        assert_eq!(o[&key("p", "c")], Outcome::NotANumber);
        assert_eq!(o[&key("p", "d")], Outcome::NoSeries);
    }

    #[test]
    fn instant_inflight_is_clamped_and_littles_law_scaled() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"dst_namespace":"p","dst_service":"a"},"value":[1,"-2"]},
            {"metric":{"dst_namespace":"p","dst_service":"b"},"value":[1,"2500"]}]}}"#;
        let s = decode_answer(200, body.as_bytes(), false).unwrap();
        let want = [key("p", "a"), key("p", "b")];
        let mut c = SourceConfig::default();
        let o = outcomes(&c, SignalKind::Inflight, &s, &want);
        assert_eq!(o[&key("p", "b")], Outcome::Value(2.5));
        c.inflight = InflightEstimator::Instant;
        let o = outcomes(&c, SignalKind::Inflight, &s, &want);
        assert_eq!(o[&key("p", "a")], Outcome::Value(0.0));
        assert_eq!(o[&key("p", "b")], Outcome::Value(2500.0));
    }

    #[test]
    fn prometheus_error_is_typed() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        match decode_answer(400, body.as_bytes(), false) {
            Err(e @ Error::Prometheus { .. }) => {
                assert_eq!(e.reason(), "prometheus");
                assert!(e.to_string().contains("bad_data"), "{e}");
            }
            other => panic!("expected a Prometheus error, got {other:?}"),
        }
    }

    #[test]
    fn http_error_without_json_is_typed() {
        let e = decode_answer(502, b"<html>bad gateway</html>", false).unwrap_err();
        assert_eq!(e.reason(), "http");
        assert!(e.to_string().contains("502"), "{e}");
    }

    #[test]
    fn warnings_make_a_partial_answer() {
        let body = r#"{"status":"success","warnings":["store 2 unavailable"],
            "data":{"resultType":"vector","result":[]}}"#;
        let e = decode_answer(200, body.as_bytes(), false).unwrap_err();
        assert_eq!(e.reason(), "partial");
        assert!(e.to_string().contains("store 2 unavailable"), "{e}");
        assert!(
            decode_answer(200, body.as_bytes(), true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn result_type_mismatch_is_typed() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let e = decode_answer(200, body.as_bytes(), false).unwrap_err();
        assert_eq!(e.reason(), "result_type");
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert_eq!(
            decode_answer(200, body.as_bytes(), false)
                .unwrap_err()
                .reason(),
            "result_type"
        );
    }

    #[test]
    fn malformed_answers_are_decode_errors() {
        for body in [
            "not json",
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#,
            r#"{"status":"weird"}"#,
        ] {
            let e = decode_answer(200, body.as_bytes(), false).unwrap_err();
            assert_eq!(e.reason(), "decode", "{body}: {e}");
        }
    }
}
