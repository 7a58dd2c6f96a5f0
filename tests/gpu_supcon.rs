//! The SupCon kernels on the GPU (lavapipe in CI) against the f64 CPU reference.
//!
//! Tolerances (f32 on the device, f64 reference):
//! - loss: relative error <= 1e-5 on the golden case, <= 1e-4 elsewhere (|loss| floor 1e-3);
//! - per-anchor losses and gradient: max |gpu - ref| <= 1e-4 * max(max |ref|, T), where T is the
//!   size of one term of the gradient sum, (tau/tau_base) / (tau * n_anchors * mean |x|): entries
//!   are compared relative to the largest entry since single entries can be ~0, and to T since a
//!   whole gradient can cancel to ~0. With tau = 0.01 the
//!   logits reach 100 and the exponentials amplify f32 rounding of z_i . z_j by 1/tau, so for
//!   tau < 0.05 the bound is 1e-4 * (0.05 / tau).

mod common;

use common::*;
use rand::Rng;
use supcon_wgpu::kernels::supcon::{STATUS_NON_FINITE, pack_mask, reference};
use supcon_wgpu::{
    Error, PositiveKind, Positives, Strategy, SupConLoss, SupConOptions, SupConOutput, SupConShape,
};

fn kernels() -> Option<(&'static supcon_wgpu::device::GpuContext, SupConLoss)> {
    let ctx = gpu()?;
    let loss = SupConLoss::new(&ctx.device).expect("pipelines");
    Some((ctx, loss))
}

/// The kernels under WebGPU's default limits and under the adapter's own (see
/// `common::gpus`): the tests that check results against the reference run on both.
fn kernels_on_both() -> Vec<(
    &'static str,
    &'static supcon_wgpu::device::GpuContext,
    SupConLoss,
)> {
    gpus()
        .into_iter()
        .map(|(name, ctx)| (name, ctx, SupConLoss::new(&ctx.device).expect("pipelines")))
        .collect()
}

/// Runs GPU and reference on the same input and checks loss, anchor losses and gradient.
fn check(
    loss: &SupConLoss,
    ctx: &supcon_wgpu::device::GpuContext,
    features: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    options: &SupConOptions,
    loss_tol: f64,
) {
    let got = loss
        .loss_and_grad(&ctx.device, &ctx.queue, features, shape, positives, options)
        .unwrap_or_else(|e| panic!("{shape:?} {options:?}: {e}"));
    let want = reference::supcon(&to_f64(features), shape, positives, options);
    let what = format!("{shape:?} {positives:?} {options:?}");
    let what = &what[..what.len().min(300)];
    assert!(got.loss.is_finite(), "{what}: loss {}", got.loss);
    let loss_err = (f64::from(got.loss) - want.loss).abs() / want.loss.abs().max(1e-3);
    assert!(
        loss_err <= loss_tol,
        "{what}: loss {} vs {} (rel {loss_err:e})",
        got.loss,
        want.loss
    );
    assert_eq!(
        got.n_valid_anchors as usize, want.n_valid_anchors,
        "{what}: valid anchors"
    );
    let tol = 1e-4 * (0.05 / options.temperature).max(1.0);
    let anchor_err = max_rel_err(&got.anchor_loss, &want.anchor_loss, 1e-3);
    assert!(
        anchor_err <= tol,
        "{what}: anchor losses rel err {anchor_err:e} > {tol:e}"
    );
    let grad = got.grad.expect("grad");
    // Gradient entries are sums of terms of size about (tau/tau_base) / (tau * n_anchors * |x|);
    // an f32 sum of such terms that cancels to ~0 (e.g. L_in with every row a positive) is
    // compared against that size instead of its own.
    let n_anchors = want.anchor_loss.len() as f64;
    let mean_norm = x_norms(features, shape.dim as usize);
    let term = (options.temperature / options.base_temperature)
        / (options.temperature * n_anchors * mean_norm);
    let grad_err = max_rel_err(&grad, &want.grad, term);
    assert!(
        grad_err <= tol,
        "{what}: gradient rel err {grad_err:e} > {tol:e}"
    );
}

/// Mean L2 norm of the feature rows.
fn x_norms(features: &[f32], dim: usize) -> f64 {
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

#[test]
fn golden_case_on_the_gpu() {
    for (_, ctx, loss) in kernels_on_both() {
        golden_case(ctx, &loss);
    }
}

fn golden_case(ctx: &supcon_wgpu::device::GpuContext, loss: &SupConLoss) {
    let f: Vec<f32> = golden_features().iter().map(|&v| v as f32).collect();
    let labels: Vec<i32> = (0..6).map(|b| b % 3).collect();
    let shape = SupConShape::new(6, 2, 5);
    let options = SupConOptions::new(0.07);
    let got = loss
        .loss(
            &ctx.device,
            &ctx.queue,
            &f,
            shape,
            Positives::Labels(&labels),
            &options,
        )
        .unwrap();
    let want = GOLDEN_LOSS;
    assert!(
        ((f64::from(got.loss) - want) / want).abs() < 1e-5,
        "{} vs {want}",
        got.loss
    );
    check(
        loss,
        ctx,
        &f,
        shape,
        Positives::Labels(&labels),
        &options,
        1e-5,
    );
}

#[test]
fn many_shapes_and_every_option_match_the_reference() {
    for (name, ctx, loss) in kernels_on_both() {
        eprintln!("{name}");
        many_shapes_and_every_option(ctx, &loss);
    }
}

fn many_shapes_and_every_option(ctx: &supcon_wgpu::device::GpuContext, loss: &SupConLoss) {
    let mut rng = rng(7);
    // (bsz, n_views, dim): N from 2 to 1,034, mostly not multiples of the 64-row tiles.
    let shapes = [
        (1, 2, 1),
        (2, 1, 3),
        (3, 3, 3),
        (33, 2, 128),
        (65, 1, 3),
        (70, 3, 5),
        (100, 2, 2048),
        (517, 2, 128),
    ];
    let mut cases = 0;
    for (si, &(bsz, nv, dim)) in shapes.iter().enumerate() {
        let shape = SupConShape::new(bsz, nv, dim);
        let x = random_features(&mut rng, shape.len() as usize);
        let labels = random_labels(&mut rng, bsz as usize, 1 + (bsz as i32) / 4);
        let mask: Vec<bool> = (0..bsz * bsz).map(|_| rng.random_bool(0.3)).collect();
        for (oi, options) in option_grid(&[
            (0.01, 0.01),
            (0.07, 0.07),
            (0.1, 0.07),
            (0.5, 0.5),
            (1.0, 1.0),
        ])
        .into_iter()
        .enumerate()
        {
            // Every option on the small shapes; a rotating subset on the large ones.
            if shape.rows() > 100 && (oi + si) % 4 != 0 {
                continue;
            }
            for positives in [
                Positives::Labels(&labels),
                Positives::None,
                Positives::Mask(&mask),
            ] {
                check(loss, ctx, &x, shape, positives, &options, 1e-4);
                cases += 1;
            }
        }
    }
    assert!(cases > 100, "only {cases} cases ran");
}

#[test]
fn class_structure_edge_cases() {
    let Some((ctx, loss)) = kernels() else { return };
    let mut rng = rng(11);
    let options = SupConOptions::new(0.1);
    // All samples one class.
    let shape = SupConShape::new(40, 2, 16);
    let x = random_features(&mut rng, shape.len() as usize);
    check(
        &loss,
        ctx,
        &x,
        shape,
        Positives::Labels(&[3; 40]),
        &options,
        1e-4,
    );
    // Every class a single sample: with one view nobody has a positive, the loss is exactly 0.
    let labels: Vec<i32> = (0..40).collect();
    let one_view = SupConShape::new(40, 1, 16);
    let got = loss
        .loss_and_grad(
            &ctx.device,
            &ctx.queue,
            &x[..640],
            one_view,
            Positives::Labels(&labels),
            &options,
        )
        .unwrap();
    assert_eq!(got.loss, 0.0);
    assert_eq!(got.n_valid_anchors, 0);
    assert!(
        got.grad.unwrap().iter().all(|&g| g == 0.0),
        "gradient of a zero loss"
    );
    // ... and with two views only the other view is a positive (SimCLR's structure).
    check(
        &loss,
        ctx,
        &x,
        shape,
        Positives::Labels(&labels),
        &options,
        1e-4,
    );
    // Negative and very large labels compare bit for bit.
    let labels: Vec<i32> = (0..40)
        .map(|i| if i % 2 == 0 { -7 } else { i32::MAX })
        .collect();
    check(
        &loss,
        ctx,
        &x,
        shape,
        Positives::Labels(&labels),
        &options,
        1e-4,
    );
}

#[test]
fn thousands_of_rows() {
    let Some((ctx, loss)) = kernels() else { return };
    let mut rng = rng(3);
    // N = 4,100 (not a multiple of 64), D = 128.
    let shape = SupConShape::new(2050, 2, 128);
    let x = random_features(&mut rng, shape.len() as usize);
    let labels = random_labels(&mut rng, 2050, 100);
    check(
        &loss,
        ctx,
        &x,
        shape,
        Positives::Labels(&labels),
        &SupConOptions::new(0.1),
        1e-4,
    );
}

#[test]
fn column_loop_in_passes_matches_the_reference() {
    for (name, ctx, loss) in kernels_on_both() {
        for strategy in [Strategy::Direct, Strategy::Tiles] {
            eprintln!("{name}, {strategy:?}");
            column_loop_in_passes(ctx, loss.clone(), strategy);
        }
    }
}

#[test]
fn both_strategies_match_the_reference() {
    for (name, ctx, loss) in kernels_on_both() {
        eprintln!("{name}");
        both_strategies(ctx, loss);
    }
}

fn both_strategies(ctx: &supcon_wgpu::device::GpuContext, loss: SupConLoss) {
    // The device's own choice: direct loads on a CPU adapter (lavapipe in CI), tiles on a GPU.
    assert_eq!(
        loss.strategy(),
        Strategy::for_adapter(&ctx.device.adapter_info())
    );
    let mut rng = rng(17);
    let mut cases = 0;
    for strategy in [Strategy::Tiles, Strategy::Direct] {
        let loss = loss.clone().with_strategy(strategy);
        // D not a multiple of 4 or 16 (padded vec4s), one and several column tiles, D > 128.
        for (bsz, nv, dim) in [(3, 2, 1), (33, 2, 130), (70, 3, 5), (40, 2, 300)] {
            let shape = SupConShape::new(bsz, nv, dim);
            let x = random_features(&mut rng, shape.len() as usize);
            let labels = random_labels(&mut rng, bsz as usize, 1 + bsz as i32 / 4);
            let mask: Vec<bool> = (0..bsz * bsz).map(|_| rng.random_bool(0.3)).collect();
            for options in option_grid(&[(0.07, 0.07)]) {
                for positives in [
                    Positives::Labels(&labels),
                    Positives::None,
                    Positives::Mask(&mask),
                ] {
                    check(&loss, ctx, &x, shape, positives, &options, 1e-4);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 4 * 8 * 3);
}

fn column_loop_in_passes(
    ctx: &supcon_wgpu::device::GpuContext,
    loss: SupConLoss,
    strategy: Strategy,
) {
    // Passes of 64 contrast rows (one tile): the statistics of the forward pass and the raw
    // gradient sums of the backward pass are carried across dispatches.
    let loss = loss.with_pass_columns(64).with_strategy(strategy);
    let mut rng = rng(13);
    // N = 2 (one pass), 130 (3 passes, the last of 2 rows), 192 (3 full), 303 (5).
    let mut cases = 0;
    for (bsz, nv, dim) in [(1, 2, 5), (65, 2, 3), (64, 3, 130), (101, 3, 17)] {
        let shape = SupConShape::new(bsz, nv, dim);
        let x = random_features(&mut rng, shape.len() as usize);
        let labels = random_labels(&mut rng, bsz as usize, 1 + bsz as i32 / 5);
        let mask: Vec<bool> = (0..bsz * bsz).map(|_| rng.random_bool(0.3)).collect();
        let plan = loss
            .plan(
                &ctx.device,
                shape,
                PositiveKind::Labels,
                &SupConOptions::new(0.1),
            )
            .unwrap();
        assert_eq!(plan.passes() as u64, shape.rows().div_ceil(64), "{shape:?}");
        for options in option_grid(&[(0.07, 0.07), (0.5, 0.1)]) {
            for positives in [
                Positives::Labels(&labels),
                Positives::None,
                Positives::Mask(&mask),
            ] {
                check(&loss, ctx, &x, shape, positives, &options, 1e-4);
                cases += 1;
            }
        }
    }
    assert!(cases >= 4 * 16 * 3, "only {cases} cases ran");

    // A non-finite row still gives the error, and zeros at the encoder level, over passes.
    let shape = SupConShape::new(100, 2, 4);
    let mut x = random_features(&mut rng, shape.len() as usize);
    x[777] = f32::NAN;
    let labels = random_labels(&mut rng, 100, 7);
    let r = loss.loss_and_grad(
        &ctx.device,
        &ctx.queue,
        &x,
        shape,
        Positives::Labels(&labels),
        &SupConOptions::new(0.1),
    );
    assert!(matches!(r, Err(Error::NonFiniteFeatures)), "{r:?}");
    let (out, grad) = run_encoder_level(ctx, &loss, &x, shape, &labels, &SupConOptions::new(0.1));
    assert_eq!(out.status, STATUS_NON_FINITE);
    assert!(grad.iter().all(|&g| g == 0.0));
}

#[test]
fn default_passes_bound_the_barriers_per_workgroup() {
    use supcon_wgpu::kernels::supcon::{MAX_BARRIERS_PER_WORKGROUP, default_pass_columns};
    for dim in [1, 16, 17, 128, 2048, 4096, 1 << 20] {
        let columns = default_pass_columns(dim);
        assert!(
            columns >= 64 && columns.is_multiple_of(64),
            "{dim}: {columns}"
        );
        let per_tile = 2 * u64::from(dim.div_ceil(16)) + 6;
        let barriers = u64::from(columns / 64) * per_tile;
        // At most the bound, unless one tile alone exceeds it.
        assert!(
            barriers <= MAX_BARRIERS_PER_WORKGROUP || columns == 64,
            "{dim}: {barriers} barriers"
        );
        // And as many tiles as fit.
        assert!(barriers + per_tile > MAX_BARRIERS_PER_WORKGROUP, "{dim}");
    }
    assert_eq!(default_pass_columns(128), 11_904);
    // The case the bug was found on: N = 32,768 at D = 128 runs in 3 passes.
    let Some((ctx, loss)) = kernels() else { return };
    let plan = loss
        .plan(
            &ctx.device,
            SupConShape::new(16_384, 2, 128),
            PositiveKind::None,
            &SupConOptions::new(0.1),
        )
        .unwrap();
    assert_eq!(plan.passes(), 3);
}

#[test]
fn zero_feature_rows_are_safe() {
    let Some((ctx, loss)) = kernels() else { return };
    let mut rng = rng(5);
    let shape = SupConShape::new(8, 2, 6);
    let mut x = random_features(&mut rng, shape.len() as usize);
    x[12..18].fill(0.0); // sample 1, view 0
    let labels = [0, 1, 0, 1, 2, 2, 0, 1];
    check(
        &loss,
        ctx,
        &x,
        shape,
        Positives::Labels(&labels),
        &SupConOptions::new(0.1),
        1e-4,
    );
}

#[test]
fn non_finite_features_are_reported() {
    for (_, ctx, loss) in kernels_on_both() {
        non_finite_features(ctx, &loss);
    }
}

fn non_finite_features(ctx: &supcon_wgpu::device::GpuContext, loss: &SupConLoss) {
    let shape = SupConShape::new(4, 2, 3);
    let labels = [0, 1, 0, 1];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        x[13] = bad;
        let r = loss.loss_and_grad(
            &ctx.device,
            &ctx.queue,
            &x,
            shape,
            Positives::Labels(&labels),
            &SupConOptions::new(0.1),
        );
        assert!(matches!(r, Err(Error::NonFiniteFeatures)), "{bad}: {r:?}");
    }

    // Encoder level: the status word says so, and loss and gradient are zeros, never NaN.
    let mut x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    x[5] = f32::NAN;
    let (out, grad) = run_encoder_level(ctx, loss, &x, shape, &labels, &SupConOptions::new(0.1));
    assert_eq!(out.status, STATUS_NON_FINITE);
    assert_eq!(out.loss, 0.0);
    assert!(grad.iter().all(|&g| g == 0.0), "{grad:?}");
}

/// Uses only the encoder-level API on caller-owned buffers; reads back only to check.
fn run_encoder_level(
    ctx: &supcon_wgpu::device::GpuContext,
    loss: &SupConLoss,
    x: &[f32],
    shape: SupConShape,
    labels: &[i32],
    options: &SupConOptions,
) -> (SupConOutput, Vec<f32>) {
    use supcon_wgpu::wgpu::{self, util::DeviceExt};
    let device = &ctx.device;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let features = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(x),
        usage,
    });
    let labels_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(labels),
        usage,
    });
    let grad = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: shape.len() * 4,
        usage,
        mapped_at_creation: false,
    });
    let plan = loss
        .plan(device, shape, PositiveKind::Labels, options)
        .unwrap();
    let mut encoder = device.create_command_encoder(&Default::default());
    plan.encode_forward(device, &mut encoder, &features, Some(&labels_buf))
        .unwrap();
    plan.encode_backward(device, &mut encoder, &features, Some(&labels_buf), &grad)
        .unwrap();
    ctx.queue.submit([encoder.finish()]);
    let out: Vec<SupConOutput> = read_back(ctx, plan.output(), 16);
    (out[0], read_back(ctx, &grad, shape.len() * 4))
}

#[test]
fn encoder_level_api_matches_the_convenience_call() {
    for (name, ctx, loss) in kernels_on_both() {
        let mut rng = rng(13);
        let shape = SupConShape::new(50, 2, 32);
        let x = random_features(&mut rng, shape.len() as usize);
        let labels = random_labels(&mut rng, 50, 5);
        let options = SupConOptions::new(0.1);
        let (out, grad) = run_encoder_level(ctx, &loss, &x, shape, &labels, &options);
        let want = reference::supcon(&to_f64(&x), shape, Positives::Labels(&labels), &options);
        assert_eq!(out.status, 0, "{name}");
        assert!(
            ((f64::from(out.loss) - want.loss) / want.loss).abs() < 1e-4,
            "{name}"
        );
        assert!(max_rel_err(&grad, &want.grad, 1e-12) < 1e-4, "{name}");
        assert_eq!(out.n_valid as usize, want.n_valid_anchors, "{name}");
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let Some((ctx, loss)) = kernels() else { return };
    let d = &ctx.device;
    let q = &ctx.queue;
    let opts = SupConOptions::new(0.1);
    let x = vec![0.5f32; 24];
    let shape = SupConShape::new(4, 2, 3);
    let labels = [0, 1, 0, 1];
    let run = |x: &[f32], shape, positives, opts: &SupConOptions| {
        loss.loss_and_grad(d, q, x, shape, positives, opts)
    };

    assert!(matches!(
        run(&x[..3], SupConShape::new(1, 1, 3), Positives::None, &opts),
        Err(Error::InvalidShape(_))
    ));
    assert!(matches!(
        run(&x, SupConShape::new(4, 2, 0), Positives::None, &opts),
        Err(Error::InvalidShape(_))
    ));
    assert!(matches!(
        run(&x[..20], shape, Positives::None, &opts),
        Err(Error::LengthMismatch {
            name: "features",
            ..
        })
    ));
    assert!(matches!(
        run(&x, shape, Positives::Labels(&labels[..3]), &opts),
        Err(Error::LengthMismatch { name: "labels", .. })
    ));
    assert!(matches!(
        run(&x, shape, Positives::Mask(&[true; 15]), &opts),
        Err(Error::LengthMismatch { name: "mask", .. })
    ));
    for t in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            run(&x, shape, Positives::None, &SupConOptions::new(t)),
            Err(Error::InvalidTemperature(_))
        ));
    }
    assert!(matches!(
        run(&x, shape, Positives::None, &opts.with_base_temperature(0.0)),
        Err(Error::InvalidBaseTemperature(_))
    ));
    // Outside f32's normal range: 1/τ or τ would be inf, 0 or subnormal on the device.
    for t in [
        1e-40,
        1e39,
        1e-300,
        5e-324,
        f64::from(f32::MIN_POSITIVE) / 2.0,
    ] {
        let r = loss.plan(d, shape, PositiveKind::None, &SupConOptions::new(t));
        assert!(matches!(r, Err(Error::InvalidTemperature(_))), "{t}: {r:?}");
        let r = loss.plan(d, shape, PositiveKind::None, &opts.with_base_temperature(t));
        assert!(
            matches!(r, Err(Error::InvalidBaseTemperature(_))),
            "{t}: {r:?}"
        );
    }
    // ... or a loss scale τ / τ_base that f32 cannot hold.
    let r = loss.plan(
        d,
        shape,
        PositiveKind::None,
        &SupConOptions::new(1e-30).with_base_temperature(1e30),
    );
    assert!(matches!(r, Err(Error::InvalidBaseTemperature(_))), "{r:?}");

    // Encoder level: buffer sizes, usages, positives that do not fit the plan.
    use supcon_wgpu::wgpu;
    let buf = |size, usage| {
        d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let st = wgpu::BufferUsages::STORAGE;
    let plan = loss.plan(d, shape, PositiveKind::Labels, &opts).unwrap();
    let mut enc = d.create_command_encoder(&Default::default());
    let (small, good, labels_buf) = (buf(64, st), buf(96, st), buf(16, st));
    let uniform = buf(96, wgpu::BufferUsages::UNIFORM);
    assert!(matches!(
        plan.encode_forward(d, &mut enc, &small, Some(&labels_buf)),
        Err(Error::BufferTooSmall {
            name: "features",
            needed: 96,
            got: 64
        })
    ));
    assert!(matches!(
        plan.encode_forward(d, &mut enc, &uniform, Some(&labels_buf)),
        Err(Error::MissingUsage {
            name: "features",
            ..
        })
    ));
    assert!(matches!(
        plan.encode_forward(d, &mut enc, &good, None),
        Err(Error::Positives(_))
    ));
    assert!(matches!(
        plan.encode_backward(d, &mut enc, &good, Some(&labels_buf), &small),
        Err(Error::BufferTooSmall { name: "grad", .. })
    ));
    assert!(matches!(
        plan.encode_backward(d, &mut enc, &good, Some(&labels_buf), &good),
        Err(Error::Positives(_))
    ));
    let simclr = loss.plan(d, shape, PositiveKind::None, &opts).unwrap();
    assert!(matches!(
        simclr.encode_forward(d, &mut enc, &good, Some(&labels_buf)),
        Err(Error::Positives(_))
    ));
    let mask_plan = loss
        .plan(d, SupConShape::new(40, 2, 3), PositiveKind::Mask, &opts)
        .unwrap();
    assert_eq!(mask_plan.positives_len(), Some(80)); // 40 rows of 2 words
    let features = buf(40 * 2 * 3 * 4, st);
    assert!(matches!(
        mask_plan.encode_forward(d, &mut enc, &features, Some(&buf(160, st))),
        Err(Error::BufferTooSmall {
            name: "positives",
            needed: 320,
            ..
        })
    ));

    // Device limits: features beyond max_storage_buffer_binding_size (128 MiB by default).
    let huge = SupConShape::new(300_000, 1, 128);
    assert!(matches!(
        loss.plan(d, huge, PositiveKind::None, &opts),
        Err(Error::ExceedsBindingLimit {
            name: "features",
            ..
        })
    ));
    // Nothing above reached the device: the encoder is still valid.
    q.submit([enc.finish()]);
}

#[test]
fn labels_of_64_bits_are_compared_at_full_width() {
    // Hashed ids that differ only above bit 31: narrowed to 32 bits they would all collide.
    for (name, ctx, loss) in kernels_on_both() {
        let mut rng = rng(19);
        let shape = SupConShape::new(40, 2, 16);
        let x = clustered_features(&mut rng, shape, 5);
        let ids: Vec<i64> = (0..40).map(|b| ((b % 5) << 32) | 7).collect();
        let dense: Vec<i32> = (0..40).map(|b| b % 5).collect();
        for strategy in [Strategy::Tiles, Strategy::Direct] {
            let loss = loss.clone().with_strategy(strategy);
            for options in option_grid(&[(0.1, 0.1)]) {
                check(
                    &loss,
                    ctx,
                    &x,
                    shape,
                    Positives::Labels64(&ids),
                    &options,
                    1e-4,
                );
                let full = loss
                    .loss(
                        &ctx.device,
                        &ctx.queue,
                        &x,
                        shape,
                        Positives::Labels64(&ids),
                        &options,
                    )
                    .unwrap();
                let classes = loss
                    .loss(
                        &ctx.device,
                        &ctx.queue,
                        &x,
                        shape,
                        Positives::Labels(&dense),
                        &options,
                    )
                    .unwrap();
                assert_eq!(full.loss, classes.loss, "{name} {strategy:?} {options:?}");
            }
        }
        // The narrowed labels would be one class: a different loss, so the check above can fail.
        let narrowed: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
        let opts = SupConOptions::new(0.1);
        let one_class = reference::supcon(&to_f64(&x), shape, Positives::Labels(&narrowed), &opts);
        let want = reference::supcon(&to_f64(&x), shape, Positives::Labels64(&ids), &opts);
        assert!((one_class.loss - want.loss).abs() > 0.1 * want.loss.abs());
    }
}

#[test]
fn packed_mask_layout() {
    let mut mask = vec![false; 40 * 40];
    mask[3 * 40 + 35] = true;
    mask[39 * 40] = true;
    let p = pack_mask(&mask, 40).unwrap();
    assert_eq!(p.len(), 80);
    assert_eq!(p[3 * 2 + 1], 1 << 3);
    assert_eq!(p[39 * 2], 1);
    assert_eq!(p.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
}

#[test]
fn dispatches_split_over_a_2d_grid() {
    // A device that allows only 3 workgroups per dimension forces every kernel onto a 2-D grid
    // (the path that N > 4 million rows takes under the default 65,535).
    let Some(base) = gpu() else { return };
    let limits = supcon_wgpu::wgpu::Limits {
        max_compute_workgroups_per_dimension: 3,
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(base.adapter.request_device(
        &supcon_wgpu::wgpu::DeviceDescriptor {
            required_limits: limits,
            ..Default::default()
        },
    ))
    .unwrap();
    let loss = SupConLoss::new(&device).unwrap();
    let mut rng = rng(17);
    let shape = SupConShape::new(230, 2, 100); // prepare 2, forward 8, backward 8 groups: a 3 x 3 grid
    let x = random_features(&mut rng, shape.len() as usize);
    let labels = random_labels(&mut rng, 230, 10);
    let opts = SupConOptions::new(0.1);
    let got = loss
        .loss_and_grad(
            &device,
            &queue,
            &x,
            shape,
            Positives::Labels(&labels),
            &opts,
        )
        .unwrap();
    let want = reference::supcon(&to_f64(&x), shape, Positives::Labels(&labels), &opts);
    assert!(((f64::from(got.loss) - want.loss) / want.loss).abs() < 1e-4);
    assert!(max_rel_err(&got.grad.unwrap(), &want.grad, 1e-12) < 1e-4);
    // More than 3 x 3 groups cannot be dispatched at all: a typed error, not a crash.
    let too_big = SupConShape::new(700, 1, 8);
    assert!(matches!(
        loss.plan(&device, too_big, PositiveKind::None, &opts),
        Err(Error::TooManyWorkgroups { .. })
    ));
}
