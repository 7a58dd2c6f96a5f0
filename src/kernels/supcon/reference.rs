//! f64 CPU reference of the loss, every option, and its analytic gradient.

use super::{ContrastMode, Positives, Reduction, SupConOptions, SupConShape, Variant};

/// What the reference computes.
#[derive(Clone, Debug)]
pub struct Output {
    /// The reduced loss.
    pub loss: f64,
    /// Per anchor, view-major.
    pub anchor_loss: Vec<f64>,
    /// Anchors with at least one positive (the others count 0).
    pub n_valid_anchors: usize,
    /// dL/dfeatures in the `[bsz, n_views, dim]` layout.
    pub grad: Vec<f64>,
}

const NORM_EPS: f64 = 1e-12;

/// Loss and gradient of `features` (`[bsz, n_views, dim]`, row-major).
pub fn supcon(
    features: &[f64],
    shape: SupConShape,
    positives: Positives<'_>,
    options: &SupConOptions,
) -> Output {
    supcon_with_keys(features, shape, positives, &[], Positives::None, options)
}

/// Loss and gradient of `features` with `shape.keys` contrast-only rows `keys` (`[K, dim]`,
/// row-major) whose positives are `key_positives` (K labels of the batch's kind, or none).
/// Contrast row `N + k` is key `k`; keys are never anchors and get no gradient.
pub fn supcon_with_keys(
    features: &[f64],
    shape: SupConShape,
    positives: Positives<'_>,
    keys: &[f64],
    key_positives: Positives<'_>,
    options: &SupConOptions,
) -> Output {
    let (bsz, nv, d) = (
        shape.bsz as usize,
        shape.n_views as usize,
        shape.dim as usize,
    );
    let n = bsz * nv;
    let nk = shape.keys as usize;
    // All contrast rows: the batch's N, then the K keys.
    let nc = n + nk;
    assert_eq!(features.len(), n * d, "features length");
    assert_eq!(keys.len(), nk * d, "keys length");
    let tau = options.temperature;
    let scale = tau / options.base_temperature;
    let memory_row = |r: usize| (r % bsz) * nv + r / bsz;
    let x: Vec<&[f64]> = (0..n)
        .map(|r| &features[memory_row(r) * d..][..d])
        .chain(keys.chunks(d.max(1)).take(nk))
        .collect();
    let norms: Vec<f64> = x
        .iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let z: Vec<Vec<f64>> = x
        .iter()
        .zip(&norms)
        .map(|(r, &nr)| r.iter().map(|v| v / nr.max(NORM_EPS)).collect())
        .collect();
    let dot = |i: usize, j: usize| z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum::<f64>();
    let s: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..nc).map(|j| dot(i, j) / tau).collect())
        .collect();
    let is_positive = |i: usize, j: usize| {
        if j < n {
            positives.is_positive(i, j, bsz)
        } else {
            positives.is_key_positive(&key_positives, i, j - n, bsz)
        }
    };
    let n_anchors = match options.contrast_mode {
        ContrastMode::All => n,
        ContrastMode::One => bsz,
    };
    let logsumexp = |vals: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = vals.collect();
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };

    // Per anchor: loss and d loss_i / d s_ij.
    let mut anchor_loss = vec![0.0; n_anchors];
    let mut dloss_ds = vec![vec![0.0; nc]; n_anchors];
    let mut n_valid = 0;
    for i in 0..n_anchors {
        let pos: Vec<usize> = (0..nc).filter(|&j| is_positive(i, j)).collect();
        if pos.is_empty() {
            continue;
        }
        n_valid += 1;
        let lse = logsumexp(&mut (0..nc).filter(|&j| j != i).map(|j| s[i][j]));
        let np = pos.len() as f64;
        match options.variant {
            Variant::Out => {
                let mean_pos = pos.iter().map(|&p| s[i][p]).sum::<f64>() / np;
                anchor_loss[i] = -scale * (mean_pos - lse);
                for j in (0..nc).filter(|&j| j != i) {
                    dloss_ds[i][j] = scale * (s[i][j] - lse).exp();
                }
                for &p in &pos {
                    dloss_ds[i][p] -= scale / np;
                }
            }
            Variant::In => {
                let lse_pos = logsumexp(&mut pos.iter().map(|&p| s[i][p]));
                anchor_loss[i] = -scale * (lse_pos - np.ln() - lse);
                for j in (0..nc).filter(|&j| j != i) {
                    dloss_ds[i][j] = scale * (s[i][j] - lse).exp();
                }
                for &p in &pos {
                    dloss_ds[i][p] -= scale * (s[i][p] - lse_pos).exp();
                }
            }
        }
    }
    let denominator = match options.reduction {
        Reduction::AllAnchors => n_anchors,
        Reduction::AnchorsWithPositives => n_valid,
    };
    let weight = if n_valid == 0 {
        0.0
    } else {
        1.0 / denominator as f64
    };
    let loss = anchor_loss.iter().sum::<f64>() * weight;

    // dL/dz_r = (1/tau) sum_j (G_rj + G_jr) z_j (G_jr = 0 for keys, which are no anchors), then
    // through the normalisation. Keys get no gradient.
    let mut grad = vec![0.0; n * d];
    for r in 0..n {
        let mut gz = vec![0.0; d];
        for j in 0..nc {
            let mut w = 0.0;
            if r < n_anchors {
                w += dloss_ds[r][j];
            }
            if j < n_anchors {
                w += dloss_ds[j][r];
            }
            w *= weight / tau;
            for k in 0..d {
                gz[k] += w * z[j][k];
            }
        }
        let out = &mut grad[memory_row(r) * d..][..d];
        if norms[r] > NORM_EPS {
            let zg: f64 = z[r].iter().zip(&gz).map(|(a, b)| a * b).sum();
            for k in 0..d {
                out[k] = (gz[k] - z[r][k] * zg) / norms[r];
            }
        } else {
            for k in 0..d {
                out[k] = gz[k] / NORM_EPS;
            }
        }
    }
    Output {
        loss,
        anchor_loss,
        n_valid_anchors: n_valid,
        grad,
    }
}
