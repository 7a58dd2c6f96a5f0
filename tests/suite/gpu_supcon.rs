//! The raw wgpu API beyond the results themselves (which `tests/suite/implementations.rs` checks for
//! every implementation): the strategy a device picks, pass sizes, non-finite input, the
//! encoder-level API on caller-owned buffers, bad arguments, the mask layout, 2-D grids. Results
//! are held to the one tolerance table of `tests/suite/common/mod.rs`.

use crate::common;

use common::*;
use supcon_wgpu::kernels::supcon::{STATUS_NON_FINITE, pack_mask};
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
fn non_finite_features_are_reported() {
    for (name, ctx, loss) in kernels_on_both() {
        for strategy in [Strategy::Tiles, Strategy::Direct] {
            for columns in [None, Some(64)] {
                eprintln!("{name}, {strategy:?}, passes of {columns:?} columns");
                let loss = loss.clone().with_strategy(strategy);
                let loss = match columns {
                    Some(columns) => loss.with_pass_columns(columns),
                    None => loss,
                };
                non_finite_features(ctx, &loss);
            }
        }
    }
}

#[test]
fn each_device_picks_its_strategy() {
    // Direct loads on a CPU adapter (lavapipe in CI), tiles on a GPU.
    for (name, ctx, loss) in kernels_on_both() {
        let want = Strategy::for_adapter(&ctx.device.adapter_info());
        assert_eq!(loss.strategy(), want, "{name}");
    }
}

fn non_finite_features(ctx: &supcon_wgpu::device::GpuContext, loss: &SupConLoss) {
    // N = 8 (one pass) and N = 200 (several passes of 64 columns), the bad value in a late row.
    for (bsz, dim, at) in [(4, 3, 13), (100, 4, 777)] {
        let shape = SupConShape::new(bsz, 2, dim);
        let labels: Vec<i32> = (0..bsz as i32).map(|b| b % 3).collect();
        let clean: Vec<f32> = (0..shape.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = clean.clone();
            x[at] = bad;
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
        let mut x = clean.clone();
        x[at] = f32::NAN;
        let options = SupConOptions::new(0.1);
        let (out, grad) = run_encoder_level(ctx, loss, &x, shape, &labels, &options);
        assert_eq!(out.status, STATUS_NON_FINITE);
        assert_eq!(out.loss, 0.0);
        assert!(grad.iter().all(|&g| g == 0.0), "{grad:?}");
    }
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
        assert_eq!(out.status, 0, "{name}");
        let got = Computed {
            loss: out.loss,
            grad,
            anchor_loss: None,
            n_valid_anchors: Some(out.n_valid),
        };
        let positives = Positives::Labels(&labels);
        assert_matches_reference(name, &got, &x, shape, positives, &options, LOSS_TOLERANCE);
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

    // Keys: their length, their positives' kind and count, a mask with keys, buffers that do
    // not fit the plan.
    let keyed = shape.with_keys(3);
    let key_x = [0.25f32; 9];
    let key_labels = [0, 1, 2];
    let with_keys = |keys: &[f32], positives, key_positives| {
        let keys = supcon_wgpu::Keys {
            features: keys,
            positives: key_positives,
        };
        loss.loss_and_grad_with_keys(d, q, &x, keyed, positives, keys, &opts)
    };
    let l = Positives::Labels(&labels);
    assert!(matches!(
        with_keys(&key_x[..6], l, Positives::Labels(&key_labels)),
        Err(Error::LengthMismatch { name: "keys", .. })
    ));
    assert!(matches!(
        with_keys(&key_x, l, Positives::Labels(&key_labels[..2])),
        Err(Error::LengthMismatch {
            name: "key labels",
            ..
        })
    ));
    assert!(matches!(
        with_keys(&key_x, l, Positives::None),
        Err(Error::Keys(_))
    ));
    assert!(matches!(
        with_keys(
            &key_x,
            Positives::Mask(&[true; 16]),
            Positives::Mask(&[true; 16])
        ),
        Err(Error::Keys(_))
    ));
    assert!(matches!(run(&x, keyed, l, &opts), Err(Error::Keys(_))));
    assert!(matches!(
        loss.plan(d, keyed, PositiveKind::Mask, &opts),
        Err(Error::Keys(_))
    ));
    let keyed_plan = loss.plan(d, keyed, PositiveKind::Labels, &opts).unwrap();
    assert_eq!(keyed_plan.positives_len(), Some(7)); // 4 labels, then 3 key labels
    let all_labels = buf(28, st);
    assert!(matches!(
        keyed_plan.encode_forward(d, &mut enc, &good, Some(&all_labels)),
        Err(Error::Keys(_))
    ));
    assert!(matches!(
        keyed_plan.encode_forward_with_keys(
            d,
            &mut enc,
            &good,
            Some(&buf(32, st)),
            Some(&all_labels)
        ),
        Err(Error::BufferTooSmall {
            name: "keys",
            needed: 36,
            ..
        })
    ));
    assert!(matches!(
        keyed_plan.encode_forward_with_keys(
            d,
            &mut enc,
            &good,
            Some(&buf(36, st)),
            Some(&labels_buf)
        ),
        Err(Error::BufferTooSmall {
            name: "positives",
            needed: 28,
            ..
        })
    ));
    assert!(matches!(
        plan.encode_forward_with_keys(d, &mut enc, &good, Some(&buf(36, st)), Some(&labels_buf)),
        Err(Error::Keys(_))
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
    let got = Computed {
        loss: got.loss,
        grad: got.grad.expect("grad"),
        anchor_loss: Some(got.anchor_loss),
        n_valid_anchors: Some(got.n_valid_anchors),
    };
    let positives = Positives::Labels(&labels);
    assert_matches_reference(
        "3 x 3 grid",
        &got,
        &x,
        shape,
        positives,
        &opts,
        LOSS_TOLERANCE,
    );
    // More than 3 x 3 groups cannot be dispatched at all: a typed error, not a crash.
    let too_big = SupConShape::new(700, 1, 8);
    assert!(matches!(
        loss.plan(&device, too_big, PositiveKind::None, &opts),
        Err(Error::TooManyWorkgroups { .. })
    ));
}
