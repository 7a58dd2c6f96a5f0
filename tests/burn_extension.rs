//! The Burn extension: the fused kernels on an autodiff wgpu device (lavapipe in CI) against the
//! composed Burn ops on an autodiff NdArray device and the f64 CPU reference.
//!
//! Tolerances (f32 everywhere but the reference): loss relative error <= 1e-4; gradients
//! max |a - b| <= 1e-4 * max |b| (relative to the largest entry, floored at one term of the
//! gradient sum, as in gpu_supcon.rs); cosine similarities 1e-5 absolute.

mod common;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use common::*;
use rand::Rng;
use supcon_wgpu::backend::{
    Implementation, SupConLossConfig, composed, cosine_similarity, fused_available,
};
use supcon_wgpu::kernels::supcon::reference;
use supcon_wgpu::{ContrastMode, Error, Positives, Reduction, Strategy, SupConShape, Variant};

/// The autodiff wgpu device, or a clear skip (a failure under CI=true), as the other GPU tests.
fn wgpu_device() -> Option<Device> {
    gpu()?;
    Some(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff())
}

#[allow(deprecated)]
fn ndarray_device() -> Device {
    Device::ndarray().autodiff()
}

fn features(x: &[f32], shape: SupConShape, device: &Device) -> Tensor<3> {
    let dims = [
        shape.bsz as usize,
        shape.n_views as usize,
        shape.dim as usize,
    ];
    Tensor::<3>::from_data(TensorData::new(x.to_vec(), dims), device).require_grad()
}

fn labels(l: &[i32], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), device)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// Loss and dL/dfeatures of one configuration on one device.
fn loss_and_grad(
    config: &SupConLossConfig,
    x: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    device: &Device,
) -> (f32, Vec<f32>) {
    let loss = config.init();
    let f = features(x, shape, device);
    let value = match positives {
        Positives::Labels(l) => loss.forward(f.clone(), Some(labels(l, device))),
        Positives::None => loss.forward(f.clone(), None),
        Positives::Mask(m) => {
            let b = shape.bsz as usize;
            let mask = Tensor::<2, Bool>::from_data(TensorData::new(m.to_vec(), [b, b]), device);
            loss.forward_with_mask(f.clone(), mask)
        }
    };
    let grads = value.backward();
    let g = f.grad(&grads).expect("features receive a gradient");
    (to_vec(value)[0], to_vec(g))
}

fn options_of(config: &SupConLossConfig) -> supcon_wgpu::SupConOptions {
    *config.init().options()
}

#[test]
fn fused_on_wgpu_equals_composed_on_ndarray_and_the_reference() {
    let Some(wgpu) = wgpu_device() else { return };
    assert!(
        fused_available(&wgpu),
        "the autodiff wgpu device runs the fused kernels"
    );
    let ndarray = ndarray_device();
    assert!(!fused_available(&ndarray));
    let mut rng = rng(31);
    let mut cases = 0;
    for (bsz, nv, dim) in [(2, 1, 3), (5, 2, 7), (33, 2, 16), (70, 3, 5), (100, 2, 128)] {
        let shape = SupConShape::new(bsz, nv, dim);
        let x = random_features(&mut rng, shape.len() as usize);
        let l = random_labels(&mut rng, bsz as usize, 1 + bsz as i32 / 3);
        let mask: Vec<bool> = (0..bsz * bsz).map(|_| rng.random_bool(0.3)).collect();
        for mode in [ContrastMode::All, ContrastMode::One] {
            for variant in [Variant::Out, Variant::In] {
                for (reduction, t, tb) in [
                    (Reduction::AllAnchors, 0.1, None),
                    (Reduction::AnchorsWithPositives, 0.5, Some(0.07)),
                ] {
                    let config = SupConLossConfig::new()
                        .with_temperature(t)
                        .with_base_temperature(tb)
                        .with_contrast_mode(mode)
                        .with_variant(variant)
                        .with_reduction(reduction);
                    for positives in [
                        Positives::Labels(&l),
                        Positives::None,
                        Positives::Mask(&mask),
                    ] {
                        let what = format!(
                            "{shape:?} {mode:?} {variant:?} {reduction:?} t={t} {:?}",
                            positives.kind()
                        );
                        let (lw, gw) = loss_and_grad(&config, &x, shape, positives, &wgpu);
                        let (ln, gn) = loss_and_grad(&config, &x, shape, positives, &ndarray);
                        let want =
                            reference::supcon(&to_f64(&x), shape, positives, &options_of(&config));
                        let rel =
                            |a: f32| (f64::from(a) - want.loss).abs() / want.loss.abs().max(1e-3);
                        assert!(
                            rel(lw) <= 1e-4,
                            "{what}: fused loss {lw} vs reference {}",
                            want.loss
                        );
                        assert!(
                            rel(ln) <= 1e-4,
                            "{what}: composed loss {ln} vs reference {}",
                            want.loss
                        );
                        let term = 1.0 / (t * want.anchor_loss.len() as f64);
                        let ew = max_rel_err(&gw, &want.grad, term);
                        let en = max_rel_err(&gn, &want.grad, term);
                        assert!(ew <= 1e-4, "{what}: fused gradient error {ew:e}");
                        assert!(en <= 1e-4, "{what}: composed gradient error {en:e}");
                        let ewn = max_rel_err(&gw, &to_f64(&gn), term);
                        assert!(ewn <= 2e-4, "{what}: fused vs composed gradient {ewn:e}");
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 5 * 2 * 2 * 2 * 3);
}

#[test]
fn fused_column_loop_in_passes_and_both_strategies_through_burn() {
    // The Burn launch path of the multi-pass column loop (passes of 64 contrast rows).
    let Some(wgpu) = wgpu_device() else { return };
    let mut rng = rng(37);
    for (bsz, nv, dim, mode, strategy) in [
        (65, 2, 9, ContrastMode::All, Strategy::Direct),
        (70, 3, 130, ContrastMode::One, Strategy::Direct),
        (65, 2, 9, ContrastMode::All, Strategy::Tiles),
        (70, 3, 130, ContrastMode::One, Strategy::Tiles),
    ] {
        let shape = SupConShape::new(bsz, nv, dim);
        let x = random_features(&mut rng, shape.len() as usize);
        let l = random_labels(&mut rng, bsz as usize, 5);
        let config = SupConLossConfig::new()
            .with_temperature(0.1)
            .with_contrast_mode(mode)
            .with_variant(Variant::In);
        let loss = config.init().with_pass_columns(64).with_strategy(strategy);
        let f = features(&x, shape, &wgpu);
        let value = loss.forward(f.clone(), Some(labels(&l, &wgpu)));
        let g = to_vec(f.grad(&value.backward()).expect("gradient"));
        let lv = to_vec(value)[0];
        let want = reference::supcon(
            &to_f64(&x),
            shape,
            Positives::Labels(&l),
            &options_of(&config),
        );
        let rel = (f64::from(lv) - want.loss).abs() / want.loss.abs().max(1e-3);
        assert!(rel <= 1e-4, "{shape:?}: loss {lv} vs {}", want.loss);
        let term = 1.0 / (0.1 * want.anchor_loss.len() as f64);
        let err = max_rel_err(&g, &want.grad, term);
        assert!(err <= 1e-4, "{shape:?}: gradient error {err:e}");
    }
}

#[test]
fn gradient_flows_only_to_tracked_inputs() {
    let Some(device) = wgpu_device() else { return };
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.61).sin()).collect();
    // features = data x w: w is tracked, data is not.
    let w = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 0.5, -0.25, 2.0], [2, 2]),
        &device,
    )
    .require_grad();
    let data = Tensor::<3>::from_data(TensorData::new(x, [6, 2, 2]), &device);
    let projected = data
        .clone()
        .reshape([12, 2])
        .matmul(w.clone())
        .reshape([6, 2, 2]);
    let loss = SupConLossConfig::new().init();
    let l = labels(&[0, 1, 0, 1, 2, 2], &device);
    let grads = loss.forward(projected.clone(), Some(l.clone())).backward();
    assert!(
        w.grad(&grads).is_some(),
        "the tracked parameter gets a gradient"
    );
    assert!(data.grad(&grads).is_none(), "the untracked data does not");
    // On untracked features the loss is computed without a graph, to the same value.
    let tracked = to_vec(loss.forward(projected.clone(), Some(l.clone())));
    let untracked = to_vec(loss.forward(projected.detach(), Some(l)));
    assert_eq!(tracked, untracked);
}

#[test]
fn cosine_similarity_and_its_gradient() {
    let Some(wgpu) = wgpu_device() else { return };
    let ndarray = ndarray_device();
    let mut rng = rng(41);
    for (n, m, d) in [(3, 5, 2), (70, 65, 33)] {
        let a = random_features(&mut rng, n * d);
        let b = random_features(&mut rng, m * d);
        let weights = random_features(&mut rng, n * m);
        let run = |device: &Device| {
            let ta =
                Tensor::<2>::from_data(TensorData::new(a.clone(), [n, d]), device).require_grad();
            let tb =
                Tensor::<2>::from_data(TensorData::new(b.clone(), [m, d]), device).require_grad();
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [n, m]), device);
            let s = cosine_similarity(ta.clone(), tb.clone());
            let grads = (s.clone() * w).sum().backward();
            (
                to_vec(s),
                to_vec(ta.grad(&grads).unwrap()),
                to_vec(tb.grad(&grads).unwrap()),
            )
        };
        let (sw, gaw, gbw) = run(&wgpu);
        let (sn, gan, gbn) = run(&ndarray);
        let want = supcon_wgpu::kernels::similarity::reference::cosine_similarity(
            &to_f64(&a),
            &to_f64(&b),
            d,
        );
        assert!(max_rel_err(&sw, &want, 1.0) <= 1e-5, "fused similarity");
        assert!(max_rel_err(&sn, &want, 1.0) <= 1e-5, "composed similarity");
        assert!(
            max_rel_err(&gaw, &to_f64(&gan), 1e-3) <= 1e-4,
            "d/da fused vs composed"
        );
        assert!(
            max_rel_err(&gbw, &to_f64(&gbn), 1e-3) <= 1e-4,
            "d/db fused vs composed"
        );
    }
}

#[test]
fn linear_layer_trained_with_the_loss() {
    let Some(wgpu) = wgpu_device() else { return };
    let ndarray = ndarray_device();
    // 24 samples of 6 features, 3 classes, 2 noisy views; a 6 -> 4 linear map trained by SGD (lr 2).
    let mut rng = rng(51);
    let centers: Vec<f32> = random_features(&mut rng, 3 * 6);
    let l: Vec<i32> = (0..24).map(|i| i % 3).collect();
    let mut x = Vec::new();
    for i in 0..24 {
        for _ in 0..2 {
            for k in 0..6 {
                x.push(centers[(i % 3) * 6 + k] + 0.8 * (rng.random::<f32>() - 0.5));
            }
        }
    }
    let w0 = random_features(&mut rng, 6 * 4);
    let train = |device: &Device| {
        let mut w =
            Tensor::<2>::from_data(TensorData::new(w0.clone(), [6, 4]), device).require_grad();
        let data = Tensor::<3>::from_data(TensorData::new(x.clone(), [24, 2, 6]), device);
        let loss_fn = SupConLossConfig::new().with_temperature(0.1).init();
        let (mut losses, mut first_grad) = (Vec::new(), None);
        for _ in 0..8 {
            let z = data
                .clone()
                .reshape([48, 6])
                .matmul(w.clone())
                .reshape([24, 2, 4]);
            let loss = loss_fn.forward(z, Some(labels(&l, device)));
            losses.push(to_vec(loss.clone())[0]);
            let grads = loss.backward();
            let g = w.grad(&grads).unwrap();
            first_grad.get_or_insert_with(|| to_vec(g.clone()));
            w = (w - g * 2.0).detach().require_grad();
        }
        (losses, first_grad.unwrap(), to_vec(w))
    };
    let (lw, gw, ww) = train(&wgpu);
    let (ln, gn, wn) = train(&ndarray);
    // Each anchor has 15 positives among 47 rows, so L_out >= ln 15 (all positives alike, the
    // negatives negligible): training must close most of the gap to that floor.
    let floor = 15f32.ln();
    assert!(
        lw.windows(2).all(|p| p[1] < p[0]) && lw[7] - floor < 0.5 * (lw[0] - floor),
        "loss goes down on wgpu: {lw:?} (floor {floor})"
    );
    for (a, b) in lw.iter().zip(&ln) {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "losses {lw:?} vs {ln:?}");
    }
    assert!(
        max_rel_err(&gw, &to_f64(&gn), 1e-6) <= 1e-4,
        "parameter gradients"
    );
    assert!(
        max_rel_err(&ww, &to_f64(&wn), 1e-6) <= 1e-3,
        "parameters after 8 steps"
    );
}

#[test]
fn bad_input_is_a_typed_error_or_a_precise_panic() {
    let device = ndarray_device();
    let loss = SupConLossConfig::new().init();
    let x = Tensor::<3>::ones([4, 2, 3], &device);
    assert!(matches!(
        loss.try_forward(x.clone(), Some(labels(&[0, 1, 2], &device))),
        Err(Error::LengthMismatch {
            name: "labels",
            expected: 4,
            got: 3
        })
    ));
    assert!(matches!(
        loss.try_forward(Tensor::<3>::ones([1, 1, 3], &device), None),
        Err(Error::InvalidShape(_))
    ));
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 6], [2, 3]), &device);
    assert!(matches!(
        loss.try_forward_with_mask(x.clone(), mask),
        Err(Error::LengthMismatch { .. })
    ));
    for t in [0.0, -1.0, f64::NAN] {
        assert!(matches!(
            SupConLossConfig::new().with_temperature(t).try_init(),
            Err(Error::InvalidTemperature(_))
        ));
    }
    assert!(matches!(
        SupConLossConfig::new()
            .with_base_temperature(Some(0.0))
            .try_init(),
        Err(Error::InvalidBaseTemperature(_))
    ));
    let fused_on_cpu = SupConLossConfig::new()
        .with_implementation(Implementation::Fused)
        .init();
    assert!(matches!(
        fused_on_cpu.try_forward(x.clone(), None),
        Err(Error::Unsupported(_))
    ));
    let panic =
        std::panic::catch_unwind(|| loss.forward(x, Some(labels(&[0, 1], &ndarray_device()))));
    let message = *panic
        .expect_err("forward panics on bad input")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains("`labels` has 2 elements, expected 4"),
        "{message}"
    );
}

#[test]
fn bring_your_own_wgpu_device() {
    use supcon_wgpu::wgpu;
    if gpu().is_none() {
        return;
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor {
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: adapter.limits(),
            ..Default::default()
        }),
    )
    .unwrap();
    let burn =
        supcon_wgpu::backend::device::burn_device(instance, adapter, device.clone(), queue.clone())
            .expect("Burn adopts the device");
    assert!(fused_available(&burn));
    let shape = SupConShape::new(6, 2, 5);
    let x: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).cos()).collect();
    let l = [0, 1, 2, 0, 1, 2];
    let config = SupConLossConfig::new();
    let (burn_loss, _) = loss_and_grad(
        &config,
        &x,
        shape,
        Positives::Labels(&l),
        &burn.clone().autodiff(),
    );
    // The raw kernels on the very same wgpu device and queue.
    let raw = supcon_wgpu::SupConLoss::new(&device).unwrap();
    let r = raw
        .loss(
            &device,
            &queue,
            &x,
            shape,
            Positives::Labels(&l),
            &options_of(&config),
        )
        .unwrap();
    assert!(
        (burn_loss - r.loss).abs() <= 1e-5 * r.loss.abs(),
        "{burn_loss} vs {}",
        r.loss
    );
    let _ = composed::normalize;
}
