// What both forward kernels share (supcon_forward.wgsl and supcon_forward_direct.wgsl, the two
// strategies of step 2): their bindings after `params` (the host dispatches either with the same
// buffers) and the end of a pass, where each anchor's merged statistics are written out.

@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
@group(0) @binding(3) var<storage, read_write> anchor_stats: array<vec4<f32>>;
// [2 * n_anchors]: (m, sa, mp, sp), (pl, pc, 0, 0) per anchor after the passes so far.
@group(0) @binding(4) var<storage, read_write> running: array<vec4<f32>>;

// Below every s_ij (|s_ij| <= 1 / tau): the start of a running max, and the value of the rows
// outside A(i), whose exp(NEG_BIG - m) is 0.
const NEG_BIG: f32 = -3.0e38;

// Writes anchor r's statistics merged over the workgroup (p: the uniform parameter block): to
// `running` when a later pass continues them, else anchor_stats[r] = (lse_A, lse_P, |P|, loss)
// with the loss of supcon_forward.wgsl's header (0 without a positive).
fn finish_anchor(p: Params, r: u32, m: f32, sa: f32, mp: f32, sp: f32, pl: f32, pc: f32) {
    if (r >= p.n_anchors) {
        return;
    }
    if (p.col_end < p.n_contrast) {
        // Not the last pass: keep the merged statistics for the next one.
        running[2u * r] = vec4<f32>(m, sa, mp, sp);
        running[2u * r + 1u] = vec4<f32>(pl, pc, 0.0, 0.0);
        return;
    }
    let lse = m + log(sa);
    var lse_pos = 0.0;
    var loss = 0.0;
    if (pc > 0.0) {
        lse_pos = mp + log(sp);
        if (params.variant == VARIANT_OUT) {
            loss = -params.loss_scale * (pl / pc - lse);
        } else {
            loss = -params.loss_scale * (lse_pos - log(pc) - lse);
        }
    }
    anchor_stats[r] = vec4<f32>(lse, lse_pos, pc, loss);
}
