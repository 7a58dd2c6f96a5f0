// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/uniform_params.wgsl,
// lib/supcon_stats.wgsl, lib/supcon_rows.wgsl.
//
// SupCon loss, step 4 of 4: dL/dfeatures, recomputing the similarity tiles (no N x N storage).
// This is the `Strategy::Tiles` kernel (GPUs); with `Strategy::Direct` (CPU adapters) the same
// work is split into supcon_backward_weights.wgsl and supcon_backward_apply.wgsl, which need no
// barrier inside their loops.
//
// With s_ij = z_i . z_j / tau, lse_i = log sum_{a in A(i)} exp s_ia and the anchor weight w (1 /
// number of anchors averaged over, from supcon_reduce.wgsl), anchor i contributes
//   G_ij = w * (tau / tau_base) * (exp(s_ij - lse_i) - [j in P(i)] / |P(i)|)             (L_out)
//   G_ij = w * (tau / tau_base) * (exp(s_ij - lse_i) - [j in P(i)] exp(s_ij - lse_P(i)))  (L_in)
// for j in A(i) (0 when i has no positive). Because s is symmetric,
//   dL/dz_r = (1 / tau) * sum_j (G_rj + G_jr) z_j,
// so one pass over column tiles gives row r both its anchor part (G_rj) and its contrast part
// (G_jr), with no float atomics and no column kernel: the workgroup that owns row r owns its
// whole gradient. Keys (rows past N) are columns only: they have no G_jr (not anchors) and get
// no gradient (no workgroup owns them as rows). The L2 normalisation's projection,
// dL/dx_r = (g_r - z_r (z_r . g_r)) / ||x_r||, needs z_r . g_r = sum_j W_rj cos_rj, which is
// accumulated from the same tiles.
//
// The grid is (row blocks x column chunks) x splits (lib/supcon_host.wgsl): the workgroups of
// split s sum over the contrast rows of that split only and write the raw sums sum_j W_rj z_j of
// their TILE_R rows x CHUNK_D columns to slot s of `partial_grad`, and sum_j W_rj cos_rj to slot s
// of `partial_dot` (the workgroups of chunk 0). supcon_backward_merge.wgsl adds the slots in
// order, applies the projection and writes the gradient. With several passes (lavapipe's
// barrier limit, see supcon_forward.wgsl) each pass is this kernel and a merge.
//
// Workgroup: 16 x 16 threads, TILE_R output rows x CHUNK_D output columns. Per column tile of
// TILE_C rows: thread (tx, ty) computes the 4 x 4 cosines of rows 4ty..4ty+3 and columns
// 4tx..4tx+3 from the normalised rows z (supcon_prepare.wgsl) through workgroup memory, turns
// them into weights W_rj = (G_rj + G_jr) / tau, hands them over in two halves through workgroup
// memory, and accumulates rows 4ty..4ty+3 at the vec4s tx and tx + 16 of its chunk in registers.
// Workgroup memory: 8.1 KiB.

const HALF_C: u32 = TILE_C / 2u;
const TILE_K: u32 = 16u;
const WG: u32 = 16u;

// Binding 0 is `params` (lib/supcon_host.wgsl).
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
// Binding 3, anchor_stats: lib/supcon_stats.wgsl.
@group(0) @binding(4) var<storage, read_write> output: Output;
// [n_splits, N, z_stride] vec4s: the raw sums sum_j W_rj z_j of each split (view-major rows).
@group(0) @binding(5) var<storage, read_write> partial_grad: array<vec4<f32>>;
// A carry the merge uses [N], then [n_splits, N]: sum_j W_rj cos_rj of each split.
@group(0) @binding(6) var<storage, read_write> partial_dot: array<f32>;

// One block of workgroup memory, used in turn for
// - the k-tiles of the similarity: [0, 256) rows [k][row / 4], [256, 512) columns
//   [k][column / 4];
// - the weights of half a column tile: [column][row / 4] = W_rj;
// - the final sum of z_r . g_r.
var<workgroup> scratch: array<vec4<f32>, 512>;
const COLUMNS: u32 = 256u;  // offset of the column k-tile in `scratch`

// d loss_i / d s_ij for anchor i with statistics st (0 if i has no positive).
fn anchor_grad(s: f32, st: vec4<f32>, positive: bool) -> f32 {
    if (st.z <= 0.0) {
        return 0.0;
    }
    var g = exp(s - st.x);
    if (positive) {
        if (params.variant == VARIANT_OUT) {
            g -= 1.0 / st.z;
        } else {
            g -= exp(s - st.y);
        }
    }
    return g;
}

// Thread lid stages vec4 lid % 4 of row lid / 4 (offset oa) and of column lid / 4
// (offset oc) for each TILE_K-wide slice. Call in uniform control flow; ends with a barrier, so
// `scratch` is free again on return.
fn dots_tiled(oa: u32, oc: u32, lid: u32, tx: u32, ty: u32, stride: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let row = lid / 4u;
    let q = lid % 4u;
    for (var k0 = 0u; k0 < stride; k0 += TILE_K / 4u) {
        workgroupBarrier();
        var va = vec4<f32>(0.0);
        var vc = vec4<f32>(0.0);
        if (k0 + q < stride) {
            va = z[oa + k0 + q];
            vc = z[oc + k0 + q];
        }
        for (var c = 0u; c < 4u; c += 1u) {
            scratch[(q * 4u + c) * WG + row / 4u][row % 4u] = va[c];
            scratch[COLUMNS + (q * 4u + c) * WG + row / 4u][row % 4u] = vc[c];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk += 1u) {
            let a = scratch[kk * WG + ty];
            let b = scratch[COLUMNS + kk * WG + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
    }
    workgroupBarrier();
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
    let n_contrast = params.n_contrast;
    let last = n_contrast - 1u;
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
            if (c < n_contrast && r < n_rows && c != r) {
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

// Half h of the weighted sum of the tile's rows z_j: threads tx / 8 == h hand their weights over
// through workgroup memory, then every thread adds columns c0 + 32h .. c0 + 32h + 31 to its rows
// at its vec4s v0c, v1c. (Weights of columns past N are 0, so their clamped rows add nothing.)
// Call in uniform control flow.
fn accumulate_half(
    h: u32,
    w: array<vec4<f32>, 4>,
    c0: u32,
    tx: u32,
    ty: u32,
    v0c: u32,
    v1c: u32,
    acc: ptr<function, array<vec4<f32>, 8>>,
) {
    let last = params.n_contrast - 1u;
    let zs = params.z_stride;
    if (tx / (WG / 2u) == h) {
        for (var j = 0u; j < 4u; j += 1u) {
            scratch[((tx % (WG / 2u)) * 4u + j) * WG + ty] = w[j];
        }
    }
    workgroupBarrier();
    for (var jj = 0u; jj < HALF_C; jj += 1u) {
        let wv = scratch[jj * WG + ty];
        let row = min(c0 + h * HALF_C + jj, last) * zs;
        let z0 = z[row + v0c];
        let z1 = z[row + v1c];
        (*acc)[0] += wv.x * z0;
        (*acc)[1] += wv.y * z0;
        (*acc)[2] += wv.z * z0;
        (*acc)[3] += wv.w * z0;
        (*acc)[4] += wv.x * z1;
        (*acc)[5] += wv.y * z1;
        (*acc)[6] += wv.z * z1;
        (*acc)[7] += wv.w * z1;
    }
    workgroupBarrier();
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = uniform_params(lid);
    let n_chunks = (p.dim + CHUNK_D - 1u) / CHUNK_D;
    let per_split = ((p.n_rows + TILE_R - 1u) / TILE_R) * n_chunks;
    let group = wid.x + wid.y * nwg.x;
    let split = group / per_split;
    if (split >= p.n_splits) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let r0 = ((group % per_split) / n_chunks) * TILE_R;
    let d0 = ((group % per_split) % n_chunks) * CHUNK_D;
    let last = p.n_rows - 1u;
    let last_col = p.n_contrast - 1u;
    let zs = p.z_stride;
    let coef = output.weight * params.loss_scale * params.inv_temperature;

    // Offset in z of the thread's staging row.
    let oa = min(r0 + lid / 4u, last) * zs;
    // The thread's two vec4s of output columns (clamped into the row; written only if valid).
    let v0 = d0 / 4u + tx;
    let v1 = v0 + WG;
    let v0c = min(v0, zs - 1u);
    let v1c = min(v1, zs - 1u);

    var acc: array<vec4<f32>, 8>;  // acc[4h + i]: row 4ty+i, vec4 v0 (h = 0) or v1 (h = 1)
    var zg = vec4<f32>(0.0);       // sum_j W_rj cos_rj for rows 4ty..4ty+3
    let cols = split_range(p, split);
    // Rows that are not anchors (contrast_mode one) only meet anchors' G_jr.
    var col_end = cols.y;
    if (r0 >= p.n_anchors) {
        col_end = min(col_end, p.n_anchors);
    }
    for (var c0 = cols.x; c0 < col_end; c0 += TILE_C) {
        let dots = dots_tiled(oa, min(c0 + lid / 4u, last_col) * zs, lid, tx, ty, zs);
        let w = weights(dots, r0, c0, tx, ty, coef, &zg);
        accumulate_half(0u, w, c0, tx, ty, v0c, v1c, &acc);
        accumulate_half(1u, w, c0, tx, ty, v0c, v1c, &acc);
    }

    // Sum z_r . g_r over the 16 threads of each row group.
    scratch[ty * WG + tx] = zg;
    workgroupBarrier();
    var zg_row = vec4<f32>(0.0);
    for (var t = 0u; t < WG; t += 1u) {
        zg_row += scratch[ty * WG + t];
    }

    for (var i = 0u; i < 4u; i += 1u) {
        let r = r0 + ty * 4u + i;
        if (r >= p.n_rows) {
            continue;
        }
        let slot = split * p.n_rows + r;
        if (d0 == 0u && tx == 0u) {
            partial_dot[p.n_rows + slot] = zg_row[i];
        }
        if (v0 < zs) {
            partial_grad[slot * zs + v0] = acc[i];
        }
        if (v1 < zs) {
            partial_grad[slot * zs + v1] = acc[4u + i];
        }
    }
}
