//! Two-stage training: pretraining (SupCon, SimCLR or the cross-entropy baseline) with a kNN
//! monitor, checkpoints and resume, then linear evaluation, metrics, plots and `summary.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::store::burn_pack::Bytes;
use burn::store::{BurnpackStore, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::augment::{AugmentConfig, augment};
use super::data::ImageDataset;
use super::eval::{
    FeatureSpread, LinearEvalConfig, batch_tensor, extract_features, feature_spread, knn_accuracy,
    label_tensor, linear_eval, to_vec,
};
use super::model::{HeadKind, ModelPreset, PretrainModel, ProjectionHead, Stem};
use super::{PipelineError, Result, io_error, plot, write_atomic};
use crate::backend::SupConLossConfig;

/// The pretraining method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// Supervised contrastive loss with the labels (the fused kernels on wgpu).
    SupCon,
    /// The same loss without labels: each image's two views are the only positives.
    SimClr,
    /// Cross-entropy with a linear classifier on the encoder (one augmented view).
    Ce,
}

impl Method {
    /// The method's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::SupCon => "supcon",
            Method::SimClr => "simclr",
            Method::Ce => "ce",
        }
    }

    /// Parses `supcon`, `simclr` or `ce`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "supcon" => Some(Method::SupCon),
            "simclr" => Some(Method::SimClr),
            "ce" => Some(Method::Ce),
            _ => None,
        }
    }
}

/// Everything that defines a run (stored in checkpoints; `--resume` requires the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Pretraining method.
    pub method: Method,
    /// Encoder size.
    pub model: ModelPreset,
    /// Encoder stem.
    pub stem: Stem,
    /// Projection head form.
    pub head: HeadKind,
    /// Projection output dimension.
    pub projection_dim: usize,
    /// Pretraining epochs.
    pub epochs: usize,
    /// Images per step (each gives two views for the contrastive methods).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// LARS (layer-wise trust ratio, coefficient 0.001) instead of plain momentum SGD.
    pub lars: bool,
    /// Epochs of linear warmup before the cosine decay.
    pub warmup_epochs: usize,
    /// Loss temperature τ.
    pub temperature: f64,
    /// τ_base (`None`: equal to τ).
    pub base_temperature: Option<f64>,
    /// Seed of weights, shuffling and augmentation.
    pub seed: u64,
    /// Augmentation recipe.
    pub augment: AugmentConfig,
    /// Linear evaluation settings.
    pub linear: LinearEvalConfig,
    /// k of the kNN monitor.
    pub knn_k: usize,
    /// Run the kNN monitor every this many epochs (and after the last); 0 turns it off.
    pub knn_every: usize,
    /// Stop each epoch after this many steps (tiny budgets in tests); `None`: whole epochs.
    pub max_steps_per_epoch: Option<usize>,
}

impl TrainConfig {
    /// Checks the values; the message names the bad one.
    pub fn validate(&self, data: &ImageDataset) -> Result<()> {
        let bad = |m: String| Err(PipelineError::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "--batch-size {} must be at least 2",
                self.batch_size
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr {} must be positive", self.lr));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("--temp {} must be positive", self.temperature));
        }
        if !(0.0..1.0).contains(&self.momentum)
            || !(0.0..f64::INFINITY).contains(&self.weight_decay)
        {
            return bad("momentum must be in [0, 1) and weight decay >= 0".into());
        }
        if self.warmup_epochs >= self.epochs && self.warmup_epochs > 0 {
            return bad(format!(
                "--warmup-epochs {} must be below --epochs {}",
                self.warmup_epochs, self.epochs
            ));
        }
        if self.projection_dim == 0 {
            return bad("projection dimension must be at least 1".into());
        }
        if data.len() < 2 {
            return bad(format!("the training set has {} images", data.len()));
        }
        if data.n_classes() < 2 {
            return bad(format!(
                "the data set has {} class; training and evaluation need at least two \
                 (a single class would score 100 %)",
                data.n_classes()
            ));
        }
        if self.max_steps_per_epoch == Some(0) {
            return bad("--max-steps-per-epoch must be at least 1".into());
        }
        if self.knn_k == 0 {
            return bad("--knn-k must be at least 1".into());
        }
        let lin = &self.linear;
        if lin.epochs == 0 {
            return bad("--linear-epochs must be at least 1".into());
        }
        if lin.batch_size == 0 {
            return bad("the linear-evaluation batch size must be at least 1".into());
        }
        let lr_ok = lin.lr > 0.0 && lin.lr.is_finite();
        if !lr_ok || !(0.0..f64::INFINITY).contains(&lin.weight_decay) {
            return bad(format!(
                "linear evaluation needs lr > 0 and weight decay >= 0 (got {} and {})",
                lin.lr, lin.weight_decay
            ));
        }
        self.augment
            .validate(data.channels)
            .map_err(PipelineError::Config)
    }

    fn steps_per_epoch(&self, n: usize) -> usize {
        let full = n.div_ceil(self.batch_size);
        self.max_steps_per_epoch.map_or(full, |m| m.min(full))
    }
}

/// The learning rate at `step` of `total`: linear warmup from lr/100 over `warmup` steps,
/// then cosine decay to lr/1000 (the reference code's schedule, per step).
pub fn learning_rate(lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    let min = lr * 1e-3;
    if step < warmup {
        let from = lr * 0.01;
        return from + (lr - from) * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Steps between readbacks of the running loss during pretraining.
const READ_EVERY: usize = 10;

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

/// Where a run is and what it measured, stored with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    /// Epochs completed.
    epoch: usize,
    /// Optimizer steps taken.
    step: usize,
    history: Vec<EpochMetrics>,
    model_file: String,
    optimizer_file: String,
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

/// Paths of a run's outputs.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The output folder.
    pub out: PathBuf,
}

impl RunPaths {
    /// The checkpoint folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.out.join("checkpoints")
    }
    /// The pointer to the newest checkpoint.
    pub fn latest(&self) -> PathBuf {
        self.checkpoints().join("latest.json")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.out.join("metrics.jsonl")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.out.join("summary.json")
    }
    /// The exported encoder.
    pub fn encoder(&self) -> PathBuf {
        self.out.join("encoder.safetensors")
    }
    /// The plot folder.
    pub fn plots(&self) -> PathBuf {
        self.out.join("plots")
    }
}

fn build_model(config: &TrainConfig, data: &ImageDataset, device: &Device) -> PretrainModel {
    let enc = config.model.config(data.channels, config.stem);
    let dim = enc.feature_dim();
    let encoder = enc.init(device);
    match config.method {
        Method::Ce => PretrainModel {
            encoder,
            head: None,
            classifier: Some(LinearConfig::new(dim, data.n_classes()).init(device)),
        },
        _ => PretrainModel {
            encoder,
            head: Some(ProjectionHead::new(
                config.head,
                dim,
                config.projection_dim,
                device,
            )),
            classifier: None,
        },
    }
}

fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    if config.lars {
        return super::lars::LarsConfig {
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            trust_coefficient: 0.001,
        }
        .init();
    }
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(config.momentum)
                .with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)))
        .init()
}

fn checkpoint_error(path: &Path, message: impl std::fmt::Display) -> PipelineError {
    PipelineError::Checkpoint {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes model, optimizer and state for `epoch`; `latest.json` is replaced last, so a crash
/// at any point leaves the previous checkpoint intact.
fn save_checkpoint(
    paths: &RunPaths,
    model: &PretrainModel,
    optim: &ModuleOptimizer,
    mut state: CheckpointState,
) -> Result<()> {
    let dir = paths.checkpoints();
    let model_file = format!("epoch-{:04}.model.bpk", state.epoch);
    let optim_file = format!("epoch-{:04}.optim.bpk", state.epoch);
    let mut store = BurnpackStore::from_bytes(None);
    model
        .save_into(&mut store)
        .map_err(|e| checkpoint_error(&dir, format!("saving the model: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| checkpoint_error(&dir, format!("saving the model: {e}")))?;
    write_atomic(&dir.join(&model_file), &bytes)?;
    let bytes = optim
        .into_bytes()
        .map_err(|e| checkpoint_error(&dir, format!("saving the optimizer: {e}")))?;
    write_atomic(&dir.join(&optim_file), &bytes)?;
    state.model_file = model_file.clone();
    state.optimizer_file = optim_file.clone();
    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
    write_atomic(&paths.latest(), &json)?;
    // Older checkpoints are no longer referenced.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name != model_file && name != optim_file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(
    paths: &RunPaths,
    config: &TrainConfig,
    model: &mut PretrainModel,
    optim: ModuleOptimizer,
) -> Result<(CheckpointState, ModuleOptimizer)> {
    let latest = paths.latest();
    let text = std::fs::read(&latest).map_err(|e| {
        checkpoint_error(
            &latest,
            format!("cannot read ({e}); nothing to resume from"),
        )
    })?;
    let state: CheckpointState = serde_json::from_slice(&text)
        .map_err(|e| checkpoint_error(&latest, format!("corrupt state file: {e}")))?;
    if state.config != *config {
        return Err(checkpoint_error(
            &latest,
            "was written by a run with a different configuration; \
             resume with the same flags (or use a new --out)",
        ));
    }
    let model_path = paths.checkpoints().join(&state.model_file);
    let bytes = std::fs::read(&model_path).map_err(io_error(&model_path))?;
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let applied = model
        .load_from(&mut store)
        .map_err(|e| checkpoint_error(&model_path, format!("corrupt model: {e}")))?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() {
        return Err(checkpoint_error(
            &model_path,
            format!(
                "does not fit the model ({} errors, {} missing tensors)",
                applied.errors.len(),
                applied.missing.len()
            ),
        ));
    }
    let optim_path = paths.checkpoints().join(&state.optimizer_file);
    let bytes = std::fs::read(&optim_path).map_err(io_error(&optim_path))?;
    let optim = optim
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| checkpoint_error(&optim_path, format!("corrupt optimizer state: {e}")))?;
    Ok((state, optim))
}

fn write_metrics(paths: &RunPaths, history: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        text.push('\n');
    }
    write_atomic(&paths.metrics(), text.as_bytes())
}

fn seed_for(seed: u64, epoch: usize) -> u64 {
    // SplitMix64 of (seed, epoch): each epoch's shuffle and augmentation come from its own
    // stream, so a resumed run draws exactly what an uninterrupted one would.
    let mut z = seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn progress(len: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(prefix);
    bar
}

/// How a process takes part in a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in the output folder (an error when there is none).
    pub resume: bool,
    /// Start over in an output folder that holds another run: its checkpoints, metrics,
    /// summary, encoder and plots are removed first. Without it (or `resume`) such a folder is
    /// refused.
    pub overwrite: bool,
    /// Stop after this many epochs in total (checkpoint written, no evaluation): a time-boxed
    /// slice of a longer run, continued later with `resume`.
    pub stop_after_epochs: Option<usize>,
}

/// Holds a run folder's advisory lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// What a run leaves in its folder: a folder holding any of these holds a run. A checkpoint
/// counts once its pointer exists; before that, its files are the unreferenced remains of a
/// write that was cut off (removed by the next checkpoint).
const RUN_OUTPUTS: [&str; 5] = [
    "checkpoints/latest.json",
    "metrics.jsonl",
    "summary.json",
    "encoder.safetensors",
    "plots",
];

/// Makes `paths.out` ready for a run, before any training: creates it (so an unwritable
/// folder fails now), takes its lock ([`PipelineError::Locked`] when another process holds
/// it), removes temporary files a killed process left, and checks what is there against
/// `options`: resuming needs a checkpoint, a fresh start needs an empty folder or `overwrite`.
pub fn prepare_run_folder(paths: &RunPaths, options: &RunOptions) -> Result<RunLock> {
    let out = &paths.out;
    if options.resume && options.overwrite {
        return Err(PipelineError::Config(
            "--resume and --overwrite exclude each other".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let lock_path = out.join(super::LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(PipelineError::Locked { path: out.clone() });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }
    // With the lock held no other process writes here: every temporary file is stale.
    for dir in [out.clone(), paths.checkpoints(), paths.plots()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if super::is_temp_file(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
    }
    let found: Vec<&str> = RUN_OUTPUTS
        .iter()
        .copied()
        .filter(|name| out.join(name).exists())
        .collect();
    if options.resume {
        if !paths.latest().exists() {
            return Err(checkpoint_error(
                &paths.latest(),
                "not found: there is no checkpoint to resume from (start without --resume)",
            ));
        }
    } else if !found.is_empty() {
        if !options.overwrite {
            return Err(PipelineError::RunExists {
                path: out.clone(),
                found: found.join(", "),
            });
        }
        for name in ["checkpoints"].into_iter().chain(found) {
            let path = out.join(name);
            if !path.exists() {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io_error(&path))?;
        }
        super::sync_dir(out).map_err(io_error(out))?;
    }
    Ok(RunLock { _file: file })
}

/// The path of the first float tensor of `model` holding a NaN or infinity, if any: no
/// checkpoint or export is ever written from such weights.
fn first_non_finite_tensor<M: Module>(model: &M) -> Option<String> {
    use burn::store::ModuleSnapshot;
    model
        .collect(None, None, false)
        .into_iter()
        .find_map(|tensor| {
            if !tensor.dtype.is_float() {
                return None;
            }
            let finite = burn::store::bridge::into_data(tensor.clone())
                .ok()
                .and_then(|data| data.convert::<f32>().try_into_vec::<f32>().ok())
                .is_some_and(|values| values.iter().all(|v| v.is_finite()));
            (!finite).then_some(tensor.name)
        })
}

/// Runs the whole pipeline: pretraining (resuming from `out/checkpoints` when asked), linear
/// evaluation, metrics, plots, the exported encoder and `summary.json`. Returns `None` when
/// [`RunOptions::stop_after_epochs`] ended the process before the last epoch.
///
/// `device` is a Burn device (autodiff or not); training runs on its autodiff twin.
pub fn run(
    config: &TrainConfig,
    train: &ImageDataset,
    test: &ImageDataset,
    out: &Path,
    options: &RunOptions,
    device: &Device,
    info: &RunInfo,
) -> Result<Option<Summary>> {
    let resume = options.resume;
    let started = Instant::now();
    config.validate(train)?;
    if test.is_empty() {
        return Err(PipelineError::Config("the test set is empty".into()));
    }
    if (test.channels, test.height, test.width) != (train.channels, train.height, train.width) {
        return Err(PipelineError::Config(
            "train and test images differ in size".into(),
        ));
    }
    let paths = RunPaths {
        out: out.to_path_buf(),
    };
    let _lock = prepare_run_folder(&paths, options)?;
    let plain = device.clone().inner();
    let ad = plain.clone().autodiff();
    let mut model = super::seeded_init(&ad, config.seed, || build_model(config, train, &ad));
    let mut optim = optimizer(config);
    let mut history = Vec::new();
    let mut epoch0 = 0;
    let mut step = 0;
    if resume {
        let (state, o) = load_checkpoint(&paths, config, &mut model, optim)?;
        optim = o;
        history = state.history;
        epoch0 = state.epoch;
        step = state.step;
        // A process killed between its checkpoint and its metrics left them one epoch behind.
        write_metrics(&paths, &history)?;
        log::info!("resuming after epoch {epoch0} (step {step})");
    }

    let loss_fn = SupConLossConfig::new()
        .with_temperature(config.temperature)
        .with_base_temperature(config.base_temperature)
        .try_init()?;
    let ce = CrossEntropyLossConfig::new().init(&ad);
    let steps = config.steps_per_epoch(train.len());
    let total = steps * config.epochs;
    let warmup = steps * config.warmup_epochs;
    let (h, w) = (train.height, train.width);
    let mut pretrain_time = 0.0;
    let mut pretrain_images = 0usize;

    let mut final_features: Option<(Tensor<2>, Tensor<2>)> = None;
    let stop = options
        .stop_after_epochs
        .unwrap_or(config.epochs)
        .min(config.epochs);
    for epoch in epoch0..stop {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed_for(config.seed, epoch));
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let bar = progress(
            steps as u64,
            format!(
                "{} epoch {}/{}",
                config.method.name(),
                epoch + 1,
                config.epochs
            ),
        );
        let mut loss_sum = 0.0;
        let mut loss_acc: Option<Tensor<1>> = None;
        let first_step = step;
        let mut seen = 0usize;
        let mut lr = config.lr;
        for idx in order.chunks(config.batch_size).take(steps) {
            lr = learning_rate(config.lr, step, warmup, total);
            let b = idx.len();
            let images = batch_tensor(train, idx, &ad);
            let labels = label_tensor(train, idx, &ad);
            let v1 = augment(
                images.clone(),
                &config.augment.sample(b, h, w, &mut rng),
                &config.augment,
            );
            let loss = match config.method {
                Method::Ce => ce.forward(model.forward(v1), labels),
                Method::SupCon | Method::SimClr => {
                    let v2 = augment(
                        images,
                        &config.augment.sample(b, h, w, &mut rng),
                        &config.augment,
                    );
                    let z = model.forward(Tensor::cat(vec![v1, v2], 0));
                    let d = z.dims()[1];
                    // [2b, d] → [b, 2, d]: view-major rows, as the reference code stacks them.
                    let features = z.reshape([2, b, d]).swap_dims(0, 1);
                    let labels = (config.method == Method::SupCon).then_some(labels);
                    loss_fn.try_forward(features, labels)?
                }
            };
            // The loss stays on the device: a running sum, read back every READ_EVERY steps and
            // at the epoch's end (each readback waits for the queue).
            let weighted = loss.clone().inner().mul_scalar(b as f32);
            loss_acc = Some(match loss_acc {
                Some(acc) => acc + weighted,
                None => weighted,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            seen += b;
            step += 1;
            let in_epoch = step - first_step;
            if in_epoch % READ_EVERY == 0 || in_epoch == steps {
                let sum = loss_acc
                    .clone()
                    .map(|t| to_vec(t).first().copied().unwrap_or(f32::NAN) as f64)
                    .unwrap_or(0.0);
                if !sum.is_finite() {
                    return Err(diverged(
                        &paths,
                        format!("the loss is {sum} in epoch {} by step {step}", epoch + 1),
                        config,
                    ));
                }
                loss_sum = sum;
                let rate = seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} lr {lr:.4} {rate:.0} img/s",
                    sum / seen as f64
                ));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64();
        pretrain_time += seconds;
        pretrain_images += seen;
        let last = epoch + 1 == config.epochs;
        let (knn, spread) = if config.knn_every > 0 && ((epoch + 1) % config.knn_every == 0 || last)
        {
            let (accuracy, features) = knn_of(&model, train, test, config, &plain)?;
            let spread = feature_spread(features.1.clone());
            if last {
                // The model is final: stage 2 reuses these features.
                final_features = Some(features);
            }
            (Some(accuracy), Some(spread))
        } else {
            (None, None)
        };
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            loss: loss_sum / seen.max(1) as f64,
            lr,
            knn_test_accuracy: knn,
            feature_spread: spread,
            images_per_s: seen as f64 / seconds.max(1e-9),
            seconds,
        };
        log::info!(
            "{} epoch {}/{}: loss {:.4}, lr {:.4}, {:.0} img/s, {:.1} s{}",
            config.method.name(),
            epoch + 1,
            config.epochs,
            metrics.loss,
            lr,
            metrics.images_per_s,
            seconds,
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
                epoch + 1,
                s.relative_std,
                FeatureSpread::COLLAPSED_BELOW
            );
        }
        if let Some(tensor) = first_non_finite_tensor(&model) {
            return Err(diverged(
                &paths,
                format!(
                    "after epoch {} the weights of {tensor} are not finite",
                    epoch + 1
                ),
                config,
            ));
        }
        history.push(metrics);
        // The checkpoint first: metrics.jsonl never runs ahead of what a resume restores.
        save_checkpoint(
            &paths,
            &model,
            &optim,
            CheckpointState {
                config: config.clone(),
                epoch: epoch + 1,
                step,
                history: history.clone(),
                model_file: String::new(),
                optimizer_file: String::new(),
            },
        )?;
        write_metrics(&paths, &history)?;
    }

    if stop < config.epochs {
        log::info!(
            "stopped after epoch {stop} of {}; continue with --resume",
            config.epochs
        );
        return Ok(None);
    }

    // Stage 2: frozen encoder, linear classifier.
    let encoder = model.encoder.valid();
    let (train_f, test_f) = match final_features {
        Some(features) => features,
        None => features_of(&encoder, train, test, config, &plain),
    };
    let knn = match history.last().and_then(|m| m.knn_test_accuracy) {
        Some(a) => a,
        None => knn_accuracy(
            train_f.clone(),
            &train.labels,
            test_f.clone(),
            &test.labels,
            train.n_classes(),
            config.knn_k,
        )?,
    };
    let t_lin = Instant::now();
    let linear = linear_eval(
        train_f,
        &train.labels,
        test_f.clone(),
        &test.labels,
        train.n_classes(),
        &config.linear,
        &plain,
    )?;
    log::info!(
        "linear evaluation: test accuracy {:.2}% (train {:.2}%), {:.1} s",
        linear.test_accuracy * 100.0,
        linear.train_accuracy * 100.0,
        t_lin.elapsed().as_secs_f64()
    );

    // Export the encoder for other Burn programs (safetensors, tensor names = module paths).
    let mut store = SafetensorsStore::from_bytes(None);
    encoder
        .save_into(&mut store)
        .map_err(|e| checkpoint_error(&paths.encoder(), e))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| checkpoint_error(&paths.encoder(), e))?;
    write_atomic(&paths.encoder(), &bytes)?;

    // A plot that cannot be drawn costs a picture, never the run's results.
    if let Err(e) = write_plots(&paths, config, &history, &linear, test_f, test, info) {
        log::warn!("plots not written: {e}");
    }

    let summary = Summary {
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
        pretrain_time_s: pretrain_time,
        images_per_s: pretrain_images as f64 / pretrain_time.max(1e-9),
        train_size: train.len(),
        test_size: test.len(),
        adapter: info.adapter.clone(),
        backend: info.backend.clone(),
        seed: config.seed,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&paths.summary(), &json)?;
    Ok(Some(summary))
}

/// The divergence error: what went wrong, what is kept on disk, what to try.
fn diverged(paths: &RunPaths, what: String, config: &TrainConfig) -> PipelineError {
    let kept = match std::fs::read(paths.latest())
        .ok()
        .and_then(|t| serde_json::from_slice::<CheckpointState>(&t).ok())
    {
        Some(state) => format!(
            "the last good checkpoint (epoch {}) is kept in {}",
            state.epoch,
            paths.checkpoints().display()
        ),
        None => "no checkpoint was written".to_string(),
    };
    PipelineError::Diverged(format!(
        "{what}; nothing was saved from it ({kept}); try a lower --lr than {}",
        config.lr
    ))
}

/// Encoder features of the training and test images. Evaluation batches are as large as the
/// training batches (which hold two views each), so evaluation never needs more device memory
/// than training did.
fn features_of(
    encoder: &super::model::ResNet,
    train: &ImageDataset,
    test: &ImageDataset,
    config: &TrainConfig,
    plain: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let bs = config.batch_size;
    (
        extract_features(encoder, train, &config.augment, bs, plain),
        extract_features(encoder, test, &config.augment, bs, plain),
    )
}

/// kNN test accuracy of the current encoder, with the features it was computed from.
fn knn_of(
    model: &PretrainModel,
    train: &ImageDataset,
    test: &ImageDataset,
    config: &TrainConfig,
    plain: &Device,
) -> Result<(f64, (Tensor<2>, Tensor<2>))> {
    let (train_f, test_f) = features_of(&model.encoder.valid(), train, test, config, plain);
    let accuracy = knn_accuracy(
        train_f.clone(),
        &train.labels,
        test_f.clone(),
        &test.labels,
        train.n_classes(),
        config.knn_k,
    )?;
    Ok((accuracy, (train_f, test_f)))
}

fn write_plots(
    paths: &RunPaths,
    config: &TrainConfig,
    history: &[EpochMetrics],
    linear: &super::eval::LinearEvalResult,
    test_features: Tensor<2>,
    test: &ImageDataset,
    info: &RunInfo,
) -> Result<()> {
    let dir = paths.plots();
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
    plot::line_chart(
        &dir.join("accuracy.png"),
        &format!("Test accuracy ({name})"),
        "epoch",
        "accuracy",
        &series,
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
        &test.labels,
        &test.class_names,
        (700, 600),
    )?;
    Ok(())
}
