//! Shared test helpers: the GPU (or a clear skip), random inputs, comparisons.
#![allow(dead_code)]

#[cfg(feature = "burn")]
pub mod burn_tensors;
#[cfg(feature = "pipeline")]
pub mod pipeline;

use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::OnceLock;
use supcon_wgpu::device::{GpuContext, Limits, request_device};

/// The test device, created once with WebGPU's default limits. In CI (`CI=true`) a missing
/// adapter fails the test; elsewhere the test prints that it was skipped and returns `None`.
pub fn gpu() -> Option<&'static GpuContext> {
    static GPU: OnceLock<Option<GpuContext>> = OnceLock::new();
    GPU.get_or_init(|| match request_device(Limits::WebGpuDefault) {
        Ok(ctx) => {
            eprintln!("GPU tests run on {}", ctx.describe());
            Some(ctx)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but no GPU adapter was found ({e}); install mesa-vulkan-drivers");
            }
            eprintln!("SKIPPED: no GPU adapter ({e}); GPU tests did not run");
            None
        }
    })
    .as_ref()
}

/// The same adapter with its own limits ([`Limits::Adapter`]): what applications that request
/// their adapter's limits (Burn among them) run under. They differ from WebGPU's defaults in ways
/// a buffer layout can depend on: `min_storage_buffer_offset_alignment` is 256 by default but 32
/// on lavapipe and 16-64 on most GPUs. `None` exactly when [`gpu`] is `None`.
pub fn gpu_adapter_limits() -> Option<&'static GpuContext> {
    static GPU: OnceLock<Option<GpuContext>> = OnceLock::new();
    gpu()?;
    GPU.get_or_init(|| {
        let ctx = request_device(Limits::Adapter)
            .unwrap_or_else(|e| panic!("the adapter's own limits: {e}"));
        eprintln!(
            "GPU tests also run with the adapter's limits (storage offset alignment {})",
            ctx.device.limits().min_storage_buffer_offset_alignment
        );
        Some(ctx)
    })
    .as_ref()
}

/// Both test devices, `(name, context)`: WebGPU's default limits and the adapter's own. The key
/// GPU tests run on each, so that a layout valid under one set of limits only cannot pass.
/// Empty when there is no adapter (outside CI).
pub fn gpus() -> Vec<(&'static str, &'static GpuContext)> {
    match (gpu(), gpu_adapter_limits()) {
        (Some(default), Some(adapter)) => {
            vec![
                ("WebGPU default limits", default),
                ("adapter limits", adapter),
            ]
        }
        _ => Vec::new(),
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard-normal-ish values (sum of uniforms), reproducible.
pub fn random_features(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.7)
        .collect()
}

/// Features of samples `b` around one of `classes` random centres (`b mod classes`), with noise
/// of a third of their size: a loss over the true classes differs from one over merged classes.
pub fn clustered_features(
    rng: &mut StdRng,
    shape: supcon_wgpu::SupConShape,
    classes: usize,
) -> Vec<f32> {
    let dim = shape.dim as usize;
    let centres = random_features(rng, classes * dim);
    let noise = random_features(rng, shape.len() as usize);
    noise
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let b = i / (dim * shape.n_views as usize);
            centres[(b % classes) * dim + i % dim] + e / 3.0
        })
        .collect()
}

pub fn random_labels(rng: &mut StdRng, bsz: usize, classes: i32) -> Vec<i32> {
    (0..bsz).map(|_| rng.random_range(0..classes)).collect()
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// max |got - want| / max(max |want|, floor): the error relative to the largest entry.
pub fn max_rel_err(got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "non-finite value in GPU output"
    );
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(floor);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Copies `bytes` of a COPY_SRC buffer back to the host (test-only readback).
pub fn read_back<T: bytemuck::Pod>(
    ctx: &GpuContext,
    buffer: &supcon_wgpu::wgpu::Buffer,
    bytes: u64,
) -> Vec<T> {
    use supcon_wgpu::wgpu;
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue.submit([encoder.finish()]);
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    bytemuck::cast_slice(&staging.slice(..).get_mapped_range().expect("mapped")).to_vec()
}

/// The golden case: bsz = 6, n_views = 2, dim = 5,
/// f[b][v][k] = sin(0.37(b+1)(k+1) + 0.11v) + 0.1cos(1.3b - 0.7k + v), labels b mod 3.
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

/// Loss of the golden case at tau = tau_base = 0.07 (L_out, all anchors), printed by
/// `python3 tests/golden/supcon_golden.py`, an independent float64 transcription of the
/// reference PyTorch code.
pub const GOLDEN_LOSS: f64 = 9.792975081730638;

/// Every contrast mode x variant x reduction, for each (temperature, base temperature).
pub fn option_grid(temperatures: &[(f64, f64)]) -> Vec<supcon_wgpu::SupConOptions> {
    use supcon_wgpu::{ContrastMode, Reduction, SupConOptions, Variant};
    let mut v = Vec::new();
    for mode in [ContrastMode::All, ContrastMode::One] {
        for variant in [Variant::Out, Variant::In] {
            for reduction in [Reduction::AllAnchors, Reduction::AnchorsWithPositives] {
                for &(t, tb) in temperatures {
                    v.push(
                        SupConOptions::new(t)
                            .with_base_temperature(tb)
                            .with_contrast_mode(mode)
                            .with_variant(variant)
                            .with_reduction(reduction),
                    );
                }
            }
        }
    }
    v
}

/// What one implementation of the loss computed for one problem: the loss and dL/dfeatures, and,
/// where the implementation exposes them (the raw wgpu API), the per-anchor losses and the count
/// of anchors with a positive.
#[derive(Clone, Debug)]
pub struct Computed {
    pub loss: f32,
    pub grad: Vec<f32>,
    pub anchor_loss: Option<Vec<f32>>,
    pub n_valid_anchors: Option<u32>,
}

/// The one tolerance table every implementation (raw wgpu, Burn fused, Burn composed) is held to
/// against the f64 reference; everything but the reference computes in f32.
/// - loss: relative error <= [`LOSS_TOLERANCE`] ([`GOLDEN_LOSS_TOLERANCE`] on the golden case),
///   |loss| floored at [`LOSS_FLOOR`];
/// - per-anchor losses and gradient: max |got - ref| <= [`entry_tolerance`]`(tau)` times
///   max(max |ref|, T), where T is the size of one term of the gradient sum,
///   (tau/tau_base) / (tau * n_anchors * mean |x|) ([`gradient_term`]): entries are compared
///   relative to the largest entry since single entries can be ~0, and to T since a whole gradient
///   can cancel to ~0 (e.g. L_in with every row a positive). With tau = 0.01 the logits reach 100
///   and the exponentials amplify f32 rounding of z_i . z_j by 1/tau, so for tau < 0.05 the bound
///   is 1e-4 * (0.05 / tau).
pub const LOSS_TOLERANCE: f64 = 1e-4;
pub const GOLDEN_LOSS_TOLERANCE: f64 = 1e-5;
pub const LOSS_FLOOR: f64 = 1e-3;
/// Floor of the per-anchor losses' scale (a loss of 0 is compared absolutely at this size).
pub const ANCHOR_LOSS_FLOOR: f64 = 1e-3;

/// Relative bound on per-anchor losses and gradient entries at temperature `tau`.
pub fn entry_tolerance(tau: f64) -> f64 {
    1e-4 * (0.05 / tau).max(1.0)
}

/// Size of one term of the gradient sum of `features` (`[.., dim]` rows) with `n_anchors` anchors.
pub fn gradient_term(
    options: &supcon_wgpu::SupConOptions,
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

/// Checks `got` (from the implementation named in `what`) against the f64 reference on the same
/// input with the tolerance table above; `loss_tolerance` is [`LOSS_TOLERANCE`] or, on the
/// golden case, [`GOLDEN_LOSS_TOLERANCE`].
pub fn assert_matches_reference(
    what: &str,
    got: &Computed,
    features: &[f32],
    shape: supcon_wgpu::SupConShape,
    positives: supcon_wgpu::Positives<'_>,
    options: &supcon_wgpu::SupConOptions,
    loss_tolerance: f64,
) {
    let want = supcon_wgpu::kernels::supcon::reference::supcon(
        &to_f64(features),
        shape,
        positives,
        options,
    );
    let what = format!("{what}: {shape:?} {:?} {options:?}", positives.kind());
    assert!(got.loss.is_finite(), "{what}: loss {}", got.loss);
    let loss_err = (f64::from(got.loss) - want.loss).abs() / want.loss.abs().max(LOSS_FLOOR);
    assert!(
        loss_err <= loss_tolerance,
        "{what}: loss {} vs {} (rel {loss_err:e})",
        got.loss,
        want.loss
    );
    let tol = entry_tolerance(options.temperature);
    if let Some(n_valid) = got.n_valid_anchors {
        assert_eq!(
            n_valid as usize, want.n_valid_anchors,
            "{what}: valid anchors"
        );
    }
    if let Some(anchor_loss) = &got.anchor_loss {
        let err = max_rel_err(anchor_loss, &want.anchor_loss, ANCHOR_LOSS_FLOOR);
        assert!(
            err <= tol,
            "{what}: anchor losses rel err {err:e} > {tol:e}"
        );
    }
    let term = gradient_term(
        options,
        want.anchor_loss.len(),
        features,
        shape.dim as usize,
    );
    let err = max_rel_err(&got.grad, &want.grad, term);
    assert!(err <= tol, "{what}: gradient rel err {err:e} > {tol:e}");
}
