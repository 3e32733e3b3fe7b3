//! Charts, rendered on the server as SVG with `plotters`: several series per chart,
//! labelled axes with units and a legend. Pages refetch them to stay live.

use plotters::prelude::*;

use atelier_core::compute::nodes::Sample;
use atelier_protocol::{Gpu, GpuUsage};

/// One line of a chart.
pub struct Series {
    pub label: String,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A line chart. `y_range` fixes the y axis (else it fits the data).
pub fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series], y_range: Option<(f64, f64)>) -> String {
    let mut svg = String::new();
    if let Err(err) = draw(&mut svg, title, x_desc, y_desc, series, None, y_range, false) {
        return format!("<p class=\"muted\">chart unavailable: {err}</p>");
    }
    svg
}

/// A chart of values over a fixed time range (`x_range`, however sparse the data), from
/// zero up, with a marker on every point so that a lone minute still shows.
pub fn time_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series], x_range: (f64, f64)) -> String {
    let top = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    let y_range = (0.0, if top > 0.0 { top * 1.15 } else { 1.0 });
    let mut svg = String::new();
    if let Err(err) = draw(&mut svg, title, x_desc, y_desc, series, Some(x_range), Some(y_range), true) {
        return format!("<p class=\"muted\">chart unavailable: {err}</p>");
    }
    svg
}

#[allow(clippy::too_many_arguments)]
fn draw(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x_range: Option<(f64, f64)>,
    y_range: Option<(f64, f64)>,
    markers: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if (x1 - x0).abs() < 1e-9 {
        x1 = x0 + 1.0;
    }
    if let Some(r) = x_range {
        (x0, x1) = r;
    }
    let (y0, y1) = match y_range {
        Some(r) => r,
        None => {
            let pad = ((y1 - y0).abs() * 0.05).max(1e-6);
            (if y0 >= 0.0 && y0 - pad < 0.0 { 0.0 } else { y0 - pad }, y1 + pad)
        }
    };
    let root = SVGBackend::with_string(svg, (760, 300)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).light_line_style(RGBColor(235, 235, 235)).draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        if markers {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Grouped bars: one group per category (x), one bar per series in each.
pub fn bar_chart(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    y_range: Option<(f64, f64)>,
) -> String {
    let mut svg = String::new();
    if let Err(err) = draw_bars(&mut svg, title, y_desc, categories, series, y_range) {
        return format!("<p class=\"muted\">chart unavailable: {err}</p>");
    }
    svg
}

fn draw_bars(
    svg: &mut String,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    y_range: Option<(f64, f64)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0, f64::max);
    let (y0, y1) = y_range.unwrap_or((0.0, if top > 0.0 { top * 1.1 } else { 1.0 }));
    let root = SVGBackend::with_string(svg, (760, 300)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = categories.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, y0..y1)?;
    let label = |x: &f64| {
        // Each category is centred on its slot.
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 1e-6 {
            categories.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let x = i as f64 + 0.1 + s as f64 * width;
                Rectangle::new([(x, y0), (x + width * 0.95, *v)], color.filled())
            }))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    root.present()?;
    Ok(())
}

/// CPU, memory and GPU utilization of a node over time (x: minutes ago).
pub fn node_utilization(name: &str, gpus: &[Gpu], samples: &[Sample]) -> String {
    let latest = samples.last().map(|s| s.ts).unwrap_or(0);
    let x = |ts: i64| (ts - latest) as f64 / 60.0;
    let mut series =
        vec![Series { label: "CPU %".into(), points: samples.iter().map(|s| (x(s.ts), s.cpu_pct)).collect() }];
    for gpu in gpus {
        let mut util = Vec::new();
        let mut memory = Vec::new();
        for s in samples {
            let usage: Vec<GpuUsage> = serde_json::from_str(&s.gpus).unwrap_or_default();
            if let Some(u) = usage.iter().find(|u| u.index == gpu.index) {
                util.push((x(s.ts), u.utilization_pct));
                if gpu.memory_mb > 0 {
                    memory.push((x(s.ts), u.memory_used_mb as f64 * 100.0 / gpu.memory_mb as f64));
                }
            }
        }
        series.push(Series { label: format!("GPU {} %", gpu.index), points: util });
        series.push(Series { label: format!("GPU {} memory %", gpu.index), points: memory });
    }
    line_chart(&format!("{name}: utilization"), "minutes (0 = latest sample)", "percent", &series, Some((0.0, 100.0)))
}
