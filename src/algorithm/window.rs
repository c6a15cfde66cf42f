//! The query-window rule: how much history each `rate()` and `histogram_quantile` reads.
//!
//! `rate()` needs at least two samples inside its window, and with one sample every scrape
//! interval a window of two intervals is the least that can hold two whatever the scrape phase.
//! The `auto` window takes four intervals (so a missed scrape still leaves enough samples, as
//! Prometheus' own guidance for `rate()` suggests), and never less than 10 s (the paper's
//! 5 s interval with a 10 s window, §4). The operator, `l3 replay` and `l3 simulate` all use
//! these two functions, so their windows agree.

/// The shortest window `auto` ever picks, seconds.
pub const AUTO_WINDOW_FLOOR_SECS: f64 = 10.0;
/// Scrape intervals in an `auto` window.
pub const AUTO_WINDOW_SCRAPES: f64 = 4.0;
/// Scrape intervals an explicit window must span at least (below that `rate()` may see a
/// single sample and return nothing).
pub const MIN_WINDOW_SCRAPES: f64 = 2.0;

/// The `auto` query window for a scrape interval, both in seconds.
pub fn auto_window(scrape_interval_secs: f64) -> f64 {
    (AUTO_WINDOW_SCRAPES * scrape_interval_secs).max(AUTO_WINDOW_FLOOR_SECS)
}

/// The shortest explicit window that still holds two samples, seconds.
pub fn min_window(scrape_interval_secs: f64) -> f64 {
    MIN_WINDOW_SCRAPES * scrape_interval_secs
}

/// Whether an explicit window is long enough for this scrape interval.
pub fn window_fits(window_secs: f64, scrape_interval_secs: f64) -> bool {
    window_secs >= min_window(scrape_interval_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_four_scrapes_never_under_ten_seconds() {
        assert_eq!(auto_window(1.0), 10.0);
        assert_eq!(auto_window(2.5), 10.0);
        assert_eq!(auto_window(5.0), 20.0);
        assert_eq!(auto_window(10.0), 40.0);
        assert_eq!(auto_window(30.0), 120.0);
    }

    #[test]
    fn an_explicit_window_needs_two_scrapes() {
        assert!(window_fits(10.0, 5.0));
        assert!(!window_fits(10.0, 10.0));
        assert!(window_fits(20.0, 10.0));
        assert_eq!(min_window(15.0), 30.0);
    }
}
