// Joined after (src/kernels/mod.rs): lib/supcon_host.wgsl, lib/uniform_params.wgsl,
// lib/supcon_forward_step.wgsl, lib/supcon_rows.wgsl.
//
// SupCon loss, step 2 of 4: the streaming forward pass.
//
// Each workgroup owns TILE_A anchors and one split of the contrast rows (lib/supcon_host.wgsl:
// the grid is anchor blocks x splits, so that a large GPU is filled even when N / TILE_A alone
// gives few workgroups), and streams over its split in tiles of TILE_C, computing
// s_ij = z_i . z_j / tau for a TILE_A x TILE_C block from the normalised rows z
// (supcon_prepare.wgsl), then folding the block into per-anchor running statistics
// (flash-attention style):
//   m   running max of s_ia over a in A(i)        sa  sum of exp(s_ia - m) over A(i)
//   mp  running max of s_ip over p in P(i)        sp  sum of exp(s_ip - mp) over P(i)
//   pl  sum of s_ip over P(i)                     pc  |P(i)|
// and writes them to the split's slot of `partials`; supcon_merge.wgsl folds the splits in order
// and writes (lse_A, lse_P, |P|, loss) per anchor. The N x N similarity or mask is never stored.
//
// The column loop may also be cut into passes (one dispatch each, contrast rows [col_begin,
// col_end), then a merge): on lavapipe a workgroup that executes more than about 8,192 barriers
// loses results, so the host bounds the columns of a split (src/kernels/supcon/layout.rs,
// `pass_columns`); between passes the merged statistics of each anchor wait in `running`.
//
// Thread (tx, ty) of the 16 x 16 workgroup holds the 4 x 4 block of anchors 4ty..4ty+3 and
// contrast rows 4tx..4tx+3 of the current tile; the 16 partial statistics of an anchor are merged
// through workgroup memory at the end. The block's dot products come from TILE_K-wide slices of
// the anchor and contrast rows staged in workgroup memory, two barriers per slice (the classic
// GPU layout: each value loaded once per workgroup). This is the `Strategy::Tiles` kernel (GPUs);
// on CPU adapters supcon_forward_direct.wgsl computes the same with no barrier in its loop.
// Workgroup memory: 12.1 KiB (WebGPU's default limit is 16).

const TILE_K: u32 = 16u;
const WG: u32 = 16u;

// Bindings: `params` (lib/supcon_host.wgsl) and lib/supcon_forward_step.wgsl.

var<workgroup> tile_a: array<vec4<f32>, 256>;  // [k][anchor / 4]
var<workgroup> tile_c: array<vec4<f32>, 256>;  // [k][contrast row / 4]
var<workgroup> red: array<f32, 1024>;          // [anchor][tx] for the final merge

// Sum (or max) of v over the 16 threads (tx) that share anchors 4ty..4ty+3. Call in uniform
// control flow.
fn row_reduce(v: vec4<f32>, tx: u32, ty: u32, use_max: bool) -> vec4<f32> {
    for (var i = 0u; i < 4u; i += 1u) {
        red[(ty * 4u + i) * WG + tx] = v[i];
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    if (use_max) {
        total = vec4<f32>(NEG_BIG);
    }
    for (var i = 0u; i < 4u; i += 1u) {
        for (var t = 0u; t < WG; t += 1u) {
            let x = red[(ty * 4u + i) * WG + t];
            if (use_max) {
                total[i] = max(total[i], x);
            } else {
                total[i] += x;
            }
        }
    }
    workgroupBarrier();
    return total;
}

fn row_sum(v: vec4<f32>, tx: u32, ty: u32) -> vec4<f32> {
    return row_reduce(v, tx, ty, false);
}

fn row_max(v: vec4<f32>, tx: u32, ty: u32) -> vec4<f32> {
    return row_reduce(v, tx, ty, true);
}

// Thread lid stages vec4 q = lid % 4 of anchor row lid / 4 (offset oa) and of
// contrast row lid / 4 (offset oc) for each TILE_K-wide slice. Call in uniform control flow.
fn dots_tiled(oa: u32, oc: u32, lid: u32, tx: u32, ty: u32, stride: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let row = lid / 4u;
    let q = lid % 4u;
    for (var k0 = 0u; k0 < stride; k0 += TILE_K / 4u) {
        workgroupBarrier();  // everyone is done with the previous slice
        var va = vec4<f32>(0.0);
        var vc = vec4<f32>(0.0);
        if (k0 + q < stride) {
            va = z[oa + k0 + q];
            vc = z[oc + k0 + q];
        }
        for (var c = 0u; c < 4u; c += 1u) {
            tile_a[(q * 4u + c) * WG + row / 4u][row % 4u] = va[c];
            tile_c[(q * 4u + c) * WG + row / 4u][row % 4u] = vc[c];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk += 1u) {
            let a = tile_a[kk * WG + ty];
            let c = tile_c[kk * WG + tx];
            acc[0] += a.x * c;
            acc[1] += a.y * c;
            acc[2] += a.z * c;
            acc[3] += a.w * c;
        }
    }
    return acc;
}

// The running statistics of the thread's four anchors (component i: anchor 4ty+i) over the
// contrast rows it has seen.
struct State {
    m: vec4<f32>,   // running max of s_ia over a in A(i)
    sa: vec4<f32>,  // sum of exp(s_ia - m)
    mp: vec4<f32>,  // running max of s_ip over p in P(i)
    sp: vec4<f32>,  // sum of exp(s_ip - mp)
    pl: vec4<f32>,  // sum of s_ip
    pc: vec4<f32>,  // |P(i)| so far
}

// Folds the thread's 4 x 4 block of cosines (acc[i][j]: anchor a0+4ty+i, contrast row c0+4tx+j)
// into its running statistics.
fn fold(st: ptr<function, State>, acc: array<vec4<f32>, 4>, a0: u32, c0: u32, tx: u32, ty: u32) {
    let n_contrast = params.n_contrast;
    let last = n_contrast - 1u;
    var key_c: array<u32, 4>;
    for (var j = 0u; j < 4u; j += 1u) {
        key_c[j] = row_key(min(c0 + tx * 4u + j, last));
    }
    for (var i = 0u; i < 4u; i += 1u) {
        let r = a0 + ty * 4u + i;
        let key_a = row_key(min(r, last));
        let s = acc[i] * params.inv_temperature;
        var tile_max = NEG_BIG;
        for (var j = 0u; j < 4u; j += 1u) {
            let c = c0 + tx * 4u + j;
            if (c < n_contrast && c != r) {
                tile_max = max(tile_max, s[j]);
            }
        }
        if (tile_max == NEG_BIG) {
            continue;
        }
        let m_old = (*st).m[i];
        let m_new = max(m_old, tile_max);
        var sum_a = (*st).sa[i] * exp(m_old - m_new);
        for (var j = 0u; j < 4u; j += 1u) {
            let c = c0 + tx * 4u + j;
            if (c < n_contrast && c != r) {
                sum_a += exp(s[j] - m_new);
                if (is_positive(key_a, key_c[j])) {
                    let mp_old = (*st).mp[i];
                    let mp_new = max(mp_old, s[j]);
                    (*st).sp[i] = (*st).sp[i] * exp(mp_old - mp_new) + exp(s[j] - mp_new);
                    (*st).mp[i] = mp_new;
                    (*st).pl[i] += s[j];
                    (*st).pc[i] += 1.0;
                }
            }
        }
        (*st).m[i] = m_new;
        (*st).sa[i] = sum_a;
    }
}

@compute @workgroup_size(16, 16, 1)
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
    let cols = split_range(p, block.y);
    let last = p.n_contrast - 1u;

    let zs = p.z_stride;
    // Offset in z of the thread's staging row.
    let oa = min(a0 + lid / 4u, last) * zs;

    var st = State(
        vec4<f32>(NEG_BIG),
        vec4<f32>(0.0),
        vec4<f32>(NEG_BIG),
        vec4<f32>(0.0),
        vec4<f32>(0.0),
        vec4<f32>(0.0),
    );
    for (var c0 = cols.x; c0 < cols.y; c0 += TILE_C) {
        let acc = dots_tiled(oa, min(c0 + lid / 4u, last) * zs, lid, tx, ty, zs);
        fold(&st, acc, a0, c0, tx, ty);
    }
    let m = st.m;
    let sa = st.sa;
    let mp = st.mp;
    let sp = st.sp;
    let pl = st.pl;
    let pc = st.pc;

    // Merge the 16 partial states of each anchor.
    let m_row = row_max(m, tx, ty);
    let mp_row = row_max(mp, tx, ty);
    let sa_row = row_sum(sa * exp(m - m_row), tx, ty);
    let sp_row = row_sum(sp * exp(mp - mp_row), tx, ty);
    let pl_row = row_sum(pl, tx, ty);
    let pc_row = row_sum(pc, tx, ty);

    if (tx == 0u) {
        for (var i = 0u; i < 4u; i += 1u) {
            let r = a0 + ty * 4u + i;
            write_partial(
                p, block.y, r, m_row[i], sa_row[i], mp_row[i], sp_row[i], pl_row[i], pc_row[i],
            );
        }
    }
}
