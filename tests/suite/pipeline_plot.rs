//! Tests of `pipeline::plot`: the PCA projection against hand-computed and structured
//! cases, input errors, and the PNG files and pixel buffers the charts produce.
#![cfg(feature = "pipeline")]

use std::path::{Path, PathBuf};

use supcon_wgpu::pipeline::plot::*;

// ---------------------------------------------------------------- helpers

/// A fresh, empty folder for one test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "supcon-wgpu-plot-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Checks the PNG signature and the IHDR chunk; returns (width, height).
fn png_dimensions(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 33,
        "{} is too short for a PNG",
        path.display()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[8..12], &13u32.to_be_bytes(), "IHDR length");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(bytes[24], 8, "bit depth");
    assert_eq!(bytes[25], 2, "colour type RGB");
    assert!(
        bytes.windows(4).any(|w| w == b"IDAT") && bytes.windows(4).any(|w| w == b"IEND"),
        "IDAT and IEND chunks present"
    );
    (width, height)
}

/// Number of pixels of exactly `color` in an RGB buffer, restricted to columns `xs`
/// and rows `ys`.
fn count_color(
    buf: &[u8],
    size: (u32, u32),
    color: [u8; 3],
    xs: std::ops::Range<u32>,
    ys: std::ops::Range<u32>,
) -> usize {
    assert_eq!(buf.len(), (size.0 * size.1 * 3) as usize, "RGB buffer size");
    let mut n = 0;
    for y in ys {
        for x in xs.clone() {
            let i = ((y * size.0 + x) * 3) as usize;
            if buf[i..i + 3] == color {
                n += 1;
            }
        }
    }
    n
}

/// Number of dark (text-like) pixels in a region.
fn count_dark(
    buf: &[u8],
    size: (u32, u32),
    xs: std::ops::Range<u32>,
    ys: std::ops::Range<u32>,
) -> usize {
    let mut n = 0;
    for y in ys {
        for x in xs.clone() {
            let i = ((y * size.0 + x) * 3) as usize;
            if buf[i..i + 3].iter().all(|&c| c < 100) {
                n += 1;
            }
        }
    }
    n
}

fn assert_close(a: f32, b: f64, tol: f64, what: &str) {
    assert!(
        (f64::from(a) - b).abs() <= tol,
        "{what}: got {a}, expected {b} (tolerance {tol})"
    );
}

fn variance(xs: impl Iterator<Item = f32>) -> f64 {
    let v: Vec<f64> = xs.map(f64::from).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

// ---------------------------------------------------------------- PCA

/// Rows of the 3-D example; its covariance is hand-computable (see the test).
fn three_d_example(offset: [f32; 3]) -> Vec<f32> {
    let rows: [[f32; 3]; 6] = [
        [1.0, 1.0, 0.0],
        [-1.0, -1.0, 0.0],
        [0.5, -0.5, 0.0],
        [-0.5, 0.5, 0.0],
        [0.0, 0.0, 0.8],
        [0.0, 0.0, -0.8],
    ];
    rows.iter()
        .flat_map(|r| (0..3).map(move |j| r[j] + offset[j]))
        .collect()
}

#[test]
fn pca_matches_hand_computed_3d_example() {
    // Centred rows: ±(1,1,0), ±(0.5,-0.5,0), ±(0,0,0.8); n - 1 = 5. Covariance =
    // [2·(1,1,0)(1,1,0)ᵀ + 2·0.25·(1,-1,0)(1,-1,0)ᵀ + 2·0.64·e3e3ᵀ] / 5, with eigenpairs
    // 0.8 ↔ (1,1,0)/√2, 0.256 ↔ e3, 0.2 ↔ (1,-1,0)/√2. The second component is e3,
    // not the third-largest direction.
    let data = three_d_example([3.0, -1.0, 2.0]);
    let p = pca_2d(&data, 6, 3).unwrap();
    let s2 = std::f64::consts::SQRT_2;
    let expected = [
        [s2, 0.0],
        [-s2, 0.0],
        [0.0, 0.0],
        [0.0, 0.0],
        [0.0, 0.8],
        [0.0, -0.8],
    ];
    assert_eq!(p.len(), 6);
    for (i, (got, want)) in p.iter().zip(&expected).enumerate() {
        assert_close(got[0], want[0], 1e-5, &format!("row {i} pc1"));
        assert_close(got[1], want[1], 1e-5, &format!("row {i} pc2"));
    }
    // Variances are the two largest eigenvalues.
    assert!((variance(p.iter().map(|q| q[0])) - 0.8).abs() < 1e-5);
    assert!((variance(p.iter().map(|q| q[1])) - 0.256).abs() < 1e-5);
}

#[test]
fn pca_sign_convention_makes_largest_entry_positive() {
    // All variance along u = (0.6, -0.8, 0); the largest-|.| entry is -0.8, so the
    // component is -u = (-0.6, 0.8, 0) and the row at +3u projects to -3.
    let u = [0.6f32, -0.8, 0.0];
    let ts = [3.0f32, -3.0, 1.0, -1.0];
    let data: Vec<f32> = ts
        .iter()
        .flat_map(|&t| u.iter().map(move |&c| t * c + 5.0))
        .collect();
    let p = pca_2d(&data, 4, 3).unwrap();
    for (got, &t) in p.iter().zip(&ts) {
        assert_close(got[0], -f64::from(t), 1e-5, "pc1");
        assert_close(got[1], 0.0, 1e-5, "pc2 of rank-1 data");
    }
    // Flipping the data's direction gives the same projections up to the row order.
    let flipped: Vec<f32> = data.iter().map(|v| 10.0 - v).collect();
    let q = pca_2d(&flipped, 4, 3).unwrap();
    for (a, b) in p.iter().zip(&q) {
        assert_close(b[0], -f64::from(a[0]), 1e-5, "pc1 of negated data");
    }
}

/// Rows `mean + t_i u + s_i w` with orthonormal u, w, Σ t = Σ s = Σ t s = 0 and
/// var(t) ≫ var(s): the covariance is exactly var(t) u uᵀ + var(s) w wᵀ.
fn structured(d: usize, n: usize, noise: f64) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    assert!(n.is_multiple_of(2));
    let mut u: Vec<f64> = (0..d).map(|j| ((j * 7 + 3) % 11) as f64 - 5.0).collect();
    let mut w: Vec<f64> = (0..d).map(|j| ((j * 5 + 1) % 13) as f64 - 6.0).collect();
    // Unique largest-|.| entries, so the sign convention is not decided by noise.
    u[1] = -9.0;
    w[2] = 11.0;
    let nu = u.iter().map(|x| x * x).sum::<f64>().sqrt();
    u.iter_mut().for_each(|x| *x /= nu);
    let uw: f64 = u.iter().zip(&w).map(|(a, b)| a * b).sum();
    w.iter_mut().zip(&u).for_each(|(x, a)| *x -= uw * a);
    let nw = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    w.iter_mut().for_each(|x| *x /= nw);

    let ts: Vec<f64> = (0..n).map(|i| i as f64 - (n as f64 - 1.0) / 2.0).collect();
    let mean_t2 = ts.iter().map(|t| t * t).sum::<f64>() / n as f64;
    // Even in t, so uncorrelated with t; scaled to a standard deviation of about n/14.
    let ss: Vec<f64> = ts.iter().map(|t| 0.005 * (t * t - mean_t2)).collect();
    let mut lcg = 12345u64;
    let mut data = Vec::with_capacity(n * d);
    for i in 0..n {
        for j in 0..d {
            lcg = lcg
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let e = ((lcg >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * noise;
            let mean = (j % 5) as f64 - 2.0;
            data.push((mean + ts[i] * u[j] + ss[i] * w[j] + e) as f32);
        }
    }
    // Expected projections, with the sign convention applied to u and w.
    let sign = |v: &[f64]| {
        let big = v
            .iter()
            .fold(0.0f64, |m, &x| if x.abs() > m.abs() { x } else { m });
        big.signum()
    };
    let (su, sw) = (sign(&u), sign(&w));
    let pc1 = ts.iter().map(|t| t * su).collect();
    let pc2 = ss.iter().map(|s| s * sw).collect();
    (data, pc1, pc2)
}

#[test]
fn pca_recovers_known_directions() {
    let (n, d) = (100, 6);
    let (data, pc1, pc2) = structured(d, n, 0.0);
    let p = pca_2d(&data, n, d).unwrap();
    assert_eq!(p.len(), n);
    for i in 0..n {
        assert_close(p[i][0], pc1[i], 1e-3, &format!("row {i} pc1"));
        assert_close(p[i][1], pc2[i], 1e-3, &format!("row {i} pc2"));
    }
    let v1 = variance(p.iter().map(|q| q[0]));
    let v2 = variance(p.iter().map(|q| q[1]));
    assert!(v1 > 10.0 * v2 && v2 > 1.0, "variance order: {v1} vs {v2}");
    let cross: f64 = p.iter().map(|q| f64::from(q[0]) * f64::from(q[1])).sum();
    assert!(
        cross.abs() < 1e-2 * n as f64,
        "components uncorrelated: {cross}"
    );
}

#[test]
fn pca_large_dimension_recovers_known_directions() {
    // d > 256 goes through the subspace iteration; small noise in every coordinate.
    let (n, d) = (80, 300);
    let (data, pc1, pc2) = structured(d, n, 1e-3);
    let p = pca_2d(&data, n, d).unwrap();
    for i in 0..n {
        assert_close(p[i][0], pc1[i], 2e-2, &format!("row {i} pc1"));
        assert_close(p[i][1], pc2[i], 2e-2, &format!("row {i} pc2"));
    }
    // Deterministic: the same input gives bit-identical output.
    assert_eq!(p, pca_2d(&data, n, d).unwrap());
}

#[test]
fn pca_large_dimension_agrees_with_small_dimension_path() {
    // The 3-D example padded with 297 constant columns (d = 300) must project exactly
    // like the 3-D example itself.
    let small = three_d_example([0.5, 0.25, -4.0]);
    let d = 300;
    let mut padded = Vec::with_capacity(6 * d);
    for row in small.chunks_exact(3) {
        padded.extend_from_slice(row);
        padded.extend((3..d).map(|j| j as f32 * 0.5));
    }
    let a = pca_2d(&small, 6, 3).unwrap();
    let b = pca_2d(&padded, 6, d).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_close(y[0], f64::from(x[0]), 1e-5, &format!("row {i} pc1"));
        assert_close(y[1], f64::from(x[1]), 1e-5, &format!("row {i} pc2"));
    }
}

#[test]
fn pca_one_column_and_constant_data() {
    let p = pca_2d(&[1.0, 2.0, 6.0], 3, 1).unwrap();
    assert_eq!(p, vec![[-2.0, 0.0], [-1.0, 0.0], [3.0, 0.0]]);
    let p = pca_2d(&[7.0; 12], 4, 3).unwrap();
    assert_eq!(p, vec![[0.0, 0.0]; 4]);
    // Also through the large-dimension path.
    let p = pca_2d(&vec![-2.5; 3 * 300], 3, 300).unwrap();
    assert_eq!(p, vec![[0.0, 0.0]; 3]);
}

#[test]
fn pca_rejects_bad_input() {
    assert!(matches!(
        pca_2d(&[1.0, 2.0], 1, 2),
        Err(PlotError::Empty(_))
    ));
    assert!(matches!(pca_2d(&[], 0, 2), Err(PlotError::Empty(_))));
    assert!(matches!(pca_2d(&[], 3, 0), Err(PlotError::InvalidInput(_))));
    assert!(matches!(
        pca_2d(&[1.0; 5], 3, 2),
        Err(PlotError::InvalidInput(_))
    ));
    assert!(matches!(
        pca_2d(&[1.0; 7], 3, 2),
        Err(PlotError::InvalidInput(_))
    ));
    assert!(matches!(
        pca_2d(&[1.0; 4], usize::MAX, 2),
        Err(PlotError::InvalidInput(_))
    ));
    let mut data = vec![1.0f32, 2.0, 3.0, 4.0];
    data[2] = f32::NAN;
    assert!(matches!(
        pca_2d(&data, 2, 2),
        Err(PlotError::InvalidInput(_))
    ));
    data[2] = f32::INFINITY;
    assert!(matches!(
        pca_2d(&data, 2, 2),
        Err(PlotError::InvalidInput(_))
    ));
}

// ---------------------------------------------------------------- line chart

fn loss_series() -> Vec<Series> {
    let train = (0..50)
        .map(|e| (e as f64, 2.3 * (-0.06 * e as f64).exp() + 0.1))
        .collect();
    let mut val: Vec<(f64, f64)> = (0..50)
        .map(|e| (e as f64, 2.4 * (-0.05 * e as f64).exp() + 0.2))
        .collect();
    val[20].1 = f64::NAN; // a gap
    vec![
        Series::new("train loss", train),
        Series::new("val loss", val),
    ]
}

#[test]
fn line_chart_writes_png_atomically() {
    let dir = scratch_dir("line");
    let path = dir.join("loss.png");
    line_chart(
        &path,
        "SupCon loss",
        "epoch",
        "loss",
        &loss_series(),
        (640, 400),
    )
    .unwrap();
    assert_eq!(png_dimensions(&path), (640, 400));
    assert_eq!(
        entries(&dir),
        vec!["loss.png".to_string()],
        "no temp file left"
    );

    // Overwriting replaces the file (here with another size).
    line_chart(
        &path,
        "SupCon loss",
        "epoch",
        "loss",
        &loss_series(),
        (320, 240),
    )
    .unwrap();
    assert_eq!(png_dimensions(&path), (320, 240));
    assert_eq!(entries(&dir), vec!["loss.png".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn line_chart_draws_series_title_and_legend() {
    let size = (640, 400);
    let buf = render_line_chart("SupCon loss", "epoch", "loss", &loss_series(), size).unwrap();
    let all = (0..size.0, 0..size.1);
    let c0 = count_color(&buf, size, series_color(0), all.0.clone(), all.1.clone());
    let c1 = count_color(&buf, size, series_color(1), all.0.clone(), all.1.clone());
    let c2 = count_color(&buf, size, series_color(2), all.0.clone(), all.1.clone());
    assert!(c0 > 300, "series 0 drawn: {c0} pixels");
    assert!(c1 > 300, "series 1 drawn: {c1} pixels");
    assert_eq!(c2, 0, "no third series colour");
    assert_ne!(series_color(0), series_color(1));
    // Title text in the top rows, axis label text near the bottom.
    assert!(count_dark(&buf, size, 0..size.0, 0..40) > 50, "title drawn");
    assert!(
        count_dark(&buf, size, 0..size.0, size.1 - 30..size.1) > 30,
        "x label drawn"
    );
    // Not all white.
    assert!(buf.iter().any(|&b| b != 255));
}

#[test]
fn line_chart_handles_flat_single_point_and_nan_series() {
    let size = (400, 300);
    let flat = Series::new("flat", (0..10).map(|i| (i as f64, 1.5)).collect());
    let buf = render_line_chart("flat", "x", "y", &[flat], size).unwrap();
    assert!(count_color(&buf, size, series_color(0), 0..size.0, 0..size.1) > 100);

    // One finite point in total (a single x and a single y value): drawn as a dot.
    let lone = Series::new("lone", vec![(f64::NAN, 1.0), (3.0, 2.0), (4.0, f64::NAN)]);
    let empty = Series::new("empty", vec![]);
    let buf = render_line_chart("lone", "x", "y", &[empty, lone], size).unwrap();
    assert!(count_color(&buf, size, series_color(1), 0..size.0, 0..size.1) > 10);
}

#[test]
fn line_chart_rejects_empty_and_bad_input() {
    let dir = scratch_dir("line-bad");
    let path = dir.join("bad.png");
    let nan_only = Series::new("nan", vec![(0.0, f64::NAN), (1.0, f64::NAN)]);
    assert!(matches!(
        line_chart(&path, "t", "x", "y", &[nan_only], (400, 300)),
        Err(PlotError::Empty(_))
    ));
    assert!(matches!(
        line_chart(&path, "t", "x", "y", &[], (400, 300)),
        Err(PlotError::Empty(_))
    ));
    assert!(matches!(
        line_chart(&path, "t", "x", "y", &loss_series(), (10, 300)),
        Err(PlotError::InvalidInput(_))
    ));
    assert!(matches!(
        line_chart(
            &dir.join("no-extension"),
            "t",
            "x",
            "y",
            &loss_series(),
            (400, 300)
        ),
        Err(PlotError::InvalidInput(_))
    ));
    let missing = dir.join("missing-folder").join("x.png");
    match line_chart(&missing, "t", "x", "y", &loss_series(), (400, 300)) {
        Err(PlotError::Io { path, .. }) => assert!(path.starts_with(dir.join("missing-folder"))),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(
        entries(&dir).is_empty(),
        "nothing written: {:?}",
        entries(&dir)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- scatter

/// Three Gaussian-ish blobs of 50 points each, labels 0, 1, 2.
fn blobs() -> (Vec<[f32; 2]>, Vec<u32>) {
    let centres = [[0.0f32, 0.0], [4.0, 1.0], [1.0, 5.0]];
    let mut points = Vec::new();
    let mut labels = Vec::new();
    for (c, centre) in centres.iter().enumerate() {
        for k in 0..50 {
            let a = k as f32 * 2.399_963; // golden angle
            let r = (k as f32 / 50.0).sqrt();
            points.push([centre[0] + r * a.cos(), centre[1] + r * a.sin()]);
            labels.push(c as u32);
        }
    }
    (points, labels)
}

fn names(n: usize) -> Vec<String> {
    ["cat", "dog", "bird"]
        .iter()
        .take(n)
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn scatter_writes_png_atomically() {
    let dir = scratch_dir("scatter");
    let path = dir.join("embedding.png");
    let (points, labels) = blobs();
    scatter_by_class(&path, "embeddings", &points, &labels, &names(3), (500, 420)).unwrap();
    assert_eq!(png_dimensions(&path), (500, 420));
    assert_eq!(
        entries(&dir),
        vec!["embedding.png".to_string()],
        "no temp file left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scatter_colours_each_class_and_draws_legend() {
    let size = (640, 480);
    let (points, labels) = blobs();
    let buf = render_scatter_by_class("embeddings", &points, &labels, &names(3), size).unwrap();
    let legend_x = size.0 - size.0 / 7..size.0;
    for c in 0..3u32 {
        let all = count_color(&buf, size, class_color(c), 0..size.0, 0..size.1);
        assert!(all > 200, "class {c} drawn: {all} pixels");
        let legend = count_color(&buf, size, class_color(c), legend_x.clone(), 0..size.1);
        assert!(legend > 20, "class {c} legend swatch: {legend} pixels");
    }
    assert_eq!(
        count_color(&buf, size, class_color(3), 0..size.0, 0..size.1),
        0
    );
    assert!(
        count_dark(&buf, size, legend_x, 0..size.1) > 40,
        "legend text drawn"
    );
    assert!(count_dark(&buf, size, 0..size.0, 0..40) > 50, "title drawn");
}

#[test]
fn scatter_many_classes_distinct_colours_no_legend() {
    let classes = 25u32;
    let colours: Vec<[u8; 3]> = (0..classes).map(class_color).collect();
    for i in 0..colours.len() {
        for j in 0..i {
            assert_ne!(colours[i], colours[j], "classes {i} and {j} share a colour");
        }
    }
    let points: Vec<[f32; 2]> = (0..classes * 4)
        .map(|i| [(i % 10) as f32, (i / 10) as f32])
        .collect();
    let labels: Vec<u32> = (0..classes * 4).map(|i| i % classes).collect();
    let size = (640, 480);
    let buf = render_scatter_by_class("many", &points, &labels, &[], size).unwrap();
    let mut drawn = 0;
    for c in 0..classes {
        if count_color(&buf, size, class_color(c), 0..size.0, 0..size.1) > 0 {
            drawn += 1;
        }
        // No legend: nothing of any class colour in the right-most strip.
        assert_eq!(
            count_color(&buf, size, class_color(c), size.0 - 12..size.0, 0..size.1),
            0
        );
    }
    assert_eq!(drawn, classes);
}

#[test]
fn scatter_rejects_bad_input() {
    let dir = scratch_dir("scatter-bad");
    let path = dir.join("bad.png");
    let (points, labels) = blobs();
    assert!(matches!(
        scatter_by_class(&path, "t", &points, &labels[1..], &names(3), (400, 300)),
        Err(PlotError::InvalidInput(_))
    ));
    assert!(matches!(
        scatter_by_class(&path, "t", &[], &[], &names(3), (400, 300)),
        Err(PlotError::Empty(_))
    ));
    let mut bad = points.clone();
    bad[3][1] = f32::NAN;
    assert!(matches!(
        scatter_by_class(&path, "t", &bad, &labels, &names(3), (400, 300)),
        Err(PlotError::InvalidInput(_))
    ));
    assert!(
        entries(&dir).is_empty(),
        "nothing written: {:?}",
        entries(&dir)
    );

    // A single point (zero-width ranges) and labels without names still plot.
    let buf = render_scatter_by_class("one", &[[1.0, 1.0]], &[7], &names(3), (300, 240)).unwrap();
    assert!(count_color(&buf, (300, 240), class_color(7), 0..300, 0..240) > 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smallest_and_oblong_sizes_render() {
    let (points, labels) = blobs();
    for size in [(64, 64), (64, 400), (1200, 64), (150, 120)] {
        let buf = render_line_chart("t", "x", "y", &loss_series(), size).unwrap();
        assert_eq!(buf.len(), (size.0 * size.1 * 3) as usize);
        let buf = render_scatter_by_class("t", &points, &labels, &names(3), size).unwrap();
        assert_eq!(buf.len(), (size.0 * size.1 * 3) as usize);
    }
}

// ---------------------------------------------------------------- sample pictures

/// Writes sample pictures for a visual check when `SUPCON_PLOT_SAMPLES` names a folder.
#[test]
fn write_samples_when_asked() {
    let Some(dir) = std::env::var_os("SUPCON_PLOT_SAMPLES") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut series = loss_series();
    series.push(Series::new(
        "accuracy",
        (0..50)
            .map(|e| (e as f64, 1.0 - (-0.08 * e as f64).exp()))
            .collect(),
    ));
    line_chart(
        &dir.join("loss.png"),
        "SupCon training",
        "epoch",
        "value",
        &series,
        (800, 500),
    )
    .unwrap();
    let (n, d) = (100, 6);
    let (data, _, _) = structured(d, n, 0.5);
    let proj = pca_2d(&data, n, d).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 10 / n as u32).collect();
    let class_names: Vec<String> = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    scatter_by_class(
        &dir.join("pca.png"),
        "PCA of embeddings",
        &proj,
        &labels,
        &class_names,
        (800, 600),
    )
    .unwrap();
    let (points, labels) = blobs();
    scatter_by_class(
        &dir.join("blobs.png"),
        "blobs",
        &points,
        &labels,
        &names(3),
        (640, 480),
    )
    .unwrap();
}
