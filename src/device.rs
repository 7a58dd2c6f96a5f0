//! Device acquisition, kept apart from compute: the kernels only ever take `&wgpu::Device` and
//! `&wgpu::Queue`. This module is a convenience for programs and tests that do not already own a
//! device.

use crate::{Error, Result};

/// An adapter, its device and queue.
pub struct GpuContext {
    /// The wgpu instance the adapter came from.
    pub instance: wgpu::Instance,
    /// The adapter (the physical device).
    pub adapter: wgpu::Adapter,
    /// The logical device the kernels run on.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
}

impl GpuContext {
    /// `"name (backend, device type)"`, for logs and benchmark tables.
    pub fn describe(&self) -> String {
        let info = self.adapter.get_info();
        format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
    }
}

/// Finds an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`) and
/// requests a device with the given limits. Pass [`wgpu::Limits::default()`] (WebGPU's defaults,
/// what the kernels are written for) unless a larger problem needs more; [`Limits::Adapter`]
/// requests everything the adapter offers.
pub fn request_device(limits: Limits) -> Result<GpuContext> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .map_err(|e| Error::NoAdapter(e.to_string()))?;
    let required_limits = match limits {
        Limits::WebGpuDefault => wgpu::Limits::default(),
        Limits::Adapter => adapter.limits(),
        Limits::Custom(l) => *l,
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("supcon-wgpu"),
        required_limits,
        ..Default::default()
    }))
    .map_err(|e| Error::RequestDevice(e.to_string()))?;
    Ok(GpuContext {
        instance,
        adapter,
        device,
        queue,
    })
}

/// Which limits [`request_device`] asks for.
#[derive(Clone, Debug)]
pub enum Limits {
    /// WebGPU's default limits (16 KiB workgroup memory, 128 MiB storage bindings, 65,535
    /// workgroups per dimension): what every kernel here is written to run within.
    WebGpuDefault,
    /// Everything the adapter supports (larger bindings for large N).
    Adapter,
    /// Exactly these.
    Custom(Box<wgpu::Limits>),
}
