//! The device augmentation (Burn ops) against its f64 CPU reference, op by op and all together,
//! on the Flex backend and on wgpu (lavapipe in CI; a missing adapter fails under CI=true).
//!
//! Tolerance: 2e-5 absolute on normalised values (f32 matrix products and colour maths of values
//! in [0, 1], divided by a std of 0.25: a few ulps of 1).
#![cfg(feature = "pipeline")]

use crate::common;

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};
use supcon_wgpu::pipeline::augment::{AugmentConfig, AugmentParams, augment, reference};

const TOL: f32 = 2e-5;

fn devices() -> Vec<(&'static str, Device)> {
    let mut d = vec![("flex", Device::flex())];
    if let Some(device) = common::burn_tensors::shared_device() {
        d.push(("wgpu", device));
    }
    d
}

fn images(rng: &mut StdRng, dims: [usize; 4]) -> Vec<f32> {
    (0..dims.iter().product::<usize>())
        .map(|_| rng.random::<f32>())
        .collect()
}

fn check(label: &str, x: &[f32], dims: [usize; 4], params: &AugmentParams, config: &AugmentConfig) {
    let want = reference::augment(x, dims, params, config);
    for (name, device) in devices() {
        let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), dims), &device);
        let got: Vec<f32> = augment(t, params, config)
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let (i, err) = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold((0, 0f32), |m, (i, e)| if e > m.1 { (i, e) } else { m });
        assert!(
            err <= TOL,
            "{label} on {name}: max error {err} at {i} (got {}, want {})",
            got[i],
            want[i]
        );
    }
}

fn config(c: usize) -> AugmentConfig {
    AugmentConfig::cifar(vec![0.5; c], vec![0.25; c])
}

fn none(n: usize, h: usize, w: usize) -> AugmentParams {
    AugmentParams::identity(n, h, w)
}

#[test]
fn identity_is_normalisation_only() {
    let mut rng = StdRng::seed_from_u64(1);
    let dims = [3, 3, 5, 4];
    let x = images(&mut rng, dims);
    let cfg = config(3);
    let want: Vec<f32> = x.iter().map(|v| (v - 0.5) / 0.25).collect();
    assert_eq!(reference::augment(&x, dims, &none(3, 5, 4), &cfg), want);
    check("identity", &x, dims, &none(3, 5, 4), &cfg);
}

#[test]
fn crop_resize_and_flip() {
    let mut rng = StdRng::seed_from_u64(2);
    let dims = [4, 3, 8, 7];
    let x = images(&mut rng, dims);
    let mut p = none(4, 8, 7);
    p.crop = vec![[0, 0, 8, 7], [2, 1, 4, 5], [1, 3, 7, 2], [5, 5, 3, 2]];
    check("crop", &x, dims, &p, &config(3));
    p.flip = vec![true, false, true, true];
    check("crop + flip", &x, dims, &p, &config(3));
    // A pure flip mirrors the rows exactly.
    let mut f = none(4, 8, 7);
    f.flip = vec![true; 4];
    let out = reference::augment(
        &x,
        dims,
        &f,
        &AugmentConfig::cifar(vec![0.0; 3], vec![1.0; 3]),
    );
    assert_eq!(out[0], x[6]);
    assert_eq!(out[6], x[0]);
}

#[test]
fn each_colour_op_alone_and_in_random_orders() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = 6;
    let dims = [n, 3, 5, 5];
    let x = images(&mut rng, dims);
    for op in 0..4u8 {
        let mut p = none(n, 5, 5);
        p.jitter = vec![true; n];
        for s in 0..n {
            let f = 1.0 + (s as f32 - 2.5) * 0.15;
            p.factors[s] = match op {
                0 => [f, 1.0, 1.0, 0.0],
                1 => [1.0, f, 1.0, 0.0],
                2 => [1.0, 1.0, f, 0.0],
                _ => [1.0, 1.0, 1.0, (s as f32 - 2.5) * 0.04],
            };
        }
        check(&format!("jitter op {op}"), &x, dims, &p, &config(3));
    }
    // Hue shift of a pure red by a third of a turn gives pure green.
    let red = vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    let mut p = none(1, 1, 2);
    p.jitter = vec![true];
    p.factors = vec![[1.0, 1.0, 1.0, 1.0 / 3.0]];
    let id = AugmentConfig::cifar(vec![0.0; 3], vec![1.0; 3]);
    let out = reference::augment(&red, [1, 3, 1, 2], &p, &id);
    for (a, b) in out.iter().zip([0.0, 0.0, 1.0, 1.0, 0.0, 0.0]) {
        assert!((a - b).abs() < 1e-6, "{out:?}");
    }
    // Everything at once with sampled parameters and orders.
    let cfg = config(3);
    let p = cfg.sample(n, 5, 5, &mut rng);
    check("sampled", &x, dims, &p, &cfg);
}

#[test]
fn sampled_batches_match_on_gray_and_colour_images() {
    let mut rng = StdRng::seed_from_u64(4);
    for (c, h, w) in [(1, 8, 8), (3, 9, 6)] {
        let n = 16;
        let dims = [n, c, h, w];
        let x = images(&mut rng, dims);
        let mut cfg = config(c);
        cfg.jitter_p = 0.7;
        cfg.gray_p = 0.4;
        let p = cfg.sample(n, h, w, &mut rng);
        check(&format!("{c}-channel sampled"), &x, dims, &p, &cfg);
        let digits = AugmentConfig::digits(vec![0.3; c], vec![0.4; c]);
        let p = digits.sample(n, h, w, &mut rng);
        check(&format!("{c}-channel digits recipe"), &x, dims, &p, &digits);
    }
}

#[test]
fn sampling_is_seeded_and_in_range() {
    let cfg = config(3);
    let a = cfg.sample(200, 32, 32, &mut StdRng::seed_from_u64(9));
    let b = cfg.sample(200, 32, 32, &mut StdRng::seed_from_u64(9));
    let c = cfg.sample(200, 32, 32, &mut StdRng::seed_from_u64(10));
    assert_eq!(a, b);
    assert_ne!(a, c);
    for [top, left, h, w] in &a.crop {
        assert!(*h >= 1 && *w >= 1 && top + h <= 32 && left + w <= 32);
        let area = (h * w) as f64 / 1024.0;
        assert!((0.15..=1.0).contains(&area), "area fraction {area}");
    }
    let flips = a.flip.iter().filter(|&&f| f).count();
    let jit = a.jitter.iter().filter(|&&f| f).count();
    let gray = a.gray.iter().filter(|&&f| f).count();
    assert!((70..130).contains(&flips), "{flips} flips of 200");
    assert!((140..185).contains(&jit), "{jit} jitters of 200");
    assert!((20..60).contains(&gray), "{gray} grays of 200");
    for f in &a.factors {
        assert!((0.6..=1.4).contains(&f[0]) && (0.6..=1.4).contains(&f[1]));
        assert!((0.6..=1.4).contains(&f[2]) && (-0.1..=0.1).contains(&f[3]));
    }
    for o in &a.order {
        let mut s = *o;
        s.sort();
        assert_eq!(s, [0, 1, 2, 3]);
    }
    assert!(config(3).validate(1).is_err());
    let mut bad = config(3);
    bad.crop_scale = (0.0, 1.0);
    assert!(bad.validate(3).is_err());
}

/// The recipe rule reads the content: colour images get the paper's recipe, grayscale ones
/// (one channel, or three equal channels) the mild one; tiny images keep crops of ≥ 4 px side.
#[test]
fn recipe_follows_the_images() {
    use supcon_wgpu::pipeline::augment::Recipe;
    use supcon_wgpu::pipeline::data::ImageDataset;
    let mut rng = StdRng::seed_from_u64(9);
    let gray = ImageDataset {
        images: images(&mut rng, [3, 1, 8, 8]),
        labels: vec![0, 1, 0],
        channels: 1,
        height: 8,
        width: 8,
        class_names: vec!["a".into(), "b".into()],
    };
    assert_eq!(Recipe::for_images(&gray), Recipe::Mild);
    assert_eq!(Recipe::for_images(&gray.to_rgb()), Recipe::Mild);
    let mut colour = gray.to_rgb();
    colour.images[64 + 5] += 0.01; // one green pixel differs from its red
    assert_eq!(Recipe::for_images(&colour), Recipe::Natural);

    let mild = Recipe::Mild.config(8, vec![0.3], vec![0.4]);
    assert_eq!(mild, AugmentConfig::digits(vec![0.3], vec![0.4]));
    assert_eq!(
        (mild.crop_scale, mild.flip_p, mild.saturation, mild.gray_p),
        ((0.5, 1.0), 0.0, 0.0, 0.0)
    );
    let natural = Recipe::Natural.config(32, vec![0.5; 3], vec![0.2; 3]);
    assert_eq!(natural, AugmentConfig::cifar(vec![0.5; 3], vec![0.2; 3]));
    assert_eq!(
        (
            natural.crop_scale,
            natural.flip_p,
            natural.hue,
            natural.gray_p
        ),
        ((0.2, 1.0), 0.5, 0.1, 0.2)
    );
    // 8×8 colour images: the 0.2 floor would leave 3.6 px of side; 4 px is kept.
    let tiny = Recipe::Natural.config(8, vec![0.5; 3], vec![0.2; 3]);
    assert_eq!(tiny.crop_scale.0, 0.25);
    assert!(tiny.validate(3).is_ok());
    // The printed recipe names its settings.
    let text = natural.to_string();
    assert!(
        text.contains("crop scale 0.20–1.00") && text.contains("flip p 0.50"),
        "{text}"
    );
}
