//! The training pipeline end to end on the wgpu device (lavapipe in CI; a missing adapter is a
//! failure under CI=true) with a tiny budget: pretrain, checkpoint, stop, resume, linear
//! evaluation, kNN, plots, export — and that the resumed run retraces the uninterrupted one.
#![cfg(feature = "pipeline")]

use crate::common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use common::pipeline::{
    another_device, assert_same_run, config, device, history, info, small_digits, warm_up_autotune,
};
use supcon_wgpu::pipeline::PipelineError;
use supcon_wgpu::pipeline::augment::{AugmentConfig, Recipe};
use supcon_wgpu::pipeline::data;
use supcon_wgpu::pipeline::eval::LinearEvalConfig;
use supcon_wgpu::pipeline::model::{ModelPreset, Stem};
use supcon_wgpu::pipeline::train::{
    LrSchedule, Method, ResumeFrom, RunOptions, RunPaths, Summary, TrainConfig, prepare_run_folder,
    run,
};

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supcon-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The bytes of the encoder's stem convolution weights.
fn first_weights(encoder: &supcon_wgpu::pipeline::model::ResNet) -> Vec<u8> {
    use burn::store::ModuleSnapshot;
    let tensors = encoder.collect(None, None, false);
    let stem = tensors
        .iter()
        .find(|t| t.name == "stem.conv.weight")
        .expect("stem.conv.weight");
    stem.to_bytes().expect("bytes").to_vec()
}

#[test]
fn pretrain_checkpoint_resume_evaluate() {
    let Some(device) = device() else { return };
    let (train, test) = small_digits();
    let cfg = config(Method::SupCon);

    warm_up_autotune("pretrain", &cfg, &train, &test, &device);

    // Uninterrupted run.
    let a_dir = out_dir("a");
    let a: Summary = run(
        &cfg,
        &train,
        &test,
        &a_dir,
        &RunOptions::default(),
        &device,
        &info(),
    )
    .unwrap()
    .expect("a full run returns its summary");
    let ha = history(&a_dir);
    assert_eq!(ha.len(), 3);
    assert!(
        ha[2].loss < ha[0].loss,
        "the loss went down: {:?}",
        ha.iter().map(|m| m.loss).collect::<Vec<_>>()
    );
    for f in [
        "summary.json",
        "metrics.jsonl",
        "encoder.safetensors",
        "checkpoints/latest.json",
        "plots/loss.png",
        "plots/accuracy.png",
        "plots/linear_eval_loss.png",
        "plots/embedding_pca.png",
    ] {
        let len = std::fs::metadata(a_dir.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{f} written");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a_dir.join("summary.json")).unwrap()).unwrap();
    for key in [
        "method",
        "model",
        "dataset",
        "epochs",
        "batch_size",
        "linear_eval_test_accuracy",
        "knn_test_accuracy",
        "wall_time_s",
        "images_per_s",
        "adapter",
        "backend",
    ] {
        assert!(summary.get(key).is_some(), "summary.json has {key}");
    }
    assert_eq!(
        summary["burn_autotune"].as_bool(),
        Some(supcon_wgpu::backend::BURN_AUTOTUNE),
        "summary.json says how Burn chose its kernels in this build"
    );
    // The exported encoder loads into a fresh one (another Burn program's view): every tensor
    // present, none left over, and the weights are the trained ones, not the fresh ones.
    {
        use burn::module::Module;
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        let cpu = Device::flex();
        let mut fresh = ModelPreset::Small.config(1, Stem::Cifar).init(&cpu);
        let before = first_weights(&fresh);
        let mut store = SafetensorsStore::from_file(a_dir.join("encoder.safetensors"));
        let applied = fresh
            .load_from(&mut store)
            .expect("encoder.safetensors loads");
        assert!(
            applied.missing.is_empty() && applied.errors.is_empty() && applied.unused.is_empty(),
            "{applied:?}"
        );
        assert!(
            applied.applied.len() > 20,
            "{} tensors",
            applied.applied.len()
        );
        assert_ne!(first_weights(&fresh), before);
        assert!(fresh.num_params() > 0);
    }

    // Ten classes: chance is 10 %; even this tiny budget learns something.
    assert!(a.linear_eval_test_accuracy > 0.3, "{a:?}");
    assert!((0.0..=1.0).contains(&a.knn_test_accuracy));
    assert!(ha.iter().all(|m| m.knn_test_accuracy.is_some()));

    // Interrupted after one epoch, then resumed: the same losses, the same result.
    let b_dir = out_dir("b");
    let stop = RunOptions {
        stop_after_epochs: Some(1),
        ..RunOptions::default()
    };
    assert!(
        run(&cfg, &train, &test, &b_dir, &stop, &device, &info())
            .unwrap()
            .is_none()
    );
    assert_eq!(history(&b_dir).len(), 1);
    assert!(!b_dir.join("summary.json").exists());
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let b = run(&cfg, &train, &test, &b_dir, &resume, &device, &info())
        .unwrap()
        .unwrap();
    assert_same_run(&ha, &history(&b_dir), "resumed");
    // The linear classifier's initial weights are seeded (they once came from the device's shared
    // generator, and the two runs differed by 3 of 120 test images); one image of slack is left
    // for rounding.
    assert!(
        (a.linear_eval_test_accuracy - b.linear_eval_test_accuracy).abs()
            <= 1.0 / test.labels.len() as f64 + 1e-12,
        "{} vs {}",
        a.linear_eval_test_accuracy,
        b.linear_eval_test_accuracy
    );

    // Two checkpoints are kept (the default): epochs 2 and 3 of 3.
    let kept: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(b_dir.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".state.json"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(kept, ["epoch-0002.state.json", "epoch-0003.state.json"]);

    // One byte flipped near the end of the newest model file: the resume names the file and
    // loads nothing; going back to the previous checkpoint (only when asked) trains epoch 3
    // again and repeats the uninterrupted run.
    let newest = b_dir.join("checkpoints/epoch-0003.model.bpk");
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();
    let err = run(&cfg, &train, &test, &b_dir, &resume, &device, &info()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, PipelineError::Checkpoint { .. })
            && text.contains("epoch-0003.model.bpk")
            && text.contains("damaged")
            && text.contains("--resume-from previous"),
        "{err}"
    );
    let previous = RunOptions {
        resume: true,
        resume_from: ResumeFrom::Previous,
        ..RunOptions::default()
    };
    let c = run(&cfg, &train, &test, &b_dir, &previous, &device, &info())
        .unwrap()
        .unwrap();
    assert_same_run(
        &ha,
        &history(&b_dir),
        "resumed from the previous checkpoint",
    );
    assert!(
        (a.linear_eval_test_accuracy - c.linear_eval_test_accuracy).abs()
            <= 1.0 / test.labels.len() as f64 + 1e-12,
        "{} vs {}",
        a.linear_eval_test_accuracy,
        c.linear_eval_test_accuracy
    );
    // The retrained epoch 3 replaced the damaged one, and verifies.
    run(&cfg, &train, &test, &b_dir, &resume, &device, &info())
        .unwrap()
        .expect("a summary");
    for bad in [
        RunOptions {
            keep_checkpoints: 0,
            ..RunOptions::default()
        },
        RunOptions {
            resume_from: ResumeFrom::Previous,
            ..RunOptions::default()
        },
    ] {
        let err = run(&cfg, &train, &test, &out_dir("bad"), &bad, &device, &info()).unwrap_err();
        assert!(matches!(err, PipelineError::Config(_)), "{err}");
    }

    // A checkpoint from another configuration, and a corrupt one, are clear errors.
    let mut other = cfg.clone();
    other.lr = 0.2;
    let err = run(&other, &train, &test, &b_dir, &resume, &device, &info()).unwrap_err();
    assert!(
        matches!(err, PipelineError::Checkpoint { .. }) && err.to_string().contains("different"),
        "{err}"
    );
    std::fs::write(b_dir.join("checkpoints/latest.json"), b"{ not json").unwrap();
    let err = run(&cfg, &train, &test, &b_dir, &resume, &device, &info()).unwrap_err();
    assert!(
        matches!(err, PipelineError::Checkpoint { .. }) && err.to_string().contains("corrupt"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&a_dir);
    let _ = std::fs::remove_dir_all(&b_dir);
}

/// Gradient caching, a feature queue and a momentum encoder in the pipeline: chunks of 24 of a
/// batch of 64 (the last chunk 16), batch norm per chunk, a queue of 200 keys (full after two
/// steps of 128, then rolling) from an averaged model; the loss falls once the queue is full
/// (epochs 2 to 3: a loss over more columns is larger, so epoch 1's is not comparable), and a
/// run stopped after one epoch and resumed (queue and averaged model from the checkpoint)
/// repeats the uninterrupted one, though its first epoch ran on two devices.
#[test]
fn grad_cache_queue_run_trains_and_resumes() {
    let Some(device) = device() else { return };
    let (train, test) = small_digits();
    let cfg = TrainConfig {
        grad_cache_chunk: Some(24),
        queue_size: 200,
        momentum_encoder: Some(0.9),
        epochs: 3,
        warmup_epochs: 0,
        knn_every: 0,
        linear: LinearEvalConfig {
            epochs: 5,
            batch_size: 64,
            ..LinearEvalConfig::default()
        },
        ..config(Method::SupCon)
    };
    let full = |dir: &Path, options: &RunOptions| {
        run(&cfg, &train, &test, dir, options, &device, &info()).unwrap()
    };
    warm_up_autotune("grad-cache", &cfg, &train, &test, &device);

    let a_dir = out_dir("gc-a");
    full(&a_dir, &RunOptions::default()).expect("a summary");
    let ha = history(&a_dir);
    assert_eq!(ha.len(), 3);
    assert!(
        ha[2].loss < ha[1].loss,
        "{} then {}",
        ha[1].loss,
        ha[2].loss
    );

    // The first epoch on two devices (chunks dealt to them in turn: the same chunks, so the
    // same losses and gradients), the rest on one: checkpoints do not depend on the devices.
    let b_dir = out_dir("gc-b");
    let stop = RunOptions {
        stop_after_epochs: Some(1),
        more_devices: vec![another_device().expect("a second device")],
        ..RunOptions::default()
    };
    assert!(full(&b_dir, &stop).is_none());
    let saved: Vec<String> = std::fs::read_dir(b_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for file in ["epoch-0001.queue.bin", "epoch-0001.momentum.bpk"] {
        assert!(saved.iter().any(|f| f == file), "{file} in {saved:?}");
    }
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    full(&b_dir, &resume).expect("a summary");
    assert_same_run(&ha, &history(&b_dir), "resumed");
    let _ = std::fs::remove_dir_all(&a_dir);
    let _ = std::fs::remove_dir_all(&b_dir);
}

#[test]
fn baselines_run_and_bad_configs_are_errors() {
    let Some(device) = device() else { return };
    let (train, test) = small_digits();
    // Both on two devices: each step's batch split over them (cross-entropy's logits and
    // SimCLR's features gathered on the first).
    let two = RunOptions {
        more_devices: vec![another_device().expect("a second device")],
        ..RunOptions::default()
    };
    for method in [Method::Ce, Method::SimClr] {
        let mut cfg = config(method);
        // The baselines also exercise LARS.
        cfg.lars = method == Method::SimClr;
        cfg.epochs = 2;
        cfg.warmup_epochs = 0;
        cfg.knn_every = 0;
        cfg.max_steps_per_epoch = Some(2);
        let dir = out_dir(method.name());
        let s = run(&cfg, &train, &test, &dir, &two, &device, &info())
            .unwrap()
            .unwrap();
        assert_eq!(s.method, method.name());
        assert!(s.final_loss.is_finite());
        assert!(dir.join("plots/embedding_pca.png").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
    let dir = out_dir("bad");
    for (what, cfg) in [
        (
            "epochs",
            TrainConfig {
                epochs: 0,
                ..config(Method::SupCon)
            },
        ),
        (
            "batch",
            TrainConfig {
                batch_size: 1,
                ..config(Method::SupCon)
            },
        ),
        (
            "lr",
            TrainConfig {
                lr: f64::NAN,
                ..config(Method::SupCon)
            },
        ),
        (
            "temp",
            TrainConfig {
                temperature: 0.0,
                ..config(Method::SupCon)
            },
        ),
        (
            "warmup",
            TrainConfig {
                warmup_epochs: 3,
                ..config(Method::SupCon)
            },
        ),
        (
            "normalisation",
            TrainConfig {
                augment: AugmentConfig::digits(vec![0.3; 3], vec![0.4; 3]),
                ..config(Method::SupCon)
            },
        ),
        (
            "steps per epoch",
            TrainConfig {
                max_steps_per_epoch: Some(0),
                ..config(Method::SupCon)
            },
        ),
        (
            "knn k",
            TrainConfig {
                knn_k: 0,
                ..config(Method::SupCon)
            },
        ),
        (
            "grad-cache chunk 0",
            TrainConfig {
                grad_cache_chunk: Some(0),
                ..config(Method::SupCon)
            },
        ),
        (
            "grad-cache chunk above the batch",
            TrainConfig {
                grad_cache_chunk: Some(65),
                ..config(Method::SupCon)
            },
        ),
        (
            "grad-cache with cross-entropy",
            TrainConfig {
                grad_cache_chunk: Some(16),
                ..config(Method::Ce)
            },
        ),
        (
            "queue with cross-entropy",
            TrainConfig {
                queue_size: 64,
                ..config(Method::Ce)
            },
        ),
        (
            "momentum encoder without a queue",
            TrainConfig {
                momentum_encoder: Some(0.99),
                ..config(Method::SupCon)
            },
        ),
        (
            "momentum of 1",
            TrainConfig {
                queue_size: 64,
                momentum_encoder: Some(1.0),
                ..config(Method::SupCon)
            },
        ),
        (
            "linear epochs",
            TrainConfig {
                linear: LinearEvalConfig {
                    epochs: 0,
                    ..LinearEvalConfig::default()
                },
                ..config(Method::SupCon)
            },
        ),
        (
            "linear lr",
            TrainConfig {
                linear: LinearEvalConfig {
                    lr: f64::INFINITY,
                    ..LinearEvalConfig::default()
                },
                ..config(Method::SupCon)
            },
        ),
    ] {
        let err = run(
            &cfg,
            &train,
            &test,
            &dir,
            &RunOptions::default(),
            &device,
            &info(),
        )
        .unwrap_err();
        assert!(matches!(err, PipelineError::Config(_)), "{what}: {err}");
        // Checked before any work: not even the output folder was made.
        assert!(!dir.exists(), "{what}: the output folder was created");
    }
    // A single class would score 100 % in kNN and linear evaluation: refused.
    let one_class: Vec<usize> = (0..train.len()).filter(|&i| train.labels[i] == 3).collect();
    let mut single = train.subset(&one_class);
    single.labels.iter_mut().for_each(|l| *l = 0);
    single.class_names = vec!["3".into()];
    let err = run(
        &config(Method::SupCon),
        &single,
        &test,
        &dir,
        &RunOptions::default(),
        &device,
        &info(),
    )
    .unwrap_err();
    assert!(
        matches!(err, PipelineError::Config(_)) && err.to_string().contains("1 class"),
        "{err}"
    );
}

/// A run whose features turn non-finite stops with a clear error, keeps the last good
/// checkpoint and writes nothing from the bad weights.
#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let Some(device) = device() else { return };
    let (train, test) = small_digits();
    let cfg = TrainConfig {
        knn_every: 0,
        ..config(Method::SupCon)
    };
    let dir = out_dir("diverge");
    let first = RunOptions {
        stop_after_epochs: Some(1),
        ..RunOptions::default()
    };
    assert!(
        run(&cfg, &train, &test, &dir, &first, &device, &info())
            .unwrap()
            .is_none()
    );
    let latest = std::fs::read(dir.join("checkpoints/latest.json")).unwrap();
    let files = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files(&dir);
    // The same run continued on images holding NaN: the encoder's output turns NaN.
    let mut poisoned = train.clone();
    poisoned
        .images
        .iter_mut()
        .step_by(7)
        .for_each(|v| *v = f32::NAN);
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let err = run(&cfg, &poisoned, &test, &dir, &resume, &device, &info()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PipelineError::Diverged(_)), "{text}");
    assert!(text.contains("epoch 2"), "names where: {text}");
    assert!(text.contains("last good checkpoint (epoch 1)"), "{text}");
    assert!(
        text.contains("--lr"),
        "suggests a lower learning rate: {text}"
    );
    assert_eq!(
        std::fs::read(dir.join("checkpoints/latest.json")).unwrap(),
        latest
    );
    assert_eq!(files(&dir), before);
    for f in ["summary.json", "encoder.safetensors"] {
        assert!(!dir.join(f).exists(), "{f} written from bad weights");
    }
    assert_eq!(history(&dir).len(), 1);
    // The good checkpoint still resumes and finishes on the clean images.
    let s = run(&cfg, &train, &test, &dir, &resume, &device, &info())
        .unwrap()
        .unwrap();
    assert!(s.final_loss.is_finite());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An output folder holding a run is never overwritten unasked; `--resume` needs a checkpoint;
/// a second process on one folder is refused; stale temporary files are removed.
#[test]
fn run_folders_are_protected() {
    let root = out_dir("folders");
    let paths = RunPaths { out: root.clone() };
    let fresh = RunOptions::default();
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let overwrite = RunOptions {
        overwrite: true,
        ..RunOptions::default()
    };
    // Nothing to resume from.
    let err = prepare_run_folder(&paths, &resume).unwrap_err();
    assert!(
        matches!(err, PipelineError::Checkpoint { .. })
            && err.to_string().contains("no checkpoint"),
        "{err}"
    );
    let err = prepare_run_folder(
        &paths,
        &RunOptions {
            resume: true,
            overwrite: true,
            ..RunOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, PipelineError::Config(_)), "{err}");

    // An empty folder is fine; while its lock is held a second taker is refused.
    let lock = prepare_run_folder(&paths, &fresh).unwrap();
    let err = prepare_run_folder(&paths, &fresh).unwrap_err();
    assert!(matches!(err, PipelineError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("another training process"),
        "{err}"
    );
    drop(lock);

    // A folder with a run's outputs: refused without --resume / --overwrite, untouched.
    std::fs::create_dir_all(root.join("checkpoints")).unwrap();
    std::fs::write(root.join("checkpoints/latest.json"), b"{}").unwrap();
    std::fs::write(root.join("summary.json"), b"old summary").unwrap();
    std::fs::write(root.join("notes.txt"), b"the user's own file").unwrap();
    let stale = root.join(".metrics.jsonl.tmp.4242.0");
    std::fs::write(&stale, b"half a write").unwrap();
    let err = prepare_run_folder(&paths, &fresh).unwrap_err();
    assert!(matches!(err, PipelineError::RunExists { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("--resume") && text.contains("--overwrite"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(root.join("summary.json")).unwrap(),
        b"old summary"
    );
    assert!(
        !stale.exists(),
        "a killed process's temporary file is cleaned up"
    );
    // Resuming is allowed (a checkpoint is there); overwriting removes the run's outputs only.
    drop(prepare_run_folder(&paths, &resume).unwrap());
    drop(prepare_run_folder(&paths, &overwrite).unwrap());
    assert!(!root.join("summary.json").exists());
    assert!(!root.join("checkpoints").exists());
    assert!(
        root.join("notes.txt").exists(),
        "files that are not the run's stay"
    );
    // A folder that cannot be made (its parent is a file): an error before any training.
    let blocked = RunPaths {
        out: root.join("notes.txt").join("run"),
    };
    let err = prepare_run_folder(&blocked, &fresh).unwrap_err();
    assert!(matches!(err, PipelineError::Io { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A plot that cannot be drawn (the PCA of a one-image test set) is a warning: the summary,
/// the encoder and the other plots are still written.
#[test]
fn a_plot_failure_never_costs_the_summary() {
    let Some(device) = device() else { return };
    let (train, test) = small_digits();
    let cfg = TrainConfig {
        epochs: 1,
        warmup_epochs: 0,
        max_steps_per_epoch: Some(1),
        ..config(Method::Ce)
    };
    let dir = out_dir("plotfail");
    let one = test.subset(&[0]);
    let s = run(
        &cfg,
        &train,
        &one,
        &dir,
        &RunOptions::default(),
        &device,
        &info(),
    )
    .unwrap()
    .expect("summary");
    assert_eq!(s.test_size, 1);
    assert!(dir.join("summary.json").exists());
    assert!(dir.join("encoder.safetensors").exists());
    assert!(dir.join("plots/loss.png").exists());
    assert!(!dir.join("plots/embedding_pca.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The image-folder path learns: the digits written as RGB PNG class folders, read back at 12×12
/// (grayscale detected: one channel, the mild recipe), trained for 8 steps (2 epochs of 4) with
/// batches whose channels span more values than Burn's one-op reduction handles (2 × 256 views
/// of 12×12: 73,728 values a channel, above ~65,536). The kNN monitor and the linear evaluation
/// must be far above chance (10 %; on lavapipe, 2026-12-07: kNN 86 %, linear 78 %, and 83 % /
/// 80 % after a third epoch) and the features not collapsed. (12 rather than 16 pixels: Burn's
/// direct convolutions make this test's time, in proportion to the pixels.)
#[test]
fn folder_images_learn_at_12_pixels() {
    let Some(device) = device() else { return };
    let all = data::digits().unwrap();
    let picks: Vec<usize> = (0..all.len()).step_by(2).collect();
    let root = out_dir("folder-src");
    data::write_image_folder(&all.subset(&picks).to_rgb(), &root).unwrap();
    let images = data::load_image_folder(&root, 12, data::FolderChannels::Auto).unwrap();
    assert_eq!((images.channels, images.height), (1, 12));
    let (tr, te) = data::stratified_split(&images.labels, 0.2, 0).unwrap();
    let (train, test) = (images.subset(&tr), images.subset(&te));
    let recipe = Recipe::for_images(&train);
    assert_eq!(recipe, Recipe::Mild);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 256,
        lr: 0.1,
        warmup_epochs: 0,
        knn_k: 20,
        augment: recipe.config(12, vec![0.3], vec![0.4]),
        linear: LinearEvalConfig {
            epochs: 5,
            batch_size: 128,
            ..LinearEvalConfig::default()
        },
        ..config(Method::SupCon)
    };
    let dir = out_dir("folder-run");
    let summary = run(
        &cfg,
        &train,
        &test,
        &dir,
        &RunOptions::default(),
        &device,
        &info(),
    )
    .unwrap()
    .unwrap();
    let h = history(&dir);
    for m in &h {
        let spread = m.feature_spread.expect("measured with the kNN monitor");
        assert!(!spread.collapsed(), "epoch {}: {spread:?}", m.epoch);
    }
    assert!(
        summary.knn_test_accuracy >= 0.6,
        "kNN {} (chance 0.1)",
        summary.knn_test_accuracy
    );
    assert!(summary.linear_eval_test_accuracy >= 0.6, "{summary:?}");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The reference code's per-step schedule, written out: linear warmup from lr/100, reaching lr
/// on the last warmup step, then cosine decay from lr towards lr/1000 at `total`.
fn reference_rate(lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    let min = lr * 1e-3;
    if step < warmup {
        let from = lr * 0.01;
        return from + (lr - from) * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup) as f64;
    min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[test]
fn schedule_warms_up_then_decays() {
    for (lr, warmup, total) in [(0.5, 10, 100), (0.05, 0, 37), (2.0, 1, 12), (0.1, 3, 4)] {
        let mut schedule = LrSchedule::new(lr, warmup, total).unwrap();
        let rates: Vec<f64> = (0..total).map(|_| schedule.next_rate()).collect();
        for (step, &rate) in rates.iter().enumerate() {
            let want = reference_rate(lr, step, warmup, total);
            assert!(
                (rate - want).abs() <= 1e-12 * want,
                "lr {lr}, warmup {warmup} of {total}: step {step} has {rate}, want {want}"
            );
            let mut resumed = LrSchedule::from_step(lr, warmup, total, step).unwrap();
            assert_eq!(resumed.next_rate(), rate, "resumed at step {step}");
        }
        if warmup > 0 {
            assert!((rates[warmup - 1] - lr).abs() <= 1e-12 * lr);
        }
        assert!(rates[warmup..].windows(2).all(|w| w[1] < w[0]));
        // The same schedule as a Burn scheduler (burn-train's `Learner` takes one): rates ≤ 1 only.
        match LrSchedule::scheduler(lr, warmup, total) {
            Ok(mut burn) => {
                for (step, &rate) in rates.iter().enumerate() {
                    let got = burn.step().base();
                    assert!(
                        (got - rate).abs() <= 1e-12 * rate,
                        "Burn scheduler, lr {lr}, warmup {warmup} of {total}: step {step} has \
                         {got}, want {rate}"
                    );
                }
            }
            Err(e) => assert!(lr > 1.0, "lr {lr}: {e}"),
        }
    }
    assert!(LrSchedule::scheduler(2.0, 1, 12).is_err());
    // The values the schedule is known by.
    let mut s = LrSchedule::new(0.5, 10, 100).unwrap();
    let rates: Vec<f64> = (0..100).map(|_| s.next_rate()).collect();
    assert!((rates[0] - (0.005 + 0.495 * 0.1)).abs() < 1e-12);
    assert!((rates[10] - 0.5).abs() < 1e-12);
    assert!((rates[55] - (0.5e-3 + (0.5 - 0.5e-3) * 0.5)).abs() < 1e-12);
    assert!(LrSchedule::new(0.5, 10, 10).is_err());
    assert!(LrSchedule::new(f64::NAN, 1, 10).is_err());
}
