//! The golden case and the one tolerance table every implementation of the loss (raw wgpu, Burn
//! fused, Burn composed, the browser page) is held to against the f64
//! [`reference`](mod@reference); everything but the reference computes in f32.
//!
//! - loss: relative error ≤ [`LOSS_TOLERANCE`] ([`GOLDEN_LOSS_TOLERANCE`] on the golden case),
//!   |loss| floored at [`LOSS_FLOOR`];
//! - per-anchor losses and gradient: max |got − ref| ≤ [`entry_tolerance`]`(τ)` times
//!   max(max |ref|, T), where T is the size of one term of the gradient sum,
//!   (τ/τ_base) / (τ · n_anchors · mean |x|) ([`gradient_term`]): entries are compared relative
//!   to the largest entry since single entries can be ~0, and to T since a whole gradient can
//!   cancel to ~0 (e.g. L_in with every row a positive). With τ = 0.01 the logits reach 100 and
//!   the exponentials amplify f32 rounding of z_i · z_j by 1/τ, so for τ < 0.05 the bound is
//!   1e-4 · (0.05 / τ).

use super::{Keys, Positives, SupConOptions, SupConShape, reference};

/// Relative error allowed on the loss.
pub const LOSS_TOLERANCE: f64 = 1e-4;
/// Relative error allowed on the golden case's loss.
pub const GOLDEN_LOSS_TOLERANCE: f64 = 1e-5;
/// Floor of |loss| in the relative error (a loss near 0 is compared absolutely at this size).
pub const LOSS_FLOOR: f64 = 1e-3;
/// Floor of the per-anchor losses' scale (a loss of 0 is compared absolutely at this size).
pub const ANCHOR_LOSS_FLOOR: f64 = 1e-3;

/// The golden case's shape: bsz = 6, n_views = 2, dim = 5.
pub fn golden_shape() -> SupConShape {
    SupConShape::new(6, 2, 5)
}

/// The golden case's features,
/// `f[b][v][k] = sin(0.37(b+1)(k+1) + 0.11v) + 0.1cos(1.3b − 0.7k + v)`.
pub fn golden_features() -> Vec<f64> {
    let mut f = Vec::new();
    for b in 0..6 {
        for v in 0..2 {
            for k in 0..5 {
                let (b, v, k) = (f64::from(b), f64::from(v), f64::from(k));
                f.push(
                    (0.37 * (b + 1.0) * (k + 1.0) + 0.11 * v).sin()
                        + 0.1 * (1.3 * b - 0.7 * k + v).cos(),
                );
            }
        }
    }
    f
}

/// The golden case's labels: b mod 3.
pub const GOLDEN_LABELS: [i32; 6] = [0, 1, 2, 0, 1, 2];

/// The golden case's temperature (τ = τ_base; L_out, all anchors).
pub const GOLDEN_TEMPERATURE: f64 = 0.07;

/// Loss of the golden case, printed by `python3 tests/golden/supcon_golden.py`, an independent
/// float64 transcription of the reference PyTorch code.
pub const GOLDEN_LOSS: f64 = 9.792975081730638;

/// Relative bound on per-anchor losses and gradient entries at temperature `tau`.
pub fn entry_tolerance(tau: f64) -> f64 {
    1e-4 * (0.05 / tau).max(1.0)
}

/// Size of one term of the gradient sum of `features` (`[.., dim]` rows) with `n_anchors` anchors.
pub fn gradient_term(
    options: &SupConOptions,
    n_anchors: usize,
    features: &[f32],
    dim: usize,
) -> f64 {
    (options.temperature / options.base_temperature)
        / (options.temperature * n_anchors as f64 * mean_row_norm(features, dim))
}

/// Mean L2 norm of the feature rows.
pub fn mean_row_norm(features: &[f32], dim: usize) -> f64 {
    let rows = features.chunks(dim);
    let n = rows.len() as f64;
    rows.map(|r| {
        r.iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    })
    .sum::<f64>()
        / n
}

/// max |got − want| / max(max |want|, floor): the error relative to the largest entry; infinite
/// when the lengths differ or `got` holds a non-finite value.
pub fn max_rel_err(got: &[f32], want: &[f64], floor: f64) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(floor);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// How far one implementation's result is from the reference, next to the bounds it must meet.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The reference's loss.
    pub reference_loss: f64,
    /// |loss − reference| / max(|reference|, [`LOSS_FLOOR`]).
    pub loss_err: f64,
    /// The gradient's [`max_rel_err`] against the reference, floored at [`gradient_term`].
    pub grad_err: f64,
    /// The bound on `grad_err` (and on per-anchor losses): [`entry_tolerance`]`(τ)`.
    pub entry_tolerance: f64,
}

impl Comparison {
    /// Whether the loss is within `loss_tolerance` ([`LOSS_TOLERANCE`], or
    /// [`GOLDEN_LOSS_TOLERANCE`] on the golden case) and the gradient within its bound.
    pub fn passes(&self, loss_tolerance: f64) -> bool {
        self.loss_err <= loss_tolerance && self.grad_err <= self.entry_tolerance
    }
}

/// Compares a loss and its gradient dL/dfeatures, computed in f32 from `features`, with the f64
/// reference on the same input. A non-finite loss or gradient gives infinite errors.
pub fn compare(
    loss: f32,
    grad: &[f32],
    features: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    options: &SupConOptions,
) -> (Comparison, reference::Output) {
    compare_with_keys(loss, grad, features, shape, positives, None, options)
}

/// [`compare`] for a problem with keys (`shape.keys` of them; `None` when there are none).
pub fn compare_with_keys(
    loss: f32,
    grad: &[f32],
    features: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    keys: Option<Keys<'_>>,
    options: &SupConOptions,
) -> (Comparison, reference::Output) {
    let to_f64 = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| f64::from(v)).collect() };
    let (key_features, key_positives) = match keys {
        Some(k) => (to_f64(k.features), k.positives),
        None => (Vec::new(), Positives::None),
    };
    let want = reference::supcon_with_keys(
        &to_f64(features),
        shape,
        positives,
        &key_features,
        key_positives,
        options,
    );
    let comparison = compare_to(loss, grad, features, shape.dim as usize, options, &want);
    (comparison, want)
}

/// [`compare`] against a reference output computed before (`want`, for these `features` with
/// `dim` columns and these `options`): for checking several implementations on one problem
/// without recomputing the reference.
pub fn compare_to(
    loss: f32,
    grad: &[f32],
    features: &[f32],
    dim: usize,
    options: &SupConOptions,
    want: &reference::Output,
) -> Comparison {
    let loss_err = if loss.is_finite() {
        (f64::from(loss) - want.loss).abs() / want.loss.abs().max(LOSS_FLOOR)
    } else {
        f64::INFINITY
    };
    let term = gradient_term(options, want.anchor_loss.len(), features, dim);
    Comparison {
        reference_loss: want.loss,
        loss_err,
        grad_err: max_rel_err(grad, &want.grad, term),
        entry_tolerance: entry_tolerance(options.temperature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> (Vec<f32>, SupConOptions) {
        let f = golden_features().iter().map(|&v| v as f32).collect();
        (f, SupConOptions::new(GOLDEN_TEMPERATURE))
    }

    #[test]
    fn the_reference_gives_the_golden_loss() {
        let f = golden_features();
        let options = SupConOptions::new(GOLDEN_TEMPERATURE);
        let out = reference::supcon(
            &f,
            golden_shape(),
            Positives::Labels(&GOLDEN_LABELS),
            &options,
        );
        assert!((out.loss - GOLDEN_LOSS).abs() < 1e-12, "{}", out.loss);
    }

    #[test]
    fn comparison_passes_the_reference_and_fails_a_wrong_or_non_finite_result() {
        let (f, options) = golden();
        let positives = Positives::Labels(&GOLDEN_LABELS);
        let want = reference::supcon(
            &f.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
            golden_shape(),
            positives,
            &options,
        );
        let grad: Vec<f32> = want.grad.iter().map(|&v| v as f32).collect();
        let (c, _) = compare(
            want.loss as f32,
            &grad,
            &f,
            golden_shape(),
            positives,
            &options,
        );
        assert!(c.passes(GOLDEN_LOSS_TOLERANCE), "{c:?}");

        // One gradient entry off by 1 % of the largest: beyond the 1e-4 bound.
        let largest = want.grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut off = grad.clone();
        off[3] += (0.01 * largest) as f32;
        let (c, _) = compare(
            want.loss as f32,
            &off,
            &f,
            golden_shape(),
            positives,
            &options,
        );
        assert!(
            !c.passes(GOLDEN_LOSS_TOLERANCE) && c.grad_err > 5e-3,
            "{c:?}"
        );

        // A loss off by 1e-3 relative fails the golden bound but not a 1e-2 one.
        let (c, _) = compare(
            (want.loss * 1.001) as f32,
            &grad,
            &f,
            golden_shape(),
            positives,
            &options,
        );
        assert!(!c.passes(GOLDEN_LOSS_TOLERANCE) && c.passes(1e-2), "{c:?}");

        // NaN anywhere is never close.
        let (c, _) = compare(f32::NAN, &grad, &f, golden_shape(), positives, &options);
        assert_eq!(c.loss_err, f64::INFINITY);
        let mut nan = grad.clone();
        nan[0] = f32::NAN;
        let (c, _) = compare(
            want.loss as f32,
            &nan,
            &f,
            golden_shape(),
            positives,
            &options,
        );
        assert_eq!(c.grad_err, f64::INFINITY);
        let (c, _) = compare(
            want.loss as f32,
            &grad[1..],
            &f,
            golden_shape(),
            positives,
            &options,
        );
        assert_eq!(c.grad_err, f64::INFINITY, "a gradient of the wrong length");
    }
}
