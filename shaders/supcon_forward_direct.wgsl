// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/uniform_params.wgsl,
// lib/supcon_forward_step.wgsl, lib/supcon_rows.wgsl, lib/supcon_direct.wgsl.
//
// SupCon loss, step 2 of 4 on CPU adapters (`Strategy::Direct`, see src/kernels/supcon/): the
// streaming forward pass of supcon_forward.wgsl (same statistics, same grid of anchor blocks x
// splits, same partial outputs; the formulas are there), laid out for drivers that run a
// workgroup's invocations as SIMD lanes on a CPU core (lavapipe): no barrier inside the column
// loop, and large register blocks.
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

const WG: u32 = 8u;     // threads per side of the workgroup
const BLOCK: u32 = 8u;  // anchors and contrast rows per thread and tile

// Bindings: `params` (lib/supcon_host.wgsl) and lib/supcon_forward_step.wgsl.

var<workgroup> red: array<f32, 512>;  // [anchor][tx] for the final merge

fn max4(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}

fn sum4(v: vec4<f32>) -> f32 {
    return dot(v, vec4<f32>(1.0));
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

// The state of an anchor that has seen no contrast row.
fn empty_row() -> Row {
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
    let n_contrast = vec4<u32>(params.n_contrast);
    let cols_hi = cols + vec4<u32>(4u);
    let valid_lo = (cols < n_contrast) & (cols != vec4<u32>(r));
    let valid_hi = (cols_hi < n_contrast) & (cols_hi != vec4<u32>(r));
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
    let key = vec4<u32>(row_key(min(r, params.n_contrast - 1u)));
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
    let p = uniform_params(lid);
    let block = forward_block(p, wid.x + wid.y * nwg.x);
    if (block.y >= p.n_splits) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let a0 = block.x * TILE_A;
    let split = split_range(p, block.y);
    let last = p.n_contrast - 1u;
    let zs = p.z_stride;
    let rb = a0 + ty * BLOCK;  // the thread's first anchor
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    let ra_lo = min(vec4<u32>(rb) + lanes, vec4<u32>(last)) * zs;
    let ra_hi = min(vec4<u32>(rb + 4u) + lanes, vec4<u32>(last)) * zs;

    var st: array<Row, 8>;
    st[0] = empty_row();
    st[1] = empty_row();
    st[2] = empty_row();
    st[3] = empty_row();
    st[4] = empty_row();
    st[5] = empty_row();
    st[6] = empty_row();
    st[7] = empty_row();

    for (var c0 = split.x; c0 < split.y; c0 += TILE_C) {
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
            write_partial(
                p, block.y, r, m_row[i], sa_row[i], mp_row[i], sp_row[i], pl_row[i], pc_row[i],
            );
        }
    }
}
