//! Gradient caching (`backend::grad_cache`): a step computed in chunks gives the parameter
//! gradients of the unchunked step, on Flex (composed loss) and on wgpu (fused loss).
//! Data parallelism (`backend::data_parallel`): a step over two wgpu devices gives the
//! gradients of the one-device step (with batch norm: of one device's step in chunks of the
//! shards), with and without gradient caching.
//!
//! Tolerance: every parameter gradient within `GRAD_TOLERANCE` (1e-4) of the largest entry of
//! the unchunked one — the bound the loss's own gradient is held to (common/mod.rs). The two
//! differ only in f32 summation order (chunk sums added up vs one matmul over all rows).
#![cfg(feature = "burn")]

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use supcon_wgpu::backend::device::request_burn_devices;
use supcon_wgpu::backend::{
    CachedForward, DataParallelConfig, GradCacheConfig, SupConLoss, SupConLossConfig,
};
use supcon_wgpu::pipeline::model::{HeadKind, ModelPreset, PretrainModel, ProjectionHead, Stem};

use crate::common::burn_tensors::{devices_of_test_adapter, flex_device, to_vec, wgpu_device};
use crate::common::gpu;

const GRAD_TOLERANCE: f64 = 1e-4;

/// A model without batch norm: each image's features depend on that image alone.
#[derive(Module, Debug)]
struct Mlp {
    first: Linear,
    second: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Mlp {
            first: LinearConfig::new(64, 32).init(device),
            second: LinearConfig::new(32, 16).init(device),
        }
    }

    fn params(&self) -> Vec<(&'static str, ParamRef<'_>)> {
        vec![
            ("first.weight", ParamRef::Two(&self.first.weight)),
            (
                "first.bias",
                ParamRef::One(self.first.bias.as_ref().unwrap()),
            ),
            ("second.weight", ParamRef::Two(&self.second.weight)),
            (
                "second.bias",
                ParamRef::One(self.second.bias.as_ref().unwrap()),
            ),
        ]
    }
}

enum ParamRef<'a> {
    One(&'a Param<Tensor<1>>),
    Two(&'a Param<Tensor<2>>),
}

impl ParamRef<'_> {
    fn grad(&self, grads: &GradientsParams) -> Vec<f32> {
        match self {
            ParamRef::One(p) => to_vec(grads.get::<1>(p.id).expect("a gradient")),
            ParamRef::Two(p) => to_vec(grads.get::<2>(p.id).expect("a gradient")),
        }
    }
}

impl CachedForward<4> for Mlp {
    fn forward_tracked(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = images.dims();
        let x = images.reshape([b, c * h * w]);
        self.second.forward(relu(self.first.forward(x)))
    }
}

/// Two views of `b` random 1×8×8 images.
fn views(b: usize, device: &Device) -> Vec<Tensor<4>> {
    (0..2)
        .map(|_| Tensor::<4>::random([b, 1, 8, 8], Distribution::Normal(0.0, 1.0), device))
        .collect()
}

fn labels(b: usize, device: &Device) -> Tensor<1, Int> {
    let l: Vec<i32> = (0..b as i32).map(|i| i % 3).collect();
    Tensor::<1, Int>::from_data(TensorData::new(l, [b]), device)
}

/// The unchunked step: every view in one forward pass, the loss, autodiff.
fn plain_step<M: CachedForward<4>>(
    model: &M,
    views: &[Tensor<4>],
    loss: &SupConLoss,
    labels: Option<Tensor<1, Int>>,
) -> (f32, GradientsParams) {
    let b = views[0].dims()[0];
    let z = model.forward_tracked(Tensor::cat(views.to_vec(), 0));
    let d = z.dims()[1];
    let features = z.reshape([views.len(), b, d]).swap_dims(0, 1);
    let value = loss.forward(features, labels);
    let grads = GradientsParams::from_grads(value.backward(), model);
    (to_vec(value.inner())[0], grads)
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64))
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    assert!(want.iter().chain(got).all(|x| x.is_finite()), "{what}");
    let scale = max_abs(want);
    assert!(scale > 0.0, "{what}: the gradient is zero");
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() as f64));
    assert!(
        err <= GRAD_TOLERANCE * scale,
        "{what}: max error {err:e} against largest entry {scale:e}"
    );
}

/// Chunks dividing the batch, not dividing it, of one item, and of the whole batch; with labels
/// and without (SimCLR).
fn chunked_equals_unchunked(device: &Device) {
    let b = 10;
    let model = Mlp::new(device);
    let views = views(b, device);
    let loss = SupConLossConfig::new().with_temperature(0.2).init();
    for labelled in [true, false] {
        let l = labelled.then(|| labels(b, device));
        // The chunked steps first: on a fresh model its parameters are not initialised yet (Burn
        // initialises them lazily, shared by clones), and the first pass must not change how
        // they are tracked.
        let steps: Vec<_> = [5, 4, 1, 10]
            .into_iter()
            .map(|chunk| {
                let cache = GradCacheConfig::new(chunk).init();
                let step = cache.step(&model, &views, |f| loss.try_forward(f, l.clone()));
                (chunk, step.unwrap())
            })
            .collect();
        let (want_loss, want) = plain_step(&model, &views, &loss, l.clone());
        for (chunk, step) in steps {
            let got_loss = to_vec(step.loss.inner())[0];
            assert!(
                ((got_loss - want_loss).abs() as f64) <= 1e-5 * want_loss.abs() as f64,
                "chunk {chunk}: loss {got_loss} vs {want_loss}"
            );
            for (name, param) in model.params() {
                let what = format!("chunk {chunk}, labels {labelled}: {name}");
                assert_close(&what, &param.grad(&step.grads), &param.grad(&want));
            }
        }
    }
}

#[test]
fn chunked_gradients_equal_unchunked_flex() {
    chunked_equals_unchunked(&flex_device());
}

#[test]
fn chunked_gradients_equal_unchunked_wgpu() {
    let Some(device) = wgpu_device() else { return };
    chunked_equals_unchunked(&device);
}

/// The pipeline's model has batch norm: with one chunk of the whole batch both passes see the
/// unchunked step's statistics, so gradients and running statistics equal the unchunked step's
/// (a first pass that also moved the running statistics would move them twice).
#[test]
fn batch_norm_statistics_move_once() {
    use burn::store::ModuleSnapshot;
    let device = flex_device();
    let build = || small_model(&device);
    let snapshot = |m: &PretrainModel| -> Vec<(String, Vec<f32>)> {
        m.collect(None, None, false)
            .into_iter()
            .filter(|t| t.dtype.is_float())
            .map(|t| {
                let data = burn::store::bridge::into_data(t.clone()).unwrap();
                (t.name, data.convert::<f32>().try_into_vec::<f32>().unwrap())
            })
            .collect()
    };
    // Two models with their own running-statistics state (clones share it), equal values.
    let (plain, mut cached) = (build(), build());
    let applied = cached.apply(plain.collect(None, None, false), None, None, false);
    assert!(applied.errors.is_empty() && applied.missing.is_empty());
    let differ: Vec<String> = snapshot(&plain)
        .into_iter()
        .zip(snapshot(&cached))
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0)
        .collect();
    assert!(differ.is_empty(), "copies differ in {differ:?}");
    assert_eq!(
        snapshot(&plain),
        snapshot(&cached),
        "seeded models are equal"
    );
    let b = 6;
    let views = views(b, &device);
    let loss = SupConLossConfig::new().init();
    let l = Some(labels(b, &device));
    let (_, want) = plain_step(&plain, &views, &loss, l.clone());
    let step = GradCacheConfig::new(b)
        .init()
        .step(&cached, &views, |f| loss.try_forward(f, l.clone()))
        .unwrap();
    // `valid` syncs the running statistics (a step records them per thread).
    let (after_plain, after_cached) = (snapshot(&plain.valid()), snapshot(&cached.valid()));
    let mut stats = 0;
    for ((name, want_v), (_, got_v)) in after_plain.iter().zip(&after_cached) {
        if name.contains("running") {
            stats += 1;
            assert_close(name, got_v, want_v);
        }
    }
    assert!(stats >= 10, "{stats} running-statistics tensors compared");
    assert_same_gradients(&all_grads(&cached, &step.grads), &all_grads(&plain, &want));
}

/// The pipeline's small encoder (batch norm) with its MLP head, for 1×8×8 images.
fn small_model(device: &Device) -> PretrainModel {
    let encoder = ModelPreset::Small.config(1, Stem::Cifar).init(device);
    let head = ProjectionHead::new(HeadKind::Mlp, 64, 16, device);
    PretrainModel {
        encoder,
        head: Some(head),
        classifier: None,
    }
}

/// The gradient of every parameter of `m` in `g`, in the order the module visits them.
fn all_grads<M: Module>(m: &M, g: &GradientsParams) -> Vec<Vec<f32>> {
    struct Visit<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Visit<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.push(to_vec(g));
            }
        }
    }
    let mut v = Visit(g, Vec::new());
    m.visit(&mut v);
    v.1
}

fn assert_same_gradients(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert!(want.len() > 10, "{} gradients", want.len());
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert_close(&format!("parameter {i}"), g, w);
    }
}

#[test]
fn bad_arguments_are_errors() {
    let device = flex_device();
    assert!(GradCacheConfig::new(0).try_init().is_err());
    let model = Mlp::new(&device);
    let cache = GradCacheConfig::new(2).init();
    let loss = SupConLossConfig::new().init();
    let run = |views: &[Tensor<4>]| cache.step(&model, views, |f| loss.try_forward(f, None));
    assert!(run(&[]).is_err());
    let mut v = views(4, &device);
    v[1] = v[1].clone().narrow(0, 0, 3);
    assert!(run(&v).is_err());
    let plain = Device::flex();
    assert!(run(&views(4, &plain)).is_err(), "not an autodiff device");
    // A loss that ignores the features.
    let v = views(4, &device);
    let err = cache
        .step(&model, &v, |_| Ok(Tensor::<1>::zeros([1], &device)))
        .unwrap_err();
    assert!(err.to_string().contains("does not depend"), "{err}");
}

/// Two autodiff Burn devices on the test adapter: two wgpu devices of one adapter, each with
/// its own queue and memory pool, so every transfer between them goes through the host as
/// between two GPUs. A skip (a failure under CI=true) without an adapter.
fn two_wgpu_devices() -> Option<Vec<Device>> {
    static DEVICES: std::sync::OnceLock<Vec<Device>> = std::sync::OnceLock::new();
    gpu()?;
    let devices = DEVICES.get_or_init(|| {
        let devices = devices_of_test_adapter(2).expect("an adapter");
        eprintln!(
            "data-parallel tests run on two devices of {}",
            devices[0].1.name
        );
        devices.into_iter().map(|(d, _)| d).collect()
    });
    Some(devices.iter().map(|d| d.clone().autodiff()).collect())
}

fn assert_same_loss(what: &str, got: Tensor<1>, want: f32) {
    let got = to_vec(got)[0];
    assert!(
        ((got - want).abs() as f64) <= 1e-5 * want.abs() as f64,
        "{what}: loss {got} vs {want}"
    );
}

/// A model without batch norm: the step over two devices (even and uneven shards; with and
/// without gradient caching, whose chunks the devices take in turn) equals the plain step on
/// one device, with labels and without.
#[test]
fn two_devices_equal_one_device() {
    let Some(devices) = two_wgpu_devices() else {
        return;
    };
    let main = &devices[0];
    let model = Mlp::new(main);
    let loss = SupConLossConfig::new().with_temperature(0.2).init();
    for b in [10, 9] {
        let views = views(b, main);
        for labelled in [true, false] {
            let l = labelled.then(|| labels(b, main));
            let steps: Vec<_> = [None, Some(4), Some(1)]
                .into_iter()
                .map(|chunk| {
                    let parallel = DataParallelConfig::new(devices.clone())
                        .with_grad_cache_chunk(chunk)
                        .try_init()
                        .unwrap();
                    let step = parallel.step(&model, &views, |f| loss.try_forward(f, l.clone()));
                    (chunk, step.unwrap())
                })
                .collect();
            let (want_loss, want) = plain_step(&model, &views, &loss, l.clone());
            for (chunk, step) in steps {
                let what = format!("batch {b}, labels {labelled}, chunk {chunk:?}");
                assert_same_loss(&what, step.loss, want_loss);
                for (name, param) in model.params() {
                    let got = match param {
                        ParamRef::One(p) => step.grads.get::<1>(p.id).unwrap().device(),
                        ParamRef::Two(p) => step.grads.get::<2>(p.id).unwrap().device(),
                    };
                    assert_eq!(
                        &got, main,
                        "{what}: {name}'s gradient is on the main device"
                    );
                    let what = format!("{what}: {name}");
                    assert_close(&what, &param.grad(&step.grads), &param.grad(&want));
                }
            }
        }
    }
}

/// The pipeline's model has batch norm, whose statistics are each forward pass's: the step
/// over two devices (each half of the batch) equals one device's step with gradient caching in
/// chunks of half the batch, which sees the same rows per pass.
#[test]
fn two_devices_with_batch_norm_equal_chunks_of_the_shards() {
    let Some(devices) = two_wgpu_devices() else {
        return;
    };
    let main = &devices[0];
    let model = small_model(main);
    let b = 8;
    let views = views(b, main);
    let loss = SupConLossConfig::new().init();
    let l = Some(labels(b, main));
    let parallel = DataParallelConfig::new(devices.clone()).try_init().unwrap();
    let got = parallel
        .step(&model, &views, |f| loss.try_forward(f, l.clone()))
        .unwrap();
    let want = GradCacheConfig::new(b / 2)
        .init()
        .step(&model, &views, |f| loss.try_forward(f, l.clone()))
        .unwrap();
    assert_same_loss("batch norm", got.loss, to_vec(want.loss)[0]);
    assert_same_gradients(
        &all_grads(&model, &got.grads),
        &all_grads(&model, &want.grads),
    );
    // The other device's replica left the main model's running statistics on the main device.
    assert_eq!(model.devices(), vec![main.clone()]);
}

#[test]
fn data_parallel_bad_arguments_are_errors() {
    use supcon_wgpu::Error;
    let device = flex_device();
    fn devices_error<T>(r: supcon_wgpu::Result<T>) -> bool {
        matches!(r, Err(Error::Devices(_)))
    }
    assert!(devices_error(DataParallelConfig::new(vec![]).try_init()));
    let twice = DataParallelConfig::new(vec![device.clone(), device.clone()]).try_init();
    assert!(devices_error(twice), "a device twice");
    let plain = DataParallelConfig::new(vec![Device::flex()]).try_init();
    assert!(matches!(plain, Err(Error::Unsupported(_))), "no autodiff");
    let chunk = DataParallelConfig::new(vec![device.clone()]).with_grad_cache_chunk(Some(0));
    assert!(matches!(chunk.try_init(), Err(Error::InvalidShape(_))));
    assert!(devices_error(request_burn_devices(&[])));
    let missing = request_burn_devices(&[usize::MAX]).map(|_| ()).unwrap_err();
    assert!(
        missing.to_string().contains("no adapter"),
        "an index no adapter has: {missing}"
    );

    let Some(devices) = two_wgpu_devices() else {
        return;
    };
    let parallel = DataParallelConfig::new(devices.clone()).try_init().unwrap();
    let loss = SupConLossConfig::new().init();
    let model = Mlp::new(&devices[0]);
    let run = |views: &[Tensor<4>]| parallel.step(&model, views, |f| loss.try_forward(f, None));
    let err = run(&views(1, &devices[0])).unwrap_err();
    assert!(
        matches!(err, Error::InvalidShape(_)),
        "one item, two devices: {err}"
    );
    let err = run(&views(4, &devices[1])).unwrap_err();
    assert!(
        matches!(err, Error::Unsupported(_)),
        "views off the main device: {err}"
    );
    let elsewhere = Mlp::new(&devices[1]);
    let err = parallel
        .step(&elsewhere, &views(4, &devices[0]), |f| {
            loss.try_forward(f, None)
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Unsupported(_)),
        "a model off the main device: {err}"
    );
}

/// Burn's remote backend (feature `remote`): a server on 127.0.0.1, started here on a second
/// wgpu device of the test adapter with the fused operations registered, reached over
/// WebSocket with a token. On the remote device the loss runs the fused kernels on the server
/// (custom operations; autodiff stays here): its loss and feature gradient equal the local
/// fused ones for every option family (the cosine similarity and its gradient too), and a
/// data-parallel step over a local and a remote device (either one the main device) equals
/// the plain local step, all within the tolerance of the other device tests. A wrong token and an unreachable server are errors, not hangs.
/// In a process of its own: the server switches Burn's read-backs to their async mode for the
/// whole process.
#[cfg(feature = "remote")]
#[test]
fn a_remote_device_equals_a_local_one() {
    use burn::tensor::Bool;
    use supcon_wgpu::backend::{fused_available, remote};
    use supcon_wgpu::{ContrastMode, Error, Reduction, Variant};
    if gpu().is_none()
        || !crate::common::in_own_process(module_path!(), "a_remote_device_equals_a_local_one")
    {
        return;
    }
    let mut devices = devices_of_test_adapter(2).expect("an adapter");
    let (served, adapter) = devices.pop().unwrap();
    let local = devices.pop().unwrap().0.autodiff();
    let token = "a test token";
    assert!(matches!(
        remote::server(std::slice::from_ref(&served), ""),
        Err(Error::Devices(_))
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = remote::server(&[served], token).unwrap();
    std::thread::spawn(move || remote::serve(&server, listener));
    let far = remote::connect(&url, token).unwrap();
    assert_eq!(far.len(), 1, "the server hosts one device");
    eprintln!("remote device on {url}: {} (served)", adapter.name);
    let far = far[0].clone().autodiff();
    assert!(fused_available(&far), "the loss runs fused on the server");
    assert!(matches!(
        remote::server(std::slice::from_ref(&far), token),
        Err(Error::Devices(_))
    ));

    /// A case's name, labels, keys and mask.
    type Case<'a> = (
        &'a str,
        Option<&'a Tensor<1, Int>>,
        Option<&'a Tensor<2>>,
        Option<&'a Tensor<2, Bool>>,
    );
    // The loss and the features' gradient, on each device from the same data.
    let run = |device: &Device,
               loss: &SupConLoss,
               x: &Tensor<3>,
               labels: Option<&Tensor<1, Int>>,
               keys: Option<&Tensor<2>>,
               mask: Option<&Tensor<2, Bool>>| {
        let x = Tensor::<3>::from_data(x.to_data(), device).require_grad();
        let labels = labels.map(|l| Tensor::<1, Int>::from_data(l.to_data(), device));
        let value = match (keys, mask) {
            (Some(keys), _) => {
                let keys = Tensor::<2>::from_data(keys.to_data(), device);
                let key_labels = labels
                    .as_ref()
                    .map(|_| self::labels(keys.dims()[0], device));
                loss.try_forward_with_keys(x.clone(), labels, keys, key_labels)
            }
            (None, Some(mask)) => {
                let mask = Tensor::<2, Bool>::from_data(mask.to_data(), device);
                loss.try_forward_with_mask(x.clone(), mask)
            }
            (None, None) => loss.try_forward(x.clone(), labels),
        }
        .unwrap();
        let grads = value.backward();
        let grad = to_vec(x.grad(&grads).expect("a gradient"));
        (to_vec(value.inner())[0], grad)
    };
    // 80 rows and 5 keys: two passes of 64 contrast rows where asked.
    let x = Tensor::<3>::random([40, 2, 20], Distribution::Normal(0.0, 1.0), &local);
    let l = labels(40, &local);
    let keys = Tensor::<2>::random([5, 20], Distribution::Normal(0.0, 1.0), &local);
    let mask = l.clone().reshape([40, 1]).equal(l.clone().reshape([1, 40]));
    let losses = [
        ("defaults", SupConLossConfig::new().init()),
        (
            "τ 0.5, τ_base 0.07, contrast one",
            SupConLossConfig::new()
                .with_temperature(0.5)
                .with_base_temperature(Some(0.07))
                .with_contrast_mode(ContrastMode::One)
                .init(),
        ),
        (
            "L_in over anchors with positives, passes and splits of 64 rows, Tiles",
            SupConLossConfig::new()
                .with_variant(Variant::In)
                .with_reduction(Reduction::AnchorsWithPositives)
                .init()
                .with_pass_columns(64)
                .with_split_columns(64)
                .with_strategy(supcon_wgpu::Strategy::Tiles),
        ),
    ];
    for (what, loss) in losses {
        let cases: [Case; 5] = [
            ("labels", Some(&l), None, None),
            ("SimCLR", None, None, None),
            ("keys", Some(&l), Some(&keys), None),
            ("SimCLR with keys", None, Some(&keys), None),
            ("mask", None, None, Some(&mask)),
        ];
        for (case, labels, keys, mask) in cases {
            let what = format!("{what}, {case}");
            let (want_loss, want) = run(&local, &loss, &x, labels, keys, mask);
            let (got_loss, got) = run(&far, &loss, &x, labels, keys, mask);
            assert_same_loss(
                &what,
                Tensor::<1>::from_floats([got_loss], &local),
                want_loss,
            );
            assert_close(&what, &got, &want);
        }
    }

    // The cosine similarity and its gradient (the fused kernel on the server).
    let a = Tensor::<2>::random([7, 20], Distribution::Normal(0.0, 1.0), &local);
    let b = Tensor::<2>::random([5, 20], Distribution::Normal(0.0, 1.0), &local);
    let similarity = |device: &Device| {
        let a = Tensor::<2>::from_data(a.to_data(), device).require_grad();
        let b = Tensor::<2>::from_data(b.to_data(), device);
        let s = supcon_wgpu::backend::try_cosine_similarity(a.clone(), b).unwrap();
        let grads = (s.clone() * s.clone()).sum().backward();
        (
            to_vec(s.inner()),
            to_vec(a.grad(&grads).expect("a gradient")),
        )
    };
    let ((want, want_grad), (got, got_grad)) = (similarity(&local), similarity(&far));
    assert_close("cosine similarity", &got, &want);
    assert_close("cosine similarity's gradient", &got_grad, &want_grad);

    // One training step: over [local, remote] and [remote, local] vs the plain local step.
    let model = Mlp::new(&local);
    let loss = SupConLossConfig::new().with_temperature(0.2).init();
    let b = 10;
    let v = views(b, &local);
    let l = labels(b, &local);
    let (want_loss, want) = plain_step(&model, &v, &loss, Some(l.clone()));
    for order in [[&local, &far], [&far, &local]] {
        let main = order[0];
        let what = format!(
            "a step with the main device {}",
            if main == &far { "remote" } else { "local" }
        );
        let forked = model.clone().fork(main);
        let v: Vec<_> = v.iter().map(|v| v.clone().to_device(main)).collect();
        let l = l.clone().to_device(main);
        let parallel = DataParallelConfig::new(order.map(|d| d.clone()).to_vec())
            .try_init()
            .unwrap();
        let step = parallel
            .step(&forked, &v, |f| loss.try_forward(f, Some(l.clone())))
            .unwrap();
        assert_same_loss(&what, step.loss, want_loss);
        // `fork` keeps the parameters' ids: the original model names them in both.
        for (name, param) in Mlp::params(&model) {
            let what = format!("{what}: {name}");
            assert_close(&what, &param.grad(&step.grads), &param.grad(&want));
        }
    }

    // A wrong token, an unreachable server: errors.
    let err = remote::connect(&url, "another token").unwrap_err();
    assert!(err.to_string().contains("refused the token"), "{err}");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let started = std::time::Instant::now();
    let err = remote::connect(&format!("ws://{closed}"), token).unwrap_err();
    assert!(matches!(err, Error::Devices(_)), "{err}");
    eprintln!(
        "an unreachable server: {err} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
