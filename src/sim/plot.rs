//! `--plot`: the p99 of every policy over time (top panel, log latency axis) and, per policy, each
//! backend's share of the attempts over time (one panel each), as SVG; PNG is that SVG rendered
//! by resvg.
//!
//! Readability rules: every policy has one colour everywhere (its line in the top panel, its
//! panel title and lines below); backends are told apart by line style, with a legend per panel;
//! both axes carry labelled ticks and units, time in seconds or minutes; the title names the
//! scenario, the seed and the observation settings.

use std::fmt::Write as _;

use super::engine::{RunResult, TIMELINE_WINDOW_SECS};
use super::policy::PolicyKind;
use super::scenario::Scenario;

const W: f64 = 1000.0;
const PANEL_H: f64 = 190.0;
const SHARE_H: f64 = 120.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 78.0;
const GAP: f64 = 62.0;
/// Fonts tried for the text, in order (the PNG renderer needs one installed).
const FONTS: [&str; 4] = ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"];

/// A policy's colour, the same in every plot (Tableau 10 hues, distinct in print).
pub fn colour(p: PolicyKind) -> &'static str {
    match p {
        PolicyKind::RoundRobin => "#7f7f7f",
        PolicyKind::C3 => "#ff7f0e",
        PolicyKind::C3P99 => "#8c564b",
        PolicyKind::P2c => "#9467bd",
        PolicyKind::L3 => "#1f77b4",
        PolicyKind::L3P2c => "#17becf",
        PolicyKind::L3Peak => "#2ca02c",
    }
}

/// Dash patterns telling backends apart (cycled beyond six; the legend names each).
const DASHES: [&str; 6] = ["", "7,4", "2,3", "10,3,2,3", "1,5", "14,5"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Time axis unit: seconds up to 20 minutes, minutes beyond.
fn time_unit(x_max: f64) -> (f64, &'static str) {
    if x_max > 1200.0 {
        (60.0, "min")
    } else {
        (1.0, "s")
    }
}

/// A step of 1, 2 or 5 × 10^k giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    mag * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// Log ticks at 1, 2, 5 × 10^k inside `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut k = lo.log10().floor() as i32;
    while 10f64.powi(k) <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if v >= lo * 0.9999 && v <= hi * 1.0001 {
                out.push(v);
            }
        }
        k += 1;
    }
    out
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v} ms")
    }
}

struct Panel {
    y0: f64,
    h: f64,
    x_max: f64,
    /// `Some((lo, hi))`: log axis over that range; `None`: linear 0..1.
    log: Option<(f64, f64)>,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.x_max).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let f = match self.log {
            Some((lo, hi)) => (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()),
            None => v,
        };
        self.y0 + self.h - f.clamp(0.0, 1.0) * self.h
    }

    fn frame(&self, out: &mut String, title: &str, title_colour: &str, y_label: &str) {
        let w = W - LEFT - RIGHT;
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{ty}" font-size="14" font-weight="bold" fill="{title_colour}">{title}</text>"##,
            ty = self.y0 - 10.0,
            title = esc(title),
        );
        // Y ticks and grid.
        let ticks: Vec<(f64, String)> = match self.log {
            Some((lo, hi)) => log_ticks(lo, hi)
                .into_iter()
                .map(|v| (v, fmt_ms(v)))
                .collect(),
            None => [0.0, 0.25, 0.5, 0.75, 1.0]
                .into_iter()
                .map(|v| (v, format!("{:.0} %", v * 100.0)))
                .collect(),
        };
        for (v, label) in ticks {
            let y = self.y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{lx}" y="{ly:.1}" font-size="11" text-anchor="end">{label}</text>"##,
                x2 = LEFT + w,
                lx = LEFT - 6.0,
                ly = y + 4.0,
            );
        }
        // X ticks.
        let (div, unit) = time_unit(self.x_max);
        let step = nice_step(self.x_max / div, 8.0);
        let mut k = 0.0;
        while k * step <= self.x_max / div + 1e-9 {
            let t = k * step * div;
            let x = self.x(t);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{yb}" x2="{x:.1}" y2="{yt}" stroke="#444"/><text x="{x:.1}" y="{yl}" font-size="11" text-anchor="middle">{v}</text>"##,
                yb = self.y0 + self.h,
                yt = self.y0 + self.h + 4.0,
                yl = self.y0 + self.h + 16.0,
                v = k * step,
            );
            k += 1.0;
        }
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>
<text x="{cx}" y="{xl}" font-size="11" text-anchor="middle">time since the start of the measurement ({unit})</text>
<text transform="translate({yx},{cy}) rotate(-90)" font-size="11" text-anchor="middle">{y_label}</text>"##,
            y0 = self.y0,
            h = self.h,
            cx = LEFT + w / 2.0,
            xl = self.y0 + self.h + 31.0,
            yx = LEFT - 58.0,
            cy = self.y0 + self.h / 2.0,
            y_label = esc(y_label),
        );
    }

    fn line(
        &self,
        out: &mut String,
        pts: impl Iterator<Item = (f64, f64)>,
        colour: &str,
        dash: &str,
        width: f64,
    ) {
        // A gap (NaN: no requests in that window) breaks the line.
        let mut d = String::new();
        let mut pen_up = true;
        for (t, v) in pts {
            if !v.is_finite() {
                pen_up = true;
                continue;
            }
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if pen_up { " M" } else { " L" },
                self.x(t + TIMELINE_WINDOW_SECS / 2.0),
                self.y(v)
            );
            pen_up = false;
        }
        if d.is_empty() {
            return;
        }
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            out,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width}"{dash} stroke-linejoin="round"/>"#
        );
    }
}

/// One legend entry per label: a short line in the given colour and dash.
fn legend(out: &mut String, y0: f64, entries: &[(String, &str, &str)]) {
    for (i, (label, colour, dash)) in entries.iter().enumerate() {
        let y = y0 + 12.0 + i as f64 * 17.0;
        let x = W - RIGHT + 14.0;
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="2.2"{dash}/><text x="{tx}" y="{ty}" font-size="11">{l}</text>"#,
            x2 = x + 30.0,
            tx = x + 36.0,
            ty = y + 4.0,
            l = esc(label),
        );
    }
}

/// The SVG document.
pub fn svg(sc: &Scenario, seed: u64, runs: &[RunResult]) -> String {
    let x_max = runs
        .iter()
        .map(|r| r.timeline.len() as f64 * TIMELINE_WINDOW_SECS)
        .fold(TIMELINE_WINDOW_SECS, f64::max);
    let finite = || {
        runs.iter()
            .flat_map(|r| r.timeline.iter().map(|w| w.p99_ms))
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let hi = finite().fold(1.0, f64::max);
    let lo = finite().fold(hi, f64::min);
    // Whole 1-2-5 steps around the data, at least one decade.
    let lo = log_ticks(lo / 10.0, lo)
        .last()
        .copied()
        .unwrap_or(lo)
        .min(hi / 10.0);
    let hi = log_ticks(hi, hi * 5.0).first().copied().unwrap_or(hi);
    let h = TOP + PANEL_H + GAP + runs.len() as f64 * (SHARE_H + GAP) + 10.0;
    let fonts = FONTS.join(", ");
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="{fonts}, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="17" font-weight="bold">l3 simulate · scenario {name} · seed {seed}</text>
<text x="{LEFT}" y="44" font-size="12" fill="#444">scrape every {si} s · query window {qw} s · query latency {ql} s · propagation delay {pd} s · control every {ci} s · {n} client proxies</text>
"##,
        name = esc(&sc.name),
        si = sc.scrape_interval,
        qw = sc.window_secs(),
        ql = sc.query_latency,
        pd = sc.propagation_delay,
        ci = sc.control_interval,
        n = sc.clients.iter().map(|c| c.proxies).sum::<u32>(),
    );
    let top = Panel {
        y0: TOP,
        h: PANEL_H,
        x_max,
        log: Some((lo, hi)),
    };
    top.frame(
        &mut out,
        &format!(
            "p99 latency of the user requests started in each {TIMELINE_WINDOW_SECS:.0} s window"
        ),
        "#000",
        "p99 latency (log scale)",
    );
    for r in runs {
        top.line(
            &mut out,
            r.timeline.iter().map(|w| (w.t, w.p99_ms)),
            colour(r.policy),
            "",
            1.6,
        );
    }
    let entries: Vec<(String, &str, &str)> = runs
        .iter()
        .map(|r| (r.policy.name().to_owned(), colour(r.policy), ""))
        .collect();
    legend(&mut out, TOP, &entries);
    for (k, r) in runs.iter().enumerate() {
        let c = colour(r.policy);
        let p = Panel {
            y0: TOP + PANEL_H + GAP + k as f64 * (SHARE_H + GAP),
            h: SHARE_H,
            x_max,
            log: None,
        };
        p.frame(
            &mut out,
            &format!(
                "{}: share of attempts per backend, per {TIMELINE_WINDOW_SECS:.0} s window",
                r.policy.name()
            ),
            c,
            "share",
        );
        let mut entries = Vec::new();
        for (b, backend) in sc.backends.iter().enumerate() {
            let dash = DASHES[b % DASHES.len()];
            p.line(
                &mut out,
                r.timeline
                    .iter()
                    .map(|w| (w.t, w.shares.get(b).copied().unwrap_or(f64::NAN))),
                c,
                dash,
                1.5,
            );
            entries.push((backend.name.clone(), c, dash));
        }
        legend(&mut out, p.y0, &entries);
    }
    out + "</svg>\n"
}

/// Renders an SVG from [`svg`] to PNG (1.5 × scale) with resvg, using the system's fonts.
pub fn png(svg: &str) -> Result<Vec<u8>, String> {
    let mut opt = resvg::usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    let family = FONTS
        .iter()
        .find(|f| {
            db.faces()
                .any(|face| face.families.iter().any(|(n, _)| n == *f))
        })
        .map(|f| (*f).to_owned())
        .or_else(|| {
            db.faces()
                .next()
                .and_then(|face| face.families.first().map(|(n, _)| n.clone()))
        })
        .ok_or_else(|| {
            "no system font found to draw the text with (install e.g. the Debian package \
             fonts-dejavu-core), or write an .svg instead"
                .to_owned()
        })?;
    db.set_sans_serif_family(family);
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| e.to_string())?;
    let scale = 1.5;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or("empty plot")?;
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("plot too large to render")?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_one_two_five() {
        assert_eq!(
            log_ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(nice_step(600.0, 8.0), 100.0);
        assert_eq!(nice_step(20.0, 8.0), 5.0);
        assert_eq!(time_unit(600.0).1, "s");
        assert_eq!(time_unit(86_400.0).1, "min");
    }

    #[test]
    fn every_policy_has_its_own_colour() {
        let mut c: Vec<&str> = PolicyKind::ALL.iter().map(|&p| colour(p)).collect();
        c.sort_unstable();
        c.dedup();
        assert_eq!(c.len(), PolicyKind::ALL.len());
    }
}
