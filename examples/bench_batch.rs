//! Benchmark of a whole SupCon training step — encoder + projection head forward, the fused loss,
//! backward, an SGD step — plain and with gradient caching, on autodiff wgpu.
//!
//! Each row runs in a child process of its own (this program with `--row`), so that a step the
//! device cannot run (buffers beyond its binding limit, a panic inside Burn, a hang) gives a row
//! of nulls and its reason instead of ending the benchmark, and so that each row's memory is
//! measured from a fresh pool. In a child: one warm-up step (compilation; tuning with
//! `autotune`), Burn's pool cleaned, then `--runs` timed steps (median). `peak_device_bytes` is
//! what Burn's pool has reserved after them — model, optimizer state and the largest step's
//! buffers (the pool keeps pages until cleaned, so this is its high-water mark).
//!
//! ```text
//! cargo run --release --example bench_batch -- [--models small,resnet18] [--batches 32,128,512,1024]
//!     [--chunks 16,32] [--devices 1,2] [--image-size 32] [--runs 2] [--timeout-s 1800]
//!     [--plain-timeout-s S] [--short-warmup] [--json PATH] [--remote URL]
//! ```
//!
//! `--devices` lists device counts: a row with `D > 1` spreads each step over `D` devices
//! (`backend::data_parallel`: the GPUs of `--devices all` in `train_wgpu`, taken in turn, so
//! with fewer GPUs than `D` — or on lavapipe — several devices share an adapter and nothing runs
//! faster). Such a row also times, after its steps, what a step moves between the devices:
//! the model's weights to the other devices, a model's worth of gradients back, and the other
//! devices' features to the main one. With `--remote ws://HOST:PORT` (feature `remote`) the
//! other devices are a `serve_device` server's, so the row measures a step over the network.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig, momentum::MomentumConfig};
use burn::tensor::Device;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use clap::Parser;
use serde_json::{Value, json};
use supcon_wgpu::backend::data_parallel::replica;
use supcon_wgpu::backend::{DataParallelConfig, GradCacheConfig, SupConLoss, SupConLossConfig};
use supcon_wgpu::pipeline::model::{HeadKind, ModelPreset, PretrainModel, ProjectionHead, Stem};

#[derive(Parser)]
#[command(about = "A SupCon training step, plain and with gradient caching, on autodiff wgpu")]
struct Args {
    /// Encoders (`small`, `resnet18`, `resnet34`, `resnet50`; CIFAR stem).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["small".to_string(), "resnet18".to_string()])]
    models: Vec<String>,
    /// Images per step (two views each).
    #[arg(long, value_delimiter = ',', default_values_t = vec![32, 128, 512, 1024])]
    batches: Vec<usize>,
    /// Gradient-caching chunks (images); each batch also runs plain.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 32])]
    chunks: Vec<usize>,
    /// Device counts: each row runs with each (data parallelism over several devices).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1])]
    devices: Vec<usize>,
    /// Side of the square 3-channel images.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Timed steps per row (median), after one warm-up step.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Seconds a row may take before it is stopped and reported as null.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Seconds a plain (uncached) row may take (default: --timeout-s): a plain step that
    /// cannot fit gets its null sooner while the cached rows keep the long limit.
    #[arg(long)]
    plain_timeout_s: Option<u64>,
    /// Warm cached rows up on one chunk of images instead of the whole batch (for rows whose
    /// step takes tens of minutes; plain rows always warm up on their batch).
    #[arg(long)]
    short_warmup: bool,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// In rows with `D > 1`, the other `D - 1` devices are those of this server
    /// (`ws://HOST:PORT`, the `serve_device` example; its devices in order; the token from
    /// SUPCON_REMOTE_TOKEN) instead of local adapters. Needs the `remote` feature.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// Internal: run one row (`MODEL,BATCH,CHUNK,DEVICES`, chunk 0 = plain) and print its JSON.
    #[arg(long, hide = true)]
    row: Option<String>,
}

const FEAT_DIM: usize = 128;
const CLASSES: i32 = 10;
/// How long a child may take to exit once it has printed its result.
const EXIT_GRACE: Duration = Duration::from_secs(30);

fn preset(name: &str) -> Result<ModelPreset, String> {
    match name {
        "small" => Ok(ModelPreset::Small),
        "resnet18" => Ok(ModelPreset::ResNet18),
        "resnet34" => Ok(ModelPreset::ResNet34),
        "resnet50" => Ok(ModelPreset::ResNet50),
        other => Err(format!("unknown model {other:?}")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    for m in &args.models {
        preset(m)?;
    }
    if args
        .batches
        .iter()
        .chain(&args.chunks)
        .chain(&args.devices)
        .any(|&n| n == 0)
        || args.runs == 0
    {
        return Err("batches, chunks, devices and runs must be at least 1".into());
    }
    if let Some(row) = &args.row {
        let out = child_row(&args, row)?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{out}")?;
        stdout.flush()?;
        return Ok(());
    }

    let ctx = supcon_wgpu::device::request_device(supcon_wgpu::device::Limits::Adapter)?;
    let adapter = ctx.describe();
    drop(ctx);
    println!("adapter: {adapter}");
    let burn_autotune = supcon_wgpu::backend::BURN_AUTOTUNE;
    println!(
        "Burn kernels: {}",
        if burn_autotune { "autotuned" } else { "fixed" }
    );
    println!(
        "{:>9} {:>5} {:>6} {:>6} {:>4} {:>10} {:>9} {:>14} {:>10} {:>9} {:>9} {:>9}  note",
        "model",
        "size",
        "batch",
        "chunk",
        "dev",
        "step ms",
        "images/s",
        "peak B",
        "vs plain",
        "vs 1 dev",
        "weights",
        "grads",
    );
    let mut rows = Vec::new();
    for model in &args.models {
        for &batch in &args.batches {
            let mut plain_rate: Option<f64> = None;
            let chunks =
                std::iter::once(0).chain(args.chunks.iter().copied().filter(|&c| c < batch));
            let rows_of = chunks.flat_map(|c| args.devices.iter().map(move |&d| (c, d)));
            let mut one_device_rate: Option<f64> = None;
            for (chunk, devices) in rows_of {
                let (result, note) = spawn_row(&args, model, batch, chunk, devices);
                let step_ms = result.as_ref().and_then(|r| r["step_ms"].as_f64());
                let peak = result
                    .as_ref()
                    .and_then(|r| r["peak_device_bytes"].as_u64());
                let rate = step_ms.map(|ms| batch as f64 / (ms / 1000.0));
                if chunk == 0 && devices == 1 {
                    plain_rate = rate;
                }
                if devices == 1 {
                    one_device_rate = rate;
                }
                let ratio = |base: Option<f64>, applies: bool| match (rate, base) {
                    (Some(r), Some(p)) if applies => format!("{:.2}x", r / p),
                    _ => "-".into(),
                };
                let moved = |key: &str| result.as_ref().and_then(|r| r[key].as_f64());
                let show = |v: Option<String>| v.unwrap_or_else(|| "null".into());
                let ms = |v: Option<f64>| match devices {
                    1 => "-".to_string(),
                    _ => show(v.map(|v| format!("{v:.0}"))),
                };
                println!(
                    "{:>9} {:>5} {:>6} {:>6} {:>4} {:>10} {:>9} {:>14} {:>10} {:>9} {:>9} {:>9}  {}",
                    model,
                    args.image_size,
                    batch,
                    if chunk == 0 {
                        "-".into()
                    } else {
                        chunk.to_string()
                    },
                    devices,
                    show(step_ms.map(|v| format!("{v:.0}"))),
                    show(rate.map(|v| format!("{v:.1}"))),
                    show(peak.map(|v| v.to_string())),
                    ratio(plain_rate, chunk > 0 && devices == 1),
                    ratio(one_device_rate, devices > 1),
                    ms(moved("weights_ms")),
                    ms(moved("grads_ms")),
                    match (devices, moved("features_ms")) {
                        (1, _) => note.clone(),
                        (_, f) =>
                            format!("features {} ms {note}", show(f.map(|v| format!("{v:.1}")))),
                    }
                );
                rows.push(json!({
                    "model": model, "image_size": args.image_size, "batch": batch,
                    "chunk": (chunk > 0).then_some(chunk), "devices": devices,
                    "step_ms": step_ms, "images_per_s": rate, "peak_device_bytes": peak,
                    "weights_ms": moved("weights_ms"), "grads_ms": moved("grads_ms"),
                    "features_ms": moved("features_ms"),
                    "note": (!note.is_empty()).then_some(note),
                }));
            }
        }
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "adapter": adapter, "burn_autotune": burn_autotune, "runs": args.runs,
            "short_warmup": args.short_warmup, "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs one row in a child process; `None` and the reason when it fails or times out.
fn spawn_row(
    args: &Args,
    model: &str,
    batch: usize,
    chunk: usize,
    devices: usize,
) -> (Option<Value>, String) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return (None, format!("no executable path: {e}")),
    };
    let child = Command::new(exe)
        .arg("--row")
        .arg(format!("{model},{batch},{chunk},{devices}"))
        .args(["--image-size", &args.image_size.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(args.short_warmup.then_some("--short-warmup"))
        .args(args.remote.iter().flat_map(|url| ["--remote", url]))
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (None, format!("could not start: {e}")),
    };
    // Drain both pipes on threads so a chatty child never blocks on a full pipe. Stdout comes
    // line by line: its result is its last line that parses as JSON.
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stdout = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let limit = match chunk {
        0 => args.plain_timeout_s.unwrap_or(args.timeout_s),
        _ => args.timeout_s,
    };
    let deadline = Instant::now() + Duration::from_secs(limit);
    let mut result: Option<Value> = None;
    // Once the result is in, the child only has to exit; one that does not (a driver's teardown
    // hanging) is stopped after this grace period and its result kept.
    let mut exit_deadline: Option<Instant> = None;
    let status = loop {
        for line in lines_rx.try_iter() {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                result = Some(v);
                exit_deadline.get_or_insert(Instant::now() + EXIT_GRACE);
            }
        }
        let now = Instant::now();
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if now < deadline && exit_deadline.is_none_or(|d| now < d) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(if exit_deadline.is_some_and(|d| now >= d) {
                    format!("did not exit {} s after its result", EXIT_GRACE.as_secs())
                } else {
                    format!("stopped after {limit} s")
                });
            }
        }
    };
    let _ = stdout.join();
    let err = stderr.join().unwrap_or_default();
    // Lines that came between the last check and the child's exit.
    for line in lines_rx.try_iter() {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            result = Some(v);
        }
    }
    match (status, result) {
        (Ok(status), Some(v)) if status.success() => (Some(v), String::new()),
        // The row was measured; only the child's exit went wrong (e.g. a crash in the driver's
        // exit handlers): keep the numbers, say what happened.
        (Ok(status), Some(v)) => (Some(v), format!("child exit after its result: {status}")),
        (Err(why), Some(v)) => (Some(v), format!("child {why}")),
        (Err(why), None) => (None, why),
        (Ok(status), None) => {
            // The panic's message (the line after "panicked at"), else the last error line;
            // wgpu's log lines about the GL backend it probed are noise here.
            let lines: Vec<&str> = err
                .lines()
                .filter(|l| !l.contains("wgpu_hal::gles"))
                .collect();
            let reason: String = lines
                .iter()
                .position(|l| l.contains("panicked at"))
                .and_then(|i| lines.get(i + 1))
                .or_else(|| lines.iter().rev().find(|l| l.starts_with("Error")))
                .or(lines.last())
                .map_or("no message", |l| l.trim())
                .chars()
                .take(160)
                .collect();
            (None, format!("failed ({status}): {reason}"))
        }
    }
}

/// The first `count` devices of the server at `url`.
#[cfg(feature = "remote")]
fn remote_devices(url: &str, count: usize) -> Result<Vec<Device>, Box<dyn std::error::Error>> {
    use supcon_wgpu::backend::remote;
    let devices = remote::connect(url, &remote::read_token(None)?)?;
    if devices.len() < count {
        return Err(format!(
            "{url} hosts {} device(s), the row needs {count}",
            devices.len()
        )
        .into());
    }
    Ok(devices.into_iter().take(count).collect())
}

#[cfg(not(feature = "remote"))]
fn remote_devices(_: &str, _: usize) -> Result<Vec<Device>, Box<dyn std::error::Error>> {
    Err("--remote needs the `remote` feature (cargo run --features remote ...)".into())
}

/// One row, in the child: the model, one warm-up step, `runs` timed steps.
fn child_row(args: &Args, row: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let parts: Vec<&str> = row.split(',').collect();
    let [model, batch, chunk, n_devices] = parts[..] else {
        return Err(format!("--row {row:?}: expected MODEL,BATCH,CHUNK,DEVICES").into());
    };
    let (batch, chunk, n_devices): (usize, usize, usize) =
        (batch.parse()?, chunk.parse()?, n_devices.parse()?);
    let devices: Vec<Device> = match (n_devices, &args.remote) {
        (1, _) => vec![supcon_wgpu::backend::device::request_burn_device()?.0],
        (n, Some(url)) => std::iter::once(supcon_wgpu::backend::device::request_burn_device()?.0)
            .chain(remote_devices(url, n - 1)?)
            .collect(),
        (n, None) => {
            // Every GPU, taken in turn: devices share an adapter where there are fewer.
            let gpus = supcon_wgpu::backend::device::all_adapter_indices();
            let indices: Vec<usize> = (0..n).map(|i| gpus[i % gpus.len().max(1)]).collect();
            supcon_wgpu::backend::device::request_burn_devices(&indices)?
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        }
    };
    let devices: Vec<Device> = devices.into_iter().map(|d| d.autodiff()).collect();
    let device = devices[0].clone();
    let parallel = (n_devices > 1)
        .then(|| {
            DataParallelConfig::new(devices.clone())
                .with_grad_cache_chunk((chunk > 0).then_some(chunk))
                .try_init()
        })
        .transpose()?;
    let encoder = preset(model)?.config(3, Stem::Cifar);
    let dim = encoder.feature_dim();
    let mut net = PretrainModel {
        encoder: encoder.init(&device),
        head: Some(ProjectionHead::new(HeadKind::Mlp, dim, FEAT_DIM, &device)),
        classifier: None,
    };
    let mut optim: ModuleOptimizer = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .init();
    let loss = SupConLossConfig::new().try_init()?;
    let cache = (chunk > 0)
        .then(|| GradCacheConfig::new(chunk).try_init())
        .transpose()?;
    let s = args.image_size;
    let mut step = |net: PretrainModel,
                    batch: usize|
     -> Result<PretrainModel, Box<dyn std::error::Error>> {
        let views: Vec<Tensor<4>> = (0..2)
            .map(|_| Tensor::random([batch, 3, s, s], Distribution::Normal(0.0, 1.0), &device))
            .collect();
        let labels: Vec<i32> = (0..batch as i32).map(|i| i % CLASSES).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
        let (value, grads) = match &parallel {
            Some(parallel) => {
                let step = parallel.step(&net, &views, |f| loss.try_forward(f, Some(labels)))?;
                (step.loss.inner(), step.grads)
            }
            None => supcon_step(&net, &views, labels, &loss, cache.as_ref())?,
        };
        let net = optim.step(0.05, net, grads);
        let v = value
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        if !v.first().is_some_and(|x| x.is_finite()) {
            return Err(format!("the loss is {v:?}").into());
        }
        // The step is done when the device is idle: the loss on the host is not enough, the
        // optimizer's update is queued after it. Left in flight, that work is still running
        // when the process exits (lavapipe then crashes or hangs in its exit handlers).
        device
            .sync()
            .map_err(|e| format!("the device failed: {e:?}"))?;
        Ok(net)
    };
    // With --short-warmup a cached row warms up on one chunk: the encoder runs the same chunk
    // shapes, so the timed steps find their kernels compiled and tuned.
    let warmup = match (args.short_warmup, chunk) {
        (true, c) if c > 0 => c.min(batch),
        _ => batch,
    };
    net = step(net, warmup)?;
    device.memory_cleanup();
    let mut times = Vec::new();
    for _ in 0..args.runs {
        let t0 = Instant::now();
        net = step(net, batch)?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let peak = device.memory_pool_usage().map_or(0, |u| u.bytes_reserved);
    let mut out = json!({ "step_ms": times[times.len() / 2], "peak_device_bytes": peak });
    if n_devices > 1 {
        // What a step moves, timed apart (median of `runs`): the weights to every other device,
        // a model's worth of gradients back, the other devices' features to the main one.
        let sync_all = || -> Result<(), Box<dyn std::error::Error>> {
            for d in &devices {
                d.sync().map_err(|e| format!("the device failed: {e:?}"))?;
            }
            Ok(())
        };
        let rows_elsewhere = 2 * batch
            - 2 * parallel
                .as_ref()
                .map_or(batch, |p| p.shards(batch)[0].len());
        let (mut weights, mut grads, mut features) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            sync_all()?;
            let t0 = Instant::now();
            let replicas: Vec<PretrainModel> =
                devices[1..].iter().map(|d| replica(&net, d)).collect();
            sync_all()?;
            weights.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t0 = Instant::now();
            // The way back carries a model's worth of floats in one packed transfer each, as
            // the gradients do.
            let back: Vec<PretrainModel> = replicas.iter().map(|r| replica(r, &device)).collect();
            sync_all()?;
            grads.push(t0.elapsed().as_secs_f64() * 1000.0);
            drop(back);
            let z = Tensor::<2>::random(
                [rows_elsewhere.max(1), FEAT_DIM],
                Distribution::Normal(0.0, 1.0),
                &devices[1],
            );
            sync_all()?;
            let t0 = Instant::now();
            let _ = z.to_device(&device).into_data();
            features.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        out["weights_ms"] = json!(median(weights));
        out["grads_ms"] = json!(median(grads));
        out["features_ms"] = json!(median(features));
    }
    Ok(out)
}

/// The loss and parameter gradients of one step: one forward pass of both views, or gradient
/// caching.
fn supcon_step(
    net: &PretrainModel,
    views: &[Tensor<4>],
    labels: Tensor<1, Int>,
    loss: &SupConLoss,
    cache: Option<&supcon_wgpu::backend::GradCache>,
) -> Result<(Tensor<1>, GradientsParams), supcon_wgpu::Error> {
    match cache {
        Some(cache) => {
            let step = cache.step(net, views, |f| loss.try_forward(f, Some(labels)))?;
            Ok((step.loss.inner(), step.grads))
        }
        None => {
            let b = views[0].dims()[0];
            let z = net.forward(Tensor::cat(views.to_vec(), 0));
            let d = z.dims()[1];
            let value = loss.try_forward(z.reshape([2, b, d]).swap_dims(0, 1), Some(labels))?;
            let grads = GradientsParams::from_grads(value.backward(), net);
            Ok((value.inner(), grads))
        }
    }
}
