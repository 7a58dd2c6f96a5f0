//! The training pipeline's tiny test setting, shared by the pipeline test files.

use std::path::Path;

use burn::tensor::Device;
use supcon_wgpu::pipeline::augment::AugmentConfig;
use supcon_wgpu::pipeline::data::{self, ImageDataset, ImageSource};
use supcon_wgpu::pipeline::eval::LinearEvalConfig;
use supcon_wgpu::pipeline::model::{HeadKind, ModelPreset, Stem};
use supcon_wgpu::pipeline::train::{EpochMetrics, Method, RunInfo, TrainConfig};

/// glibc's malloc settings for the child processes whose memory a test measures: one arena,
/// fixed mmap and trim thresholds, so that RSS follows what the process holds (pipeline_soak's
/// documentation says why).
pub const ALLOCATOR_TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072";

/// A field of /proc/self/status, in bytes (`VmRSS`: resident now; `VmHWM`: the peak;
/// `RssAnon`, `RssFile`, `RssShmem`: the resident pages by kind).
pub fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect(field)
        * 1024
}

/// A few hundred digits for training and about a hundred for testing; every class present.
pub fn small_digits() -> (ImageDataset, ImageDataset) {
    let all = data::digits().unwrap();
    let (train, test) = data::stratified_split(&all.labels, 0.2, 0).unwrap();
    let train: Vec<usize> = train.into_iter().step_by(4).collect();
    let test: Vec<usize> = test.into_iter().step_by(3).collect();
    (all.subset(&train), all.subset(&test))
}

/// The small model, 3 epochs of 4 steps of 32 images, kNN every epoch, 20 epochs of linear
/// evaluation.
pub fn config(method: Method) -> TrainConfig {
    TrainConfig {
        method,
        model: ModelPreset::Small,
        stem: Stem::Cifar,
        head: HeadKind::Mlp,
        projection_dim: 32,
        epochs: 3,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
        lars: false,
        warmup_epochs: 1,
        temperature: 0.1,
        base_temperature: None,
        seed: 7,
        augment: AugmentConfig::digits(vec![0.3], vec![0.4]),
        linear: LinearEvalConfig {
            epochs: 20,
            batch_size: 64,
            ..LinearEvalConfig::default()
        },
        knn_k: 5,
        knn_every: 1,
        max_steps_per_epoch: Some(4),
        grad_cache_chunk: None,
        queue_size: 0,
        momentum_encoder: None,
    }
}

/// Names for the summary.
pub fn info() -> RunInfo {
    RunInfo {
        dataset: "digits-subset".into(),
        adapter: "test".into(),
        backend: "test".into(),
    }
}

/// Two histories of one run (uninterrupted vs `how`: resumed, killed and resumed): the same
/// epochs, the same learning rates, the losses within 1e-4 (relative, at least absolute).
pub fn assert_same_run(a: &[EpochMetrics], b: &[EpochMetrics], how: &str) {
    assert_eq!(a.len(), b.len(), "epochs uninterrupted vs {how}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x.loss - y.loss).abs() <= 1e-4 * x.loss.abs().max(1.0),
            "epoch {}: {} uninterrupted vs {} {how}",
            x.epoch,
            x.loss,
            y.loss
        );
        assert_eq!(x.lr, y.lr, "epoch {}: learning rate", x.epoch);
    }
}

/// The epochs a run wrote to `out/metrics.jsonl`.
pub fn history(out: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Burn device of the GPU tests (`None` where [`super::gpu`] skips): the one every test of
/// the process shares ([`super::burn_tensors::shared_device`]).
pub fn device() -> Option<Device> {
    super::burn_tensors::shared_device()
}

/// A further Burn device on the test adapter (its own wgpu device, queue and memory pool), for
/// runs spread over two devices (`RunOptions::more_devices`).
pub fn another_device() -> Option<Device> {
    let (device, _) = super::burn_tensors::devices_of_test_adapter(2)?.remove(1);
    Some(device)
}

/// Trains `config` once into a scratch folder before a test compares two runs, where Burn
/// autotunes (feature `autotune`): the first kernels of a process then run while cubecl tunes,
/// and the variant in use can change between steps (equal results up to rounding, which training
/// amplifies); a whole run tunes every shape. Without the feature Burn launches fixed kernels and
/// the first run already equals the later ones (as the crash test's fresh processes show), so
/// nothing runs.
pub fn warm_up_autotune(
    name: &str,
    config: &TrainConfig,
    train: &dyn ImageSource,
    test: &dyn ImageSource,
    device: &Device,
) {
    if !supcon_wgpu::backend::BURN_AUTOTUNE {
        return;
    }
    let dir = std::env::temp_dir().join(format!("supcon-warm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = supcon_wgpu::pipeline::train::RunOptions::default();
    supcon_wgpu::pipeline::train::run(config, train, test, &dir, &options, device, &info())
        .unwrap()
        .expect("the warm-up run returns its summary");
    let _ = std::fs::remove_dir_all(&dir);
}
