//! Encoder shapes and sizes: parameter counts equal torchvision's ResNets (without the final
//! fully connected layer, with the CIFAR 3×3 stem where stated), and forward shapes.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use supcon_wgpu::pipeline::model::{HeadKind, ModelPreset, PretrainModel, ProjectionHead, Stem};

#[allow(deprecated)]
fn cpu() -> Device {
    Device::ndarray()
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
