//! [`SupConBackend`] on burn-wgpu: the `.wgsl` files launched through Burn's raw-kernel path.
//!
//! Only the wgpu runtime with its WGSL compiler can run them: Burn's `vulkan` / `metal` features
//! make cubecl compile to SPIR-V / MSL, which rejects a WGSL source kernel. On any other cubecl
//! runtime (CUDA, ROCm, CPU) the operations panic with a message that says so; the high-level
//! [`SupConLoss`](super::SupConLoss) picks the composed implementation there instead.

use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{
    ops::{FloatTensorOps, IntTensorOps},
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, FloatDType, IntDType, Shape};
use cubecl::client::Client;
use cubecl::server::KernelArguments;
use cubecl::{CubeCount, CubeDim, RuntimeId, prelude::KernelId};

use super::ops::{LossParams, SupConBackend};
use crate::kernels::shaders;
use crate::kernels::supcon::{
    PositiveKind, ProblemLimits, Strategy, backward_passes, kernel_params, problem_layout,
    row_dot_len, running_len, z_stride,
};
use crate::{Error, Result};

/// One of the `.wgsl` files, as a Burn source kernel (entry point `main`).
#[derive(Debug, Clone, Copy)]
struct WgslKernel {
    name: &'static str,
    source: &'static str,
}

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.source)
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.name)
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

const PREPARE: WgslKernel = WgslKernel {
    name: "supcon_prepare",
    source: shaders::SUPCON_PREPARE,
};
const FORWARD: WgslKernel = WgslKernel {
    name: "supcon_forward",
    source: shaders::SUPCON_FORWARD,
};
const FORWARD_DIRECT: WgslKernel = WgslKernel {
    name: "supcon_forward_direct",
    source: shaders::SUPCON_FORWARD_DIRECT,
};
const REDUCE: WgslKernel = WgslKernel {
    name: "supcon_reduce",
    source: shaders::SUPCON_REDUCE,
};
const BACKWARD: WgslKernel = WgslKernel {
    name: "supcon_backward",
    source: shaders::SUPCON_BACKWARD,
};
const BACKWARD_WEIGHTS: WgslKernel = WgslKernel {
    name: "supcon_backward_weights",
    source: shaders::SUPCON_BACKWARD_WEIGHTS,
};
const BACKWARD_APPLY: WgslKernel = WgslKernel {
    name: "supcon_backward_apply",
    source: shaders::SUPCON_BACKWARD_APPLY,
};
const SIMILARITY: WgslKernel = WgslKernel {
    name: "cosine_similarity",
    source: shaders::COSINE_SIMILARITY,
};
const SIMILARITY_DIRECT: WgslKernel = WgslKernel {
    name: "cosine_similarity_direct",
    source: shaders::COSINE_SIMILARITY_DIRECT,
};

/// Workgroups per grid dimension every WebGPU device allows.
const MAX_GROUPS_PER_DIM: u32 = 65_535;

fn launch(
    kernel: WgslKernel,
    reference: &CubeTensor,
    cube_dim: CubeDim,
    groups: u64,
    buffers: Vec<cubecl::server::BufferBinding>,
) {
    let (x, y) = crate::kernels::grid(kernel.name, groups, MAX_GROUPS_PER_DIM)
        .unwrap_or_else(|e| panic!("supcon-wgpu: {e}"));
    reference.client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        CubeCount::Static(x, y, 1),
        KernelArguments::new().with_buffers(buffers),
    );
}

fn check_runtime(tensor: &CubeTensor, op: &str) {
    let runtime = tensor.device.runtime();
    assert!(
        runtime == RuntimeId::Wgpu,
        "supcon-wgpu: `{op}` launches WGSL kernels and needs Burn's wgpu runtime with its WGSL \
         compiler, but the tensor lives on the {runtime:?} runtime; use \
         Implementation::Composed there"
    );
}

/// Contiguous f32 copy (the kernels read f32 rows).
fn f32_contiguous(tensor: CubeTensor) -> CubeTensor {
    let tensor = if tensor.dtype == DType::F32 {
        tensor
    } else {
        CubeBackend::float_cast(tensor, burn::tensor::FloatDType::F32)
    };
    into_contiguous(tensor)
}

/// The positives as the kernels read them, contiguous: 64-bit labels as they are (two words
/// each, compared at full width), everything else as 32-bit integers (labels compared bit for
/// bit, mask words read as u32; narrower integers widened).
fn positives_contiguous(tensor: CubeTensor, kind: PositiveKind) -> CubeTensor {
    let tensor = match (kind, tensor.dtype) {
        (PositiveKind::Labels64, DType::I64 | DType::U64) => tensor,
        (PositiveKind::Labels64, dtype) => {
            panic!("supcon-wgpu: PositiveKind::Labels64 needs I64 or U64 labels, got {dtype:?}")
        }
        (_, DType::I32 | DType::U32) => tensor,
        (PositiveKind::Labels, DType::I64 | DType::U64) => {
            panic!(
                "supcon-wgpu: 64-bit labels need PositiveKind::Labels64 (a cast would wrap them)"
            )
        }
        // Narrower labels, and mask words (which fit 32 bits), are cast exactly.
        _ => CubeBackend::int_cast(tensor, IntDType::I32),
    };
    into_contiguous(tensor)
}

fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let handle = like.client.empty(shape.num_elements() * 4);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

/// [`Strategy::Direct`] where cubecl reports no physical card (a CPU adapter: lavapipe and the
/// like), [`Strategy::Tiles`] on a GPU.
fn device_strategy(client: &Client) -> Strategy {
    if client.properties().identity.physical.is_none() {
        Strategy::Direct
    } else {
        Strategy::Tiles
    }
}

/// The strategy in force: the one asked for, else the device's.
fn strategy(client: &Client, params: &LossParams) -> Strategy {
    params.strategy.unwrap_or_else(|| device_strategy(client))
}

/// Checks a problem against the device's limits before anything is launched: the raw API's
/// checks ([`problem_layout`]), with the largest buffer cubecl allocates (its page size, the
/// device's `max_storage_buffer_binding_size` or less) as the binding limit.
pub(crate) fn check_problem(device: &cubecl::Device, params: &LossParams) -> Result<()> {
    let client = device.client();
    let limits = ProblemLimits {
        max_binding: client.properties().memory.max_page_size,
        max_groups_per_dim: MAX_GROUPS_PER_DIM,
    };
    problem_layout(
        params.shape,
        params.kind,
        &params.options,
        strategy(&client, params),
        params.pass_columns,
        limits,
    )
    .map(|_| ())
}

/// Checks an `[n, d] × [m, d]` cosine similarity against the device's limits (as
/// [`check_problem`] does for the loss).
pub(crate) fn check_similarity(
    device: &cubecl::Device,
    n: usize,
    m: usize,
    d: usize,
) -> Result<()> {
    let client = device.client();
    let to_u32 = |v: usize, what: &str| {
        u32::try_from(v).map_err(|_| Error::InvalidShape(format!("{what} = {v} is too large")))
    };
    crate::kernels::similarity::check_problem(
        to_u32(n, "n")?,
        to_u32(m, "m")?,
        to_u32(d, "dim")?,
        client.properties().memory.max_page_size,
        MAX_GROUPS_PER_DIM,
    )
    .map(|_| ())
}

/// The kernels' parameter block for the pass over contrast rows `pass`. On this path a
/// non-finite feature row makes the loss and the gradient NaN, as Burn's own ops do.
fn params_handle(
    like: &CubeTensor,
    params: &LossParams,
    pass: (u32, u32),
) -> cubecl::server::Handle {
    let block = kernel_params(params.shape, params.kind, &params.options)
        .nan_on_non_finite()
        .for_pass(pass);
    like.client.create_from_slice(bytemuck::bytes_of(&block))
}

/// Launches `supcon_prepare`: `(inv_norm [N], z [N, 4·⌈dim/4⌉])` of contiguous f32 features.
fn prepare(
    x: &CubeTensor,
    params: &LossParams,
    p: &cubecl::server::Handle,
) -> (CubeTensor, CubeTensor) {
    let rows = params.shape.rows();
    let inv_norm = empty_f32(x, Shape::new([rows as usize]));
    let z = empty_f32(
        x,
        Shape::new([rows as usize, 4 * z_stride(params.shape.dim) as usize]),
    );
    launch(
        PREPARE,
        x,
        CubeDim::new_1d(256),
        rows.div_ceil(256),
        vec![
            p.clone().binding(),
            x.handle.clone().binding(),
            inv_norm.handle.clone().binding(),
            z.handle.clone().binding(),
        ],
    );
    (inv_norm, z)
}

impl SupConBackend for CubeBackend {
    fn cosine_similarity(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        check_runtime(&a, "cosine_similarity");
        let (a, b) = (f32_contiguous(a), f32_contiguous(b));
        let (n, d) = (a.meta.shape()[0], a.meta.shape()[1]);
        let m = b.meta.shape()[0];
        let out = empty_f32(&a, Shape::new([n, m]));
        let params: [u32; 4] = [n as u32, m as u32, d as u32, 0];
        let params = a.client.create_from_slice(bytemuck::cast_slice(&params));
        let groups = (n as u64).div_ceil(64) * (m as u64).div_ceil(64);
        let (kernel, cube_dim) = match device_strategy(&a.client) {
            Strategy::Tiles => (SIMILARITY, CubeDim::new_2d(16, 16)),
            Strategy::Direct => (SIMILARITY_DIRECT, CubeDim::new_2d(8, 8)),
        };
        launch(
            kernel,
            &a,
            cube_dim,
            groups,
            vec![
                params.binding(),
                a.handle.clone().binding(),
                b.handle.clone().binding(),
                out.handle.clone().binding(),
            ],
        );
        out
    }

    fn supcon_forward(
        features: FloatTensor<Self>,
        positives: IntTensor<Self>,
        params: LossParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        check_runtime(&features, "supcon_forward");
        let x = f32_contiguous(features);
        let pos = positives_contiguous(positives, params.kind);
        let n_anchors = params.n_anchors();
        let stats = empty_f32(&x, Shape::new([n_anchors, 4]));
        let output = empty_f32(&x, Shape::new([4]));
        let passes = params.passes();
        let running = empty_f32(
            &x,
            Shape::new([running_len(n_anchors as u64, passes.len()) as usize]),
        );
        let p = params_handle(&x, &params, passes[0]);
        let (inv_norm, z) = prepare(&x, &params, &p);
        let (kernel, cube_dim) = match strategy(&x.client, &params) {
            Strategy::Tiles => (FORWARD, CubeDim::new_2d(16, 16)),
            Strategy::Direct => (FORWARD_DIRECT, CubeDim::new_2d(8, 8)),
        };
        for pass in &passes {
            launch(
                kernel,
                &x,
                cube_dim,
                (n_anchors as u64).div_ceil(64),
                vec![
                    params_handle(&x, &params, *pass).binding(),
                    z.handle.clone().binding(),
                    pos.handle.clone().binding(),
                    stats.handle.clone().binding(),
                    running.handle.clone().binding(),
                ],
            );
        }
        launch(
            REDUCE,
            &x,
            CubeDim::new_1d(256),
            1,
            vec![
                p.binding(),
                inv_norm.handle.clone().binding(),
                stats.handle.clone().binding(),
                output.handle.clone().binding(),
            ],
        );
        (stats, inv_norm, output)
    }

    fn supcon_backward(
        features: FloatTensor<Self>,
        positives: IntTensor<Self>,
        inv_norm: FloatTensor<Self>,
        anchor_stats: FloatTensor<Self>,
        output: FloatTensor<Self>,
        params: LossParams,
    ) -> FloatTensor<Self> {
        check_runtime(&features, "supcon_backward");
        let shape = features.meta.shape().clone();
        let dtype = features.dtype;
        let x = f32_contiguous(features);
        let pos = positives_contiguous(positives, params.kind);
        let grad = empty_f32(&x, shape);
        let strategy = strategy(&x.client, &params);
        let (passes, weights_bytes) = backward_passes(
            strategy,
            params.shape,
            &params.passes(),
            params.pass_columns,
        );
        let row_dot = empty_f32(
            &x,
            Shape::new([row_dot_len(strategy, params.shape.rows(), passes.len()) as usize]),
        );
        let (inv_norm, anchor_stats, output) = (
            into_contiguous(inv_norm),
            into_contiguous(anchor_stats),
            into_contiguous(output),
        );
        // The normalised rows again (O(N·D), cheaper than keeping the forward's copy alive).
        let (_, z) = prepare(&x, &params, &params_handle(&x, &params, passes[0]));
        let weights = empty_f32(&x, Shape::new([weights_bytes as usize / 4]));
        let row_blocks = params.shape.rows().div_ceil(64);
        let groups = row_blocks * u64::from(params.shape.dim).div_ceil(128);
        for pass in passes {
            let p = params_handle(&x, &params, pass);
            match strategy {
                Strategy::Tiles => launch(
                    BACKWARD,
                    &x,
                    CubeDim::new_2d(16, 16),
                    groups,
                    vec![
                        p.binding(),
                        z.handle.clone().binding(),
                        pos.handle.clone().binding(),
                        inv_norm.handle.clone().binding(),
                        anchor_stats.handle.clone().binding(),
                        output.handle.clone().binding(),
                        grad.handle.clone().binding(),
                        row_dot.handle.clone().binding(),
                    ],
                ),
                Strategy::Direct => {
                    launch(
                        BACKWARD_WEIGHTS,
                        &x,
                        CubeDim::new_2d(8, 8),
                        row_blocks,
                        vec![
                            p.clone().binding(),
                            z.handle.clone().binding(),
                            pos.handle.clone().binding(),
                            anchor_stats.handle.clone().binding(),
                            output.handle.clone().binding(),
                            weights.handle.clone().binding(),
                            row_dot.handle.clone().binding(),
                        ],
                    );
                    launch(
                        BACKWARD_APPLY,
                        &x,
                        CubeDim::new_2d(8, 8),
                        groups,
                        vec![
                            p.binding(),
                            z.handle.clone().binding(),
                            inv_norm.handle.clone().binding(),
                            output.handle.clone().binding(),
                            weights.handle.clone().binding(),
                            grad.handle.clone().binding(),
                            row_dot.handle.clone().binding(),
                        ],
                    );
                }
            }
        }
        // The gradient in the features' own dtype (the kernels compute in f32).
        if dtype == DType::F32 {
            grad
        } else {
            CubeBackend::float_cast(grad, FloatDType::from(dtype))
        }
    }
}
