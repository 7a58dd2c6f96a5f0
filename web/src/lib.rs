//! The SupCon kernels in a browser tab (wasm32 + WebGPU).
//!
//! On load the page requests a WebGPU device with the default limits, runs the fused loss and
//! its gradient through the async API of `supcon-wgpu` on each case, with both kernel strategies,
//! compares every result with the f64 CPU reference compiled into the same wasm (the tolerance
//! table of `supcon_wgpu::kernels::supcon::conformance`), and shows the outcome twice: for people,
//! the adapter in words, a verdict line and a table of the cases in `<div id="report">`; for
//! machines, a JSON report as the text of `<pre id="result">` (inside a collapsed `<details>`),
//! whose `data-status` attribute ends as `pass`, `fail` or `error` (it is `running` until then,
//! and is set last). `web/browser_test.py` reads it in headless Chromium.
#![cfg(target_arch = "wasm32")]

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use supcon_wgpu::kernels::supcon::conformance::{
    self, GOLDEN_LABELS, GOLDEN_LOSS, GOLDEN_LOSS_TOLERANCE, GOLDEN_TEMPERATURE, LOSS_TOLERANCE,
};
use supcon_wgpu::{Positives, Strategy, SupConLoss, SupConOptions, SupConShape, wgpu};
use wasm_bindgen::{JsCast, prelude::*};
use wasm_bindgen_futures::JsFuture;
use web_sys::js_sys::{Function, Promise, Reflect};

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
        name: "golden 6 × 2 × 5, labels b mod 3, τ = 0.07",
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
        name: "random 512 × 128, 10 classes, τ = 0.1",
        features: features.clone(),
        shape,
        labels: Some(labels),
        options: SupConOptions::new(0.1),
        loss_tolerance: LOSS_TOLERANCE,
        golden_loss: None,
    };
    let simclr = Case {
        name: "random 512 × 128, no labels (SimCLR), τ = 0.5",
        features,
        shape,
        labels: None,
        options: SupConOptions::new(0.5),
        loss_tolerance: LOSS_TOLERANCE,
        golden_loss: None,
    };
    vec![golden, random, simclr]
}

/// What the browser says of its default adapter (`GPUAdapter.info`). wgpu passes on only the
/// description (as the name, often empty) and whether it is a fallback adapter (as
/// `DeviceType::Cpu`), so the vendor and architecture, which tell SwiftShader apart, are read
/// here. Empty when the browser hides them.
#[derive(Default)]
struct BrowserAdapterInfo {
    vendor: String,
    architecture: String,
    device: String,
    description: String,
}

async fn browser_adapter_info() -> BrowserAdapterInfo {
    async fn query() -> Result<BrowserAdapterInfo, JsValue> {
        let window = web_sys::window().ok_or(JsValue::NULL)?;
        let gpu = Reflect::get(&Reflect::get(&window, &"navigator".into())?, &"gpu".into())?;
        let request: Function = Reflect::get(&gpu, &"requestAdapter".into())?.dyn_into()?;
        let promise: Promise = request.call0(&gpu)?.dyn_into()?;
        let adapter = JsFuture::from(promise).await?;
        let info = Reflect::get(&adapter, &"info".into())?;
        let field = |name: &str| {
            Reflect::get(&info, &name.into())
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default()
        };
        Ok(BrowserAdapterInfo {
            vendor: field("vendor"),
            architecture: field("architecture"),
            device: field("device"),
            description: field("description"),
        })
    }
    query().await.unwrap_or_default()
}

/// The adapter in words: its name, or what kind of adapter it is when the browser gives none.
fn adapter_name(info: &wgpu::AdapterInfo, browser: &BrowserAdapterInfo) -> String {
    if !info.name.is_empty() {
        return info.name.clone();
    }
    let said = [&browser.vendor, &browser.architecture, &browser.device];
    if said
        .iter()
        .any(|s| s.to_ascii_lowercase().contains("swiftshader"))
    {
        return "software (SwiftShader)".into();
    }
    if info.device_type == wgpu::DeviceType::Cpu {
        return "software (CPU adapter)".into();
    }
    let words: Vec<&str> = said
        .iter()
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    if words.is_empty() {
        "unnamed (the browser gives no name)".into()
    } else {
        format!("{} (the browser gives no name)", words.join(" "))
    }
}

fn backend_words(backend: wgpu::Backend) -> String {
    match backend {
        wgpu::Backend::BrowserWebGpu => "the browser's WebGPU".into(),
        wgpu::Backend::Gl => "WebGL 2".into(),
        other => other.to_str().into(),
    }
}

fn device_type_words(device_type: wgpu::DeviceType) -> &'static str {
    match device_type {
        wgpu::DeviceType::Cpu => "CPU (software rendering)",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Other => "not reported by the browser",
    }
}

async fn run() -> Result<Value, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions::default())
        .await
        .map_err(|e| format!("no WebGPU adapter ({e}): is WebGPU enabled in this browser?"))?;
    let info = adapter.get_info();
    let browser = browser_adapter_info().await;
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

    let strategies = [Strategy::Tiles, Strategy::Direct];
    let mut losses = Vec::new();
    for strategy in strategies {
        losses.push(
            SupConLoss::new(&device)
                .map_err(|e| e.to_string())?
                .with_strategy(strategy),
        );
    }
    let mut results = Vec::new();
    for case in cases() {
        let positives = match &case.labels {
            Some(l) => Positives::Labels(l),
            None => Positives::None,
        };
        for (strategy, loss) in strategies.iter().zip(&losses) {
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
        "adapter": adapter_name(&info, &browser),
        "backend": backend_words(info.backend),
        "device_type": device_type_words(info.device_type),
        // Browsers hide most of the adapter's description (the name is often empty).
        "adapter_info": {
            "name": info.name,
            "backend": format!("{:?}", info.backend),
            "device_type": format!("{:?}", info.device_type),
            "vendor": browser.vendor,
            "architecture": browser.architecture,
            "device": browser.device,
            "description": browser.description,
        },
        "timed_calls": TIMED_CALLS,
        "results": results,
    }))
}

/// `s` as HTML text.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A relative error and its bound, e.g. `4.8e-8 ≤ 1e-5`; "∞" when it is missing (JSON has no
/// infinity: a non-finite loss or gradient gives infinite errors, written as null).
fn error_cell(err: &Value, tolerance: &Value) -> String {
    let err = err
        .as_f64()
        .map_or_else(|| "∞".to_string(), |e| format!("{e:.1e}"));
    let tolerance = tolerance.as_f64().map_or_else(String::new, |t| {
        format!(" <span class=\"tol\">≤ {t:.0e}</span>")
    });
    format!("{err}{tolerance}")
}

/// The report for people: adapter, verdict, one table row per case.
fn report_html(report: &Value) -> String {
    let mut html = String::new();
    if let Some(adapter) = report["adapter"].as_str() {
        html += &format!(
            "<p class=\"adapter\"><b>Adapter:</b> {} &nbsp;·&nbsp; <b>backend:</b> {} \
             &nbsp;·&nbsp; <b>device type:</b> {}</p>\n",
            escape(adapter),
            escape(report["backend"].as_str().unwrap_or("")),
            escape(report["device_type"].as_str().unwrap_or("")),
        );
    }
    let results = report["results"].as_array().map_or(&[][..], Vec::as_slice);
    let failed = results.iter().filter(|r| r["pass"] != json!(true)).count();
    let verdict = match report["status"].as_str() {
        Some("pass") => format!("PASS: all {} cases match the f64 reference", results.len()),
        Some("fail") => format!(
            "FAIL: {failed} of {} cases differ from the f64 reference",
            results.len()
        ),
        _ => format!(
            "ERROR: <span class=\"message\">{}</span>",
            escape(report["error"].as_str().unwrap_or("no report"))
        ),
    };
    let class = match report["status"].as_str() {
        Some("pass") => "pass",
        _ => "fail",
    };
    html += &format!("<p class=\"verdict {class}\">{verdict}</p>\n");
    if results.is_empty() {
        return html;
    }
    html += "<table>\n<thead><tr><th>case</th><th>strategy</th><th>loss</th><th>reference</th>\
             <th>rel. error (loss)</th><th>rel. error (gradient)</th><th>ms per call</th>\
             <th>verdict</th></tr></thead>\n<tbody>\n";
    for r in results {
        let pass = r["pass"] == json!(true);
        let number = |key: &str, digits: usize| {
            r[key]
                .as_f64()
                .map_or_else(|| "—".to_string(), |v| format!("{v:.digits$}"))
        };
        html += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td></tr>\n",
            escape(r["case"].as_str().unwrap_or("")),
            escape(r["strategy"].as_str().unwrap_or("")),
            number("loss", 6),
            number("reference_loss", 6),
            error_cell(&r["loss_rel_err"], &r["loss_tolerance"]),
            error_cell(&r["grad_rel_err"], &r["grad_tolerance"]),
            number("ms_per_call", 1),
            if pass { "pass" } else { "fail" },
            if pass { "pass" } else { "FAIL" },
        );
    }
    html += "</tbody>\n</table>\n";
    html += &format!(
        "<p class=\"note\">Loss: relative error against the f64 reference (on the golden case \
         also against the loss an independent implementation printed). Gradient: the largest \
         error of an entry relative to the gradient's largest entry. Time: the mean of {} calls \
         of <code>loss_and_grad_async</code> after one untimed call, including the upload of \
         the features and the read-backs.</p>\n",
        report["timed_calls"].as_u64().unwrap_or(0)
    );
    html
}

/// Writes the report: the HTML for people, the JSON for machines, `data-status` last.
fn show(report: &Value) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    if let Some(out) = document.get_element_by_id("report") {
        out.set_inner_html(&report_html(report));
    }
    let Some(out) = document.get_element_by_id("result") else {
        return;
    };
    let json = serde_json::to_string_pretty(report).unwrap_or_else(|_| report.to_string());
    out.set_text_content(Some(&json));
    let status = report["status"].as_str().unwrap_or("error");
    let _ = out.set_attribute("data-status", status);
}
