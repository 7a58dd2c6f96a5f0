//! The Burn extension's API beyond the loss values (which `tests/suite/implementations.rs` checks for
//! every implementation): autodiff, the similarity op, training a layer, typed errors and panics,
//! a caller's own wgpu device, non-finite input, label dtypes, half precision, device limits.
//! Loss results are held to the one tolerance table of `tests/suite/common/mod.rs`; cosine
//! similarities to 1e-5 absolute.
#![cfg(feature = "burn")]

use crate::common;

use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use common::burn_tensors::{features, flex_device, labels, to_vec, wgpu_device};
use common::*;
use rand::Rng;
use supcon_wgpu::backend::{
    Implementation, SupConLossConfig, composed, cosine_similarity, fused_available,
    try_cosine_similarity,
};
use supcon_wgpu::kernels::supcon::reference;
use supcon_wgpu::{Error, Positives, Strategy, SupConShape};

/// Loss and dL/dfeatures of one configuration on one device.
fn loss_and_grad(
    config: &SupConLossConfig,
    x: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    device: &Device,
) -> Computed {
    common::burn_tensors::loss_and_grad(&config.init(), x, shape, positives, device)
}

fn options_of(config: &SupConLossConfig) -> supcon_wgpu::SupConOptions {
    *config.init().options()
}

#[test]
fn fused_on_wgpu_and_composed_elsewhere() {
    // Which implementation `Implementation::Auto` runs; `tests/suite/implementations.rs` checks the
    // results of both against the reference.
    let Some(wgpu) = wgpu_device() else { return };
    assert!(
        fused_available(&wgpu),
        "the autodiff wgpu device runs the fused kernels"
    );
    assert!(!fused_available(&flex_device()));
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
    let flex = flex_device();
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
        let (sn, gan, gbn) = run(&flex);
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
    let flex = flex_device();
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
    let (ln, gn, wn) = train(&flex);
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
    let device = flex_device();
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
    // Keys: their width, their labels given exactly with the batch's, of the same width and
    // count.
    let keys = Tensor::<2>::ones([5, 3], &device);
    let l4 = || Some(labels(&[0, 1, 2, 3], &device));
    let kl = |n: usize| Some(labels(&vec![1; n], &device));
    assert!(matches!(
        loss.try_forward_with_keys(x.clone(), l4(), Tensor::<2>::ones([5, 4], &device), kl(5)),
        Err(Error::Keys(_))
    ));
    assert!(matches!(
        loss.try_forward_with_keys(x.clone(), l4(), keys.clone(), None),
        Err(Error::Keys(_))
    ));
    assert!(matches!(
        loss.try_forward_with_keys(x.clone(), None, keys.clone(), kl(5)),
        Err(Error::Keys(_))
    ));
    assert!(matches!(
        loss.try_forward_with_keys(x.clone(), l4(), keys.clone(), kl(4)),
        Err(Error::LengthMismatch {
            name: "key labels",
            expected: 5,
            got: 4
        })
    ));
    let int = |n: usize, dtype| {
        Tensor::<1, Int>::from_data(TensorData::new(vec![1i64; n], [n]), (&device, dtype))
    };
    assert!(matches!(
        loss.try_forward_with_keys(
            x.clone(),
            Some(int(4, DType::I32)),
            keys,
            Some(int(5, DType::I64))
        ),
        Err(Error::Keys(_))
    ));
    let panic = std::panic::catch_unwind(|| loss.forward(x, Some(labels(&[0, 1], &flex_device()))));
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
    // In a process of its own: the adopted device would outlive the test in the suite's.
    if gpu().is_none() || !common::in_own_process(module_path!(), "bring_your_own_wgpu_device") {
        return;
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: supcon_wgpu::backend::device::burn_features(&adapter),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let burn =
        supcon_wgpu::backend::device::burn_device(instance, adapter, device.clone(), queue.clone())
            .expect("Burn adopts the device");
    assert!(fused_available(&burn));
    let shape = SupConShape::new(6, 2, 5);
    let x: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).cos()).collect();
    let l = [0, 1, 2, 0, 1, 2];
    let config = SupConLossConfig::new();
    let burn_loss = loss_and_grad(
        &config,
        &x,
        shape,
        Positives::Labels(&l),
        &burn.clone().autodiff(),
    )
    .loss;
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

/// Every entry NaN.
fn all_nan(v: &[f32]) -> bool {
    !v.is_empty() && v.iter().all(|x| x.is_nan())
}

#[test]
fn non_finite_features_give_nan_loss_and_gradient() {
    // As Burn's own ops: NaN or Inf in the features makes the loss and every gradient entry NaN
    // (never a plausible 0), on the fused path (both strategies, one pass and several) and on the
    // composed one.
    let mut devices = vec![("composed on Flex", flex_device(), None, None)];
    if let Some(wgpu) = wgpu_device() {
        for strategy in [Strategy::Direct, Strategy::Tiles] {
            devices.push(("fused", wgpu.clone(), Some(strategy), None));
            devices.push(("fused, passes", wgpu.clone(), Some(strategy), Some(64)));
        }
    }
    let shape = SupConShape::new(70, 2, 6);
    let x0: Vec<f32> = (0..shape.len()).map(|i| (i as f32 * 0.37).sin()).collect();
    let l: Vec<i32> = (0..70).map(|b| b % 4).collect();
    for (name, device, strategy, columns) in devices {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = x0.clone();
            x[6 * 33 + 4] = bad;
            let mut loss = SupConLossConfig::new().init();
            if let Some(s) = strategy {
                loss = loss.with_strategy(s);
            }
            if let Some(c) = columns {
                loss = loss.with_pass_columns(c);
            }
            for positives in [Some(labels(&l, &device)), None] {
                let f = features(&x, shape, &device);
                let value = loss.forward(f.clone(), positives);
                let g = to_vec(f.grad(&value.backward()).expect("gradient"));
                let v = to_vec(value)[0];
                assert!(v.is_nan(), "{name} {strategy:?} {bad}: loss {v}");
                assert!(
                    all_nan(&g),
                    "{name} {strategy:?} {bad}: gradient {:?}",
                    &g[..8]
                );
            }
            // Without autodiff too.
            let plain_device = if strategy.is_some() {
                crate::common::burn_tensors::wgpu_device().unwrap().inner()
            } else {
                Device::flex()
            };
            let plain =
                Tensor::<3>::from_data(TensorData::new(x.clone(), [70, 2, 6]), &plain_device);
            let v = to_vec(loss.forward(plain, None))[0];
            assert!(
                v.is_nan(),
                "{name} {strategy:?} {bad} (no autodiff): loss {v}"
            );
        }
    }
}

#[test]
fn temperatures_outside_the_f32_normal_range_are_rejected() {
    use supcon_wgpu::SupConOptions;
    use supcon_wgpu::kernels::supcon::{MAX_TEMPERATURE, MIN_TEMPERATURE};
    let subnormal = f64::from(f32::MIN_POSITIVE) / 2.0;
    for t in [
        1e-40,
        1e39,
        1e-300,
        5e-324,
        subnormal,
        0.0,
        -0.1,
        f64::NAN,
        f64::INFINITY,
    ] {
        assert!(matches!(
            SupConOptions::new(t).validate(),
            Err(Error::InvalidTemperature(_))
        ));
        assert!(
            matches!(
                SupConLossConfig::new().with_temperature(t).try_init(),
                Err(Error::InvalidTemperature(_))
            ),
            "{t}"
        );
        assert!(
            matches!(
                SupConLossConfig::new()
                    .with_base_temperature(Some(t))
                    .try_init(),
                Err(Error::InvalidBaseTemperature(_))
            ),
            "{t}"
        );
    }
    // A scale τ / τ_base beyond f32.
    assert!(matches!(
        SupConLossConfig::new()
            .with_temperature(1e-30)
            .with_base_temperature(Some(1e30))
            .try_init(),
        Err(Error::InvalidBaseTemperature(_))
    ));
    // The bounds themselves are accepted.
    for t in [MIN_TEMPERATURE, MAX_TEMPERATURE, 0.07, 1.0] {
        assert!(
            SupConLossConfig::new()
                .with_temperature(t)
                .try_init()
                .is_ok(),
            "{t}"
        );
    }
    let message =
        std::panic::catch_unwind(|| SupConLossConfig::new().with_temperature(1e-40).init())
            .expect_err("init panics")
            .downcast::<String>()
            .unwrap();
    assert!(message.contains("temperature must lie in"), "{message}");
}

#[test]
fn problems_beyond_the_device_limits_are_typed_errors() {
    use supcon_wgpu::wgpu;
    // In a process of its own: the limited device would outlive the test in the suite's.
    if gpu().is_none()
        || !common::in_own_process(
            module_path!(),
            "problems_beyond_the_device_limits_are_typed_errors",
        )
    {
        return;
    }
    // A Burn device on a wgpu device whose storage bindings stop at 1 MiB.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: supcon_wgpu::backend::device::burn_features(&adapter),
        required_limits: wgpu::Limits {
            max_storage_buffer_binding_size: 1 << 20,
            ..adapter.limits()
        },
        ..Default::default()
    }))
    .unwrap();
    let small = supcon_wgpu::backend::device::burn_device(instance, adapter, device, queue)
        .expect("Burn adopts the device")
        .autodiff();
    let loss = SupConLossConfig::new().init();
    // 80,000 rows of D = 1: 320 KB of features, but the normalised copy (16 bytes a row) needs
    // 1.28 MB in one binding.
    let big = SupConShape::new(40_000, 2, 1);
    let x: Vec<f32> = (0..big.len()).map(|i| (i as f32 * 0.37).sin()).collect();
    let l: Vec<i32> = (0..40_000).map(|b| b % 10).collect();
    let r = loss.try_forward(features(&x, big, &small), Some(labels(&l, &small)));
    let Err(e) = r else {
        panic!("expected an error, got {:?}", r.map(to_vec))
    };
    assert!(
        matches!(
            e,
            Error::ExceedsBindingLimit {
                name: "normalised features",
                limit: 1048576,
                ..
            }
        ),
        "{e}"
    );
    let message = std::panic::catch_unwind(|| {
        loss.forward(features(&x, big, &small), Some(labels(&l, &small)))
    })
    .expect_err("forward panics")
    .downcast::<String>()
    .unwrap();
    assert_eq!(*message, format!("SupConLoss::forward: {e}"));
    // The similarity matrix of 600 × 600 rows needs 1.44 MB in one binding.
    let rows = |n: usize| Tensor::<2>::from_data(TensorData::new(x[..n].to_vec(), [n, 1]), &small);
    let r = try_cosine_similarity(rows(600), rows(600));
    let Err(e) = r else {
        panic!("expected an error, got {:?}", r.map(to_vec))
    };
    assert!(
        matches!(
            e,
            Error::ExceedsBindingLimit {
                name: "out",
                limit: 1048576,
                ..
            }
        ),
        "{e}"
    );
    let message = std::panic::catch_unwind(|| cosine_similarity(rows(600), rows(600)))
        .expect_err("cosine_similarity panics")
        .downcast::<String>()
        .unwrap();
    assert_eq!(*message, format!("cosine_similarity: {e}"));
    assert_eq!(
        to_vec(cosine_similarity(rows(400), rows(300))).len(),
        120_000
    );
    // Within the limits the same device computes the loss.
    let shape = SupConShape::new(100, 2, 8);
    let got = loss_and_grad(
        &SupConLossConfig::new(),
        &x[..1600],
        shape,
        Positives::Labels(&l[..100]),
        &small,
    );
    let positives = Positives::Labels(&l[..100]);
    let options = options_of(&SupConLossConfig::new());
    assert_matches_reference(
        "small device",
        &got,
        &x[..1600],
        shape,
        positives,
        &options,
        LOSS_TOLERANCE,
    );
}

#[test]
fn cosine_similarity_of_mismatched_or_empty_inputs_is_a_typed_error() {
    let mut devices = vec![flex_device()];
    devices.extend(wgpu_device());
    for device in devices {
        let zeros = |n: usize, d: usize| Tensor::<2>::zeros([n, d], &device);
        for (a, b) in [((3, 4), (2, 5)), ((0, 4), (2, 4)), ((3, 0), (2, 0))] {
            let r = try_cosine_similarity(zeros(a.0, a.1), zeros(b.0, b.1));
            assert!(
                matches!(r, Err(Error::InvalidShape(_))),
                "{a:?} x {b:?} on {device:?}: {:?}",
                r.map(to_vec)
            );
        }
    }
}

#[test]
fn shapes_beyond_32_bit_indexing_are_typed_errors() {
    // A broadcast view: N·D = 4.9e9 elements without allocating them (on the wgpu device with
    // fusion, whose expand is lazy; Flex would materialise it).
    if let Some(device) = wgpu_device() {
        let huge = Tensor::<3>::zeros([1, 1, 1], &device).expand([70_000, 1, 70_000]);
        let loss = SupConLossConfig::new().init();
        let r = loss.try_forward(huge.clone(), None);
        let Err(e) = r else {
            panic!("expected an error")
        };
        assert!(matches!(e, Error::InvalidShape(_)), "{e}");
        assert!(e.to_string().contains("32-bit indexing"), "{e}");
        let message = std::panic::catch_unwind(|| loss.forward(huge, None))
            .expect_err("forward panics")
            .downcast::<String>()
            .unwrap();
        assert_eq!(*message, format!("SupConLoss::forward: {e}"));
    }
}

#[test]
fn labels_of_64_bits_never_collide() {
    // Hashed ids that differ only above bit 31 (I64 tensors): compared at full width, they are 5
    // classes; narrowed to 32 bits they would be one.
    let mut devices = vec![("composed", flex_device())];
    devices.extend(wgpu_device().map(|d| ("fused", d)));
    let shape = SupConShape::new(40, 2, 16);
    let mut rng = rng(47);
    let x = clustered_features(&mut rng, shape, 5);
    let ids: Vec<i64> = (0..40).map(|b| ((b % 5) << 32) | 7).collect();
    let dense: Vec<i32> = (0..40).map(|b| b % 5).collect();
    let config = SupConLossConfig::new();
    let want = reference::supcon(
        &to_f64(&x),
        shape,
        Positives::Labels(&dense),
        &options_of(&config),
    );
    let narrowed: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
    let collided = reference::supcon(
        &to_f64(&x),
        shape,
        Positives::Labels(&narrowed),
        &options_of(&config),
    );
    assert!(
        (collided.loss - want.loss).abs() > 0.1 * want.loss,
        "the case discriminates"
    );
    for (name, device) in devices {
        for dtype in [DType::I64, DType::U64, DType::I32] {
            let values = if dtype == DType::I32 {
                TensorData::new(dense.clone(), [40])
            } else {
                TensorData::new(ids.clone(), [40])
            };
            let l = Tensor::<1, Int>::from_data(values, (&device, dtype));
            if l.dtype() != dtype {
                eprintln!("{name}: {dtype:?} labels not available, skipped");
                continue;
            }
            let f = features(&x, shape, &device);
            let value = config.init().forward(f.clone(), Some(l));
            let got = Computed {
                grad: to_vec(f.grad(&value.backward()).unwrap()),
                loss: to_vec(value)[0],
                anchor_loss: None,
                n_valid_anchors: None,
            };
            let what = format!("{name} {dtype:?}");
            let positives = Positives::Labels(&dense);
            let options = options_of(&config);
            assert_matches_reference(&what, &got, &x, shape, positives, &options, LOSS_TOLERANCE);
        }
    }
}

#[test]
fn half_precision_features_compute_in_f32() {
    // f16 / bf16 features: the op computes in f32 and returns the loss and the gradient in the
    // features' dtype, equal to the f32 results on the same (rounded) values, rounded likewise.
    let Some(wgpu) = wgpu_device() else { return };
    let shape = SupConShape::new(33, 2, 16);
    let mut rng = rng(53);
    let x = random_features(&mut rng, shape.len() as usize);
    let l = random_labels(&mut rng, 33, 6);
    let dims = [33, 2, 16];
    // (bf16 cannot be created on burn-wgpu: its WGSL compiler has no bf16 type.)
    for device in [wgpu] {
        for dtype in [DType::F16] {
            let f16 = Tensor::<3>::from_data(TensorData::new(x.clone(), dims), (&device, dtype));
            if f16.dtype() != dtype {
                eprintln!("{dtype:?} features not available on {device:?}, skipped");
                continue;
            }
            let x_rounded = to_vec(f16.clone());
            let f16 = f16.require_grad();
            let loss = SupConLossConfig::new().init();
            let value = loss.forward(f16.clone(), Some(labels(&l, &device)));
            assert_eq!(value.dtype(), dtype, "loss dtype");
            let g = f16.grad(&value.backward()).unwrap();
            assert_eq!(g.dtype(), dtype, "gradient dtype");

            let f32_input = features(&x_rounded, shape, &device);
            let v32 = loss.forward(f32_input.clone(), Some(labels(&l, &device)));
            let g32 = f32_input.grad(&v32.backward()).unwrap();
            assert_eq!(to_vec(value), to_vec(v32.cast(dtype)), "{dtype:?} loss");
            assert_eq!(to_vec(g), to_vec(g32.cast(dtype)), "{dtype:?} gradient");
        }
    }
}
