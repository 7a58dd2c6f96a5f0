//! PCA to two components, deterministic, in f64.

use super::PlotError;
use crate::pipeline::SplitMix64;

/// PCA to 2 components: data is n rows × d columns row-major. Centre the columns, then the
/// top-2 eigenvectors of the d×d covariance; project. Returns n points.
///
/// Computed in f64 and deterministic: for d ≤ 256 by a cyclic Jacobi eigen-decomposition
/// of the covariance, for larger d by block (subspace) iteration from a fixed-seed start
/// with Rayleigh–Ritz. Component k is the eigenvector with the k-th largest eigenvalue,
/// signed so that its largest-|.| entry (the first such, on ties) is positive; point i is
/// `(x_i - mean) · v_k`. When d == 1 the second coordinate is 0. Errors on n < 2, d == 0,
/// data.len() != n*d, non-finite values.
///
/// Not `burn::linalg::svd`: Burn 0.22's SVD runs on the host in f32 and panics when its QR
/// iteration does not converge within the sweep budget, where a plot must never cost a run
/// (it is also behind burn's `linalg` feature, one more crate for two numbers per point).
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

/// A deterministic pseudo-random number in [-1, 1) from the generator's next 52 high bits.
fn next_signed(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
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
                *x = next_signed(rng);
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
        .map(|_| (0..d).map(|_| next_signed(&mut rng)).collect())
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
