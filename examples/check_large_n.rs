//! Checks the fused loss at a large N against an exact answer: the rows are copies of 10 class
//! prototypes, so every s_ij depends only on the two classes and the loss is computable in O(K²)
//! on the CPU. `cargo run --example check_large_n -- 16384` (prints loss, expected, relative
//! error, n_valid and time); `-- N D` sets the feature dimension (default 128). Used to find the
//! open bug on lavapipe (see docs/performance.md, "Large N on lavapipe"): wrong when a workgroup runs more than ~8,192 barriers.

use supcon_wgpu::device::{Limits, request_device};
use supcon_wgpu::{Positives, SupConLoss, SupConOptions, SupConShape};
fn main() {
    let ctx = request_device(if std::env::var("WEBGPU_LIMITS").is_ok() {
        Limits::WebGpuDefault
    } else {
        Limits::Adapter
    })
    .unwrap();
    let loss = SupConLoss::new(&ctx.device).unwrap();
    let n: u32 = std::env::args().nth(1).unwrap().parse().unwrap();
    // Optional second argument: the feature dimension (default 128).
    let d: usize = std::env::args()
        .nth(2)
        .map(|a| a.parse().unwrap())
        .unwrap_or(128);
    let (bsz, k, tau) = ((n / 2) as usize, 10usize, 0.1f64);
    let shape = SupConShape::new(n / 2, 2, d as u32);
    let mut st = 12345u64;
    let mut rnd = || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        (st >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let protos: Vec<Vec<f32>> = (0..k).map(|_| (0..d).map(|_| rnd()).collect()).collect();
    let labels: Vec<i32> = (0..bsz)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) % k as u32) as i32)
        .collect();
    let mut x = Vec::with_capacity(bsz * 2 * d);
    for b in 0..bsz {
        for _ in 0..2 {
            x.extend_from_slice(&protos[labels[b] as usize]);
        }
    }
    // Rows are class prototypes, so s depends only on the two classes: the loss in O(K^2).
    let norm = |v: &Vec<f32>| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let s = |a: usize, b: usize| {
        protos[a]
            .iter()
            .zip(&protos[b])
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
            / (norm(&protos[a]) * norm(&protos[b]))
            / tau
    };
    let mut cnt = vec![0f64; k];
    for l in &labels {
        cnt[*l as usize] += 2.0;
    }
    let mut total = 0.0;
    for a in 0..k {
        if cnt[a] == 0.0 {
            continue;
        }
        let lse = (0..k)
            .map(|b| (cnt[b] - if a == b { 1.0 } else { 0.0 }) * s(a, b).exp())
            .sum::<f64>()
            .ln();
        total += cnt[a] * (lse - s(a, a));
    }
    let want = total / n as f64;
    let t = std::time::Instant::now();
    let r = loss
        .loss_and_grad(
            &ctx.device,
            &ctx.queue,
            &x,
            shape,
            Positives::Labels(&labels),
            &SupConOptions::new(tau),
        )
        .unwrap();
    let nz: Vec<usize> = r
        .anchor_loss
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, _)| i)
        .collect();
    if nz.len() < n as usize {
        println!(
            "anchors with statistics: {} of {n}; first {:?}; last {:?}",
            nz.len(),
            &nz[..nz.len().min(8)],
            &nz[nz.len().saturating_sub(4)..]
        );
    }
    let gmax = r.grad.unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
    println!(
        "N={n} loss={} expected={want} rel={:e} max|grad|={gmax:e} valid={} time={:?}",
        r.loss,
        ((r.loss as f64) - want).abs() / want,
        r.n_valid_anchors,
        t.elapsed()
    );
}
