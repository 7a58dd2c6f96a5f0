//! Shared test helpers: the GPU (or a clear skip), random inputs, comparisons.
#![allow(dead_code)]

#[cfg(feature = "burn")]
pub mod burn_tensors;
#[cfg(feature = "pipeline")]
pub mod pipeline;

use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::OnceLock;
use supcon_wgpu::device::{GpuContext, Limits, request_device};
// Each test file uses some of these (like the rest of this module: dead_code is allowed above).
#[allow(unused_imports)]
pub use supcon_wgpu::kernels::supcon::conformance::{
    self, ANCHOR_LOSS_FLOOR, GOLDEN_LOSS, GOLDEN_LOSS_TOLERANCE, LOSS_TOLERANCE,
};

/// The harness's name of `module`'s `test` (`module` the caller's `module_path!()`): the module
/// path without the crate's name.
fn test_name(module: &str, test: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{test}")
}

/// The suite's binary set to run one test, `module`'s `test` (`module` the caller's
/// `module_path!()`; an `#[ignore]`d test too), alone and with its output not captured: how the
/// tests start their child processes.
pub fn child_test(module: &str, test: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.arg(test_name(module, test)).args([
        "--exact",
        "--include-ignored",
        "--test-threads=1",
        "--nocapture",
    ]);
    command
}

/// Tells a child process of [`in_own_process`] which test to run.
const OWN_PROCESS_ENV: &str = "SUPCON_TEST_OWN_PROCESS";

/// Runs the calling test's body in a process of its own: for a test that makes a Burn device
/// only it uses (a device with other limits, or on the caller's own wgpu handles). Burn keeps a
/// device until its process ends, with two cubecl threads that wake every 150 µs even while
/// idle (docs/burn.md), so such a device made in the suite's process would take CPU from every
/// later test. `module` is the caller's `module_path!()`, `test` its function's name. Returns
/// `true` in the child (the caller runs its body there) and `false` in the suite's process once
/// the child has passed; a failure of the child fails the test, with the child's output.
pub fn in_own_process(module: &str, test: &str) -> bool {
    let name = test_name(module, test);
    if std::env::var(OWN_PROCESS_ENV).as_deref() == Ok(name.as_str()) {
        return true;
    }
    let out = child_test(module, test)
        .env(OWN_PROCESS_ENV, &name)
        .output()
        .expect("spawn the test's process");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Shown by the test harness where the test fails or runs with --nocapture.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{name} failed in its own process");
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in its own process"
    );
    false
}

/// The test device, created once with WebGPU's default limits. In CI (`CI=true`) a missing
/// adapter fails the test; elsewhere the test prints that it was skipped and returns `None`.
pub fn gpu() -> Option<&'static GpuContext> {
    static GPU: OnceLock<Option<GpuContext>> = OnceLock::new();
    GPU.get_or_init(|| match request_device(Limits::WebGpuDefault) {
        Ok(ctx) => {
            eprintln!("GPU tests run on {}", ctx.describe());
            Some(ctx)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but no GPU adapter was found ({e}); install mesa-vulkan-drivers");
            }
            eprintln!("SKIPPED: no GPU adapter ({e}); GPU tests did not run");
            None
        }
    })
    .as_ref()
}

/// The same adapter with its own limits ([`Limits::Adapter`]): what applications that request
/// their adapter's limits (Burn among them) run under. They differ from WebGPU's defaults in ways
/// a buffer layout can depend on: `min_storage_buffer_offset_alignment` is 256 by default but 32
/// on lavapipe and 16-64 on most GPUs. `None` exactly when [`gpu`] is `None`.
pub fn gpu_adapter_limits() -> Option<&'static GpuContext> {
    static GPU: OnceLock<Option<GpuContext>> = OnceLock::new();
    gpu()?;
    GPU.get_or_init(|| {
        let ctx = request_device(Limits::Adapter)
            .unwrap_or_else(|e| panic!("the adapter's own limits: {e}"));
        eprintln!(
            "GPU tests also run with the adapter's limits (storage offset alignment {})",
            ctx.device.limits().min_storage_buffer_offset_alignment
        );
        Some(ctx)
    })
    .as_ref()
}

/// Both test devices, `(name, context)`: WebGPU's default limits and the adapter's own. The key
/// GPU tests run on each, so that a layout valid under one set of limits only cannot pass.
/// Empty when there is no adapter (outside CI).
pub fn gpus() -> Vec<(&'static str, &'static GpuContext)> {
    match (gpu(), gpu_adapter_limits()) {
        (Some(default), Some(adapter)) => {
            vec![
                ("WebGPU default limits", default),
                ("adapter limits", adapter),
            ]
        }
        _ => Vec::new(),
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard-normal-ish values (sum of uniforms), reproducible.
pub fn random_features(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.7)
        .collect()
}

/// Features of samples `b` around one of `classes` random centres (`b mod classes`), with noise
/// of a third of their size: a loss over the true classes differs from one over merged classes.
pub fn clustered_features(
    rng: &mut StdRng,
    shape: supcon_wgpu::SupConShape,
    classes: usize,
) -> Vec<f32> {
    let dim = shape.dim as usize;
    let centres = random_features(rng, classes * dim);
    let noise = random_features(rng, shape.len() as usize);
    noise
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let b = i / (dim * shape.n_views as usize);
            centres[(b % classes) * dim + i % dim] + e / 3.0
        })
        .collect()
}

pub fn random_labels(rng: &mut StdRng, bsz: usize, classes: i32) -> Vec<i32> {
    (0..bsz).map(|_| rng.random_range(0..classes)).collect()
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// [`max_rel_err`](conformance::max_rel_err), failing on a length mismatch or a non-finite value.
pub fn max_rel_err(got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "non-finite value in GPU output"
    );
    conformance::max_rel_err(got, want, floor)
}

/// Copies `bytes` of a COPY_SRC buffer back to the host (test-only readback).
pub fn read_back<T: bytemuck::Pod>(
    ctx: &GpuContext,
    buffer: &supcon_wgpu::wgpu::Buffer,
    bytes: u64,
) -> Vec<T> {
    use supcon_wgpu::wgpu;
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue.submit([encoder.finish()]);
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    bytemuck::cast_slice(&staging.slice(..).get_mapped_range().expect("mapped")).to_vec()
}

/// The golden case (`conformance`): features f[b][v][k] as a `Vec<f64>`.
pub fn golden_features() -> Vec<f64> {
    conformance::golden_features()
}

/// Every contrast mode x variant x reduction, for each (temperature, base temperature).
pub fn option_grid(temperatures: &[(f64, f64)]) -> Vec<supcon_wgpu::SupConOptions> {
    use supcon_wgpu::{ContrastMode, Reduction, SupConOptions, Variant};
    let mut v = Vec::new();
    for mode in [ContrastMode::All, ContrastMode::One] {
        for variant in [Variant::Out, Variant::In] {
            for reduction in [Reduction::AllAnchors, Reduction::AnchorsWithPositives] {
                for &(t, tb) in temperatures {
                    v.push(
                        SupConOptions::new(t)
                            .with_base_temperature(tb)
                            .with_contrast_mode(mode)
                            .with_variant(variant)
                            .with_reduction(reduction),
                    );
                }
            }
        }
    }
    v
}

/// What one implementation of the loss computed for one problem: the loss and dL/dfeatures, and,
/// where the implementation exposes them (the raw wgpu API), the per-anchor losses and the count
/// of anchors with a positive.
#[derive(Clone, Debug)]
pub struct Computed {
    pub loss: f32,
    pub grad: Vec<f32>,
    pub anchor_loss: Option<Vec<f32>>,
    pub n_valid_anchors: Option<u32>,
}

/// Checks `got` (from the implementation named in `what`) against the f64 reference on the same
/// input with the tolerance table of `conformance`; `loss_tolerance` is [`LOSS_TOLERANCE`] or, on the
/// golden case, [`GOLDEN_LOSS_TOLERANCE`].
pub fn assert_matches_reference(
    what: &str,
    got: &Computed,
    features: &[f32],
    shape: supcon_wgpu::SupConShape,
    positives: supcon_wgpu::Positives<'_>,
    options: &supcon_wgpu::SupConOptions,
    loss_tolerance: f64,
) {
    check_against_reference(
        what,
        got,
        features,
        shape,
        positives,
        None,
        options,
        loss_tolerance,
    );
}

/// [`assert_matches_reference`] for a problem with keys, at [`LOSS_TOLERANCE`].
pub fn assert_matches_reference_with_keys(
    what: &str,
    got: &Computed,
    features: &[f32],
    shape: supcon_wgpu::SupConShape,
    positives: supcon_wgpu::Positives<'_>,
    keys: supcon_wgpu::Keys<'_>,
    options: &supcon_wgpu::SupConOptions,
) {
    check_against_reference(
        what,
        got,
        features,
        shape,
        positives,
        Some(keys),
        options,
        LOSS_TOLERANCE,
    );
}

#[allow(clippy::too_many_arguments)]
fn check_against_reference(
    what: &str,
    got: &Computed,
    features: &[f32],
    shape: supcon_wgpu::SupConShape,
    positives: supcon_wgpu::Positives<'_>,
    keys: Option<supcon_wgpu::Keys<'_>>,
    options: &supcon_wgpu::SupConOptions,
    loss_tolerance: f64,
) {
    let what = format!("{what}: {shape:?} {:?} {options:?}", positives.kind());
    assert!(got.loss.is_finite(), "{what}: loss {}", got.loss);
    assert!(
        got.grad.iter().all(|v| v.is_finite()),
        "{what}: non-finite gradient"
    );
    let want = reference_of(features, shape, positives, keys, options);
    let c = conformance::compare_to(
        got.loss,
        &got.grad,
        features,
        shape.dim as usize,
        options,
        &want,
    );
    assert!(
        c.loss_err <= loss_tolerance,
        "{what}: loss {} vs {} (rel {:e})",
        got.loss,
        want.loss,
        c.loss_err
    );
    let tol = c.entry_tolerance;
    if let Some(n_valid) = got.n_valid_anchors {
        assert_eq!(
            n_valid as usize, want.n_valid_anchors,
            "{what}: valid anchors"
        );
    }
    if let Some(anchor_loss) = &got.anchor_loss {
        let err = max_rel_err(anchor_loss, &want.anchor_loss, ANCHOR_LOSS_FLOOR);
        assert!(
            err <= tol,
            "{what}: anchor losses rel err {err:e} > {tol:e}"
        );
    }
    assert!(
        c.grad_err <= tol,
        "{what}: gradient rel err {:e} > {tol:e}",
        c.grad_err
    );
}

// This thread's reference outputs, by problem (see `reference_of`).
thread_local! {
    static REFERENCES: std::cell::RefCell<ReferenceMemo> = Default::default();
}
type ReferenceMemo = std::collections::HashMap<
    Vec<u8>,
    std::rc::Rc<supcon_wgpu::kernels::supcon::reference::Output>,
>;

/// Empties this thread's memo of reference outputs (a test calls it when done with its problems:
/// with `--test-threads=1` every test runs on one thread).
pub fn forget_references() {
    REFERENCES.with_borrow_mut(|m| m.clear());
}

/// The f64 reference output of one problem, computed once per test thread: the implementations
/// a test checks on the same problem compare with one output. (The reference, O(N²·D) in f64 at
/// the dev profile's optimisation, was most of these tests' time, computed again for each
/// implementation.) Keyed by every input, bit for bit; [`forget_references`] empties it.
fn reference_of(
    features: &[f32],
    shape: supcon_wgpu::SupConShape,
    positives: supcon_wgpu::Positives<'_>,
    keys: Option<supcon_wgpu::Keys<'_>>,
    options: &supcon_wgpu::SupConOptions,
) -> std::rc::Rc<supcon_wgpu::kernels::supcon::reference::Output> {
    use std::rc::Rc;
    use supcon_wgpu::kernels::supcon::reference::supcon_with_keys;
    let (key_features, key_positives) = match keys {
        Some(k) => (k.features, k.positives),
        None => (&[][..], supcon_wgpu::Positives::None),
    };
    let mut id = format!("{shape:?} {options:?}").into_bytes();
    for (x, p) in [(features, positives), (key_features, key_positives)] {
        id.extend((x.len() as u64).to_le_bytes());
        id.extend_from_slice(bytemuck::cast_slice(x));
        let (kind, data): (u8, Vec<u8>) = match p {
            supcon_wgpu::Positives::Labels(l) => (0, bytemuck::cast_slice(l).to_vec()),
            supcon_wgpu::Positives::Labels64(l) => (1, bytemuck::cast_slice(l).to_vec()),
            supcon_wgpu::Positives::None => (2, Vec::new()),
            supcon_wgpu::Positives::Mask(m) => (3, m.iter().map(|&b| u8::from(b)).collect()),
        };
        id.push(kind);
        id.extend((data.len() as u64).to_le_bytes());
        id.extend(data);
    }
    if let Some(want) = REFERENCES.with_borrow(|m| m.get(&id).cloned()) {
        return want;
    }
    let want = Rc::new(supcon_with_keys(
        &to_f64(features),
        shape,
        positives,
        &to_f64(key_features),
        key_positives,
        options,
    ));
    REFERENCES.with_borrow_mut(|m| m.insert(id, Rc::clone(&want)));
    want
}
