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
    /// The output folder holds another run, and neither resume nor overwrite was asked for.
    #[error(
        "{} already holds a run ({found}); continue it with --resume, start over with \
         --overwrite, or choose another --out", path.display()
    )]
    RunExists {
        /// The output folder.
        path: PathBuf,
        /// What was found there.
        found: String,
    },
    /// Another process holds the output folder's lock.
    #[error(
        "{} is in use by another training process (its lock file {} is held); wait for it to \
         finish or choose another --out", path.display(), path.join(LOCK_FILE).display()
    )]
    Locked {
        /// The output folder.
        path: PathBuf,
    },
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

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same folder (a name
/// unique to this process and call), flushed to disk, renamed over the target, then the folder
/// itself flushed so the rename survives a power loss. A reader sees the old file or the new
/// one, never a part. Temporary files left by a killed process match [`is_temp_file`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}.{unique}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_error(path))
}

const TEMP_MARK: &str = ".tmp.";

/// The lock file in a run's output folder, held (advisory lock) while a process trains there.
pub const LOCK_FILE: &str = ".lock";

/// Whether a file name is one of [`write_atomic`]'s temporary files.
pub fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}

/// Flushes a folder's entries (a rename or removal in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a folder as a file; its renames are durable with the file flush.
        let _ = dir;
        Ok(())
    }
}
