//! The SVG plot: requests/s, GB/s and p99 latency per object size, one line per server and
//! connection count, medians with min-max error bars (plotters, SVG backend only).

use crate::report::{Report, Row, Server};
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

type Pick = fn(&crate::report::Summary) -> crate::stats::Stat;

const PANELS: [(&str, Pick); 3] = [
    ("requests/s (log)", |s| s.rps),
    ("GB/s of bodies (log)", |s| s.gbps),
    ("p99 latency, ms (log)", |s| s.p99_ms),
];

fn color(s: Server) -> RGBColor {
    match s {
        Server::Relay => RGBColor(214, 39, 40),
        Server::Nginx => RGBColor(31, 119, 180),
        Server::NginxProxyCache => RGBColor(44, 160, 44),
        Server::Varnish => RGBColor(148, 103, 189),
        Server::RelayBefore => RGBColor(127, 127, 127),
    }
}

/// One line of the plot: a server at one connection count, a point per object size.
struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    /// (x, median, min, max) per panel.
    points: Vec<Vec<(f64, f64, f64, f64)>>,
}

pub fn write(report: &Report, path: &Path) -> Result<()> {
    let s = &report.settings;
    let servers = Server::measured(s.relay_before_bin.is_some());
    let n_series = s.connections.len() * servers.len();
    let mut series = Vec::new();
    for (ci, &conns) in s.connections.iter().enumerate() {
        for (si, &server) in servers.iter().enumerate() {
            // Spread the series a little along x so their error bars do not overlap.
            let k = ci * servers.len() + si;
            let dx = (k as f64 - (n_series as f64 - 1.0) / 2.0) * 0.05;
            let rows: Vec<(usize, &Row)> = s
                .objects
                .iter()
                .enumerate()
                .filter_map(|(i, &size)| {
                    report
                        .rows
                        .iter()
                        .find(|r| r.server == server && r.size == size && r.connections == conns)
                        .filter(|r| r.summary.is_some())
                        .map(|r| (i, r))
                })
                .collect();
            let points = PANELS
                .iter()
                .map(|(_, pick)| {
                    rows.iter()
                        .filter_map(|(i, r)| {
                            let st = pick(r.summary.as_ref()?);
                            Some((*i as f64 + dx, st.median, st.min, st.max))
                        })
                        .collect()
                })
                .collect();
            series.push(Series {
                label: format!("{} c={conns}", server.label()),
                color: color(server),
                dashed: ci % 2 == 1,
                points,
            });
        }
    }
    draw(report, &series, path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

fn draw(
    report: &Report,
    series: &[Series],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let labels: Vec<String> = report
        .settings
        .objects
        .iter()
        .map(|&s| crate::report::size_label(s))
        .collect();
    let root = SVGBackend::new(path, (1500, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(70);
    let s = &report.settings;
    title.draw(&Text::new(
        format!(
            "relay bench serve, {}: {} run(s) x {} s, wrk pinned to CPU {:?}, servers on CPU {:?} ({} worker each)",
            report.started_utc, s.runs, s.duration_s, s.client_cpus, s.server_cpus, s.workers
        ),
        (20, 14),
        ("sans-serif", 18).into_font(),
    ))?;
    title.draw(&Text::new(
        report.machine.line(),
        (20, 42),
        ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    let areas = body.split_evenly((1, PANELS.len()));
    let last = labels.len().max(1) as f64 - 0.5;
    for (p, (area, (name, _))) in areas.iter().zip(PANELS.iter()).enumerate() {
        let all: Vec<(f64, f64, f64, f64)> = series
            .iter()
            .flat_map(|s| s.points[p].iter().copied())
            .collect();
        let lo = all.iter().map(|v| v.2).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(|v| v.3).fold(0.0, f64::max);
        let (lo, hi) = if all.is_empty() || lo <= 0.0 {
            (0.1, 10.0)
        } else {
            (lo / 1.6, hi * 1.6)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(*name, ("sans-serif", 17))
            .margin(14)
            .x_label_area_size(38)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..last, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(0)
            .y_labels(12)
            .x_labels(labels.len().max(1))
            .x_label_formatter(&|x| label_at(&labels, *x))
            .x_desc("object size")
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        for s in series {
            let pts: Vec<(f64, f64)> = s.points[p].iter().map(|v| (v.0, v.1)).collect();
            if pts.is_empty() {
                continue;
            }
            let color = s.color;
            let line = ShapeStyle::from(&color).stroke_width(2);
            let dashed = s.dashed;
            // Lines join neighbouring sizes only: an invalid row leaves a gap.
            let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
            for &pt in &pts {
                match segments.last_mut() {
                    Some(seg) if seg.last().is_some_and(|l| (pt.0 - l.0 - 1.0).abs() < 0.5) => {
                        seg.push(pt)
                    }
                    _ => segments.push(vec![pt]),
                }
            }
            for seg in segments {
                if dashed {
                    chart.draw_series(DashedLineSeries::new(seg, 7, 4, line))?;
                } else {
                    chart.draw_series(LineSeries::new(seg, line))?;
                }
            }
            // Markers carry the legend entry: filled circles for the first connection count,
            // triangles (and dashed lines) for the second.
            // The legend shows each series' marker on a short line.
            let legend_line = move |x: i32, y: i32| {
                EmptyElement::at((x, y))
                    + PathElement::new(
                        vec![(0, 0), (22, 0)],
                        ShapeStyle::from(&color).stroke_width(2),
                    )
            };
            if dashed {
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| TriangleMarker::new(p, 5, ShapeStyle::from(&color).filled())),
                    )?
                    .label(&s.label)
                    .legend(move |(x, y)| {
                        legend_line(x, y)
                            + TriangleMarker::new((11, 0), 5, ShapeStyle::from(&color).filled())
                    });
            } else {
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| Circle::new(p, 4, ShapeStyle::from(&color).filled())),
                    )?
                    .label(&s.label)
                    .legend(move |(x, y)| {
                        legend_line(x, y)
                            + Circle::new((11, 0), 4, ShapeStyle::from(&color).filled())
                    });
            }
            // Min-max ranges: a vertical bar with short caps.
            let thin = ShapeStyle::from(&color.mix(0.7)).stroke_width(1);
            for &(x, _, min, max) in &s.points[p] {
                chart.draw_series([
                    PathElement::new(vec![(x, min), (x, max)], thin),
                    PathElement::new(vec![(x - 0.02, min), (x + 0.02, min)], thin),
                    PathElement::new(vec![(x - 0.02, max), (x + 0.02, max)], thin),
                ])?;
            }
        }
        if p == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 12))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// The label of a category axis at `x`: `labels[x]` on a whole `x`, nothing between.
pub(crate) fn label_at(labels: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 0.01 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// Axis numbers: 95k, 1.2M, 0.5.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
