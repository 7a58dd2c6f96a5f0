//! The fused, streaming SupCon loss (`shaders/supcon_*.wgsl`) and its f64 CPU reference.
//!
//! Four dispatches, recorded into the caller's encoder in the order of `plan::supcon_launch`
//! (which the Burn extension follows too):
//! 1. `supcon_prepare`: inverse L2 norm of every row (and the non-finite check), and the
//!    normalised rows `z` in view-major order, padded to whole vec4s (what steps 2 and 4 read),
//! 2. `supcon_forward` ([`Strategy::Tiles`]) or `supcon_forward_direct` ([`Strategy::Direct`]):
//!    per-anchor statistics over one split of the contrast rows, streaming over column tiles;
//!    then `supcon_merge` folds the splits in a fixed order into per-anchor log-sum-exps and
//!    losses,
//! 3. `supcon_reduce`: the scalar loss, the anchor weight and the status word,
//! 4. (only for the gradient) dL/dfeatures, recomputing the tiles: `supcon_backward` (raw sums
//!    per split) then `supcon_backward_merge` ([`Strategy::Tiles`]) or, per pass,
//!    `supcon_backward_weights` then `supcon_backward_apply` ([`Strategy::Direct`]).
//!
//! Steps 2 and 4 loop over column tiles. The loop is cut into splits that one dispatch runs side
//! by side (flash-decoding: the grid is row blocks × splits, so that a GPU gets about 1,024
//! workgroups even where N/64 row blocks are few; each split writes partial results to its own
//! slot, and a merge adds the slots in order, so the result is deterministic), and, when it is
//! long, into passes (one dispatch each) so that no workgroup executes more than
//! [`MAX_BARRIERS_PER_WORKGROUP`] barriers (see [`default_pass_columns`]). Extra device memory is
//! O(splits · N) (a few floats per anchor and split; the backward's raw sums, `⌈dim/4⌉` vec4s per
//! row and split, at most ~32 MiB by the split rule), never O(N²).

pub mod conformance;
mod encode;
mod layout;
mod options;
pub mod reference;

pub use encode::SupConPlan;
pub use layout::{
    MAX_BARRIERS_PER_WORKGROUP, STATUS_NON_FINITE, STATUS_OK, SupConOutput, default_pass_columns,
};
pub(crate) use layout::{
    Params, Pass, ProblemLayout, ProblemLimits, TILE_COLUMNS, backward_passes, column_passes,
    kernel_params, param_stride, partial_grad_bytes, partials_len, problem_layout, row_dot_len,
    running_len, z_stride,
};
pub use options::{
    ContrastMode, Keys, MAX_TEMPERATURE, MIN_TEMPERATURE, PositiveKind, Positives, Reduction,
    Strategy, SupConOptions, SupConShape, Variant, mask_words, pack_mask,
};

use super::plan::{Columns, SUPCON_KERNELS};
use super::{Kernel, check_device};
use crate::Error;
use crate::Result;
use wgpu::util::DeviceExt;

/// The SupCon kernels' pipelines on one device: create once, plan per problem shape.
///
/// The convenience calls upload, run and read back in one go (they block; the `_async` twins
/// await instead). To record the kernels into your own encoder on your own buffers, see
/// [`plan`](Self::plan) and [`SupConPlan::encode_forward`].
///
/// ```no_run
/// use supcon_wgpu::device::{Limits, request_device};
/// use supcon_wgpu::{Positives, SupConLoss, SupConOptions, SupConShape};
///
/// # fn main() -> supcon_wgpu::Result<()> {
/// let gpu = request_device(Limits::WebGpuDefault)?;
/// let supcon = SupConLoss::new(&gpu.device)?; // once per device
///
/// // Features [bsz = 4, n_views = 2, dim = 3], row-major, and one label per sample.
/// let shape = SupConShape::new(4, 2, 3);
/// let features: Vec<f32> = (0..shape.len()).map(|i| (i as f32 * 0.37).sin()).collect();
/// let labels = Positives::Labels(&[0, 1, 0, 1]);
/// let options = SupConOptions::new(0.1);
///
/// let out = supcon.loss_and_grad(&gpu.device, &gpu.queue, &features, shape, labels, &options)?;
/// assert!(out.loss.is_finite() && out.loss > 0.0);
/// assert_eq!(out.n_valid_anchors, 8);
/// assert_eq!(out.grad.map(|g| g.len()), Some(features.len())); // dL/dfeatures
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SupConLoss {
    /// The pipelines of [`SUPCON_KERNELS`], in its order.
    kernels: Vec<Kernel>,
    columns: Columns,
    strategy: Strategy,
}

/// Result of the convenience calls [`SupConLoss::loss`] and [`SupConLoss::loss_and_grad`].
#[derive(Clone, Debug)]
pub struct SupConResult {
    /// The reduced loss.
    pub loss: f32,
    /// Loss of each anchor (`n_anchors`: N, or bsz in contrast mode `One`; view-major order).
    pub anchor_loss: Vec<f32>,
    /// Anchors with at least one positive.
    pub n_valid_anchors: u32,
    /// dL/dfeatures in the features' `[bsz, n_views, dim]` layout, when asked for.
    pub grad: Option<Vec<f32>>,
}

impl SupConLoss {
    /// Builds the pipelines of both strategies and their bind-group layouts on `device`.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        check_device(device)?;
        super::with_error_scope(device, || {
            Ok(SupConLoss {
                kernels: SUPCON_KERNELS
                    .iter()
                    .map(|spec| Kernel::new(device, spec))
                    .collect(),
                columns: Columns::default(),
                strategy: Strategy::for_adapter(&device.adapter_info()),
            })
        })
    }

    /// Plans every later problem with passes of `columns` contrast rows (rounded down to a
    /// multiple of 64, at least 64) instead of [`default_pass_columns`]. The result does not
    /// depend on it beyond float rounding; it exists to test the multi-pass path on small inputs
    /// and to bound a workgroup's work further on devices that need it.
    pub fn with_pass_columns(mut self, columns: u32) -> Self {
        self.columns.pass = Some(columns);
        self
    }

    /// Plans every later problem with the passes cut into splits of `columns` contrast rows
    /// (rounded down to a multiple of 64, at least 64), run side by side by the heavy kernels'
    /// grid, instead of the plan's rule (enough splits to give [`Strategy::Tiles`] about 1,024
    /// workgroups; one split with [`Strategy::Direct`]). The result does not depend on it beyond
    /// float rounding; it exists to test the split path on any device and to measure.
    pub fn with_split_columns(mut self, columns: u32) -> Self {
        self.columns.split = Some(columns);
        self
    }

    /// Uses `strategy` instead of [`Strategy::for_adapter`] (both give the same results up to
    /// float rounding; for tests and measurements of the other one).
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The strategy plans use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Validates a problem and allocates its O(N) workspace (parameters, inverse norms, anchor
    /// statistics, output block). A plan is reused for every batch of the same shape.
    ///
    /// Errors: a shape the kernels cannot take (fewer than two contrast rows, beyond 32-bit
    /// indexing), options out of range, or a problem beyond the device's limits (a binding over
    /// `max_storage_buffer_binding_size`, too many workgroups).
    ///
    /// ```no_run
    /// use supcon_wgpu::device::{Limits, request_device};
    /// use supcon_wgpu::{Error, PositiveKind, SupConLoss, SupConOptions, SupConShape};
    ///
    /// # fn main() -> supcon_wgpu::Result<()> {
    /// let gpu = request_device(Limits::WebGpuDefault)?;
    /// let device = &gpu.device;
    /// let supcon = SupConLoss::new(device)?;
    /// let options = SupConOptions::new(0.1);
    ///
    /// let shape = SupConShape::new(256, 2, 128);
    /// let plan = supcon.plan(device, shape, PositiveKind::Labels, &options)?;
    /// assert_eq!(plan.n_anchors(), 512);
    /// println!("{} bytes of workspace, {} pass(es)", plan.workspace_bytes(), plan.passes());
    ///
    /// // One sample in one view has nothing to contrast with.
    /// let one_row = SupConShape::new(1, 1, 128);
    /// let err = supcon.plan(device, one_row, PositiveKind::None, &options);
    /// assert!(matches!(err, Err(Error::InvalidShape(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn plan(
        &self,
        device: &wgpu::Device,
        shape: SupConShape,
        kind: PositiveKind,
        options: &SupConOptions,
    ) -> Result<SupConPlan> {
        let layout = problem_layout(
            shape,
            kind,
            options,
            self.strategy,
            self.columns,
            ProblemLimits::of(device),
        )?;
        let params = kernel_params(shape, kind, options);
        let n_anchors = params.n_anchors;
        // One parameter block per pass, at offsets the device accepts for storage bindings.
        let param_stride = param_stride(device.limits().min_storage_buffer_offset_alignment);
        let ProblemLayout {
            launch,
            partials_bytes,
            running_bytes,
            row_dot_bytes,
            z_bytes,
            positives_len,
        } = layout;
        let mut param_bytes = vec![0u8; param_stride as usize * launch.passes.len()];
        for (i, pass) in launch.passes.iter().enumerate() {
            let block = params.for_pass(*pass);
            param_bytes[i * param_stride as usize..][..std::mem::size_of::<Params>()]
                .copy_from_slice(bytemuck::bytes_of(&block));
        }
        let copy = wgpu::BufferUsages::COPY_SRC;
        let plan = super::with_error_scope(device, || {
            Ok(SupConPlan {
                kernels: self.clone(),
                shape,
                kind,
                options: *options,
                n_anchors,
                positives_len,
                params: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("supcon params"),
                    contents: &param_bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                }),
                param_stride,
                scratch: super::storage_buffer(
                    device,
                    "supcon backward scratch",
                    launch.scratch_bytes,
                    copy,
                ),
                launch,
                partials: super::storage_buffer(device, "supcon partials", partials_bytes, copy),
                running: super::storage_buffer(device, "supcon running", running_bytes, copy),
                row_dot: super::storage_buffer(device, "supcon row_dot", row_dot_bytes, copy),
                z: super::storage_buffer(device, "supcon z", z_bytes, copy),
                inv_norm: super::storage_buffer(
                    device,
                    "supcon inv_norm",
                    shape.contrast_rows() * 4,
                    copy,
                ),
                anchor_stats: super::storage_buffer(
                    device,
                    "supcon anchor_stats",
                    u64::from(n_anchors) * 16,
                    copy,
                ),
                output: super::storage_buffer(device, "supcon output", 16, copy),
                placeholder: super::storage_buffer(device, "supcon no positives", 4, copy),
            })
        })?;
        Ok(plan)
    }

    /// Convenience: uploads `features` (`[bsz, n_views, dim]`, row-major) and the positives,
    /// runs the loss, and reads it back. Non-finite features give [`Error::NonFiniteFeatures`].
    /// Blocks until the GPU is done; [`loss_async`](Self::loss_async) is its twin for async code
    /// and the browser.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn loss(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        options: &SupConOptions,
    ) -> Result<SupConResult> {
        pollster::block_on(self.loss_async(device, queue, features, shape, positives, options))
    }

    /// Like [`loss`](Self::loss), and also computes and reads back dL/dfeatures
    /// ([`SupConResult::grad`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn loss_and_grad(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        options: &SupConOptions,
    ) -> Result<SupConResult> {
        pollster::block_on(
            self.loss_and_grad_async(device, queue, features, shape, positives, options),
        )
    }

    /// [`loss`](Self::loss) as a future, for every target: in a browser (wasm32 + WebGPU) it
    /// awaits the read-back through the event loop; on native targets it blocks in
    /// `device.poll` while the GPU works.
    pub async fn loss_async(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        options: &SupConOptions,
    ) -> Result<SupConResult> {
        self.run(
            device, queue, features, shape, positives, None, options, false,
        )
        .await
    }

    /// [`loss_and_grad`](Self::loss_and_grad) as a future (see [`loss_async`](Self::loss_async)).
    pub async fn loss_and_grad_async(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        options: &SupConOptions,
    ) -> Result<SupConResult> {
        self.run(
            device, queue, features, shape, positives, None, options, true,
        )
        .await
    }

    /// Like [`loss_and_grad`](Self::loss_and_grad) with K contrast-only rows (`shape.keys`,
    /// [`Keys`]): every anchor is also contrasted against the keys; keys with the anchor's
    /// label are positives. The gradient is the features' alone (keys get none).
    #[cfg(not(target_arch = "wasm32"))]
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grad_with_keys(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        keys: Keys<'_>,
        options: &SupConOptions,
    ) -> Result<SupConResult> {
        pollster::block_on(self.loss_and_grad_with_keys_async(
            device, queue, features, shape, positives, keys, options,
        ))
    }

    /// [`loss_and_grad_with_keys`](Self::loss_and_grad_with_keys) as a future.
    #[allow(clippy::too_many_arguments)]
    pub async fn loss_and_grad_with_keys_async(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        keys: Keys<'_>,
        options: &SupConOptions,
    ) -> Result<SupConResult> {
        self.run(
            device,
            queue,
            features,
            shape,
            positives,
            Some(keys),
            options,
            true,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
        keys: Option<Keys<'_>>,
        options: &SupConOptions,
        with_grad: bool,
    ) -> Result<SupConResult> {
        shape.validate()?;
        if features.len() as u64 != shape.len() {
            return Err(Error::LengthMismatch {
                name: "features",
                expected: shape.len() as usize,
                got: features.len(),
            });
        }
        positives.validate(shape.bsz)?;
        match keys {
            Some(k) => {
                if k.features.len() as u64 != shape.keys_len() {
                    return Err(Error::LengthMismatch {
                        name: "keys",
                        expected: shape.keys_len() as usize,
                        got: k.features.len(),
                    });
                }
                k.positives.validate_keys(positives.kind(), shape.keys)?;
            }
            None if shape.keys > 0 => {
                return Err(Error::Keys(format!(
                    "the shape has {} keys; pass them (loss_and_grad_with_keys)",
                    shape.keys
                )));
            }
            None => {}
        }
        let plan = self.plan(device, shape, positives.kind(), options)?;
        super::with_error_scope_async(device, async {
            let feature_buf = super::upload(device, "supcon features", features);
            // The batch's labels, then the keys' (validated above to be of the same kind).
            let key_positives = keys.map_or(Positives::None, |k| k.positives);
            let positive_buf = match (positives, key_positives) {
                (Positives::Labels(l), Positives::Labels(kl)) => {
                    Some(super::upload(device, "supcon labels", &[l, kl].concat()))
                }
                (Positives::Labels(l), _) => Some(super::upload(device, "supcon labels", l)),
                (Positives::Labels64(l), Positives::Labels64(kl)) => {
                    Some(super::upload(device, "supcon labels", &[l, kl].concat()))
                }
                (Positives::Labels64(l), _) => Some(super::upload(device, "supcon labels", l)),
                (Positives::None, _) => None,
                (Positives::Mask(m), _) => Some(super::upload(
                    device,
                    "supcon mask",
                    &pack_mask(m, shape.bsz)?,
                )),
            };
            let key_buf = keys
                .filter(|_| shape.keys > 0)
                .map(|k| super::upload(device, "supcon keys", k.features));
            let grad_bytes = shape.len() * 4;
            let grad_buf = with_grad.then(|| {
                super::storage_buffer(
                    device,
                    "supcon grad",
                    grad_bytes,
                    wgpu::BufferUsages::COPY_SRC,
                )
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            let (x, k, pos) = (&feature_buf, key_buf.as_ref(), positive_buf.as_ref());
            plan.encode_forward_with_keys(device, &mut encoder, x, k, pos)?;
            if let Some(g) = &grad_buf {
                plan.encode_backward_with_keys(device, &mut encoder, x, k, pos, g)?;
            }
            queue.submit([encoder.finish()]);
            let out: SupConOutput =
                super::read_buffer_async::<SupConOutput>(device, queue, &plan.output, 16).await?[0];
            if out.status == STATUS_NON_FINITE {
                return Err(Error::NonFiniteFeatures);
            }
            let stats: Vec<[f32; 4]> = super::read_buffer_async(
                device,
                queue,
                &plan.anchor_stats,
                u64::from(plan.n_anchors) * 16,
            )
            .await?;
            let grad = match &grad_buf {
                Some(g) => {
                    Some(super::read_buffer_async::<f32>(device, queue, g, grad_bytes).await?)
                }
                None => None,
            };
            Ok(SupConResult {
                loss: out.loss,
                anchor_loss: stats.iter().map(|s| s[3]).collect(),
                n_valid_anchors: out.n_valid,
                grad,
            })
        })
        .await
    }
}
