//! SupCon pretraining driven by burn-train's `Learner`: this crate's encoder, projection head and
//! fused loss inside a `TrainStep`, on the embedded digits, two augmented views per image.
//!
//! ```text
//! cargo run --release --features learner --example burn_train_supcon
//! cargo run --release --features learner --example burn_train_supcon -- --epochs 10 --out runs/my-run
//! ```
//!
//! burn-train supplies the loop (`SupervisedTraining`), the metrics (loss, learning rate), the
//! checkpoints (model, optimizer and scheduler per epoch in `OUT/checkpoint/`), the metric logs
//! (`OUT/train/`, `OUT/valid/`), the application log (`OUT/experiment.log`) and the progress
//! output (its plain CLI renderer: the crate is built without burn-train's `tui` feature).
//! The learning rate follows the pipeline's schedule, run by burn's schedulers
//! (`LrSchedule::scheduler`): a linear warm-up from lr/100, then cosine decay to lr/1000.
//! After training, the frozen encoder's features are scored with a kNN classifier on the
//! held-out split.
//!
//! What had to be adapted to burn-train (see docs/burn.md, "Using the loss in burn-train"):
//! - A data set item is one image, but SupCon needs two augmented views of each: the `Batcher`
//!   makes both views on the device and hands the model one `[2b, c, h, w]` batch.
//! - The batcher draws the random augmentation itself (burn-train has no augmentation stage);
//!   the training batcher keeps one seeded generator across epochs (fresh views every epoch),
//!   the validation batcher seeds each batch from its images so that the validation loss
//!   compares the same views from epoch to epoch.
//! - The loss is not a `Module`; the model keeps it as a `#[module(skip)]` field.
//! - burn-train has no kNN or linear-evaluation metric for embeddings, so the kNN score is
//!   computed after `launch` from the returned model (this crate's `pipeline::eval`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, ExecutionError, Int, Tensor, TensorData};
use burn::train::metric::{Adaptor, LearningRateMetric, LossInput, LossMetric};
use burn::train::{
    InferenceStep, ItemLazy, Learner, LearnerSummary, SupervisedTraining, TrainOutput, TrainStep,
};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use supcon_wgpu::backend::{SupConLoss, SupConLossConfig};
use supcon_wgpu::pipeline::augment::{AugmentConfig, Recipe, augment};
use supcon_wgpu::pipeline::data::{self, ImageDataset};
use supcon_wgpu::pipeline::eval::{extract_features, knn_accuracy};
use supcon_wgpu::pipeline::model::{
    HeadKind, ModelPreset, ProjectionHead, ResNet, ResNetConfig, Stem,
};
use supcon_wgpu::pipeline::train::LrSchedule;

type BoxError = Box<dyn std::error::Error>;

// ---------------------------------------------------------------------------------------------
// The model: encoder + projection head, with the SupCon loss in its train and validation steps.
// ---------------------------------------------------------------------------------------------

/// The encoder and projection head of SupCon pretraining, and the loss they are trained with.
#[derive(Module, Debug)]
pub struct SupConModel {
    /// The encoder: the part kept after pretraining.
    encoder: ResNet,
    /// The projection head; its output goes to the loss.
    head: ProjectionHead,
    /// The loss (no parameters: not saved in checkpoints).
    #[module(skip)]
    loss: SupConLoss,
}

/// A batch of `b` images as two augmented views.
#[derive(Clone, Debug)]
pub struct TwoViewBatch {
    /// `[2b, c, h, w]`: the first view of every image, then the second.
    views: Tensor<4>,
    /// `[b]`: the class of each image.
    labels: Tensor<1, Int>,
}

/// What a step reports to burn-train's metrics.
pub struct SupConOutput {
    /// `[1]`: the batch's loss.
    loss: Tensor<1>,
    /// Images in the batch (the loss metric's weight).
    batch_size: usize,
}

impl SupConModel {
    /// The SupCon loss of a batch: one encoder pass over both views, projections reshaped to
    /// `[b, 2, d]` (view-major, the reference code's layout), then the fused loss.
    fn loss(&self, batch: TwoViewBatch) -> SupConOutput {
        let batch_size = batch.labels.dims()[0];
        let z = self.head.forward(self.encoder.forward(batch.views));
        let d = z.dims()[1];
        let features = z.reshape([2, batch_size, d]).swap_dims(0, 1);
        // TrainStep has no error path: a bad batch panics here, as Burn's own ops do.
        let loss = self.loss.forward(features, Some(batch.labels));
        SupConOutput { loss, batch_size }
    }
}

impl TrainStep for SupConModel {
    type Input = TwoViewBatch;
    type Output = SupConOutput;

    fn step(&self, batch: TwoViewBatch) -> TrainOutput<SupConOutput> {
        let output = self.loss(batch);
        let grads = output.loss.backward();
        TrainOutput::new(self, grads, output)
    }
}

impl InferenceStep for SupConModel {
    type Input = TwoViewBatch;
    type Output = SupConOutput;

    fn step(&self, batch: TwoViewBatch) -> SupConOutput {
        self.loss(batch)
    }
}

impl Adaptor<LossInput> for SupConOutput {
    fn adapt(&self) -> LossInput {
        // The loss metric weights a batch by the length of this tensor: one entry per image, so
        // a short last batch counts for its size in the epoch's mean.
        LossInput::new(self.loss.clone().expand([self.batch_size]))
    }
}

impl ItemLazy for SupConOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        // Queue the step's work and hand the metric thread a tensor without the autodiff graph.
        self.loss.device().flush()?;
        Ok(SupConOutput {
            loss: self.loss.without_autodiff(),
            batch_size: self.batch_size,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Data: one item per image; the batcher makes the two views.
// ---------------------------------------------------------------------------------------------

/// One image of the data set.
#[derive(Clone, Debug)]
pub struct DigitItem {
    /// Its position in the data set (seeds the validation views).
    index: usize,
    /// `c·h·w` pixels in `[0, 1]`, channel-major.
    pixels: Vec<f32>,
    /// Its class.
    label: u32,
}

fn items(data: &ImageDataset) -> Vec<DigitItem> {
    (0..data.len())
        .map(|index| DigitItem {
            index,
            pixels: data.image(index).to_vec(),
            label: data.labels[index],
        })
        .collect()
}

/// Where a batch's augmentation parameters come from (a run holds two, so the size difference of
/// the variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Draws {
    /// One generator for the whole run: every batch, every epoch, new views (training).
    Fresh(Mutex<StdRng>),
    /// A generator seeded per batch from this seed and the batch's first image: the same views
    /// every epoch (validation, so that its loss is comparable between epochs).
    PerBatch(u64),
}

/// Uploads a batch of images once and makes two augmented views of each on the device.
pub struct TwoViewBatcher {
    augment: AugmentConfig,
    shape: [usize; 3],
    draws: Draws,
}

impl TwoViewBatcher {
    fn rng(&self, items: &[DigitItem]) -> StdRng {
        match &self.draws {
            // A poisoned lock only means another batch panicked; the generator is still valid.
            Draws::Fresh(rng) => {
                let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                StdRng::from_rng(&mut *rng)
            }
            Draws::PerBatch(seed) => {
                let first = items.first().map_or(0, |item| item.index as u64);
                StdRng::seed_from_u64(seed ^ first.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            }
        }
    }
}

impl Batcher<DigitItem, TwoViewBatch> for TwoViewBatcher {
    fn batch(&self, items: Vec<DigitItem>, device: &Device) -> TwoViewBatch {
        let [c, h, w] = self.shape;
        let b = items.len();
        let mut pixels = Vec::with_capacity(b * c * h * w);
        for item in &items {
            pixels.extend_from_slice(&item.pixels);
        }
        let labels: Vec<i64> = items.iter().map(|item| i64::from(item.label)).collect();
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [b, c, h, w]), device);
        let mut rng = self.rng(&items);
        let first = self.augment.sample(b, h, w, &mut rng);
        let second = self.augment.sample(b, h, w, &mut rng);
        let views = Tensor::cat(
            vec![
                augment(images.clone(), &first, &self.augment),
                augment(images, &second, &self.augment),
            ],
            0,
        );
        TwoViewBatch {
            views,
            labels: Tensor::from_data(TensorData::new(labels, [b]), device),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The encoder.
    pub encoder: ResNetConfig,
    /// Projection dimension.
    pub projection_dim: usize,
    /// Epochs.
    pub epochs: usize,
    /// Images per step (two views each).
    pub batch_size: usize,
    /// Peak learning rate (SGD with momentum 0.9), in `(0, 1]` as burn's schedulers require.
    pub lr: f64,
    /// Epochs of linear warm-up before the cosine decay.
    pub warmup_epochs: usize,
    /// Weight decay.
    pub weight_decay: f64,
    /// The loss's temperature τ.
    pub temperature: f64,
    /// Seeds the weights, the split, the shuffling and the augmentation.
    pub seed: u64,
    /// Use every `subsample`-th image of each split (1: all).
    pub subsample: usize,
    /// Neighbours of the kNN score.
    pub knn_k: usize,
}

impl RunConfig {
    /// The digits defaults: the small ResNet, 30 epochs of batch 256, lr 0.1, τ = 0.1.
    pub fn digits() -> Self {
        RunConfig {
            encoder: ModelPreset::Small.config(1, Stem::Cifar),
            projection_dim: 128,
            epochs: 30,
            batch_size: 256,
            lr: 0.1,
            warmup_epochs: 2,
            weight_decay: 1e-4,
            temperature: 0.1,
            seed: 0,
            subsample: 1,
            knn_k: 20,
        }
    }
}

/// What a run produced.
pub struct RunOutcome {
    /// The mean training loss of each epoch, as burn-train's metric logger recorded it.
    pub train_loss: Vec<f64>,
    /// The mean validation loss of each epoch.
    pub valid_loss: Vec<f64>,
    /// The mean learning rate of each epoch.
    pub learning_rate: Vec<f64>,
    /// kNN top-1 accuracy of the final encoder's features on the held-out split.
    pub knn_accuracy: f64,
    /// Held-out images the kNN score is over.
    pub knn_test_images: usize,
    /// The model after training (validation mode).
    pub model: SupConModel,
}

/// The folders and files burn-train writes into a run's output folder.
const ARTIFACTS: [&str; 4] = ["checkpoint", "train", "valid", "experiment.log"];

/// Refuses an output folder that holds anything but an earlier run's burn-train artifacts, and
/// removes those when `overwrite` is set (burn-train would otherwise append to the old metric
/// logs). Nothing else in the folder is ever deleted.
pub fn prepare_out(out: &Path, overwrite: bool) -> Result<(), BoxError> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(std::fs::create_dir_all(out)?);
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !ARTIFACTS.contains(&name.as_str()) {
            return Err(format!(
                "{} holds {name}, which is not a burn-train artifact; choose another --out",
                out.display()
            )
            .into());
        }
        found.push(name);
    }
    if found.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(format!(
            "{} holds an earlier run ({}); pass --overwrite to replace it or choose another --out",
            out.display(),
            found.join(", ")
        )
        .into());
    }
    for name in found {
        let path = out.join(name);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Per-channel mean and standard deviation of a data set's pixels (the normalisation).
fn channel_stats(data: &ImageDataset) -> (Vec<f32>, Vec<f32>) {
    let plane = data.height * data.width;
    let mut sum = vec![0f64; data.channels];
    let mut sq = vec![0f64; data.channels];
    for i in 0..data.len() {
        for (c, values) in data.image(i).chunks(plane).enumerate() {
            for &v in values {
                sum[c] += f64::from(v);
                sq[c] += f64::from(v) * f64::from(v);
            }
        }
    }
    let n = (data.len() * plane).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| (s / n - m * m).max(1e-12).sqrt() as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// The mean of `metric` per epoch in `split` (the summary's "train" or "valid" rows).
fn per_epoch(rows: &[burn::train::MetricSummary], metric: &str) -> Vec<f64> {
    rows.iter()
        .find(|m| m.name == metric)
        .map(|m| m.entries.iter().map(|e| e.value).collect())
        .unwrap_or_default()
}

/// Trains on the digits with burn-train and scores the encoder with kNN. `device` is a plain
/// (non-autodiff) Burn device; training runs on its autodiff form. Writes into `out`, which
/// must be empty or missing (see [`prepare_out`]).
pub fn run(config: &RunConfig, device: &Device, out: &Path) -> Result<RunOutcome, BoxError> {
    if config.epochs == 0 || config.batch_size < 2 || config.subsample == 0 {
        return Err("epochs and subsample must be at least 1, the batch size at least 2".into());
    }
    let all = data::digits()?;
    let (train_idx, test_idx) = data::stratified_split(&all.labels, 0.2, config.seed)?;
    let every =
        |idx: Vec<usize>| -> Vec<usize> { idx.into_iter().step_by(config.subsample).collect() };
    let train = all.subset(&every(train_idx));
    let test = all.subset(&every(test_idx));
    let (mean, std) = channel_stats(&train);
    let augment_config =
        Recipe::for_images(&train).config(train.height.min(train.width), mean, std);
    augment_config.validate(train.channels)?;
    let shape = [train.channels, train.height, train.width];

    let loss = SupConLossConfig::new()
        .with_temperature(config.temperature)
        .try_init()?;
    let autodiff = device.clone().autodiff();
    // The device's generator draws the initial weights: seeded, the run is reproducible.
    autodiff.seed(config.seed);
    let encoder = config.encoder.init(&autodiff);
    let head = ProjectionHead::new(
        HeadKind::Mlp,
        config.encoder.feature_dim(),
        config.projection_dim,
        &autodiff,
    );
    let model = SupConModel {
        encoder,
        head,
        loss,
    };

    let train_loader = DataLoaderBuilder::new(TwoViewBatcher {
        augment: augment_config.clone(),
        shape,
        draws: Draws::Fresh(Mutex::new(StdRng::seed_from_u64(config.seed))),
    })
    .batch_size(config.batch_size)
    .shuffle(config.seed)
    .set_device(autodiff.clone())
    .build(InMemDataset::new(items(&train)));
    let valid_loader = DataLoaderBuilder::new(TwoViewBatcher {
        augment: augment_config.clone(),
        shape,
        draws: Draws::PerBatch(config.seed),
    })
    .batch_size(config.batch_size)
    .set_device(device.clone())
    .build(InMemDataset::new(items(&test)));

    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let total = steps_per_epoch * config.epochs;
    let warmup = (steps_per_epoch * config.warmup_epochs).min(total.saturating_sub(1));
    let optimizer = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)))
        .init();
    // The pipeline's schedule (warm-up from lr/100, cosine decay to lr/1000) as a Burn scheduler.
    let schedule = LrSchedule::scheduler(config.lr, warmup, total)?;
    let learner = Learner::new(model, optimizer, schedule);

    let result = SupervisedTraining::new(out, train_loader, valid_loader)
        .metrics((LossMetric::new(),))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(config.epochs)
        .summary()
        .launch(learner);
    if let Some(error) = result.error {
        return Err(format!("training failed: {error}").into());
    }

    let summary = LearnerSummary::new(out, &["Loss", "Learning Rate"])?;
    let model = result.model;
    let train_features = extract_features(&model.encoder, &train, &augment_config, 256, device)?;
    let test_features = extract_features(&model.encoder, &test, &augment_config, 256, device)?;
    let knn = knn_accuracy(
        train_features,
        &train.labels,
        test_features,
        &test.labels,
        train.n_classes(),
        config.knn_k.min(train.len()),
    )?;
    Ok(RunOutcome {
        train_loss: per_epoch(&summary.metrics.train, "Loss"),
        valid_loss: per_epoch(&summary.metrics.valid, "Loss"),
        learning_rate: per_epoch(&summary.metrics.train, "Learning Rate"),
        knn_accuracy: knn,
        knn_test_images: test.len(),
        model,
    })
}

// ---------------------------------------------------------------------------------------------
// Command line.
// ---------------------------------------------------------------------------------------------

/// SupCon pretraining of the small ResNet on the embedded digits, with burn-train's Learner.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Images per step (two views each).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Peak learning rate, in (0, 1].
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Epochs of linear warm-up.
    #[arg(long, default_value_t = 2)]
    warmup_epochs: usize,
    /// Temperature τ of the loss.
    #[arg(long, default_value_t = 0.1)]
    temperature: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (checkpoints, metric logs, experiment.log).
    #[arg(long, default_value = "runs/burn-train-supcon")]
    out: PathBuf,
    /// Replace an earlier run's artifacts in --out.
    #[arg(long)]
    overwrite: bool,
}

fn main() -> ExitCode {
    // No logger is installed here: burn-train installs its own, which writes experiment.log.
    let args = Args::parse();
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(args: &Args) -> Result<(), BoxError> {
    let config = RunConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup_epochs: args.warmup_epochs,
        temperature: args.temperature,
        seed: args.seed,
        ..RunConfig::digits()
    };
    prepare_out(&args.out, args.overwrite)?;
    let (device, adapter) = supcon_wgpu::backend::device::request_burn_device()?;
    println!("adapter: {} ({:?})", adapter.name, adapter.backend);
    let outcome = run(&config, &device, &args.out)?;
    let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    println!(
        "final epoch: train loss {:.4}, valid loss {:.4}, learning rate {:.2e}",
        last(&outcome.train_loss),
        last(&outcome.valid_loss),
        last(&outcome.learning_rate)
    );
    println!(
        "kNN (k = {}) accuracy of the encoder's features on {} held-out images: {:.2}%",
        config.knn_k,
        outcome.knn_test_images,
        outcome.knn_accuracy * 100.0
    );
    println!("checkpoints: {}", args.out.join("checkpoint").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// burn-train end to end through `run`, on a tiny budget: one stage of width 8, a quarter of
    /// the digits (360 training images, 90 held out), 8 epochs of 4 steps of 90 images (every
    /// batch, the validation one too, of one size: each new shape costs kernel compilation, and
    /// tuning with `autotune`: most of this test's time on lavapipe). The training and validation
    /// losses must fall, the logged rates must be the warm-up then the cosine decay, the last
    /// epoch's checkpoints must exist, and the features must beat chance (10 %) by far.
    #[test]
    fn learner_trains_supcon_end_to_end() {
        let device = match supcon_wgpu::backend::device::request_burn_device() {
            Ok((device, _)) => device,
            Err(e) if !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                eprintln!("SKIPPED: no GPU adapter ({e}); the burn-train example did not run");
                return;
            }
            Err(e) => panic!("CI=true but no GPU adapter was found ({e})"),
        };
        let out = std::env::temp_dir().join(format!("supcon-burn-train-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let epochs = 8;
        let config = RunConfig {
            encoder: ResNetConfig {
                blocks: vec![1],
                widths: vec![8],
                stem_width: 8,
                ..ModelPreset::Small.config(1, Stem::Cifar)
            },
            projection_dim: 16,
            epochs,
            batch_size: 90,
            lr: 0.5,
            warmup_epochs: 1,
            subsample: 4,
            knn_k: 5,
            ..RunConfig::digits()
        };
        let t0 = std::time::Instant::now();
        let outcome = run(&config, &device, &out).expect("burn-train run");
        eprintln!(
            "{:.1} s: train loss {:?}, valid loss {:?}, lr {:?}, kNN {}",
            t0.elapsed().as_secs_f64(),
            outcome.train_loss,
            outcome.valid_loss,
            outcome.learning_rate,
            outcome.knn_accuracy
        );

        let (train, valid, lr) = (
            &outcome.train_loss,
            &outcome.valid_loss,
            &outcome.learning_rate,
        );
        assert_eq!(
            (train.len(), valid.len(), lr.len()),
            (epochs, epochs, epochs),
            "one value per epoch from burn-train's metric logs"
        );
        assert!(
            train.iter().chain(valid).all(|l| l.is_finite()),
            "finite losses"
        );
        // Measured: 5.19 → 5.02 (training), 5.18 → 5.06 (validation); ln(179) = 5.19 is the
        // loss of features that tell nothing apart.
        assert!(
            train[epochs - 1] < train[0] - 0.05,
            "the training loss falls: {train:?}"
        );
        assert!(
            valid[epochs - 1] < valid[0] - 0.03,
            "the validation loss falls: {valid:?}"
        );
        assert!(lr[0] < lr[1], "warm-up in the first epoch: {lr:?}");
        assert!(
            lr[1..].windows(2).all(|w| w[1] < w[0]),
            "cosine decay after it: {lr:?}"
        );
        for name in ["model", "optim", "scheduler"] {
            let path = out.join("checkpoint").join(format!("{name}-{epochs}.bpk"));
            assert!(path.is_file(), "{} written", path.display());
        }
        assert!(
            outcome.knn_accuracy > 0.4,
            "kNN accuracy {} (chance: 0.1)",
            outcome.knn_accuracy
        );
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn out_folder_with_foreign_files_is_refused_and_artifacts_only_replaced_on_request() {
        let root =
            std::env::temp_dir().join(format!("supcon-burn-train-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        prepare_out(&root, false).unwrap();
        assert!(root.is_dir(), "created");
        std::fs::create_dir_all(root.join("checkpoint")).unwrap();
        std::fs::write(root.join("experiment.log"), b"old").unwrap();
        let err = prepare_out(&root, false).unwrap_err().to_string();
        assert!(err.contains("--overwrite"), "{err}");
        prepare_out(&root, true).unwrap();
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "artifacts removed"
        );
        std::fs::write(root.join("notes.txt"), b"mine").unwrap();
        let err = prepare_out(&root, true).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert!(
            root.join("notes.txt").is_file(),
            "a foreign file is never deleted"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
