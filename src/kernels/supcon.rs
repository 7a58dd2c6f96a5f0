//! The fused, streaming SupCon loss (`shaders/supcon_*.wgsl`) and its f64 CPU reference.
//!
//! Four dispatches, recorded into the caller's encoder in the order of `plan::supcon_launch`
//! (which the Burn extension follows too):
//! 1. `supcon_prepare`: inverse L2 norm of every row (and the non-finite check), and the
//!    normalised rows `z` in view-major order, padded to whole vec4s (what steps 2 and 4 read),
//! 2. `supcon_forward` ([`Strategy::Tiles`]) or `supcon_forward_direct` ([`Strategy::Direct`]):
//!    per-anchor log-sum-exps and losses, streaming over column tiles,
//! 3. `supcon_reduce`: the scalar loss, the anchor weight and the status word,
//! 4. (only for the gradient) dL/dfeatures, recomputing the tiles: `supcon_backward`
//!    ([`Strategy::Tiles`]) or, per pass, `supcon_backward_weights` then `supcon_backward_apply`
//!    ([`Strategy::Direct`]).
//!
//! Steps 2 and 4 loop over column tiles; that loop is cut into passes (one dispatch each) so that
//! no workgroup executes more than [`MAX_BARRIERS_PER_WORKGROUP`] barriers (see
//! [`default_pass_columns`]). Extra device memory is O(N) (a few floats per row), never O(N²).

use super::plan::{Dispatch, Role, SUPCON_KERNELS, SupConLaunch, supcon_launch};
use super::{Kernel, binding, check_buffer, check_device};
use crate::{Error, Result};
use wgpu::util::DeviceExt;

/// Contrast rows per column tile of the forward and backward kernels (`TILE_C` of
/// `shaders/lib/supcon_host.wgsl`; a unit test checks the value).
const TILE_COLUMNS: u32 = 64;

/// Most workgroup barriers one workgroup of the forward or backward kernel executes in one pass.
///
/// Measured on lavapipe (Mesa's software Vulkan driver): a workgroup of `supcon_forward.wgsl` that
/// executes more than about 8,192 barriers loses results (only the first of each thread's four
/// anchors kept its statistics); at 6,528 it was exact. The column loop is therefore cut into
/// passes of at most this many barriers, half that threshold. Real GPUs do not need it, and the
/// cost of a pass is one dispatch and a few floats per row.
pub const MAX_BARRIERS_PER_WORKGROUP: u64 = 4096;

/// Contrast rows one pass covers for feature dimension `dim` (a multiple of 64): as many column
/// tiles as fit in [`MAX_BARRIERS_PER_WORKGROUP`] at the backward kernel's `2·⌈dim/16⌉ + 6`
/// barriers per tile (the forward's `2·⌈dim/16⌉ + 1` is fewer). 11,904 rows at `dim = 128`.
pub fn default_pass_columns(dim: u32) -> u32 {
    let per_tile = 2 * u64::from(dim.div_ceil(16)) + 6;
    let tiles = (MAX_BARRIERS_PER_WORKGROUP / per_tile).max(1);
    (tiles * u64::from(TILE_COLUMNS)).min(u64::from(u32::MAX / 2)) as u32
}

/// The backward passes and the bytes of the weights workspace. With [`Strategy::Tiles`] the
/// backward kernel takes the forward's passes and needs no workspace. With
/// [`Strategy::Direct`] each pass is two barrier-free kernels, `supcon_backward_weights` (the
/// pass's weights W_rj, stored transposed: `P·⌈N/4⌉` vec4s) and `supcon_backward_apply`; `P`
/// columns per pass are as many as fit in the larger of the normalised copy's size and 8 MiB
/// (at most the forward's pass length), or `pass_columns` when given.
pub(crate) fn backward_passes(
    strategy: Strategy,
    shape: SupConShape,
    forward: &[(u32, u32)],
    pass_columns: Option<u32>,
) -> (Vec<(u32, u32)>, u64) {
    let n_rows = shape.rows() as u32;
    match strategy {
        Strategy::Tiles => (forward.to_vec(), 16),
        Strategy::Direct => {
            let n4 = u64::from(n_rows.div_ceil(4));
            let columns = pass_columns.unwrap_or_else(|| {
                let budget = z_bytes(shape).clamp(8 << 20, 128 << 20);
                let fit = (budget / (n4 * 16)).min(u64::from(default_pass_columns(shape.dim)));
                fit.max(u64::from(TILE_COLUMNS)) as u32
            });
            let passes = column_passes(n_rows, columns);
            let longest = passes.iter().map(|(b, e)| e - b).max().unwrap_or(1);
            (passes, u64::from(longest) * n4 * 16)
        }
    }
}

/// Bytes of the normalised copy `z` of the features (`N·⌈dim/4⌉` vec4s).
pub(crate) fn z_bytes(shape: SupConShape) -> u64 {
    shape.rows() * u64::from(z_stride(shape.dim)) * 16
}

/// f32s of `running`, the forward statistics carried between passes: 8 per anchor with several
/// forward passes, else a minimal never-read 8.
pub(crate) fn running_len(n_anchors: u64, forward_passes: usize) -> u64 {
    if forward_passes > 1 { 8 * n_anchors } else { 8 }
}

/// f32s of `row_dot` (z_r · g_r per row): needed with several backward passes, and always with
/// [`Strategy::Direct`], whose first backward kernel hands it to the second; else a minimal 1.
pub(crate) fn row_dot_len(strategy: Strategy, rows: u64, backward_passes: usize) -> u64 {
    if backward_passes > 1 || strategy == Strategy::Direct {
        rows
    } else {
        1
    }
}

/// The column ranges `[begin, end)` of the passes over `n_rows` contrast rows, `pass_columns`
/// rows each (rounded down to whole tiles, at least one).
pub(crate) fn column_passes(n_rows: u32, pass_columns: u32) -> Vec<(u32, u32)> {
    let step = (pass_columns / TILE_COLUMNS).max(1) * TILE_COLUMNS;
    (0..n_rows.div_ceil(step))
        .map(|p| (p * step, ((p + 1) * step).min(n_rows)))
        .collect()
}

/// Which forward and backward kernels run (the same results up to float rounding).
/// [`Strategy::for_adapter`] picks one per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// GPUs: `supcon_forward.wgsl` and `supcon_backward.wgsl`, 16×16 workgroups whose threads
    /// compute 4×4 blocks of dot products from slices of the rows staged in workgroup memory, two
    /// barriers per slice.
    Tiles,
    /// CPU adapters: `supcon_forward_direct.wgsl`, then per backward pass
    /// `supcon_backward_weights.wgsl` and `supcon_backward_apply.wgsl`. 8×8 workgroups whose
    /// threads read their rows straight from memory as vec4s into 8×8 register blocks, with no
    /// barrier in any loop: on CPU drivers (lavapipe) workgroup memory is no faster than the
    /// cache, each barrier saves and restores every invocation's registers, and each loaded value
    /// should feed as many multiply-adds as possible. Measured about 3× faster there than `Tiles`.
    Direct,
}

impl Strategy {
    /// [`Direct`](Self::Direct) on a CPU adapter (`wgpu::DeviceType::Cpu`: lavapipe, WARP,
    /// SwiftShader), [`Tiles`](Self::Tiles) on every GPU.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        Self::for_device_type(info.device_type)
    }

    /// The rule itself, from the adapter's device type alone: [`Direct`](Self::Direct) for
    /// `wgpu::DeviceType::Cpu`, [`Tiles`](Self::Tiles) for every other type. Both launch paths
    /// (raw wgpu and the Burn extension) decide with it.
    pub fn for_device_type(device_type: wgpu::DeviceType) -> Self {
        if device_type == wgpu::DeviceType::Cpu {
            Strategy::Direct
        } else {
            Strategy::Tiles
        }
    }
}

/// Which rows are anchors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContrastMode {
    /// Every view of every sample is an anchor (the paper's setting; the default).
    #[default]
    All,
    /// Only view 0 of each sample is an anchor; all views are contrasted against.
    One,
}

/// Where the average over positives sits (Khosla et al. 2020, Eq. 2 and 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// `L_out`: the mean over positives outside the log (Eq. 2; the better one, the default).
    #[default]
    Out,
    /// `L_in`: the mean over positives inside the log (Eq. 3).
    In,
}

/// How per-anchor losses become one number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reduction {
    /// Mean over all anchors; anchors without a positive count as 0 (the reference PyTorch code).
    #[default]
    AllAnchors,
    /// Mean over the anchors that have at least one positive.
    AnchorsWithPositives,
}

/// Options of the loss. `SupConOptions::default()` is τ = τ_base = 0.1, contrast mode `All`,
/// `L_out`, mean over all anchors.
/// The temperatures are f64 (as Burn's configs), rounded to f32 on the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupConOptions {
    /// τ, dividing the cosine similarities.
    pub temperature: f64,
    /// τ_base: the loss is scaled by τ / τ_base (the reference PyTorch code uses 0.07 for both).
    pub base_temperature: f64,
    pub contrast_mode: ContrastMode,
    pub variant: Variant,
    pub reduction: Reduction,
}

impl Default for SupConOptions {
    fn default() -> Self {
        SupConOptions::new(0.1)
    }
}

impl SupConOptions {
    /// Defaults with temperature τ and base temperature τ (so the loss is exactly Eq. 2's mean).
    pub fn new(temperature: f64) -> Self {
        SupConOptions {
            temperature,
            base_temperature: temperature,
            contrast_mode: ContrastMode::All,
            variant: Variant::Out,
            reduction: Reduction::AllAnchors,
        }
    }
    pub fn with_base_temperature(mut self, base_temperature: f64) -> Self {
        self.base_temperature = base_temperature;
        self
    }
    pub fn with_contrast_mode(mut self, contrast_mode: ContrastMode) -> Self {
        self.contrast_mode = contrast_mode;
        self
    }
    pub fn with_variant(mut self, variant: Variant) -> Self {
        self.variant = variant;
        self
    }
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Checks τ and τ_base: each in [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]], and the loss
    /// scale τ / τ_base a normal f32 (what the device computes with).
    pub fn validate(&self) -> Result<()> {
        if !temperature_in_range(self.temperature) {
            return Err(Error::InvalidTemperature(self.temperature));
        }
        let scale = self.temperature / self.base_temperature;
        if !temperature_in_range(self.base_temperature)
            || !(f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&scale)
        {
            return Err(Error::InvalidBaseTemperature(self.base_temperature));
        }
        Ok(())
    }
}

/// The smallest temperature (τ or τ_base) accepted: f32's smallest normal number, 2^-126.
pub const MIN_TEMPERATURE: f64 = f32::MIN_POSITIVE as f64;
/// The largest temperature accepted, 1 / [`MIN_TEMPERATURE`] = 2^126: within
/// [`MIN_TEMPERATURE`, `MAX_TEMPERATURE`] both τ and 1/τ are normal f32 numbers on the device.
pub const MAX_TEMPERATURE: f64 = 1.0 / MIN_TEMPERATURE;

/// Whether `t` lies in [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]] (false for NaN).
fn temperature_in_range(t: f64) -> bool {
    (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)
}

/// Shape of the features: `[bsz, n_views, dim]`, flattened view-major into `N = bsz·n_views`
/// rows (row `v·bsz + b` is view `v` of sample `b`, as the reference PyTorch code's
/// `torch.cat(torch.unbind(features, dim=1))`). The buffers themselves stay in the caller's
/// `[bsz, n_views, dim]` layout; the kernels index it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupConShape {
    pub bsz: u32,
    pub n_views: u32,
    pub dim: u32,
}

impl SupConShape {
    pub fn new(bsz: u32, n_views: u32, dim: u32) -> Self {
        SupConShape { bsz, n_views, dim }
    }
    /// `N = bsz · n_views`.
    pub fn rows(&self) -> u64 {
        u64::from(self.bsz) * u64::from(self.n_views)
    }
    /// Number of f32s in the features (and the gradient).
    pub fn len(&self) -> u64 {
        self.rows() * u64::from(self.dim)
    }
    /// True when the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Checks bsz, n_views, dim ≥ 1, N ≥ 2 and 32-bit indexing.
    pub fn validate(&self) -> Result<()> {
        if self.bsz == 0 || self.n_views == 0 || self.dim == 0 {
            return Err(Error::InvalidShape(format!(
                "bsz, n_views and dim must be >= 1, got [{}, {}, {}]",
                self.bsz, self.n_views, self.dim
            )));
        }
        if self.rows() < 2 {
            return Err(Error::InvalidShape(format!(
                "the loss needs N = bsz * n_views >= 2 rows, got {}",
                self.rows()
            )));
        }
        if self.len() >= 1 << 32 {
            return Err(Error::InvalidShape(format!(
                "{} feature elements exceed 32-bit indexing",
                self.len()
            )));
        }
        Ok(())
    }
}

/// How the positives buffer is read on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositiveKind {
    /// `[bsz]` integer labels (i32 or u32, compared bit for bit).
    Labels,
    /// `[bsz]` 64-bit integer labels (i64 or u64, little-endian: two u32 words each), compared
    /// at full width.
    Labels64,
    /// No labels: each sample is its own class (SimCLR). No buffer.
    None,
    /// A `[bsz, bsz]` positive mask, bit-packed by [`pack_mask`]: row `i` takes
    /// `ceil(bsz / 32)` u32 words, bit `j % 32` of word `j / 32` is `mask[i][j]`. As in the
    /// reference code the mask is tiled over views and the diagonal of the full N×N mask is
    /// dropped, so `mask[i][i]` decides whether the other views of sample `i` are positives.
    Mask,
}

/// Host-side positives for the convenience calls and the reference.
#[derive(Clone, Copy, Debug)]
pub enum Positives<'a> {
    /// `[bsz]` class labels.
    Labels(&'a [i32]),
    /// `[bsz]` 64-bit class labels (hashed ids and the like), compared at full width.
    Labels64(&'a [i64]),
    /// SimCLR: each sample its own class.
    None,
    /// `[bsz, bsz]` row-major positive mask.
    Mask(&'a [bool]),
}

impl Positives<'_> {
    pub fn kind(&self) -> PositiveKind {
        match self {
            Positives::Labels(_) => PositiveKind::Labels,
            Positives::Labels64(_) => PositiveKind::Labels64,
            Positives::None => PositiveKind::None,
            Positives::Mask(_) => PositiveKind::Mask,
        }
    }

    /// Checks the length against `bsz`.
    pub fn validate(&self, bsz: u32) -> Result<()> {
        let bsz = bsz as usize;
        match self {
            Positives::Labels(l) if l.len() != bsz => Err(Error::LengthMismatch {
                name: "labels",
                expected: bsz,
                got: l.len(),
            }),
            Positives::Labels64(l) if l.len() != bsz => Err(Error::LengthMismatch {
                name: "labels",
                expected: bsz,
                got: l.len(),
            }),
            Positives::Mask(m) if m.len() != bsz * bsz => Err(Error::LengthMismatch {
                name: "mask",
                expected: bsz * bsz,
                got: m.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether view-major rows `i != j` of a batch of `bsz` samples are positives.
    pub fn is_positive(&self, i: usize, j: usize, bsz: usize) -> bool {
        let (si, sj) = (i % bsz, j % bsz);
        i != j
            && match self {
                Positives::Labels(l) => l[si] == l[sj],
                Positives::Labels64(l) => l[si] == l[sj],
                Positives::None => si == sj,
                Positives::Mask(m) => m[si * bsz + sj],
            }
    }
}

/// u32 words per row of a packed `[bsz, bsz]` mask.
pub fn mask_words(bsz: u32) -> u32 {
    bsz.div_ceil(32)
}

/// Packs a row-major `[bsz, bsz]` boolean mask for [`PositiveKind::Mask`].
pub fn pack_mask(mask: &[bool], bsz: u32) -> Result<Vec<u32>> {
    let n = bsz as usize;
    if mask.len() != n * n {
        return Err(Error::LengthMismatch {
            name: "mask",
            expected: n * n,
            got: mask.len(),
        });
    }
    let words = mask_words(bsz) as usize;
    let mut packed = vec![0u32; n * words];
    for (i, row) in mask.chunks(n).enumerate() {
        for (j, &bit) in row.iter().enumerate() {
            if bit {
                packed[i * words + j / 32] |= 1 << (j % 32);
            }
        }
    }
    Ok(packed)
}

/// The 16-byte result block `supcon_reduce.wgsl` writes ([`SupConPlan::output`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SupConOutput {
    /// The reduced loss (0 when `status != 0`).
    pub loss: f32,
    /// The weight of each anchor in the mean (1 / anchors averaged over; 0 if nothing to average).
    pub weight: f32,
    /// Anchors with at least one positive.
    pub n_valid: u32,
    /// 0: fine; 1: a feature row held NaN or infinity (the loss and gradient are then zeros).
    pub status: u32,
}

/// Status word value when every feature row was finite.
pub const STATUS_OK: u32 = 0;
/// Status word value for non-finite input features.
pub const STATUS_NON_FINITE: u32 = 1;

// The values of `Params::pos_mode`, `variant` and `reduction`; `shaders/lib/supcon_host.wgsl`
// names them alike (a unit test checks the values).
const POS_LABELS: u32 = 0;
const POS_NONE: u32 = 1;
const POS_MASK: u32 = 2;
const POS_LABELS64: u32 = 3;
const VARIANT_OUT: u32 = 0;
const VARIANT_IN: u32 = 1;
const REDUCTION_ALL_ANCHORS: u32 = 0;
const REDUCTION_ANCHORS_WITH_POSITIVES: u32 = 1;

/// The `Params` block every `supcon_*.wgsl` kernel reads (binding 0; its WGSL declaration is in
/// `shaders/lib/supcon_host.wgsl`, and a unit test checks that the layouts agree).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    n_rows: u32,
    bsz: u32,
    n_views: u32,
    dim: u32,
    n_anchors: u32,
    pos_mode: u32,
    mask_words: u32,
    variant: u32,
    reduction: u32,
    inv_temperature: f32,
    loss_scale: f32,
    /// What the loss and the gradient are written as when a feature row is not finite.
    non_finite_fill: f32,
    col_begin: u32,
    col_end: u32,
    z_stride: u32,
}

impl Params {
    /// The same parameters, with the loss and every gradient entry written as NaN (instead of
    /// zeros) when a feature row is not finite: the Burn ops, which propagate NaN as Burn's own
    /// ops do. The status word is set either way.
    #[cfg(feature = "burn")]
    pub(crate) fn nan_on_non_finite(self) -> Params {
        Params {
            non_finite_fill: f32::NAN,
            ..self
        }
    }

    /// Number of anchors: N (`All`) or bsz (`One`).
    pub(crate) fn n_anchors(&self) -> u32 {
        self.n_anchors
    }

    /// The same parameters for the pass over contrast rows `[begin, end)`.
    pub(crate) fn for_pass(self, (begin, end): (u32, u32)) -> Params {
        Params {
            col_begin: begin,
            col_end: end,
            ..self
        }
    }
}

/// The kernels' parameter block for a validated problem.
pub(crate) fn kernel_params(
    shape: SupConShape,
    kind: PositiveKind,
    options: &SupConOptions,
) -> Params {
    let n_rows = shape.rows() as u32;
    Params {
        n_rows,
        bsz: shape.bsz,
        n_views: shape.n_views,
        dim: shape.dim,
        n_anchors: match options.contrast_mode {
            ContrastMode::All => n_rows,
            ContrastMode::One => shape.bsz,
        },
        pos_mode: match kind {
            PositiveKind::Labels => POS_LABELS,
            PositiveKind::None => POS_NONE,
            PositiveKind::Mask => POS_MASK,
            PositiveKind::Labels64 => POS_LABELS64,
        },
        mask_words: mask_words(shape.bsz),
        variant: match options.variant {
            Variant::Out => VARIANT_OUT,
            Variant::In => VARIANT_IN,
        },
        reduction: match options.reduction {
            Reduction::AllAnchors => REDUCTION_ALL_ANCHORS,
            Reduction::AnchorsWithPositives => REDUCTION_ANCHORS_WITH_POSITIVES,
        },
        inv_temperature: (1.0 / options.temperature) as f32,
        loss_scale: (options.temperature / options.base_temperature) as f32,
        non_finite_fill: 0.0,
        col_begin: 0,
        col_end: n_rows,
        z_stride: z_stride(shape.dim),
    }
}

/// Bytes between consecutive parameter blocks of one buffer: the block's size rounded up to the
/// device's `min_storage_buffer_offset_alignment` (a power of two), so that every block starts
/// at an offset the device accepts for a storage binding.
pub(crate) fn param_stride(min_storage_buffer_offset_alignment: u32) -> u64 {
    let alignment = u64::from(min_storage_buffer_offset_alignment.max(1));
    (std::mem::size_of::<Params>() as u64).next_multiple_of(alignment)
}

/// The device limits a problem is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProblemLimits {
    /// `max_storage_buffer_binding_size`: the largest buffer one binding may cover.
    pub max_binding: u64,
    /// `max_compute_workgroups_per_dimension` (dispatches use a 2-D grid of at most this²).
    pub max_groups_per_dim: u32,
}

impl ProblemLimits {
    /// The limits of a wgpu device.
    pub(crate) fn of(device: &wgpu::Device) -> Self {
        let limits = device.limits();
        ProblemLimits {
            max_binding: limits.max_storage_buffer_binding_size,
            max_groups_per_dim: limits.max_compute_workgroups_per_dimension,
        }
    }
}

/// The passes and buffer sizes of a validated problem.
#[derive(Clone, Debug)]
pub(crate) struct ProblemLayout {
    /// The passes and dispatches (the backward ones without recomputing `z`).
    pub launch: SupConLaunch,
    pub running_bytes: u64,
    pub row_dot_bytes: u64,
    pub z_bytes: u64,
    /// u32 words of the positives buffer (`None`: no buffer).
    pub positives_len: Option<u64>,
}

/// Validates a problem — shape (N ≥ 2, 32-bit indexing), options, every storage binding against
/// `max_binding` and every dispatch against the grid — and returns its layout. The one check
/// that the raw [`SupConLoss::plan`] and the Burn ops share.
pub(crate) fn problem_layout(
    shape: SupConShape,
    kind: PositiveKind,
    options: &SupConOptions,
    strategy: Strategy,
    pass_columns: Option<u32>,
    limits: ProblemLimits,
) -> Result<ProblemLayout> {
    shape.validate()?;
    options.validate()?;
    let params = kernel_params(shape, kind, options);
    let (n_rows, n_anchors) = (params.n_rows, params.n_anchors);
    let rows = u64::from(n_rows);
    let positives_len = match kind {
        PositiveKind::Labels => Some(u64::from(shape.bsz)),
        PositiveKind::Labels64 => Some(2 * u64::from(shape.bsz)),
        PositiveKind::None => None,
        PositiveKind::Mask => Some(u64::from(shape.bsz) * u64::from(mask_words(shape.bsz))),
    };
    let launch = supcon_launch(shape, kind, options, strategy, pass_columns, false);
    let layout = ProblemLayout {
        running_bytes: 4 * launch.running_len,
        row_dot_bytes: 4 * launch.row_dot_len,
        z_bytes: z_bytes(shape),
        launch,
        positives_len,
    };
    let check = |name, bytes| super::check_binding_limit(name, bytes, limits.max_binding);
    check("features", shape.len() * 4)?;
    check("normalised features", layout.z_bytes)?;
    check("anchor statistics", u64::from(n_anchors) * 16)?;
    check("inverse norms", rows * 4)?;
    if let Some(len) = positives_len {
        check("positives", len * 4)?;
    }
    check("backward weights", layout.launch.weights_bytes)?;
    check("running anchor statistics", layout.running_bytes)?;
    check("row dots", layout.row_dot_bytes)?;
    for d in layout.launch.forward.iter().chain(&layout.launch.backward) {
        super::grid(d.kernel.name, d.groups, limits.max_groups_per_dim)?;
    }
    Ok(layout)
}

/// vec4s per row of the normalised copy `z`.
pub(crate) fn z_stride(dim: u32) -> u32 {
    dim.div_ceil(4)
}

/// The SupCon kernels' pipelines on one device: create once, plan per problem shape.
#[derive(Clone, Debug)]
pub struct SupConLoss {
    /// The pipelines of [`SUPCON_KERNELS`], in its order.
    kernels: Vec<Kernel>,
    pass_columns: Option<u32>,
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
                pass_columns: None,
                strategy: Strategy::for_adapter(&device.adapter_info()),
            })
        })
    }

    /// Plans every later problem with passes of `columns` contrast rows (rounded down to a
    /// multiple of 64, at least 64) instead of [`default_pass_columns`]. The result does not
    /// depend on it beyond float rounding; it exists to test the multi-pass path on small inputs
    /// and to bound a workgroup's work further on devices that need it.
    pub fn with_pass_columns(mut self, columns: u32) -> Self {
        self.pass_columns = Some(columns);
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
            self.pass_columns,
            ProblemLimits::of(device),
        )?;
        let params = kernel_params(shape, kind, options);
        let (n_rows, n_anchors) = (params.n_rows, params.n_anchors);
        let rows = u64::from(n_rows);
        // One parameter block per pass, at offsets the device accepts for storage bindings.
        let param_stride = param_stride(device.limits().min_storage_buffer_offset_alignment);
        let ProblemLayout {
            launch,
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
                weights: super::storage_buffer(
                    device,
                    "supcon weights",
                    launch.weights_bytes,
                    copy,
                ),
                launch,
                running: super::storage_buffer(device, "supcon running", running_bytes, copy),
                row_dot: super::storage_buffer(device, "supcon row_dot", row_dot_bytes, copy),
                z: super::storage_buffer(device, "supcon z", z_bytes, copy),
                inv_norm: super::storage_buffer(device, "supcon inv_norm", rows * 4, copy),
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
        self.run(device, queue, features, shape, positives, options, false)
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
        self.run(device, queue, features, shape, positives, options, true)
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: &[f32],
        shape: SupConShape,
        positives: Positives<'_>,
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
        let plan = self.plan(device, shape, positives.kind(), options)?;
        super::with_error_scope(device, || {
            let feature_buf = super::upload(device, "supcon features", features);
            let positive_buf = match positives {
                Positives::Labels(l) => Some(super::upload(device, "supcon labels", l)),
                Positives::Labels64(l) => Some(super::upload(device, "supcon labels", l)),
                Positives::None => None,
                Positives::Mask(m) => Some(super::upload(
                    device,
                    "supcon mask",
                    &pack_mask(m, shape.bsz)?,
                )),
            };
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
            plan.encode_forward(device, &mut encoder, &feature_buf, positive_buf.as_ref())?;
            if let Some(g) = &grad_buf {
                plan.encode_backward(device, &mut encoder, &feature_buf, positive_buf.as_ref(), g)?;
            }
            queue.submit([encoder.finish()]);
            let out: SupConOutput =
                super::read_buffer::<SupConOutput>(device, queue, &plan.output, 16)?[0];
            if out.status == STATUS_NON_FINITE {
                return Err(Error::NonFiniteFeatures);
            }
            let stats: Vec<[f32; 4]> = super::read_buffer(
                device,
                queue,
                &plan.anchor_stats,
                u64::from(plan.n_anchors) * 16,
            )?;
            let grad = match &grad_buf {
                Some(g) => Some(super::read_buffer::<f32>(device, queue, g, grad_bytes)?),
                None => None,
            };
            Ok(SupConResult {
                loss: out.loss,
                anchor_loss: stats.iter().map(|s| s[3]).collect(),
                n_valid_anchors: out.n_valid,
                grad,
            })
        })
    }
}

/// A validated problem shape with its device workspace. Records into the caller's encoder and
/// reads nothing back: the result stays on the device ([`output`](Self::output),
/// [`anchor_stats`](Self::anchor_stats), the caller's gradient buffer).
#[derive(Debug)]
pub struct SupConPlan {
    kernels: SupConLoss,
    shape: SupConShape,
    kind: PositiveKind,
    options: SupConOptions,
    n_anchors: u32,
    positives_len: Option<u64>,
    /// One [`Params`] block per entry of `launch.passes`, `param_stride` bytes apart.
    params: wgpu::Buffer,
    param_stride: u64,
    /// The dispatches of the forward and backward passes.
    launch: SupConLaunch,
    /// One backward pass's weights, transposed (`Strategy::Direct`; minimal otherwise).
    weights: wgpu::Buffer,
    running: wgpu::Buffer,
    row_dot: wgpu::Buffer,
    /// `[N, ceil(dim/4)]` vec4s: the normalised rows, view-major (written by the forward pass,
    /// read by both).
    z: wgpu::Buffer,
    inv_norm: wgpu::Buffer,
    anchor_stats: wgpu::Buffer,
    output: wgpu::Buffer,
    placeholder: wgpu::Buffer,
}

impl SupConPlan {
    pub fn shape(&self) -> SupConShape {
        self.shape
    }
    pub fn options(&self) -> &SupConOptions {
        &self.options
    }
    pub fn positive_kind(&self) -> PositiveKind {
        self.kind
    }
    /// Number of anchors: N (`All`) or bsz (`One`).
    pub fn n_anchors(&self) -> u32 {
        self.n_anchors
    }
    /// u32 elements the positives buffer needs (`None` for [`PositiveKind::None`]).
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
            &self.running,
            &self.row_dot,
            &self.z,
            &self.weights,
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

    /// Records the forward pass (prepare, forward, reduce) into `encoder`.
    ///
    /// # Shapes
    /// - `features`: `[bsz, n_views, dim]` f32, usage STORAGE.
    /// - `positives`: `[bsz]` labels (32-bit, or 64-bit with [`PositiveKind::Labels64`]),
    ///   `[bsz, ceil(bsz/32)]` packed mask, or `None` (SimCLR).
    pub fn encode_forward(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        features: &wgpu::Buffer,
        positives: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let storage = wgpu::BufferUsages::STORAGE;
        let x = check_buffer(device, "features", features, self.shape.len() * 4, storage)?;
        let pos = self.positives_binding(device, positives)?;
        self.encode(device, encoder, &self.launch.forward, x, pos, None)
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
        let storage = wgpu::BufferUsages::STORAGE;
        let bytes = self.shape.len() * 4;
        let x = check_buffer(device, "features", features, bytes, storage)?;
        let g = check_buffer(device, "grad", grad, bytes, storage)?;
        if features == grad {
            return Err(Error::Positives(
                "grad must be a different buffer from features".into(),
            ));
        }
        let pos = self.positives_binding(device, positives)?;
        self.encode(device, encoder, &self.launch.backward, x, pos, Some(g))
    }

    /// Records `dispatches` in order, each binding the plan's buffer for its [`Role`] (`grad`:
    /// the caller's gradient, which only backward dispatches bind).
    fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: &[Dispatch],
        features: wgpu::BufferBinding<'_>,
        positives: wgpu::BufferBinding<'_>,
        grad: Option<wgpu::BufferBinding<'_>>,
    ) -> Result<()> {
        let rows = self.shape.rows();
        for d in dispatches {
            let buffers: Vec<wgpu::BufferBinding<'_>> = d
                .bindings
                .iter()
                .map(|role| match role {
                    Role::Params(i) => self.params_binding(*i),
                    Role::Features => features.clone(),
                    Role::Positives => positives.clone(),
                    Role::InvNorm | Role::Discard => binding(&self.inv_norm, rows * 4),
                    Role::Z => self.z.as_entire_buffer_binding(),
                    Role::AnchorStats => {
                        binding(&self.anchor_stats, u64::from(self.n_anchors) * 16)
                    }
                    Role::Running => self.running.as_entire_buffer_binding(),
                    Role::Output => self.output.as_entire_buffer_binding(),
                    Role::Grad => grad
                        .clone()
                        .expect("only backward dispatches bind the gradient"),
                    Role::RowDot => self.row_dot.as_entire_buffer_binding(),
                    Role::Weights => self.weights.as_entire_buffer_binding(),
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

/// f64 CPU reference of the loss, every option, and its analytic gradient.
pub mod reference {
    use super::{ContrastMode, Positives, Reduction, SupConOptions, SupConShape, Variant};

    /// What the reference computes.
    #[derive(Clone, Debug)]
    pub struct Output {
        pub loss: f64,
        /// Per anchor, view-major.
        pub anchor_loss: Vec<f64>,
        pub n_valid_anchors: usize,
        /// dL/dfeatures in the `[bsz, n_views, dim]` layout.
        pub grad: Vec<f64>,
    }

    const NORM_EPS: f64 = 1e-12;

    /// Loss and gradient of `features` (`[bsz, n_views, dim]`, row-major).
    pub fn supcon(
        features: &[f64],
        shape: SupConShape,
        positives: Positives<'_>,
        options: &SupConOptions,
    ) -> Output {
        let (bsz, nv, d) = (
            shape.bsz as usize,
            shape.n_views as usize,
            shape.dim as usize,
        );
        let n = bsz * nv;
        assert_eq!(features.len(), n * d, "features length");
        let tau = options.temperature;
        let scale = tau / options.base_temperature;
        let memory_row = |r: usize| (r % bsz) * nv + r / bsz;
        let x: Vec<&[f64]> = (0..n)
            .map(|r| &features[memory_row(r) * d..][..d])
            .collect();
        let norms: Vec<f64> = x
            .iter()
            .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .zip(&norms)
            .map(|(r, &nr)| r.iter().map(|v| v / nr.max(NORM_EPS)).collect())
            .collect();
        let dot = |i: usize, j: usize| z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum::<f64>();
        let s: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| dot(i, j) / tau).collect())
            .collect();
        let n_anchors = match options.contrast_mode {
            ContrastMode::All => n,
            ContrastMode::One => bsz,
        };
        let logsumexp = |vals: &mut dyn Iterator<Item = f64>| {
            let v: Vec<f64> = vals.collect();
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        };

        // Per anchor: loss and d loss_i / d s_ij.
        let mut anchor_loss = vec![0.0; n_anchors];
        let mut dloss_ds = vec![vec![0.0; n]; n_anchors];
        let mut n_valid = 0;
        for i in 0..n_anchors {
            let pos: Vec<usize> = (0..n)
                .filter(|&j| positives.is_positive(i, j, bsz))
                .collect();
            if pos.is_empty() {
                continue;
            }
            n_valid += 1;
            let lse = logsumexp(&mut (0..n).filter(|&j| j != i).map(|j| s[i][j]));
            let np = pos.len() as f64;
            match options.variant {
                Variant::Out => {
                    let mean_pos = pos.iter().map(|&p| s[i][p]).sum::<f64>() / np;
                    anchor_loss[i] = -scale * (mean_pos - lse);
                    for j in (0..n).filter(|&j| j != i) {
                        dloss_ds[i][j] = scale * (s[i][j] - lse).exp();
                    }
                    for &p in &pos {
                        dloss_ds[i][p] -= scale / np;
                    }
                }
                Variant::In => {
                    let lse_pos = logsumexp(&mut pos.iter().map(|&p| s[i][p]));
                    anchor_loss[i] = -scale * (lse_pos - np.ln() - lse);
                    for j in (0..n).filter(|&j| j != i) {
                        dloss_ds[i][j] = scale * (s[i][j] - lse).exp();
                    }
                    for &p in &pos {
                        dloss_ds[i][p] -= scale * (s[i][p] - lse_pos).exp();
                    }
                }
            }
        }
        let denominator = match options.reduction {
            Reduction::AllAnchors => n_anchors,
            Reduction::AnchorsWithPositives => n_valid,
        };
        let weight = if n_valid == 0 {
            0.0
        } else {
            1.0 / denominator as f64
        };
        let loss = anchor_loss.iter().sum::<f64>() * weight;

        // dL/dz_r = (1/tau) sum_j (G_rj + G_jr) z_j, then through the normalisation.
        let mut grad = vec![0.0; n * d];
        for r in 0..n {
            let mut gz = vec![0.0; d];
            for j in 0..n {
                let mut w = 0.0;
                if r < n_anchors {
                    w += dloss_ds[r][j];
                }
                if j < n_anchors {
                    w += dloss_ds[j][r];
                }
                w *= weight / tau;
                for k in 0..d {
                    gz[k] += w * z[j][k];
                }
            }
            let out = &mut grad[memory_row(r) * d..][..d];
            if norms[r] > NORM_EPS {
                let zg: f64 = z[r].iter().zip(&gz).map(|(a, b)| a * b).sum();
                for k in 0..d {
                    out[k] = (gz[k] - z[r][k] * zg) / norms[r];
                }
            } else {
                for k in 0..d {
                    out[k] = gz[k] / NORM_EPS;
                }
            }
        }
        Output {
            loss,
            anchor_loss,
            n_valid_anchors: n_valid,
            grad,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::plan::{BACKWARD_COLUMNS, BACKWARD_ROWS, FORWARD_ANCHORS};
    use crate::kernels::wgsl_mirror::{constants, module, rust_layout, struct_layout};
    use naga::Literal::U32;

    const HOST_WGSL: &str = include_str!("../../shaders/lib/supcon_host.wgsl");

    #[test]
    fn the_wgsl_blocks_have_the_rust_layouts() {
        let wgsl = module("lib/supcon_host.wgsl", HOST_WGSL);
        let params = rust_layout!(Params {
            n_rows,
            bsz,
            n_views,
            dim,
            n_anchors,
            pos_mode,
            mask_words,
            variant,
            reduction,
            inv_temperature,
            loss_scale,
            non_finite_fill,
            col_begin,
            col_end,
            z_stride,
        });
        assert_eq!(struct_layout(&wgsl, "Params"), params);
        let output = rust_layout!(SupConOutput {
            loss,
            weight,
            n_valid,
            status,
        });
        assert_eq!(struct_layout(&wgsl, "Output"), output);
    }

    #[test]
    fn the_wgsl_constants_have_the_rust_values() {
        // Every constant of the WGSL file, none left out.
        let rust = [
            ("POS_LABELS", U32(POS_LABELS)),
            ("POS_NONE", U32(POS_NONE)),
            ("POS_MASK", U32(POS_MASK)),
            ("POS_LABELS64", U32(POS_LABELS64)),
            ("VARIANT_OUT", U32(VARIANT_OUT)),
            ("VARIANT_IN", U32(VARIANT_IN)),
            ("REDUCTION_ALL_ANCHORS", U32(REDUCTION_ALL_ANCHORS)),
            (
                "REDUCTION_ANCHORS_WITH_POSITIVES",
                U32(REDUCTION_ANCHORS_WITH_POSITIVES),
            ),
            ("STATUS_OK", U32(STATUS_OK)),
            ("STATUS_NON_FINITE", U32(STATUS_NON_FINITE)),
            ("TILE_A", U32(FORWARD_ANCHORS as u32)),
            ("TILE_C", U32(TILE_COLUMNS)),
            ("TILE_R", U32(BACKWARD_ROWS as u32)),
            ("CHUNK_D", U32(BACKWARD_COLUMNS as u32)),
        ];
        let wgsl = constants(&module("lib/supcon_host.wgsl", HOST_WGSL));
        let rust = rust.map(|(name, value)| (name.to_string(), value)).into();
        assert_eq!(wgsl, rust);
    }

    #[test]
    fn parameter_blocks_start_at_aligned_offsets() {
        let size = std::mem::size_of::<Params>() as u64;
        // WebGPU's default (256), lavapipe's own (32), real GPUs' (16-64), and below the size.
        for alignment in [1, 4, 16, 32, 64, 128, 256] {
            let stride = param_stride(alignment);
            assert!(stride >= size, "{alignment}: {stride}");
            assert_eq!(stride % u64::from(alignment), 0, "{alignment}: {stride}");
            assert!(
                stride < size + u64::from(alignment),
                "{alignment}: {stride}"
            );
        }
    }
}
