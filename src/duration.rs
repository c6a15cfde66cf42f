//! The one parser of human durations (`600ms`, `5s`, `1.5s`, `2m`, `1h`) shared by the CRD, the
//! operator's flags, the Prometheus source and the simulator. Range checks stay with the callers,
//! which know the field and the bounds.

/// Seconds in `s`, a non-negative decimal number followed by `ms`, `s`, `m` or `h`; `None` when
/// `s` is not of that form or not finite.
pub fn parse_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .into_iter()
        .find_map(|(unit, scale)| s.strip_suffix(unit).map(|n| (n, scale)))?;
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    num.parse::<f64>()
        .ok()
        .map(|v| v * scale)
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::parse_secs;

    #[test]
    fn units_and_garbage() {
        assert_eq!(parse_secs("600ms"), Some(0.6));
        assert_eq!(parse_secs("5s"), Some(5.0));
        assert_eq!(parse_secs(" 1.5s "), Some(1.5));
        assert_eq!(parse_secs("2m"), Some(120.0));
        assert_eq!(parse_secs("1h"), Some(3600.0));
        for bad in ["", "5", "s", "-1s", "1e3s", "5 s", "5sec", "NaNs", "infs"] {
            assert_eq!(parse_secs(bad), None, "{bad:?}");
        }
    }
}
