// Joined after (src/kernels/mod.rs): lib/similarity.wgsl, lib/normalize.wgsl,
// lib/uniform_params.wgsl.
//
// Pairwise cosine similarity: A [n, dim], B [m, dim] (row-major) -> S [n, m],
//   S_ij = a_i . b_j / (max(||a_i||, NORM_EPS) * max(||b_j||, NORM_EPS))   (as torch's F.normalize).
// A and B may be the same buffer. Each 16 x 16 workgroup computes a TILE x TILE block of S through
// workgroup memory; thread (tx, ty) holds the 4 x 4 block of rows 4ty.. and columns 4tx... The
// row norms come for free from the loads: thread t always loads feature column t % 16 of rows
// t / 16 + 16u, so it sums their squares and the 16 partial sums of a row are added at the end.
// Workgroup memory: 12.5 KiB (WebGPU's default limit is 16).

const TILE_K: u32 = 16u;
const WG: u32 = 16u;

// Bindings: lib/similarity.wgsl.

var<workgroup> tile_a: array<vec4<f32>, 256>;  // [k][row / 4]
var<workgroup> tile_b: array<vec4<f32>, 256>;  // [k][column / 4]
var<workgroup> red: array<f32, 1024>;          // [row][k % 16] partial sums of squares
var<workgroup> inv_a: array<f32, 64>;
var<workgroup> inv_b: array<f32, 64>;

@compute @workgroup_size(16, 16, 1)
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
    let tx = lid3.x;
    let ty = lid3.y;
    let i0 = (group / tiles_m) * TILE;
    let j0 = (group % tiles_m) * TILE;

    var acc: array<vec4<f32>, 4>;
    var sq_a = vec4<f32>(0.0);  // rows lid / 16 + 16t, t = 0..3
    var sq_b = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.dim; k0 += TILE_K) {
        workgroupBarrier();
        for (var t = 0u; t < 4u; t += 1u) {
            let e = lid + t * WG * WG;
            let row = e / TILE_K;
            let k = k0 + e % TILE_K;
            var va = 0.0;
            var vb = 0.0;
            if (k < p.dim) {
                if (i0 + row < p.n) {
                    va = a[(i0 + row) * p.dim + k];
                }
                if (j0 + row < p.m) {
                    vb = b[(j0 + row) * p.dim + k];
                }
            }
            sq_a[t] += va * va;
            sq_b[t] += vb * vb;
            tile_a[(e % TILE_K) * WG + row / 4u][row % 4u] = va;
            tile_b[(e % TILE_K) * WG + row / 4u][row % 4u] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk += 1u) {
            let x = tile_a[kk * WG + ty];
            let y = tile_b[kk * WG + tx];
            acc[0] += x.x * y;
            acc[1] += x.y * y;
            acc[2] += x.z * y;
            acc[3] += x.w * y;
        }
    }

    // Row norms: element e = lid + 256t belongs to row e / 16, so red[e] is [row][k % 16].
    for (var t = 0u; t < 4u; t += 1u) {
        red[lid + t * WG * WG] = sq_a[t];
    }
    workgroupBarrier();
    if (lid < TILE) {
        var s = 0.0;
        for (var k = 0u; k < TILE_K; k += 1u) {
            s += red[lid * TILE_K + k];
        }
        inv_a[lid] = 1.0 / max(sqrt(s), NORM_EPS);
    }
    workgroupBarrier();
    for (var t = 0u; t < 4u; t += 1u) {
        red[lid + t * WG * WG] = sq_b[t];
    }
    workgroupBarrier();
    if (lid < TILE) {
        var s = 0.0;
        for (var k = 0u; k < TILE_K; k += 1u) {
            s += red[lid * TILE_K + k];
        }
        inv_b[lid] = 1.0 / max(sqrt(s), NORM_EPS);
    }
    workgroupBarrier();

    for (var i = 0u; i < 4u; i += 1u) {
        let row = i0 + ty * 4u + i;
        if (row >= p.n) {
            continue;
        }
        for (var j = 0u; j < 4u; j += 1u) {
            let col = j0 + tx * 4u + j;
            if (col < p.m) {
                similarity[row * p.m + col] = acc[i][j] * inv_a[ty * 4u + i] * inv_b[tx * 4u + j];
            }
        }
    }
}
