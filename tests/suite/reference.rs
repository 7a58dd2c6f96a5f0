//! The f64 CPU reference: the golden value from an independent implementation, and its analytic
//! gradient against central finite differences for every option.

use crate::common;

use common::{GOLDEN_LOSS, golden_features, option_grid};
use supcon_wgpu::kernels::similarity::reference::cosine_similarity;
use supcon_wgpu::kernels::supcon::reference::supcon;
use supcon_wgpu::{Positives, Reduction, SupConOptions, SupConShape};

#[test]
fn golden_loss_matches_the_independent_reference() {
    let labels: Vec<i32> = (0..6).map(|b| b % 3).collect();
    let out = supcon(
        &golden_features(),
        SupConShape::new(6, 2, 5),
        Positives::Labels(&labels),
        &SupConOptions::new(0.07),
    );
    // From tests/golden/supcon_golden.py, an independent float64 transcription of the
    // reference PyTorch code (see docs/testing.md: the 9.828058371189472 could not be reproduced).
    let want = GOLDEN_LOSS;
    assert!(
        (out.loss - want).abs() < 1e-12,
        "loss {} vs {want}",
        out.loss
    );
    assert_eq!(out.n_valid_anchors, 12);
}

#[test]
fn gradient_matches_finite_differences_for_every_option() {
    let shape = SupConShape::new(5, 2, 3);
    let mut x: Vec<f64> = (0..30)
        .map(|i| ((i as f64) * 0.731).sin() + 0.3 * ((i * i) as f64 * 0.17).cos())
        .collect();
    // Labels with a singleton class (an anchor without positives under n_views = 1 semantics is
    // covered by the mask below), a mask that is not symmetric, and SimCLR.
    let labels = [0, 1, 0, 2, 1];
    let mut mask = vec![false; 25];
    for (i, j) in [(0, 2), (2, 0), (1, 4), (3, 3), (4, 1), (0, 0)] {
        mask[i * 5 + j] = true;
    }
    let h = 1e-6;
    for options in option_grid(&[(0.5, 0.5), (0.1, 0.07), (1.0, 0.3)]) {
        for positives in [
            Positives::Labels(&labels),
            Positives::None,
            Positives::Mask(&mask),
        ] {
            let analytic = supcon(&x, shape, positives, &options).grad;
            let mut worst = 0.0f64;
            for k in 0..x.len() {
                let orig = x[k];
                x[k] = orig + h;
                let up = supcon(&x, shape, positives, &options).loss;
                x[k] = orig - h;
                let down = supcon(&x, shape, positives, &options).loss;
                x[k] = orig;
                let numeric = (up - down) / (2.0 * h);
                worst = worst.max((numeric - analytic[k]).abs() / (1.0 + numeric.abs()));
            }
            assert!(
                worst < 1e-6,
                "{options:?} {positives:?}: finite-difference error {worst:e}"
            );
        }
    }
}

#[test]
fn anchors_without_positives_contribute_zero() {
    // n_views = 1 and distinct labels: nobody has a positive.
    let x: Vec<f64> = (0..12).map(|i| (i as f64 * 0.9).cos()).collect();
    let labels = [0, 1, 2, 3];
    for reduction in [Reduction::AllAnchors, Reduction::AnchorsWithPositives] {
        let out = supcon(
            &x,
            SupConShape::new(4, 1, 3),
            Positives::Labels(&labels),
            &SupConOptions::new(0.1).with_reduction(reduction),
        );
        assert_eq!(out.loss, 0.0);
        assert_eq!(out.n_valid_anchors, 0);
        assert!(out.grad.iter().all(|&g| g == 0.0));
    }
    // One positive pair among four samples: the mean over all anchors is half the mean over
    // anchors with a positive.
    let labels = [0, 0, 1, 2];
    let shape = SupConShape::new(4, 1, 3);
    let all = supcon(
        &x,
        shape,
        Positives::Labels(&labels),
        &SupConOptions::new(0.1),
    );
    let valid = supcon(
        &x,
        shape,
        Positives::Labels(&labels),
        &SupConOptions::new(0.1).with_reduction(Reduction::AnchorsWithPositives),
    );
    assert_eq!(all.n_valid_anchors, 2);
    assert!(all.loss > 0.0);
    assert!((all.loss * 2.0 - valid.loss).abs() < 1e-12);
}

#[test]
fn simclr_equals_labels_that_are_sample_indices() {
    let x: Vec<f64> = (0..24).map(|i| (i as f64 * 1.3).sin()).collect();
    let shape = SupConShape::new(4, 2, 3);
    let labels = [0, 1, 2, 3];
    let a = supcon(&x, shape, Positives::None, &SupConOptions::new(0.2));
    let b = supcon(
        &x,
        shape,
        Positives::Labels(&labels),
        &SupConOptions::new(0.2),
    );
    assert!((a.loss - b.loss).abs() < 1e-14);
    assert!(a.loss > 0.0);
}

#[test]
fn cosine_similarity_reference_is_cosine() {
    let a = [3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
    let b = [4.0, 3.0, 0.0, -1.0, 0.0, 0.0];
    let s = cosine_similarity(&a, &b, 3);
    assert!((s[0] - 24.0 / 25.0).abs() < 1e-15);
    assert!((s[1] + 0.6).abs() < 1e-15);
    assert_eq!(s[2], 0.0, "zero row gives zero similarity, not NaN");
}

#[test]
fn keys_gradient_matches_finite_differences() {
    use supcon_wgpu::kernels::supcon::reference::supcon_with_keys;
    let shape = SupConShape::new(4, 2, 3).with_keys(5);
    let mut x: Vec<f64> = (0..24).map(|i| ((i as f64) * 0.613).sin() + 0.2).collect();
    let keys: Vec<f64> = (0..15).map(|i| ((i as f64) * 1.37).cos()).collect();
    // Key labels: shared classes (1, 0), an unseen one (7); sample 3 (class 2) has positives
    // only among its own views.
    let labels = [0, 1, 0, 2];
    let key_labels = [1, 7, 0, 1, 7];
    let h = 1e-6;
    for options in option_grid(&[(0.5, 0.5), (0.1, 0.07)]) {
        for (positives, key_positives) in [
            (Positives::Labels(&labels), Positives::Labels(&key_labels)),
            (Positives::None, Positives::None),
        ] {
            let f =
                |x: &[f64]| supcon_with_keys(x, shape, positives, &keys, key_positives, &options);
            let analytic = f(&x).grad;
            let mut worst = 0.0f64;
            for k in 0..x.len() {
                let orig = x[k];
                x[k] = orig + h;
                let up = f(&x).loss;
                x[k] = orig - h;
                let down = f(&x).loss;
                x[k] = orig;
                let numeric = (up - down) / (2.0 * h);
                worst = worst.max((numeric - analytic[k]).abs() / (1.0 + numeric.abs()));
            }
            assert!(
                worst < 1e-6,
                "{options:?} {positives:?}: finite-difference error {worst:e}"
            );
        }
    }
}

#[test]
fn keys_are_contrast_rows_that_are_not_anchors() {
    use supcon_wgpu::kernels::supcon::reference::supcon_with_keys;
    // With one view, anchor i's loss with K keys equals its loss in the plain problem whose
    // batch holds the keys as K more samples (where they are anchors too, which changes only
    // their own losses).
    let (bsz, dim, k) = (6usize, 4usize, 5usize);
    let x: Vec<f64> = (0..bsz * dim).map(|i| ((i as f64) * 0.77).sin()).collect();
    let keys: Vec<f64> = (0..k * dim).map(|i| ((i as f64) * 0.41).cos()).collect();
    let labels = [0, 1, 2, 0, 1, 3];
    let key_labels = [2, 2, 9, 0, 1];
    let joined: Vec<f64> = x.iter().chain(&keys).copied().collect();
    let all_labels: Vec<i32> = labels.iter().chain(&key_labels).copied().collect();
    for options in option_grid(&[(0.2, 0.2)])
        .into_iter()
        .filter(|o| o.contrast_mode == supcon_wgpu::ContrastMode::All)
    {
        let with_keys = supcon_with_keys(
            &x,
            SupConShape::new(bsz as u32, 1, dim as u32).with_keys(k as u32),
            Positives::Labels(&labels),
            &keys,
            Positives::Labels(&key_labels),
            &options,
        );
        let plain = supcon(
            &joined,
            SupConShape::new((bsz + k) as u32, 1, dim as u32),
            Positives::Labels(&all_labels),
            &options,
        );
        assert_eq!(with_keys.anchor_loss.len(), bsz);
        for i in 0..bsz {
            let (a, b) = (with_keys.anchor_loss[i], plain.anchor_loss[i]);
            assert!((a - b).abs() < 1e-12, "{options:?} anchor {i}: {a} vs {b}");
        }
        // Sample 5 (class 3) has no positive in the batch or among the keys.
        assert_eq!(with_keys.anchor_loss[5], 0.0);
        assert_eq!(with_keys.n_valid_anchors, 5);
    }
}
