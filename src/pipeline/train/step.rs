//! Pretraining: one epoch of augmented batches, each a forward pass, the loss, autodiff and an
//! optimizer step; the checks that stop a diverged run.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::checkpoint::{RunPaths, latest_epoch};
use super::queue::KeyQueue;
use super::report::progress;
use super::{LrSchedule, Method, TrainConfig};
use crate::backend::{
    DataParallel, DataParallelConfig, GradCache, GradCacheConfig, SupConLoss, SupConLossConfig,
};
use crate::pipeline::augment::augment;
use crate::pipeline::data::{ImageSource, PREFETCH_BATCHES, prefetch};
use crate::pipeline::eval::{label_tensor, pixels_tensor};
use crate::pipeline::model::PretrainModel;
use crate::pipeline::{PipelineError, Result, SplitMix64};

/// Steps between readbacks of the running loss during pretraining.
const READ_EVERY: usize = 10;

/// What every pretraining step uses: the settings, the training set, the losses and the
/// schedule's lengths.
pub(super) struct Pretrainer<'a> {
    config: &'a TrainConfig,
    train: &'a dyn ImageSource,
    /// The autodiff device training runs on.
    device: &'a Device,
    loss_fn: SupConLoss,
    /// Gradient caching, when the run asks for it (on one device).
    grad_cache: Option<GradCache>,
    /// The step spread over `device` and the run's other devices
    /// ([`RunOptions::more_devices`](super::RunOptions)), with gradient caching when asked.
    parallel: Option<DataParallel>,
    ce: CrossEntropyLoss,
    /// Steps per epoch.
    steps: usize,
    /// Steps of the whole run.
    total: usize,
    /// Steps of the linear warmup.
    warmup: usize,
}

/// What one epoch of pretraining did.
#[derive(Debug, Clone, Copy)]
pub(super) struct EpochRun {
    /// The sum of the batches' losses, each weighted by its number of images, as last read back.
    pub(super) loss_sum: f64,
    /// Images trained on.
    pub(super) seen: usize,
    /// The learning rate of the epoch's last step.
    pub(super) lr: f64,
    /// Seconds the epoch took.
    pub(super) seconds: f64,
}

impl<'a> Pretrainer<'a> {
    /// The losses of `config` and its schedule over `train`, training on `device` (autodiff),
    /// each step's batch spread over `device` and `more_devices` when there are any.
    pub(super) fn new(
        config: &'a TrainConfig,
        train: &'a dyn ImageSource,
        device: &'a Device,
        more_devices: &[Device],
    ) -> Result<Self> {
        let loss_fn = SupConLossConfig::new()
            .with_temperature(config.temperature)
            .with_base_temperature(config.base_temperature)
            .try_init()?;
        let grad_cache = config
            .grad_cache_chunk
            .map(|chunk| GradCacheConfig::new(chunk).try_init())
            .transpose()?;
        let parallel = match more_devices.is_empty() {
            true => None,
            false => {
                let devices = std::iter::once(device.clone())
                    .chain(more_devices.iter().map(|d| d.clone().autodiff()))
                    .collect();
                let parallel = DataParallelConfig::new(devices)
                    .with_grad_cache_chunk(config.grad_cache_chunk)
                    .try_init()?;
                Some(parallel)
            }
        };
        let ce = CrossEntropyLossConfig::new().init(device);
        let steps = config.steps_per_epoch(train.len());
        Ok(Pretrainer {
            config,
            train,
            device,
            loss_fn,
            grad_cache,
            parallel,
            ce,
            steps,
            total: steps * config.epochs,
            warmup: steps * config.warmup_epochs,
        })
    }

    /// Runs epoch `epoch` (0-based) from `model` and returns the model after its last step: the
    /// training set in the epoch's seeded order, batch by batch (the next batches read while
    /// the device works: [`prefetch`]), `step` counting the run's optimizer steps. The running loss is read back every [`READ_EVERY`] steps and at the
    /// end; a loss that is not finite ends the run with [`PipelineError::Diverged`].
    pub(super) fn epoch(
        &self,
        model: PretrainModel,
        optim: &mut ModuleOptimizer,
        queue: &mut Option<KeyQueue>,
        step: &mut usize,
        epoch: usize,
        paths: &RunPaths,
    ) -> Result<(PretrainModel, EpochRun)> {
        let config = self.config;
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed_for(config.seed, epoch));
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut rng);
        let bar = progress(
            self.steps as u64,
            format!(
                "{} epoch {}/{}",
                config.method.name(),
                epoch + 1,
                config.epochs
            ),
        );
        let mut loss_sum = 0.0;
        let mut loss_acc: Option<Tensor<1>> = None;
        let first_step = *step;
        let mut seen = 0usize;
        let mut schedule = LrSchedule::from_step(config.lr, self.warmup, self.total, *step)?;
        let mut lr = config.lr;
        let batch = config.step_images(order.len());
        let batches: Vec<&[usize]> = order.chunks_exact(batch).take(self.steps).collect();
        let to_read = batches.iter().map(|idx| idx.to_vec()).collect();
        let model = std::thread::scope(|scope| -> Result<PretrainModel> {
            let mut model = model;
            let read = prefetch(scope, self.train, to_read, PREFETCH_BATCHES);
            for (idx, pixels) in batches.iter().zip(read) {
                let images = pixels_tensor(pixels?, self.train.shape(), self.device);
                lr = schedule.next_rate();
                model = self.step(
                    model,
                    optim,
                    queue.as_mut(),
                    idx,
                    images,
                    lr,
                    &mut rng,
                    &mut loss_acc,
                )?;
                seen += idx.len();
                *step += 1;
                let in_epoch = *step - first_step;
                if in_epoch.is_multiple_of(READ_EVERY) || in_epoch == self.steps {
                    let sum = match loss_acc.clone() {
                        Some(t) => read_loss(t, paths, epoch, *step)?,
                        None => 0.0,
                    };
                    if !sum.is_finite() {
                        return Err(diverged(
                            paths,
                            format!("the loss is {sum} in epoch {} by step {}", epoch + 1, *step),
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
            Ok(model)
        })?;
        bar.finish_and_clear();
        let ran = EpochRun {
            loss_sum,
            seen,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        Ok((model, ran))
    }

    /// One optimizer step at learning rate `lr` on `images`, the images at `idx`: augmentation with
    /// parameters drawn from `rng`, the loss of the method (against the feature queue's keys,
    /// when there is one; then the step's keys are pushed), autodiff. The loss times the batch
    /// size is added to `loss_acc`, which stays on the device (each readback waits for the
    /// device).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        model: PretrainModel,
        optim: &mut ModuleOptimizer,
        mut queue: Option<&mut KeyQueue>,
        idx: &[usize],
        images: Tensor<4>,
        lr: f64,
        rng: &mut StdRng,
        loss_acc: &mut Option<Tensor<1>>,
    ) -> Result<PretrainModel> {
        let config = self.config;
        let [_, h, w] = self.train.shape();
        let b = idx.len();
        let labels = label_tensor(self.train, idx, self.device);
        let v1 = augment(
            images.clone(),
            &config.augment.sample(b, h, w, rng),
            &config.augment,
        );
        let (loss, grads) = match config.method {
            Method::Ce => match &self.parallel {
                Some(parallel) => {
                    // One view: the features are the logits, [b, 1, classes].
                    let step = parallel.step(&model, &[v1], |logits| {
                        let [b, _, classes] = logits.dims();
                        Ok(self.ce.forward(logits.reshape([b, classes]), labels))
                    })?;
                    (step.loss.inner(), step.grads)
                }
                None => {
                    let loss = self.ce.forward(model.forward(v1), labels);
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    (loss.inner(), grads)
                }
            },
            Method::SupCon | Method::SimClr => {
                let v2 = augment(
                    images,
                    &config.augment.sample(b, h, w, rng),
                    &config.augment,
                );
                let labels = (config.method == Method::SupCon).then_some(labels);
                // The queue as it was before this step, the averaged model moved to this
                // step's online weights.
                let keys = queue.as_ref().and_then(|q| q.keys());
                if let Some(q) = queue.as_deref_mut() {
                    q.momentum_update(&model);
                }
                let views = [v1, v2];
                let keep_features = queue.is_some();
                let mut seen: Option<Tensor<3>> = None;
                let loss_of = |features: Tensor<3>| {
                    if keep_features {
                        seen = Some(features.clone());
                    }
                    match keys {
                        Some((k, kl)) => {
                            self.loss_fn
                                .try_forward_with_keys(features, labels.clone(), k, kl)
                        }
                        None => self.loss_fn.try_forward(features, labels.clone()),
                    }
                };
                let (loss, grads) = match (&self.parallel, &self.grad_cache) {
                    (Some(parallel), _) => {
                        let step = parallel.step(&model, &views, loss_of)?;
                        (step.loss.inner(), step.grads)
                    }
                    (None, Some(cache)) => {
                        let step = cache.step(&model, &views, loss_of)?;
                        (step.loss.inner(), step.grads)
                    }
                    (None, None) => {
                        let z = model.forward(Tensor::cat(views.to_vec(), 0));
                        let d = z.dims()[1];
                        // [2b, d] → [b, 2, d]: view-major rows, as the reference code stacks
                        // them.
                        let features = z.reshape([2, b, d]).swap_dims(0, 1);
                        let loss = loss_of(features)?;
                        let grads = GradientsParams::from_grads(loss.backward(), &model);
                        (loss.inner(), grads)
                    }
                };
                if let (Some(q), Some(online)) = (queue, seen) {
                    let chunk = config.grad_cache_chunk.unwrap_or(b);
                    let new_keys = q.step_keys(&views, chunk, online);
                    let new_labels = labels.map(|l| Tensor::cat(vec![l.clone(), l], 0));
                    q.push(new_keys, new_labels);
                }
                (loss, grads)
            }
        };
        let weighted = loss.mul_scalar(b as f32);
        *loss_acc = Some(match loss_acc.take() {
            Some(acc) => acc + weighted,
            None => weighted,
        });
        Ok(optim.step(lr, model, grads))
    }
}

/// The running loss read back after step `step` of epoch `epoch` (0-based); a device that
/// failed since the last read is [`PipelineError::DeviceFailed`].
fn read_loss(t: Tensor<1>, paths: &RunPaths, epoch: usize, step: usize) -> Result<f64> {
    let data = t.try_into_data().map_err(|e| {
        super::device_failed(
            paths,
            epoch,
            &format!("by step {step} (at the read-back of the loss after it)"),
            &e.to_string(),
        )
    })?;
    let values = data
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    Ok(values.first().copied().unwrap_or(f32::NAN) as f64)
}

/// The seed of epoch `epoch`'s generator: SplitMix64's mix of (seed, epoch). Each epoch's
/// shuffle and augmentation come from its own stream, so a resumed run draws exactly what an
/// uninterrupted one would.
fn seed_for(seed: u64, epoch: usize) -> u64 {
    SplitMix64::mix(seed ^ (epoch as u64 + 1).wrapping_mul(SplitMix64::GAMMA))
}

/// Ends the run with [`PipelineError::Diverged`] when a weight of `model` is not finite after
/// epoch `epoch` (0-based).
pub(super) fn check_weights(
    model: &PretrainModel,
    epoch: usize,
    paths: &RunPaths,
    config: &TrainConfig,
) -> Result<()> {
    match first_non_finite_tensor(model) {
        Some(tensor) => Err(diverged(
            paths,
            format!(
                "after epoch {} the weights of {tensor} are not finite",
                epoch + 1
            ),
            config,
        )),
        None => Ok(()),
    }
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

/// The divergence error: what went wrong, what is kept on disk, what to try.
fn diverged(paths: &RunPaths, what: String, config: &TrainConfig) -> PipelineError {
    let kept = match latest_epoch(paths) {
        Some(epoch) => format!(
            "the last good checkpoint (epoch {epoch}) is kept in {}",
            paths.checkpoints().display()
        ),
        None => "no checkpoint was written".to_string(),
    };
    PipelineError::Diverged(format!(
        "{what}; nothing was saved from it ({kept}); try a lower --lr than {}",
        config.lr
    ))
}

#[cfg(test)]
mod tests {
    use super::seed_for;

    #[test]
    fn epoch_seeds_are_pinned() {
        // Values of SplitMix64's mix of `seed ^ (epoch + 1) * GAMMA`: a run's shuffles and
        // augmentations (and so a resumed run's) depend on them.
        assert_eq!(seed_for(0, 0), 16_294_208_416_658_607_535);
        assert_eq!(seed_for(42, 3), 6_349_198_060_258_255_764);
        assert_eq!(seed_for(u64::MAX, 9), 7_129_318_163_414_536_717);
    }
}
