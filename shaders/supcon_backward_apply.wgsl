// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/normalize.wgsl,
// lib/uniform_params.wgsl.
//
// SupCon loss, step 4b of the backward pass on CPU adapters (`Strategy::Direct`):
// grad += sum_j W_rj z_j over one pass's contrast rows, from the weights
// supcon_backward_weights.wgsl wrote, with no workgroup barrier at all. The first pass
// overwrites the gradient buffer; later passes add to it; the last pass applies the
// normalisation's projection with z_r . g_r from row_dot (complete by then) and multiplies by
// 1 / ||x_r||, as in supcon_backward.wgsl.
//
// Each 8 x 8 workgroup owns TILE_R rows and CHUNK_D output columns; thread (tx, ty) accumulates
// rows 8ty..8ty+7 at the 4 vec4s 4tx..4tx+3 of its chunk: per contrast row, 2 vec4 loads of
// weights and 4 of z feed 128 multiply-adds (measured on lavapipe at N = 2,048, D = 128: 45 ms,
// against 88 ms for 4 rows x 2 vec4s per thread). The accumulators are only ever indexed with
// constants (hence finish_row's literal calls): lavapipe keeps an array indexed with a variable
// anywhere, even after the loop, in memory, which made this kernel about 4x slower.
// Workgroup memory: 64 bytes.

const BLOCK: u32 = 8u;  // rows per thread
const VECS: u32 = 4u;   // output vec4s per thread

// Binding 0 is `params` (lib/supcon_host.wgsl).
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> inv_norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: Output;
@group(0) @binding(4) var<storage, read_write> weights_t: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_dot: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = uniform_params(lid);
    let n_chunks = (p.dim + CHUNK_D - 1u) / CHUNK_D;
    let group = wid.x + wid.y * nwg.x;
    if (group >= ((p.n_rows + TILE_R - 1u) / TILE_R) * n_chunks) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let r0 = (group / n_chunks) * TILE_R;
    let d0 = (group % n_chunks) * CHUNK_D;
    let zs = p.z_stride;
    let n4 = (p.n_rows + 3u) / 4u;
    let v0 = d0 / 4u + tx * VECS;
    var vc: array<u32, 4>;  // the thread's vec4s, clamped to valid ones (never written past dim)
    for (var v = 0u; v < VECS; v += 1u) {
        vc[v] = min(v0 + v, zs - 1u);
    }
    // The weights of rows past N: a clamped, valid vec4 (those rows are never written).
    let wrow0 = min(r0 / 4u + 2u * ty, n4 - 1u);
    let wrow1 = min(r0 / 4u + 2u * ty + 1u, n4 - 1u);

    var acc: array<vec4<f32>, 32>;  // acc[4i + v]: row 8ty + i, vec4 v0 + v
    for (var c = p.col_begin; c < p.col_end; c += 1u) {
        let wbase = (c - p.col_begin) * n4;
        let w0 = weights_t[wbase + wrow0];
        let w1 = weights_t[wbase + wrow1];
        let row = c * zs;
        let z0 = z[row + vc[0]];
        let z1 = z[row + vc[1]];
        let z2 = z[row + vc[2]];
        let z3 = z[row + vc[3]];
        for (var q = 0u; q < 4u; q += 1u) {
            acc[4u * q] += w0[q] * z0;
            acc[4u * q + 1u] += w0[q] * z1;
            acc[4u * q + 2u] += w0[q] * z2;
            acc[4u * q + 3u] += w0[q] * z3;
            acc[4u * q + 16u] += w1[q] * z0;
            acc[4u * q + 17u] += w1[q] * z1;
            acc[4u * q + 18u] += w1[q] * z2;
            acc[4u * q + 19u] += w1[q] * z3;
        }
    }

    let rb = r0 + ty * BLOCK;
    finish_row(rb, v0, acc[0], acc[1], acc[2], acc[3]);
    finish_row(rb + 1u, v0, acc[4], acc[5], acc[6], acc[7]);
    finish_row(rb + 2u, v0, acc[8], acc[9], acc[10], acc[11]);
    finish_row(rb + 3u, v0, acc[12], acc[13], acc[14], acc[15]);
    finish_row(rb + 4u, v0, acc[16], acc[17], acc[18], acc[19]);
    finish_row(rb + 5u, v0, acc[20], acc[21], acc[22], acc[23]);
    finish_row(rb + 6u, v0, acc[24], acc[25], acc[26], acc[27]);
    finish_row(rb + 7u, v0, acc[28], acc[29], acc[30], acc[31]);
}

// Writes row r of the gradient at the vec4s v0..v0+3 from this pass's sums a0..a3: adds the
// raw sums of the passes before, and on the last pass applies the projection and 1 / ||x_r||.
fn finish_row(r: u32, v0: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    if (r >= params.n_rows) {
        return;
    }
    let dim = params.dim;
    let zs = params.z_stride;
    let ok = output.status == STATUS_OK;
    let first = params.col_begin == 0u;
    let last_pass = params.col_end >= params.n_contrast;
    let base = memory_row(r) * dim;
    let zg_total = row_dot[r];
    let inv = inv_norm[r];
    // F.normalize divides by NORM_EPS when the norm is below it: no projection then.
    let clamped = inv >= 1.0 / NORM_EPS;
    var sums = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var v = 0u; v < VECS; v += 1u) {
        if (v0 + v >= zs) {
            continue;
        }
        let z_r = z[r * zs + v0 + v];
        for (var c = 0u; c < 4u; c += 1u) {
            let d = 4u * (v0 + v) + c;
            if (d >= dim) {
                continue;
            }
            var g = sums[v][c];
            if (!first) {
                g += grad[base + d];  // the raw sums of the passes before
            }
            if (last_pass) {
                if (!clamped) {
                    g -= z_r[c] * zg_total;
                }
                g *= inv;
                if (!ok) {
                    g = params.non_finite_fill;
                }
            }
            grad[base + d] = g;
        }
    }
}
