// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/normalize.wgsl.
//
// SupCon loss, step 4b with `Strategy::Tiles`: adds the raw sums g_r = sum_j W_rj z_j and the
// dots z_r . g_r of the splits of supcon_backward.wgsl in the fixed order s = 0, 1, ... (a result
// is the same bit for bit from run to run), applies the L2 normalisation's projection
//   dL/dx_r = (g_r - z_r (z_r . g_r)) / ||x_r||
// and writes the gradient in the caller's [bsz, n_views, dim] layout. When status != 0
// (non-finite input) every entry is params.non_finite_fill (0, or NaN on the Burn path).
//
// With several passes (one backward dispatch and one merge each), a pass before the last leaves
// its raw sums in `grad` (at the caller's layout) and z_r . g_r in the carry, the
// first slot of `partial_dot`; the next adds them in. One invocation per vec4 of a row: invocation
// (r, 0) is the only one that reads and writes row r's carry (the others need the dot only in
// the last pass, which writes no carry), so no invocation reads what another writes.

const WORKGROUP: u32 = 256u;

// Binding 0 is `params` (lib/supcon_host.wgsl).
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> inv_norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: Output;
// [n_splits, N, z_stride] vec4s (supcon_backward.wgsl).
@group(0) @binding(4) var<storage, read_write> partial_grad: array<vec4<f32>>;
// The carry [N], then [n_splits, N] (the carry first: passes may differ in their splits).
@group(0) @binding(5) var<storage, read_write> partial_dot: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let zs = params.z_stride;
    let n = params.n_rows;
    let t = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (t >= n * zs) {
        return;
    }
    let r = t / zs;
    let v = t % zs;
    let first = params.col_begin == 0u;
    let last_pass = params.col_end >= params.n_contrast;
    let carry = r;

    var g = vec4<f32>(0.0);
    for (var s = 0u; s < params.n_splits; s += 1u) {
        g += partial_grad[(s * n + r) * zs + v];
    }
    let base = memory_row(r) * params.dim;
    if (!first) {
        // The raw sums of the passes before.
        for (var c = 0u; c < 4u; c += 1u) {
            let d = 4u * v + c;
            if (d < params.dim) {
                g[c] += grad[base + d];
            }
        }
    }
    if (!last_pass) {
        if (v == 0u) {
            var dot_sum = 0.0;
            if (!first) {
                dot_sum = partial_dot[carry];
            }
            for (var s = 0u; s < params.n_splits; s += 1u) {
                dot_sum += partial_dot[(s + 1u) * n + r];
            }
            partial_dot[carry] = dot_sum;
        }
        for (var c = 0u; c < 4u; c += 1u) {
            let d = 4u * v + c;
            if (d < params.dim) {
                grad[base + d] = g[c];
            }
        }
        return;
    }

    var zg = 0.0;
    if (!first) {
        zg = partial_dot[carry];
    }
    for (var s = 0u; s < params.n_splits; s += 1u) {
        zg += partial_dot[(s + 1u) * n + r];
    }
    let inv = inv_norm[r];
    // F.normalize divides by NORM_EPS when the norm is below it: no projection then.
    if (inv < 1.0 / NORM_EPS) {
        g -= z[r * zs + v] * zg;
    }
    g *= inv;
    let ok = output.status == STATUS_OK;
    for (var c = 0u; c < 4u; c += 1u) {
        let d = 4u * v + c;
        if (d < params.dim) {
            var value = g[c];
            if (!ok) {
                value = params.non_finite_fill;
            }
            grad[base + d] = value;
        }
    }
}
