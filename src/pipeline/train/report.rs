//! What a run reports: the kNN monitor and each epoch's metrics (`metrics.jsonl`, the log), the
//! plots, `summary.json` and the progress bar.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::checkpoint::RunPaths;
use super::step::EpochRun;
use super::{PretrainTime, RunContext, TrainConfig};
use crate::pipeline::eval::{
    FeatureSpread, LinearEvalResult, extract_features, feature_spread, knn_accuracy, to_vec,
};
use crate::pipeline::model::{PretrainModel, ResNet};
use crate::pipeline::{Result, io_error, plot, write_atomic};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean pretraining loss.
    pub loss: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// kNN test accuracy (fraction), when measured.
    pub knn_test_accuracy: Option<f64>,
    /// The spread of the test images' encoder features, measured with the kNN monitor.
    #[serde(default)]
    pub feature_spread: Option<FeatureSpread>,
    /// Training images per second (each image counted once, whatever the views).
    pub images_per_s: f64,
    /// Seconds of the epoch.
    pub seconds: f64,
}

/// What a run reports at the end (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// `supcon`, `simclr` or `ce`.
    pub method: String,
    /// Encoder preset.
    pub model: String,
    /// Data set name.
    pub dataset: String,
    /// Pretraining epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Linear-evaluation top-1 test accuracy (fraction 0–1).
    pub linear_eval_test_accuracy: f64,
    /// Linear-evaluation top-1 train accuracy.
    pub linear_eval_train_accuracy: f64,
    /// kNN (k = `knn_k`) top-1 test accuracy after pretraining.
    pub knn_test_accuracy: f64,
    /// Mean loss of the last pretraining epoch.
    pub final_loss: f64,
    /// Wall time of the whole run (this process), seconds.
    pub wall_time_s: f64,
    /// Wall time of the pretraining epochs run by this process, seconds.
    pub pretrain_time_s: f64,
    /// Pretraining throughput, images per second.
    pub images_per_s: f64,
    /// Training and test set sizes.
    pub train_size: usize,
    /// Test set size.
    pub test_size: usize,
    /// The adapter's name.
    pub adapter: String,
    /// The adapter's graphics backend.
    pub backend: String,
    /// Whether Burn chose its matmul, convolution and reduction kernels by autotuning or
    /// launched its fixed ones ([`crate::backend::BURN_AUTOTUNE`]).
    pub burn_autotune: bool,
    /// Seed.
    pub seed: u64,
}

/// Names for the summary and the plots.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Data set name.
    pub dataset: String,
    /// Adapter name.
    pub adapter: String,
    /// Graphics backend.
    pub backend: String,
}

/// An epoch's metrics, with the features of its kNN pass when the model is final.
pub(super) struct EpochEnd {
    pub(super) metrics: EpochMetrics,
    /// The encoder features of the training and test images, after the last epoch (when the
    /// kNN monitor ran): stage 2 reuses them.
    pub(super) features: Option<(Tensor<2>, Tensor<2>)>,
}

/// The metrics of epoch `epoch` (0-based) that `ran` trained: the kNN monitor with the feature
/// spread when it is due (every `knn_every` epochs and after the last), logged.
pub(super) fn end_of_epoch(
    ctx: &RunContext,
    model: &PretrainModel,
    ran: &EpochRun,
    epoch: usize,
) -> Result<EpochEnd> {
    let config = ctx.config;
    let last = epoch + 1 == config.epochs;
    let mut features = None;
    let (knn, spread) =
        if config.knn_every > 0 && ((epoch + 1).is_multiple_of(config.knn_every) || last) {
            let (accuracy, knn_features) = knn_of(model, ctx)?;
            let spread = feature_spread(knn_features.1.clone());
            if last {
                features = Some(knn_features);
            }
            (Some(accuracy), Some(spread))
        } else {
            (None, None)
        };
    let metrics = EpochMetrics {
        epoch: epoch + 1,
        loss: ran.loss_sum / ran.seen.max(1) as f64,
        lr: ran.lr,
        knn_test_accuracy: knn,
        feature_spread: spread,
        images_per_s: ran.seen as f64 / ran.seconds.max(1e-9),
        seconds: ran.seconds,
    };
    log_epoch(config, &metrics);
    Ok(EpochEnd { metrics, features })
}

/// Logs an epoch's metrics, and a warning when the features have collapsed.
fn log_epoch(config: &TrainConfig, metrics: &EpochMetrics) {
    let (knn, spread) = (metrics.knn_test_accuracy, metrics.feature_spread);
    log::info!(
        "{} epoch {}/{}: loss {:.4}, lr {:.4}, {:.0} img/s, {:.1} s{}",
        config.method.name(),
        metrics.epoch,
        config.epochs,
        metrics.loss,
        metrics.lr,
        metrics.images_per_s,
        metrics.seconds,
        knn.map(|a| format!(", kNN test accuracy {:.2}%", a * 100.0))
            .unwrap_or_default()
            + &spread
                .map(|s| format!(
                    ", feature spread {:.3} (mean cosine {:.3})",
                    s.relative_std, s.mean_cosine
                ))
                .unwrap_or_default()
    );
    if let Some(s) = spread.filter(FeatureSpread::collapsed) {
        log::warn!(
            "epoch {}: the encoder's features have collapsed (relative spread {:.1e}, below \
             {:.0e}): every test image maps to nearly the same point, so kNN and linear \
             evaluation are at chance level",
            metrics.epoch,
            s.relative_std,
            FeatureSpread::COLLAPSED_BELOW
        );
    }
}

/// Writes `metrics.jsonl`: one line per epoch of `history`.
pub(super) fn write_metrics(paths: &RunPaths, history: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        text.push('\n');
    }
    write_atomic(&paths.metrics(), text.as_bytes())
}

/// Encoder features of the training and test images, in batches of a training forward pass.
pub(super) fn features_of(encoder: &ResNet, ctx: &RunContext) -> Result<(Tensor<2>, Tensor<2>)> {
    let config = ctx.config;
    let bs = config.forward_rows(ctx.train.len());
    Ok((
        extract_features(encoder, ctx.train, &config.augment, bs, &ctx.plain)?,
        extract_features(encoder, ctx.test, &config.augment, bs, &ctx.plain)?,
    ))
}

/// kNN test accuracy of the current encoder, with the features it was computed from.
fn knn_of(model: &PretrainModel, ctx: &RunContext) -> Result<(f64, (Tensor<2>, Tensor<2>))> {
    let (train, test) = (ctx.train, ctx.test);
    let (train_f, test_f) = features_of(&model.encoder.valid(), ctx)?;
    let accuracy = knn_accuracy(
        train_f.clone(),
        train.labels(),
        test_f.clone(),
        test.labels(),
        train.n_classes(),
        ctx.config.knn_k,
    )?;
    Ok((accuracy, (train_f, test_f)))
}

/// What `summary.json` reports.
pub(super) fn summary(
    ctx: &RunContext,
    info: &RunInfo,
    history: &[EpochMetrics],
    linear: &LinearEvalResult,
    knn: f64,
    started: Instant,
    time: PretrainTime,
) -> Summary {
    let config = ctx.config;
    Summary {
        method: config.method.name().into(),
        model: config.model.name().into(),
        dataset: info.dataset.clone(),
        epochs: config.epochs,
        batch_size: config.batch_size,
        linear_eval_test_accuracy: linear.test_accuracy,
        linear_eval_train_accuracy: linear.train_accuracy,
        knn_test_accuracy: knn,
        final_loss: history.last().map_or(f64::NAN, |m| m.loss),
        wall_time_s: started.elapsed().as_secs_f64(),
        pretrain_time_s: time.seconds,
        images_per_s: time.images as f64 / time.seconds.max(1e-9),
        train_size: ctx.train.len(),
        test_size: ctx.test.len(),
        adapter: info.adapter.clone(),
        backend: info.backend.clone(),
        burn_autotune: crate::backend::BURN_AUTOTUNE,
        seed: config.seed,
    }
}

/// Writes the plots: pretraining loss, test accuracy (kNN and linear evaluation), linear
/// evaluation loss, and the PCA of the test embeddings.
pub(super) fn write_plots(
    ctx: &RunContext,
    history: &[EpochMetrics],
    linear: &LinearEvalResult,
    test_features: Tensor<2>,
    info: &RunInfo,
) -> Result<()> {
    let config = ctx.config;
    let dir = ctx.paths.plots();
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let size = (800, 500);
    let name = format!(
        "{} / {} / {}",
        config.method.name(),
        config.model.name(),
        info.dataset
    );
    plot::line_chart(
        &dir.join("loss.png"),
        &format!("Pretraining loss ({name})"),
        "epoch",
        "loss",
        &[plot::Series {
            name: format!("{} loss", config.method.name()),
            points: history.iter().map(|m| (m.epoch as f64, m.loss)).collect(),
        }],
        size,
    )?;
    plot::line_chart(
        &dir.join("accuracy.png"),
        &format!("Test accuracy ({name})"),
        "epoch",
        "accuracy",
        &accuracy_series(config, history, linear),
        size,
    )?;
    plot::line_chart(
        &dir.join("linear_eval_loss.png"),
        &format!("Linear evaluation loss ({name})"),
        "epoch",
        "cross-entropy",
        &[plot::Series {
            name: "train".into(),
            points: linear
                .epoch_losses
                .iter()
                .enumerate()
                .map(|(i, &l)| ((i + 1) as f64, l))
                .collect(),
        }],
        size,
    )?;
    let [n, d] = test_features.dims();
    let values = to_vec(test_features);
    let points = plot::pca_2d(&values, n, d)?;
    plot::scatter_by_class(
        &dir.join("embedding_pca.png"),
        &format!("Test embeddings, PCA ({name})"),
        &points,
        ctx.test.labels(),
        ctx.test.class_names(),
        (700, 600),
    )?;
    Ok(())
}

/// The accuracy plot's lines: kNN per epoch (when measured) and the linear evaluation's result.
fn accuracy_series(
    config: &TrainConfig,
    history: &[EpochMetrics],
    linear: &LinearEvalResult,
) -> Vec<plot::Series> {
    let knn: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|m| m.knn_test_accuracy.map(|a| (m.epoch as f64, a)))
        .collect();
    let last = history.last().map_or(0.0, |m| m.epoch as f64);
    let mut series = vec![plot::Series {
        name: format!("linear eval (test) {:.2}%", linear.test_accuracy * 100.0),
        points: vec![(0.0, linear.test_accuracy), (last, linear.test_accuracy)],
    }];
    if !knn.is_empty() {
        series.insert(
            0,
            plot::Series {
                name: format!("kNN k={} (test)", config.knn_k),
                points: knn,
            },
        );
    }
    series
}

/// A progress bar of `len` steps.
pub(super) fn progress(len: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(prefix);
    bar
}
