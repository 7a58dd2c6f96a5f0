//! Plots for the training pipeline (loss/metric curves, 2-D embedding scatters) and a
//! deterministic PCA projection to two components ([`pca_2d`]).
//!
//! Rendering goes through plotters' bitmap backend with its `ab_glyph` text backend; the
//! font (DejaVu Sans Mono, see `assets/README.md`) is embedded in the binary and registered
//! once under the family name `"sans-serif"`, so no system fonts are needed.
//!
//! Every chart is first rendered into an in-memory RGB buffer ([`render_line_chart`],
//! [`render_scatter_by_class`]); the file writers ([`line_chart`], [`scatter_by_class`])
//! encode that buffer in memory and write it with the pipeline's one atomic writer (a temporary
//! file in the destination folder, flushed to disk, renamed over the destination), so a reader
//! never sees a half-written image.
//!
//! The line chart is in `line.rs`, the scatter in `scatter.rs`, the PCA in `pca.rs`; this file
//! holds what they share: errors, fonts, colours, axis ticks and the file writer.

mod line;
mod pca;
mod scatter;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

pub use line::{line_chart, render_line_chart};
pub use pca::pca_2d;
pub use scatter::{render_scatter_by_class, scatter_by_class};

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
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSansMono.ttf");

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

/// The x and y ranges of `points` (at least one), each padded by [`padded_range`].
fn padded_bounds(points: impl IntoIterator<Item = (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    (padded_range(x_lo, x_hi), padded_range(y_lo, y_hi))
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

/// Encodes an RGB buffer in the image format the extension of `path` names (PNG or JPEG) and
/// writes it with the pipeline's atomic writer (see [`crate::pipeline::write_atomic`]; the
/// folder must exist).
fn write_rgb(path: &Path, rgb: &[u8], size: (u32, u32)) -> Result<(), PlotError> {
    if path.file_name().is_none() {
        return Err(PlotError::InvalidInput(format!(
            "{} does not name a file",
            path.display()
        )));
    }
    if path.extension().is_none() {
        return Err(PlotError::InvalidInput(format!(
            "{} has no extension (the image format follows it; use .png)",
            path.display()
        )));
    }
    let format = image::ImageFormat::from_path(path).map_err(draw_err)?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(
        &mut encoded,
        rgb,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
        format,
    )
    .map_err(draw_err)?;
    super::replace_file(path, encoded.get_ref()).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}
