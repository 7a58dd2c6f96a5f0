//! The reliability bar: a short training killed with SIGKILL at random moments (checkpoint
//! writes included) and resumed after each kill must finish with the same metrics and encoder
//! as an uninterrupted run.
//!
//! The test binary runs itself as the training process: `crash_child` (ignored, and inert
//! without its environment variable) trains one run folder, resuming when it holds a checkpoint.
//! `cargo test` kills it [`CI_KILLS`] times; `SUPCON_CRASH_KILLS=20 cargo test --release --test
//! pipeline_crash -- --ignored crash_many` runs the long version.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gpu;
use common::pipeline::{info, small_digits};
use rand::{Rng, SeedableRng};
use supcon_wgpu::pipeline::eval::LinearEvalConfig;
use supcon_wgpu::pipeline::is_temp_file;
use supcon_wgpu::pipeline::model::{ModelPreset, Stem};
use supcon_wgpu::pipeline::train::{EpochMetrics, Method, RunOptions, Summary, TrainConfig, run};

/// Kills in the CI-sized test.
const CI_KILLS: usize = 3;
const CHILD_ENV: &str = "SUPCON_CRASH_CHILD_DIR";

/// The pipeline tests' tiny setting with one more epoch and three steps per epoch.
fn config() -> TrainConfig {
    TrainConfig {
        epochs: 4,
        seed: 11,
        linear: LinearEvalConfig {
            epochs: 10,
            batch_size: 64,
            ..LinearEvalConfig::default()
        },
        max_steps_per_epoch: Some(3),
        ..common::pipeline::config(Method::SupCon)
    }
}

/// The training process: one run in the folder named by [`CHILD_ENV`], resumed when the folder
/// holds a checkpoint.
#[test]
#[ignore = "the training process of the crash tests; runs only under their environment"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (device, _) = supcon_wgpu::backend::device::request_burn_device().expect("device");
    let (train, test) = small_digits();
    let options = RunOptions {
        resume: dir.join("checkpoints/latest.json").exists(),
        ..RunOptions::default()
    };
    run(&config(), &train, &test, &dir, &options, &device, &info())
        .unwrap()
        .expect("the run finishes");
}

fn spawn_child(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the training process")
}

fn history(out: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(out: &Path) -> Summary {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// The exported encoder's tensors, by name.
fn encoder(out: &Path) -> Vec<(String, Vec<f32>)> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    #[allow(deprecated)]
    let cpu = burn::tensor::Device::ndarray();
    let mut module = ModelPreset::Small.config(1, Stem::Cifar).init(&cpu);
    let mut store = SafetensorsStore::from_file(out.join("encoder.safetensors"));
    let applied = module.load_from(&mut store).expect("encoder loads");
    assert!(applied.missing.is_empty() && applied.errors.is_empty());
    let mut tensors: Vec<(String, Vec<f32>)> = module
        .collect(None, None, false)
        .into_iter()
        .filter(|t| t.dtype.is_float())
        .map(|t| {
            let data = burn::store::bridge::into_data(t.clone()).unwrap();
            (t.name, data.convert::<f32>().try_into_vec::<f32>().unwrap())
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Runs the child to completion, killing it at random moments until `kills` kills landed;
/// returns how many kills interrupted a file write (a temporary file was left behind).
fn train_with_kills(dir: &Path, kills: usize, run_seconds: f64, seed: u64) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    let mut in_write = 0;
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 4 * kills + 10,
            "no progress after {attempts} starts"
        );
        // Temporary files a killed process left (the next process removes them): only newer
        // ones show a write under way.
        let stale: Vec<String> = temp_files(dir).collect();
        let fresh_write = || temp_files(dir).any(|name| !stale.contains(&name));
        let mut child = spawn_child(dir);
        if killed < kills {
            // Half the kills at a random time, half at the first checkpoint write seen after a
            // random delay (the kill then lands in the middle of the write or just after it).
            // Early enough that a resumed process (which starts past its checkpoint) is still
            // running.
            let delay = rng.random_range(0.02..0.5) * run_seconds;
            let deadline = Instant::now() + Duration::from_secs_f64(delay);
            let at_write = killed % 2 == 1;
            let mut exited = None;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    exited = Some(status);
                    break;
                }
                let due = Instant::now() >= deadline;
                if due && (!at_write || fresh_write()) {
                    break;
                }
                if due && at_write && Instant::now() >= deadline + Duration::from_secs(20) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(if at_write && due {
                    100
                } else {
                    5_000
                }));
            }
            if let Some(status) = exited {
                assert!(status.success(), "the training process failed: {status}");
                assert!(
                    !done(dir),
                    "the run finished after {killed} of {kills} kills: kill earlier"
                );
                continue;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed += 1;
            if fresh_write() {
                in_write += 1;
            }
            continue;
        }
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "the resumed training process failed: {status}"
        );
        assert!(done(dir));
        return in_write;
    }
}

fn done(dir: &Path) -> bool {
    dir.join("summary.json").exists()
}

fn temp_files(dir: &Path) -> impl Iterator<Item = String> {
    [dir.to_path_buf(), dir.join("checkpoints")]
        .into_iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_temp_file(n))
}

/// Whether a file write is under way (or was cut off): a temporary file exists.
fn writing(dir: &Path) -> bool {
    temp_files(dir).next().is_some()
}

fn crash_test(kills: usize) {
    if gpu().is_none() {
        return;
    }
    let root = std::env::temp_dir().join(format!("supcon-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Reference: one uninterrupted process (also times a run, for the kill times).
    let a = root.join("uninterrupted");
    let t0 = Instant::now();
    let status = spawn_child(&a).wait().unwrap();
    assert!(status.success(), "uninterrupted run failed");
    let run_seconds = t0.elapsed().as_secs_f64();

    let b = root.join("killed");
    let in_write = train_with_kills(&b, kills, run_seconds, 5);
    eprintln!(
        "{kills} kills over a {run_seconds:.1} s run; {in_write} left a half-written file behind"
    );
    assert!(!writing(&b), "the finished run left temporary files");

    let (ha, hb) = (history(&a), history(&b));
    assert_eq!(ha.len(), hb.len());
    for (x, y) in ha.iter().zip(&hb) {
        assert!(
            (x.loss - y.loss).abs() <= 1e-4 * x.loss.abs().max(1.0),
            "epoch {}: {} uninterrupted vs {} after kills",
            x.epoch,
            x.loss,
            y.loss
        );
        assert_eq!(x.lr, y.lr);
    }
    let (sa, sb) = (summary(&a), summary(&b));
    let one_image = 1.0 / sa.test_size as f64 + 1e-12;
    assert!(
        (sa.linear_eval_test_accuracy - sb.linear_eval_test_accuracy).abs() <= one_image,
        "{} vs {}",
        sa.linear_eval_test_accuracy,
        sb.linear_eval_test_accuracy
    );
    assert!((sa.knn_test_accuracy - sb.knn_test_accuracy).abs() <= one_image);
    for ((name, x), (_, y)) in encoder(&a).iter().zip(&encoder(&b)) {
        let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let err = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            err <= 1e-3 * scale,
            "{name}: max difference {err} (scale {scale})"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn killed_and_resumed_runs_finish_like_uninterrupted_ones() {
    crash_test(CI_KILLS);
}

/// The full reliability bar: `SUPCON_CRASH_KILLS` kills (default 20).
#[test]
#[ignore = "long: about a minute per kill on lavapipe"]
fn crash_many() {
    let kills = std::env::var("SUPCON_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    crash_test(kills);
}
