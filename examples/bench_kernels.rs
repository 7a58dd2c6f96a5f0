//! Benchmark of the fused SupCon kernels against the project's cosine-similarity kernel.
//!
//! For each N (D = 128 by default): the median time of forward + backward of the fused loss, the
//! median time of one N×N×D cosine-similarity product (null where its N×N output cannot fit one
//! storage binding of the device), their ratio, the splits of the forward / backward column
//! loops and the fewest workgroups any of the loss's heavy (N²) dispatches launches, and the
//! extra device memory the loss allocates (its O(splits · N) workspace; the gradient, an output
//! of the same size as the features, is listed apart). Each size is warmed up once before
//! timing; the largest (default 65,536) is timed once.
//!
//! ```text
//! cargo run --release --example bench_kernels -- [--sizes 1024,4096,16384,65536] [--runs 5] [--strategy tiles|direct] [--json PATH]
//! ```

use clap::Parser;
use std::time::Instant;
use supcon_wgpu::device::{Limits, request_device};
use supcon_wgpu::wgpu;
use supcon_wgpu::{
    CosineSimilarity, PositiveKind, Strategy, SupConLoss, SupConOptions, SupConShape,
};

#[derive(Parser)]
#[command(about = "Fused SupCon forward+backward vs one cosine-similarity product")]
struct Args {
    /// Numbers of rows N (= 2 views x N/2 samples).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 4096, 16384, 65536])]
    sizes: Vec<u32>,
    /// Feature dimension D.
    #[arg(long, default_value_t = 128)]
    dim: u32,
    /// Timed runs per size (median reported); sizes of 65,536 rows and more are timed once.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The loss's strategy (`tiles`: the GPU kernels, `direct`: the CPU-adapter ones); default:
    /// the adapter's. The similarity kernel keeps the adapter's.
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "tiles" => Ok(Strategy::Tiles),
        "direct" => Ok(Strategy::Direct),
        other => Err(format!("unknown strategy {other:?}: tiles or direct")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    let ctx = request_device(Limits::Adapter)?;
    let adapter = ctx.describe();
    println!("adapter: {adapter}");
    let (device, queue) = (&ctx.device, &ctx.queue);
    let mut loss = SupConLoss::new(device)?;
    if let Some(strategy) = args.strategy {
        loss = loss.with_strategy(strategy);
    }
    let sim = CosineSimilarity::new(device)?;
    println!(
        "strategy: {:?} (the loss), {:?} (the similarity kernel)",
        loss.strategy(),
        sim.strategy()
    );
    let limit = device
        .limits()
        .max_storage_buffer_binding_size
        .min(device.limits().max_buffer_size);

    println!(
        "{:>7} {:>5} {:>16} {:>14} {:>8} {:>8} {:>10} {:>14} {:>12}",
        "N",
        "D",
        "fused f+b (ms)",
        "similarity",
        "ratio",
        "splits",
        "min wgs",
        "extra bytes",
        "grad bytes"
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let shape = SupConShape::new(n / 2, 2, args.dim);
        let runs = if n >= 65536 { 1 } else { args.runs.max(1) };
        let features = random_buffer(device, queue, shape.len(), 1);
        let labels: Vec<u32> = (0..shape.bsz)
            .map(|i| i.wrapping_mul(2_654_435_761) % 100)
            .collect();
        let labels = upload(device, queue, bytemuck::cast_slice(&labels));
        let grad = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("grad"),
            size: shape.len() * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let plan = loss.plan(
            device,
            shape,
            PositiveKind::Labels,
            &SupConOptions::new(0.1),
        )?;
        let fused = time(device, queue, runs, |encoder| {
            plan.encode_forward(device, encoder, &features, Some(&labels))?;
            plan.encode_backward(device, encoder, &features, Some(&labels), &grad)
        })?;
        drop(grad);

        let out_bytes = u64::from(n) * u64::from(n) * 4;
        let similarity = if out_bytes <= limit {
            let out = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("similarity"),
                size: out_bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            Some(time(device, queue, runs, |encoder| {
                sim.encode(device, encoder, &features, &features, &out, n, n, args.dim)
            })?)
        } else {
            None
        };
        let extra = plan.workspace_bytes();
        let (forward_splits, backward_splits) = plan.splits();
        let workgroups = plan.heavy_workgroups();
        let fewest = workgroups.iter().copied().min().unwrap_or(0);
        println!(
            "{:>7} {:>5} {:>16.1} {:>14} {:>8} {:>8} {:>10} {:>14} {:>12}",
            n,
            args.dim,
            fused,
            similarity.map_or("null".into(), |s| format!("{s:.1}")),
            similarity.map_or("-".into(), |s| format!("{:.2}x", fused / s)),
            format!("{forward_splits}/{backward_splits}"),
            fewest,
            extra,
            shape.len() * 4
        );
        rows.push(serde_json::json!({
            "n": n, "d": args.dim, "strategy": format!("{:?}", plan.strategy()),
            "fused_fwd_bwd_ms": fused, "similarity_ms": similarity,
            "fused_over_similarity": similarity.map(|s| fused / s),
            "forward_splits": forward_splits, "backward_splits": backward_splits,
            "workgroups": workgroups, "min_heavy_workgroups": fewest,
            "extra_device_bytes": extra, "runs": runs,
        }));
    }
    if let Some(path) = args.json {
        let json =
            serde_json::to_string_pretty(&serde_json::json!({ "adapter": adapter, "rows": rows }))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One warm-up run (unless `runs == 1` and the pipelines are already warm), then the median of
/// `runs` timed submissions, each waited for.
fn time(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    runs: usize,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> supcon_wgpu::Result<()>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut once = || -> Result<f64, Box<dyn std::error::Error>> {
        let mut encoder = device.create_command_encoder(&Default::default());
        record(&mut encoder)?;
        let start = Instant::now();
        queue.submit([encoder.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely())?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    if runs > 1 {
        once()?;
    }
    let mut times = (0..runs).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn upload(device: &wgpu::Device, queue: &wgpu::Queue, bytes: &[u8]) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (bytes.len() as u64).next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, bytes);
    buffer
}

/// Reproducible pseudo-random features in [-1, 1).
fn random_buffer(device: &wgpu::Device, queue: &wgpu::Queue, len: u64, seed: u64) -> wgpu::Buffer {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    upload(device, queue, bytemuck::cast_slice(&data))
}
