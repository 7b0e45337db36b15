//! `--plot FILE.svg`: throughput and latency percentiles over time, two panels in one
//! SVG drawn with `plotters`' SVG backend.
//!
//! Owns: the chart's layout. Never: reads anything but the report it is handed.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

/// Chart size, pixels.
const SIZE: (u32, u32) = (960, 720);

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {why}")]
pub struct PlotError {
    path: String,
    why: String,
}

/// Draws `report`'s timeline into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), PlotError> {
    let fail = |why: String| PlotError {
        path: path.display().to_string(),
        why,
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    throughput(report, &top).map_err(fail)?;
    latency(report, &bottom).map_err(fail)?;
    root.present().map_err(|e| fail(e.to_string()))
}

fn t_max(report: &Report) -> f64 {
    report.timeline.iter().map(|p| p.t_s).fold(0.1, f64::max)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn throughput(report: &Report, area: &Area<'_>) -> Result<(), String> {
    let y_max = report
        .timeline
        .iter()
        .map(|p| p.msgs_per_s)
        .fold(1.0, f64::max)
        * 1.1;
    let caption = format!(
        "{} ({}, {} B): throughput",
        report.scenario, report.target, report.message_bytes
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max(report), 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("msgs/s")
        .draw()
        .map_err(|e| e.to_string())?;
    let points = report.timeline.iter().map(|p| (p.t_s, p.msgs_per_s));
    chart
        .draw_series(LineSeries::new(points, &BLUE))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn latency(report: &Report, area: &Area<'_>) -> Result<(), String> {
    let y_max = report
        .timeline
        .iter()
        .filter_map(|p| p.max_us)
        .fold(10.0, f64::max)
        * 2.0;
    let kind = report.latency_kind.unwrap_or("no latency in this scenario");
    let mut chart = ChartBuilder::on(area)
        .caption(format!("latency µs ({kind})"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max(report), (0.1..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("µs")
        .draw()
        .map_err(|e| e.to_string())?;
    type Pick = fn(&super::record::Point) -> Option<f64>;
    let series: [(&str, Pick, RGBColor); 3] = [
        ("p50", |p| p.p50_us, GREEN),
        ("p99", |p| p.p99_us, RGBColor(230, 140, 0)),
        ("max", |p| p.max_us, RED),
    ];
    for (name, pick, color) in series {
        let points: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .filter_map(|p| pick(p).map(|v| (p.t_s, v.max(0.1))))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())
}
