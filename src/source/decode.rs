//! Decoding of Prometheus HTTP API answers (`/api/v1/query`, `/api/v1/query_range`) into typed
//! series, and of series into per-backend [`Outcome`]s. Everything here reads data from the
//! network: no panics, every malformation is a typed [`Error`].
//!
//! The query API's data (`resultType`, `result`, samples, `NaN`/`±Inf` values) is decoded by
//! `prometheus-http-query` (serde into its [`PromqlResult`]); only the envelope around it is
//! ours, because the crate's own envelope (`ApiResponse`) is private to it and drops two things
//! l3 needs: the `warnings` (a Thanos partial response must count as a failed query) and error
//! types beyond Prometheus' seven (VictoriaMetrics answers e.g. `"errorType":"422"`, which the
//! crate's `PrometheusErrorType` refuses, turning a clear server error into a decode error).
//! Fuzz and property tests enter through [`outcomes_from_answer`].

use std::collections::{BTreeMap, HashMap};

use prometheus_http_query::response::{Data, PromqlResult};
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

/// One series of a range answer (a matrix): labels and `(time, value)` samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Samples: seconds since the epoch, value (may be NaN or ±Inf).
    pub samples: Vec<(f64, f64)>,
}

/// The API's envelope; `data` is the crate's type.
#[derive(Deserialize)]
struct Envelope {
    status: Option<String>,
    data: Option<PromqlResult>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
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

/// Decode an answer of either query endpoint into the crate's [`Data`]. Errors:
/// [`Error::Prometheus`] (status `error`), [`Error::Http`] (non-2xx without an API error body),
/// [`Error::Decode`] (not the API's JSON), [`Error::Partial`] (warnings, unless accepted).
pub fn decode_data(status: u16, body: &[u8], accept_warnings: bool) -> Result<Data> {
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
            envelope.status.map(|s| truncate(&s, 50))
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
    Ok(data.into_inner().0)
}

fn result_type(data: &Data) -> &'static str {
    match data {
        Data::Vector(_) => "vector",
        Data::Matrix(_) => "matrix",
        Data::Scalar(_) => "scalar",
    }
}

/// Decode an instant-query answer: HTTP status and body, into an instant vector. Errors as
/// [`decode_data`], plus [`Error::ResultType`] when the answer is not a vector.
pub fn decode_answer(status: u16, body: &[u8], accept_warnings: bool) -> Result<Vec<Series>> {
    match decode_data(status, body, accept_warnings)? {
        Data::Vector(v) => Ok(v
            .into_iter()
            .map(|s| {
                let (labels, sample) = s.into_inner();
                Series {
                    labels,
                    value: sample.value(),
                }
            })
            .collect()),
        other => Err(Error::ResultType(result_type(&other).into())),
    }
}

/// Decode a range-query answer (or an instant query of a range selector) into a matrix.
/// Errors as [`decode_data`], plus [`Error::ResultType`] when the answer is not a matrix.
pub fn decode_matrix(status: u16, body: &[u8], accept_warnings: bool) -> Result<Vec<RangeSeries>> {
    match decode_data(status, body, accept_warnings)? {
        Data::Matrix(m) => Ok(m
            .into_iter()
            .map(|s| {
                let (labels, samples) = s.into_inner();
                RangeSeries {
                    labels,
                    samples: samples.iter().map(|p| (p.timestamp(), p.value())).collect(),
                }
            })
            .collect()),
        other => Err(Error::ResultType(result_type(&other).into())),
    }
}

/// The public entry point from one raw instant-query answer to l3's typed outcomes: the HTTP
/// status and body of one `/api/v1/query` answer for `signal`, decoded by
/// `prometheus-http-query`'s types and then read for the `requested` backends exactly as the
/// operator reads them ([`outcomes`]). Never panics, whatever the bytes; a malformed or failed
/// answer is a typed [`Error`] (the operator then marks the signal [`Outcome::QueryFailed`]).
pub fn outcomes_from_answer(
    config: &SourceConfig,
    signal: SignalKind,
    requested: &[BackendKey],
    status: u16,
    body: &[u8],
) -> Result<BTreeMap<BackendKey, Outcome>> {
    let series = decode_answer(status, body, config.accept_warnings)?;
    Ok(outcomes(config, signal, &series, requested))
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
                let class = s
                    .labels
                    .get(&config.classification_label)
                    .map(String::as_str);
                if config.success.is_success(class) {
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
    fn the_public_entry_point_types_every_answer() {
        let want = [key("prod", "a"), key("prod", "e")];
        let o = outcomes_from_answer(
            &SourceConfig::default(),
            SignalKind::Rps,
            &want,
            200,
            VECTOR.as_bytes(),
        )
        .unwrap();
        assert_eq!(o[&key("prod", "a")], Outcome::Value(150.0));
        assert_eq!(o[&key("prod", "e")], Outcome::NoSeries);
        for (status, body) in [(200, &b"\xff\x00"[..]), (500, b"{}"), (200, b"[]")] {
            assert!(
                outcomes_from_answer(
                    &SourceConfig::default(),
                    SignalKind::Rps,
                    &want,
                    status,
                    body
                )
                .is_err()
            );
        }
    }

    #[test]
    fn matrices_decode_with_their_timestamps() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"dst_service":"a"},"values":[[10,"1"],[20,"NaN"],[30.5,"+Inf"]]}]}}"#;
        let m = decode_matrix(200, body.as_bytes(), false).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].samples[0], (10.0, 1.0));
        assert!(m[0].samples[1].1.is_nan());
        assert_eq!(m[0].samples[2], (30.5, f64::INFINITY));
        assert_eq!(
            decode_matrix(200, VECTOR.as_bytes(), false)
                .unwrap_err()
                .reason(),
            "result_type"
        );
    }

    #[test]
    fn non_prometheus_error_types_stay_server_errors() {
        // VictoriaMetrics' error type is an HTTP status, not one of Prometheus' names.
        let body = r#"{"status":"error","errorType":"422","error":"unsupported function"}"#;
        let e = decode_answer(422, body.as_bytes(), false).unwrap_err();
        assert_eq!(e.reason(), "prometheus");
        assert!(e.to_string().contains("422"), "{e}");
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
