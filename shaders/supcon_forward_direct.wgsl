// SupCon loss, step 2 of 4 on CPU adapters (`Strategy::Direct`, see supcon.rs): the streaming
// forward pass of supcon_forward.wgsl (same statistics, same outputs, same passes; the formulas
// are there), laid out for drivers that run a workgroup's invocations as SIMD lanes on a CPU core
// (lavapipe): no barrier inside the column loop, and large register blocks.
//
// Why a second kernel: on lavapipe every load whose address differs between invocations costs a
// scalar load per lane, and workgroup memory is no faster than cached memory, so what counts is
// how many multiply-adds each loaded value feeds. Thread (tx, ty) of the 8 x 8 workgroup holds
// the 8 x 8 block of anchors 8ty..8ty+7 and contrast rows 8tx..8tx+7 of each TILE_A x TILE_C tile
// and reads its 16 rows straight from z as vec4s: 16 vec4 loads feed 256 multiply-adds, against
// 64 for the 4 x 4 blocks of supcon_forward.wgsl. Measured on lavapipe (2 cores, N = 2,048,
// D = 128): the bare dot products take 69 ms this way, 118 ms with 4 x 4 blocks. A loop holding a
// barrier anywhere (even in a branch not taken) runs such loads about 1.7x slower there, hence a
// kernel of its own rather than a branch in supcon_forward.wgsl.
//
// Register arrays (the dot products, the running statistics) are only ever indexed with
// constants: lavapipe keeps an array that is indexed with a variable anywhere, even once after
// the loop, in memory instead of registers, which made a kernel of this shape 3 to 4x slower.
// Hence the per-row calls with literal indices and the vec4 arithmetic over 4 contrast rows.
// The 8 partial statistics of an anchor are merged through workgroup memory after the loop.
// Workgroup memory: 2.1 KiB.

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

const TILE_A: u32 = 64u;
const TILE_C: u32 = 64u;
const WG: u32 = 8u;     // threads per side of the workgroup
const BLOCK: u32 = 8u;  // anchors and contrast rows per thread and tile
const NEG_BIG: f32 = -3.0e38;

@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> positives: array<u32>;
@group(0) @binding(3) var<storage, read_write> anchor_stats: array<vec4<f32>>;
// [2 * n_anchors]: (m, sa, mp, sp), (pl, pc, 0, 0) per anchor after the passes so far.
@group(0) @binding(4) var<storage, read_write> running: array<vec4<f32>>;

var<workgroup> wp: Params;
var<workgroup> red: array<f32, 512>;  // [anchor][tx] for the final merge

// What decides positives: the label (labels), the sample index (SimCLR, mask, 64-bit labels).
fn row_key(r: u32) -> u32 {
    let sample = r % params.bsz;
    if (params.pos_mode == 0u) {
        return positives[sample];
    }
    return sample;
}

fn is_positive(key_i: u32, key_j: u32) -> bool {
    if (params.pos_mode == 2u) {
        let word = positives[key_i * params.mask_words + key_j / 32u];
        return ((word >> (key_j % 32u)) & 1u) == 1u;
    }
    if (params.pos_mode == 3u) {
        // 64-bit labels, compared at full width: both words of the two samples.
        let li = vec2<u32>(positives[2u * key_i], positives[2u * key_i + 1u]);
        let lj = vec2<u32>(positives[2u * key_j], positives[2u * key_j + 1u]);
        return all(li == lj);
    }
    return key_i == key_j;
}

// The keys of rows rows.x..rows.w.
fn keys4(rows: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(row_key(rows.x), row_key(rows.y), row_key(rows.z), row_key(rows.w));
}

// Whether each of the contrast rows with keys `keys` is a positive of the anchor with key `key`.
fn positive4(key: u32, keys: vec4<u32>) -> vec4<bool> {
    if (params.pos_mode >= 2u) {
        return vec4<bool>(
            is_positive(key, keys.x),
            is_positive(key, keys.y),
            is_positive(key, keys.z),
            is_positive(key, keys.w),
        );
    }
    return keys == vec4<u32>(key);
}

fn max4(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}

fn sum4(v: vec4<f32>) -> f32 {
    return dot(v, vec4<f32>(1.0));
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

// The running statistics of one anchor over the contrast rows the thread has seen.
struct Row {
    m: f32,   // running max of s_ia over a in A(i)
    sa: f32,  // sum of exp(s_ia - m)
    mp: f32,  // running max of s_ip over p in P(i)
    sp: f32,  // sum of exp(s_ip - mp)
    pl: f32,  // sum of s_ip
    pc: f32,  // |P(i)| so far
}

// Where anchor r starts a pass: from `running` for thread tx = 0 of a later pass, else empty.
fn start(r: u32, tx: u32) -> Row {
    if (params.col_begin > 0u && tx == 0u && r < params.n_anchors) {
        let s0 = running[2u * r];
        let s1 = running[2u * r + 1u];
        return Row(s0.x, s0.y, s0.z, s0.w, s1.x, s1.y);
    }
    return Row(NEG_BIG, 0.0, NEG_BIG, 0.0, 0.0, 0.0);
}

// Folds anchor r's cosines with contrast rows cols (lo) and cols + 4 (hi), whose keys are
// keys_lo and keys_hi, into its running statistics `prev`.
fn fold(
    prev: Row,
    r: u32,
    lo: vec4<f32>,
    hi: vec4<f32>,
    cols: vec4<u32>,
    keys_lo: vec4<u32>,
    keys_hi: vec4<u32>,
) -> Row {
    var st = prev;
    let n_rows = vec4<u32>(params.n_rows);
    let cols_hi = cols + vec4<u32>(4u);
    let valid_lo = (cols < n_rows) & (cols != vec4<u32>(r));
    let valid_hi = (cols_hi < n_rows) & (cols_hi != vec4<u32>(r));
    let s_lo = lo * params.inv_temperature;
    let s_hi = hi * params.inv_temperature;
    let big = vec4<f32>(NEG_BIG);
    let x_lo = select(big, s_lo, valid_lo);
    let x_hi = select(big, s_hi, valid_hi);
    let tile_max = max(max4(x_lo), max4(x_hi));
    if (tile_max == NEG_BIG) {
        return st;
    }
    let m_new = max(st.m, tile_max);
    // exp(NEG_BIG - m) is 0: the rows outside A(i) add nothing.
    st.sa = st.sa * exp(st.m - m_new) + sum4(exp(x_lo - m_new) + exp(x_hi - m_new));
    st.m = m_new;
    let key = row_key(min(r, params.n_rows - 1u));
    let pos_lo = valid_lo & positive4(key, keys_lo);
    let pos_hi = valid_hi & positive4(key, keys_hi);
    if (any(pos_lo) || any(pos_hi)) {
        let p_lo = select(big, s_lo, pos_lo);
        let p_hi = select(big, s_hi, pos_hi);
        let mp_new = max(st.mp, max(max4(p_lo), max4(p_hi)));
        st.sp = st.sp * exp(st.mp - mp_new)
            + sum4(exp(p_lo - mp_new) + exp(p_hi - mp_new));
        st.mp = mp_new;
        let zero = vec4<f32>(0.0);
        st.pl += sum4(select(zero, s_lo, pos_lo) + select(zero, s_hi, pos_hi));
        let one = vec4<f32>(1.0);
        st.pc += sum4(select(zero, one, pos_lo) + select(zero, one, pos_hi));
    }
    return st;
}

// Sum (or max) of v over the 8 threads (tx) that share anchors 8ty..8ty+7. Call in uniform
// control flow.
fn row_reduce(v: array<f32, 8>, tx: u32, ty: u32, use_max: bool) -> array<f32, 8> {
    for (var i = 0u; i < BLOCK; i += 1u) {
        red[(ty * BLOCK + i) * WG + tx] = v[i];
    }
    workgroupBarrier();
    var total: array<f32, 8>;
    for (var i = 0u; i < BLOCK; i += 1u) {
        var t_i = 0.0;
        if (use_max) {
            t_i = NEG_BIG;
        }
        for (var t = 0u; t < WG; t += 1u) {
            let x = red[(ty * BLOCK + i) * WG + t];
            if (use_max) {
                t_i = max(t_i, x);
            } else {
                t_i += x;
            }
        }
        total[i] = t_i;
    }
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(8, 8, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        wp = params;
    }
    let p = workgroupUniformLoad(&wp);
    let group = wid.x + wid.y * nwg.x;
    if (group >= (p.n_anchors + TILE_A - 1u) / TILE_A) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let a0 = group * TILE_A;
    let last = p.n_rows - 1u;
    let zs = p.z_stride;
    let rb = a0 + ty * BLOCK;  // the thread's first anchor
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    let ra_lo = min(vec4<u32>(rb) + lanes, vec4<u32>(last)) * zs;
    let ra_hi = min(vec4<u32>(rb + 4u) + lanes, vec4<u32>(last)) * zs;

    var st: array<Row, 8>;
    st[0] = start(rb, tx);
    st[1] = start(rb + 1u, tx);
    st[2] = start(rb + 2u, tx);
    st[3] = start(rb + 3u, tx);
    st[4] = start(rb + 4u, tx);
    st[5] = start(rb + 5u, tx);
    st[6] = start(rb + 6u, tx);
    st[7] = start(rb + 7u, tx);

    for (var c0 = p.col_begin; c0 < p.col_end; c0 += TILE_C) {
        let cols = vec4<u32>(c0 + tx * BLOCK) + lanes;
        let rows_lo = min(cols, vec4<u32>(last));
        let rows_hi = min(cols + vec4<u32>(4u), vec4<u32>(last));
        let acc = dots(ra_lo, ra_hi, rows_lo * zs, rows_hi * zs, zs);
        let keys_lo = keys4(rows_lo);
        let keys_hi = keys4(rows_hi);
        st[0] = fold(st[0], rb, acc[0], acc[1], cols, keys_lo, keys_hi);
        st[1] = fold(st[1], rb + 1u, acc[2], acc[3], cols, keys_lo, keys_hi);
        st[2] = fold(st[2], rb + 2u, acc[4], acc[5], cols, keys_lo, keys_hi);
        st[3] = fold(st[3], rb + 3u, acc[6], acc[7], cols, keys_lo, keys_hi);
        st[4] = fold(st[4], rb + 4u, acc[8], acc[9], cols, keys_lo, keys_hi);
        st[5] = fold(st[5], rb + 5u, acc[10], acc[11], cols, keys_lo, keys_hi);
        st[6] = fold(st[6], rb + 6u, acc[12], acc[13], cols, keys_lo, keys_hi);
        st[7] = fold(st[7], rb + 7u, acc[14], acc[15], cols, keys_lo, keys_hi);
    }

    // Merge the 8 partial states of each anchor (st copied out field by field with constant
    // indices, so that st itself is never indexed with a variable).
    var m = array<f32, 8>(st[0].m, st[1].m, st[2].m, st[3].m, st[4].m, st[5].m, st[6].m, st[7].m);
    var sa = array<f32, 8>(
        st[0].sa, st[1].sa, st[2].sa, st[3].sa, st[4].sa, st[5].sa, st[6].sa, st[7].sa,
    );
    var mp = array<f32, 8>(
        st[0].mp, st[1].mp, st[2].mp, st[3].mp, st[4].mp, st[5].mp, st[6].mp, st[7].mp,
    );
    var sp = array<f32, 8>(
        st[0].sp, st[1].sp, st[2].sp, st[3].sp, st[4].sp, st[5].sp, st[6].sp, st[7].sp,
    );
    var pl = array<f32, 8>(
        st[0].pl, st[1].pl, st[2].pl, st[3].pl, st[4].pl, st[5].pl, st[6].pl, st[7].pl,
    );
    var pc = array<f32, 8>(
        st[0].pc, st[1].pc, st[2].pc, st[3].pc, st[4].pc, st[5].pc, st[6].pc, st[7].pc,
    );
    let m_row = row_reduce(m, tx, ty, true);
    let mp_row = row_reduce(mp, tx, ty, true);
    var sa_part: array<f32, 8>;
    var sp_part: array<f32, 8>;
    for (var i = 0u; i < BLOCK; i += 1u) {
        sa_part[i] = sa[i] * exp(m[i] - m_row[i]);
        sp_part[i] = sp[i] * exp(mp[i] - mp_row[i]);
    }
    let sa_row = row_reduce(sa_part, tx, ty, false);
    let sp_row = row_reduce(sp_part, tx, ty, false);
    let pl_row = row_reduce(pl, tx, ty, false);
    let pc_row = row_reduce(pc, tx, ty, false);

    if (tx == 0u) {
        for (var i = 0u; i < BLOCK; i += 1u) {
            let r = a0 + ty * BLOCK + i;
            if (r >= p.n_anchors) {
                continue;
            }
            if (p.col_end < p.n_rows) {
                // Not the last pass: keep the merged statistics for the next one.
                running[2u * r] = vec4<f32>(m_row[i], sa_row[i], mp_row[i], sp_row[i]);
                running[2u * r + 1u] = vec4<f32>(pl_row[i], pc_row[i], 0.0, 0.0);
                continue;
            }
            let lse = m_row[i] + log(sa_row[i]);
            var lse_pos = 0.0;
            var loss = 0.0;
            if (pc_row[i] > 0.0) {
                lse_pos = mp_row[i] + log(sp_row[i]);
                if (params.variant == 0u) {
                    loss = -params.loss_scale * (pl_row[i] / pc_row[i] - lse);
                } else {
                    loss = -params.loss_scale * (lse_pos - log(pc_row[i]) - lse);
                }
            }
            anchor_stats[r] = vec4<f32>(lse, lse_pos, pc_row[i], loss);
        }
    }
}
