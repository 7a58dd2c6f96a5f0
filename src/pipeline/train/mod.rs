//! Two-stage training: pretraining (SupCon, SimCLR or the cross-entropy baseline) with a kNN
//! monitor, checkpoints and resume, then linear evaluation, metrics, plots and `summary.json`.
//!
//! [`run`] drives the stages; the pieces live along their seams: `checkpoint.rs` (the run
//! folder, its lock, checkpoints and the exported encoder), `step.rs` (pretraining epochs and
//! steps, the divergence checks), `report.rs` (kNN monitor, metrics, plots, summary, progress).

mod checkpoint;
mod queue;
mod report;
mod step;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::{ModuleLrScheduler, ModuleLrSchedulerConfig};
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::augment::AugmentConfig;
use super::data::ImageSource;
use super::eval::{
    LinearEvalConfig, LinearEvalResult, knn_accuracy, linear_eval, linear_eval_device,
};
use super::memory::{self, DeviceMemory};
use super::model::{HeadKind, ModelPreset, PretrainModel, ProjectionHead, Stem};
use super::{PipelineError, Result, write_atomic};

pub use checkpoint::{
    EpochObserver, ResumeFrom, RunLock, RunOptions, RunPaths, prepare_run_folder,
};
pub use report::{EpochMetrics, RunInfo, Summary};

use checkpoint::{RunState, export_encoder, load_checkpoint, save_checkpoint};
use queue::KeyQueue;
use report::{EpochEnd, features_of, summary, write_metrics, write_plots};
use step::{Pretrainer, check_weights};

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
    /// Images per step (each gives two views for the contrastive methods). Every step has a
    /// full batch: an epoch is as many whole batches as the training set holds, and the images
    /// left over (fewer than a batch, others each epoch) wait for a later epoch. A training set
    /// smaller than a batch is one step of all its images.
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
    /// Gradient caching (contrastive methods): the encoder sees this many images (two views
    /// each) at a time, twice per step, while the loss and the gradients stay those of the whole
    /// batch ([`crate::backend::grad_cache`]); `None`: the whole batch in one forward pass.
    #[serde(default)]
    pub grad_cache_chunk: Option<usize>,
    /// A queue of this many keys (contrastive methods): projections of the last steps' views,
    /// L2-normalised, with their labels, that each batch is contrasted against besides itself
    /// (`SupConLoss::forward_with_keys`); 0: no queue.
    #[serde(default)]
    pub queue_size: usize,
    /// The queue's keys come from a momentum encoder, an exponential moving average of encoder +
    /// head with this momentum m (MoCo's 0.999), instead of the online model's own projections.
    #[serde(default)]
    pub momentum_encoder: Option<f64>,
}

impl TrainConfig {
    /// Checks the values; the message names the bad one.
    pub fn validate(&self, data: &dyn ImageSource) -> Result<()> {
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
        if let Some(chunk) = self.grad_cache_chunk {
            if self.method == Method::Ce {
                return bad(
                    "--grad-cache-chunk applies to the contrastive methods (supcon, simclr): \
                     the cross-entropy loss of a batch is a sum over its images"
                        .into(),
                );
            }
            if chunk == 0 || chunk > self.batch_size {
                return bad(format!(
                    "--grad-cache-chunk {chunk} must be between 1 and --batch-size {} \
                     (leave it out to turn gradient caching off)",
                    self.batch_size
                ));
            }
        }
        if self.queue_size > 0 && self.method == Method::Ce {
            return bad(format!(
                "--queue-size {} applies to the contrastive methods (supcon, simclr)",
                self.queue_size
            ));
        }
        if let Some(m) = self.momentum_encoder {
            if self.queue_size == 0 {
                return bad(
                    "--momentum-encoder computes the queue's keys: it needs --queue-size".into(),
                );
            }
            if !(0.0..1.0).contains(&m) {
                return bad(format!("--momentum-encoder {m} must be in [0, 1)"));
            }
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
            .validate(data.shape()[0])
            .map_err(PipelineError::Config)
    }

    /// The images of each step with `n` training images.
    fn step_images(&self, n: usize) -> usize {
        self.batch_size.min(n)
    }

    /// The optimizer steps of an epoch over `n` training images.
    fn steps_per_epoch(&self, n: usize) -> usize {
        let full = n / self.step_images(n).max(1);
        self.max_steps_per_epoch.map_or(full, |m| m.min(full))
    }

    /// The images one forward pass of a step takes with `n` training images (two views each
    /// for the contrastive methods); evaluation runs batches of this size, so it reuses the
    /// shapes (and kernels) of training and never needs more memory.
    fn forward_rows(&self, n: usize) -> usize {
        let views = if self.method == Method::Ce { 1 } else { 2 };
        let images = self.step_images(n);
        views * self.grad_cache_chunk.map_or(images, |c| c.min(images))
    }
}

/// The learning rate of every optimizer step: linear warmup from lr/100 over `warmup` steps, then
/// cosine decay from lr to lr/1000 over the remaining steps of `total` (the reference code's
/// schedule, per step), run by Burn's schedulers.
///
/// Burn's schedulers take rates in (0, 1], so they run the schedule relative to its peak
/// (1 → 1/1000) and each value is scaled by `lr`, which may exceed 1 (large-batch rates do).
/// [`LrSchedule::scheduler`] is the same schedule as a Burn scheduler, for a burn-train `Learner`.
pub struct LrSchedule {
    lr: f64,
    relative: ModuleLrScheduler,
}

impl LrSchedule {
    /// The schedule of a run of `total` steps, `warmup` of them warming up, peaking at `lr`.
    pub fn new(lr: f64, warmup: usize, total: usize) -> Result<Self> {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(PipelineError::Config(format!(
                "a learning-rate schedule needs a positive rate (lr {lr})"
            )));
        }
        let relative = Self::scheduler(1.0, warmup, total)?;
        Ok(Self { lr, relative })
    }

    /// The schedule as a Burn scheduler that yields the rates themselves, for a peak `lr` in
    /// (0, 1] (Burn's limit): what a burn-train `Learner` takes.
    ///
    /// Burn's linear scheduler starts at its first value, and the warmup's first step is already
    /// one `warmup`-th of the way up, so it runs over `warmup - 1` steps from there.
    pub fn scheduler(lr: f64, warmup: usize, total: usize) -> Result<ModuleLrScheduler> {
        if !(lr > 0.0 && lr <= 1.0) || warmup >= total {
            return Err(PipelineError::Config(format!(
                "a learning-rate schedule needs a rate in (0, 1] and fewer warmup steps than \
                 steps (lr {lr}, {warmup} warmup steps of {total})"
            )));
        }
        let decay: LrSchedulerConfig = CosineAnnealingLrSchedulerConfig::new(lr, total - warmup)
            .with_min_lr(lr * 1e-3)
            .into();
        match warmup {
            0 => ModuleLrSchedulerConfig::new(decay).init(),
            w => {
                let warm = match w {
                    1 => LrSchedulerConfig::Constant(lr),
                    w => LinearLrSchedulerConfig::new(lr * (0.01 + 0.99 / w as f64), lr, w - 1)
                        .into(),
                };
                SequentialLrSchedulerConfig::new(vec![warm, decay], vec![w]).init()
            }
        }
        .map_err(|e| PipelineError::Config(format!("learning-rate schedule: {e}")))
    }

    /// The schedule of [`LrSchedule::new`] from optimizer step `step` on (a resumed run).
    pub fn from_step(lr: f64, warmup: usize, total: usize, step: usize) -> Result<Self> {
        let mut schedule = Self::new(lr, warmup, total)?;
        for _ in 0..step {
            schedule.relative.step();
        }
        Ok(schedule)
    }

    /// The rate of the next optimizer step.
    pub fn next_rate(&mut self) -> f64 {
        self.lr * self.relative.step().base()
    }
}

fn build_model(config: &TrainConfig, data: &dyn ImageSource, device: &Device) -> PretrainModel {
    let enc = config.model.config(data.shape()[0], config.stem);
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

/// A run's fixed inputs: its settings, data sets, evaluation device and output folder.
struct RunContext<'a> {
    config: &'a TrainConfig,
    train: &'a dyn ImageSource,
    test: &'a dyn ImageSource,
    /// The device without autodiff: evaluation and linear evaluation run on it.
    plain: Device,
    paths: RunPaths,
}

/// Seconds and images of the pretraining epochs this process ran.
#[derive(Debug, Default, Clone, Copy)]
struct PretrainTime {
    seconds: f64,
    images: usize,
}

/// Runs the whole pipeline: pretraining (resuming from `out/checkpoints` when asked), linear
/// evaluation, metrics, plots, the exported encoder and `summary.json`. Returns `None` when
/// [`RunOptions::stop_after_epochs`] ended the process before the last epoch.
///
/// `device` is a Burn device (autodiff or not); training runs on its autodiff twin.
pub fn run(
    config: &TrainConfig,
    train: &dyn ImageSource,
    test: &dyn ImageSource,
    out: &Path,
    options: &RunOptions,
    device: &Device,
    info: &RunInfo,
) -> Result<Option<Summary>> {
    let started = Instant::now();
    check_inputs(config, train, test)?;
    check_memory(config, train, device, options)?;
    let paths = RunPaths {
        out: out.to_path_buf(),
    };
    let _lock = prepare_run_folder(&paths, options)?;
    let plain = device.clone().inner();
    let ad = plain.clone().autodiff();
    let ctx = RunContext {
        config,
        train,
        test,
        plain,
        paths,
    };
    let mut state = start(&ctx, &ad, options)?;
    let pretrainer = Pretrainer::new(config, train, &ad, &options.more_devices)?;
    let mut time = PretrainTime::default();
    let mut final_features: Option<(Tensor<2>, Tensor<2>)> = None;
    let stop = options
        .stop_after_epochs
        .unwrap_or(config.epochs)
        .min(config.epochs);
    for epoch in state.epoch..stop {
        let first_step = state.step;
        // A kernel that fails inside Burn panics (on the read-back that follows it): the panic
        // ends the run as an error naming the step, before anything of this epoch is saved.
        let (model, ran) = catch_unwind(AssertUnwindSafe(|| {
            pretrainer.epoch(
                state.model,
                &mut state.optim,
                &mut state.queue,
                &mut state.step,
                epoch,
                &ctx.paths,
            )
        }))
        .map_err(|panic| {
            let at = format!(
                "step {} (the epoch's step {})",
                state.step + 1,
                state.step - first_step + 1
            );
            device_failed(&ctx.paths, epoch, &at, &panic_message(&*panic))
        })??;
        state.model = model;
        time.seconds += ran.seconds;
        time.images += ran.seen;
        let EpochEnd { metrics, features } = catch_unwind(AssertUnwindSafe(|| {
            report::end_of_epoch(&ctx, &state.model, &ran, epoch)
        }))
        .map_err(|panic| {
            let what = "the evaluation at its end";
            device_failed(&ctx.paths, epoch, what, &panic_message(&*panic))
        })??;
        if features.is_some() {
            // The model is final: stage 2 reuses these features.
            final_features = features;
        }
        check_weights(&state.model, epoch, &ctx.paths, config)?;
        state.history.push(metrics);
        state.epoch = epoch + 1;
        // The checkpoint first: metrics.jsonl never runs ahead of what a resume restores.
        save_checkpoint(&ctx.paths, config, &state, options.keep_checkpoints)?;
        write_metrics(&ctx.paths, &state.history)?;
        if let Some(observer) = &options.on_epoch_end {
            (observer.0)(state.epoch, state.step);
        }
    }

    if stop < config.epochs {
        log::info!(
            "stopped after epoch {stop} of {}; continue with --resume",
            config.epochs
        );
        return Ok(None);
    }
    finish(&ctx, info, &state, final_features, started, time).map(Some)
}

/// The device memory preflight ([`memory::preflight`]) on each Burn wgpu device of the run: a
/// step that cannot fit is an error before anything is written or launched (unless
/// [`RunOptions::skip_memory_check`], then a warning). With several devices and no gradient
/// caching each device's forward pass holds its share of the batch, checked as chunks of that
/// share (what a one-device run would need `--grad-cache-chunk` for).
fn check_memory(
    config: &TrainConfig,
    train: &dyn ImageSource,
    device: &Device,
    options: &RunOptions,
) -> Result<()> {
    let devices = 1 + options.more_devices.len();
    let mut per_device = config.clone();
    if devices > 1 && per_device.grad_cache_chunk.is_none() {
        let batch = config.batch_size.min(train.len());
        per_device.grad_cache_chunk = Some(batch.div_ceil(devices));
    }
    for (i, device) in std::iter::once(device)
        .chain(&options.more_devices)
        .enumerate()
    {
        check_memory_of(
            &per_device,
            train,
            device,
            options,
            (devices > 1).then_some(i),
        )?;
    }
    Ok(())
}

/// [`check_memory`] on one device, device `index` of several (named in the messages) or the
/// run's only one (`None`).
fn check_memory_of(
    config: &TrainConfig,
    train: &dyn ImageSource,
    device: &Device,
    options: &RunOptions,
    index: Option<usize>,
) -> Result<()> {
    let Some(limits) = DeviceMemory::of(device) else {
        return Ok(());
    };
    let label = index.map_or(String::new(), |i| format!(" on device {i}"));
    let step = match memory::preflight(config, train, &limits) {
        Ok(step) => step,
        Err(e) if options.skip_memory_check => {
            log::warn!("{e}{label} (checked anyway: --skip-memory-check)");
            return Ok(());
        }
        Err(e) => {
            return Err(match (index, e) {
                (Some(i), PipelineError::DeviceMemory(m)) => {
                    PipelineError::DeviceMemory(format!("device {i}: {m}"))
                }
                (_, e) => e,
            });
        }
    };
    let mib = memory::mib;
    log::info!(
        "device memory of a step{label} (estimate): largest tensor {} ({}) of {} allowed, about {} in \
         all{}",
        mib(step.largest_bytes),
        step.largest_name,
        mib(limits.max_tensor_bytes),
        mib(step.total_bytes),
        match limits.total_bytes {
            Some(t) => format!(" of {} available", mib(t)),
            None => " (the device reports no memory size: not checked)".to_string(),
        }
    );
    Ok(())
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// The error of a device that failed during epoch `epoch` (0-based) at `what`, with `message`
/// (Burn's): nothing of the epoch is saved; the last checkpoint stays as it was.
fn device_failed(paths: &RunPaths, epoch: usize, what: &str, message: &str) -> PipelineError {
    let kept = match checkpoint::latest_epoch(paths) {
        Some(e) => format!(
            "the last good checkpoint (epoch {e}) is kept in {}; continue with --resume",
            paths.checkpoints().display()
        ),
        None => "no checkpoint was written".to_string(),
    };
    PipelineError::DeviceFailed(format!(
        "the device failed in epoch {}, {what}: {message}; nothing of this epoch was saved \
         ({kept})",
        epoch + 1
    ))
}

/// The checks of the settings and the data sets that come before anything is written.
fn check_inputs(
    config: &TrainConfig,
    train: &dyn ImageSource,
    test: &dyn ImageSource,
) -> Result<()> {
    config.validate(train)?;
    if test.is_empty() {
        return Err(PipelineError::Config("the test set is empty".into()));
    }
    if test.shape() != train.shape() {
        return Err(PipelineError::Config(
            "train and test images differ in size".into(),
        ));
    }
    Ok(())
}

/// The fresh model (seeded) and optimizer on the autodiff device `ad`; with `options.resume`,
/// the checkpoint `options.resume_from` says loaded into them (verified first).
fn start(ctx: &RunContext, ad: &Device, options: &RunOptions) -> Result<RunState> {
    let (config, train) = (ctx.config, ctx.train);
    let model = super::seeded_init(ad, config.seed, || build_model(config, train, ad));
    let queue = (config.queue_size > 0)
        .then(|| KeyQueue::new(config.queue_size, config.momentum_encoder, &model, ad));
    let state = RunState {
        queue,
        model,
        optim: optimizer(config),
        history: Vec::new(),
        epoch: 0,
        step: 0,
    };
    if !options.resume {
        return Ok(state);
    }
    let state = load_checkpoint(&ctx.paths, config, state, options.resume_from)?;
    // A process killed between its checkpoint and its metrics left them one epoch behind.
    write_metrics(&ctx.paths, &state.history)?;
    log::info!("resuming after epoch {} (step {})", state.epoch, state.step);
    Ok(state)
}

/// Stage 2 and the outputs: linear evaluation on the frozen encoder, `encoder.safetensors`,
/// the plots and `summary.json`.
fn finish(
    ctx: &RunContext,
    info: &RunInfo,
    state: &RunState,
    final_features: Option<(Tensor<2>, Tensor<2>)>,
    started: Instant,
    time: PretrainTime,
) -> Result<Summary> {
    let (config, train, test) = (ctx.config, ctx.train, ctx.test);
    let encoder = state.model.encoder.valid();
    let (train_f, test_f) = match final_features {
        Some(features) => features,
        None => features_of(&encoder, ctx)?,
    };
    let knn = match state.history.last().and_then(|m| m.knn_test_accuracy) {
        Some(a) => a,
        None => knn_accuracy(
            train_f.clone(),
            train.labels(),
            test_f.clone(),
            test.labels(),
            train.n_classes(),
            config.knn_k,
        )?,
    };
    let linear = linear_stage(ctx, train_f, test_f.clone())?;
    export_encoder(&encoder, &ctx.paths)?;
    // A plot that cannot be drawn costs a picture, never the run's results.
    if let Err(e) = write_plots(ctx, &state.history, &linear, test_f, info) {
        log::warn!("plots not written: {e}");
    }
    let summary = summary(ctx, info, &state.history, &linear, knn, started, time);
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&ctx.paths.summary(), &json)?;
    Ok(summary)
}

/// Stage 2: a linear classifier on the frozen encoder's features.
fn linear_stage(
    ctx: &RunContext,
    train_f: Tensor<2>,
    test_f: Tensor<2>,
) -> Result<LinearEvalResult> {
    let (train, test) = (ctx.train, ctx.test);
    let t_lin = Instant::now();
    let [n, d] = train_f.dims();
    let device = linear_eval_device(n, d, train.n_classes(), &ctx.plain);
    // Features cross to the CPU only when linear evaluation runs there.
    let on_device = |t: Tensor<2>| match device == ctx.plain {
        true => t,
        false => Tensor::from_data(t.into_data(), &device),
    };
    let linear = linear_eval(
        on_device(train_f),
        train.labels(),
        on_device(test_f),
        test.labels(),
        train.n_classes(),
        &ctx.config.linear,
        &device,
    )?;
    log::info!(
        "linear evaluation: test accuracy {:.2}% (train {:.2}%), {:.1} s",
        linear.test_accuracy * 100.0,
        linear.train_accuracy * 100.0,
        t_lin.elapsed().as_secs_f64()
    );
    Ok(linear)
}

/// A run's settings for the unit tests: `model` at `batch` images, one epoch, no warmup.
#[cfg(test)]
pub(crate) fn test_config(model: ModelPreset, batch: usize) -> TrainConfig {
    TrainConfig {
        method: Method::SupCon,
        model,
        stem: Stem::Cifar,
        head: HeadKind::Mlp,
        projection_dim: 128,
        epochs: 1,
        batch_size: batch,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        lars: false,
        warmup_epochs: 0,
        temperature: 0.1,
        base_temperature: None,
        seed: 0,
        augment: AugmentConfig::digits(vec![0.3], vec![0.4]),
        linear: LinearEvalConfig::default(),
        knn_k: 1,
        knn_every: 1,
        max_steps_per_epoch: None,
        grad_cache_chunk: None,
        queue_size: 0,
        momentum_encoder: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step is a full batch: 1,438 digits in batches of 256 are 5 steps (158 images wait
    /// for a later epoch); a set smaller than a batch is one step of all of it.
    #[test]
    fn epochs_are_whole_batches() {
        let mut config = test_config(ModelPreset::Small, 256);
        config.projection_dim = 8;
        let shape =
            |c: &TrainConfig, n| (c.steps_per_epoch(n), c.step_images(n), c.forward_rows(n));
        assert_eq!(shape(&config, 1438), (5, 256, 512));
        assert_eq!(shape(&config, 512), (2, 256, 512));
        assert_eq!(shape(&config, 100), (1, 100, 200));
        config.method = Method::Ce;
        assert_eq!(shape(&config, 1438), (5, 256, 256));
        config.max_steps_per_epoch = Some(3);
        assert_eq!(shape(&config, 1438), (3, 256, 256));
        // Gradient caching: evaluation batches are a chunk's views.
        config.method = Method::SupCon;
        config.grad_cache_chunk = Some(32);
        assert_eq!(shape(&config, 1438), (3, 256, 64));
        assert_eq!(shape(&config, 20), (1, 20, 40));
    }
}
