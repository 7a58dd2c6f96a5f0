// The 4-wide and 8 x 8 helpers of the `Strategy::Direct` kernels that compare rows
// (supcon_forward_direct.wgsl, supcon_backward_weights.wgsl). Their results are only ever indexed
// with constants: lavapipe keeps a register array indexed with a variable in memory. Reads the
// binding `z` and lib/supcon_rows.wgsl.

// The keys of rows rows.x..rows.w.
fn keys4(rows: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(row_key(rows.x), row_key(rows.y), row_key(rows.z), row_key(rows.w));
}

// is_positive(a[k], b[k]) for each k.
fn positive4(a: vec4<u32>, b: vec4<u32>) -> vec4<bool> {
    if (params.pos_mode >= POS_MASK) {
        return vec4<bool>(
            is_positive(a.x, b.x),
            is_positive(a.y, b.y),
            is_positive(a.z, b.z),
            is_positive(a.w, b.w),
        );
    }
    return a == b;
}

// acc[2i + h][j]: cosine of the rows at z offsets ra[i] and rc[4h + j] (ra, rc: rows 0-3 in
// .lo, 4-7 in .hi).
fn dots(ra_lo: vec4<u32>, ra_hi: vec4<u32>, rc_lo: vec4<u32>, rc_hi: vec4<u32>, stride: u32)
    -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>;
    for (var k = 0u; k < stride; k += 1u) {
        let c0 = z[rc_lo.x + k];
        let c1 = z[rc_lo.y + k];
        let c2 = z[rc_lo.z + k];
        let c3 = z[rc_lo.w + k];
        let c4 = z[rc_hi.x + k];
        let c5 = z[rc_hi.y + k];
        let c6 = z[rc_hi.z + k];
        let c7 = z[rc_hi.w + k];
        let a0 = z[ra_lo.x + k];
        let a1 = z[ra_lo.y + k];
        let a2 = z[ra_lo.z + k];
        let a3 = z[ra_lo.w + k];
        let a4 = z[ra_hi.x + k];
        let a5 = z[ra_hi.y + k];
        let a6 = z[ra_hi.z + k];
        let a7 = z[ra_hi.w + k];
        acc[0] += vec4<f32>(dot(a0, c0), dot(a0, c1), dot(a0, c2), dot(a0, c3));
        acc[1] += vec4<f32>(dot(a0, c4), dot(a0, c5), dot(a0, c6), dot(a0, c7));
        acc[2] += vec4<f32>(dot(a1, c0), dot(a1, c1), dot(a1, c2), dot(a1, c3));
        acc[3] += vec4<f32>(dot(a1, c4), dot(a1, c5), dot(a1, c6), dot(a1, c7));
        acc[4] += vec4<f32>(dot(a2, c0), dot(a2, c1), dot(a2, c2), dot(a2, c3));
        acc[5] += vec4<f32>(dot(a2, c4), dot(a2, c5), dot(a2, c6), dot(a2, c7));
        acc[6] += vec4<f32>(dot(a3, c0), dot(a3, c1), dot(a3, c2), dot(a3, c3));
        acc[7] += vec4<f32>(dot(a3, c4), dot(a3, c5), dot(a3, c6), dot(a3, c7));
        acc[8] += vec4<f32>(dot(a4, c0), dot(a4, c1), dot(a4, c2), dot(a4, c3));
        acc[9] += vec4<f32>(dot(a4, c4), dot(a4, c5), dot(a4, c6), dot(a4, c7));
        acc[10] += vec4<f32>(dot(a5, c0), dot(a5, c1), dot(a5, c2), dot(a5, c3));
        acc[11] += vec4<f32>(dot(a5, c4), dot(a5, c5), dot(a5, c6), dot(a5, c7));
        acc[12] += vec4<f32>(dot(a6, c0), dot(a6, c1), dot(a6, c2), dot(a6, c3));
        acc[13] += vec4<f32>(dot(a6, c4), dot(a6, c5), dot(a6, c6), dot(a6, c7));
        acc[14] += vec4<f32>(dot(a7, c0), dot(a7, c1), dot(a7, c2), dot(a7, c3));
        acc[15] += vec4<f32>(dot(a7, c4), dot(a7, c5), dot(a7, c6), dot(a7, c7));
    }
    return acc;
}
