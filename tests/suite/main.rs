//! The integration tests, one module per area, in one test binary: each test binary links the
//! library and instantiates Burn's generic backends again, so one binary instead of a dozen
//! saves most of a cold `cargo test` build. Run one area with its module path, e.g.
//! `cargo test --test suite pipeline_train::`.

mod common;

mod burn_extension;
mod gpu_similarity;
mod gpu_supcon;
mod grad_cache;
mod implementations;
mod pipeline_augment;
mod pipeline_crash;
mod pipeline_data;
mod pipeline_lars;
mod pipeline_memory;
mod pipeline_model;
mod pipeline_plot;
mod pipeline_soak;
mod pipeline_stream;
mod pipeline_train;
mod reference;
mod shaders;
