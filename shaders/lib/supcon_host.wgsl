// What the SupCon kernels and the host (src/kernels/supcon/layout.rs) agree on: the parameter block at
// binding 0 and its mode numbers, the result block and its status word, the caller's feature
// layout, and the tile sizes the host counts workgroups and passes in. A unit test in supcon/layout.rs
// checks both blocks' layouts and every constant here against their Rust mirrors.
//
// Every storage binding is read_write: Burn's kernel path pools tensors in shared buffers and a
// read-only binding then fails validation. Params travel in a storage buffer for the same reason.

struct Params {
    n_rows: u32,          // N = bsz * n_views: the anchors' rows, the rows that get a gradient
    bsz: u32,
    n_views: u32,
    dim: u32,
    n_anchors: u32,       // N (contrast_mode all) or bsz (contrast_mode one)
    pos_mode: u32,        // POS_*
    mask_words: u32,      // u32 words per mask row, ceil(bsz / 32)
    variant: u32,         // VARIANT_*
    reduction: u32,       // REDUCTION_*
    inv_temperature: f32,
    loss_scale: f32,      // temperature / base_temperature
    non_finite_fill: f32, // loss and gradient when a row is not finite: 0 (raw API) or NaN (Burn)
    col_begin: u32,       // this pass's contrast rows: [col_begin, col_end) (a multiple of TILE_C)
    col_end: u32,         // (the kernels' column loop runs over several passes; see supcon/layout.rs)
    z_stride: u32,        // vec4s per row of the normalised copy z: ceil(dim / 4)
    n_contrast: u32,      // N + K: the batch's rows, then K contrast-only rows ("keys", a queue)
    n_splits: u32,        // the pass's columns in this many splits, one slice of the grid each,
    split_columns: u32,   // split_columns rows long (a multiple of TILE_C); see below
    pad0: u32,
    pad1: u32,
}

// Splits (flash-decoding): the heavy kernels' grid is (row blocks) x n_splits; the workgroups of
// split s stream contrast rows [col_begin + s * split_columns, ...) of the pass, at most
// split_columns of them, and write their partial results to split s's slot of a workspace that a
// merge kernel folds in the order s = 0, 1, ... (deterministic: no atomics, no race). Splitting
// the column loop is what fills a large GPU when N alone gives too few row blocks.

// Contrast rows [begin, end) of split `split` of the current pass.
fn split_range(p: Params, split: u32) -> vec2<u32> {
    let begin = p.col_begin + split * p.split_columns;
    return vec2<u32>(begin, min(begin + p.split_columns, p.col_end));
}

// Params.pos_mode: what the `positives` buffer holds. POS_MASK and POS_LABELS64 are the largest:
// the two modes that look a pair up in the buffer (tested as pos_mode >= POS_MASK).
const POS_LABELS: u32 = 0u;    // [bsz] labels
const POS_NONE: u32 = 1u;      // nothing: each sample is its own class (SimCLR)
const POS_MASK: u32 = 2u;      // a bit-packed [bsz, bsz] mask, mask_words per row
const POS_LABELS64: u32 = 3u;  // 64-bit labels, two words per sample

// Params.variant: where the mean over positives sits (Khosla et al. 2020, Eq. 2 and 3).
const VARIANT_OUT: u32 = 0u;  // L_out, outside the log
const VARIANT_IN: u32 = 1u;   // L_in, inside the log

// Params.reduction: which anchors the loss is the mean over.
const REDUCTION_ALL_ANCHORS: u32 = 0u;
const REDUCTION_ANCHORS_WITH_POSITIVES: u32 = 1u;

// The result block supcon_reduce.wgsl writes and the backward kernels read.
struct Output {
    loss: f32,
    weight: f32,
    n_valid: u32,
    status: u32,  // STATUS_*
}

const STATUS_OK: u32 = 0u;
const STATUS_NON_FINITE: u32 = 1u;  // a feature row held a NaN or an infinity

// Tile sizes the host's workgroup counts and pass boundaries are made of.
const TILE_A: u32 = 64u;    // anchors per workgroup of the forward kernels
const TILE_C: u32 = 64u;    // contrast rows per column tile
const TILE_R: u32 = 64u;    // output rows per workgroup of the backward kernels
const CHUNK_D: u32 = 128u;  // output columns per workgroup of the gradient kernels

@group(0) @binding(0) var<storage, read_write> params: Params;

// Contrast rows past the batch's N are keys: rows of z that only ever appear as columns (never
// anchors, no gradient), with labels after the batch's in `positives`.

// Memory row of view-major row r in the caller's [bsz, n_views, dim] features: sample r % bsz,
// view r / bsz.
fn memory_row(r: u32) -> u32 {
    return (r % params.bsz) * params.n_views + r / params.bsz;
}
