//! The same operations composed from plain Burn tensor ops: runs on every Burn backend (Flex,
//! CUDA, Metal, ...), differentiable wherever autodiff is on, and the baseline the benchmark
//! measures the fused kernels against. It materialises the N×N similarity matrix (memory O(N²)).

use burn::tensor::{Bool, DType, FloatDType, Int, Tensor};

use crate::{ContrastMode, Reduction, SupConOptions, Variant};

const NORM_EPS: f64 = 1e-12;
/// Stands for -inf in masked logits (finite, so that 0 · NEG_BIG stays 0).
const NEG_BIG: f64 = -1e30;

/// Rows divided by `max(|row|, 1e-12)` (torch's `F.normalize`).
pub fn normalize(x: Tensor<2>) -> Tensor<2> {
    // The clamp comes before the square root, whose derivative is infinite at 0: a zero row then
    // gets the finite gradient of x / NORM_EPS, as F.normalize's.
    let norm = x
        .clone()
        .square()
        .sum_dim(1)
        .clamp_min(NORM_EPS * NORM_EPS)
        .sqrt();
    x / norm
}

/// `[n, d] x [m, d] -> [n, m]` cosine similarities.
pub fn cosine_similarity(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    normalize(a).matmul(normalize(b).transpose())
}

/// How positives are given to [`supcon_loss`].
#[derive(Clone, Debug)]
pub enum ComposedPositives {
    /// `[bsz]` labels.
    Labels(Tensor<1, Int>),
    /// Each sample its own class (SimCLR).
    None,
    /// `[bsz, bsz]` positive mask (tiled over views, diagonal of the full matrix dropped).
    Mask(Tensor<2, Bool>),
}

/// SupCon loss of `features [bsz, n_views, dim]` from Burn tensor ops; returns shape `[1]` in
/// the features' dtype (computed in f32). Follows the reference PyTorch code (view-major rows,
/// the anchor's own row removed from numerator and denominator), with the options of
/// [`SupConOptions`].
pub fn supcon_loss(
    features: Tensor<3>,
    positives: ComposedPositives,
    options: &SupConOptions,
) -> Tensor<1> {
    supcon_loss_with_keys(features, positives, None, options)
}

/// Contrast-only rows for [`supcon_loss_with_keys`]: `[K, dim]` features (detached: keys get no
/// gradient) and, with labels, their `[K]` labels (keys with an anchor's label are its
/// positives; without labels keys are negatives only).
#[derive(Clone, Debug)]
pub struct ComposedKeys {
    /// The keys' features, `[K, dim]` (normalised inside the loss, detached).
    pub features: Tensor<2>,
    /// Their labels, `[K]`; `None` without labels (SimCLR: keys are negatives only).
    pub labels: Option<Tensor<1, Int>>,
}

/// [`supcon_loss`] with K contrast-only rows after the batch's N (`None`: K = 0). An explicit
/// mask has no key columns: with [`ComposedPositives::Mask`] the keys are negatives.
pub fn supcon_loss_with_keys(
    features: Tensor<3>,
    positives: ComposedPositives,
    keys: Option<ComposedKeys>,
    options: &SupConOptions,
) -> Tensor<1> {
    let dtype = features.dtype();
    if dtype != DType::F32 {
        return supcon_loss_with_keys(features.cast(FloatDType::F32), positives, keys, options)
            .cast(dtype);
    }
    let device = features.device();
    let [bsz, n_views, dim] = features.dims();
    let n = bsz * n_views;
    // torch.cat(torch.unbind(features, dim=1)): view-major rows.
    let contrast = normalize(features.swap_dims(0, 1).reshape([n, dim]));
    let n_anchors = match options.contrast_mode {
        ContrastMode::All => n,
        ContrastMode::One => bsz,
    };
    let anchors = contrast.clone().narrow(0, 0, n_anchors);
    let n_keys = keys.as_ref().map_or(0, |k| k.features.dims()[0]);
    // The batch's rows, then the keys (normalised, detached).
    let contrast = match &keys {
        Some(k) => Tensor::cat(
            vec![
                contrast,
                normalize(k.features.clone().detach().cast(FloatDType::F32)),
            ],
            0,
        ),
        None => contrast,
    };
    let logits = anchors.matmul(contrast.transpose()) / options.temperature;

    // [bsz, bsz] sample-level positives, tiled to [n_anchors, n].
    let labels = match &positives {
        ComposedPositives::Labels(labels) => Some(labels.clone()),
        _ => None,
    };
    let sample_mask: Tensor<2> = match positives {
        ComposedPositives::Labels(labels) => {
            let l = labels.reshape([bsz, 1]);
            l.clone().equal(l.transpose()).float()
        }
        ComposedPositives::None => Tensor::eye(bsz, &device),
        ComposedPositives::Mask(mask) => mask.float(),
    };
    let tiled = sample_mask
        .repeat(&[n_views, n_views])
        .narrow(0, 0, n_anchors);
    // Drop each anchor's own column (row i, column i).
    let not_self = Tensor::<2>::ones([n_anchors, n], &device)
        - Tensor::<2>::eye(n, &device).narrow(0, 0, n_anchors);
    let mut positive = tiled * not_self.clone();
    let mut not_self = not_self;
    if n_keys > 0 {
        // [n_anchors, K]: anchor row i (sample i % bsz) against each key's label.
        let key_positive = match (labels, keys.and_then(|k| k.labels)) {
            (Some(l), Some(kl)) => l
                .reshape([1, bsz])
                .repeat(&[1, n_views])
                .narrow(1, 0, n_anchors)
                .reshape([n_anchors, 1])
                .equal(kl.reshape([1, n_keys]))
                .float(),
            _ => Tensor::<2>::zeros([n_anchors, n_keys], &device),
        };
        positive = Tensor::cat(vec![positive, key_positive], 1);
        not_self = Tensor::cat(
            vec![not_self, Tensor::<2>::ones([n_anchors, n_keys], &device)],
            1,
        );
    }

    // Stable log-sum-exp over A(i): the anchor's own column is dropped (set to -1e30, so that
    // its exp is 0) before the (detached) row max is taken and subtracted. A max that included
    // s_ii = 1/τ would make every other term underflow at small τ.
    let is_self = not_self.equal_elem(0.0);
    let logits = logits.mask_fill(is_self, NEG_BIG);
    let logits = logits.clone() - logits.max_dim(1).detach();
    let lse = logits.clone().exp().sum_dim(1).log();
    let count = positive.clone().sum_dim(1);
    let has_positive = count.clone().greater_elem(0.0);
    let safe_count = count.clone().clamp_min(1.0);
    let scale = options.temperature / options.base_temperature;
    let per_anchor = match options.variant {
        Variant::Out => {
            let mean_pos = (positive * logits).sum_dim(1) / safe_count;
            (lse - mean_pos) * scale
        }
        Variant::In => {
            // log sum over P(i), with its own max so that it cannot underflow to log(0), and
            // the other columns at -1e30 so that their exp is 0 (never inf · 0).
            let masked = logits.mask_fill(positive.equal_elem(0.0), NEG_BIG);
            // (0 for rows without a positive: they are masked out below, and a -1e30 shift
            // would overflow exp and poison the gradient with inf * 0.)
            let max_pos = masked
                .clone()
                .max_dim(1)
                .detach()
                .mask_fill(has_positive.clone().bool_not(), 0.0);
            let sum_pos = (masked - max_pos.clone()).exp().sum_dim(1);
            let lse_pos = sum_pos.clamp_min(1e-30).log() + max_pos;
            (lse - lse_pos + safe_count.log()) * scale
        }
    };
    let per_anchor = per_anchor.mask_fill(has_positive.clone().bool_not(), 0.0);
    let total = per_anchor.sum();
    match options.reduction {
        Reduction::AllAnchors => total / n_anchors as f64,
        Reduction::AnchorsWithPositives => {
            let valid = has_positive.float().sum().clamp_min(1.0);
            total / valid
        }
    }
}
