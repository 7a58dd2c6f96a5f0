//! The run folder (its lock and what it may hold), checkpoints (save, verify, load, fall back)
//! and the exported encoder.
//!
//! A checkpoint after epoch `e` is the files `epoch-{e:04}.*` of the checkpoint folder: the
//! model, the optimizer, the feature queue's files, and `epoch-{e:04}.state.json`, which records
//! the run's progress and the CRC-32C of each of the others. `latest.json` (a copy of the newest
//! state file, written last) points to the newest. The newest `keep` checkpoints stay on disk;
//! an older one is removed only after a newer one has been written, read back and verified. A
//! resume verifies every file against its checksum first; a damaged newest checkpoint is an
//! error that names the file, and the run goes back to the previous checkpoint only when asked
//! ([`ResumeFrom::Previous`]).

use std::collections::BTreeMap;
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
    /// CRC-32C of each file of the checkpoint, by file name (empty in state files written before
    /// checksums were kept: such a checkpoint cannot be verified and is refused).
    #[serde(default)]
    checksums: BTreeMap<String, u32>,
}

impl CheckpointState {
    /// The files of the checkpoint besides its state file.
    fn files(&self) -> Vec<String> {
        let mut files = vec![self.model_file.clone(), self.optimizer_file.clone()];
        if let Some(q) = &self.queue {
            files.push(q.queue_file.clone());
            files.extend(q.momentum_file.clone());
        }
        files
    }
}

/// Which checkpoint a resumed run starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The newest (`latest.json`); an error when any of its files fails its checksum.
    #[default]
    Latest,
    /// The newest checkpoint before the newest whose files all verify: the way back after a
    /// damaged newest checkpoint. The epochs after it are trained again.
    Previous,
}

/// The state file of the checkpoint after `epoch` epochs.
fn state_file(epoch: usize) -> String {
    format!("epoch-{epoch:04}.state.json")
}

/// The epoch of a checkpoint file's name (`epoch-0003.model.bpk` → 3).
fn epoch_of(name: &str) -> Option<usize> {
    name.strip_prefix("epoch-")?.get(..4)?.parse().ok()
}

/// CRC-32C of a file's contents.
fn checksum_of(path: &Path) -> Result<u32> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    Ok(crc32c::crc32c(&bytes))
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

/// Writes model, optimizer, queue and state after `state.epoch` epochs, reads each file back
/// and checks it against the checksum of what was written, then replaces `latest.json` (so a
/// crash at any point leaves the previous checkpoint in force), and only then removes the
/// checkpoints beyond the newest `keep` (and any of later epochs: what a fallback abandoned).
pub(super) fn save_checkpoint(
    paths: &RunPaths,
    config: &TrainConfig,
    state: &RunState,
    keep: usize,
) -> Result<()> {
    let dir = paths.checkpoints();
    let model_file = format!("epoch-{:04}.model.bpk", state.epoch);
    let optim_file = format!("epoch-{:04}.optim.bpk", state.epoch);
    let mut written = BTreeMap::new();
    let mut store = BurnpackStore::from_bytes(None);
    state
        .model
        .save_into(&mut store)
        .map_err(|e| checkpoint_error(&dir, format!("saving the model: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| checkpoint_error(&dir, format!("saving the model: {e}")))?;
    write_atomic(&dir.join(&model_file), &bytes)?;
    written.insert(model_file.clone(), crc32c::crc32c(&bytes));
    let bytes = state
        .optim
        .into_bytes()
        .map_err(|e| checkpoint_error(&dir, format!("saving the optimizer: {e}")))?;
    write_atomic(&dir.join(&optim_file), &bytes)?;
    written.insert(optim_file.clone(), crc32c::crc32c(&bytes));
    let queue = match &state.queue {
        Some(q) => Some(q.save(&dir, &format!("epoch-{:04}", state.epoch))?),
        None => None,
    };
    let mut saved = CheckpointState {
        config: config.clone(),
        epoch: state.epoch,
        step: state.step,
        history: state.history.clone(),
        model_file,
        optimizer_file: optim_file,
        queue,
        checksums: BTreeMap::new(),
    };
    // What is on disk now, read back: the model and optimizer must be what was written (the
    // queue's files are written and fsynced by the queue itself; their checksums come from
    // disk).
    for file in saved.files() {
        let on_disk = checksum_of(&dir.join(&file))?;
        if written.get(&file).is_some_and(|&crc| crc != on_disk) {
            return Err(checkpoint_error(
                &dir.join(&file),
                "reads back differently from what was written; the previous checkpoint is kept",
            ));
        }
        saved.checksums.insert(file, on_disk);
    }
    let json = serde_json::to_vec_pretty(&saved).expect("state serialises");
    write_atomic(&dir.join(state_file(state.epoch)), &json)?;
    write_atomic(&paths.latest(), &json)?;
    prune_checkpoints(&dir, state.epoch, keep);
    Ok(())
}

/// Removes the files of checkpoints older than the newest `keep` up to `epoch`, and of any
/// after `epoch` (left by the run a fallback abandoned). Best effort: a file that cannot be
/// removed stays.
fn prune_checkpoints(dir: &Path, epoch: usize, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let oldest_kept = (epoch + 1).saturating_sub(keep.max(1));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(e) = epoch_of(&name)
            && (e < oldest_kept || e > epoch)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Checks every file of `saved` against its recorded checksum.
fn verify(dir: &Path, saved: &CheckpointState, state_path: &Path) -> Result<()> {
    if saved.checksums.is_empty() {
        return Err(checkpoint_error(
            state_path,
            "records no checksums (written by an older version): it cannot be verified; \
             start a new run (--overwrite or another --out)",
        ));
    }
    for file in saved.files() {
        let path = dir.join(&file);
        let Some(&recorded) = saved.checksums.get(&file) else {
            return Err(checkpoint_error(&path, "has no recorded checksum"));
        };
        let actual = checksum_of(&path)?;
        if actual != recorded {
            return Err(checkpoint_error(
                &path,
                format!(
                    "is damaged: its CRC-32C is {actual:08x}, the checkpoint recorded \
                     {recorded:08x}"
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a state file.
fn read_state(path: &Path) -> Result<CheckpointState> {
    let text = std::fs::read(path).map_err(|e| {
        checkpoint_error(path, format!("cannot read ({e}); nothing to resume from"))
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| checkpoint_error(path, format!("corrupt state file: {e}")))
}

/// The state of the checkpoint to resume from, verified, and the path of its state file.
fn choose_checkpoint(
    paths: &RunPaths,
    config: &TrainConfig,
    from: ResumeFrom,
) -> Result<(CheckpointState, PathBuf)> {
    let dir = paths.checkpoints();
    let latest = paths.latest();
    let same_config = |saved: &CheckpointState, path: &Path| {
        if saved.config == *config {
            Ok(())
        } else {
            Err(checkpoint_error(
                path,
                "was written by a run with a different configuration; \
                 resume with the same flags (or use a new --out)",
            ))
        }
    };
    match from {
        ResumeFrom::Latest => {
            let saved = read_state(&latest)?;
            same_config(&saved, &latest)?;
            verify(&dir, &saved, &latest).map_err(|e| match e {
                PipelineError::Checkpoint { path, message } => PipelineError::Checkpoint {
                    path,
                    message: format!(
                        "{message} (the checkpoint after epoch {}); nothing was loaded. \
                         --resume-from previous resumes from the checkpoint before it",
                        saved.epoch
                    ),
                },
                other => other,
            })?;
            Ok((saved, latest))
        }
        ResumeFrom::Previous => {
            // Before the newest: before latest.json's epoch, or, when it cannot be read, any.
            let newest = read_state(&latest).ok().map(|s| s.epoch);
            let mut epochs: Vec<usize> = std::fs::read_dir(&dir)
                .map_err(io_error(&dir))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".state.json"))
                .filter_map(|name| epoch_of(&name))
                .filter(|&e| newest.is_none_or(|n| e < n))
                .collect();
            epochs.sort_unstable();
            let mut reasons = Vec::new();
            for epoch in epochs.into_iter().rev() {
                let path = dir.join(state_file(epoch));
                let checked = read_state(&path).and_then(|saved| {
                    same_config(&saved, &path)?;
                    verify(&dir, &saved, &path)?;
                    Ok(saved)
                });
                match checked {
                    Ok(saved) => return Ok((saved, path)),
                    Err(e) => reasons.push(e.to_string()),
                }
            }
            Err(checkpoint_error(
                &dir,
                format!(
                    "no checkpoint before the newest verifies ({}); keep more with \
                     --keep-checkpoints",
                    if reasons.is_empty() {
                        "there is none".to_string()
                    } else {
                        reasons.join("; ")
                    }
                ),
            ))
        }
    }
}

/// Loads the checkpoint `from` says (verified against its checksums) into `state` (its model
/// and optimizer as freshly built for `config`): weights, optimizer state, queue, history,
/// epoch and step.
pub(super) fn load_checkpoint(
    paths: &RunPaths,
    config: &TrainConfig,
    mut state: RunState,
    from: ResumeFrom,
) -> Result<RunState> {
    let (saved, latest) = choose_checkpoint(paths, config, from)?;
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

/// Called after each epoch's checkpoint and metrics are written, with the epochs completed and
/// the optimizer steps taken so far (progress reports, memory sampling).
#[derive(Clone)]
pub struct EpochObserver(pub std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for EpochObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochObserver")
    }
}

/// How a process takes part in a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from a checkpoint in the output folder (an error when there is none).
    pub resume: bool,
    /// Which checkpoint `resume` continues from.
    pub resume_from: ResumeFrom,
    /// How many checkpoints stay on disk (at least 1; default 2): the newest, and the ones to
    /// fall back to.
    pub keep_checkpoints: usize,
    /// Start over in an output folder that holds another run: its checkpoints, metrics,
    /// summary, encoder and plots are removed first. Without it (or `resume`) such a folder is
    /// refused.
    pub overwrite: bool,
    /// Stop after this many epochs in total (checkpoint written, no evaluation): a time-boxed
    /// slice of a longer run, continued later with `resume`.
    pub stop_after_epochs: Option<usize>,
    /// Called at the end of every epoch (after its checkpoint).
    pub on_epoch_end: Option<EpochObserver>,
    /// Run even when the device memory preflight ([`crate::pipeline::memory::preflight`])
    /// says a step does not fit (its estimate is an upper bound, and may be pessimistic for a
    /// backend that allocates less); a step that then fails on the device is an error.
    pub skip_memory_check: bool,
    /// Devices besides `run`'s `device` (the main one: model, optimizer, loss, evaluation):
    /// each pretraining step's batch is spread over all of them
    /// ([`crate::backend::data_parallel`]). Empty: one device. Checkpoints do not depend on
    /// them: a run resumes on any number of devices.
    pub more_devices: Vec<burn::tensor::Device>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            resume_from: ResumeFrom::Latest,
            keep_checkpoints: 2,
            overwrite: false,
            stop_after_epochs: None,
            on_epoch_end: None,
            skip_memory_check: false,
            more_devices: Vec::new(),
        }
    }
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
    if options.keep_checkpoints == 0 {
        return Err(PipelineError::Config(
            "--keep-checkpoints must be at least 1".into(),
        ));
    }
    if options.resume_from != ResumeFrom::Latest && !options.resume {
        return Err(PipelineError::Config("--resume-from needs --resume".into()));
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
