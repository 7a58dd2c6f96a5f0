// SupCon loss, step 4a of the backward pass on CPU adapters (`strategy` 1, see supcon.rs): the
// weights W_rj = (G_rj + G_jr) / tau of one pass's contrast rows [col_begin, col_end), written
// out so that supcon_backward_apply.wgsl can form sum_j W_rj z_j without workgroup barriers.
// (supcon_backward.wgsl does both in one kernel, exchanging W through workgroup memory; on
// lavapipe a loop holding barriers runs its loads about 1.7x slower.) Formulas: see
// supcon_backward.wgsl.
//
// Each 16 x 16 workgroup owns TILE_R rows; thread (tx, ty) computes the cosines of rows
// 4ty..4ty+3 and columns 4tx..4tx+3 of each column tile straight from z (vec4 loads, no barrier
// in the loop), turns them into weights and stores them transposed, weights[c - col_begin][r],
// as vec4s over 4 rows. It also adds sum_j W_rj cos_rj over the pass to row_dot[r] (the first
// pass overwrites it). The N x N matrix is never stored: only the pass's [P, N] block.
// Workgroup memory: 4.1 KiB.

struct Params {
    n_rows: u32,          // N = bsz * n_views
    bsz: u32,
    n_views: u32,
    dim: u32,
    n_anchors: u32,       // N (contrast_mode all) or bsz (contrast_mode one)
    pos_mode: u32,        // 0: labels, 1: none (SimCLR), 2: bit-packed [bsz, bsz] mask
    mask_words: u32,      // u32 words per mask row, ceil(bsz / 32)
    variant: u32,         // 0: L_out, 1: L_in
    reduction: u32,       // 0: mean over all anchors, 1: mean over anchors with a positive
    inv_temperature: f32,
    loss_scale: f32,      // temperature / base_temperature
    pad: u32,
    col_begin: u32,       // this pass's contrast rows: [col_begin, col_end) (a multiple of 64)
    col_end: u32,         // (the kernels' column loop runs over several passes; see supcon.rs)
    z_stride: u32,        // vec4s per row of the normalised copy z: ceil(dim / 4)
    strategy: u32,        // 0: tiles through workgroup memory (GPUs), 1: direct loads (CPUs)
}

struct Output {
    loss: f32,
    weight: f32,
    n_valid: u32,
    status: u32,
}

const TILE_R: u32 = 64u;
const TILE_C: u32 = 64u;
const WG: u32 = 16u;

@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
@group(0) @binding(3) var<storage, read_write> anchor_stats: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> output: Output;
// [col_end - col_begin, ceil(N / 4)] vec4s: the pass's weights, transposed.
@group(0) @binding(5) var<storage, read_write> weights_t: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> row_dot: array<f32>;

var<workgroup> wp: Params;
var<workgroup> red: array<vec4<f32>, 256>;

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
    return key_i == key_j;
}

// Anchor statistics of row r, or zeros (no contribution) when r is not an anchor.
fn stats_of(r: u32) -> vec4<f32> {
    if (r < params.n_anchors) {
        return anchor_stats[r];
    }
    return vec4<f32>(0.0);
}

// d loss_i / d s_ij for anchor i with statistics st (0 if i has no positive).
fn anchor_grad(s: f32, st: vec4<f32>, positive: bool) -> f32 {
    if (st.z <= 0.0) {
        return 0.0;
    }
    var g = exp(s - st.x);
    if (positive) {
        if (params.variant == 0u) {
            g -= 1.0 / st.z;
        } else {
            g -= exp(s - st.y);
        }
    }
    return g;
}

// Strategy 1: rows ra[i] against rows rc[j], offsets into z, vec4 by vec4 (no barrier).
fn dots_direct(ra: vec4<u32>, rc: vec4<u32>, stride: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    for (var k = 0u; k < stride; k += 1u) {
        let a0 = z[ra.x + k];
        let a1 = z[ra.y + k];
        let a2 = z[ra.z + k];
        let a3 = z[ra.w + k];
        let c0 = z[rc.x + k];
        let c1 = z[rc.y + k];
        let c2 = z[rc.z + k];
        let c3 = z[rc.w + k];
        acc[0] += vec4<f32>(dot(a0, c0), dot(a0, c1), dot(a0, c2), dot(a0, c3));
        acc[1] += vec4<f32>(dot(a1, c0), dot(a1, c1), dot(a1, c2), dot(a1, c3));
        acc[2] += vec4<f32>(dot(a2, c0), dot(a2, c1), dot(a2, c2), dot(a2, c3));
        acc[3] += vec4<f32>(dot(a3, c0), dot(a3, c1), dot(a3, c2), dot(a3, c3));
    }
    return acc;
}

// W_rj of the thread's 4 x 4 block (w[j]: column c0+4tx+j over rows r0+4ty..r0+4ty+3) from its
// cosines; adds sum_j W_rj cos_rj to zg.
fn weights(
    dots: array<vec4<f32>, 4>,
    r0: u32,
    c0: u32,
    tx: u32,
    ty: u32,
    coef: f32,
    zg: ptr<function, vec4<f32>>,
) -> array<vec4<f32>, 4> {
    let n_rows = params.n_rows;
    let last = n_rows - 1u;
    var key_c: array<u32, 4>;
    var stats_c: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j += 1u) {
        let c = c0 + tx * 4u + j;
        key_c[j] = row_key(min(c, last));
        stats_c[j] = stats_of(c);
    }
    var w: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i += 1u) {
        let r = r0 + ty * 4u + i;
        let key_r = row_key(min(r, last));
        let stats_r = stats_of(r);
        for (var j = 0u; j < 4u; j += 1u) {
            let c = c0 + tx * 4u + j;
            if (c < n_rows && r < n_rows && c != r) {
                let s = dots[i][j] * params.inv_temperature;
                // An explicit mask need not be symmetric: j in P(r) and r in P(j) differ.
                w[j][i] = coef * (anchor_grad(s, stats_r, is_positive(key_r, key_c[j]))
                    + anchor_grad(s, stats_c[j], is_positive(key_c[j], key_r)));
                (*zg)[i] += w[j][i] * dots[i][j];
            }
        }
    }
    return w;
}

@compute @workgroup_size(16, 16, 1)
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
    var ra: vec4<u32>;
    for (var i = 0u; i < 4u; i += 1u) {
        ra[i] = min(r0 + ty * 4u + i, last) * zs;
    }
    var zg = vec4<f32>(0.0);
    // Rows that are not anchors (contrast_mode one) only meet anchors' G_jr; their weights
    // for the other columns stay 0.
    var col_end = p.col_end;
    if (r0 >= p.n_anchors) {
        col_end = min(col_end, p.n_anchors);
    }
    for (var c0 = p.col_begin; c0 < p.col_end; c0 += TILE_C) {
        var w: array<vec4<f32>, 4>;
        if (c0 < col_end) {
            var rc: vec4<u32>;
            for (var j = 0u; j < 4u; j += 1u) {
                rc[j] = min(c0 + tx * 4u + j, last) * zs;
            }
            w = weights(dots_direct(ra, rc, zs), r0, c0, tx, ty, coef, &zg);
        }
        for (var j = 0u; j < 4u; j += 1u) {
            let c = c0 + tx * 4u + j;
            if (c < p.col_end && r0 + ty * 4u < p.n_rows) {
                weights_t[(c - p.col_begin) * n4 + r0 / 4u + ty] = w[j];
            }
        }
    }

    // Sum z_r . g_r over the 16 threads of each row group.
    red[ty * WG + tx] = zg;
    workgroupBarrier();
    if (tx == 0u) {
        var zg_row = vec4<f32>(0.0);
        for (var t = 0u; t < WG; t += 1u) {
            zg_row += red[ty * WG + t];
        }
        for (var i = 0u; i < 4u; i += 1u) {
            let r = r0 + ty * 4u + i;
            if (r < p.n_rows) {
                var prev = 0.0;
                if (p.col_begin > 0u) {
                    prev = row_dot[r];
                }
                row_dot[r] = prev + zg_row[i];
            }
        }
    }
}
