//! `--plot`: a hand-written SVG with the p99 of every policy over time (top panel) and, per
//! policy, each backend's share of the requests over time (one panel each).

use std::fmt::Write as _;

use super::engine::{RunResult, TIMELINE_WINDOW_SECS};
use super::scenario::Scenario;

const W: f64 = 900.0;
const PANEL_H: f64 = 180.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 56.0;
const GAP: f64 = 50.0;
const COLOURS: [&str; 9] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Panel {
    y0: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.x_max) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        self.y0 + PANEL_H - (v / self.y_max).clamp(0.0, 1.0) * PANEL_H
    }

    fn frame(&self, out: &mut String, title: &str, unit: &str) {
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{y0}" width="{w}" height="{PANEL_H}" fill="none" stroke="#444"/>
<text x="{LEFT}" y="{ty}" font-size="13">{title}</text>
<text x="{lx}" y="{ly}" font-size="11" text-anchor="end">{ymax:.0}{unit}</text>
<text x="{lx}" y="{lb}" font-size="11" text-anchor="end">0</text>
<text x="{xr}" y="{lb2}" font-size="11" text-anchor="end">{xmax:.0} s</text>
"##,
            y0 = self.y0,
            w = W - LEFT - RIGHT,
            ty = self.y0 - 8.0,
            title = esc(title),
            lx = LEFT - 5.0,
            ly = self.y0 + 10.0,
            ymax = self.y_max,
            lb = self.y0 + PANEL_H,
            xr = W - RIGHT,
            lb2 = self.y0 + PANEL_H + 14.0,
            xmax = self.x_max,
        );
    }

    fn line(&self, out: &mut String, pts: impl Iterator<Item = (f64, f64)>, colour: &str) {
        let mut d = String::new();
        for (t, v) in pts.filter(|p| p.1.is_finite()) {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if d.is_empty() { "M" } else { " L" },
                self.x(t),
                self.y(v)
            );
        }
        let _ = writeln!(
            out,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#
        );
    }
}

fn legend(out: &mut String, y0: f64, labels: &[String]) {
    for (i, l) in labels.iter().enumerate() {
        let y = y0 + 14.0 + i as f64 * 16.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{y}" font-size="11">{l}</text>"#,
            x = W - RIGHT + 10.0,
            ry = y - 9.0,
            c = COLOURS[i % COLOURS.len()],
            tx = W - RIGHT + 25.0,
            l = esc(l),
        );
    }
}

/// The SVG document.
pub fn svg(sc: &Scenario, seed: u64, runs: &[RunResult]) -> String {
    let x_max = runs
        .iter()
        .map(|r| r.timeline.len() as f64 * TIMELINE_WINDOW_SECS)
        .fold(TIMELINE_WINDOW_SECS, f64::max);
    let p99_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|w| w.p99_ms))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let h = TOP + (1 + runs.len()) as f64 * (PANEL_H + GAP) + 10.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="15">l3 simulate · {name} · seed {seed}</text>
"#,
        name = esc(&sc.name)
    );
    let top = Panel {
        y0: TOP,
        x_max,
        y_max: p99_max * 1.05,
    };
    top.frame(
        &mut out,
        &format!("p99 of user requests per {TIMELINE_WINDOW_SECS:.0} s window"),
        " ms",
    );
    for (i, r) in runs.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        top.line(&mut out, r.timeline.iter().map(|w| (w.t, w.p99_ms)), c);
    }
    let names: Vec<String> = runs.iter().map(|r| r.policy.name().to_owned()).collect();
    legend(&mut out, TOP, &names);
    let backends: Vec<String> = sc.backends.iter().map(|b| b.name.clone()).collect();
    for (k, r) in runs.iter().enumerate() {
        let p = Panel {
            y0: TOP + (k + 1) as f64 * (PANEL_H + GAP),
            x_max,
            y_max: 1.0,
        };
        p.frame(
            &mut out,
            &format!("{}: share of requests per backend", r.policy.name()),
            "",
        );
        for b in 0..backends.len() {
            let c = COLOURS[b % COLOURS.len()];
            p.line(
                &mut out,
                r.timeline
                    .iter()
                    .map(|w| (w.t, w.shares.get(b).copied().unwrap_or(f64::NAN))),
                c,
            );
        }
        legend(&mut out, p.y0, &backends);
    }
    out + "</svg>\n"
}
