//! Pass sizes, workspace sizes and the `Params`/`Output` blocks the kernels read and write.

use super::{
    ContrastMode, PositiveKind, Reduction, Strategy, SupConOptions, SupConShape, Variant,
    mask_words,
};
use crate::Result;
use crate::kernels::plan::{Columns, SupConLaunch, supcon_launch};

/// Contrast rows per column tile of the forward and backward kernels (`TILE_C` of
/// `shaders/lib/supcon_host.wgsl`; a unit test checks the value).
pub(crate) const TILE_COLUMNS: u32 = 64;

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

/// One pass of a column loop (one dispatch of the heavy kernel, then its merge): contrast rows
/// `[begin, end)`, cut into `splits` slices of `split_columns` rows (a multiple of the column
/// tile; the last slice may be shorter) that the kernel's grid runs side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pass {
    pub begin: u32,
    pub end: u32,
    pub splits: u32,
    pub split_columns: u32,
}

/// The backward passes' column ranges and the bytes of the Direct weights workspace. With
/// [`Strategy::Tiles`] the backward kernel takes the forward's ranges (its workspace, the
/// splits' partial sums, is sized by the plan). With
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
        Strategy::Tiles => (forward.to_vec(), 0),
        Strategy::Direct => {
            // Weights of the N rows that get a gradient against N + K contrast rows.
            let n4 = u64::from(n_rows.div_ceil(4));
            let columns = pass_columns.unwrap_or_else(|| {
                let budget = z_bytes(shape).clamp(8 << 20, 128 << 20);
                let fit = (budget / (n4 * 16)).min(u64::from(default_pass_columns(shape.dim)));
                fit.max(u64::from(TILE_COLUMNS)) as u32
            });
            let passes = column_passes(shape.contrast_rows() as u32, columns);
            let longest = passes.iter().map(|(b, e)| e - b).max().unwrap_or(1);
            (passes, u64::from(longest) * n4 * 16)
        }
    }
}

/// Bytes of the normalised copy `z` of the features and keys (`(N + K)·⌈dim/4⌉` vec4s).
pub(crate) fn z_bytes(shape: SupConShape) -> u64 {
    shape.contrast_rows() * u64::from(z_stride(shape.dim)) * 16
}

/// f32s of `running`, the forward statistics carried between passes: 8 per anchor with several
/// forward passes, else a minimal never-read 8.
pub(crate) fn running_len(n_anchors: u64, forward_passes: usize) -> u64 {
    if forward_passes > 1 { 8 * n_anchors } else { 8 }
}

/// f32s of `row_dot` (z_r · g_r per row): with [`Strategy::Direct`] one per row (its first
/// backward kernel hands it to the second, and it carries the sum between passes); with
/// [`Strategy::Tiles`] one per row that carries the sum between passes, then one per row and
/// split (`max_splits`: the most splits of a backward pass; the carry comes first because passes
/// may differ in their splits).
pub(crate) fn row_dot_len(strategy: Strategy, rows: u64, max_splits: u32) -> u64 {
    match strategy {
        Strategy::Direct => rows,
        Strategy::Tiles => (u64::from(max_splits) + 1) * rows,
    }
}

/// f32s of `partials`, the forward kernels' per-split statistics: 8 per anchor and split.
pub(crate) fn partials_len(n_anchors: u64, max_splits: u32) -> u64 {
    8 * n_anchors * u64::from(max_splits)
}

/// Bytes of the splits' raw gradient sums of [`Strategy::Tiles`]: `⌈dim/4⌉` vec4s per row and
/// split.
pub(crate) fn partial_grad_bytes(shape: SupConShape, max_splits: u32) -> u64 {
    u64::from(max_splits) * shape.rows() * u64::from(z_stride(shape.dim)) * 16
}

/// The column ranges `[begin, end)` of the passes over `n_rows` contrast rows: as few passes as
/// hold at most `pass_columns` rows each (rounded down to whole tiles, at least one), of equal
/// length in whole tiles but the last (so that no pass is a sliver that leaves a GPU idle).
pub(crate) fn column_passes(n_rows: u32, pass_columns: u32) -> Vec<(u32, u32)> {
    let most = (pass_columns / TILE_COLUMNS).max(1) * TILE_COLUMNS;
    let passes = n_rows.div_ceil(most);
    let step = n_rows.div_ceil(passes).next_multiple_of(TILE_COLUMNS);
    (0..n_rows.div_ceil(step))
        .map(|p| (p * step, ((p + 1) * step).min(n_rows)))
        .collect()
}

/// The 16-byte result block `supcon_reduce.wgsl` writes
/// ([`SupConPlan::output`](super::SupConPlan::output)).
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
    pub(super) n_rows: u32,
    pub(super) bsz: u32,
    pub(super) n_views: u32,
    pub(super) dim: u32,
    pub(super) n_anchors: u32,
    pub(super) pos_mode: u32,
    pub(super) mask_words: u32,
    pub(super) variant: u32,
    pub(super) reduction: u32,
    pub(super) inv_temperature: f32,
    pub(super) loss_scale: f32,
    /// What the loss and the gradient are written as when a feature row is not finite.
    pub(super) non_finite_fill: f32,
    pub(super) col_begin: u32,
    pub(super) col_end: u32,
    pub(super) z_stride: u32,
    /// N + K.
    pub(super) n_contrast: u32,
    pub(super) n_splits: u32,
    pub(super) split_columns: u32,
    pub(super) pad0: u32,
    pub(super) pad1: u32,
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

    /// The same parameters for one pass of a column loop.
    pub(crate) fn for_pass(self, pass: Pass) -> Params {
        Params {
            col_begin: pass.begin,
            col_end: pass.end,
            n_splits: pass.splits,
            split_columns: pass.split_columns,
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
        col_end: shape.contrast_rows() as u32,
        z_stride: z_stride(shape.dim),
        n_contrast: shape.contrast_rows() as u32,
        n_splits: 1,
        split_columns: shape.contrast_rows() as u32,
        pad0: 0,
        pad1: 0,
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
    pub partials_bytes: u64,
    pub running_bytes: u64,
    pub row_dot_bytes: u64,
    pub z_bytes: u64,
    /// u32 words of the positives buffer (`None`: no buffer): the batch's labels, then the
    /// keys'.
    pub positives_len: Option<u64>,
}

/// Validates a problem — shape (N ≥ 2, 32-bit indexing), options, keys only with labels or
/// none, every storage binding against
/// `max_binding` and every dispatch against the grid — and returns its layout. The one check
/// that the raw [`SupConLoss::plan`] and the Burn ops share.
pub(crate) fn problem_layout(
    shape: SupConShape,
    kind: PositiveKind,
    options: &SupConOptions,
    strategy: Strategy,
    columns: Columns,
    limits: ProblemLimits,
) -> Result<ProblemLayout> {
    shape.validate()?;
    options.validate()?;
    let params = kernel_params(shape, kind, options);
    let n_anchors = params.n_anchors;
    let labels = u64::from(shape.bsz) + u64::from(shape.keys);
    let positives_len = match kind {
        PositiveKind::Labels => Some(labels),
        PositiveKind::Labels64 => Some(2 * labels),
        PositiveKind::None => None,
        PositiveKind::Mask if shape.keys > 0 => {
            return Err(crate::Error::Keys(
                "keys need labels (or none, for SimCLR); an explicit mask has no key columns"
                    .into(),
            ));
        }
        PositiveKind::Mask => Some(u64::from(shape.bsz) * u64::from(mask_words(shape.bsz))),
    };
    let launch = supcon_launch(shape, kind, options, strategy, columns, false);
    let layout = ProblemLayout {
        partials_bytes: 4 * launch.partials_len,
        running_bytes: 4 * launch.running_len,
        row_dot_bytes: 4 * launch.row_dot_len,
        z_bytes: z_bytes(shape),
        launch,
        positives_len,
    };
    let check = |name, bytes| crate::kernels::check_binding_limit(name, bytes, limits.max_binding);
    check("features", shape.len() * 4)?;
    check("keys", shape.keys_len() * 4)?;
    check("normalised features", layout.z_bytes)?;
    check("anchor statistics", u64::from(n_anchors) * 16)?;
    check("inverse norms", shape.contrast_rows() * 4)?;
    if let Some(len) = positives_len {
        check("positives", len * 4)?;
    }
    check("backward workspace", layout.launch.scratch_bytes)?;
    check("split anchor statistics", layout.partials_bytes)?;
    check("running anchor statistics", layout.running_bytes)?;
    check("row dots", layout.row_dot_bytes)?;
    for d in layout.launch.forward.iter().chain(&layout.launch.backward) {
        crate::kernels::grid(d.kernel.name, d.groups, limits.max_groups_per_dim)?;
    }
    Ok(layout)
}

/// vec4s per row of the normalised copy `z`.
pub(crate) fn z_stride(dim: u32) -> u32 {
    dim.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::plan::{BACKWARD_COLUMNS, BACKWARD_ROWS, FORWARD_ANCHORS};
    use crate::kernels::wgsl_mirror::{constants, module, rust_layout, struct_layout};
    use naga::Literal::U32;

    const HOST_WGSL: &str = include_str!("../../../shaders/lib/supcon_host.wgsl");

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
            n_contrast,
            n_splits,
            split_columns,
            pad0,
            pad1,
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
