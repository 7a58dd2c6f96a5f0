//! The SupCon training pipeline: data sets, GPU augmentation, ResNet encoders, two-stage
//! training (contrastive or cross-entropy pretraining, then linear evaluation), a kNN monitor,
//! checkpoints, metrics and plots.
//!
//! Data flow of one pretraining step: a batch of images is gathered on the CPU and uploaded
//! once; two independently augmented views are made on the device ([`augment`]); the encoder
//! and projection head ([`model`]) map both views in one pass; the features go to the fused
//! SupCon loss ([`crate::backend::SupConLoss`]); Burn's autodiff and SGD update the model.
//! [`train::run`] drives the stages; `examples/train_wgpu.rs` is the command line.

pub mod augment;
pub mod data;
pub mod eval;
pub mod lars;
pub mod model;
pub mod plot;
pub mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

/// What can go wrong in the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Loading or checking a data set failed.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Drawing a plot failed.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is missing, corrupt, or from another configuration.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The GPU layer or the loss rejected something (no adapter, bad loss input, ...).
    #[error(transparent)]
    Backend(#[from] crate::Error),
    /// The loss became NaN or infinite.
    #[error("training diverged: {0}")]
    Diverged(String),
}

/// Shorthand for pipeline results.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `init` right after seeding `device`'s random generator with `seed`, holding a process-wide
/// lock meanwhile. The generator is shared by everything on the device, so without the lock
/// concurrent runs in one process interleave their draws and the weights stop depending on the
/// seed alone.
pub(crate) fn seeded_init<T>(
    device: &burn::tensor::Device,
    seed: u64,
    init: impl FnOnce() -> T,
) -> T {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    init()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over the target, so a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_error(path))
}
