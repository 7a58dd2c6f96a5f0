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
pub mod memory;
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
    /// A training step does not fit the device's memory ([`memory::preflight`]); found before
    /// anything ran.
    #[error("{0}")]
    DeviceMemory(String),
    /// The device failed during a run (Burn panicked inside a step or an evaluation); nothing
    /// was saved from the failing epoch.
    #[error("{0}")]
    DeviceFailed(String),
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
///
/// Burn initialises parameters lazily, on their first use: every parameter is drawn here, under
/// the lock, or its values would come from whatever the generator holds at that later moment
/// (another run's draws in between).
pub(crate) fn seeded_init<M: burn::module::Module>(
    device: &burn::tensor::Device,
    seed: u64,
    init: impl FnOnce() -> M,
) -> M {
    /// Reads every float parameter once, which initialises a lazy one.
    struct Materialize;
    impl burn::module::ModuleVisitor for Materialize {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            let _ = param.val();
        }
    }
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let module = init();
    module.visit(&mut Materialize);
    module
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same folder (a name
/// unique to this process and call), flushed to disk, renamed over the target, then the folder
/// itself flushed so the rename survives a power loss. A reader sees the old file or the new
/// one, never a part. Temporary files left by a killed process match [`is_temp_file`]. The
/// folder is created when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    replace_file(path, bytes).map_err(io_error(path))
}

/// [`write_atomic`] into a folder that exists (a missing folder is an error): the pipeline's
/// one atomic write (temporary file, flush, rename, folder flush), also used by the plots.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = parent_dir(path);
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
    result
}

/// The folder `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
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

/// SplitMix64 (Steele, Lea and Flood, 2014): a state advanced by [`Self::GAMMA`] per draw, each
/// output the state passed through [`Self::mix`]. The pipeline's one such generator: it derives
/// each epoch's seed from the run's seed and starts the PCA's subspace iteration.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// The increment of the state per draw (2^64 / the golden ratio, odd).
    pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The output function: a bijective mix of the 64 bits of `z`.
    pub(crate) fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        Self::mix(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first outputs of the reference implementation (S. Vigna's splitmix64.c) seeded
        // with 1234567.
        let mut rng = SplitMix64(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
        assert_eq!(SplitMix64(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn replace_file_needs_the_folder_and_write_atomic_creates_it() {
        let root = std::env::temp_dir().join(format!("supcon-write-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let path = root.join("sub").join("f.txt");
        let err = replace_file(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(!root.exists(), "nothing created");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<String> = std::fs::read_dir(root.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["f.txt"], "no temporary file left");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
