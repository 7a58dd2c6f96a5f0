//! [`SupConBackend`] on burn-wgpu: the `.wgsl` files launched through Burn's raw-kernel path,
//! or as plain wgpu dispatches on the device's own handles.
//!
//! Where cubecl compiles Burn's kernels to WGSL it takes the kernels as source kernels. Burn's
//! `vulkan` / `metal` features make it compile to SPIR-V / MSL, and it rejects a WGSL source
//! kernel there: on a device made by [`super::device::burn_device`] (which records its wgpu
//! handles) the same plan runs as wgpu dispatches on the tensors' buffers instead
//! ([`RawDevice`]). On any other cubecl runtime (CUDA, ROCm, CPU), or a SPIR-V / MSL device Burn
//! made itself, the operations panic with a message that says so; the high-level
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

use std::sync::{Arc, Mutex};

use super::ops::{LossParams, SupConBackend};
use crate::Result;
use crate::error::to_u32;
use crate::kernels::Kernel;
use crate::kernels::plan::{
    Dispatch, KernelSpec, Role, SupConLaunch, similarity_launch, supcon_launch,
};
use crate::kernels::supcon::{
    Pass, PositiveKind, ProblemLimits, Strategy, kernel_params, z_stride,
};

/// A kernel of [`crate::kernels::plan`] as a Burn source kernel (entry point `main`).
#[derive(Debug, Clone, Copy)]
struct WgslKernel(&'static KernelSpec);

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.0.source)
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0.name)
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Workgroups per grid dimension every WebGPU device allows.
const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// The application's wgpu handles under a Burn device that [`super::device::burn_device`] made,
/// with the kernels' pipelines built on them once.
///
/// cubecl runs a WGSL source kernel only where it compiles Burn's own kernels to WGSL; with
/// Burn's `vulkan` (SPIR-V) or `metal` (MSL) compiler it refuses one. There the kernels run as
/// plain wgpu dispatches on the same `wgpu::Device` and `Queue`, on the tensors' own buffers
/// (cubecl's resources): the same WGSL, the same launch plan, the same bindings.
pub(crate) struct RawDevice {
    device: wgpu::Device,
    queue: wgpu::Queue,
    kernels: Mutex<Vec<Kernel>>,
}

impl RawDevice {
    /// The pipeline of `spec`, built on first use.
    fn kernel(&self, spec: &'static KernelSpec) -> Kernel {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kernels.iter().find(|k| k.spec.name == spec.name) {
            return k.clone();
        }
        let kernel = Kernel::new(&self.device, spec);
        kernels.push(kernel.clone());
        kernel
    }
}

/// Every registered device's handles, by its cubecl device.
static RAW_DEVICES: Mutex<Vec<(cubecl::Device, Arc<RawDevice>)>> = Mutex::new(Vec::new());

/// Records the wgpu handles under the Burn device `cube` (registered by
/// [`super::device::burn_device`]).
pub(crate) fn register_raw(cube: cubecl::Device, device: wgpu::Device, queue: wgpu::Queue) {
    let mut all = RAW_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(d, _)| *d != cube);
    all.push((
        cube,
        Arc::new(RawDevice {
            device,
            queue,
            kernels: Mutex::new(Vec::new()),
        }),
    ));
}

/// The registered handles of `cube`, if any.
fn raw_device(cube: &cubecl::Device) -> Option<Arc<RawDevice>> {
    let all = RAW_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .find(|(d, _)| d == cube)
        .map(|(_, raw)| raw.clone())
}

/// Whether cubecl compiles this client's kernels to WGSL (and so accepts the WGSL source
/// kernels).
fn compiles_wgsl(client: &Client) -> bool {
    client.name().ends_with("<wgsl>")
}

/// Whether the kernels can run on `cube`: Burn's wgpu runtime with its WGSL compiler, or with
/// another compiler on a device whose wgpu handles are registered.
pub(crate) fn runs_kernels(cube: &cubecl::Device) -> bool {
    cube.runtime() == RuntimeId::Wgpu
        && (compiles_wgsl(&cube.client()) || raw_device(cube).is_some())
}

/// Launches `dispatches` in order, binding to each role the handle `handle` gives for it:
/// through cubecl's source-kernel path where it compiles WGSL, else as wgpu dispatches on the
/// device's registered handles ([`RawDevice`]).
fn launch_all(
    reference: &CubeTensor,
    dispatches: &[Dispatch],
    handle: impl FnMut(Role) -> cubecl::server::Handle,
) {
    if compiles_wgsl(&reference.client) {
        return launch_source(reference, dispatches, handle);
    }
    let raw = raw_device(&reference.device).unwrap_or_else(|| {
        panic!(
            "supcon-wgpu: this Burn device compiles to {} and was not made by \
             supcon_wgpu::backend::device::burn_device (or request_burn_device), so the WGSL \
             kernels have no wgpu handles to run on; make the device with one of those, or use \
             Implementation::Composed",
            reference.client.name()
        )
    });
    launch_raw(&raw, &reference.client, dispatches, handle);
}

/// [`launch_all`] as wgpu dispatches on `raw`: each binding is the buffer range cubecl holds
/// for its tensor (`get_resource` runs the work that writes it first); cubecl's recorded work
/// is submitted before the dispatches, so the one queue orders them after what produced their
/// inputs and before whatever reads their outputs.
fn launch_raw(
    raw: &RawDevice,
    client: &Client,
    dispatches: &[Dispatch],
    mut handle: impl FnMut(Role) -> cubecl::server::Handle,
) {
    type Server = cubecl::wgpu::WgpuServer<cubecl::wgpu::AutoCompiler>;
    let mut encoder = raw
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("supcon-wgpu"),
        });
    // Held until the submission: a held resource's allocation is not handed out again.
    let mut held = Vec::new();
    for d in dispatches {
        let resources = d
            .bindings
            .iter()
            .map(|role| {
                client
                    .get_resource::<Server>(handle(*role))
                    .unwrap_or_else(|e| panic!("supcon-wgpu: the buffer of {role:?}: {e:?}"))
            })
            .collect::<Vec<_>>();
        let bindings: Vec<wgpu::BufferBinding> = resources
            .iter()
            .map(|managed| {
                let r = managed.resource();
                wgpu::BufferBinding {
                    buffer: &r.buffer,
                    offset: r.offset,
                    // wgpu wants binding sizes in whole words (cubecl pads its own likewise).
                    size: std::num::NonZeroU64::new(r.size.next_multiple_of(4)),
                }
            })
            .collect();
        raw.kernel(d.kernel)
            .dispatch(&raw.device, &mut encoder, d.groups, &bindings)
            .unwrap_or_else(|e| panic!("supcon-wgpu: {e}"));
        held.push(resources);
    }
    client
        .flush()
        .unwrap_or_else(|e| panic!("supcon-wgpu: flushing Burn's work before the loss: {e:?}"));
    raw.queue.submit([encoder.finish()]);
    drop(held);
}

/// [`launch_all`] through cubecl's source-kernel path (its WGSL compiler).
fn launch_source(
    reference: &CubeTensor,
    dispatches: &[Dispatch],
    mut handle: impl FnMut(Role) -> cubecl::server::Handle,
) {
    for d in dispatches {
        let [x, y, z] = d.kernel.workgroup_size;
        let (gx, gy) = crate::kernels::grid(d.kernel.name, d.groups, MAX_GROUPS_PER_DIM)
            .unwrap_or_else(|e| panic!("supcon-wgpu: {e}"));
        let buffers = d.bindings.iter().map(|r| handle(*r).binding()).collect();
        reference.client.launch(
            Box::new(SourceKernel::new(
                WgslKernel(d.kernel),
                CubeDim::new_3d(x, y, z),
            )),
            CubeCount::Static(gx, gy, 1),
            KernelArguments::new().with_buffers(buffers),
        );
    }
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

/// The device's strategy by the raw API's rule, [`Strategy::for_device_type`]. cubecl's client
/// does not expose the wgpu adapter; cubecl-wgpu reports no physical card exactly for an adapter
/// of type `wgpu::DeviceType::Cpu` (lavapipe and the like), so that is the type passed for it,
/// and `Other` (which the rule treats as every GPU type) otherwise.
fn device_strategy(client: &Client) -> Strategy {
    Strategy::for_device_type(if client.properties().identity.physical.is_none() {
        wgpu::DeviceType::Cpu
    } else {
        wgpu::DeviceType::Other
    })
}

/// The strategy in force: the one asked for, else the device's.
fn strategy(client: &Client, params: &LossParams) -> Strategy {
    params.strategy.unwrap_or_else(|| device_strategy(client))
}

/// Checks a problem against the device's limits before anything is launched: the raw API's
/// checks ([`LossParams::check`]), with the largest buffer cubecl allocates (its page size, the
/// device's `max_storage_buffer_binding_size` or less) as the binding limit.
pub(crate) fn check_problem(device: &cubecl::Device, params: &LossParams) -> Result<()> {
    let client = device.client();
    let limits = ProblemLimits {
        max_binding: client.properties().memory.max_page_size,
        max_groups_per_dim: MAX_GROUPS_PER_DIM,
    };
    params.check(strategy(&client, params), limits)
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
    crate::kernels::similarity::check_problem(
        device_strategy(&client),
        to_u32(n, "n")?,
        to_u32(m, "m")?,
        to_u32(d, "dim")?,
        client.properties().memory.max_page_size,
        MAX_GROUPS_PER_DIM,
    )
    .map(|_| ())
}

/// The launch plan of a loss call on this path: its backward list starts by recomputing the
/// normalised rows (O(N·D), cheaper than keeping the forward's copy alive).
fn launch_plan(client: &Client, params: &LossParams) -> SupConLaunch {
    supcon_launch(
        params.shape,
        params.kind,
        &params.options,
        strategy(client, params),
        params.columns(),
        true,
    )
}

/// The kernels' parameter blocks of a plan's passes, each uploaded when a dispatch first binds
/// it. On this path a non-finite feature row makes the loss and the gradient NaN, as Burn's own
/// ops do.
struct ParamBlocks<'a> {
    like: &'a CubeTensor,
    params: &'a LossParams,
    passes: &'a [Pass],
    handles: Vec<Option<cubecl::server::Handle>>,
}

impl<'a> ParamBlocks<'a> {
    fn new(like: &'a CubeTensor, params: &'a LossParams, plan: &'a SupConLaunch) -> Self {
        ParamBlocks {
            like,
            params,
            passes: &plan.passes,
            handles: vec![None; plan.passes.len()],
        }
    }

    /// The block of pass `i` ([`Role::Params`]).
    fn get(&mut self, i: usize) -> cubecl::server::Handle {
        let (like, params, pass) = (self.like, self.params, self.passes[i]);
        self.handles[i]
            .get_or_insert_with(|| {
                let block = kernel_params(params.shape, params.kind, &params.options)
                    .nan_on_non_finite()
                    .for_pass(pass);
                like.client.create_from_slice(bytemuck::bytes_of(&block))
            })
            .clone()
    }
}

/// The tensors a loss direction binds, by [`Role`]; `None` for a role its dispatches never bind
/// (`partials` and `running` only forward; `discard`, `grad`, `row_dot` and `scratch` only
/// backward).
struct LossTensors<'a> {
    features: &'a CubeTensor,
    keys: &'a CubeTensor,
    positives: &'a CubeTensor,
    inv_norm: &'a CubeTensor,
    z: &'a CubeTensor,
    anchor_stats: &'a CubeTensor,
    output: &'a CubeTensor,
    partials: Option<&'a CubeTensor>,
    running: Option<&'a CubeTensor>,
    discard: Option<&'a CubeTensor>,
    grad: Option<&'a CubeTensor>,
    row_dot: Option<&'a CubeTensor>,
    scratch: Option<&'a CubeTensor>,
}

/// Launches `dispatches` of `plan` in order, binding each role to its tensor of `t`.
fn launch_loss(
    params: &LossParams,
    plan: &SupConLaunch,
    dispatches: &[Dispatch],
    t: &LossTensors<'_>,
) {
    let mut blocks = ParamBlocks::new(t.features, params, plan);
    let bound = |tensor: Option<&CubeTensor>, role: Role| match tensor {
        Some(tensor) => tensor.handle.clone(),
        None => unreachable!("{role:?} bound by a dispatch of the other direction"),
    };
    launch_all(t.features, dispatches, |role| match role {
        Role::Params(i) => blocks.get(i),
        Role::Features => t.features.handle.clone(),
        Role::Keys => t.keys.handle.clone(),
        Role::Positives => t.positives.handle.clone(),
        Role::InvNorm => t.inv_norm.handle.clone(),
        Role::Z => t.z.handle.clone(),
        Role::AnchorStats => t.anchor_stats.handle.clone(),
        Role::Output => t.output.handle.clone(),
        Role::Partials => bound(t.partials, role),
        Role::Running => bound(t.running, role),
        Role::Discard => bound(t.discard, role),
        Role::Grad => bound(t.grad, role),
        Role::RowDot => bound(t.row_dot, role),
        Role::Scratch => bound(t.scratch, role),
        Role::A | Role::B | Role::Similarity => {
            unreachable!("{role:?}: a similarity role in a SupCon dispatch")
        }
    });
}

/// `z`, the normalised rows and keys: `[N + K, 4·⌈dim/4⌉]` f32s.
fn empty_z(like: &CubeTensor, params: &LossParams) -> CubeTensor {
    let rows = params.shape.contrast_rows() as usize;
    empty_f32(
        like,
        Shape::new([rows, 4 * z_stride(params.shape.dim) as usize]),
    )
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
        let dispatch = similarity_launch(device_strategy(&a.client), n as u32, m as u32);
        launch_all(&a, &[dispatch], |role| match role {
            Role::Params(_) => params.clone(),
            Role::A => a.handle.clone(),
            Role::B => b.handle.clone(),
            Role::Similarity => out.handle.clone(),
            other => unreachable!("{other:?} in a similarity dispatch"),
        });
        out
    }

    fn supcon_forward(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        positives: IntTensor<Self>,
        params: LossParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        check_runtime(&features, "supcon_forward");
        let x = f32_contiguous(features);
        let keys = f32_contiguous(keys);
        let pos = positives_contiguous(positives, params.kind);
        let plan = launch_plan(&x.client, &params);
        let n_anchors = params.n_anchors();
        let stats = empty_f32(&x, Shape::new([n_anchors, 4]));
        let output = empty_f32(&x, Shape::new([4]));
        let partials = empty_f32(&x, Shape::new([plan.partials_len as usize]));
        let running = empty_f32(&x, Shape::new([plan.running_len as usize]));
        let inv_norm = empty_f32(&x, Shape::new([params.shape.contrast_rows() as usize]));
        let z = empty_z(&x, &params);
        let tensors = LossTensors {
            features: &x,
            keys: &keys,
            positives: &pos,
            inv_norm: &inv_norm,
            z: &z,
            anchor_stats: &stats,
            output: &output,
            partials: Some(&partials),
            running: Some(&running),
            discard: None,
            grad: None,
            row_dot: None,
            scratch: None,
        };
        launch_loss(&params, &plan, &plan.forward, &tensors);
        (stats, inv_norm, output)
    }

    fn supcon_backward(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
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
        let keys = f32_contiguous(keys);
        let pos = positives_contiguous(positives, params.kind);
        let grad = empty_f32(&x, shape);
        let plan = launch_plan(&x.client, &params);
        let row_dot = empty_f32(&x, Shape::new([plan.row_dot_len as usize]));
        let (inv_norm, anchor_stats, output) = (
            into_contiguous(inv_norm),
            into_contiguous(anchor_stats),
            into_contiguous(output),
        );
        let discard = empty_f32(&x, Shape::new([params.shape.contrast_rows() as usize]));
        let z = empty_z(&x, &params);
        let scratch = empty_f32(&x, Shape::new([plan.scratch_bytes as usize / 4]));
        let tensors = LossTensors {
            features: &x,
            keys: &keys,
            positives: &pos,
            inv_norm: &inv_norm,
            z: &z,
            anchor_stats: &anchor_stats,
            output: &output,
            partials: None,
            running: None,
            discard: Some(&discard),
            grad: Some(&grad),
            row_dot: Some(&row_dot),
            scratch: Some(&scratch),
        };
        launch_loss(&params, &plan, &plan.backward, &tensors);
        // The gradient in the features' own dtype (the kernels compute in f32).
        if dtype == DType::F32 {
            grad
        } else {
            CubeBackend::float_cast(grad, FloatDType::from(dtype))
        }
    }
}
