// SupCon loss, step 4a of the backward pass on CPU adapters (`Strategy::Direct`, see
// supcon.rs): the weights W_rj = (G_rj + G_jr) / tau of one pass's contrast rows
// [col_begin, col_end), written out so that supcon_backward_apply.wgsl can form sum_j W_rj z_j
// without workgroup barriers.
// (supcon_backward.wgsl does both in one kernel, exchanging W through workgroup memory; on
// lavapipe a loop holding barriers runs its loads about 1.7x slower.) Formulas: see
// supcon_backward.wgsl.
//
// Each 8 x 8 workgroup owns TILE_R rows; thread (tx, ty) computes the cosines of rows
// 8ty..8ty+7 and columns 8tx..8tx+7 of each column tile straight from z (vec4 loads, no barrier
// in the loop; the 8 x 8 blocks of supcon_forward_direct.wgsl, for the same reason), turns them
// into weights and stores them transposed, weights[c - col_begin][r], as vec4s over 4 rows. It
// also adds sum_j W_rj cos_rj over the pass to row_dot[r] (the first pass overwrites it). The
// N x N matrix is never stored: only the pass's [P, N] block. As there, register arrays are only
// indexed with constants (lavapipe keeps an array indexed with a variable in memory), hence the
// per-row calls with literal indices, the vec4 arithmetic over 4 columns, and the 4 x 4
// transposes that turn rows of weights into the stored columns. Workgroup memory: 2.1 KiB.

struct Params {
    n_rows: u32,          // N = bsz * n_views
    bsz: u32,
    n_views: u32,
    dim: u32,
    n_anchors: u32,       // N (contrast_mode all) or bsz (contrast_mode one)
    pos_mode: u32,        // 0: labels, 1: none (SimCLR), 2: bit-packed [bsz, bsz] mask,
                          // 3: 64-bit labels (two words per sample)
    mask_words: u32,      // u32 words per mask row, ceil(bsz / 32)
    variant: u32,         // 0: L_out, 1: L_in
    reduction: u32,       // 0: mean over all anchors, 1: mean over anchors with a positive
    inv_temperature: f32,
    loss_scale: f32,      // temperature / base_temperature
    non_finite_fill: f32, // loss and gradient when a row is not finite: 0 (raw API) or NaN (Burn)
    col_begin: u32,       // this pass's contrast rows: [col_begin, col_end) (a multiple of 64)
    col_end: u32,         // (the kernels' column loop runs over several passes; see supcon.rs)
    z_stride: u32,        // vec4s per row of the normalised copy z: ceil(dim / 4)
}

struct Output {
    loss: f32,
    weight: f32,
    n_valid: u32,
    status: u32,
}

const TILE_R: u32 = 64u;
const TILE_C: u32 = 64u;
const WG: u32 = 8u;     // threads per side of the workgroup
const BLOCK: u32 = 8u;  // rows and columns per thread and tile

@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
@group(0) @binding(3) var<storage, read_write> anchor_stats: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> output: Output;
// [col_end - col_begin, ceil(N / 4)] vec4s: the pass's weights, transposed.
@group(0) @binding(5) var<storage, read_write> weights_t: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> row_dot: array<f32>;

var<workgroup> wp: Params;
var<workgroup> red: array<f32, 512>;  // [row][tx]: the final sum of z_r . g_r

fn row_key(r: u32) -> u32 {
    let sample = r % params.bsz;
    if (params.pos_mode == 0u) {
        return positives[sample];
    }
    return sample;
}

fn is_positive(key_i: u32, key_j: u32) -> bool {
    if (params.pos_mode == 2u) {
        let word = positives[key_i * params.mask_words + key_j / 32u];
        return ((word >> (key_j % 32u)) & 1u) == 1u;
    }
    if (params.pos_mode == 3u) {
        // 64-bit labels, compared at full width: both words of the two samples.
        let li = vec2<u32>(positives[2u * key_i], positives[2u * key_i + 1u]);
        let lj = vec2<u32>(positives[2u * key_j], positives[2u * key_j + 1u]);
        return all(li == lj);
    }
    return key_i == key_j;
}

// The keys of rows rows.x..rows.w.
fn keys4(rows: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(row_key(rows.x), row_key(rows.y), row_key(rows.z), row_key(rows.w));
}

// is_positive(a[k], b[k]) for each k.
fn positive4(a: vec4<u32>, b: vec4<u32>) -> vec4<bool> {
    if (params.pos_mode >= 2u) {
        return vec4<bool>(
            is_positive(a.x, b.x),
            is_positive(a.y, b.y),
            is_positive(a.z, b.z),
            is_positive(a.w, b.w),
        );
    }
    return a == b;
}

// Anchor statistics of row r, or zeros (no contribution) when r is not an anchor.
fn stats_of(r: u32) -> vec4<f32> {
    if (r < params.n_anchors) {
        return anchor_stats[r];
    }
    return vec4<f32>(0.0);
}

// The statistics of 4 rows as columns: [0] lse_A, [1] lse_P, [2] |P| of rows rows.x..rows.w.
fn stats4(rows: vec4<u32>) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(
        stats_of(rows.x),
        stats_of(rows.y),
        stats_of(rows.z),
        stats_of(rows.w),
    ));
}

// d loss_i / d s_ij for 4 (anchor i, row j) pairs with log-sum-exps lse and lse_p and |P(i)|
// pc (0 where i has no positive).
fn anchor_grad4(
    s: vec4<f32>,
    lse: vec4<f32>,
    lse_p: vec4<f32>,
    pc: vec4<f32>,
    positive: vec4<bool>,
) -> vec4<f32> {
    let zero = vec4<f32>(0.0);
    var g = exp(s - lse);
    if (any(positive)) {
        if (params.variant == 0u) {
            g -= select(zero, 1.0 / max(pc, vec4<f32>(1.0)), positive);
        } else {
            g -= select(zero, exp(s - lse_p), positive);
        }
    }
    return select(zero, g, pc > zero);
}

// acc[2i + h][j]: cosine of the rows at z offsets ra[i] and rc[4h + j] (ra, rc: rows 0-3 in
// .lo, 4-7 in .hi).
fn dots(ra_lo: vec4<u32>, ra_hi: vec4<u32>, rc_lo: vec4<u32>, rc_hi: vec4<u32>, stride: u32)
    -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>;
    for (var k = 0u; k < stride; k += 1u) {
        let c0 = z[rc_lo.x + k];
        let c1 = z[rc_lo.y + k];
        let c2 = z[rc_lo.z + k];
        let c3 = z[rc_lo.w + k];
        let c4 = z[rc_hi.x + k];
        let c5 = z[rc_hi.y + k];
        let c6 = z[rc_hi.z + k];
        let c7 = z[rc_hi.w + k];
        let a0 = z[ra_lo.x + k];
        let a1 = z[ra_lo.y + k];
        let a2 = z[ra_lo.z + k];
        let a3 = z[ra_lo.w + k];
        let a4 = z[ra_hi.x + k];
        let a5 = z[ra_hi.y + k];
        let a6 = z[ra_hi.z + k];
        let a7 = z[ra_hi.w + k];
        acc[0] += vec4<f32>(dot(a0, c0), dot(a0, c1), dot(a0, c2), dot(a0, c3));
        acc[1] += vec4<f32>(dot(a0, c4), dot(a0, c5), dot(a0, c6), dot(a0, c7));
        acc[2] += vec4<f32>(dot(a1, c0), dot(a1, c1), dot(a1, c2), dot(a1, c3));
        acc[3] += vec4<f32>(dot(a1, c4), dot(a1, c5), dot(a1, c6), dot(a1, c7));
        acc[4] += vec4<f32>(dot(a2, c0), dot(a2, c1), dot(a2, c2), dot(a2, c3));
        acc[5] += vec4<f32>(dot(a2, c4), dot(a2, c5), dot(a2, c6), dot(a2, c7));
        acc[6] += vec4<f32>(dot(a3, c0), dot(a3, c1), dot(a3, c2), dot(a3, c3));
        acc[7] += vec4<f32>(dot(a3, c4), dot(a3, c5), dot(a3, c6), dot(a3, c7));
        acc[8] += vec4<f32>(dot(a4, c0), dot(a4, c1), dot(a4, c2), dot(a4, c3));
        acc[9] += vec4<f32>(dot(a4, c4), dot(a4, c5), dot(a4, c6), dot(a4, c7));
        acc[10] += vec4<f32>(dot(a5, c0), dot(a5, c1), dot(a5, c2), dot(a5, c3));
        acc[11] += vec4<f32>(dot(a5, c4), dot(a5, c5), dot(a5, c6), dot(a5, c7));
        acc[12] += vec4<f32>(dot(a6, c0), dot(a6, c1), dot(a6, c2), dot(a6, c3));
        acc[13] += vec4<f32>(dot(a6, c4), dot(a6, c5), dot(a6, c6), dot(a6, c7));
        acc[14] += vec4<f32>(dot(a7, c0), dot(a7, c1), dot(a7, c2), dot(a7, c3));
        acc[15] += vec4<f32>(dot(a7, c4), dot(a7, c5), dot(a7, c6), dot(a7, c7));
    }
    return acc;
}

// The 4 contrast rows of one half of the thread's columns: their indices, keys and statistics.
struct Columns {
    cols: vec4<u32>,
    keys: vec4<u32>,
    stats: mat4x4<f32>,  // stats4 of the columns
}

fn columns(cols: vec4<u32>) -> Columns {
    let rows = min(cols, vec4<u32>(params.n_rows - 1u));
    return Columns(cols, keys4(rows), stats4(cols));
}

// The weights of row r against one half's 4 columns, W_rj = coef * (G_rj + G_jr) (0 outside
// A(r)), in .w; sum_j W_rj cos_rj in .zg.
struct Part {
    w: vec4<f32>,
    zg: f32,
}

fn weights4(r: u32, cosine: vec4<f32>, c: Columns, coef: f32) -> Part {
    let n_rows = params.n_rows;
    let valid = (c.cols < vec4<u32>(n_rows)) & (c.cols != vec4<u32>(r)) & vec4<bool>(r < n_rows);
    let key_r = vec4<u32>(row_key(min(r, n_rows - 1u)));
    let st_r = stats_of(r);
    let s = cosine * params.inv_temperature;
    // An explicit mask need not be symmetric: j in P(r) and r in P(j) differ.
    let g_rj = anchor_grad4(
        s,
        vec4<f32>(st_r.x),
        vec4<f32>(st_r.y),
        vec4<f32>(st_r.z),
        positive4(key_r, c.keys),
    );
    let g_jr = anchor_grad4(s, c.stats[0], c.stats[1], c.stats[2], positive4(c.keys, key_r));
    let w = select(vec4<f32>(0.0), coef * (g_rj + g_jr), valid);
    return Part(w, dot(w, cosine));
}

// Row r's weights against the thread's 8 columns: .lo columns 0-3, .hi 4-7.
struct RowW {
    lo: vec4<f32>,
    hi: vec4<f32>,
    zg: f32,
}

fn row_weights(r: u32, lo: vec4<f32>, hi: vec4<f32>, c_lo: Columns, c_hi: Columns, coef: f32)
    -> RowW {
    let a = weights4(r, lo, c_lo, coef);
    let b = weights4(r, hi, c_hi, coef);
    return RowW(a.w, b.w, a.zg + b.zg);
}

// Stores the weights m[j] (over 4 consecutive rows, vec4 rq of the transposed workspace) of
// columns c + j, j = 0..3, of the pass.
fn store4(c: u32, rq: u32, n4: u32, m: mat4x4<f32>) {
    if (4u * rq >= params.n_rows) {
        return;
    }
    let base = (c - params.col_begin) * n4 + rq;
    let end = params.col_end;
    if (c < end) {
        weights_t[base] = m[0];
    }
    if (c + 1u < end) {
        weights_t[base + n4] = m[1];
    }
    if (c + 2u < end) {
        weights_t[base + 2u * n4] = m[2];
    }
    if (c + 3u < end) {
        weights_t[base + 3u * n4] = m[3];
    }
}

@compute @workgroup_size(8, 8, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        wp = params;
    }
    let p = workgroupUniformLoad(&wp);
    let group = wid.x + wid.y * nwg.x;
    if (group >= (p.n_rows + TILE_R - 1u) / TILE_R) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let r0 = group * TILE_R;
    let last = p.n_rows - 1u;
    let zs = p.z_stride;
    let n4 = (p.n_rows + 3u) / 4u;
    let coef = output.weight * params.loss_scale * params.inv_temperature;
    let rb = r0 + ty * BLOCK;  // the thread's first row
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    let ra_lo = min(vec4<u32>(rb) + lanes, vec4<u32>(last)) * zs;
    let ra_hi = min(vec4<u32>(rb + 4u) + lanes, vec4<u32>(last)) * zs;
    let rq = rb / 4u;  // the thread's rows as vec4s of the workspace: rq and rq + 1
    var zg_lo = vec4<f32>(0.0);
    var zg_hi = vec4<f32>(0.0);
    // Rows that are not anchors (contrast_mode one) only meet anchors' G_jr; their weights
    // for the other columns stay 0.
    var col_end = p.col_end;
    if (r0 >= p.n_anchors) {
        col_end = min(col_end, p.n_anchors);
    }
    for (var c0 = p.col_begin; c0 < p.col_end; c0 += TILE_C) {
        let cb = c0 + tx * BLOCK;  // the thread's first column
        var w_lo_lo = mat4x4<f32>();  // rows 0-3 x columns 0-3, one row per matrix column
        var w_lo_hi = mat4x4<f32>();  // rows 0-3 x columns 4-7
        var w_hi_lo = mat4x4<f32>();  // rows 4-7 x columns 0-3
        var w_hi_hi = mat4x4<f32>();  // rows 4-7 x columns 4-7
        if (c0 < col_end) {
            let cols = vec4<u32>(cb) + lanes;
            let rows_lo = min(cols, vec4<u32>(last));
            let rows_hi = min(cols + vec4<u32>(4u), vec4<u32>(last));
            let acc = dots(ra_lo, ra_hi, rows_lo * zs, rows_hi * zs, zs);
            let c_lo = columns(cols);
            let c_hi = columns(cols + vec4<u32>(4u));
            let w0 = row_weights(rb, acc[0], acc[1], c_lo, c_hi, coef);
            let w1 = row_weights(rb + 1u, acc[2], acc[3], c_lo, c_hi, coef);
            let w2 = row_weights(rb + 2u, acc[4], acc[5], c_lo, c_hi, coef);
            let w3 = row_weights(rb + 3u, acc[6], acc[7], c_lo, c_hi, coef);
            let w4 = row_weights(rb + 4u, acc[8], acc[9], c_lo, c_hi, coef);
            let w5 = row_weights(rb + 5u, acc[10], acc[11], c_lo, c_hi, coef);
            let w6 = row_weights(rb + 6u, acc[12], acc[13], c_lo, c_hi, coef);
            let w7 = row_weights(rb + 7u, acc[14], acc[15], c_lo, c_hi, coef);
            zg_lo += vec4<f32>(w0.zg, w1.zg, w2.zg, w3.zg);
            zg_hi += vec4<f32>(w4.zg, w5.zg, w6.zg, w7.zg);
            w_lo_lo = mat4x4<f32>(w0.lo, w1.lo, w2.lo, w3.lo);
            w_lo_hi = mat4x4<f32>(w0.hi, w1.hi, w2.hi, w3.hi);
            w_hi_lo = mat4x4<f32>(w4.lo, w5.lo, w6.lo, w7.lo);
            w_hi_hi = mat4x4<f32>(w4.hi, w5.hi, w6.hi, w7.hi);
        }
        // Transposed: column j of each matrix is one contrast row's weights over 4 rows.
        store4(cb, rq, n4, transpose(w_lo_lo));
        store4(cb + 4u, rq, n4, transpose(w_lo_hi));
        store4(cb, rq + 1u, n4, transpose(w_hi_lo));
        store4(cb + 4u, rq + 1u, n4, transpose(w_hi_hi));
    }

    // Sum z_r . g_r over the 8 threads of each row group.
    var zg = array<f32, 8>(
        zg_lo.x, zg_lo.y, zg_lo.z, zg_lo.w, zg_hi.x, zg_hi.y, zg_hi.z, zg_hi.w,
    );
    for (var i = 0u; i < BLOCK; i += 1u) {
        red[(ty * BLOCK + i) * WG + tx] = zg[i];
    }
    workgroupBarrier();
    if (tx == 0u) {
        for (var i = 0u; i < BLOCK; i += 1u) {
            let r = r0 + ty * BLOCK + i;
            if (r < p.n_rows) {
                var total = 0.0;
                for (var t = 0u; t < WG; t += 1u) {
                    total += red[(ty * BLOCK + i) * WG + t];
                }
                var prev = 0.0;
                if (p.col_begin > 0u) {
                    prev = row_dot[r];
                }
                row_dot[r] = prev + total;
            }
        }
    }
}
