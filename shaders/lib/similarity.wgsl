// What both cosine-similarity kernels share: the parameter block, the output tile the host
// counts workgroups in, and the bindings (the host dispatches either kernel with the same
// buffers). A unit test in src/kernels/similarity.rs checks Params and TILE against their Rust
// mirrors.

struct Params {
    n: u32,
    m: u32,
    dim: u32,
    pad: u32,
}

const TILE: u32 = 64u;  // rows and columns of S per workgroup

@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> similarity: array<f32>;
