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
//! Where to start: [`SupConLoss`] (the loss and its gradient on a caller's wgpu device, in one
//! call or recorded into the caller's encoder with [`SupConPlan::encode_forward`]),
//! [`CosineSimilarity`], and in Burn `backend::SupConLossConfig`; each has an example.
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

// The Rust code blocks of README.md and of the guide in docs/ are doc-tests: `cargo test`
// compiles each of them (and runs those not marked `no_run`), so an example a user copies
// cannot silently stop building. The guide's Burn pages need the Burn extension (and
// burn-train for its Learner example).
#[cfg(all(doctest, feature = "pipeline"))]
#[doc = include_str!("../README.md")]
mod readme_examples {}
#[cfg(all(doctest, feature = "learner"))]
#[doc = include_str!("../docs/burn.md")]
mod guide_burn_examples {}
#[cfg(doctest)]
#[doc = include_str!("../docs/wgpu.md")]
mod guide_wgpu_examples {}
#[cfg(all(doctest, feature = "pipeline"))]
#[doc = include_str!("../docs/training.md")]
mod guide_training_examples {}
#[cfg(doctest)]
#[doc = include_str!("../docs/browser.md")]
mod guide_browser_examples {}
#[cfg(doctest)]
#[doc = include_str!("../docs/performance.md")]
mod guide_performance_examples {}
#[cfg(doctest)]
#[doc = include_str!("../docs/testing.md")]
mod guide_testing_examples {}
