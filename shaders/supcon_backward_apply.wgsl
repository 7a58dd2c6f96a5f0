// SupCon loss, step 4b of the backward pass on CPU adapters (`strategy` 1): grad += sum_j W_rj z_j
// over one pass's contrast rows, from the weights supcon_backward_weights.wgsl wrote, with no
// workgroup barrier at all. The first pass overwrites the gradient buffer; later passes add to
// it; the last pass applies the normalisation's projection with z_r . g_r from row_dot (complete
// by then) and multiplies by 1 / ||x_r||, as in supcon_backward.wgsl.
//
// Each 16 x 16 workgroup owns TILE_R rows and CHUNK_D output columns; thread (tx, ty) accumulates
// rows 4ty..4ty+3 at the vec4s tx and tx + 16 of its chunk. Workgroup memory: 64 bytes.

struct Params {
    n_rows: u32,          // N = bsz * n_views
    bsz: u32,
    n_views: u32,
    dim: u32,
    n_anchors: u32,       // N (contrast_mode all) or bsz (contrast_mode one)
    pos_mode: u32,        // 0: labels, 1: none (SimCLR), 2: bit-packed [bsz, bsz] mask
    mask_words: u32,      // u32 words per mask row, ceil(bsz / 32)
    variant: u32,         // 0: L_out, 1: L_in
    reduction: u32,       // 0: mean over all anchors, 1: mean over anchors with a positive
    inv_temperature: f32,
    loss_scale: f32,      // temperature / base_temperature
    pad: u32,
    col_begin: u32,       // this pass's contrast rows: [col_begin, col_end) (a multiple of 64)
    col_end: u32,         // (the kernels' column loop runs over several passes; see supcon.rs)
    z_stride: u32,        // vec4s per row of the normalised copy z: ceil(dim / 4)
    strategy: u32,        // 0: tiles through workgroup memory (GPUs), 1: direct loads (CPUs)
}

struct Output {
    loss: f32,
    weight: f32,
    n_valid: u32,
    status: u32,
}

const TILE_R: u32 = 64u;
const CHUNK_D: u32 = 128u;
const WG: u32 = 16u;
const NORM_EPS: f32 = 1e-12;

@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> inv_norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: Output;
@group(0) @binding(4) var<storage, read_write> weights_t: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_dot: array<f32>;

var<workgroup> wp: Params;

fn memory_row(r: u32) -> u32 {
    return (r % params.bsz) * params.n_views + r / params.bsz;
}

@compute @workgroup_size(16, 16, 1)
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
    let n_chunks = (p.dim + CHUNK_D - 1u) / CHUNK_D;
    let group = wid.x + wid.y * nwg.x;
    if (group >= ((p.n_rows + TILE_R - 1u) / TILE_R) * n_chunks) {
        return;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    let r0 = (group / n_chunks) * TILE_R;
    let d0 = (group % n_chunks) * CHUNK_D;
    let last = p.n_rows - 1u;
    let zs = p.z_stride;
    let n4 = (p.n_rows + 3u) / 4u;
    let v0 = d0 / 4u + tx;
    let v1 = v0 + WG;
    let v0c = min(v0, zs - 1u);
    let v1c = min(v1, zs - 1u);
    // The weights of rows past N: a clamped, valid vec4 (those rows are never written).
    let wrow = min(r0 / 4u + ty, n4 - 1u);

    var acc: array<vec4<f32>, 8>;  // acc[4h + i]: row 4ty+i, vec4 v0 (h = 0) or v1 (h = 1)
    for (var c = p.col_begin; c < p.col_end; c += 1u) {
        let wv = weights_t[(c - p.col_begin) * n4 + wrow];
        let row = c * zs;
        let z0 = z[row + v0c];
        let z1 = z[row + v1c];
        acc[0] += wv.x * z0;
        acc[1] += wv.y * z0;
        acc[2] += wv.z * z0;
        acc[3] += wv.w * z0;
        acc[4] += wv.x * z1;
        acc[5] += wv.y * z1;
        acc[6] += wv.z * z1;
        acc[7] += wv.w * z1;
    }

    let ok = output.status == 0u;
    let first = p.col_begin == 0u;
    let last_pass = p.col_end >= p.n_rows;
    for (var i = 0u; i < 4u; i += 1u) {
        let r = r0 + ty * 4u + i;
        if (r >= p.n_rows) {
            continue;
        }
        let base = memory_row(r) * p.dim;
        let zg_total = row_dot[r];
        let inv = inv_norm[r];
        // F.normalize divides by NORM_EPS when the norm is below it: no projection then.
        let clamped = inv >= 1.0 / NORM_EPS;
        for (var h = 0u; h < 2u; h += 1u) {
            var v = v0;
            if (h == 1u) {
                v = v1;
            }
            if (v >= zs) {
                continue;
            }
            let z_r = z[r * zs + v];
            for (var c = 0u; c < 4u; c += 1u) {
                let d = 4u * v + c;
                if (d >= p.dim) {
                    continue;
                }
                var g = acc[4u * h + i][c];
                if (!first) {
                    g += grad[base + d];  // the raw sums of the passes before
                }
                if (last_pass) {
                    if (!clamped) {
                        g -= z_r[c] * zg_total;
                    }
                    g *= inv;
                    if (!ok) {
                        g = 0.0;
                    }
                }
                grad[base + d] = g;
            }
        }
    }
}
