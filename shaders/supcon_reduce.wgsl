// SupCon loss, step 3 of 4: the scalar loss, the anchor weight used by the backward pass, and the
// status word. One workgroup strides over all anchors and rows.
//
//   status  = 1 if any feature row held a NaN or an infinity (supcon_prepare.wgsl), else 0
//   n_valid = number of anchors with at least one positive
//   weight  = 1 / n_anchors (mean over all anchors, the reference PyTorch code)
//           | 1 / n_valid   (mean over anchors with a positive)
//           = 0 when status != 0 or no anchor has a positive
//   loss    = weight * sum_i loss_i   (params.non_finite_fill when status != 0: 0, or NaN
//             on the Burn path)

struct Params {
    n_rows: u32,          // N = bsz * n_views
    bsz: u32,
    n_views: u32,
    dim: u32,
    n_anchors: u32,       // N (contrast_mode all) or bsz (contrast_mode one)
    pos_mode: u32,        // 0: labels, 1: none (SimCLR), 2: bit-packed [bsz, bsz] mask,
                          // 3: 64-bit labels (two words per sample)
    mask_words: u32,      // u32 words per mask row, ceil(bsz / 32)
    variant: u32,         // 0: L_out, 1: L_in
    reduction: u32,       // 0: mean over all anchors, 1: mean over anchors with a positive
    inv_temperature: f32,
    loss_scale: f32,      // temperature / base_temperature
    non_finite_fill: f32, // loss and gradient when a row is not finite: 0 (raw API) or NaN (Burn)
    col_begin: u32,       // this pass's contrast rows: [col_begin, col_end) (a multiple of 64)
    col_end: u32,         // (the kernels' column loop runs over several passes; see supcon.rs)
    z_stride: u32,        // vec4s per row of the normalised copy z: ceil(dim / 4)
}

struct Output {
    loss: f32,
    weight: f32,
    n_valid: u32,
    status: u32,
}

const WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> params: Params;
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
    var bad = 0u;
    for (var i = lid; i < params.n_anchors; i += WORKGROUP) {
        let stats = anchor_stats[i];
        if (stats.z > 0.0) {
            sum += stats.w;
            valid += 1u;
        }
    }
    for (var r = lid; r < params.n_rows; r += WORKGROUP) {
        if (inv_norm[r] < 0.0) {
            bad = 1u;
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
        if (params.reduction == 1u) {
            denominator = n_valid;
        }
        var weight = 0.0;
        var loss = 0.0;
        if (status == 0u && n_valid > 0u) {
            weight = 1.0 / f32(denominator);
            loss = red_sum[0] * weight;
        }
        if (status != 0u) {
            loss = params.non_finite_fill;
        }
        output.loss = loss;
        output.weight = weight;
        output.n_valid = n_valid;
        output.status = status;
    }
}
