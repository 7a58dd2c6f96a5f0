//! The line chart.

use std::path::Path;

use plotters::prelude::*;

use super::{
    AXIS_DESC_PX, FONT_FAMILY, LEGEND_PX, PlotError, Series, TICK_PX, TITLE_PX, Ticks, check_size,
    draw_err, ensure_font, padded_bounds, rgb, rgb_buffer, series_color, write_rgb,
};

/// Splits a series into runs of consecutive finite points.
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// Picks the inner corner whose legend-sized box holds the fewest data samples.
fn legend_corner(
    runs: &[Vec<Vec<(f64, f64)>>],
    x_range: (f64, f64),
    y_range: (f64, f64),
    box_frac: (f64, f64),
) -> SeriesLabelPosition {
    let norm = |(x, y): (f64, f64)| {
        (
            (x - x_range.0) / (x_range.1 - x_range.0),
            (y - y_range.0) / (y_range.1 - y_range.0),
        )
    };
    // (position, x interval, y interval) in normalized data coordinates (y up).
    let (bw, bh) = (box_frac.0.min(1.0), box_frac.1.min(1.0));
    let corners = [
        (
            SeriesLabelPosition::UpperRight,
            (1.0 - bw, 1.0),
            (1.0 - bh, 1.0),
        ),
        (SeriesLabelPosition::UpperLeft, (0.0, bw), (1.0 - bh, 1.0)),
        (SeriesLabelPosition::LowerRight, (1.0 - bw, 1.0), (0.0, bh)),
        (SeriesLabelPosition::LowerLeft, (0.0, bw), (0.0, bh)),
    ];
    let mut counts = [0usize; 4];
    let mut count = |p: (f64, f64)| {
        for (k, (_, xs, ys)) in corners.iter().enumerate() {
            if p.0 >= xs.0 && p.0 <= xs.1 && p.1 >= ys.0 && p.1 <= ys.1 {
                counts[k] += 1;
            }
        }
    };
    for run in runs.iter().flatten() {
        if let [only] = run.as_slice() {
            count(norm(*only));
        }
        for w in run.windows(2) {
            let (a, b) = (norm(w[0]), norm(w[1]));
            const STEPS: usize = 16;
            for s in 0..=STEPS {
                let t = s as f64 / STEPS as f64;
                count((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
            }
        }
    }
    let best = (0..4).min_by_key(|&k| counts[k]).unwrap_or(0);
    corners[best].0.clone()
}

/// Renders the chart of [`line_chart`] into an RGB buffer (`width * height * 3` bytes,
/// row-major, top row first) instead of a file.
pub fn render_line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    size: (u32, u32),
) -> Result<Vec<u8>, PlotError> {
    check_size(size)?;
    if series.is_empty() {
        return Err(PlotError::Empty("line chart has no series".into()));
    }
    let runs: Vec<Vec<Vec<(f64, f64)>>> = series.iter().map(|s| finite_runs(&s.points)).collect();
    let mut finite = runs.iter().flatten().flatten().peekable();
    if finite.peek().is_none() {
        return Err(PlotError::Empty(format!(
            "none of the {} series has a finite point",
            series.len()
        )));
    }
    let (x_range, y_range) = padded_bounds(finite.copied());
    ensure_font()?;

    let mut buf = rgb_buffer(size);
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let x_ticks = Ticks::horizontal(x_range, size.0.saturating_sub(140));
        let y_ticks = Ticks::vertical(y_range, size.1.saturating_sub(130));
        let (fmt_x, fmt_y) = (|v: &f64| x_ticks.format(*v), |v: &f64| y_ticks.format(*v));
        let y_area = y_ticks.label_width(y_range) + AXIS_DESC_PX + 24;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT_FAMILY, TITLE_PX))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(y_area)
            .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(x_ticks.count)
            .y_labels(y_ticks.count)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .label_style((FONT_FAMILY, TICK_PX))
            .axis_desc_style((FONT_FAMILY, AXIS_DESC_PX))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(draw_err)?;

        let mut labelled = 0usize;
        let mut longest_name = 0usize;
        for (i, (s, runs)) in series.iter().zip(&runs).enumerate() {
            let color = rgb(series_color(i));
            let mut first = true;
            for run in runs {
                let anno = if let [only] = run.as_slice() {
                    chart.draw_series(std::iter::once(Circle::new(*only, 3, color.filled())))
                } else {
                    chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))
                }
                .map_err(draw_err)?;
                if first && !s.name.is_empty() {
                    anno.label(s.name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                    });
                    labelled += 1;
                    longest_name = longest_name.max(s.name.chars().count());
                }
                first = false;
            }
        }
        if labelled > 0 {
            let (pw, ph) = chart.plotting_area().dim_in_pixel();
            let box_w = (longest_name as f64 * 8.5 + 50.0) / pw.max(1) as f64;
            let box_h = (labelled as f64 * 20.0 + 16.0) / ph.max(1) as f64;
            let position = legend_corner(&runs, x_range, y_range, (box_w, box_h));
            chart
                .configure_series_labels()
                .position(position)
                .margin(10)
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(160, 160, 160))
                .label_font((FONT_FAMILY, LEGEND_PX))
                .draw()
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// Line chart: title, x label, y label, several series with a legend, axis ranges from the
/// data (with a little margin; a flat series must still plot). Written atomically: encoded in
/// memory, then written to a temporary file in the same folder that is renamed over `path`.
///
/// The image format follows the extension of `path` (`.png` is intended). Errors with
/// [`PlotError::Empty`] when there are no series or no finite point in any of them, and
/// with [`PlotError::InvalidInput`] for a size outside 64..=16384 pixels per side.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    size: (u32, u32),
) -> Result<(), PlotError> {
    let buf = render_line_chart(title, x_label, y_label, series, size)?;
    write_rgb(path, &buf, size)
}
