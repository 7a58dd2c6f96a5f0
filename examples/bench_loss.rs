//! Benchmark of the loss inside Burn: forward + backward on an autodiff wgpu device of the fused
//! extension, the composed Burn-ops version, and one Burn matmul [N, D] x [D, N] alone.
//!
//! Medians of several runs after a warm-up (the largest N is timed once). Peak memory is the
//! growth of Burn's reserved device memory over the run, from a cleaned pool (its allocator
//! keeps pages, so this is the high-water mark of its reservations). A variant that cannot run —
//! the composed loss and the matmul need an N x N matrix in one storage binding — is reported as
//! null, not attempted.
//!
//! ```text
//! cargo run --release --example bench_loss -- [--sizes 1024,4096,16384,65536] [--runs 5] [--json PATH]
//! ```

use burn::tensor::{Device, Distribution, Int, Tensor};
use clap::Parser;
use std::time::Instant;
use supcon_wgpu::backend::{Implementation, SupConLossConfig};

#[derive(Parser)]
#[command(about = "Fused SupCon loss vs composed Burn ops vs one matmul, on autodiff wgpu")]
struct Args {
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 4096, 16384, 65536])]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Timed runs per size (median); 65,536 rows and more are timed once.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    // The binding limit decides what can run: read it from the adapter Burn will pick.
    let ctx = supcon_wgpu::device::request_device(supcon_wgpu::device::Limits::Adapter)?;
    let limit = ctx.device.limits().max_storage_buffer_binding_size;
    let adapter = ctx.describe();
    // The launch plan is the same on both paths: read the heavy dispatches' workgroups from the
    // raw API's (the Burn path picks the strategy by the same rule).
    let raw = supcon_wgpu::SupConLoss::new(&ctx.device)?;
    let workgroups = |n: usize| -> Result<u64, supcon_wgpu::Error> {
        let plan = raw.plan(
            &ctx.device,
            supcon_wgpu::SupConShape::new(n as u32 / 2, 2, args.dim as u32),
            supcon_wgpu::PositiveKind::Labels,
            &supcon_wgpu::SupConOptions::new(0.1),
        )?;
        Ok(plan.heavy_workgroups().into_iter().min().unwrap_or(0))
    };
    // The crate's own Burn device: with the `vulkan` feature Burn compiles to SPIR-V and the
    // fused ops run on its registered wgpu handles.
    let (device, _) = supcon_wgpu::backend::device::request_burn_device()?;
    let compiler = supcon_wgpu::backend::device::compiler_name(&device).unwrap_or("?");
    println!("adapter: {adapter}; Burn compiles to {compiler}");
    let device = device.autodiff();

    println!(
        "{:>7} {:>5} {:>8} {:>10} {:>12} {:>10} {:>10} {:>10} {:>14} {:>14}",
        "N",
        "D",
        "min wgs",
        "fused ms",
        "composed ms",
        "matmul ms",
        "f/comp",
        "f/matmul",
        "fused peak B",
        "composed peak B"
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let runs = if n >= 65536 { 1 } else { args.runs.max(1) };
        let bsz = n / 2;
        let square_fits = (n as u64) * (n as u64) * 4 <= limit;
        let fused = SupConLossConfig::new()
            .with_implementation(Implementation::Fused)
            .init();
        let composed = SupConLossConfig::new()
            .with_implementation(Implementation::Composed)
            .init();
        let labels = || Tensor::<1, Int>::random([bsz], Distribution::Uniform(0.0, 100.0), &device);
        let features = || {
            Tensor::<3>::random([bsz, 2, args.dim], Distribution::Normal(0.0, 1.0), &device)
                .require_grad()
        };

        let (fused_ms, fused_peak) = measure(&device, runs, || {
            let grads = fused.forward(features(), Some(labels())).backward();
            drop(grads);
        });
        let (composed_ms, composed_peak) = if square_fits {
            let (t, p) = measure(&device, runs, || {
                let grads = composed.forward(features(), Some(labels())).backward();
                drop(grads);
            });
            (Some(t), Some(p))
        } else {
            (None, None)
        };
        let matmul_ms = square_fits.then(|| {
            let a = Tensor::<2>::random(
                [n, args.dim],
                Distribution::Normal(0.0, 1.0),
                &device.clone().inner(),
            );
            let b = Tensor::<2>::random(
                [args.dim, n],
                Distribution::Normal(0.0, 1.0),
                &device.clone().inner(),
            );
            measure(&device, runs, || drop(a.clone().matmul(b.clone()))).0
        });
        let ratio = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.2}x", fused_ms / x));
        let opt = |x: Option<f64>| x.map_or("null".to_string(), |x| format!("{x:.1}"));
        let optb = |x: Option<u64>| x.map_or("null".to_string(), |x| x.to_string());
        let fewest = workgroups(n)?;
        println!(
            "{:>7} {:>5} {:>8} {:>10.1} {:>12} {:>10} {:>10} {:>10} {:>14} {:>14}",
            n,
            args.dim,
            fewest,
            fused_ms,
            opt(composed_ms),
            opt(matmul_ms),
            ratio(composed_ms),
            ratio(matmul_ms),
            fused_peak,
            optb(composed_peak)
        );
        rows.push(serde_json::json!({
            "n": n, "d": args.dim, "min_heavy_workgroups": fewest,
            "fused_ms": fused_ms, "composed_ms": composed_ms,
            "fused_over_composed": composed_ms.map(|c| fused_ms / c),
            "fused_over_matmul": matmul_ms.map(|m| fused_ms / m),
            "matmul_ms": matmul_ms, "fused_peak_bytes": fused_peak,
            "composed_peak_bytes": composed_peak, "runs": runs,
        }));
    }
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(
            &serde_json::json!({ "adapter": adapter, "compiler": compiler, "rows": rows }),
        )?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Median milliseconds of `runs` synchronised runs after one warm-up (none when `runs == 1`),
/// and the growth of reserved device memory over the runs.
fn measure(device: &Device, runs: usize, mut f: impl FnMut()) -> (f64, u64) {
    let reserved = || device.memory_pool_usage().map_or(0, |u| u.bytes_reserved);
    if runs > 1 {
        f();
        device.sync().expect("sync");
    }
    device.memory_cleanup();
    let before = reserved();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            device.sync().expect("sync");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let peak = reserved().saturating_sub(before);
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], peak)
}
