// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl.
//
// SupCon loss, step 2b: folds the per-split statistics that the forward kernels wrote to
// `partials` into one state per anchor, in the fixed order of the splits (so a result is the
// same bit for bit from run to run), continues from `running` when an earlier pass left one, and
// ends the anchor: to `running` when a later pass continues, else
//   anchor_stats[i] = (lse_A(i), lse_P(i), |P(i)|, loss_i)
// with loss_i = -(tau / tau_base) * (pl / pc - lse_A)              (L_out, the paper's Eq. 2)
//      loss_i = -(tau / tau_base) * (lse_P - log(pc) - lse_A)     (L_in, Eq. 3)
// and loss_i = 0 for an anchor without a positive. The merge of two states is flash-decoding's:
// m = max(m1, m2), sa = sa1 exp(m1 - m) + sa2 exp(m2 - m) (the same for the positives), pl and pc
// add. One invocation per anchor.

const WORKGROUP: u32 = 256u;
// Below every s_ij; the empty state's max (as in lib/supcon_forward_step.wgsl).
const NEG_BIG: f32 = -3.0e38;

// Binding 0 is `params` (lib/supcon_host.wgsl).
// [n_splits, n_anchors, 2] vec4s, as written by the forward kernels.
@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;
// [n_anchors, 2] vec4s: the state after the passes so far (read and written only with several
// passes).
@group(0) @binding(2) var<storage, read_write> running: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> anchor_stats: array<vec4<f32>>;

// Folds state (b0, b1) into (a0, a1): a0 = (m, sa, mp, sp), a1 = (pl, pc, 0, 0).
fn fold(a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) -> array<vec4<f32>, 2> {
    let m = max(a0.x, b0.x);
    let mp = max(a0.z, b0.z);
    // An empty side (max NEG_BIG, sum 0) adds exactly 0: exp(NEG_BIG - m) is 0 or, when both
    // are empty, 1 times a zero sum.
    let sa = a0.y * exp(a0.x - m) + b0.y * exp(b0.x - m);
    let sp = a0.w * exp(a0.z - mp) + b0.w * exp(b0.z - mp);
    return array<vec4<f32>, 2>(vec4<f32>(m, sa, mp, sp), a1 + b1);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let n = params.n_anchors;
    if (r >= n) {
        return;
    }
    var st = array<vec4<f32>, 2>(vec4<f32>(NEG_BIG, 0.0, NEG_BIG, 0.0), vec4<f32>(0.0));
    if (params.col_begin > 0u) {
        st = array<vec4<f32>, 2>(running[2u * r], running[2u * r + 1u]);
    }
    for (var s = 0u; s < params.n_splits; s += 1u) {
        let slot = 2u * (s * n + r);
        st = fold(st[0], st[1], partials[slot], partials[slot + 1u]);
    }
    if (params.col_end < params.n_contrast) {
        // Not the last pass: keep the state for the next one.
        running[2u * r] = st[0];
        running[2u * r + 1u] = st[1];
        return;
    }
    let lse = st[0].x + log(st[0].y);
    let pl = st[1].x;
    let pc = st[1].y;
    var lse_pos = 0.0;
    var loss = 0.0;
    if (pc > 0.0) {
        lse_pos = st[0].z + log(st[0].w);
        if (params.variant == VARIANT_OUT) {
            loss = -params.loss_scale * (pl / pc - lse);
        } else {
            loss = -params.loss_scale * (lse_pos - log(pc) - lse);
        }
    }
    anchor_stats[r] = vec4<f32>(lse, lse_pos, pc, loss);
}
