// Joined after (src/kernels/mod.rs): lib/similarity.wgsl, lib/normalize.wgsl,
// lib/uniform_params.wgsl.
//
// Pairwise cosine similarity on CPU adapters (`Strategy::Direct`, see src/kernels/supcon/): the same result
// as cosine_similarity.wgsl (the formula is there), laid out like supcon_forward_direct.wgsl for
// drivers that run a workgroup's invocations as SIMD lanes of a CPU core (lavapipe): no
// workgroup memory and no barrier, and large register blocks, so that each loaded value feeds
// many multiply-adds. A and B may be the same buffer.
//
// Each 8 x 8 workgroup computes a TILE x TILE block of S; thread (tx, ty) holds the 8 x 8 block
// of rows 8ty..8ty+7 and columns 8tx..8tx+7 and reads their features straight from A and B, one
// feature column at a time (16 scalar loads feed 64 multiply-adds), summing the squares for the
// norms as it goes. Its accumulators are only ever indexed with constants (hence store_row's
// literal calls): lavapipe keeps a register array indexed with a variable in memory.

const BLOCK: u32 = 8u;  // rows and columns per thread

// Bindings: lib/similarity.wgsl.

// Writes row i of S at columns j..j+7 (lo: j..j+3, hi: j+4..j+7), scaled by the inverse norms.
fn store_row(i: u32, j: u32, lo: vec4<f32>, hi: vec4<f32>, inv_i: f32, inv_lo: vec4<f32>,
    inv_hi: vec4<f32>) {
    let n = params.n;
    let m = params.m;
    if (i >= n) {
        return;
    }
    let s_lo = lo * inv_i * inv_lo;
    let s_hi = hi * inv_i * inv_hi;
    let base = i * m + j;
    if (j < m) {
        similarity[base] = s_lo.x;
    }
    if (j + 1u < m) {
        similarity[base + 1u] = s_lo.y;
    }
    if (j + 2u < m) {
        similarity[base + 2u] = s_lo.z;
    }
    if (j + 3u < m) {
        similarity[base + 3u] = s_lo.w;
    }
    if (j + 4u < m) {
        similarity[base + 4u] = s_hi.x;
    }
    if (j + 5u < m) {
        similarity[base + 5u] = s_hi.y;
    }
    if (j + 6u < m) {
        similarity[base + 6u] = s_hi.z;
    }
    if (j + 7u < m) {
        similarity[base + 7u] = s_hi.w;
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
    let tiles_m = (p.m + TILE - 1u) / TILE;
    let group = wid.x + wid.y * nwg.x;
    if (group >= ((p.n + TILE - 1u) / TILE) * tiles_m) {
        return;
    }
    let i = (group / tiles_m) * TILE + lid3.y * BLOCK;  // the thread's first row
    let j = (group % tiles_m) * TILE + lid3.x * BLOCK;  // and first column
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    // Offsets of the rows and columns, clamped to valid ones (never written past n or m).
    let ra_lo = min(vec4<u32>(i) + lanes, vec4<u32>(p.n - 1u)) * p.dim;
    let ra_hi = min(vec4<u32>(i + 4u) + lanes, vec4<u32>(p.n - 1u)) * p.dim;
    let rb_lo = min(vec4<u32>(j) + lanes, vec4<u32>(p.m - 1u)) * p.dim;
    let rb_hi = min(vec4<u32>(j + 4u) + lanes, vec4<u32>(p.m - 1u)) * p.dim;

    var acc: array<vec4<f32>, 16>;  // acc[2r + h]: row r, columns 4h..4h+3
    var sq_a_lo = vec4<f32>(0.0);
    var sq_a_hi = vec4<f32>(0.0);
    var sq_b_lo = vec4<f32>(0.0);
    var sq_b_hi = vec4<f32>(0.0);
    for (var k = 0u; k < p.dim; k += 1u) {
        let b_lo = vec4<f32>(b[rb_lo.x + k], b[rb_lo.y + k], b[rb_lo.z + k], b[rb_lo.w + k]);
        let b_hi = vec4<f32>(b[rb_hi.x + k], b[rb_hi.y + k], b[rb_hi.z + k], b[rb_hi.w + k]);
        let a_lo = vec4<f32>(a[ra_lo.x + k], a[ra_lo.y + k], a[ra_lo.z + k], a[ra_lo.w + k]);
        let a_hi = vec4<f32>(a[ra_hi.x + k], a[ra_hi.y + k], a[ra_hi.z + k], a[ra_hi.w + k]);
        sq_a_lo += a_lo * a_lo;
        sq_a_hi += a_hi * a_hi;
        sq_b_lo += b_lo * b_lo;
        sq_b_hi += b_hi * b_hi;
        acc[0] += a_lo.x * b_lo;
        acc[1] += a_lo.x * b_hi;
        acc[2] += a_lo.y * b_lo;
        acc[3] += a_lo.y * b_hi;
        acc[4] += a_lo.z * b_lo;
        acc[5] += a_lo.z * b_hi;
        acc[6] += a_lo.w * b_lo;
        acc[7] += a_lo.w * b_hi;
        acc[8] += a_hi.x * b_lo;
        acc[9] += a_hi.x * b_hi;
        acc[10] += a_hi.y * b_lo;
        acc[11] += a_hi.y * b_hi;
        acc[12] += a_hi.z * b_lo;
        acc[13] += a_hi.z * b_hi;
        acc[14] += a_hi.w * b_lo;
        acc[15] += a_hi.w * b_hi;
    }
    let eps = vec4<f32>(NORM_EPS);
    let inv_a_lo = 1.0 / max(sqrt(sq_a_lo), eps);
    let inv_a_hi = 1.0 / max(sqrt(sq_a_hi), eps);
    let inv_b_lo = 1.0 / max(sqrt(sq_b_lo), eps);
    let inv_b_hi = 1.0 / max(sqrt(sq_b_hi), eps);
    store_row(i, j, acc[0], acc[1], inv_a_lo.x, inv_b_lo, inv_b_hi);
    store_row(i + 1u, j, acc[2], acc[3], inv_a_lo.y, inv_b_lo, inv_b_hi);
    store_row(i + 2u, j, acc[4], acc[5], inv_a_lo.z, inv_b_lo, inv_b_hi);
    store_row(i + 3u, j, acc[6], acc[7], inv_a_lo.w, inv_b_lo, inv_b_hi);
    store_row(i + 4u, j, acc[8], acc[9], inv_a_hi.x, inv_b_lo, inv_b_hi);
    store_row(i + 5u, j, acc[10], acc[11], inv_a_hi.y, inv_b_lo, inv_b_hi);
    store_row(i + 6u, j, acc[12], acc[13], inv_a_hi.z, inv_b_lo, inv_b_hi);
    store_row(i + 7u, j, acc[14], acc[15], inv_a_hi.w, inv_b_lo, inv_b_hi);
}
