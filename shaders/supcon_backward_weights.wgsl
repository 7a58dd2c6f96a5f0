// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/uniform_params.wgsl,
// lib/supcon_stats.wgsl, lib/supcon_rows.wgsl, lib/supcon_direct.wgsl.
//
// SupCon loss, step 4a of the backward pass on CPU adapters (`Strategy::Direct`, see
// src/kernels/supcon/): the weights W_rj = (G_rj + G_jr) / tau of one pass's contrast rows
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

const WG: u32 = 8u;     // threads per side of the workgroup
const BLOCK: u32 = 8u;  // rows and columns per thread and tile

// Binding 0 is `params` (lib/supcon_host.wgsl).
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
// Binding 3, anchor_stats: lib/supcon_stats.wgsl.
@group(0) @binding(4) var<storage, read_write> output: Output;
// [col_end - col_begin, ceil(N / 4)] vec4s: the pass's weights, transposed.
@group(0) @binding(5) var<storage, read_write> weights_t: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> row_dot: array<f32>;

var<workgroup> red: array<f32, 512>;  // [row][tx]: the final sum of z_r . g_r

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
        if (params.variant == VARIANT_OUT) {
            g -= select(zero, 1.0 / max(pc, vec4<f32>(1.0)), positive);
        } else {
            g -= select(zero, exp(s - lse_p), positive);
        }
    }
    return select(zero, g, pc > zero);
}

// The 4 contrast rows of one half of the thread's columns: their indices, keys and statistics.
struct Columns {
    cols: vec4<u32>,
    keys: vec4<u32>,
    stats: mat4x4<f32>,  // stats4 of the columns
}

fn columns(cols: vec4<u32>) -> Columns {
    let rows = min(cols, vec4<u32>(params.n_contrast - 1u));
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
    let valid = (c.cols < vec4<u32>(params.n_contrast)) & (c.cols != vec4<u32>(r))
        & vec4<bool>(r < n_rows);
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
    let p = uniform_params(lid);
    let group = wid.x + wid.y * nwg.x;
    if (group >= (p.n_rows + TILE_R - 1u) / TILE_R) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let r0 = group * TILE_R;
    let last = p.n_rows - 1u;
    let last_col = p.n_contrast - 1u;
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
            let rows_lo = min(cols, vec4<u32>(last_col));
            let rows_hi = min(cols + vec4<u32>(4u), vec4<u32>(last_col));
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
