//! Plots for the training pipeline (loss/metric curves, 2-D embedding scatters) and a
//! deterministic PCA projection to two components.
//!
//! Rendering goes through plotters' bitmap backend with its `ab_glyph` text backend; the
//! font (DejaVu Sans Mono, see `assets/README.md`) is embedded in the binary and registered
//! once under the family name `"sans-serif"`, so no system fonts are needed.
//!
//! Every chart is first rendered into an in-memory RGB buffer ([`render_line_chart`],
//! [`render_scatter_by_class`]); the file writers ([`line_chart`], [`scatter_by_class`])
//! encode that buffer into a hidden temporary file in the destination folder and rename it
//! over the destination, so a reader never sees a half-written image.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Errors from plotting and from [`pca_2d`].
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Creating, writing or renaming a file failed.
    #[error("plot file {path}: {source}")]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// plotters failed to draw or encode the picture (its error, formatted).
    #[error("drawing the plot failed: {0}")]
    Draw(String),
    /// There is nothing to plot or project (no series, no finite points, no rows).
    #[error("nothing to plot: {0}")]
    Empty(String),
    /// The input is malformed: mismatched lengths, non-finite values, a bad size or path.
    #[error("invalid plot input: {0}")]
    InvalidInput(String),
}

/// One named line: (x, y) points; NaN y values are skipped.
///
/// Points whose x or y is not finite (NaN or infinite) are skipped and break the line
/// there, so a missing value shows as a gap. A point that has no finite neighbour is
/// drawn as a dot. An empty name leaves the series out of the legend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend label of the series.
    pub name: String,
    /// The (x, y) points, drawn in the order given.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name` with the given points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// Font family under which the embedded font is registered (plotters' default family).
const FONT_FAMILY: &str = "sans-serif";
/// DejaVu Sans Mono, embedded (licence in `assets/`).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

/// Smallest and largest accepted picture side, in pixels.
const MIN_SIDE: u32 = 64;
const MAX_SIDE: u32 = 16_384;
/// Most classes for which [`scatter_by_class`] draws a legend.
const MAX_LEGEND_CLASSES: usize = 20;

const TITLE_PX: u32 = 22;
const AXIS_DESC_PX: u32 = 16;
const TICK_PX: u32 = 13;
const LEGEND_PX: u32 = 14;

/// Registers the embedded font with plotters exactly once.
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Draw(
            "the embedded DejaVu Sans Mono font could not be parsed".into(),
        ))
    }
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Tableau 10: line colours, and the first ten class colours.
const TAB10: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The light halves of Tableau 20: class colours 10..20.
const TAB20_LIGHT: [[u8; 3]; 10] = [
    [174, 199, 232],
    [255, 187, 120],
    [152, 223, 138],
    [255, 152, 150],
    [197, 176, 213],
    [196, 156, 148],
    [247, 182, 210],
    [199, 199, 199],
    [219, 219, 141],
    [158, 218, 229],
];

/// A deterministic colour for index `i` past the fixed palettes: hues spaced by the
/// golden ratio, alternating in lightness.
fn generated_color(i: usize) -> [u8; 3] {
    let hue = (i as f64 * 0.618_033_988_749_895).fract();
    let lightness = if i.is_multiple_of(2) { 0.45 } else { 0.62 };
    hsl_to_rgb(hue, 0.7, lightness)
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> [u8; 3] {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h * 6.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to_u8 = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [to_u8(r), to_u8(g), to_u8(b)]
}

/// RGB colour of series number `index` in [`line_chart`] (Tableau 10, then generated hues).
pub fn series_color(index: usize) -> [u8; 3] {
    match index {
        i if i < TAB10.len() => TAB10[i],
        i => generated_color(i),
    }
}

/// RGB colour of class `label` in [`scatter_by_class`]: Tableau 10 for labels 0..10, the
/// light Tableau 20 shades for 10..20, generated hues beyond. The colour depends only on
/// the label, so the same class has the same colour in every plot.
pub fn class_color(label: u32) -> [u8; 3] {
    let i = label as usize;
    match i {
        i if i < 10 => TAB10[i],
        i if i < 20 => TAB20_LIGHT[i - 10],
        i => generated_color(i),
    }
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn check_size(size: (u32, u32)) -> Result<(), PlotError> {
    let ok = |s: u32| (MIN_SIDE..=MAX_SIDE).contains(&s);
    if ok(size.0) && ok(size.1) {
        Ok(())
    } else {
        Err(PlotError::InvalidInput(format!(
            "picture size {}x{} is outside {MIN_SIDE}..={MAX_SIDE} pixels per side",
            size.0, size.1
        )))
    }
}

fn rgb_buffer(size: (u32, u32)) -> Vec<u8> {
    vec![255; size.0 as usize * size.1 as usize * 3]
}

/// A closed interval with a little margin around `[lo, hi]`; a zero-width interval is
/// widened so that a flat series still plots.
fn padded_range(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        (lo.abs() * 0.05).max(0.5)
    };
    (lo - pad, hi + pad)
}

/// Tick-label formatting of one axis spanning `lo..hi` with at most `count` labels.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    count: usize,
    /// Decimals for fixed notation, or `None` for scientific notation.
    decimals: Option<usize>,
    /// Values closer to 0 than this print as "0".
    zero: f64,
}

impl Ticks {
    /// Ticks of a horizontal axis `pixels` long: as many as fit with a gap between labels.
    fn horizontal(range: (f64, f64), pixels: u32) -> Self {
        let first = Self::with_count(range, (pixels / 50).clamp(2, 10) as usize);
        let spacing = (first.label_width(range) + 24).max(50);
        Self::with_count(range, (pixels / spacing).clamp(2, 10) as usize)
    }

    /// Ticks of a vertical axis `pixels` long.
    fn vertical(range: (f64, f64), pixels: u32) -> Self {
        Self::with_count(range, (pixels / 30).clamp(2, 10) as usize)
    }

    fn with_count((lo, hi): (f64, f64), count: usize) -> Self {
        let step = (hi - lo).abs() / count as f64;
        let magnitude = lo.abs().max(hi.abs());
        let decimals = if !(1e-3..1e6).contains(&magnitude) || step < 1e-9 {
            None
        } else {
            Some((-step.log10()).ceil().clamp(0.0, 11.0) as usize + 1)
        };
        Self {
            count,
            decimals,
            zero: step * 1e-6,
        }
    }

    fn format(&self, v: f64) -> String {
        if v.abs() <= self.zero {
            return "0".into();
        }
        match self.decimals {
            Some(decimals) => {
                let s = format!("{v:.decimals$}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            }
            None => {
                let s = format!("{v:.3e}");
                match s.split_once('e') {
                    Some((mantissa, exp)) if mantissa.contains('.') => {
                        let m = mantissa.trim_end_matches('0').trim_end_matches('.');
                        format!("{m}e{exp}")
                    }
                    _ => s,
                }
            }
        }
    }

    /// Width in pixels of the widest label over `lo..hi` (estimated from the ends and the
    /// middle; the font is monospaced).
    fn label_width(&self, (lo, hi): (f64, f64)) -> u32 {
        let chars = [lo, hi, (lo + hi) / 2.0, lo + (hi - lo) / 3.0]
            .iter()
            .map(|&v| self.format(v).chars().count())
            .max()
            .unwrap_or(1);
        (chars as f64 * f64::from(TICK_PX) * 0.61).ceil() as u32
    }
}

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
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in finite {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    let x_range = padded_range(x_lo, x_hi);
    let y_range = padded_range(y_lo, y_hi);
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
/// data (with a little margin; a flat series must still plot). Written atomically: render
/// into a temp file in the same folder then rename it over `path`.
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
    write_rgb_atomically(path, &buf, size)
}

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
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in points {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    let x_range = padded_range(x_lo, x_hi);
    let y_range = padded_range(y_lo, y_hi);

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
    write_rgb_atomically(path, &buf, size)
}

/// Encodes an RGB buffer into a hidden temporary file next to `path`, then renames it over
/// `path`. The temporary file keeps the extension of `path` (it chooses the format).
fn write_rgb_atomically(path: &Path, rgb: &[u8], size: (u32, u32)) -> Result<(), PlotError> {
    let file_name = path.file_name().ok_or_else(|| {
        PlotError::InvalidInput(format!("{} does not name a file", path.display()))
    })?;
    let ext = path.extension().ok_or_else(|| {
        PlotError::InvalidInput(format!(
            "{} has no extension (the image format follows it; use .png)",
            path.display()
        ))
    })?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp.", std::process::id()));
    tmp_name.push(ext);
    let tmp = path.with_file_name(tmp_name);
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PlotError::Io { path: p, source }
    };

    // Creating the file first reports a missing folder or a permission problem as I/O.
    std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    // The backend retries a failed `present` when dropped, so it is dropped (end of this
    // block) before the temp file is removed.
    let encoded = {
        let mut backend = BitMapBackend::new(&tmp, size);
        backend
            .blit_bitmap((0, 0), size, rgb)
            .and_then(|()| backend.present())
            .map_err(draw_err)
    };
    let renamed = encoded.and_then(|()| std::fs::rename(&tmp, path).map_err(io_err(path)));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// PCA to 2 components: data is n rows × d columns row-major. Centre the columns, then the
/// top-2 eigenvectors of the d×d covariance; project. Returns n points.
///
/// Computed in f64 and deterministic: for d ≤ 256 by a cyclic Jacobi eigen-decomposition
/// of the covariance, for larger d by block (subspace) iteration from a fixed-seed start
/// with Rayleigh–Ritz. Component k is the eigenvector with the k-th largest eigenvalue,
/// signed so that its largest-|.| entry (the first such, on ties) is positive; point i is
/// `(x_i - mean) · v_k`. When d == 1 the second coordinate is 0. Errors on n < 2, d == 0,
/// data.len() != n*d, non-finite values.
pub fn pca_2d(data: &[f32], n: usize, d: usize) -> Result<Vec<[f32; 2]>, PlotError> {
    if n < 2 {
        return Err(PlotError::Empty(format!(
            "PCA needs at least 2 rows, got {n}"
        )));
    }
    if d == 0 {
        return Err(PlotError::InvalidInput(
            "PCA needs at least 1 column".into(),
        ));
    }
    if n.checked_mul(d) != Some(data.len()) {
        return Err(PlotError::InvalidInput(format!(
            "PCA data has {} values, expected {n} rows x {d} columns",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(PlotError::InvalidInput(format!(
            "PCA data value {} (row {}, column {}) is not finite",
            data[i],
            i / d,
            i % d
        )));
    }

    let mut mean = vec![0.0f64; d];
    for row in data.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }

    // Covariance (upper triangle accumulated, then mirrored), divided by n - 1.
    let mut cov = vec![0.0f64; d * d];
    let mut centred = vec![0.0f64; d];
    for row in data.chunks_exact(d) {
        for ((c, &v), m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = f64::from(v) - m;
        }
        for i in 0..d {
            let ci = centred[i];
            if ci == 0.0 {
                continue;
            }
            let cov_row = &mut cov[i * d..(i + 1) * d];
            for (acc, &cj) in cov_row[i..].iter_mut().zip(&centred[i..]) {
                *acc += ci * cj;
            }
        }
    }
    let scale = 1.0 / (n - 1) as f64;
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] * scale;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }

    let k = d.min(2);
    let mut components = if d <= JACOBI_MAX_DIM {
        top_eigenvectors_jacobi(&cov, d, k)
    } else {
        top_eigenvectors_subspace(&cov, d, k)
    };
    for v in &mut components {
        apply_sign_convention(v);
    }

    let mut out = Vec::with_capacity(n);
    for row in data.chunks_exact(d) {
        let mut p = [0.0f32; 2];
        for (slot, v) in p.iter_mut().zip(&components) {
            let dot: f64 = row
                .iter()
                .zip(&mean)
                .zip(v)
                .map(|((&x, m), c)| (f64::from(x) - m) * c)
                .sum();
            *slot = dot as f32;
        }
        out.push(p);
    }
    Ok(out)
}

/// Largest dimension for which [`pca_2d`] uses the full Jacobi eigen-decomposition.
const JACOBI_MAX_DIM: usize = 256;

/// Flips `v` so that its largest-magnitude entry (the first, on ties) is positive.
fn apply_sign_convention(v: &mut [f64]) {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if x.abs() > v[best].abs() {
            best = i;
        }
    }
    if v[best] < 0.0 {
        for x in v.iter_mut() {
            *x = -*x;
        }
    }
}

/// Eigen-decomposition of the symmetric `d`×`d` row-major matrix `a` by cyclic Jacobi
/// rotations. Returns (eigenvalues, eigenvectors as columns of a row-major d×d matrix).
fn jacobi_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    if total == 0.0 {
        return ((0..d).map(|i| a[i * d + i]).collect(), v);
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| ((i + 1)..d).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * total {
            break;
        }
        for p in 0..d {
            for q in (p + 1)..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- A J (columns p, q), then A <- Jᵀ A (rows p, q), V <- V J.
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                a[p * d + q] = 0.0;
                a[q * d + p] = 0.0;
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// Indices of `values` sorted by decreasing value (stable: ties keep index order).
fn descending_order(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]));
    order
}

/// The eigenvectors of the `k` largest eigenvalues of the symmetric matrix `a` (d×d).
fn top_eigenvectors_jacobi(a: &[f64], d: usize, k: usize) -> Vec<Vec<f64>> {
    let (values, vectors) = jacobi_eigen(a, d);
    descending_order(&values)
        .into_iter()
        .take(k)
        .map(|col| (0..d).map(|row| vectors[row * d + col]).collect())
        .collect()
}

/// Iteration cap of the subspace iteration (it stops earlier once the top Ritz pairs'
/// residuals are below 1e-9 of the largest eigenvalue).
const MAX_SUBSPACE_ITERATIONS: usize = 500;

/// Deterministic pseudo-random numbers in [-1, 1) (SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Orthonormalizes the `p` columns (each a `Vec` of length d) in place by modified
/// Gram–Schmidt, twice for accuracy; a column that collapses is replaced by a fresh
/// pseudo-random one and orthonormalized again.
fn orthonormalize(cols: &mut [Vec<f64>], rng: &mut SplitMix64) {
    for j in 0..cols.len() {
        for _attempt in 0..8 {
            let before = norm(&cols[j]);
            for _pass in 0..2 {
                for i in 0..j {
                    let proj = dot(&cols[i], &cols[j]);
                    let (head, tail) = cols.split_at_mut(j);
                    for (x, y) in tail[0].iter_mut().zip(&head[i]) {
                        *x -= proj * y;
                    }
                }
            }
            let after = norm(&cols[j]);
            if after > 1e-10 * before.max(f64::MIN_POSITIVE) && after > 0.0 {
                for x in &mut cols[j] {
                    *x /= after;
                }
                break;
            }
            for x in &mut cols[j] {
                *x = rng.next_f64();
            }
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn mat_vec(a: &[f64], d: usize, x: &[f64]) -> Vec<f64> {
    a.chunks_exact(d).map(|row| dot(row, x)).collect()
}

/// The eigenvectors of the `k` largest eigenvalues of the symmetric positive
/// semi-definite matrix `a` (d×d) by block subspace iteration with Rayleigh–Ritz,
/// from a fixed-seed start.
fn top_eigenvectors_subspace(a: &[f64], d: usize, k: usize) -> Vec<Vec<f64>> {
    let p = (k + 8).min(d);
    let mut rng = SplitMix64(0x05EE_D0F0_2D2D);
    let mut q: Vec<Vec<f64>> = (0..p)
        .map(|_| (0..d).map(|_| rng.next_f64()).collect())
        .collect();
    orthonormalize(&mut q, &mut rng);
    let mut ritz: Vec<Vec<f64>> = q[..k].to_vec();
    for _iter in 0..MAX_SUBSPACE_ITERATIONS {
        let z: Vec<Vec<f64>> = q.iter().map(|col| mat_vec(a, d, col)).collect();
        // Rayleigh–Ritz on span(q): H = Qᵀ A Q (p×p), eigenvectors W.
        let mut h = vec![0.0f64; p * p];
        for i in 0..p {
            for j in i..p {
                let v = 0.5 * (dot(&q[i], &z[j]) + dot(&q[j], &z[i]));
                h[i * p + j] = v;
                h[j * p + i] = v;
            }
        }
        let (theta, w) = jacobi_eigen(&h, p);
        let order = descending_order(&theta);
        let combine = |basis: &[Vec<f64>], col: usize| -> Vec<f64> {
            let mut out = vec![0.0f64; d];
            for (i, b) in basis.iter().enumerate() {
                let coef = w[i * p + col];
                for (o, x) in out.iter_mut().zip(b) {
                    *o += coef * x;
                }
            }
            out
        };
        ritz = order[..k].iter().map(|&col| combine(&q, col)).collect();
        let scale = theta[order[0]].abs().max(f64::MIN_POSITIVE);
        let converged = order[..k].iter().zip(&ritz).all(|(&col, v)| {
            let av = combine(&z, col);
            let residual: f64 = av
                .iter()
                .zip(v)
                .map(|(x, y)| (x - theta[col] * y).powi(2))
                .sum::<f64>()
                .sqrt();
            residual <= 1e-9 * scale
        });
        if converged || scale <= f64::MIN_POSITIVE {
            break;
        }
        // Next basis: A Q rotated to the Ritz order, orthonormalized.
        q = order.iter().map(|&col| combine(&z, col)).collect();
        orthonormalize(&mut q, &mut rng);
    }
    for v in &mut ritz {
        let nv = norm(v);
        if nv > 0.0 {
            for x in v.iter_mut() {
                *x /= nv;
            }
        }
    }
    ritz
}
