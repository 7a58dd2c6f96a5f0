//! Evaluation of a frozen encoder: feature extraction, a weighted kNN classifier on cosine
//! similarities (the monitor run after each epoch) and linear evaluation (a linear classifier
//! trained on the frozen features).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::augment::{AugmentConfig, normalize};
use super::data::{DataError, ImageSource, PREFETCH_BATCHES, prefetch};
use super::model::ResNet;
use super::{PipelineError, Result};
use crate::backend::cosine_similarity;

/// Uploads the pixels of `n` images of `shape` (`[channels, height, width]`), image after
/// image, as a `[n, c, h, w]` tensor; all pixel work happens on the device.
pub fn pixels_tensor(pixels: Vec<f32>, [c, h, w]: [usize; 3], device: &Device) -> Tensor<4> {
    let n = pixels.len() / (c * h * w).max(1);
    Tensor::from_data(TensorData::new(pixels, [n, c, h, w]), device)
}

/// Reads images `indices` of `data` and uploads them as a `[n, c, h, w]` tensor.
///
/// Errors: an image that cannot be read ([`ImageSource::read_into`]).
pub fn batch_tensor(
    data: &dyn ImageSource,
    indices: &[usize],
    device: &Device,
) -> Result<Tensor<4>, DataError> {
    Ok(pixels_tensor(data.read(indices)?, data.shape(), device))
}

/// The labels of `indices` as an Int tensor.
pub fn label_tensor(data: &dyn ImageSource, indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = indices.iter().map(|&i| data.labels()[i] as i64).collect();
    Tensor::from_data(TensorData::new(labels, [indices.len()]), device)
}

/// Encoder features of every image of `data` (normalised, no augmentation, batch-norm in
/// evaluation mode), `[n, feature_dim]`, on `device`, computed `batch_size` images at a time
/// (the next batches read from `data` while the device works on one: [`prefetch`]).
///
/// `encoder` must be a module on a plain (non-autodiff) device, e.g. `model.valid()`.
///
/// Errors: an image that cannot be read.
pub fn extract_features(
    encoder: &ResNet,
    data: &dyn ImageSource,
    augment: &AugmentConfig,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor<2>, DataError> {
    let batch = batch_size.max(1);
    let all: Vec<usize> = (0..data.len()).collect();
    // A short last batch is filled up with its first image and the extra rows dropped: every
    // batch has one shape, so the device compiles and tunes its kernels once.
    let batches: Vec<Vec<usize>> = all
        .chunks(batch)
        .map(|idx| {
            idx.iter()
                .copied()
                .chain(std::iter::repeat(idx[0]))
                .take(batch)
                .collect()
        })
        .collect();
    std::thread::scope(|scope| {
        let read = prefetch(scope, data, batches, PREFETCH_BATCHES);
        let mut parts = Vec::new();
        for (idx, pixels) in all.chunks(batch).zip(read) {
            let images = pixels_tensor(pixels?, data.shape(), device);
            let features = encoder.forward(normalize(images, augment));
            parts.push(if idx.len() < batch {
                features.narrow(0, 0, idx.len())
            } else {
                features
            });
        }
        Ok::<_, DataError>(Tensor::cat(parts, 0))
    })
}

/// The most rows [`mean_rows`] reduces in one Burn op: on wgpu, Burn 0.22.1 reduces an axis of
/// about 65,536 values or more wrongly (see [`super::model::batch_norm`]).
const MAX_REDUCE_ROWS: usize = 16_384;

/// The mean of the rows of `x`, `[1, d]`, reduced in pieces of at most 16,384 rows (on wgpu,
/// Burn 0.22.1 reduces an axis of about 65,536 values or more wrongly) so that it is exact for
/// any number of rows.
///
/// # Shapes
/// - `x`: `[n, d]` with `n >= 1`
pub fn mean_rows(x: Tensor<2>) -> Tensor<2> {
    let [n, _] = x.dims();
    (0..n)
        .step_by(MAX_REDUCE_ROWS)
        .map(|start| {
            x.clone()
                .narrow(0, start, MAX_REDUCE_ROWS.min(n - start))
                .sum_dim(0)
        })
        .reduce(|a, b| a + b)
        .expect("at least one row")
        .div_scalar(n as f32)
}

/// Reads a float tensor back to the host.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// How spread out a set of features is: a collapsed encoder maps every image to (nearly) the
/// same point, and then every accuracy is at chance level.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpread {
    /// Root-mean-square distance of the features from their mean, divided by their
    /// root-mean-square norm: 0 when all are equal, about 1 for features spread around the
    /// origin, small for features that differ little around a common offset.
    pub relative_std: f64,
    /// Mean cosine similarity over all pairs of distinct features (1 when all point the same
    /// way).
    pub mean_cosine: f64,
}

impl FeatureSpread {
    /// Below this [`FeatureSpread::relative_std`] the features count as collapsed: they differ
    /// by less than f32 rounding noise of a few layers, far below what any class structure
    /// needs.
    pub const COLLAPSED_BELOW: f64 = 1e-3;

    /// Whether the features have collapsed (or are not finite).
    pub fn collapsed(&self) -> bool {
        self.relative_std.is_nan() || self.relative_std < Self::COLLAPSED_BELOW
    }
}

/// The [`FeatureSpread`] of `features` (computed on the device, three numbers read back).
///
/// # Shapes
/// - `features`: `[n, d]` with `n >= 2`
pub fn feature_spread(features: Tensor<2>) -> FeatureSpread {
    let [n, _] = features.dims();
    let mean = mean_rows(features.clone());
    let deviation = (features.clone() - mean).powi_scalar(2).sum();
    let squares = features.clone().powi_scalar(2).sum();
    let norms = features
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-30);
    let unit_sum = mean_rows(features / norms)
        .mul_scalar(n as f32)
        .powi_scalar(2)
        .sum();
    let v = to_vec(Tensor::cat(vec![deviation, squares, unit_sum], 0));
    let (deviation, squares, unit_sum) = (v[0] as f64, v[1] as f64, v[2] as f64);
    let n = n as f64;
    FeatureSpread {
        relative_std: (deviation / squares.max(f64::MIN_POSITIVE)).sqrt(),
        mean_cosine: (unit_sum - n) / (n * (n - 1.0)).max(1.0),
    }
}

/// Top-1 accuracy of a weighted kNN classifier: each test sample takes its `k` most
/// cosine-similar training samples, each votes for its class with weight `exp(s / 0.07)`
/// (the monitor of Wu et al. 2018 that contrastive-learning code uses).
///
/// # Shapes
/// - `train`: `[n_train, d]`, `test`: `[n_test, d]` (same device)
pub fn knn_accuracy(
    train: Tensor<2>,
    train_labels: &[u32],
    test: Tensor<2>,
    test_labels: &[u32],
    n_classes: usize,
    k: usize,
) -> Result<f64> {
    let [n_train, _] = train.dims();
    let [n_test, _] = test.dims();
    if n_train != train_labels.len() || n_test != test_labels.len() {
        return Err(PipelineError::Config(format!(
            "kNN: {n_train} train / {n_test} test features but {} / {} labels",
            train_labels.len(),
            test_labels.len()
        )));
    }
    if n_test == 0 || n_train == 0 {
        return Err(PipelineError::Config(
            "kNN needs train and test samples".into(),
        ));
    }
    let k = k.clamp(1, n_train);
    // Keep each similarity block under ~16 M entries (64 MiB): far below the 128 MiB storage
    // binding limit of small devices.
    let rows = (16 * 1024 * 1024 / n_train).clamp(1, n_test);
    let mut correct = 0usize;
    let mut start = 0;
    while start < n_test {
        let m = rows.min(n_test - start);
        let block = test.clone().narrow(0, start, m);
        let sims = cosine_similarity(block, train.clone());
        let (values, indices) = sims.topk_with_indices(k, 1);
        let values = to_vec(values);
        let indices: Vec<i64> = indices
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        if values.len() != m * k || indices.len() != m * k {
            return Err(PipelineError::Config("kNN: device readback failed".into()));
        }
        let mut scores = vec![0f64; n_classes];
        for r in 0..m {
            scores.iter_mut().for_each(|s| *s = 0.0);
            for j in 0..k {
                let idx = indices[r * k + j] as usize;
                let class = train_labels[idx.min(n_train - 1)] as usize;
                if class < n_classes {
                    scores[class] += (values[r * k + j] as f64 / 0.07).exp();
                }
            }
            let best = argmax(&scores);
            if best == test_labels[start + r] as usize {
                correct += 1;
            }
        }
        start += m;
    }
    Ok(correct as f64 / n_test as f64)
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The largest linear evaluation, in multiply-adds of one pass over the training features
/// (`n_train × d × n_classes`), that [`linear_eval_device`] trains on the CPU.
pub const LINEAR_EVAL_CPU_MAX: usize = 1 << 26;

/// Where linear evaluation of `n_train` features of dimension `d` in `n_classes` classes runs:
/// Burn's Flex backend on the CPU when the problem is at most [`LINEAR_EVAL_CPU_MAX`]
/// (there its hundreds of tiny steps take about a second, where a GPU spends longer compiling
/// and launching their kernels than computing), else `device`.
pub fn linear_eval_device(n_train: usize, d: usize, n_classes: usize, device: &Device) -> Device {
    let work = n_train.saturating_mul(d).saturating_mul(n_classes);
    if work <= LINEAR_EVAL_CPU_MAX {
        // The CPU backend this crate builds (Burn's `flex` feature).
        Device::flex()
    } else {
        device.clone()
    }
}

/// Settings of the linear evaluation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LinearEvalConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Peak learning rate of SGD (momentum 0.9, cosine decay).
    pub lr: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Seed of the classifier's initial weights and of the shuffling.
    pub seed: u64,
}

impl Default for LinearEvalConfig {
    fn default() -> Self {
        LinearEvalConfig {
            epochs: 100,
            batch_size: 256,
            lr: 0.1,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// The outcome of linear evaluation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LinearEvalResult {
    /// Top-1 accuracy on the training features.
    pub train_accuracy: f64,
    /// Top-1 accuracy on the test features.
    pub test_accuracy: f64,
    /// Mean cross-entropy of each epoch.
    pub epoch_losses: Vec<f64>,
}

/// Linear evaluation: a linear classifier trained with SGD on frozen features (standardised
/// with the training features' mean and deviation), top-1 accuracy on the test features.
///
/// # Shapes
/// - `train`: `[n_train, d]`, `test`: `[n_test, d]`, on `device` (a plain device; the classifier
///   trains on its autodiff twin)
pub fn linear_eval(
    train: Tensor<2>,
    train_labels: &[u32],
    test: Tensor<2>,
    test_labels: &[u32],
    n_classes: usize,
    config: &LinearEvalConfig,
    device: &Device,
) -> Result<LinearEvalResult> {
    let [n_train, d] = train.dims();
    if n_train != train_labels.len() || test.dims()[0] != test_labels.len() {
        return Err(PipelineError::Config(
            "linear evaluation: features and labels differ in count".into(),
        ));
    }
    if config.epochs == 0 || config.batch_size == 0 || config.lr.is_nan() || config.lr <= 0.0 {
        return Err(PipelineError::Config(format!(
            "linear evaluation needs epochs >= 1, batch size >= 1 and lr > 0 (got {config:?})"
        )));
    }
    let mean = mean_rows(train.clone());
    let std = mean_rows((train.clone() - mean.clone()).powi_scalar(2))
        .sqrt()
        .add_scalar(1e-6);
    let standardize = |x: Tensor<2>| (x - mean.clone()) / std.clone();
    let ad = device.clone().autodiff();
    let train_x = Tensor::<2>::from_data(standardize(train).into_data(), &ad);
    let test_x = standardize(test);
    let labels_i: Vec<i64> = train_labels.iter().map(|&l| l as i64).collect();
    let train_y = Tensor::<1, Int>::from_data(TensorData::new(labels_i, [n_train]), &ad);

    // Seeded: the classifier's initial weights depend on `config.seed` alone, so a resumed run
    // evaluates exactly as the uninterrupted one.
    let mut classifier: Linear = super::seeded_init(&ad, config.seed, || {
        LinearConfig::new(d, n_classes).init(&ad)
    });
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(
            config.weight_decay as f32,
        )))
        .init();
    let ce = CrossEntropyLossConfig::new().init(&ad);
    let steps_per_epoch = n_train.div_ceil(config.batch_size);
    let total = (steps_per_epoch * config.epochs) as f64;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..n_train).collect();
    let mut epoch_losses = Vec::with_capacity(config.epochs);
    let mut step = 0usize;
    let bar = indicatif::ProgressBar::new(config.epochs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "linear eval [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )
        .expect("valid template"),
    );
    for _ in 0..config.epochs {
        order.shuffle(&mut rng);
        let mut sum = Tensor::<1>::zeros([1], device);
        for idx in order.chunks(config.batch_size) {
            let lr = config.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            let idx_t = Tensor::<1, Int>::from_data(
                TensorData::new(idx.iter().map(|&i| i as i64).collect(), [idx.len()]),
                &ad,
            );
            let x = train_x.clone().select(0, idx_t.clone());
            let y = train_y.clone().select(0, idx_t);
            let loss = ce.forward(classifier.forward(x), y);
            sum = sum + loss.clone().inner().mul_scalar(idx.len() as f32);
            let grads = GradientsParams::from_grads(loss.backward(), &classifier);
            classifier = optim.step(lr, classifier, grads);
            step += 1;
        }
        let mean_loss = to_vec(sum).first().copied().unwrap_or(f32::NAN) as f64 / n_train as f64;
        if !mean_loss.is_finite() {
            return Err(PipelineError::Diverged(format!(
                "linear evaluation loss is {mean_loss}"
            )));
        }
        epoch_losses.push(mean_loss);
        bar.set_message(format!("loss {mean_loss:.4}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let classifier = classifier.valid();
    let accuracy = |x: Tensor<2>, labels: &[u32]| -> f64 {
        let pred: Vec<i64> = classifier
            .forward(x)
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        let hits = pred
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p == **l as i64)
            .count();
        hits as f64 / labels.len().max(1) as f64
    };
    let train_plain = train_x.inner();
    Ok(LinearEvalResult {
        train_accuracy: accuracy(train_plain, train_labels),
        test_accuracy: accuracy(test_x, test_labels),
        epoch_losses,
    })
}
