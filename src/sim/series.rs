//! Time series of scenario parameters: a constant, or `[time, value]` points read with `step` or
//! `linear` interpolation.
//!
//! Written in YAML as a number (`p50_ms: 40`), a list of pairs (`rps: [[0, 200], [60, 300]]`,
//! linear), or a map (`{interpolation: step, points: [[0, 1], [120, 0.3]]}`). Before the first
//! point a series holds its first value, after the last point its last value.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// How values between two points are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Interpolation {
    /// The value of the last point at or before `t`.
    Step,
    /// Straight line between the surrounding points.
    #[default]
    Linear,
}

/// A parameter over time (seconds since the start of the measured run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Points sorted by strictly increasing time; never empty after validation.
    pub points: Vec<(f64, f64)>,
    /// How to read between points.
    pub interpolation: Interpolation,
}

impl Series {
    /// A series that is `v` at all times.
    pub fn constant(v: f64) -> Self {
        Self {
            points: vec![(0.0, v)],
            interpolation: Interpolation::Step,
        }
    }

    /// The value at `t`.
    pub fn at(&self, t: f64) -> f64 {
        let pts = &self.points;
        let Some(&(t0, v0)) = pts.first() else {
            return f64::NAN;
        };
        if t <= t0 {
            return v0;
        }
        // Index of the first point strictly after t.
        let i = pts.partition_point(|&(pt, _)| pt <= t);
        if i >= pts.len() {
            return pts[pts.len() - 1].1;
        }
        let (ta, va) = pts[i - 1];
        match self.interpolation {
            Interpolation::Step => va,
            Interpolation::Linear => {
                let (tb, vb) = pts[i];
                va + (vb - va) * (t - ta) / (tb - ta)
            }
        }
    }

    /// The largest value the series takes (both interpolations stay within the points' range).
    pub fn max(&self) -> f64 {
        self.points
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The smallest value the series takes.
    pub fn min(&self) -> f64 {
        self.points
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
    }

    /// Checks the shape (non-empty, finite, strictly increasing times) and that every value lies
    /// in `[lo, hi]`; errors name the point as `path[i]`.
    pub fn validate(&self, path: &str, lo: f64, hi: f64, expected: &str) -> Result<(), String> {
        if self.points.is_empty() {
            return Err(format!(
                "{path}: expected at least one [time, value] point, got an empty list"
            ));
        }
        let mut last: Option<f64> = None;
        for (i, &(t, v)) in self.points.iter().enumerate() {
            if !t.is_finite() {
                return Err(format!(
                    "{path}[{i}]: time must be a finite number of seconds, got {t}"
                ));
            }
            if let Some(prev) = last.filter(|&p| t <= p) {
                return Err(format!(
                    "{path}[{i}]: times must increase strictly, got {t} after {prev}"
                ));
            }
            last = Some(t);
            if !v.is_finite() || v < lo || v > hi {
                return Err(format!("{path}[{i}]: value is {v}, expected {expected}"));
            }
        }
        Ok(())
    }
}

const EXPECTING: &str = "a number, a list of [time, value] pairs, or a map {points: [[time, value], ...], interpolation: step|linear}";

struct SeriesVisitor;

fn pair<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(f64, f64), A::Error> {
    let t: f64 = seq
        .next_element()?
        .ok_or_else(|| de::Error::custom("expected a [time, value] pair, got an empty list"))?;
    let v: f64 = seq
        .next_element()?
        .ok_or_else(|| de::Error::custom("expected a [time, value] pair, got only a time"))?;
    if seq.next_element::<de::IgnoredAny>()?.is_some() {
        return Err(de::Error::custom(
            "expected a [time, value] pair, got more than two numbers",
        ));
    }
    Ok((t, v))
}

struct Pair((f64, f64));

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = Pair;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [time, value] pair of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Pair, A::Error> {
                pair(seq).map(Pair)
            }
        }
        d.deserialize_seq(PairVisitor)
    }
}

impl<'de> Visitor<'de> for SeriesVisitor {
    type Value = Series;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Series, E> {
        Ok(Series::constant(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Series, E> {
        Ok(Series::constant(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Series, E> {
        Ok(Series::constant(v as f64))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Series, A::Error> {
        let mut points = Vec::new();
        while let Some(Pair(p)) = seq.next_element()? {
            points.push(p);
        }
        Ok(Series {
            points,
            interpolation: Interpolation::Linear,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Series, A::Error> {
        let mut points: Option<Vec<(f64, f64)>> = None;
        let mut interpolation = Interpolation::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "points" => {
                    let raw: Vec<Pair> = map.next_value()?;
                    points = Some(raw.into_iter().map(|p| p.0).collect());
                }
                "interpolation" => interpolation = map.next_value()?,
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["points", "interpolation"],
                    ));
                }
            }
        }
        let points = points.ok_or_else(|| de::Error::missing_field("points"))?;
        Ok(Series {
            points,
            interpolation,
        })
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_linear_read_between_points() {
        let lin: Series = serde_yaml::from_str("[[0, 10], [10, 20]]").unwrap();
        assert_eq!(lin.at(-5.0), 10.0);
        assert_eq!(lin.at(5.0), 15.0);
        assert_eq!(lin.at(50.0), 20.0);
        let step: Series =
            serde_yaml::from_str("{interpolation: step, points: [[0, 10], [10, 20]]}").unwrap();
        assert_eq!(step.at(9.9), 10.0);
        assert_eq!(step.at(10.0), 20.0);
        let c: Series = serde_yaml::from_str("3.5").unwrap();
        assert_eq!(c.at(1e6), 3.5);
    }

    #[test]
    fn malformed_series_are_refused() {
        assert!(serde_yaml::from_str::<Series>("[[0, 1, 2]]").is_err());
        assert!(serde_yaml::from_str::<Series>("[[0]]").is_err());
        assert!(serde_yaml::from_str::<Series>("{points: [[0, 1]], shape: x}").is_err());
        let s: Series = serde_yaml::from_str("[[5, 1], [5, 2]]").unwrap();
        let e = s.validate("rps", 0.0, 1e9, "x").unwrap_err();
        assert!(e.contains("rps[1]"), "{e}");
    }
}
