// SupCon loss, step 4 of 4: dL/dfeatures, recomputing the similarity tiles (no N x N storage).
//
// With s_ij = z_i . z_j / tau, lse_i = log sum_{a in A(i)} exp s_ia and the anchor weight w (1 /
// number of anchors averaged over, from supcon_reduce.wgsl), anchor i contributes
//   G_ij = w * (tau / tau_base) * (exp(s_ij - lse_i) - [j in P(i)] / |P(i)|)             (L_out)
//   G_ij = w * (tau / tau_base) * (exp(s_ij - lse_i) - [j in P(i)] exp(s_ij - lse_P(i)))  (L_in)
// for j in A(i) (0 when i has no positive). Because s is symmetric,
//   dL/dz_r = (1 / tau) * sum_j (G_rj + G_jr) z_j,
// so one pass over column tiles gives row r both its anchor part (G_rj) and its contrast part
// (G_jr), with no float atomics and no second kernel. The L2 normalisation is differentiated in
// place: dL/dx_r = (g_r - z_r (z_r . g_r)) / ||x_r||, and z_r . g_r = sum_j W_rj cos_rj is
// accumulated from the same tiles, so each workgroup may own only a CHUNK_D slice of the output
// columns. When status != 0 (non-finite input) the gradient is written as zeros.
//
// The column loop may be cut into passes, one dispatch each over contrast rows [col_begin,
// col_end), as in supcon_forward.wgsl (lavapipe loses results past ~8,192 barriers per workgroup).
// Passes before the last add their raw sums to `grad` and z_r . g_r to `row_dot`; the last pass
// adds its own and applies the normalisation's projection. With one pass neither is read.
//
// Workgroup: 16 x 16 threads, TILE_R output rows x CHUNK_D output columns. Per column tile of
// TILE_C rows: thread (tx, ty) computes the 4 x 4 cosines of rows 4ty..4ty+3 and columns
// 4tx..4tx+3 through workgroup memory, turns them into weights W_rj = (G_rj + G_jr) / tau, hands
// them over in two halves through workgroup memory, and accumulates rows 4ty..4ty+3 at columns
// tx, tx+16, ..., tx+112 of its chunk in registers. Workgroup memory: 9.1 KiB.

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
    pad2: u32,
    pad3: u32,
}

struct Output {
    loss: f32,
    weight: f32,
    n_valid: u32,
    status: u32,
}

const TILE_R: u32 = 64u;
const TILE_C: u32 = 64u;
const HALF_C: u32 = 32u;
const TILE_K: u32 = 16u;
const CHUNK_D: u32 = 128u;
const WG: u32 = 16u;
const NORM_EPS: f32 = 1e-12;

@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> features: array<f32>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
@group(0) @binding(3) var<storage, read_write> inv_norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> anchor_stats: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> output: Output;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;
// [N]: sum_j W_rj cos_rj over the passes so far (written only by the workgroups of chunk 0).
@group(0) @binding(7) var<storage, read_write> row_dot: array<f32>;

var<workgroup> wp: Params;
var<workgroup> base_r: array<u32, 64>;
var<workgroup> base_c: array<u32, 64>;
var<workgroup> scale_r: array<f32, 64>;
var<workgroup> scale_c: array<f32, 64>;
// One block of workgroup memory, used in turn for
// - the k-tiles of the similarity: [0, 256) rows [k][row / 4], [256, 512) columns [k][column / 4]
//   (normalised values);
// - the weights of half a column tile: [column][row / 4] = W_rj / ||x_j||;
// - the final sum of z_r . g_r.
var<workgroup> scratch: array<vec4<f32>, 512>;
const COLUMNS: u32 = 256u;  // offset of the column k-tile in `scratch`

fn memory_row(r: u32) -> u32 {
    return (r % params.bsz) * params.n_views + r / params.bsz;
}

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
    let n_chunks = (p.dim + CHUNK_D - 1u) / CHUNK_D;
    let group = wid.x + wid.y * nwg.x;
    if (group >= ((p.n_rows + TILE_R - 1u) / TILE_R) * n_chunks) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let r0 = (group / n_chunks) * TILE_R;
    let d0 = (group % n_chunks) * CHUNK_D;
    let last = p.n_rows - 1u;
    let coef = output.weight * params.loss_scale * params.inv_temperature;

    if (lid < TILE_R) {
        let r = min(r0 + lid, last);
        base_r[lid] = memory_row(r) * p.dim;
        scale_r[lid] = inv_norm[r];
    }

    var acc: array<vec4<f32>, 8>;  // acc[q][i]: row 4ty+i, column d0 + tx + 16q
    var zg = vec4<f32>(0.0);       // sum_j W_rj cos_rj for rows 4ty..4ty+3
    // Rows that are not anchors (contrast_mode one) only meet anchors' G_jr.
    var col_end = p.col_end;
    if (r0 >= p.n_anchors) {
        col_end = min(col_end, p.n_anchors);
    }
    for (var c0 = p.col_begin; c0 < col_end; c0 += TILE_C) {
        workgroupBarrier();  // the previous tile is done with base_c / scale_c / weights
        if (lid < TILE_C) {
            let r = min(c0 + lid, last);
            base_c[lid] = memory_row(r) * p.dim;
            scale_c[lid] = inv_norm[r];
        }
        var dots: array<vec4<f32>, 4>;  // dots[i][j]: row 4ty+i, column 4tx+j (cosines)
        for (var k0 = 0u; k0 < p.dim; k0 += TILE_K) {
            workgroupBarrier();
            for (var t = 0u; t < TILE_R * TILE_K / (WG * WG); t += 1u) {
                let e = lid + t * WG * WG;
                let row = e / TILE_K;
                let kk = e % TILE_K;
                var vr = 0.0;
                var vc = 0.0;
                if (k0 + kk < p.dim) {
                    vr = features[base_r[row] + k0 + kk] * scale_r[row];
                    vc = features[base_c[row] + k0 + kk] * scale_c[row];
                }
                scratch[kk * WG + row / 4u][row % 4u] = vr;
                scratch[COLUMNS + kk * WG + row / 4u][row % 4u] = vc;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < TILE_K; kk += 1u) {
                let a = scratch[kk * WG + ty];
                let b = scratch[COLUMNS + kk * WG + tx];
                dots[0] += a.x * b;
                dots[1] += a.y * b;
                dots[2] += a.z * b;
                dots[3] += a.w * b;
            }
        }

        // W_rj for the thread's 4 x 4 block; w[j] holds column 4tx+j over rows 4ty..4ty+3. Keys
        // and statistics are looked up here rather than kept in registers across the k-loop's
        // barriers (on software rasterisers every live value is saved and restored at each).
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
                if (c < p.n_rows && r < p.n_rows && c != r) {
                    let s = dots[i][j] * params.inv_temperature;
                    // An explicit mask need not be symmetric: j in P(r) and r in P(j) differ.
                    w[j][i] = coef * (anchor_grad(s, stats_r, is_positive(key_r, key_c[j]))
                        + anchor_grad(s, stats_c[j], is_positive(key_c[j], key_r)));
                    zg[i] += w[j][i] * dots[i][j];
                }
            }
        }

        workgroupBarrier();  // every thread is done reading the k-tiles
        // Weighted sum over the tile's columns, in two halves of HALF_C columns so that the
        // weights fit in workgroup memory: threads tx < 8 hand over columns 0..31, then the rest.
        for (var h = 0u; h < 2u; h += 1u) {
            if (tx / (WG / 2u) == h) {
                for (var j = 0u; j < 4u; j += 1u) {
                    let col = (tx % (WG / 2u)) * 4u + j;
                    scratch[col * WG + ty] = w[j] * scale_c[h * HALF_C + col];
                }
            }
            workgroupBarrier();
            if (d0 + CHUNK_D <= p.dim) {
                // A full chunk: no bounds test in the innermost loop.
                for (var jj = 0u; jj < HALF_C; jj += 1u) {
                    let wv = scratch[jj * WG + ty];
                    let base = base_c[h * HALF_C + jj] + d0 + tx;
                    for (var q = 0u; q < CHUNK_D / WG; q += 1u) {
                        acc[q] += wv * features[base + q * WG];
                    }
                }
            } else {
                for (var jj = 0u; jj < HALF_C; jj += 1u) {
                    let wv = scratch[jj * WG + ty];
                    let base = base_c[h * HALF_C + jj];
                    for (var q = 0u; q < CHUNK_D / WG; q += 1u) {
                        let d = d0 + tx + q * WG;
                        if (d < p.dim) {
                            acc[q] += wv * features[base + d];
                        }
                    }
                }
            }
            workgroupBarrier();
        }
    }

    // Sum z_r . g_r over the 16 threads of each row group.
    workgroupBarrier();
    scratch[ty * WG + tx] = zg;
    workgroupBarrier();
    var zg_row = vec4<f32>(0.0);
    for (var t = 0u; t < WG; t += 1u) {
        zg_row += scratch[ty * WG + t];
    }

    let ok = output.status == 0u;
    let first = p.col_begin == 0u;
    let last_pass = p.col_end >= p.n_rows;
    for (var i = 0u; i < 4u; i += 1u) {
        let r = r0 + ty * 4u + i;
        if (r >= p.n_rows) {
            continue;
        }
        let base = base_r[ty * 4u + i];
        if (!last_pass) {
            // Keep the raw sums for the next pass.
            if (d0 == 0u && tx == 0u) {
                var prev = 0.0;
                if (!first) {
                    prev = row_dot[r];
                }
                row_dot[r] = prev + zg_row[i];
            }
            for (var q = 0u; q < CHUNK_D / WG; q += 1u) {
                let d = d0 + tx + q * WG;
                if (d < p.dim) {
                    var g = acc[q][i];
                    if (!first) {
                        g += grad[base + d];
                    }
                    grad[base + d] = g;
                }
            }
            continue;
        }
        var zg_total = zg_row[i];
        if (!first) {
            zg_total += row_dot[r];
        }
        let inv = scale_r[ty * 4u + i];
        // F.normalize divides by NORM_EPS when the norm is below it: no projection then.
        let clamped = inv >= 1.0 / NORM_EPS;
        for (var q = 0u; q < CHUNK_D / WG; q += 1u) {
            let d = d0 + tx + q * WG;
            if (d >= p.dim) {
                continue;
            }
            var g = acc[q][i];
            if (!first) {
                g += grad[base + d];
            }
            if (!clamped) {
                g -= features[base + d] * inv * zg_total;
            }
            g *= inv;
            if (!ok) {
                g = 0.0;
            }
            grad[base + d] = g;
        }
    }
}
