//! Bring your own device: a Burn wgpu device on the application's own wgpu `Device` and `Queue`,
//! so that Burn, the kernels of [`crate::kernels`] and the application share one GPU context.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuSetup;

use crate::{Error, Result};

/// The features to request for a device that Burn adopts: every feature the adapter has except
/// `MAPPABLE_PRIMARY_BUFFERS` (Burn's own device request leaves it out too) and wgpu's
/// experimental features (mesh shaders, cooperative matrices, ray tracing pipelines: a device
/// request that names them fails unless experimental features are enabled, which is `unsafe`).
pub fn burn_features(adapter: &wgpu::Adapter) -> wgpu::Features {
    adapter.features().difference(
        wgpu::Features::MAPPABLE_PRIMARY_BUFFERS | wgpu::Features::all_experimental_mask(),
    )
}

/// Registers the application's wgpu handles with Burn and returns the Burn device that uses them.
///
/// Request the wgpu device with the features of [`burn_features`] and every limit the adapter
/// has (Burn's allocator needs the full limits):
///
/// ```no_run
/// use supcon_wgpu::backend::device::{burn_device, burn_features};
/// use supcon_wgpu::backend::fused_available;
/// use supcon_wgpu::{SupConLoss, wgpu};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The application's wgpu handles (`supcon_wgpu::wgpu` is the wgpu version Burn uses).
/// let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
/// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
/// let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
///     required_features: burn_features(&adapter),
///     required_limits: adapter.limits(),
///     ..Default::default()
/// }))?;
///
/// // Burn adopts clones of them; the application goes on using its own.
/// let burn = burn_device(instance, adapter, device.clone(), queue.clone())?;
/// assert!(fused_available(&burn)); // the loss in Burn takes the fused kernels on it
/// let raw = SupConLoss::new(&device)?; // and so do the raw kernels, on the same GPU context
/// # let _ = raw;
/// # Ok(())
/// # }
/// ```
///
/// The application keeps using its queue; flush Burn's pending work (`burn.sync()`) before it
/// reads buffers that Burn wrote. Register a setup once and clone the returned device: every
/// call makes a new Burn device, and Burn keeps each device (its memory pool and two cubecl
/// threads that poll its queue, waking every 150 µs even while idle: about 3 % of a CPU core
/// each, measured on lavapipe's host) until the process ends.
pub fn burn_device(
    instance: wgpu::Instance,
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
) -> Result<Device> {
    let backend = adapter.get_info().backend;
    let handles = (device.clone(), queue.clone());
    let burn = Device::wgpu_options()
        .setup(WgpuSetup {
            instance,
            adapter,
            device,
            queue,
            backend,
        })
        .init()
        .map_err(|e| Error::Unsupported(format!("Burn could not adopt the wgpu device: {e}")))?;
    // The fused ops run on these handles where cubecl compiles to SPIR-V or MSL.
    if let Some(cube) = super::loss::cube_device(&burn) {
        super::cube::register_raw(cube, handles.0, handles.1);
    }
    Ok(burn)
}

/// Finds an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`,
/// preferring a high-performance GPU), requests a device with everything Burn needs, and
/// returns the Burn device on it with the adapter's description. Each call makes a new device
/// that lives until the process ends (see [`burn_device`]): call it once and clone the device.
///
/// ```no_run
/// use burn::tensor::{Distribution, Int, Tensor};
/// use supcon_wgpu::backend::SupConLossConfig;
/// use supcon_wgpu::backend::device::{compiler_name, request_burn_device};
///
/// # fn main() -> supcon_wgpu::Result<()> {
/// let (device, adapter) = request_burn_device()?;
/// println!("{} through {}", adapter.name, compiler_name(&device).unwrap_or("?"));
///
/// let device = device.autodiff();
/// let normal = Distribution::Normal(0.0, 1.0);
/// let features = Tensor::<3>::random([256, 2, 128], normal, &device).require_grad();
/// let labels = Tensor::<1, Int>::arange(0..256, &device).remainder_scalar(10);
/// let loss = SupConLossConfig::new().try_init()?.try_forward(features.clone(), Some(labels))?;
/// let grads = loss.backward(); // the fused forward and backward kernels
/// assert!(features.grad(&grads).is_some());
/// # Ok(())
/// # }
/// ```
pub fn request_burn_device() -> Result<(Device, wgpu::AdapterInfo)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .map_err(|e| Error::NoAdapter(e.to_string()))?;
    device_on(instance, adapter)
}

/// The Burn device on a new wgpu device of `adapter`, with the adapter's description.
fn device_on(
    instance: wgpu::Instance,
    adapter: wgpu::Adapter,
) -> Result<(Device, wgpu::AdapterInfo)> {
    let info = adapter.get_info();
    // With Burn's SPIR-V compiler (feature `vulkan`), a Vulkan device as cubecl requests it:
    // SPIR-V passthrough and the extensions its kernels use (cooperative matrices, f16).
    #[cfg(feature = "vulkan")]
    if info.backend == wgpu::Backend::Vulkan {
        let requested =
            pollster::block_on(cubecl::wgpu::vulkan::try_request_vulkan_device(&adapter))
                .map_err(|e| Error::RequestDevice(format!("{}: {e}", info.name)))?;
        if let Some((device, queue)) = requested {
            return Ok((burn_device(instance, adapter, device, queue)?, info));
        }
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("supcon-wgpu (Burn)"),
        required_features: burn_features(&adapter),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| Error::RequestDevice(format!("{}: {e}", info.name)))?;
    Ok((burn_device(instance, adapter, device, queue)?, info))
}

/// Every adapter of the backends that `WGPU_BACKEND` names (default: all), in wgpu's order:
/// what the indices of [`request_burn_devices`] count.
pub fn adapters() -> Vec<wgpu::AdapterInfo> {
    let (instance, backends) = instance_from_env();
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

fn instance_from_env() -> (wgpu::Instance, wgpu::Backends) {
    let descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = descriptor.backends;
    (wgpu::Instance::new(descriptor), backends)
}

/// What `--devices all` means: the indices into [`adapters`] of every GPU of one backend — the
/// first of Vulkan, Metal, DX12 that has a GPU (a GPU shows up once per backend that drives it,
/// and this must not count one GPU twice), else GL's — or, where there is no GPU, the first
/// adapter alone.
pub fn all_adapter_indices() -> Vec<usize> {
    let infos = adapters();
    let gpu = |a: &wgpu::AdapterInfo| a.device_type != wgpu::DeviceType::Cpu;
    let order = [
        wgpu::Backend::Vulkan,
        wgpu::Backend::Metal,
        wgpu::Backend::Dx12,
        wgpu::Backend::Gl,
    ];
    for backend in order {
        let of_backend: Vec<usize> = (0..infos.len())
            .filter(|&i| infos[i].backend == backend && gpu(&infos[i]))
            .collect();
        if !of_backend.is_empty() {
            return of_backend;
        }
    }
    match infos.is_empty() {
        true => Vec::new(),
        false => vec![0],
    }
}

/// A Burn device for each index into [`adapters`], in order (the first is the main device of
/// [`DataParallel`](super::DataParallel)), each with its adapter's description. An index
/// given twice gets two devices on one adapter (each its own queue and memory pool: what the
/// tests use on a machine with one adapter). Every call makes new devices that live until the
/// process ends (see [`burn_device`]).
///
/// # Errors
/// [`Error::Devices`] for no index or an index no adapter has (the message lists the
/// adapters); [`Error::RequestDevice`] naming the adapter that refused a device.
pub fn request_burn_devices(indices: &[usize]) -> Result<Vec<(Device, wgpu::AdapterInfo)>> {
    let listing = |infos: &[wgpu::AdapterInfo]| {
        infos
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {} ({:?}, {:?})", a.name, a.backend, a.device_type))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if indices.is_empty() {
        return Err(Error::Devices(
            "no device was asked for (no index, or no adapter for `all`)".into(),
        ));
    }
    let infos = adapters();
    if let Some(&bad) = indices.iter().find(|&&i| i >= infos.len()) {
        return Err(Error::Devices(format!(
            "there is no adapter {bad}; the adapters are: {}",
            match infos.is_empty() {
                true => "none".to_string(),
                false => listing(&infos),
            }
        )));
    }
    indices
        .iter()
        .map(|&i| {
            // A fresh instance and adapter per device: WebGPU lets an adapter give one device.
            let (instance, backends) = instance_from_env();
            let adapter = pollster::block_on(instance.enumerate_adapters(backends))
                .into_iter()
                .nth(i)
                .ok_or_else(|| Error::Devices(format!("adapter {i} went away")))?;
            device_on(instance, adapter)
        })
        .collect()
}

/// What Burn can allocate on `device`, `None` on a device that is not Burn's wgpu runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The largest tensor: cubecl's page size, the device's
    /// `min(max_storage_buffer_binding_size, max_buffer_size)`.
    pub max_tensor_bytes: u64,
    /// The device's memory as cubecl reads it from the graphics API (the largest device-local
    /// heap under Burn's SPIR-V compiler); `None` where it has no figure (the WGSL compiler:
    /// WebGPU states no capacity).
    pub max_memory: Option<u64>,
    /// Whether the adapter is a CPU (lavapipe and the like), whose memory is the host's.
    pub is_cpu: bool,
}

/// The [`MemoryLimits`] of `device`.
pub fn memory_limits(device: &Device) -> Option<MemoryLimits> {
    let cube = super::loss::cube_device(device)?;
    let client = cube.client();
    let properties = client.properties();
    Some(MemoryLimits {
        max_tensor_bytes: properties.memory.max_page_size,
        max_memory: properties.memory.max_memory(),
        is_cpu: properties.identity.physical.is_none(),
    })
}

/// The name of the compiler cubecl uses on `device`, as cubecl names its runtime:
/// `wgpu<wgsl>`, `wgpu<spirv>` (Burn's `vulkan` feature on a Vulkan adapter) or `wgpu<msl>`;
/// `None` on a device that is not Burn's wgpu runtime.
pub fn compiler_name(device: &Device) -> Option<&'static str> {
    let cube = super::loss::cube_device(device)?;
    Some(cube.client().name())
}
