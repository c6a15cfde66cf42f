//! `l3 replay`'s output: a table for people, JSON and CSV for tools, and an SVG plot of the
//! shares and filtered latencies over time.

use std::fmt::Write as _;

use serde::Serialize;

use super::run::Report;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A header with the totals and the estimate, then one line per interval.
    #[default]
    Table,
    /// The whole report as one JSON document.
    Json,
    /// One line per interval and backend.
    Csv,
}

/// What the replay was asked, printed above the results.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// `namespace/split`.
    pub split: String,
    /// Range, RFC 3339.
    pub from: String,
    /// Range, RFC 3339.
    pub to: String,
    /// Interval, seconds.
    pub interval_seconds: f64,
    /// The window the queries used, seconds.
    pub window_seconds: u64,
    /// `auto` or the explicit window.
    pub query_window: String,
    /// Scrape interval used to size or check the window, seconds, if known.
    pub scrape_interval_seconds: Option<f64>,
    /// Latency quantile.
    pub quantile: f64,
    /// Range queries sent.
    pub queries: usize,
    /// Failed range queries, as `signal: reason: message` (their intervals kept the weights).
    pub failed_queries: Vec<String>,
}

/// RFC 3339 of seconds since the epoch (UTC, whole seconds).
pub fn rfc3339(t: f64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t.floor() as i64)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("{t}"))
}

fn ms(v: f64) -> String {
    format!("{:.1}", v * 1000.0)
}

/// The report in `format`.
pub fn render(format: Format, ctx: &Context, r: &Report) -> String {
    match format {
        Format::Table => table(ctx, r),
        Format::Json => {
            #[derive(Serialize)]
            struct Doc<'a> {
                context: &'a Context,
                #[serde(flatten)]
                report: &'a Report,
            }
            let mut s = serde_json::to_string_pretty(&Doc {
                context: ctx,
                report: r,
            })
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the report: {e}\"}}"));
            s.push('\n');
            s
        }
        Format::Csv => csv(r),
    }
}

fn table(ctx: &Context, r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "l3 replay of {} from {} to {}, every {}s: {} intervals, {} range queries",
        ctx.split,
        ctx.from,
        ctx.to,
        ctx.interval_seconds,
        r.intervals.len(),
        ctx.queries
    );
    let _ = writeln!(
        out,
        "query window {}s (queryWindow {}, scrape interval {}), quantile {}",
        ctx.window_seconds,
        ctx.query_window,
        ctx.scrape_interval_seconds
            .map_or_else(|| "unknown".to_owned(), |s| format!("{s}s")),
        ctx.quantile
    );
    let _ = writeln!(
        out,
        "writes l3 would have made (after hysteresis): {}",
        r.writes
    );
    if !r.backends_without_data.is_empty() {
        let _ = writeln!(
            out,
            "no data in the whole range for: {} (kept at the minimum share)",
            r.backends_without_data.join(", ")
        );
    }
    for f in &ctx.failed_queries {
        let _ = writeln!(out, "failed query (weights kept in its intervals): {f}");
    }
    match &r.estimate {
        Some(e) => {
            let _ = writeln!(
                out,
                "FIRST-ORDER ESTIMATE: traffic-weighted p99 {} ms under the actual weights ({}), \
                 {} ms under l3's ({:+.1} %), over {} intervals",
                ms(e.actual_p99_seconds),
                e.actual_from,
                ms(e.l3_p99_seconds),
                e.change_percent,
                e.intervals
            );
            let _ = writeln!(out, "  ({})", e.label);
        }
        None => {
            let _ = writeln!(out, "no latency observed in the range: no estimate");
        }
    }
    let _ = write!(out, "\n{:<21} {:>5}", "time", "write");
    for b in &r.backends {
        let _ = write!(out, " | {b:>12} {:>9} {:>8}", "p99 ms", "rps");
    }
    out.push('\n');
    for iv in &r.intervals {
        let mark = if iv.write {
            "*"
        } else if iv.query_failed {
            "fail"
        } else {
            ""
        };
        let _ = write!(out, "{:<21} {mark:>5}", rfc3339(iv.time));
        for b in &iv.backends {
            let _ = write!(
                out,
                " | {:>12} {:>9} {:>8.1}",
                b.weight,
                ms(b.latency_seconds),
                b.requests_per_second
            );
        }
        out.push('\n');
    }
    out
}

fn csv(r: &Report) -> String {
    let mut out = String::from(
        "time,backend,weight,computed_weight,write,query_failed,latency_seconds,success_rate,\
         requests_per_second,inflight,observed_latency_seconds,observed_requests_per_second\n",
    );
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    for iv in &r.intervals {
        for (name, b) in r.backends.iter().zip(&iv.backends) {
            let _ = writeln!(
                out,
                "{},{name},{},{},{},{},{},{},{},{},{},{}",
                rfc3339(iv.time),
                b.weight,
                b.computed_weight,
                iv.write,
                iv.query_failed,
                b.latency_seconds,
                b.success_rate,
                b.requests_per_second,
                b.inflight,
                opt(b.observed_latency_seconds),
                opt(b.observed_requests_per_second)
            );
        }
    }
    out
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// An SVG with two panels: each backend's share in effect (writes marked), and its filtered
/// latency.
pub fn svg(ctx: &Context, r: &Report) -> String {
    let (w, h, left, right, top, panel) = (900.0, 470.0, 70.0, 150.0, 40.0, 170.0);
    let n = r.intervals.len().max(2) - 1;
    let x = |k: usize| left + (k as f64 / n as f64) * (w - left - right);
    let total = r.intervals.first().map_or(1000, |iv| {
        iv.backends.iter().map(|b| b.weight).sum::<u32>().max(1)
    });
    let max_latency = r
        .intervals
        .iter()
        .flat_map(|iv| iv.backends.iter().map(|b| b.latency_seconds))
        .fold(0.0_f64, f64::max)
        .max(1e-3);
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<text x="{left}" y="20" font-size="14">l3 replay {} ({} to {}), {} writes</text>
"##,
        xml(&ctx.split),
        xml(&ctx.from),
        xml(&ctx.to),
        r.writes
    );
    for (p, (title, top_label)) in [
        ("share in effect", "100 %".to_owned()),
        ("filtered latency", format!("{} ms", ms(max_latency))),
    ]
    .iter()
    .enumerate()
    {
        let y0 = top + p as f64 * (panel + 50.0);
        let _ = write!(
            out,
            r##"<rect x="{left}" y="{y0}" width="{}" height="{panel}" fill="none" stroke="#444"/>
<text x="{left}" y="{}" font-size="12">{title}</text>
<text x="{}" y="{}" font-size="10" text-anchor="end">{top_label}</text>
"##,
            w - left - right,
            y0 - 5.0,
            left - 4.0,
            y0 + 10.0
        );
        for (i, name) in r.backends.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = r
                .intervals
                .iter()
                .enumerate()
                .map(|(k, iv)| {
                    let v = match p {
                        0 => f64::from(iv.backends[i].weight) / f64::from(total),
                        _ => iv.backends[i].latency_seconds / max_latency,
                    };
                    format!("{:.1},{:.1}", x(k), y0 + panel - v.clamp(0.0, 1.0) * panel)
                })
                .collect();
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"##,
                points.join(" ")
            );
            if p == 0 {
                let _ = writeln!(
                    out,
                    r##"<text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"##,
                    w - right + 8.0,
                    y0 + 14.0 * (i as f64 + 1.0),
                    xml(name)
                );
            }
        }
        if p == 0 {
            for (k, iv) in r.intervals.iter().enumerate().filter(|(_, iv)| iv.write) {
                let _ = writeln!(
                    out,
                    r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#999" stroke-dasharray="2,2"><title>write at {}</title></line>"##,
                    y0 + panel,
                    y0 + panel - 8.0,
                    rfc3339(iv.time),
                    x = x(k)
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
