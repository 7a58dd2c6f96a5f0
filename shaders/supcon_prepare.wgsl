// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/normalize.wgsl.
//
// SupCon loss, step 1 of 4: per-row inverse L2 norms, the non-finite input check, and the
// normalised rows z in view-major order (the only copy of the features the other kernels read).
//
// One invocation per row of the flattened, view-major feature matrix. Row r is sample r % bsz,
// view r / bsz, stored at memory_row(r) of the caller's [bsz, n_views, dim] buffer. Rows
// N .. N + K are the keys, read from their own [K, dim] buffer into z after the batch's rows.
// inv_norm[r] = 1 / max(||x_r||, NORM_EPS) (torch's F.normalize), or NON_FINITE (a negative
// value, impossible for a real inverse norm) when the row holds a NaN or an infinity;
// supcon_reduce.wgsl turns that into the status word.

const WORKGROUP: u32 = 256u;
const NON_FINITE: f32 = -1.0;
const EXPONENT_MASK: u32 = 0x7f800000u;

// Binding 0 is `params` (lib/supcon_host.wgsl).
@group(0) @binding(1) var<storage, read_write> features: array<f32>;
@group(0) @binding(2) var<storage, read_write> inv_norm: array<f32>;
// [N + K, z_stride] view-major, zero-padded to whole vec4s: z_r = x_r * inv_norm[r] (zeros for a
// row with NaN or infinity).
@group(0) @binding(3) var<storage, read_write> z: array<vec4<f32>>;
// [K, dim]: the keys (any buffer when K = 0).
@group(0) @binding(4) var<storage, read_write> keys: array<f32>;

// Element k of row r: the caller's features for r < N, else key r - N.
fn element(r: u32, k: u32) -> f32 {
    if (r < params.n_rows) {
        return features[memory_row(r) * params.dim + k];
    }
    return keys[(r - params.n_rows) * params.dim + k];
}

// 1 / max(||x_r||, NORM_EPS), or NON_FINITE.
fn inverse_norm(r: u32) -> f32 {
    // Two passes: the largest magnitude first, so the sum of squares cannot overflow for large
    // but finite values.
    var max_abs = 0.0;
    var finite = true;
    for (var k = 0u; k < params.dim; k += 1u) {
        let v = element(r, k);
        // WGSL has no isnan/isinf and may assume finite floats: test the exponent bits.
        if ((bitcast<u32>(v) & EXPONENT_MASK) == EXPONENT_MASK) {
            finite = false;
        }
        max_abs = max(max_abs, abs(v));
    }
    if (!finite) {
        return NON_FINITE;
    }
    if (max_abs * sqrt(f32(params.dim)) <= NORM_EPS) {
        // The norm is at most NORM_EPS: F.normalize divides by NORM_EPS (a zero row stays zero).
        return 1.0 / NORM_EPS;
    }
    let scale = 1.0 / max_abs;
    var sum_sq = 0.0;
    for (var k = 0u; k < params.dim; k += 1u) {
        let v = element(r, k) * scale;
        sum_sq += v * v;
    }
    return 1.0 / max(sqrt(sum_sq) * max_abs, NORM_EPS);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Large N may need a 2-D grid (max_compute_workgroups_per_dimension); linearise it.
    let r = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (r >= params.n_contrast) {
        return;
    }
    let inv = inverse_norm(r);
    inv_norm[r] = inv;
    var scale = inv;
    if (inv < 0.0) {
        scale = 0.0;
    }
    for (var q = 0u; q < params.z_stride; q += 1u) {
        var v = vec4<f32>(0.0);
        for (var c = 0u; c < 4u; c += 1u) {
            let k = 4u * q + c;
            if (k < params.dim) {
                v[c] = element(r, k) * scale;
            }
        }
        z[r * params.z_stride + q] = v;
    }
}
