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
/// ```rust,ignore
/// let (device, queue) = adapter.request_device(&wgpu::DeviceDescriptor {
///     required_features: supcon_wgpu::backend::device::burn_features(&adapter),
///     required_limits: adapter.limits(),
///     ..Default::default()
/// }).await?;
/// let burn_device = supcon_wgpu::backend::device::burn_device(instance, adapter, device, queue)?;
/// ```
///
/// The application keeps using its queue; flush Burn's pending work (`burn_device.sync()`)
/// before it reads buffers that Burn wrote. Register a setup once and clone the returned device.
pub fn burn_device(
    instance: wgpu::Instance,
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
) -> Result<Device> {
    let backend = adapter.get_info().backend;
    Device::wgpu_options()
        .setup(WgpuSetup {
            instance,
            adapter,
            device,
            queue,
            backend,
        })
        .init()
        .map_err(|e| Error::Unsupported(format!("Burn could not adopt the wgpu device: {e}")))
}

/// Finds an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`,
/// preferring a high-performance GPU), requests a device with everything Burn needs, and
/// returns the Burn device on it with the adapter's description.
pub fn request_burn_device() -> Result<(Device, wgpu::AdapterInfo)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .map_err(|e| Error::NoAdapter(e.to_string()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("supcon-wgpu (Burn)"),
        required_features: burn_features(&adapter),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| Error::RequestDevice(e.to_string()))?;
    let info = adapter.get_info();
    Ok((burn_device(instance, adapter, device, queue)?, info))
}
