//! The run folder (its lock and what it may hold), checkpoints (save, load) and the exported
//! encoder.

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::store::burn_pack::Bytes;
use burn::store::{BurnpackStore, ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use super::queue::{KeyQueue, SavedQueue};
use super::{EpochMetrics, TrainConfig};
use crate::pipeline::model::{PretrainModel, ResNet};
use crate::pipeline::{PipelineError, Result, io_error, write_atomic};

/// The model and optimizer with the run's progress: what a checkpoint stores and a resume
/// restores.
pub(super) struct RunState {
    pub(super) model: PretrainModel,
    pub(super) optim: ModuleOptimizer,
    /// The feature queue (and momentum encoder), with `--queue-size`.
    pub(super) queue: Option<KeyQueue>,
    /// One entry per epoch completed.
    pub(super) history: Vec<EpochMetrics>,
    /// Epochs completed.
    pub(super) epoch: usize,
    /// Optimizer steps taken.
    pub(super) step: usize,
}

/// Where a run is and what it measured, stored with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    /// Epochs completed.
    epoch: usize,
    /// Optimizer steps taken.
    step: usize,
    history: Vec<EpochMetrics>,
    model_file: String,
    optimizer_file: String,
    /// The queue's files, with `--queue-size`.
    #[serde(default)]
    queue: Option<SavedQueue>,
}

/// Paths of a run's outputs.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The output folder.
    pub out: PathBuf,
}

impl RunPaths {
    /// The checkpoint folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.out.join("checkpoints")
    }
    /// The pointer to the newest checkpoint.
    pub fn latest(&self) -> PathBuf {
        self.checkpoints().join("latest.json")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.out.join("metrics.jsonl")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.out.join("summary.json")
    }
    /// The exported encoder.
    pub fn encoder(&self) -> PathBuf {
        self.out.join("encoder.safetensors")
    }
    /// The plot folder.
    pub fn plots(&self) -> PathBuf {
        self.out.join("plots")
    }
}

pub(super) fn checkpoint_error(path: &Path, message: impl std::fmt::Display) -> PipelineError {
    PipelineError::Checkpoint {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes model, optimizer and state after `state.epoch` epochs; `latest.json` is replaced
/// last, so a crash at any point leaves the previous checkpoint intact.
pub(super) fn save_checkpoint(
    paths: &RunPaths,
    config: &TrainConfig,
    state: &RunState,
) -> Result<()> {
    let dir = paths.checkpoints();
    let model_file = format!("epoch-{:04}.model.bpk", state.epoch);
    let optim_file = format!("epoch-{:04}.optim.bpk", state.epoch);
    let mut store = BurnpackStore::from_bytes(None);
    state
        .model
        .save_into(&mut store)
        .map_err(|e| checkpoint_error(&dir, format!("saving the model: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| checkpoint_error(&dir, format!("saving the model: {e}")))?;
    write_atomic(&dir.join(&model_file), &bytes)?;
    let bytes = state
        .optim
        .into_bytes()
        .map_err(|e| checkpoint_error(&dir, format!("saving the optimizer: {e}")))?;
    write_atomic(&dir.join(&optim_file), &bytes)?;
    let queue = match &state.queue {
        Some(q) => Some(q.save(&dir, &format!("epoch-{:04}", state.epoch))?),
        None => None,
    };
    let mut current = vec![model_file.clone(), optim_file.clone()];
    if let Some(q) = &queue {
        current.push(q.queue_file.clone());
        current.extend(q.momentum_file.clone());
    }
    let saved = CheckpointState {
        config: config.clone(),
        epoch: state.epoch,
        step: state.step,
        history: state.history.clone(),
        model_file: model_file.clone(),
        optimizer_file: optim_file,
        queue,
    };
    let json = serde_json::to_vec_pretty(&saved).expect("state serialises");
    write_atomic(&paths.latest(), &json)?;
    // Older checkpoints are no longer referenced.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && !current.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Loads the newest checkpoint into `state` (its model and optimizer as freshly built for
/// `config`): weights, optimizer state, history, epoch and step.
pub(super) fn load_checkpoint(
    paths: &RunPaths,
    config: &TrainConfig,
    mut state: RunState,
) -> Result<RunState> {
    let latest = paths.latest();
    let text = std::fs::read(&latest).map_err(|e| {
        checkpoint_error(
            &latest,
            format!("cannot read ({e}); nothing to resume from"),
        )
    })?;
    let saved: CheckpointState = serde_json::from_slice(&text)
        .map_err(|e| checkpoint_error(&latest, format!("corrupt state file: {e}")))?;
    if saved.config != *config {
        return Err(checkpoint_error(
            &latest,
            "was written by a run with a different configuration; \
             resume with the same flags (or use a new --out)",
        ));
    }
    let model_path = paths.checkpoints().join(&saved.model_file);
    let bytes = std::fs::read(&model_path).map_err(io_error(&model_path))?;
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let applied = state
        .model
        .load_from(&mut store)
        .map_err(|e| checkpoint_error(&model_path, format!("corrupt model: {e}")))?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() {
        return Err(checkpoint_error(
            &model_path,
            format!(
                "does not fit the model ({} errors, {} missing tensors)",
                applied.errors.len(),
                applied.missing.len()
            ),
        ));
    }
    let optim_path = paths.checkpoints().join(&saved.optimizer_file);
    let bytes = std::fs::read(&optim_path).map_err(io_error(&optim_path))?;
    state.optim = state
        .optim
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| checkpoint_error(&optim_path, format!("corrupt optimizer state: {e}")))?;
    match (&mut state.queue, &saved.queue) {
        (Some(queue), Some(files)) => queue.load(&paths.checkpoints(), files)?,
        (None, None) => {}
        _ => {
            return Err(checkpoint_error(
                &latest,
                "the checkpoint's feature queue does not match the run's",
            ));
        }
    }
    state.history = saved.history;
    state.epoch = saved.epoch;
    state.step = saved.step;
    Ok(state)
}

/// The epoch of the checkpoint `latest.json` points to, when it can be read.
pub(super) fn latest_epoch(paths: &RunPaths) -> Option<usize> {
    std::fs::read(paths.latest())
        .ok()
        .and_then(|t| serde_json::from_slice::<CheckpointState>(&t).ok())
        .map(|state| state.epoch)
}

/// Exports the encoder for other Burn programs (safetensors, tensor names = module paths).
pub(super) fn export_encoder(encoder: &ResNet, paths: &RunPaths) -> Result<()> {
    let mut store = SafetensorsStore::from_bytes(None);
    encoder
        .save_into(&mut store)
        .map_err(|e| checkpoint_error(&paths.encoder(), e))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| checkpoint_error(&paths.encoder(), e))?;
    write_atomic(&paths.encoder(), &bytes)
}

/// How a process takes part in a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in the output folder (an error when there is none).
    pub resume: bool,
    /// Start over in an output folder that holds another run: its checkpoints, metrics,
    /// summary, encoder and plots are removed first. Without it (or `resume`) such a folder is
    /// refused.
    pub overwrite: bool,
    /// Stop after this many epochs in total (checkpoint written, no evaluation): a time-boxed
    /// slice of a longer run, continued later with `resume`.
    pub stop_after_epochs: Option<usize>,
}

/// Holds a run folder's advisory lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// What a run leaves in its folder: a folder holding any of these holds a run. A checkpoint
/// counts once its pointer exists; before that, its files are the unreferenced remains of a
/// write that was cut off (removed by the next checkpoint).
const RUN_OUTPUTS: [&str; 5] = [
    "checkpoints/latest.json",
    "metrics.jsonl",
    "summary.json",
    "encoder.safetensors",
    "plots",
];

/// Makes `paths.out` ready for a run, before any training: creates it (so an unwritable
/// folder fails now), takes its lock ([`PipelineError::Locked`] when another process holds
/// it), removes temporary files a killed process left, and checks what is there against
/// `options`: resuming needs a checkpoint, a fresh start needs an empty folder or `overwrite`.
pub fn prepare_run_folder(paths: &RunPaths, options: &RunOptions) -> Result<RunLock> {
    let out = &paths.out;
    if options.resume && options.overwrite {
        return Err(PipelineError::Config(
            "--resume and --overwrite exclude each other".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let lock = lock_folder(out)?;
    remove_temp_files(paths)?;
    let found: Vec<&str> = RUN_OUTPUTS
        .iter()
        .copied()
        .filter(|name| out.join(name).exists())
        .collect();
    if options.resume {
        if !paths.latest().exists() {
            return Err(checkpoint_error(
                &paths.latest(),
                "not found: there is no checkpoint to resume from (start without --resume)",
            ));
        }
    } else if !found.is_empty() {
        if !options.overwrite {
            return Err(PipelineError::RunExists {
                path: out.clone(),
                found: found.join(", "),
            });
        }
        remove_run(out, found)?;
    }
    Ok(lock)
}

/// Takes the advisory lock of the run folder `out` (its lock file created when missing).
fn lock_folder(out: &Path) -> Result<RunLock> {
    let lock_path = out.join(crate::pipeline::LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(PipelineError::Locked {
                path: out.to_path_buf(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }
    Ok(RunLock { _file: file })
}

/// Removes the temporary files in the run folder, its checkpoints and its plots. Called with the
/// lock held, when no other process writes there: every temporary file is stale.
fn remove_temp_files(paths: &RunPaths) -> Result<()> {
    for dir in [paths.out.clone(), paths.checkpoints(), paths.plots()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if crate::pipeline::is_temp_file(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
    }
    Ok(())
}

/// Removes a run's outputs from `out` for a fresh start: the checkpoint folder and the
/// [`RUN_OUTPUTS`] `found` there.
fn remove_run(out: &Path, found: Vec<&str>) -> Result<()> {
    for name in ["checkpoints"].into_iter().chain(found) {
        let path = out.join(name);
        if !path.exists() {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_error(&path))?;
    }
    crate::pipeline::sync_dir(out).map_err(io_error(out))
}
