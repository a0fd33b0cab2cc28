//! `miss.svg`: four panels of grouped bars (relay, nginx `proxy_cache`, Varnish; medians,
//! log scale): cold misses' time to first byte and MB/s by size, the crowd's times, and the
//! Zipf workload's hit ratio, origin MiB and req/s.

use super::{Kind, Line, Report};
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

fn color(k: Kind) -> RGBColor {
    match k {
        Kind::Relay => RGBColor(214, 39, 40),
        Kind::Nginx => RGBColor(44, 160, 44),
        Kind::Varnish => RGBColor(148, 103, 189),
    }
}

/// A panel: its title and its groups (a label and the three servers' medians).
struct Panel {
    title: &'static str,
    groups: Vec<(String, [Option<f64>; 3])>,
}

/// The groups of the table's rows that `keep` picks, labelled by `label`.
fn groups(
    table: &[Line],
    keep: impl Fn(&Line) -> bool,
    label: impl Fn(&Line) -> String,
) -> Vec<(String, [Option<f64>; 3])> {
    table
        .iter()
        .filter(|l| keep(l))
        .map(|l| (label(l), l.stats.map(|s| s.map(|s| s.median))))
        .collect()
}

pub fn write(report: &Report, path: &Path) -> Result<()> {
    let t = &report.table;
    let panels = [
        Panel {
            title: "cold miss: first byte, ms (log)",
            groups: groups(
                t,
                |l| l.section == "cold miss" && l.metric == "first byte, ms",
                |l| l.object.clone(),
            ),
        },
        Panel {
            title: "cold miss: MB/s to the last byte (log)",
            groups: groups(
                t,
                |l| l.section == "cold miss" && l.metric == "MB/s",
                |l| l.object.clone(),
            ),
        },
        Panel {
            title: "crowd: ms per client (log)",
            groups: groups(
                t,
                |l| l.section == "crowd" && l.metric.ends_with("ms"),
                |l| {
                    let m = l.metric.trim_end_matches(", ms");
                    let m = m.replace("first byte", "TTFB").replace("last byte", "TTLB");
                    format!("{} {m}", l.object)
                },
            ),
        },
        Panel {
            title: "Zipf: hit ratio %, origin MiB, req/s (log)",
            groups: groups(
                t,
                |l| {
                    l.section == "zipf"
                        && ["byte hit ratio", "origin MiB", "req/s"].contains(&l.metric)
                },
                |l| l.metric.to_string(),
            )
            .into_iter()
            .map(|(label, v)| match label.as_str() {
                "byte hit ratio" => ("hit ratio %".into(), v.map(|x| x.map(|x| x * 100.0))),
                _ => (label, v),
            })
            .collect(),
        },
    ];
    draw(report, &panels, path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

fn draw(
    report: &Report,
    panels: &[Panel],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = SVGBackend::new(path, (1500, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(70);
    let s = &report.settings;
    title.draw(&Text::new(
        format!(
            "relay bench miss, {}: origin +{} ms per answer, crowd of {}, Zipf {} requests; \
             client and origin on CPU {:?}, servers on CPU {:?}",
            report.started_utc,
            s.origin_delay_ms,
            s.crowd,
            s.zipf_requests,
            s.client_cpus,
            s.server_cpus
        ),
        (20, 14),
        ("sans-serif", 15).into_font(),
    ))?;
    title.draw(&Text::new(
        format!("{}; {}", report.machine.line(), report.varnish),
        (20, 42),
        ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    for (p, (area, panel)) in body
        .split_evenly((2, 2))
        .iter()
        .zip(panels.iter())
        .enumerate()
    {
        let values: Vec<f64> = panel
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .filter(|v| *v > 0.0)
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = if values.is_empty() {
            (0.1, 10.0)
        } else {
            (lo / 3.0, hi * 3.0)
        };
        let n = panel.groups.len().max(1);
        let labels: Vec<String> = panel.groups.iter().map(|(l, _)| l.clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_style(("sans-serif", 11))
            .x_label_formatter(&|x| crate::plot::label_at(&labels, *x))
            .draw()?;
        for k in Kind::ALL {
            let c = color(k);
            let i = k as usize;
            let bars = panel.groups.iter().enumerate().filter_map(|(g, (_, v))| {
                let v = v[i]?;
                let x = g as f64 - 0.36 + 0.24 * i as f64;
                Some(Rectangle::new([(x, lo), (x + 0.22, v.max(lo))], c.filled()))
            });
            let series = chart.draw_series(bars)?;
            if p == 0 {
                series.label(k.label()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
                });
            }
        }
        if p == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 12))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
