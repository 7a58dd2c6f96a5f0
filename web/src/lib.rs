//! The SupCon kernels in a browser tab (wasm32 + WebGPU).
//!
//! On load the page requests a WebGPU device with the default limits, runs the fused loss and
//! its gradient through the async API of `supcon-wgpu` on each case, with both kernel strategies,
//! compares every result with the f64 CPU reference compiled into the same wasm (the tolerance
//! table of `supcon_wgpu::kernels::supcon::conformance`), and writes a table for people and a
//! JSON report for machines into `<pre id="result">`, whose `data-status` attribute ends as
//! `pass`, `fail` or `error` (it is `running` until then). `web/browser_test.py` reads it in
//! headless Chromium.
#![cfg(target_arch = "wasm32")]

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use supcon_wgpu::kernels::supcon::conformance::{
    self, GOLDEN_LABELS, GOLDEN_LOSS, GOLDEN_LOSS_TOLERANCE, GOLDEN_TEMPERATURE, LOSS_TOLERANCE,
};
use supcon_wgpu::{Positives, Strategy, SupConLoss, SupConOptions, SupConShape, wgpu};
use wasm_bindgen::prelude::*;

/// Timed calls per case after one untimed call (pipeline compilation, first dispatch).
const TIMED_CALLS: u32 = 3;

#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        let report = match run().await {
            Ok(report) => report,
            Err(error) => json!({ "status": "error", "error": error }),
        };
        show(&report);
    });
}

/// One problem: features `[bsz, n_views, dim]`, labels (or none: SimCLR), options.
struct Case {
    name: &'static str,
    features: Vec<f32>,
    shape: SupConShape,
    labels: Option<Vec<i32>>,
    options: SupConOptions,
    loss_tolerance: f64,
    /// The loss an independent implementation printed (the golden case), besides the reference.
    golden_loss: Option<f64>,
}

fn cases() -> Vec<Case> {
    let golden = Case {
        name: "golden (6 x 2 x 5, labels b mod 3, tau 0.07)",
        features: conformance::golden_features()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        shape: conformance::golden_shape(),
        labels: Some(GOLDEN_LABELS.to_vec()),
        options: SupConOptions::new(GOLDEN_TEMPERATURE),
        loss_tolerance: GOLDEN_LOSS_TOLERANCE,
        golden_loss: Some(GOLDEN_LOSS),
    };
    let mut rng = StdRng::seed_from_u64(7);
    let shape = SupConShape::new(256, 2, 128);
    let features: Vec<f32> = (0..shape.len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let labels: Vec<i32> = (0..shape.bsz).map(|_| rng.random_range(0..10)).collect();
    let random = Case {
        name: "random (512 x 128, 10 classes, tau 0.1)",
        features: features.clone(),
        shape,
        labels: Some(labels),
        options: SupConOptions::new(0.1),
        loss_tolerance: LOSS_TOLERANCE,
        golden_loss: None,
    };
    let simclr = Case {
        name: "random, no labels (SimCLR, tau 0.5)",
        features,
        shape,
        labels: None,
        options: SupConOptions::new(0.5),
        loss_tolerance: LOSS_TOLERANCE,
        golden_loss: None,
    };
    vec![golden, random, simclr]
}

async fn run() -> Result<Value, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions::default())
        .await
        .map_err(|e| format!("no WebGPU adapter ({e}): is WebGPU enabled in this browser?"))?;
    let info = adapter.get_info();
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("supcon-web"),
            required_limits: wgpu::Limits::default(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("device request failed: {e}"))?;
    let performance = web_sys::window()
        .and_then(|w| w.performance())
        .ok_or("no window.performance")?;

    let mut results = Vec::new();
    for strategy in [Strategy::Tiles, Strategy::Direct] {
        let loss = SupConLoss::new(&device)
            .map_err(|e| e.to_string())?
            .with_strategy(strategy);
        for case in cases() {
            let positives = match &case.labels {
                Some(l) => Positives::Labels(l),
                None => Positives::None,
            };
            let call = || {
                loss.loss_and_grad_async(
                    &device,
                    &queue,
                    &case.features,
                    case.shape,
                    positives,
                    &case.options,
                )
            };
            let got = call().await.map_err(|e| format!("{}: {e}", case.name))?;
            let start = performance.now();
            for _ in 0..TIMED_CALLS {
                call().await.map_err(|e| format!("{}: {e}", case.name))?;
            }
            let ms = (performance.now() - start) / f64::from(TIMED_CALLS);
            let grad = got.grad.unwrap_or_default();
            let (c, _) = conformance::compare(
                got.loss,
                &grad,
                &case.features,
                case.shape,
                positives,
                &case.options,
            );
            let golden_err = case
                .golden_loss
                .map(|g| (f64::from(got.loss) - g).abs() / g.abs());
            let pass = c.passes(case.loss_tolerance)
                && golden_err.is_none_or(|e| e <= case.loss_tolerance);
            results.push(json!({
                "case": case.name,
                "strategy": format!("{strategy:?}"),
                "rows": case.shape.rows(),
                "dim": case.shape.dim,
                "loss": got.loss,
                "reference_loss": c.reference_loss,
                "loss_rel_err": c.loss_err,
                "loss_tolerance": case.loss_tolerance,
                "golden_loss_rel_err": golden_err,
                "grad_rel_err": c.grad_err,
                "grad_tolerance": c.entry_tolerance,
                "ms_per_call": ms,
                "pass": pass,
            }));
        }
    }
    let all_pass = results.iter().all(|r| r["pass"] == json!(true));
    Ok(json!({
        "status": if all_pass { "pass" } else { "fail" },
        // Browsers hide most of the adapter's description (the name is often empty).
        "adapter": format!("{info:?}"),
        "results": results,
    }))
}

/// Writes the report: a table for people, the JSON for machines, `data-status` last.
fn show(report: &Value) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Some(out) = document.get_element_by_id("result") else {
        return;
    };
    let mut text = String::new();
    if let Some(adapter) = report["adapter"].as_str() {
        text += &format!("adapter: {adapter}\n\n");
    }
    if let Some(error) = report["error"].as_str() {
        text += &format!("error: {error}\n\n");
    }
    for r in report["results"].as_array().into_iter().flatten() {
        text += &format!(
            "{:<46} {:<7} loss {:>10.6} (ref {:>10.6}, rel err {:.1e} <= {:.0e})  grad rel err {:.1e} <= {:.0e}  {:>8.2} ms  {}\n",
            r["case"].as_str().unwrap_or(""),
            r["strategy"].as_str().unwrap_or(""),
            r["loss"].as_f64().unwrap_or(f64::NAN),
            r["reference_loss"].as_f64().unwrap_or(f64::NAN),
            r["loss_rel_err"].as_f64().unwrap_or(f64::INFINITY),
            r["loss_tolerance"].as_f64().unwrap_or(0.0),
            r["grad_rel_err"].as_f64().unwrap_or(f64::INFINITY),
            r["grad_tolerance"].as_f64().unwrap_or(0.0),
            r["ms_per_call"].as_f64().unwrap_or(f64::NAN),
            if r["pass"] == json!(true) {
                "ok"
            } else {
                "FAIL"
            },
        );
    }
    text += &format!("\n{report}\n");
    out.set_text_content(Some(&text));
    let status = report["status"].as_str().unwrap_or("error");
    let _ = out.set_attribute("data-status", status);
    let _ = out.set_attribute("data-report", &report.to_string());
}
