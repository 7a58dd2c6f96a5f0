//! Data parallelism for one contrastive batch over several devices of a process.
//!
//! SupCon's loss is global over the batch: every anchor is contrasted with every other row. A
//! data-parallel step that computes the loss per device (burn-train's `MultiDevice`, a naive
//! port of PyTorch's DDP) shrinks the contrast set to each device's shard. Here each device
//! runs the model on its part of the batch, the features are gathered on the main device
//! (`devices[0]`) with Burn's differentiable `to_device`, the loss runs once over every row (the
//! fused kernels where the main device has them), and one backward pass sends each shard's
//! feature gradient back to its device; the parameter gradients come back to the main device,
//! summed. No collective is needed (Burn 0.22 has none on wgpu): every transfer is a
//! `to_device`, which on wgpu goes through the host.
//!
//! - **Replicas.** Each step copies the model from the main device to every other device
//!   ([`Module::fork`] of a fresh training copy: its own parameters and running statistics);
//!   the main device runs the model itself. The optimizer steps the main model only, so
//!   nothing has to be kept in sync between steps, and checkpoints do not depend on the
//!   number of devices.
//! - **Batch norm** sees each shard's statistics (as PyTorch's DDP without SyncBN): the step
//!   equals one device's step with gradient caching in chunks of the shards (same rows per
//!   forward pass), and a model without batch norm's step on one device. Running statistics
//!   are those of the main device's shards (the other replicas' are dropped with them, as
//!   DDP keeps rank 0's buffers).
//! - **Gradient caching** ([`DataParallelConfig::with_grad_cache_chunk`]): the chunks are dealt
//!   to the devices in turn (chunk `i` to device `i mod D`), both passes; device memory is
//!   then a chunk's activations on each device plus the batch's features on the main one.
//! - **Concurrency.** Burn queues each device's work without waiting, so the devices compute
//!   at the same time; gathering a shard's features waits for that shard.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Device, Distribution, Int, Tensor};
//! use supcon_wgpu::backend::{CachedForward, DataParallelConfig, SupConLossConfig};
//!
//! #[derive(Module, Debug)]
//! struct Encoder {
//!     linear: Linear,
//! }
//!
//! impl CachedForward<2> for Encoder {
//!     fn forward_tracked(&self, input: Tensor<2>) -> Tensor<2> {
//!         self.linear.forward(input)
//!     }
//! }
//!
//! # fn main() -> supcon_wgpu::Result<()> {
//! // The devices: one CPU device here; two GPUs, e.g. from `device::request_burn_devices(&[0, 1])`.
//! let devices = vec![Device::flex().autodiff()];
//! let model = Encoder { linear: LinearConfig::new(16, 8).init(&devices[0]) };
//! let loss = SupConLossConfig::new().init();
//! let parallel = DataParallelConfig::new(devices.clone()).try_init()?;
//!
//! let normal = Distribution::Normal(0.0, 1.0);
//! let views = [0, 1].map(|_| Tensor::<2>::random([6, 16], normal, &devices[0]));
//! let labels = Tensor::<1, Int>::from_ints([0, 1, 2, 0, 1, 2], &devices[0]);
//! let step = parallel.step(&model, &views, |f| loss.try_forward(f, Some(labels)))?;
//! let weight = step.grads.get::<2>(model.linear.weight.id).expect("a gradient");
//! assert_eq!(weight.device(), devices[0]);
//! # Ok(())
//! # }
//! ```

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Shape, Tensor};

use super::grad_cache::{
    CachedForward, GradCache, GradCacheConfig, GradCacheStep, cached_step, check_views,
    chunk_input, onto,
};
use crate::{Error, Result};

/// A training copy of `model` on `device` (autodiff), with parameters and running statistics
/// of its own: what each step sends to every device but the main one.
///
/// (`valid` then `train` makes the copy's own state: [`Module::fork`] alone would also move the
/// model's running statistics, which clones of a module share.)
///
/// Every float tensor (parameters and running statistics) travels in one transfer: on wgpu
/// each `to_device` is a read-back that waits for the source device, so a tensor at a time
/// would stall a step once per tensor.
pub fn replica<M: Module>(model: &M, device: &Device) -> M {
    let copy = model.valid().train();
    let mut collect = Collect::default();
    copy.visit(&mut collect);
    let Some(flat) = collect.packed() else {
        return copy.fork(device);
    };
    let mut place = Place {
        parts: collect.split(flat.to_device(device)).into_iter(),
    };
    // `fork` then moves whatever is not a float tensor (nothing, in the pipeline's models).
    copy.map(&mut place).fork(device)
}

/// The parameter gradients `grads` of `replica` (on `device`) moved to `main`, in one transfer
/// (see [`replica`]); as they are where `device` is `main`.
pub(crate) fn gradients_to(
    mut grads: GradientsParams,
    replica: &impl Module,
    device: &Device,
    main: &Device,
) -> GradientsParams {
    if device == main {
        return grads;
    }
    let mut take = TakeGrads {
        grads: &mut grads,
        ids: Vec::new(),
        collect: Collect::default(),
    };
    replica.visit(&mut take);
    let TakeGrads { ids, collect, .. } = take;
    let parts = match collect.packed() {
        Some(flat) => collect.split(flat.to_device(main)),
        // Mixed dtypes: a tensor at a time.
        None => collect
            .flats
            .into_iter()
            .map(|t| t.to_device(main))
            .collect(),
    };
    let mut put = PutGrads {
        grads: &mut grads,
        parts: ids.into_iter().zip(parts).collect(),
    };
    replica.visit(&mut put);
    grads
}

/// Float tensors flattened, in the order a module visits them, with their shapes.
#[derive(Default)]
struct Collect {
    flats: Vec<Tensor<1>>,
    shapes: Vec<Shape>,
}

impl Collect {
    fn push<const D: usize>(&mut self, tensor: Tensor<D>) {
        let shape = tensor.shape();
        self.flats.push(tensor.reshape([shape.num_elements()]));
        self.shapes.push(shape);
    }

    /// The tensors end to end in one tensor; `None` for none, or for several dtypes.
    fn packed(&self) -> Option<Tensor<1>> {
        let dtype = self.flats.first()?.dtype();
        if self.flats.iter().any(|t| t.dtype() != dtype) {
            return None;
        }
        Some(Tensor::cat(self.flats.clone(), 0))
    }

    /// `flat` (a packed copy, wherever it now is) cut back into the tensors, still flat.
    fn split(&self, flat: Tensor<1>) -> Vec<Tensor<1>> {
        let mut start = 0;
        self.shapes
            .iter()
            .map(|shape| {
                let n = shape.num_elements();
                let part = flat.clone().narrow(0, start, n);
                start += n;
                part
            })
            .collect()
    }
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.push(param.val().detach());
    }
}

/// Gives each float tensor of a module its part of a packed copy (shape, tracking kept).
struct Place {
    parts: std::vec::IntoIter<Tensor<1>>,
}

impl ModuleMapper for Place {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let part = self
            .parts
            .next()
            .expect("a part for every float tensor visited");
        param.map(|tensor| {
            let moved = part.reshape(tensor.shape()).detach();
            match tensor.is_require_grad() {
                true => moved.require_grad(),
                false => moved,
            }
        })
    }
}

struct TakeGrads<'a> {
    grads: &'a mut GradientsParams,
    ids: Vec<ParamId>,
    collect: Collect,
}

impl ModuleVisitor for TakeGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.ids.push(param.id);
            self.collect.push(grad);
        }
    }
}

struct PutGrads<'a> {
    grads: &'a mut GradientsParams,
    parts: std::collections::HashMap<ParamId, Tensor<1>>,
}

impl ModuleVisitor for PutGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(part) = self.parts.remove(&param.id) {
            self.grads
                .register::<D>(param.id, part.reshape(param.shape()));
        }
    }
}

/// Devices for [`DataParallel`]; `devices[0]` is the main device (model, optimizer, loss).
#[derive(Debug, Clone)]
pub struct DataParallelConfig {
    /// The devices, each an autodiff device, no device twice; the first is the main one.
    pub devices: Vec<Device>,
    /// Gradient caching's chunk (items of every view per forward pass), `None` for none.
    pub grad_cache_chunk: Option<usize>,
}

impl DataParallelConfig {
    /// The devices, no gradient caching.
    pub fn new(devices: Vec<Device>) -> Self {
        DataParallelConfig {
            devices,
            grad_cache_chunk: None,
        }
    }

    /// Gradient caching in chunks of `chunk` items, dealt to the devices in turn.
    pub fn with_grad_cache_chunk(mut self, chunk: Option<usize>) -> Self {
        self.grad_cache_chunk = chunk;
        self
    }

    /// The data-parallel step. Panics with the message of [`try_init`](Self::try_init)'s
    /// error.
    pub fn init(&self) -> DataParallel {
        self.try_init()
            .unwrap_or_else(|e| panic!("DataParallelConfig: {e}"))
    }

    /// The data-parallel step; [`Error::Devices`] for no device or a device listed
    /// twice, [`Error::Unsupported`] for a device without autodiff, [`Error::InvalidShape`] for
    /// a chunk of 0 items.
    pub fn try_init(&self) -> Result<DataParallel> {
        if self.devices.is_empty() {
            return Err(Error::Devices(
                "data parallelism needs at least one device".into(),
            ));
        }
        for (i, device) in self.devices.iter().enumerate() {
            if let Some(j) = self.devices[..i].iter().position(|d| d == device) {
                return Err(Error::Devices(format!(
                    "device {i} is device {j} again ({device:?}); request a device per entry"
                )));
            }
            if !device.is_autodiff() {
                return Err(Error::Unsupported(format!(
                    "device {i} ({device:?}) has no autodiff: pass `device.autodiff()`"
                )));
            }
        }
        let cache = self
            .grad_cache_chunk
            .map(|chunk| GradCacheConfig::new(chunk).try_init())
            .transpose()?;
        Ok(DataParallel {
            devices: self.devices.clone(),
            cache,
        })
    }
}

/// One SupCon step over several devices: see the [module's documentation](self).
#[derive(Debug, Clone)]
pub struct DataParallel {
    devices: Vec<Device>,
    cache: Option<GradCache>,
}

impl DataParallel {
    /// The devices, the main one first.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Gradient caching, when configured.
    pub fn grad_cache(&self) -> Option<&GradCache> {
        self.cache.as_ref()
    }

    /// The items each device runs in a step of `batch` items without gradient caching: `D`
    /// consecutive ranges whose sizes differ by at most one, the larger ones first.
    pub fn shards(&self, batch: usize) -> Vec<std::ops::Range<usize>> {
        let n = self.devices.len();
        let (base, extra) = (batch / n, batch % n);
        let mut start = 0;
        (0..n)
            .map(|d| {
                let len = base + usize::from(d < extra);
                let range = start..start + len;
                start += len;
                range
            })
            .collect()
    }

    /// The model on every device: `model` itself on the main device, a fresh training copy
    /// forked to each other one.
    fn replicas<const D: usize, M: CachedForward<D>>(&self, model: &M) -> Vec<M> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, device)| match i {
                0 => model.clone(),
                _ => replica(model, device),
            })
            .collect()
    }

    /// One step: the loss of `views` through `model` and its parameter gradients, the batch
    /// spread over the devices. `loss` maps the features of the whole batch,
    /// `[batch, n_views, feature_dim]` on the main device, to a scalar loss `[1]`, as for
    /// [`GradCache::step`]. The gradients are on the main device, keyed by `model`'s
    /// parameters, ready for the optimizer.
    ///
    /// # Shapes
    /// - `views`: `n_views ≥ 1` tensors `[batch, ...]`, all of one shape, on the main device
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for no view, views of different shapes, an empty batch or
    /// (without gradient caching) fewer items than devices; [`Error::Unsupported`] for views
    /// or a model off the main device, or a loss or model that records no graph; and any
    /// error of `loss`.
    pub fn step<const D: usize, M, L>(
        &self,
        model: &M,
        views: &[Tensor<D>],
        loss: L,
    ) -> Result<GradCacheStep>
    where
        M: CachedForward<D>,
        L: FnOnce(Tensor<3>) -> Result<Tensor<1>>,
    {
        let batch = check_views(views)?;
        let main = &self.devices[0];
        if &views[0].device() != main {
            return Err(Error::Unsupported(format!(
                "the views are on {:?}, not on the main device {main:?}",
                views[0].device()
            )));
        }
        let model_devices = model.devices();
        if model_devices.iter().any(|d| d != main) {
            return Err(Error::Unsupported(format!(
                "the model is on {model_devices:?}, not on the main device {main:?}"
            )));
        }
        if let Some(cache) = &self.cache {
            let replicas = self.replicas(model);
            let chunks: Vec<_> = cache.chunks(batch).collect();
            return cached_step(&chunks, model, &replicas, &self.devices, views, loss);
        }
        if batch < self.devices.len() {
            return Err(Error::InvalidShape(format!(
                "a batch of {batch} items cannot be split over {} devices",
                self.devices.len()
            )));
        }
        let replicas = self.replicas(model);
        let n_views = views.len();
        // Each shard's features, gathered on the main device: [n_views, shard, d].
        let features: Vec<Tensor<3>> = self
            .shards(batch)
            .iter()
            .zip(replicas.iter().zip(&self.devices))
            .map(|(range, (replica, device))| {
                let z = onto(
                    replica.forward_tracked(chunk_input(views, range, device)),
                    main,
                );
                let d = z.dims()[1];
                z.reshape([n_views, range.len(), d])
            })
            .collect();
        // [n_views, batch, d] → [batch, n_views, d]: item-major, as the loss reads it.
        let value = loss(Tensor::cat(features, 1).swap_dims(0, 1))?;
        if !value.is_tracked() {
            return Err(Error::Unsupported(
                "the loss recorded no autodiff graph (are the model's parameters frozen?)".into(),
            ));
        }
        let mut grads = value.backward();
        let mut accumulator = GradientsAccumulator::<M>::new();
        for (replica, device) in replicas.iter().zip(&self.devices) {
            let replica_grads = GradientsParams::from_module(&mut grads, replica);
            accumulator.accumulate(model, gradients_to(replica_grads, replica, device, main));
        }
        Ok(GradCacheStep {
            loss: value.detach(),
            grads: accumulator.grads(),
        })
    }
}
