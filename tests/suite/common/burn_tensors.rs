//! Burn test helpers shared by the Burn suites: devices, input tensors, one forward + backward.

use super::{Computed, gpu};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use supcon_wgpu::backend::SupConLoss;
use supcon_wgpu::{Positives, SupConShape};

/// The one Burn wgpu device (not autodiff) of the GPU tests, or a clear skip (a failure under
/// CI=true), as the other GPU tests: made once per process on the crate's own wgpu handles
/// (`request_burn_device`), so that in a build with Burn's SPIR-V compiler (feature `vulkan`) the
/// fused ops run on it too. Shared because every Burn device keeps two cubecl runner threads for
/// the rest of the process, which wake every 150 µs even when idle (about 3 % of a core each
/// here): a device per test left dozens of them taking CPU from the later tests.
pub fn shared_device() -> Option<Device> {
    Some(shared_device_and_adapter()?.0)
}

/// [`shared_device`] with its adapter's description.
fn shared_device_and_adapter() -> Option<(Device, supcon_wgpu::wgpu::AdapterInfo)> {
    static DEVICE: std::sync::OnceLock<(Device, supcon_wgpu::wgpu::AdapterInfo)> =
        std::sync::OnceLock::new();
    gpu()?;
    let shared = DEVICE.get_or_init(|| {
        let (device, adapter) =
            supcon_wgpu::backend::device::request_burn_device().expect("a Burn device");
        eprintln!(
            "Burn tests run on {} through {}",
            adapter.name,
            supcon_wgpu::backend::device::compiler_name(&device).unwrap_or("?")
        );
        (device, adapter)
    });
    Some(shared.clone())
}

/// The autodiff wgpu device: [`shared_device`] with autodiff.
pub fn wgpu_device() -> Option<Device> {
    Some(shared_device()?.autodiff())
}

/// `n` distinct Burn devices (not autodiff), the first [`shared_device`], the others on the
/// first Vulkan adapter (lavapipe in CI; else the first adapter), each its own wgpu device,
/// queue and memory pool; a skip (a failure under CI=true) without an adapter. The same devices
/// for every test that asks: made once, as [`shared_device`] and for its reason.
pub fn devices_of_test_adapter(n: usize) -> Option<Vec<(Device, supcon_wgpu::wgpu::AdapterInfo)>> {
    use supcon_wgpu::backend::device::{adapters, request_burn_devices};
    type Pool = Vec<(Device, supcon_wgpu::wgpu::AdapterInfo)>;
    static MORE: std::sync::Mutex<Pool> = std::sync::Mutex::new(Vec::new());
    let shared = shared_device_and_adapter()?;
    let mut more = MORE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let missing = n.saturating_sub(1 + more.len());
    if missing > 0 {
        let i = adapters()
            .iter()
            .position(|a| a.backend == supcon_wgpu::wgpu::Backend::Vulkan)
            .unwrap_or(0);
        more.extend(request_burn_devices(&vec![i; missing]).expect("devices on the test adapter"));
    }
    let all = std::iter::once(shared).chain(more.iter().cloned());
    Some(all.take(n).collect())
}

pub fn flex_device() -> Device {
    Device::flex().autodiff()
}

/// `x` as tracked `[bsz, n_views, dim]` features.
pub fn features(x: &[f32], shape: SupConShape, device: &Device) -> Tensor<3> {
    let dims = [
        shape.bsz as usize,
        shape.n_views as usize,
        shape.dim as usize,
    ];
    Tensor::<3>::from_data(TensorData::new(x.to_vec(), dims), device).require_grad()
}

pub fn labels(l: &[i32], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// The loss of `x` with `positives` and dL/dfeatures, through Burn's autodiff on `device`.
pub fn loss_and_grad(
    loss: &SupConLoss,
    x: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    device: &Device,
) -> Computed {
    loss_and_grad_with_keys(loss, x, shape, positives, None, device)
}

/// [`loss_and_grad`] with keys (`Some`: through `SupConLoss::forward_with_keys`, the keys as
/// tracked tensors that must receive no gradient).
pub fn loss_and_grad_with_keys(
    loss: &SupConLoss,
    x: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    keys: Option<supcon_wgpu::Keys<'_>>,
    device: &Device,
) -> Computed {
    let f = features(x, shape, device);
    let int = |l: &[i64]| {
        Tensor::<1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), (device, DType::I64))
    };
    let tensor = |p: Positives<'_>| match p {
        Positives::Labels(l) => Some(labels(l, device)),
        Positives::Labels64(l) => Some(int(l)),
        Positives::None => None,
        Positives::Mask(_) => panic!("a mask is no label tensor"),
    };
    let (value, key_tensor) = match (keys, positives) {
        (None, Positives::Mask(m)) => {
            let b = shape.bsz as usize;
            let mask = Tensor::<2, Bool>::from_data(TensorData::new(m.to_vec(), [b, b]), device);
            (loss.forward_with_mask(f.clone(), mask), None)
        }
        (None, p) => (loss.forward(f.clone(), tensor(p)), None),
        (Some(k), p) => {
            let rows = k.features.len() / shape.dim as usize;
            let data = TensorData::new(k.features.to_vec(), [rows, shape.dim as usize]);
            let kt = Tensor::<2>::from_data(data, device).require_grad();
            let value =
                loss.forward_with_keys(f.clone(), tensor(p), kt.clone(), tensor(k.positives));
            (value, Some(kt))
        }
    };
    let grads = value.backward();
    if let Some(kt) = key_tensor {
        assert!(
            kt.grad(&grads).is_none(),
            "the keys must not receive a gradient"
        );
    }
    let grad = to_vec(f.grad(&grads).expect("features receive a gradient"));
    Computed {
        loss: to_vec(value)[0],
        grad,
        anchor_loss: None,
        n_valid_anchors: None,
    }
}
