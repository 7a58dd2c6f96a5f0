//! Image folders streamed from disk through the whole pipeline: a folder read as needed
//! ([`data::open_split_image_folder`]) trains as the same folder decoded into memory does, with
//! 3 decoding workers and a byte cache, and with 1 worker and none, stopped and resumed; host memory
//! does not grow with the folder (a child process trained on 1,000, then on 20,000 PNGs).
#![cfg(feature = "pipeline")]

use crate::common;

use std::path::{Path, PathBuf};

use common::gpu;
use common::pipeline::{
    ALLOCATOR_TUNABLES, assert_same_run, config, device, history, info, small_digits, status_bytes,
    warm_up_autotune,
};
use supcon_wgpu::pipeline::data::{self, FolderOptions, ImageSource};
use supcon_wgpu::pipeline::eval::LinearEvalConfig;
use supcon_wgpu::pipeline::train::{Method, RunOptions, TrainConfig, run};

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supcon-stream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The pipeline tests' setting, two epochs and a short linear evaluation.
fn short_config() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        linear: LinearEvalConfig {
            epochs: 5,
            batch_size: 64,
            ..LinearEvalConfig::default()
        },
        ..config(Method::SupCon)
    }
}

#[test]
fn streamed_folder_trains_as_in_memory_and_resumes() {
    let Some(device) = device() else { return };
    let (train, test) = small_digits();
    let root = out_dir("folder");
    data::write_image_folder(&train, &root.join("train")).unwrap();
    data::write_image_folder(&test, &root.join("val")).unwrap();
    let (train_dir, test_dir) = data::split_folders(&root).unwrap().expect("split");
    let options = FolderOptions::new(8);
    let (mem_train, mem_test) =
        data::load_split_image_folder(&train_dir, &test_dir, &options).unwrap();
    let (mem_train, mem_test) = (mem_train.dataset, mem_test.dataset);
    let cfg = short_config();
    let full = |train: &dyn ImageSource, test: &dyn ImageSource, out: &Path| {
        run(
            &cfg,
            train,
            test,
            out,
            &RunOptions::default(),
            &device,
            &info(),
        )
        .unwrap()
        .expect("a summary")
    };

    warm_up_autotune("stream", &cfg, &mem_train, &mem_test, &device);

    let a_dir = out_dir("memory");
    let a = full(&mem_train, &mem_test, &a_dir);
    let ha = history(&a_dir);
    // Three workers and a cache smaller than the images here; one worker and no cache below,
    // stopped and resumed.
    let (workers, cache_bytes) = (3, 16 << 10);
    let cached = FolderOptions {
        workers: Some(workers),
        cache_bytes,
        ..options
    };
    let (tr, te) = data::open_split_image_folder(&train_dir, &test_dir, &cached).unwrap();
    assert!(tr.skipped.is_empty() && te.skipped.is_empty());
    assert_eq!(tr.source.shape(), [1, 8, 8]);
    let dir = out_dir("streamed");
    let b = full(&tr.source, &te.source, &dir);
    let how = format!("streamed, {workers} workers, cache {cache_bytes} B");
    assert_same_run(&ha, &history(&dir), &how);
    assert!(
        (a.linear_eval_test_accuracy - b.linear_eval_test_accuracy).abs()
            <= 1.0 / mem_test.len() as f64 + 1e-9,
        "{how}: linear evaluation {} vs {}",
        a.linear_eval_test_accuracy,
        b.linear_eval_test_accuracy
    );
    // The budget holds and fills: 16 KiB keep 256 of the ~480 one-channel 8×8 images.
    assert_eq!(
        tr.source.cached_bytes(),
        cache_bytes,
        "{how}: the cache fills up"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Streamed (one worker, no cache), stopped after one epoch and resumed: the uninterrupted
    // run again.
    let options = FolderOptions {
        workers: Some(1),
        cache_bytes: 0,
        ..options
    };
    let (tr, te) = data::open_split_image_folder(&train_dir, &test_dir, &options).unwrap();
    let b_dir = out_dir("resumed");
    let stop = RunOptions {
        stop_after_epochs: Some(1),
        ..RunOptions::default()
    };
    assert!(
        run(
            &cfg,
            &tr.source,
            &te.source,
            &b_dir,
            &stop,
            &device,
            &info()
        )
        .unwrap()
        .is_none()
    );
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    run(
        &cfg,
        &tr.source,
        &te.source,
        &b_dir,
        &resume,
        &device,
        &info(),
    )
    .unwrap()
    .expect("a summary");
    assert_same_run(&ha, &history(&b_dir), "streamed, resumed");
    for dir in [&a_dir, &b_dir, &root] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

const CHILD_ENV: &str = "SUPCON_STREAM_CHILD_DIR";
/// Side of the memory test's images, and its two folders' sizes.
const SIDE: u32 = 32;
const FOLDERS: [(&str, usize); 2] = [("small", 1_000), ("large", 20_000)];
/// How much more host memory the larger folder's run may hold (and peak at) than the smaller
/// one's: its file list and labels, far below the 19,000 more images' 233 MiB as f32.
const GROWTH_BOUND: u64 = 32 << 20;

/// The training process of the memory test. For each of [`FOLDERS`], smaller first (so that the
/// kernels are compiled and the pools filled before the larger one runs):
/// `$SUPCON_STREAM_CHILD_DIR/<name>` opened (no cache, one worker), split, two steps of 16
/// images of the small model trained and checkpointed; then, with the folder still open, prints
/// `memory NAME RSS PEAK`.
#[test]
#[ignore = "the training process of the streaming memory test; runs only under its environment"]
fn stream_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let (device, _) = supcon_wgpu::backend::device::request_burn_device().expect("device");
    let options = FolderOptions {
        workers: Some(1),
        ..FolderOptions::new(SIDE)
    };
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        max_steps_per_epoch: Some(2),
        knn_every: 100,
        augment: supcon_wgpu::pipeline::augment::AugmentConfig::cifar(vec![0.5; 3], vec![0.25; 3]),
        ..config(Method::SupCon)
    };
    let stop = RunOptions {
        stop_after_epochs: Some(1),
        ..RunOptions::default()
    };
    for (name, n) in FOLDERS {
        let all = data::open_image_folder(&dir.join(name), &options)
            .unwrap()
            .source;
        assert_eq!(all.len(), n);
        let (tr, te) = data::stratified_split(all.labels(), 0.2, 0).unwrap();
        let (train, test) = (all.subset(&tr), all.subset(&te));
        assert_eq!(train.shape(), [3, SIDE as usize, SIDE as usize]);
        let out = dir.join(format!("run-{name}"));
        assert!(
            run(&cfg, &train, &test, &out, &stop, &device, &info())
                .unwrap()
                .is_none()
        );
        // On a line of its own: the harness prints "test ... " before a test's output.
        println!(
            "\nmemory {name} {} {}",
            status_bytes("VmRSS"),
            status_bytes("VmHWM")
        );
    }
}

/// Writes `n` `SIDE × SIDE` RGB PNGs in 10 class folders under `dir`: one encoded picture per
/// class, written `n / 10` times (what is measured is the memory per file listed and read, not
/// the content).
fn write_pngs(dir: &Path, n: usize) {
    let pictures: Vec<Vec<u8>> = (0..10u32)
        .map(|k| {
            let img = image::RgbImage::from_fn(SIDE, SIDE, |x, y| {
                image::Rgb([(x * 7 + k * 20) as u8, (y * 5) as u8, (k * 25) as u8])
            });
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            png.into_inner()
        })
        .collect();
    for i in 0..n {
        let class = dir.join(format!("c{}", i % 10));
        if i < 10 {
            std::fs::create_dir_all(&class).unwrap();
        }
        std::fs::write(class.join(format!("{i:05}.png")), &pictures[i % 10]).unwrap();
    }
}

#[test]
fn streamed_folder_memory_does_not_grow_with_the_folder() {
    if gpu().is_none() {
        return;
    }
    let dir = out_dir("rss");
    for (name, n) in FOLDERS {
        write_pngs(&dir.join(name), n);
    }
    let out = common::child_test(module_path!(), "stream_child")
        .env(CHILD_ENV, &dir)
        .env("GLIBC_TUNABLES", ALLOCATOR_TUNABLES)
        .output()
        .expect("spawn the training process");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the training process failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let memory: Vec<[u64; 2]> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("memory "))
        .map(|l| {
            let v: Vec<u64> = l.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
            [v[0], v[1]]
        })
        .collect();
    let [small, large] = memory[..] else {
        panic!("two memory lines expected:\n{stdout}")
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (n_small, n_large) = (FOLDERS[0].1, FOLDERS[1].1);
    let as_f32 = (n_large * 3 * (SIDE * SIDE) as usize * 4) as u64;
    eprintln!(
        "streamed folder: RSS {:.1} MiB (peak {:.1}) after {n_small} images, {:.1} MiB (peak \
         {:.1}) after {n_large} ({:.1} MiB as f32); bound {:.1} MiB more",
        mib(small[0]),
        mib(small[1]),
        mib(large[0]),
        mib(large[1]),
        mib(as_f32),
        mib(GROWTH_BOUND)
    );
    for (i, what) in [(0, "resident"), (1, "peak")] {
        assert!(
            large[i] <= small[i] + GROWTH_BOUND,
            "{n_large} images: {what} memory {:.1} MiB above {n_small} images'",
            mib(large[i].saturating_sub(small[i]))
        );
    }
}
