//! Burn backend extension: the WGSL SupCon and cosine-similarity kernels inside Burn 0.22.
//!
//! ```rust,ignore
//! use supcon_wgpu::backend::SupConLossConfig;
//! let loss = SupConLossConfig::new().with_temperature(0.1).init();
//! let value = loss.forward(features /* [bsz, n_views, dim] */, Some(labels /* [bsz] */));
//! value.backward(); // on an autodiff device
//! ```
//!
//! - On a burn-wgpu device (autodiff or not, fusion on or off) the loss runs the fused kernels of
//!   `shaders/` through Burn's raw-kernel path, with the fused backward registered on
//!   `Autodiff<B>`. Burn's WGSL compiler must stay the one in use: the `vulkan` and `metal`
//!   features of Burn switch cubecl to SPIR-V / MSL, which cannot run a WGSL source kernel (the
//!   fused ops then fail at launch; use [`Implementation::Composed`]).
//! - On every other backend (NdArray, Flex, CUDA, ...) it runs [`composed`], the same loss from
//!   Burn tensor ops — also the benchmark's baseline on wgpu.

mod autodiff;
pub mod composed;
mod cube;
pub mod device;
pub mod grad_cache;
mod loss;
mod ops;

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
