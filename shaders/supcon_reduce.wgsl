// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl.
//
// SupCon loss, step 3 of 4: the scalar loss, the anchor weight used by the backward pass, and the
// status word. One workgroup strides over all anchors and rows.
//
//   status  = STATUS_NON_FINITE if any feature or key row held a NaN or an infinity
//             (supcon_prepare.wgsl), else STATUS_OK
//   n_valid = number of anchors with at least one positive
//   weight  = 1 / n_anchors (mean over all anchors, the reference PyTorch code)
//           | 1 / n_valid   (mean over anchors with a positive)
//           = 0 when status != STATUS_OK or no anchor has a positive
//   loss    = weight * sum_i loss_i   (params.non_finite_fill when status != STATUS_OK: 0,
//             or NaN on the Burn path)

const WORKGROUP: u32 = 256u;

// Binding 0 is `params` (lib/supcon_host.wgsl).
@group(0) @binding(1) var<storage, read_write> inv_norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> anchor_stats: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: Output;

var<workgroup> red_sum: array<f32, 256>;
var<workgroup> red_valid: array<u32, 256>;
var<workgroup> red_bad: array<u32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32) {
    var sum = 0.0;
    var valid = 0u;
    var bad = STATUS_OK;
    for (var i = lid; i < params.n_anchors; i += WORKGROUP) {
        let stats = anchor_stats[i];
        if (stats.z > 0.0) {
            sum += stats.w;
            valid += 1u;
        }
    }
    for (var r = lid; r < params.n_contrast; r += WORKGROUP) {
        if (inv_norm[r] < 0.0) {
            bad = STATUS_NON_FINITE;
        }
    }
    red_sum[lid] = sum;
    red_valid[lid] = valid;
    red_bad[lid] = bad;
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            red_sum[lid] += red_sum[lid + stride];
            red_valid[lid] += red_valid[lid + stride];
            red_bad[lid] = max(red_bad[lid], red_bad[lid + stride]);
        }
    }
    if (lid == 0u) {
        let status = red_bad[0];
        let n_valid = red_valid[0];
        var denominator = params.n_anchors;
        if (params.reduction == REDUCTION_ANCHORS_WITH_POSITIVES) {
            denominator = n_valid;
        }
        var weight = 0.0;
        var loss = 0.0;
        if (status == STATUS_OK && n_valid > 0u) {
            weight = 1.0 / f32(denominator);
            loss = red_sum[0] * weight;
        }
        if (status != STATUS_OK) {
            loss = params.non_finite_fill;
        }
        output.loss = loss;
        output.weight = weight;
        output.n_valid = n_valid;
        output.status = status;
    }
}
