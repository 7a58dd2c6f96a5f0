//! # supcon-wgpu
//!
//! Supervised Contrastive Learning (Khosla et al., NeurIPS 2020) on any GPU that wgpu drives —
//! Vulkan, Metal, DX12 — with no CUDA.
//!
//! - [`kernels`]: the WGSL kernels (pairwise cosine similarity; the fused, streaming SupCon loss
//!   and its gradient) on the caller's own `wgpu::Device`, `Queue`, buffers and
//!   `CommandEncoder`, each with an f64 CPU reference.
//! - `device`: optional device acquisition for programs that do not own one (native only: it
//!   blocks on the adapter request).
//! - `backend` (feature `burn`): the Burn extension (`SupConLossConfig`), fused on burn-wgpu,
//!   composed elsewhere.
//! - `pipeline` (feature `pipeline`, which needs `burn`): the training application behind
//!   `examples/train_wgpu.rs`.
//!
//! Both features are on by default; `default-features = false` leaves the kernels on wgpu alone,
//! which also build for `wasm32-unknown-unknown` (WebGPU), where the convenience calls that block
//! on a read-back (`SupConLoss::loss`, `CosineSimilarity::compute`) are left out: record the
//! kernels into an encoder and map the results asynchronously.
//!
//! The loss: `z = x / ‖x‖`, `s_ij = z_i·z_j / τ`, for anchor `i` with contrast set `A(i)` (all
//! other rows) and positives `P(i)`,
//! `L_out,i = −(τ/τ_base) · (1/|P(i)|) Σ_{p∈P(i)} (s_ip − log Σ_{a∈A(i)} exp s_ia)`.
//! Features arrive as `[bsz, n_views, dim]` and are flattened view-major, as in the reference
//! PyTorch code.
#![deny(missing_docs)]

#[cfg(feature = "burn")]
pub mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod device;
pub mod error;
pub mod kernels;
#[cfg(feature = "pipeline")]
pub mod pipeline;

pub use error::{Error, Result};
pub use kernels::similarity::CosineSimilarity;
pub use kernels::supcon::{
    ContrastMode, Keys, PositiveKind, Positives, Reduction, Strategy, SupConLoss, SupConOptions,
    SupConOutput, SupConPlan, SupConResult, SupConShape, Variant,
};
/// The wgpu version the kernels are built against (the one burn-wgpu 0.22.1 uses).
pub use wgpu;
