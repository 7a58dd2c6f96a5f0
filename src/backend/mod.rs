//! Burn backend extension: the WGSL SupCon and cosine-similarity kernels inside Burn 0.22.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use supcon_wgpu::backend::SupConLossConfig;
//!
//! # fn main() -> supcon_wgpu::Result<()> {
//! // Burn's CPU backend, with autodiff: `Implementation::Auto` takes the composed ops there,
//! // the fused WGSL kernels on a wgpu device (`Device::wgpu(..)`, `device::request_burn_device`).
//! let device = Device::flex().autodiff();
//! // [bsz = 2, n_views = 2, dim = 3]: raw projection-head output, labels [bsz].
//! let features = Tensor::<3>::from_floats(
//!     [[[1.0, 0.2, 0.0], [0.9, 0.3, 0.1]], [[0.0, 1.0, 0.5], [0.1, 0.8, 0.6]]],
//!     &device,
//! )
//! .require_grad();
//! let labels = Tensor::<1, Int>::from_ints([0, 1], &device);
//!
//! let loss_fn = SupConLossConfig::new().with_temperature(0.1).try_init()?;
//! let loss = loss_fn.try_forward(features.clone(), Some(labels))?; // `None`: SimCLR
//! let grads = loss.backward();
//!
//! let value: f32 = loss.into_scalar();
//! assert!(value.is_finite() && value > 0.0);
//! assert_eq!(features.grad(&grads).expect("a gradient").dims(), [2, 2, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! - On a burn-wgpu device (autodiff or not, fusion on or off) the loss runs the fused kernels of
//!   `shaders/` through Burn's raw-kernel path, with the fused backward registered on
//!   `Autodiff<B>`. Where cubecl compiles Burn's kernels to SPIR-V (this crate's `vulkan`
//!   feature) it refuses a WGSL source kernel; there the kernels run as wgpu dispatches on the
//!   device's own handles ([`device::burn_device`], [`device::request_burn_device`]).
//! - With the `remote` feature, on the devices of a server opened by `remote::connect` it runs
//!   the same kernels on the server (module `remote`, Burn's remote backend).
//! - On every other backend (Flex, CUDA, ...) it runs [`composed`], the same loss from
//!   Burn tensor ops — also the benchmark's baseline on wgpu.

mod autodiff;
pub mod composed;
mod cube;
pub mod data_parallel;
pub mod device;
pub mod grad_cache;
mod loss;
mod ops;
#[cfg(feature = "remote")]
pub mod remote;

pub use data_parallel::{DataParallel, DataParallelConfig};
pub use grad_cache::{CachedForward, GradCache, GradCacheConfig, GradCacheStep};
pub use loss::{
    Implementation, SupConLoss, SupConLossConfig, cosine_similarity, fused_available,
    try_cosine_similarity,
};
pub use ops::{LossParams, SupConBackend};

/// Whether this build tunes Burn's matmul, convolution and reduction kernels per shape (the
/// crate's `autotune` feature, which turns on Burn's `autotune` and `persistence`) or launches
/// Burn's fixed kernels. Burn decides this at compile time.
pub const BURN_AUTOTUNE: bool = cfg!(feature = "autotune");
