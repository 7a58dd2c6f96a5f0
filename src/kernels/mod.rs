//! The WGSL kernels on the caller's own `wgpu::Device`, `Queue`, buffers and `CommandEncoder`.
//!
//! - [`similarity`]: pairwise cosine similarity, [`CosineSimilarity`](similarity::CosineSimilarity).
//! - [`supcon`]: the fused, streaming SupCon loss and its gradient,
//!   [`SupConLoss`](supcon::SupConLoss).
//!
//! Each kernel family has its f64 CPU reference beside it ([`similarity::reference`],
//! [`supcon::reference`]). The WGSL text lives in `shaders/` and is embedded here
//! ([`shaders`]): each kernel is one plain WGSL string, its file joined after the library files
//! in `shaders/lib/` that it uses.

pub(crate) mod plan;
pub mod similarity;
pub mod supcon;

use crate::{Error, Result};

/// The WGSL source of every kernel, embedded from `shaders/`: one plain string each, the kernel's
/// file joined after the library files of `shaders/lib/` it uses (the list its first comment
/// gives; `tests/suite/shaders.rs` checks that the two agree). Each kernel has one entry point, `main`
/// (the name Burn's raw-kernel path launches), and declares every storage binding `read_write`
/// (Burn pools tensors in shared buffers; a read-only binding then fails validation).
pub mod shaders {
    /// The concatenation of files under `shaders/`, in order.
    macro_rules! join {
        ($($file:literal),+ $(,)?) => {
            concat!($(include_str!(concat!("../../shaders/", $file))),+)
        };
    }

    /// Pairwise cosine similarity (`Strategy::Tiles`).
    pub const COSINE_SIMILARITY: &str = join!(
        "lib/similarity.wgsl",
        "lib/normalize.wgsl",
        "lib/uniform_params.wgsl",
        "cosine_similarity.wgsl",
    );
    /// Pairwise cosine similarity with `Strategy::Direct`.
    pub const COSINE_SIMILARITY_DIRECT: &str = join!(
        "lib/similarity.wgsl",
        "lib/normalize.wgsl",
        "lib/uniform_params.wgsl",
        "cosine_similarity_direct.wgsl",
    );
    /// SupCon step 1: inverse row norms and the non-finite check.
    pub const SUPCON_PREPARE: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/normalize.wgsl",
        "supcon_prepare.wgsl",
    );
    /// SupCon step 2: streaming forward pass (per-anchor statistics and losses;
    /// `Strategy::Tiles`).
    pub const SUPCON_FORWARD: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/uniform_params.wgsl",
        "lib/supcon_forward_step.wgsl",
        "lib/supcon_rows.wgsl",
        "supcon_forward.wgsl",
    );
    /// SupCon step 2 with `Strategy::Direct`: the same, without barriers in its loop.
    pub const SUPCON_FORWARD_DIRECT: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/uniform_params.wgsl",
        "lib/supcon_forward_step.wgsl",
        "lib/supcon_rows.wgsl",
        "lib/supcon_direct.wgsl",
        "supcon_forward_direct.wgsl",
    );
    /// SupCon step 2b: the splits' statistics folded in order into each anchor's.
    pub const SUPCON_MERGE: &str = join!("lib/supcon_host.wgsl", "supcon_merge.wgsl");
    /// SupCon step 3: the scalar loss, anchor weight and status word.
    pub const SUPCON_REDUCE: &str = join!("lib/supcon_host.wgsl", "supcon_reduce.wgsl");
    /// SupCon step 4: the raw gradient sums of each split of the contrast rows
    /// (`Strategy::Tiles`).
    pub const SUPCON_BACKWARD: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/uniform_params.wgsl",
        "lib/supcon_stats.wgsl",
        "lib/supcon_rows.wgsl",
        "supcon_backward.wgsl",
    );
    /// SupCon step 4b (`Strategy::Tiles`): the splits added in order, the normalisation's
    /// projection, the gradient in the caller's layout.
    pub const SUPCON_BACKWARD_MERGE: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/normalize.wgsl",
        "supcon_backward_merge.wgsl",
    );
    /// SupCon step 4a with `Strategy::Direct`: one pass's weights W_rj, transposed.
    pub const SUPCON_BACKWARD_WEIGHTS: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/uniform_params.wgsl",
        "lib/supcon_stats.wgsl",
        "lib/supcon_rows.wgsl",
        "lib/supcon_direct.wgsl",
        "supcon_backward_weights.wgsl",
    );
    /// SupCon step 4b with `Strategy::Direct`: the gradient from those weights.
    pub const SUPCON_BACKWARD_APPLY: &str = join!(
        "lib/supcon_host.wgsl",
        "lib/normalize.wgsl",
        "lib/uniform_params.wgsl",
        "supcon_backward_apply.wgsl",
    );

    /// `(file name, source)` of every shader.
    pub const ALL: &[(&str, &str)] = &[
        ("cosine_similarity.wgsl", COSINE_SIMILARITY),
        ("cosine_similarity_direct.wgsl", COSINE_SIMILARITY_DIRECT),
        ("supcon_prepare.wgsl", SUPCON_PREPARE),
        ("supcon_forward.wgsl", SUPCON_FORWARD),
        ("supcon_forward_direct.wgsl", SUPCON_FORWARD_DIRECT),
        ("supcon_merge.wgsl", SUPCON_MERGE),
        ("supcon_reduce.wgsl", SUPCON_REDUCE),
        ("supcon_backward.wgsl", SUPCON_BACKWARD),
        ("supcon_backward_merge.wgsl", SUPCON_BACKWARD_MERGE),
        ("supcon_backward_weights.wgsl", SUPCON_BACKWARD_WEIGHTS),
        ("supcon_backward_apply.wgsl", SUPCON_BACKWARD_APPLY),
    ];
}

/// A compute pipeline of one [`KernelSpec`](plan::KernelSpec) with its explicit bind-group
/// layout: `spec.bindings` storage buffers, all `read_write`, at group 0, bindings
/// 0..spec.bindings.
#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    pub spec: &'static plan::KernelSpec,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    pub fn new(device: &wgpu::Device, spec: &'static plan::KernelSpec) -> Self {
        let name = spec.name;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..spec.bindings)
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(spec.source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel {
            spec,
            pipeline,
            layout,
        }
    }

    /// The pipeline of `spec` among `kernels` (one per spec, kernel names are unique).
    pub fn find<'a>(kernels: &'a [Kernel], spec: &plan::KernelSpec) -> &'a Kernel {
        kernels
            .iter()
            .find(|k| k.spec.name == spec.name)
            .unwrap_or_else(|| panic!("no pipeline for {}", spec.name))
    }

    /// Records one dispatch of `groups` workgroups (split over a 2-D grid when needed).
    pub fn dispatch(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        groups: u64,
        buffers: &[wgpu::BufferBinding<'_>],
    ) -> Result<()> {
        let name = self.spec.name;
        let (x, y) = grid(
            name,
            groups,
            device.limits().max_compute_workgroups_per_dimension,
        )?;
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(b.clone()),
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &self.layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(name),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }
}

/// Splits `groups` workgroups into an `(x, y)` grid with `x, y <= max_per_dim`; the shaders
/// linearise `workgroup_id` and skip the surplus of the last row.
pub fn grid(what: &'static str, groups: u64, max_per_dim: u32) -> Result<(u32, u32)> {
    let max = u64::from(max_per_dim.max(1));
    let groups = groups.max(1);
    let x = groups.min(max);
    let y = groups.div_ceil(x);
    if y > max {
        return Err(Error::TooManyWorkgroups {
            what,
            groups,
            limit: max_per_dim,
        });
    }
    Ok((x as u32, y as u32))
}

/// Checks a caller's buffer: usage flags, size, and the device's binding limit. Returns the
/// binding of its first `needed` bytes.
pub(crate) fn check_buffer<'a>(
    device: &wgpu::Device,
    name: &'static str,
    buffer: &'a wgpu::Buffer,
    needed: u64,
    usage: wgpu::BufferUsages,
) -> Result<wgpu::BufferBinding<'a>> {
    let missing = usage - buffer.usage();
    if !missing.is_empty() {
        return Err(Error::MissingUsage { name, missing });
    }
    if buffer.size() < needed {
        return Err(Error::BufferTooSmall {
            name,
            needed,
            got: buffer.size(),
        });
    }
    check_binding_size(device, name, needed)?;
    Ok(binding(buffer, needed))
}

pub(crate) fn check_binding_size(
    device: &wgpu::Device,
    name: &'static str,
    bytes: u64,
) -> Result<()> {
    check_binding_limit(name, bytes, device.limits().max_storage_buffer_binding_size)
}

/// [`Error::ExceedsBindingLimit`] when one storage binding of `bytes` exceeds `limit`.
pub(crate) fn check_binding_limit(name: &'static str, bytes: u64, limit: u64) -> Result<()> {
    if bytes > limit {
        return Err(Error::ExceedsBindingLimit {
            name,
            needed: bytes,
            limit,
        });
    }
    Ok(())
}

/// The first `bytes` bytes of `buffer` (at least 4: WGSL runtime arrays need one element).
pub(crate) fn binding(buffer: &wgpu::Buffer, bytes: u64) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: std::num::NonZeroU64::new(bytes.max(4)),
    }
}

/// Workgroup memory the kernels use at most (bytes); WebGPU's default limit is 16,384.
pub const WORKGROUP_MEMORY_BYTES: u32 = 13_376;

/// Fails when the device cannot run the kernels (workgroup size or memory below WebGPU's
/// defaults, which every WebGPU-conformant device meets).
pub(crate) fn check_device(device: &wgpu::Device) -> Result<()> {
    let l = device.limits();
    if l.max_compute_workgroup_storage_size < WORKGROUP_MEMORY_BYTES {
        return Err(Error::DeviceLimit(format!(
            "max_compute_workgroup_storage_size is {}, the kernels need {WORKGROUP_MEMORY_BYTES}",
            l.max_compute_workgroup_storage_size
        )));
    }
    if l.max_compute_invocations_per_workgroup < 256
        || l.max_compute_workgroup_size_x < 256
        || l.max_compute_workgroup_size_y < 16
    {
        return Err(Error::DeviceLimit(
            "the kernels need workgroups of 256 invocations (16 x 16 and 256 x 1)".into(),
        ));
    }
    if l.max_storage_buffers_per_shader_stage < 8 {
        return Err(Error::DeviceLimit(format!(
            "max_storage_buffers_per_shader_stage is {}, the kernels need 8",
            l.max_storage_buffers_per_shader_stage
        )));
    }
    Ok(())
}

/// Runs `f` inside a validation + out-of-memory error scope and turns a captured wgpu error into
/// [`Error::Wgpu`]. On wasm32 (WebGPU) a scope resolves only through the browser's event loop,
/// which a synchronous call cannot wait for: there `f` runs as it is, and a wgpu error reaches the
/// device's uncaptured-error handler.
#[cfg(target_arch = "wasm32")]
pub(crate) fn with_error_scope<T>(
    _device: &wgpu::Device,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    f()
}

/// Runs `f` inside a validation + out-of-memory error scope and turns a captured wgpu error into
/// [`Error::Wgpu`].
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn with_error_scope<T>(
    device: &wgpu::Device,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = f();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    if let Some(e) = validation.or(oom) {
        return Err(Error::Wgpu(e.to_string()));
    }
    result
}

/// Creates a storage buffer of `bytes` bytes (at least 4).
pub(crate) fn storage_buffer(
    device: &wgpu::Device,
    label: &str,
    bytes: u64,
    extra: wgpu::BufferUsages,
) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

/// Runs the future `body` inside a validation + out-of-memory error scope and turns a captured
/// wgpu error into [`Error::Wgpu`]. Works on every target: on wasm32 the scopes resolve through
/// the browser's event loop while the future is awaited.
pub(crate) async fn with_error_scope_async<T>(
    device: &wgpu::Device,
    body: impl Future<Output = Result<T>>,
) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = body.await;
    let validation = validation.pop().await;
    let oom = oom.pop().await;
    if let Some(e) = validation.or(oom) {
        return Err(Error::Wgpu(e.to_string()));
    }
    result
}

/// Copies the first `bytes` of `buffer` (which needs COPY_SRC) to the host: submits its own
/// command buffer, then waits for the mapping. On native targets the future blocks in
/// `device.poll` until the GPU is done (nothing else would drive the mapping); in a browser it
/// yields to the event loop. For the convenience calls and tests, never for a hot path.
pub(crate) async fn read_buffer_async<T: bytemuck::Pod>(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<T>> {
    let size = bytes.max(4).next_multiple_of(4);
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("supcon-wgpu readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder =
        device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
    queue.submit([encoder.finish()]);
    let (tx, rx) = futures_channel::oneshot::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Readback(e.to_string()))?;
    rx.await
        .map_err(|e| Error::Readback(e.to_string()))?
        .map_err(|e| Error::Readback(e.to_string()))?;
    let view = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    let n = bytes as usize / std::mem::size_of::<T>();
    let out = bytemuck::cast_slice::<u8, T>(&view[..n * std::mem::size_of::<T>()]).to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}

/// Creates a STORAGE | COPY_SRC buffer holding `data`.
pub(crate) fn upload<T: bytemuck::Pod>(
    device: &wgpu::Device,
    label: &str,
    data: &[T],
) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let mut padded;
    let contents = if bytes.len() < 4 || !bytes.len().is_multiple_of(4) {
        padded = bytes.to_vec();
        padded.resize(bytes.len().max(4).next_multiple_of(4), 0);
        &padded[..]
    } else {
        bytes
    };
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
    })
}

/// naga's view of WGSL declarations the host mirrors, for the unit tests that compare them with
/// the Rust side (supcon/layout.rs, similarity.rs).
#[cfg(test)]
pub(crate) mod wgsl_mirror {
    use std::collections::BTreeMap;

    /// The parsed and validated module of a WGSL source; panics with naga's message.
    pub fn module(name: &str, source: &str) -> naga::Module {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));
        module
    }

    /// `(member name, byte offset, type)` of every member of struct `name`, and its size in
    /// bytes. Scalar types are named as in Rust (`u32`, `f32`).
    pub fn struct_layout(module: &naga::Module, name: &str) -> (Vec<(String, u32, String)>, u32) {
        let inner = module
            .types
            .iter()
            .find(|(_, ty)| ty.name.as_deref() == Some(name))
            .map(|(_, ty)| &ty.inner)
            .unwrap_or_else(|| panic!("no struct {name}"));
        let naga::TypeInner::Struct { members, span } = inner else {
            panic!("{name} is not a struct: {inner:?}");
        };
        let members = members
            .iter()
            .map(|m| {
                let ty = match module.types[m.ty].inner {
                    naga::TypeInner::Scalar(s) => {
                        let kind = match s.kind {
                            naga::ScalarKind::Uint => "u",
                            naga::ScalarKind::Sint => "i",
                            naga::ScalarKind::Float => "f",
                            _ => "?",
                        };
                        format!("{kind}{}", u32::from(s.width) * 8)
                    }
                    ref other => format!("{other:?}"),
                };
                (m.name.clone().unwrap_or_default(), m.offset, ty)
            })
            .collect();
        (members, *span)
    }

    /// The Rust name of a field's type, given a closure that borrows the field.
    pub fn field_type<S, T>(_field: fn(&S) -> &T) -> String {
        std::any::type_name::<T>().to_string()
    }

    /// Every named module-scope constant with its value.
    pub fn constants(module: &naga::Module) -> BTreeMap<String, naga::Literal> {
        module
            .constants
            .iter()
            .map(|(_, c)| {
                let name = c.name.clone().expect("a named constant");
                match module.global_expressions[c.init] {
                    naga::Expression::Literal(value) => (name, value),
                    ref e => panic!("{name} is not a literal: {e:?}"),
                }
            })
            .collect()
    }

    /// `(field name, byte offset, type)` of every field of a struct, and its size in bytes: the
    /// Rust side of [`struct_layout`]. The fields are destructured without `..`, so a list that
    /// leaves one out does not compile.
    macro_rules! rust_layout {
        ($ty:ident { $($field:ident),+ $(,)? }) => {{
            let _every_field = |value: $ty| {
                let $ty { $($field: _),+ } = value;
            };
            (
                vec![$((
                    stringify!($field).to_string(),
                    std::mem::offset_of!($ty, $field) as u32,
                    $crate::kernels::wgsl_mirror::field_type(|v: &$ty| &v.$field),
                )),+],
                std::mem::size_of::<$ty>() as u32,
            )
        }};
    }
    pub(crate) use rust_layout;
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn grid_splits_over_two_dimensions() {
        assert_eq!(grid("t", 1, 65535).unwrap(), (1, 1));
        assert_eq!(grid("t", 65535, 65535).unwrap(), (65535, 1));
        assert_eq!(grid("t", 65536, 65535).unwrap(), (65535, 2));
        assert_eq!(grid("t", 9, 3).unwrap(), (3, 3));
        let (x, y) = grid("t", 1_000_003, 65535).unwrap();
        assert!(u64::from(x) * u64::from(y) >= 1_000_003 && y == 16);
        assert!(grid("t", 10, 3).is_err(), "3 x 3 cannot hold 10 groups");
    }
}
