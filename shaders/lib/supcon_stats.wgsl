// What the backward kernels look up about a row from the forward pass, and its binding (3 in
// every kernel that joins this file: (lse_A, lse_P, |P|, loss) per anchor, from
// supcon_merge.wgsl). Reads `params`.

@group(0) @binding(3) var<storage, read_write> anchor_stats: array<vec4<f32>>;

// Anchor statistics of row r, or zeros (no contribution) when r is not an anchor.
fn stats_of(r: u32) -> vec4<f32> {
    if (r < params.n_anchors) {
        return anchor_stats[r];
    }
    return vec4<f32>(0.0);
}
