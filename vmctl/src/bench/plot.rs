//! The SVG plot: one column per subject with its headline latency (container start, VM
//! process start to first workload output), a box (p25..p75), whiskers (p10..p90), the
//! median and every sample as a dot, on a log scale. SVG only: no system fonts needed.

use std::path::Path;

use anyhow::{anyhow, bail};
use plotters::prelude::*;

use super::model::{Report, Series};

/// The headline metric of each level.
fn headline(s: &Series) -> bool {
    matches!(
        (s.level.as_str(), s.metric.as_str()),
        ("container", "start")
            | ("microvm" | "hosted", "boot-to-ready")
            | (_, "to-workload-output")
    )
}

fn colour(level: &str) -> RGBColor {
    match level {
        "container" => RGBColor(31, 119, 180),
        "microvm" => RGBColor(214, 39, 40),
        "hosted" => RGBColor(44, 160, 44),
        _ => RGBColor(148, 103, 189),
    }
}

/// Writes the latency plot of `r` to `path`.
pub fn latency_svg(r: &Report, path: &Path) -> anyhow::Result<()> {
    let cols: Vec<&Series> = r
        .series
        .iter()
        .filter(|s| headline(s) && s.summary.is_some())
        .collect();
    if cols.is_empty() {
        bail!("no latency samples to plot");
    }
    let all = cols.iter().flat_map(|s| s.samples_ms.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = ((lo * 0.6).max(0.01), (hi * 1.6).max(lo * 2.0));
    let n = cols.len();
    let names: Vec<String> = cols.iter().map(|s| s.subject.clone()).collect();
    let width = (160 * n as u32).clamp(640, 1600);
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "vmctl bench {}: latency per isolation level (log scale)",
        r.env.started_at
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo..hi).log_scale())
        .map_err(err)?;
    let fmt = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&fmt)
        .y_desc("ms (container: create+start+exit+delete; VM: process start to guest output)")
        .x_desc(
            "blue: container, red: microVM (vmctl), green: hosted (QEMU), purple: container in VM",
        )
        .draw()
        .map_err(err)?;
    for (i, s) in cols.iter().enumerate() {
        let x = i as f64;
        let Some(m) = s.summary else { continue };
        let c = colour(&s.level);
        let w = 0.28;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - w, m.p25), (x + w, m.p75)],
                c.mix(0.25).filled(),
            )))
            .map_err(err)?;
        let lines = [
            vec![(x - w, m.median), (x + w, m.median)],
            vec![(x, m.p10), (x, m.p25)],
            vec![(x, m.p75), (x, m.p90)],
            vec![(x - w / 2.0, m.p10), (x + w / 2.0, m.p10)],
            vec![(x - w / 2.0, m.p90), (x + w / 2.0, m.p90)],
        ];
        chart
            .draw_series(
                lines
                    .into_iter()
                    .map(|pts| PathElement::new(pts, c.stroke_width(2))),
            )
            .map_err(err)?;
        // Samples as a strip, spread deterministically across the box width.
        let k = s.samples_ms.len().max(1) as f64;
        chart
            .draw_series(s.samples_ms.iter().enumerate().map(|(j, &v)| {
                let dx = if k > 1.0 {
                    (j as f64 / (k - 1.0) - 0.5) * w
                } else {
                    0.0
                };
                Circle::new((x + dx, v), 3, c.filled())
            }))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.1}", m.median),
                (x + w + 0.02, m.median),
                ("sans-serif", 12),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
