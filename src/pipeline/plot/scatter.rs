//! The scatter of 2-D points coloured by class.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    FONT_FAMILY, LEGEND_PX, MAX_LEGEND_CLASSES, PlotError, TICK_PX, TITLE_PX, Ticks, check_size,
    class_color, draw_err, ensure_font, padded_bounds, rgb, rgb_buffer, write_rgb,
};

/// Truncates `s` to at most `max_chars` characters, marking a cut with an ellipsis.
fn truncate_label(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Renders the chart of [`scatter_by_class`] into an RGB buffer (`width * height * 3`
/// bytes, row-major, top row first) instead of a file.
pub fn render_scatter_by_class(
    title: &str,
    points: &[[f32; 2]],
    labels: &[u32],
    class_names: &[String],
    size: (u32, u32),
) -> Result<Vec<u8>, PlotError> {
    check_size(size)?;
    if points.len() != labels.len() {
        return Err(PlotError::InvalidInput(format!(
            "{} points but {} labels",
            points.len(),
            labels.len()
        )));
    }
    if points.is_empty() {
        return Err(PlotError::Empty("scatter plot has no points".into()));
    }
    if let Some(i) = points
        .iter()
        .position(|p| !(p[0].is_finite() && p[1].is_finite()))
    {
        return Err(PlotError::InvalidInput(format!(
            "point {i} is not finite: {:?}",
            points[i]
        )));
    }
    let (x_range, y_range) =
        padded_bounds(points.iter().map(|p| (f64::from(p[0]), f64::from(p[1]))));

    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let show_legend = classes.len() <= MAX_LEGEND_CLASSES;
    let class_name = |c: u32| -> String {
        match class_names.get(c as usize) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("class {c}"),
        }
    };
    ensure_font()?;

    let radius = match points.len() {
        0..=1_000 => 3,
        1_001..=10_000 => 2,
        _ => 1,
    };
    let w = size.0;
    let mut buf = rgb_buffer(size);
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (plot_root, legend_root) = if show_legend {
            // Generous per-character width (the glyph advance at 14 px is about 7.3 px).
            const CHAR_PX: u32 = 8;
            const PADDING: u32 = 44;
            let longest = classes
                .iter()
                .map(|&c| class_name(c).chars().count())
                .max()
                .unwrap_or(0) as u32;
            // At most a third of the width; names that do not fit are shortened.
            let fit_chars = ((w / 3).saturating_sub(PADDING) / CHAR_PX).max(4);
            let max_chars = longest.min(fit_chars);
            let legend_w = (max_chars * CHAR_PX + PADDING).max(70);
            if legend_w <= w / 2 {
                let (left, right) = root.split_horizontally(w - legend_w);
                (left, Some((right, max_chars as usize)))
            } else {
                // Too narrow a picture for a legend.
                (root.clone(), None)
            }
        } else {
            (root.clone(), None)
        };

        let (plot_w, _) = plot_root.dim_in_pixel();
        let x_ticks = Ticks::horizontal(x_range, plot_w.saturating_sub(100));
        let y_ticks = Ticks::vertical(y_range, size.1.saturating_sub(100));
        let (fmt_x, fmt_y) = (|v: &f64| x_ticks.format(*v), |v: &f64| y_ticks.format(*v));
        let mut chart = ChartBuilder::on(&plot_root)
            .caption(title, (FONT_FAMILY, TITLE_PX))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(y_ticks.label_width(y_range) + 16)
            .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_labels(x_ticks.count)
            .y_labels(y_ticks.count)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .label_style((FONT_FAMILY, TICK_PX))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(points.iter().zip(labels).map(|(p, &l)| {
                Circle::new(
                    (f64::from(p[0]), f64::from(p[1])),
                    radius,
                    rgb(class_color(l)).filled(),
                )
            }))
            .map_err(draw_err)?;

        if let Some((legend, max_chars)) = legend_root {
            let (_, lh) = legend.dim_in_pixel();
            let top = 14 + TITLE_PX as i32 + 18;
            let available = (lh as i32 - top - 14).max(0);
            let row = (available / classes.len().max(1) as i32).clamp(1, 22);
            let style = TextStyle::from((FONT_FAMILY, LEGEND_PX).into_font())
                .pos(Pos::new(HPos::Left, VPos::Center));
            for (k, &c) in classes.iter().enumerate() {
                let y = top + row / 2 + k as i32 * row;
                legend
                    .draw(&Circle::new((14, y), 5, rgb(class_color(c)).filled()))
                    .map_err(draw_err)?;
                legend
                    .draw(&Text::new(
                        truncate_label(&class_name(c), max_chars),
                        (26, y),
                        style.clone(),
                    ))
                    .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// Scatter of 2-D points coloured by class (a distinct colour per class, legend with
/// class_names when ≤ 20 classes), atomic as above.
///
/// `labels[i]` is the class of `points[i]`; its colour is [`class_color`]. The legend
/// (drawn to the right of the plot) names class `c` by `class_names[c]`, or `"class c"`
/// when there is no such entry. Errors with [`PlotError::InvalidInput`] on mismatched
/// lengths or a non-finite point and with [`PlotError::Empty`] when there are no points.
pub fn scatter_by_class(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    labels: &[u32],
    class_names: &[String],
    size: (u32, u32),
) -> Result<(), PlotError> {
    let buf = render_scatter_by_class(title, points, labels, class_names, size)?;
    write_rgb(path, &buf, size)
}
