// What both forward kernels share (supcon_forward.wgsl and supcon_forward_direct.wgsl, the two
// strategies of step 2): their bindings after `params` (the host dispatches either with the same
// buffers), the grid they share, and the end of a workgroup, where each anchor's statistics over
// the workgroup's split are written out for supcon_merge.wgsl.

@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
// [n_splits, n_anchors, 2] vec4s: (m, sa, mp, sp), (pl, pc, 0, 0) per split and anchor.
@group(0) @binding(3) var<storage, read_write> partials: array<vec4<f32>>;

// Below every s_ij (|s_ij| <= 1 / tau): the start of a running max, and the value of the rows
// outside A(i), whose exp(NEG_BIG - m) is 0.
const NEG_BIG: f32 = -3.0e38;

// The forward grid: workgroup `group` owns anchor block x (TILE_A anchors from TILE_A * x) of
// split y. Blocks past the anchors have y = n_splits (nothing to do).
fn forward_block(p: Params, group: u32) -> vec2<u32> {
    let blocks = (p.n_anchors + TILE_A - 1u) / TILE_A;
    return vec2<u32>(group % blocks, group / blocks);
}

// Writes anchor r's statistics over the contrast rows of split `split` (merged over the
// workgroup) to its slot of `partials`.
fn write_partial(
    p: Params,
    split: u32,
    r: u32,
    m: f32,
    sa: f32,
    mp: f32,
    sp: f32,
    pl: f32,
    pc: f32,
) {
    if (r >= p.n_anchors) {
        return;
    }
    let slot = 2u * (split * p.n_anchors + r);
    partials[slot] = vec4<f32>(m, sa, mp, sp);
    partials[slot + 1u] = vec4<f32>(pl, pc, 0.0, 0.0);
}
