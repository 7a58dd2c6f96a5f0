//! Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
//! Limited Setup"): one contrastive step over a batch whose encoder activations do not fit on
//! the device at once, with the parameter gradients of the whole batch.
//!
//! The batch's images go through the model in chunks twice. The first pass keeps only the
//! features (no autodiff graph); the loss and its gradient with respect to the features are
//! computed over the whole batch at once (the fused kernels need O(rows · dim) memory); the
//! second pass runs each chunk again with the graph and back-propagates that chunk's cached
//! feature gradient, summing the parameter gradients over the chunks. Device memory is one
//! chunk's activations plus the batch's features and their gradient.
//!
//! For a model whose output for an image depends on that image alone, the gradients equal
//! those of the unchunked step up to f32 rounding. Batch norm makes an image's output depend on
//! the others of its batch: here the statistics are those of each chunk (the same in both
//! passes), which is a different function from the unchunked step's, as with any batch split.

use burn::config::Config;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;

use crate::{Error, Result};

/// A model whose features gradient caching can compute chunk by chunk.
///
/// Both methods compute the same function of the input; `D` is the rank of the input batch
/// (4 for images `[batch, channels, height, width]`).
pub trait CachedForward<const D: usize>: Module {
    /// The training forward: the autodiff graph is recorded and training-time state (e.g. batch
    /// norm's running statistics) is updated.
    ///
    /// # Shapes
    /// - `input`: `[batch, ...]`; output: `[batch, feature_dim]`
    fn forward_tracked(&self, input: Tensor<D>) -> Tensor<2>;

    /// The same function without recording the autodiff graph and without updating any state:
    /// gradient caching's first pass; the output is an untracked tensor on the input's device.
    /// The default runs [`forward_tracked`] on the model's inference copy
    /// ([`valid`](Module::valid): no autodiff), which is right for a model whose training
    /// forward has neither state nor randomness; override it for batch norm (batch statistics
    /// without moving the running ones, as the pipeline's `PretrainModel` does) or dropout (the
    /// same mask in both passes).
    ///
    /// [`forward_tracked`]: CachedForward::forward_tracked
    fn forward_untracked(&self, input: Tensor<D>) -> Tensor<2> {
        Tensor::from_inner(self.valid().forward_tracked(input.inner()))
    }
}

/// Gradient caching with chunks of at most `chunk` items (images) of every view.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::SgdConfig;
/// use burn::tensor::{Device, Distribution, Int, Tensor};
/// use supcon_wgpu::backend::{CachedForward, GradCacheConfig, SupConLossConfig};
///
/// #[derive(Module, Debug)]
/// struct Encoder {
///     linear: Linear,
/// }
///
/// impl CachedForward<2> for Encoder {
///     fn forward_tracked(&self, input: Tensor<2>) -> Tensor<2> {
///         self.linear.forward(input)
///     }
/// }
///
/// # fn main() -> supcon_wgpu::Result<()> {
/// let device = Device::flex().autodiff();
/// let model = Encoder { linear: LinearConfig::new(16, 8).init(&device) };
/// let loss = SupConLossConfig::new().init();
/// let mut optim = SgdConfig::new().init();
///
/// // Two views of a batch of 6 items, through the model 4 items at a time.
/// let normal = Distribution::Normal(0.0, 1.0);
/// let views = [0, 1].map(|_| Tensor::<2>::random([6, 16], normal, &device));
/// let labels = Tensor::<1, Int>::from_ints([0, 1, 2, 0, 1, 2], &device);
/// let cache = GradCacheConfig::new(4).try_init()?;
/// let step = cache.step(&model, &views, |features| loss.try_forward(features, Some(labels)))?;
///
/// assert!(step.loss.into_scalar::<f32>() > 0.0);
/// assert!(step.grads.get::<2>(model.linear.weight.id).is_some());
/// let model = optim.step(0.1, model, step.grads);
/// # let _ = model;
/// # Ok(())
/// # }
/// ```
#[derive(Config, Debug)]
pub struct GradCacheConfig {
    /// Items (images) per chunk; each chunk holds this many rows of every view.
    pub chunk: usize,
}

impl GradCacheConfig {
    /// The gradient cache. Panics with the message of [`try_init`](Self::try_init)'s error.
    pub fn init(&self) -> GradCache {
        self.try_init()
            .unwrap_or_else(|e| panic!("GradCacheConfig: {e}"))
    }

    /// The gradient cache; a chunk of 0 items is an [`Error::InvalidShape`].
    ///
    /// ```
    /// use supcon_wgpu::Error;
    /// use supcon_wgpu::backend::GradCacheConfig;
    ///
    /// assert_eq!(GradCacheConfig::new(32).try_init().map(|c| c.chunk()).ok(), Some(32));
    /// assert!(matches!(GradCacheConfig::new(0).try_init(), Err(Error::InvalidShape(_))));
    /// ```
    pub fn try_init(&self) -> Result<GradCache> {
        if self.chunk == 0 {
            return Err(Error::InvalidShape(
                "gradient caching needs chunks of at least one item".into(),
            ));
        }
        Ok(GradCache { chunk: self.chunk })
    }
}

/// See [`GradCacheConfig`].
#[derive(Debug, Clone, Copy)]
pub struct GradCache {
    chunk: usize,
}

/// What [`GradCache::step`] computed.
#[derive(Debug)]
pub struct GradCacheStep {
    /// The loss over the whole batch, detached: `[1]`.
    pub loss: Tensor<1>,
    /// The parameter gradients of the loss over the whole batch, summed over the chunks.
    pub grads: GradientsParams,
}

impl GradCache {
    /// Items per chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// The chunks of a batch of `batch` items: `[start, end)` ranges, all of `chunk` items but
    /// the last.
    pub fn chunks(&self, batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let chunk = self.chunk;
        (0..batch)
            .step_by(chunk)
            .map(move |start| start..(start + chunk).min(batch))
    }

    /// One step: the loss of `views` through `model` and its parameter gradients, computed in
    /// chunks. `loss` maps the features of the whole batch, `[batch, n_views, feature_dim]`
    /// (item-major, as [`SupConLoss::forward`](crate::backend::SupConLoss::forward) takes
    /// them), to a scalar loss `[1]`; it runs once, on a leaf tensor that requires gradients.
    ///
    /// Each chunk feeds the model its items of every view together (view 0's rows, then view
    /// 1's, ...), so a chunk is `n_views × chunk` rows, and the same rows in both passes.
    ///
    /// [`GradCacheConfig`] has a complete example (a model, one step, the optimizer's update).
    ///
    /// # Shapes
    /// - `views`: `n_views ≥ 1` tensors `[batch, ...]`, all of one shape
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for no view, views of different shapes or an empty batch;
    /// [`Error::Unsupported`] for views off an autodiff device or a loss or model that records
    /// no graph; and any error of `loss`.
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
        cached_step(
            &self.chunks(batch).collect::<Vec<_>>(),
            model,
            std::slice::from_ref(model),
            &[views[0].device()],
            views,
            loss,
        )
    }
}

/// The items of a step: checks that `views` are at least one tensor, all of one shape with a
/// non-empty batch, on an autodiff device; returns the batch size.
pub(crate) fn check_views<const D: usize>(views: &[Tensor<D>]) -> Result<usize> {
    let Some(first) = views.first() else {
        return Err(Error::InvalidShape("a step needs at least one view".into()));
    };
    let dims = first.dims();
    if let Some(v) = views.iter().position(|v| v.dims() != dims) {
        return Err(Error::InvalidShape(format!(
            "view {v} has shape {:?}, view 0 {dims:?}",
            views[v].dims()
        )));
    }
    if dims[0] == 0 {
        return Err(Error::InvalidShape("the batch is empty".into()));
    }
    if !first.device().is_autodiff() {
        return Err(Error::Unsupported(
            "a training step needs the views on an autodiff device".into(),
        ));
    }
    Ok(dims[0])
}

/// The model's input for the items `range` of every view: view 0's rows, then view 1's, ...,
/// on `device`.
pub(crate) fn chunk_input<const D: usize>(
    views: &[Tensor<D>],
    range: &std::ops::Range<usize>,
    device: &burn::tensor::Device,
) -> Tensor<D> {
    let input = Tensor::cat(
        views
            .iter()
            .map(|v| v.clone().narrow(0, range.start, range.len()))
            .collect(),
        0,
    );
    onto(input, device)
}

/// `tensor` on `device` (no copy where it is there already).
pub(crate) fn onto<const D: usize>(tensor: Tensor<D>, device: &burn::tensor::Device) -> Tensor<D> {
    if &tensor.device() == device {
        tensor
    } else {
        tensor.to_device(device)
    }
}

/// Gradient caching over `chunks` of the batch, chunk `i` through `replicas[i % replicas.len()]`
/// on `devices[i % replicas.len()]` (each a copy of `model` on a device of its own,
/// `replicas[0]` sharing `model`'s device, the views' device):
/// [`GradCache::step`] with one replica, [`DataParallel`](super::DataParallel) with several.
/// The loss runs on `model`'s device over the whole batch; the gradients come back there,
/// summed over the chunks, keyed by `model`'s parameters.
pub(crate) fn cached_step<const D: usize, M, L>(
    chunks: &[std::ops::Range<usize>],
    model: &M,
    replicas: &[M],
    devices: &[burn::tensor::Device],
    views: &[Tensor<D>],
    loss: L,
) -> Result<GradCacheStep>
where
    M: CachedForward<D>,
    L: FnOnce(Tensor<3>) -> Result<Tensor<1>>,
{
    let n_views = views.len();
    let main = views[0].device();
    let at = |i: usize| (&replicas[i % replicas.len()], &devices[i % replicas.len()]);

    // Pass 1: features of every chunk, no graph. [n_views · c, d] → [n_views, c, d].
    let features: Vec<Tensor<3>> = chunks
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let (replica, device) = at(i);
            let z = onto(
                replica.forward_untracked(chunk_input(views, range, device)),
                &main,
            );
            let d = z.dims()[1];
            z.reshape([n_views, range.len(), d])
        })
        .collect();
    // [n_views, batch, d] → [batch, n_views, d], a leaf of the loss's graph.
    let features = Tensor::cat(features, 1)
        .swap_dims(0, 1)
        .detach()
        .require_grad();
    let value = loss(features.clone())?;
    let no_gradient =
        || Error::Unsupported("the loss does not depend on the features it was given".into());
    if !value.is_tracked() {
        return Err(no_gradient());
    }
    let feature_grad = features
        .grad(&value.backward())
        .map(Tensor::from_inner)
        .ok_or_else(no_gradient)?;
    let d = feature_grad.dims()[2];
    // [n_views, batch, d]: a chunk's seed is a narrow of the batch axis.
    let feature_grad = feature_grad.swap_dims(0, 1);

    // Pass 2: each chunk with its graph, seeded with its cached feature gradient.
    let mut accumulator = GradientsAccumulator::<M>::new();
    for (i, range) in chunks.iter().enumerate() {
        let (replica, device) = at(i);
        let z = replica.forward_tracked(chunk_input(views, range, device));
        let seed = feature_grad
            .clone()
            .narrow(1, range.start, range.len())
            .reshape([n_views * range.len(), d]);
        // d(Σ z ⊙ seed)/dθ = seedᵀ · dz/dθ: the chunk's share of dL/dθ.
        let surrogate = (z * onto(seed, device)).sum();
        if !surrogate.is_tracked() {
            return Err(Error::Unsupported(
                "the model's tracked forward recorded no autodiff graph (are its parameters \
                 frozen?)"
                    .into(),
            ));
        }
        let grads = GradientsParams::from_grads(surrogate.backward(), replica);
        let grads = super::data_parallel::gradients_to(grads, replica, device, &main);
        accumulator.accumulate(model, grads);
    }
    Ok(GradCacheStep {
        loss: value.detach(),
        grads: accumulator.grads(),
    })
}
