//! A planned problem: its device workspace and the dispatches it records.

use super::*;
use crate::kernels::plan::{Dispatch, Role, SupConLaunch};
use crate::kernels::{binding, check_buffer};
use crate::{Error, Result};

/// A validated problem shape with its device workspace. Records into the caller's encoder and
/// reads nothing back: the result stays on the device ([`output`](Self::output),
/// [`anchor_stats`](Self::anchor_stats), the caller's gradient buffer).
#[derive(Debug)]
pub struct SupConPlan {
    pub(super) kernels: SupConLoss,
    pub(super) shape: SupConShape,
    pub(super) kind: PositiveKind,
    pub(super) options: SupConOptions,
    pub(super) n_anchors: u32,
    pub(super) positives_len: Option<u64>,
    /// One [`Params`] block per entry of `launch.passes`, `param_stride` bytes apart.
    pub(super) params: wgpu::Buffer,
    pub(super) param_stride: u64,
    /// The dispatches of the forward and backward passes.
    pub(super) launch: SupConLaunch,
    /// The backward workspace: one pass's weights, transposed (`Strategy::Direct`), or the
    /// splits' raw gradient sums (`Strategy::Tiles`).
    pub(super) scratch: wgpu::Buffer,
    /// The forward kernels' per-split statistics.
    pub(super) partials: wgpu::Buffer,
    pub(super) running: wgpu::Buffer,
    pub(super) row_dot: wgpu::Buffer,
    /// `[N + K, ceil(dim/4)]` vec4s: the normalised rows, view-major, then the keys (written by
    /// the forward pass, read by both).
    pub(super) z: wgpu::Buffer,
    pub(super) inv_norm: wgpu::Buffer,
    pub(super) anchor_stats: wgpu::Buffer,
    pub(super) output: wgpu::Buffer,
    pub(super) placeholder: wgpu::Buffer,
}

impl SupConPlan {
    /// The problem's shape the plan was made for.
    pub fn shape(&self) -> SupConShape {
        self.shape
    }
    /// The options the plan was made for.
    pub fn options(&self) -> &SupConOptions {
        &self.options
    }
    /// How the plan reads the positives.
    pub fn positive_kind(&self) -> PositiveKind {
        self.kind
    }
    /// Number of anchors: N (`All`) or bsz (`One`).
    pub fn n_anchors(&self) -> u32 {
        self.n_anchors
    }
    /// u32 elements the positives buffer needs (`None` for [`PositiveKind::None`]): the
    /// batch's labels, then, with keys, the keys' labels (`bsz + K` labels).
    pub fn positives_len(&self) -> Option<u64> {
        self.positives_len
    }
    /// The [`SupConOutput`] block (16 bytes; usage STORAGE | COPY_SRC).
    pub fn output(&self) -> &wgpu::Buffer {
        &self.output
    }
    /// Per anchor `[lse over A(i), lse over P(i), |P(i)|, loss_i]` as f32 (STORAGE | COPY_SRC).
    pub fn anchor_stats(&self) -> &wgpu::Buffer {
        &self.anchor_stats
    }
    /// Number of passes (dispatches) of the forward column loop.
    pub fn passes(&self) -> usize {
        self.launch.forward_passes().len()
    }
    /// Number of splits of the forward and of the backward column loop (the most of any
    /// pass): slices of the contrast rows that one dispatch runs side by side.
    pub fn splits(&self) -> (u32, u32) {
        let most = |passes: &[crate::kernels::supcon::Pass]| {
            passes.iter().map(|p| p.splits).max().unwrap_or(1)
        };
        (
            most(self.launch.forward_passes()),
            most(self.launch.backward_passes()),
        )
    }
    /// Workgroups of each dispatch whose work grows as N² (the forward and backward kernels),
    /// forward then backward: what fills a GPU.
    pub fn heavy_workgroups(&self) -> Vec<u64> {
        self.launch.heavy().map(|d| d.groups).collect()
    }
    /// Number of passes of the backward column loop (each one dispatch with
    /// [`Strategy::Tiles`], two with [`Strategy::Direct`]).
    pub fn backward_passes(&self) -> usize {
        self.launch.backward_passes().len()
    }
    /// The strategy of the forward and backward kernels.
    pub fn strategy(&self) -> Strategy {
        self.kernels.strategy
    }
    /// Device bytes the plan holds (its whole workspace, including the normalised copy of the
    /// features, `N·⌈dim/4⌉·16` bytes).
    pub fn workspace_bytes(&self) -> u64 {
        [
            &self.params,
            &self.partials,
            &self.running,
            &self.row_dot,
            &self.z,
            &self.scratch,
            &self.inv_norm,
            &self.anchor_stats,
            &self.output,
            &self.placeholder,
        ]
        .iter()
        .map(|b| b.size())
        .sum()
    }

    /// The parameter block of pass `i`.
    fn params_binding(&self, i: usize) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.params,
            offset: i as u64 * self.param_stride,
            size: std::num::NonZeroU64::new(std::mem::size_of::<Params>() as u64),
        }
    }

    fn positives_binding<'a>(
        &'a self,
        device: &wgpu::Device,
        positives: Option<&'a wgpu::Buffer>,
    ) -> Result<wgpu::BufferBinding<'a>> {
        match (self.positives_len, positives) {
            (None, None) => Ok(self.placeholder.as_entire_buffer_binding()),
            (None, Some(_)) => Err(Error::Positives(
                "a positives buffer was given, but the plan has PositiveKind::None".into(),
            )),
            (Some(_), None) => Err(Error::Positives(format!(
                "the plan has PositiveKind::{:?} and needs a positives buffer",
                self.kind
            ))),
            (Some(len), Some(b)) => {
                check_buffer(device, "positives", b, len * 4, wgpu::BufferUsages::STORAGE)
            }
        }
    }

    /// The keys' binding: the caller's `[K, dim]` buffer, or the placeholder when K = 0.
    fn keys_binding<'a>(
        &'a self,
        device: &wgpu::Device,
        keys: Option<&'a wgpu::Buffer>,
    ) -> Result<wgpu::BufferBinding<'a>> {
        match (self.shape.keys, keys) {
            (0, None) => Ok(self.placeholder.as_entire_buffer_binding()),
            (0, Some(_)) => Err(Error::Keys(
                "a keys buffer was given, but the plan's shape has no keys".into(),
            )),
            (k, None) => Err(Error::Keys(format!(
                "the plan's shape has {k} keys and needs their buffer"
            ))),
            (_, Some(b)) => check_buffer(
                device,
                "keys",
                b,
                self.shape.keys_len() * 4,
                wgpu::BufferUsages::STORAGE,
            ),
        }
    }

    /// Records the forward pass (prepare, forward, reduce) into `encoder`. The loss lands in
    /// [`output`](Self::output) on the device; nothing is read back.
    ///
    /// # Shapes
    /// - `features`: `[bsz, n_views, dim]` f32, usage STORAGE.
    /// - `positives`: `[bsz]` labels (32-bit, or 64-bit with [`PositiveKind::Labels64`]),
    ///   `[bsz, ceil(bsz/32)]` packed mask, or `None` (SimCLR).
    ///
    /// # Example
    /// The application's buffers, its encoder, and its own read-back of the output block:
    ///
    /// ```no_run
    /// use supcon_wgpu::device::{Limits, request_device};
    /// use supcon_wgpu::kernels::supcon::STATUS_OK;
    /// use supcon_wgpu::wgpu::{self, util::DeviceExt};
    /// use supcon_wgpu::{PositiveKind, SupConLoss, SupConOptions, SupConOutput, SupConShape};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let gpu = request_device(Limits::WebGpuDefault)?;
    /// let (device, queue) = (&gpu.device, &gpu.queue);
    /// let shape = SupConShape::new(4, 2, 3);
    /// let plan = SupConLoss::new(device)?.plan(
    ///     device,
    ///     shape,
    ///     PositiveKind::Labels,
    ///     &SupConOptions::new(0.1),
    /// )?;
    ///
    /// let storage = |contents: &[u8]| {
    ///     let (label, usage) = (None, wgpu::BufferUsages::STORAGE);
    ///     device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label, contents, usage })
    /// };
    /// let x: Vec<f32> = (0..shape.len()).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let features = storage(bytemuck::cast_slice(&x));
    /// let labels = storage(bytemuck::cast_slice(&[0i32, 1, 0, 1]));
    /// let readback = device.create_buffer(&wgpu::BufferDescriptor {
    ///     label: None,
    ///     size: 16,
    ///     usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
    ///     mapped_at_creation: false,
    /// });
    ///
    /// let mut encoder = device.create_command_encoder(&Default::default());
    /// plan.encode_forward(device, &mut encoder, &features, Some(&labels))?;
    /// encoder.copy_buffer_to_buffer(plan.output(), 0, &readback, 0, 16);
    /// queue.submit([encoder.finish()]);
    ///
    /// readback.map_async(wgpu::MapMode::Read, .., |mapped| mapped.expect("mapped"));
    /// device.poll(wgpu::PollType::wait_indefinitely())?;
    /// let out: SupConOutput = bytemuck::pod_read_unaligned(&readback.get_mapped_range(..)?);
    /// assert_eq!(out.status, STATUS_OK);
    /// assert!(out.loss > 0.0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn encode_forward(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        features: &wgpu::Buffer,
        positives: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        self.encode_forward_with_keys(device, encoder, features, None, positives)
    }

    /// [`encode_forward`](Self::encode_forward) for a shape with K keys
    /// ([`SupConShape::with_keys`]): contrast-only rows, never anchors, no gradient.
    ///
    /// # Shapes
    /// - `keys`: `[K, dim]` f32, usage STORAGE (`None` when K = 0).
    /// - `positives`: labels `[bsz + K]` (the batch's, then the keys'; 64-bit: two words each),
    ///   or `None` (SimCLR: keys are negatives only). A mask has no key columns (an error at
    ///   [`plan`](super::SupConLoss::plan)).
    pub fn encode_forward_with_keys(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        features: &wgpu::Buffer,
        keys: Option<&wgpu::Buffer>,
        positives: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let storage = wgpu::BufferUsages::STORAGE;
        let x = check_buffer(device, "features", features, self.shape.len() * 4, storage)?;
        let k = self.keys_binding(device, keys)?;
        let pos = self.positives_binding(device, positives)?;
        self.encode(device, encoder, &self.launch.forward, x, k, pos, None)
    }

    /// Records the backward pass into `encoder`: `grad = dL/dfeatures`. Record it after
    /// [`encode_forward`](Self::encode_forward) on the same features and positives (same or an
    /// earlier submission); it reuses the forward pass's statistics and its normalised copy of
    /// the features (`features` is checked, and must not be `grad`).
    ///
    /// # Shapes
    /// - `grad`: `[bsz, n_views, dim]` f32, usage STORAGE, fully overwritten.
    pub fn encode_backward(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        features: &wgpu::Buffer,
        positives: Option<&wgpu::Buffer>,
        grad: &wgpu::Buffer,
    ) -> Result<()> {
        self.encode_backward_with_keys(device, encoder, features, None, positives, grad)
    }

    /// [`encode_backward`](Self::encode_backward) for a shape with keys: the same `keys` and
    /// `positives` as [`encode_forward_with_keys`](Self::encode_forward_with_keys). The keys get
    /// no gradient.
    pub fn encode_backward_with_keys(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        features: &wgpu::Buffer,
        keys: Option<&wgpu::Buffer>,
        positives: Option<&wgpu::Buffer>,
        grad: &wgpu::Buffer,
    ) -> Result<()> {
        let storage = wgpu::BufferUsages::STORAGE;
        let bytes = self.shape.len() * 4;
        let x = check_buffer(device, "features", features, bytes, storage)?;
        let g = check_buffer(device, "grad", grad, bytes, storage)?;
        if features == grad {
            return Err(Error::Positives(
                "grad must be a different buffer from features".into(),
            ));
        }
        let k = self.keys_binding(device, keys)?;
        let pos = self.positives_binding(device, positives)?;
        self.encode(device, encoder, &self.launch.backward, x, k, pos, Some(g))
    }

    /// Records `dispatches` in order, each binding the plan's buffer for its [`Role`] (`grad`:
    /// the caller's gradient, which only backward dispatches bind).
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: &[Dispatch],
        features: wgpu::BufferBinding<'_>,
        keys: wgpu::BufferBinding<'_>,
        positives: wgpu::BufferBinding<'_>,
        grad: Option<wgpu::BufferBinding<'_>>,
    ) -> Result<()> {
        let contrast_rows = self.shape.contrast_rows();
        for d in dispatches {
            let buffers: Vec<wgpu::BufferBinding<'_>> = d
                .bindings
                .iter()
                .map(|role| match role {
                    Role::Params(i) => self.params_binding(*i),
                    Role::Features => features.clone(),
                    Role::Keys => keys.clone(),
                    Role::Positives => positives.clone(),
                    Role::InvNorm | Role::Discard => binding(&self.inv_norm, contrast_rows * 4),
                    Role::Z => self.z.as_entire_buffer_binding(),
                    Role::AnchorStats => {
                        binding(&self.anchor_stats, u64::from(self.n_anchors) * 16)
                    }
                    Role::Partials => self.partials.as_entire_buffer_binding(),
                    Role::Running => self.running.as_entire_buffer_binding(),
                    Role::Output => self.output.as_entire_buffer_binding(),
                    Role::Grad => grad
                        .clone()
                        .expect("only backward dispatches bind the gradient"),
                    Role::RowDot => self.row_dot.as_entire_buffer_binding(),
                    Role::Scratch => self.scratch.as_entire_buffer_binding(),
                    Role::A | Role::B | Role::Similarity => {
                        unreachable!("a similarity role in a SupCon dispatch")
                    }
                })
                .collect();
            Kernel::find(&self.kernels.kernels, d.kernel)
                .dispatch(device, encoder, d.groups, &buffers)?;
        }
        Ok(())
    }
}
