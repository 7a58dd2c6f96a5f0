//! Encoder shapes and sizes: parameter counts equal torchvision's ResNets (without the final
//! fully connected layer, with the CIFAR 3×3 stem where stated), and forward shapes.
#![cfg(feature = "pipeline")]

use crate::common;

use burn::module::Module;
use burn::nn::BatchNormConfig;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use supcon_wgpu::pipeline::eval::to_vec;
use supcon_wgpu::pipeline::model::{
    HeadKind, ModelPreset, PretrainModel, ProjectionHead, Stem, batch_norm,
};

fn cpu() -> Device {
    Device::flex()
}

#[test]
fn parameter_counts_match_torchvision() {
    let device = cpu();
    // torchvision resnet18/34/50 parameter totals minus fc (512·1000 + 1000, 2048·1000 + 1000),
    // plus the batch-norm running mean and variance, which Burn's `num_params` counts
    // (2 × the BN channels: 4,800 / 8,512 / 26,560).
    let imagenet = [
        (ModelPreset::ResNet18, 11_689_512 - 513_000 + 2 * 4_800),
        (ModelPreset::ResNet34, 21_797_672 - 513_000 + 2 * 8_512),
        (ModelPreset::ResNet50, 25_557_032 - 2_049_000 + 2 * 26_560),
    ];
    for (preset, want) in imagenet {
        let n = preset.config(3, Stem::ImageNet).init(&device).num_params();
        assert_eq!(n, want, "{preset:?} with the ImageNet stem");
        // The CIFAR stem: a 3×3 conv (64·3·9) instead of 7×7 (64·3·49).
        let n = preset.config(3, Stem::Cifar).init(&device).num_params();
        assert_eq!(
            n,
            want - 64 * 3 * 49 + 64 * 3 * 9,
            "{preset:?} with the CIFAR stem"
        );
    }
}

#[test]
fn forward_shapes() {
    let device = cpu();
    let small = ModelPreset::Small.config(1, Stem::Cifar);
    assert_eq!(small.feature_dim(), 64);
    let enc = small.init(&device);
    let x = Tensor::<4>::ones([3, 1, 8, 8], &device);
    assert_eq!(enc.forward(x.clone()).dims(), [3, 64]);
    let model = PretrainModel {
        encoder: enc,
        head: Some(ProjectionHead::new(HeadKind::Mlp, 64, 128, &device)),
        classifier: None,
    };
    let z = model.forward(x);
    assert_eq!(z.dims(), [3, 128]);
    let values: Vec<f32> = z.into_data().convert::<f32>().try_into_vec().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));

    let r50 = ModelPreset::ResNet50.config(3, Stem::ImageNet);
    assert_eq!(r50.feature_dim(), 2048);
    let r18 = ModelPreset::ResNet18
        .config(3, Stem::ImageNet)
        .init(&device);
    assert_eq!(
        r18.forward(Tensor::<4>::ones([2, 3, 32, 32], &device))
            .dims(),
        [2, 512]
    );
    let head = ProjectionHead::new(HeadKind::Linear, 512, 128, &device);
    assert_eq!(head.num_params(), 512 * 128 + 128);
}

#[test]
fn preset_names_round_trip() {
    for p in [
        ModelPreset::Small,
        ModelPreset::ResNet18,
        ModelPreset::ResNet34,
        ModelPreset::ResNet50,
    ] {
        assert_eq!(ModelPreset::from_name(p.name()), Some(p));
    }
    assert_eq!(ModelPreset::from_name("resnet101"), None);
}

/// Batch statistics of a channel spread over more values than Burn reduces correctly in one op
/// on wgpu (512 views of 16×16: 131,072 per channel): the running statistics after one training
/// step with momentum 1 must equal the batch's, the output must be the normalised input, and
/// the evaluation path must use the running statistics. (Burn 0.22.1's `BatchNorm::forward`
/// fails this on lavapipe: channel means off by 0.5.)
#[test]
fn batch_norm_statistics_are_exact_for_long_channels() {
    let Some(device) = common::burn_tensors::shared_device() else {
        return;
    };
    let device = device.inner().autodiff();
    let (n, c, h) = (512, 16, 16);
    let plane = h * h;
    let mut rng = common::rng(3);
    // Channel k: values around k - 1 with spread k + 1.
    let values: Vec<f32> = (0..n * c * plane)
        .map(|i| {
            let k = (i / plane % c) as f32;
            (k - 1.0) + (k + 1.0) * (rng.random::<f32>() - 0.5) * 3.0
        })
        .collect();
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for (i, &v) in values.iter().enumerate() {
        mean[i / plane % c] += v as f64;
    }
    mean.iter_mut().for_each(|m| *m /= (n * plane) as f64);
    for (i, &v) in values.iter().enumerate() {
        var[i / plane % c] += (v as f64 - mean[i / plane % c]).powi(2);
    }
    var.iter_mut().for_each(|s| *s /= (n * plane) as f64);

    let bn = BatchNormConfig::new(c).with_momentum(1.0).init(&device);
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [n, c, h, h]), &device);
    let y = to_vec(batch_norm(&bn, x).inner());
    let close = |got: f32, want: f64, what: &str| {
        assert!(
            (got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    };
    let running_mean = to_vec(bn.running_mean.value_sync().inner());
    let running_var = to_vec(bn.running_var.value_sync().inner());
    for k in 0..c {
        close(
            running_mean[k],
            mean[k],
            &format!("running mean of channel {k}"),
        );
        close(
            running_var[k],
            var[k],
            &format!("running variance of channel {k}"),
        );
    }
    for i in (0..values.len()).step_by(997) {
        let k = i / plane % c;
        let want = (values[i] as f64 - mean[k]) / (var[k] + 1e-5).sqrt();
        close(y[i], want, &format!("output {i}"));
    }
    // Evaluation mode (a plain device): the running statistics, no batch statistics.
    let plain = device.clone().inner();
    let bn_eval = bn.valid();
    let shifted: Vec<f32> = values.iter().take(2 * c * plane).map(|v| v + 1.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(shifted.clone(), [2, c, h, h]), &plain);
    let y = to_vec(batch_norm(&bn_eval, x));
    for i in (0..shifted.len()).step_by(101) {
        let k = i / plane % c;
        let want = (shifted[i] as f64 - mean[k]) / (var[k] + 1e-5).sqrt();
        close(y[i], want, &format!("evaluation output {i}"));
    }
}

/// Features come out the same whatever the batch size: a short last batch is filled up to the
/// batch size and its extra rows dropped, and batch norm in evaluation mode treats each image
/// alone. Compared against one image at a time (tolerance: f32 summation order, 1e-5).
#[test]
fn features_do_not_depend_on_the_batch_size() {
    use supcon_wgpu::pipeline::augment::AugmentConfig;
    use supcon_wgpu::pipeline::eval::extract_features;
    let device = cpu();
    let all = supcon_wgpu::pipeline::data::digits().unwrap();
    let data = all.subset(&(0..23).collect::<Vec<_>>());
    let encoder = ModelPreset::Small
        .config(1, Stem::Cifar)
        .init(&device)
        .valid();
    let augment = AugmentConfig::digits(vec![0.3], vec![0.4]);
    let one_by_one = to_vec(extract_features(&encoder, &data, &augment, 1, &device).unwrap());
    assert_eq!(one_by_one.len(), 23 * 64);
    // 23 = 2 × 10 + 3 (padded last batch), one batch of 23, one padded batch of 64.
    for batch in [10, 23, 64] {
        let features = extract_features(&encoder, &data, &augment, batch, &device).unwrap();
        assert_eq!(features.dims(), [23, 64], "batch {batch}");
        let got = to_vec(features);
        let worst = got
            .iter()
            .zip(&one_by_one)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "batch {batch}: max difference {worst}");
    }
}

/// Linear evaluation of digit-sized features trains on the CPU; a CIFAR-sized one stays on the
/// device it is given.
#[test]
fn small_linear_evaluations_run_on_the_cpu() {
    use supcon_wgpu::pipeline::eval::{LINEAR_EVAL_CPU_MAX, linear_eval_device};
    // A lazy handle: comparing it never touches an adapter.
    let gpu_like = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    assert_ne!(gpu_like, cpu());
    let digits = linear_eval_device(1438, 64, 10, &gpu_like);
    assert_eq!(digits, cpu());
    let cifar = linear_eval_device(50_000, 512, 10, &gpu_like);
    assert_eq!(cifar, gpu_like);
    let edge = linear_eval_device(LINEAR_EVAL_CPU_MAX + 1, 1, 1, &gpu_like);
    assert_eq!(edge, gpu_like);
    // No overflow on absurd sizes.
    assert_eq!(linear_eval_device(usize::MAX, 2, 2, &gpu_like), gpu_like);
}

/// The weights [`ResNetConfig::feature_maps`] counts per layer (what the memory preflight sizes
/// the optimizer state by) are the encoder's: Burn's `num_params` of every preset and stem.
#[test]
fn feature_maps_count_the_weights() {
    let device = cpu();
    for preset in [
        ModelPreset::Small,
        ModelPreset::ResNet18,
        ModelPreset::ResNet34,
        ModelPreset::ResNet50,
    ] {
        for (stem, channels) in [(Stem::Cifar, 1), (Stem::ImageNet, 3)] {
            let config = preset.config(channels, stem);
            let counted: usize = config.feature_maps(32, 32).iter().map(|m| m.weights).sum();
            assert_eq!(
                counted,
                config.init(&device).num_params(),
                "{preset:?} {stem:?}"
            );
        }
    }
}
