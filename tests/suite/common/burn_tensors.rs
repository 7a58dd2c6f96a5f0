//! Burn test helpers shared by the Burn suites: devices, input tensors, one forward + backward.

use super::{Computed, gpu};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use supcon_wgpu::backend::SupConLoss;
use supcon_wgpu::{Positives, SupConShape};

/// The autodiff wgpu device, or a clear skip (a failure under CI=true), as the other GPU tests.
pub fn wgpu_device() -> Option<Device> {
    gpu()?;
    Some(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff())
}

#[allow(deprecated)]
pub fn ndarray_device() -> Device {
    Device::ndarray().autodiff()
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
    let f = features(x, shape, device);
    let value = match positives {
        Positives::Labels(l) => loss.forward(f.clone(), Some(labels(l, device))),
        Positives::Labels64(l) => {
            let data = TensorData::new(l.to_vec(), [l.len()]);
            let l = Tensor::<1, Int>::from_data(data, (device, DType::I64));
            loss.forward(f.clone(), Some(l))
        }
        Positives::None => loss.forward(f.clone(), None),
        Positives::Mask(m) => {
            let b = shape.bsz as usize;
            let mask = Tensor::<2, Bool>::from_data(TensorData::new(m.to_vec(), [b, b]), device);
            loss.forward_with_mask(f.clone(), mask)
        }
    };
    let grads = value.backward();
    let grad = to_vec(f.grad(&grads).expect("features receive a gradient"));
    Computed {
        loss: to_vec(value)[0],
        grad,
        anchor_loss: None,
        n_valid_anchors: None,
    }
}

/// [`loss_and_grad`] with keys through `SupConLoss::forward_with_keys`; the keys are tracked
/// tensors and must receive no gradient.
pub fn loss_and_grad_with_keys(
    loss: &SupConLoss,
    x: &[f32],
    shape: SupConShape,
    positives: Positives<'_>,
    keys: supcon_wgpu::Keys<'_>,
    device: &Device,
) -> Computed {
    let f = features(x, shape, device);
    let k = keys.features.len() / shape.dim as usize;
    let key_tensor = Tensor::<2>::from_data(
        TensorData::new(keys.features.to_vec(), [k, shape.dim as usize]),
        device,
    )
    .require_grad();
    let int = |l: &[i64], dtype: DType| {
        Tensor::<1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), (device, dtype))
    };
    let (l, kl) = match (positives, keys.positives) {
        (Positives::Labels(l), Positives::Labels(kl)) => {
            (Some(labels(l, device)), Some(labels(kl, device)))
        }
        (Positives::Labels64(l), Positives::Labels64(kl)) => {
            (Some(int(l, DType::I64)), Some(int(kl, DType::I64)))
        }
        (Positives::None, Positives::None) => (None, None),
        other => panic!("no keys test with positives {other:?}"),
    };
    let value = loss.forward_with_keys(f.clone(), l, key_tensor.clone(), kl);
    let grads = value.backward();
    assert!(
        key_tensor.grad(&grads).is_none(),
        "the keys must not receive a gradient"
    );
    let grad = to_vec(f.grad(&grads).expect("features receive a gradient"));
    Computed {
        loss: to_vec(value)[0],
        grad,
        anchor_loss: None,
        n_valid_anchors: None,
    }
}
