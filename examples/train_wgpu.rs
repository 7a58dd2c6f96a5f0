//! SupCon training on any GPU that wgpu drives.
//!
//! With no argument: SupCon pretraining of the small ResNet on the embedded UCI digits, linear
//! evaluation, plots and `summary.json` in `runs/<method>-<dataset>/`.
//!
//! ```text
//! cargo run --release --example train_wgpu
//! cargo run --release --example train_wgpu -- --method simclr
//! cargo run --release --example train_wgpu -- --method ce
//! cargo run --release --example train_wgpu -- --dataset cifar10 --data-dir DIR --model resnet18
//! cargo run --release --example train_wgpu -- --dataset folder --data-dir ROOT --image-size 32
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use supcon_wgpu::pipeline::augment::{AugmentConfig, Recipe};
use supcon_wgpu::pipeline::data::{
    self, Cifar, DataError, FolderChannels, FolderOpen, FolderOptions, ImageSource, Split,
};
use supcon_wgpu::pipeline::eval::LinearEvalConfig;
use supcon_wgpu::pipeline::model::{HeadKind, ModelPreset, Stem};
use supcon_wgpu::pipeline::train::{Method, ResumeFrom, RunInfo, RunOptions, TrainConfig, run};
use supcon_wgpu::pipeline::{PipelineError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    Supcon,
    Simclr,
    Ce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModelArg {
    Small,
    Resnet18,
    Resnet34,
    Resnet50,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DatasetArg {
    /// The embedded UCI handwritten digits (1,797 8×8 images, 10 classes).
    Digits,
    /// CIFAR-10 binary version in --data-dir.
    Cifar10,
    /// CIFAR-100 binary version in --data-dir, 100 fine classes.
    Cifar100,
    /// CIFAR-100 with its 20 coarse classes.
    Cifar100Coarse,
    /// An image folder --data-dir/class_name/*.png|jpg.
    Folder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StemArg {
    Cifar,
    Imagenet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RecipeArg {
    /// `natural` for colour images, `mild` for grayscale ones.
    Auto,
    /// The paper's CIFAR recipe: crop 20–100 % of the area, flips, colour jitter, grayscale.
    Natural,
    /// For grayscale glyphs and digits: crop 50–100 %, no flip, brightness/contrast jitter.
    Mild,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ChannelsArg {
    /// One channel when every image is grayscale (even if stored as RGB), else three.
    Auto,
    /// One channel (colour images converted to luma).
    #[value(name = "1")]
    One,
    /// Three channels.
    #[value(name = "3")]
    Three,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HeadArg {
    Mlp,
    Linear,
}

/// Supervised Contrastive Learning (Khosla et al. 2020) on wgpu: pretrain, then linear
/// evaluation. Unset values take per-data-set defaults (digits: small model, 15 epochs).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Pretraining method.
    #[arg(long, value_enum, default_value = "supcon")]
    method: MethodArg,
    /// Encoder (default: small for digits, resnet18 otherwise).
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Encoder stem (default: cifar, 3×3 stride 1, for small images).
    #[arg(long, value_enum, default_value = "cifar")]
    stem: StemArg,
    /// Projection head.
    #[arg(long, value_enum, default_value = "mlp")]
    head: HeadArg,
    /// Projection dimension.
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    feat_dim: usize,
    /// Data set.
    #[arg(long, value_enum, default_value = "digits")]
    dataset: DatasetArg,
    /// Folder of CIFAR binary files or of class folders.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Download the CIFAR archive into --data-dir first when its files are not there (needs
    /// curl and a network).
    #[arg(long)]
    download: bool,
    /// Image side for --dataset folder (images are resized to a square).
    #[arg(long, default_value_t = 32)]
    image_size: u32,
    /// Channels of --dataset folder images.
    #[arg(long, value_enum, default_value = "auto")]
    channels: ChannelsArg,
    /// --dataset folder: leave out files that cannot be read or decoded (each named in the log)
    /// instead of stopping at the first.
    #[arg(long)]
    skip_bad_images: bool,
    /// Threads decoding --dataset folder images while the device trains (default: the cores
    /// minus one, at least one).
    #[arg(long, value_parser = at_least_one)]
    workers: Option<usize>,
    /// --dataset folder: MiB of host memory that keep decoded images (u8, at --image-size) for
    /// the later epochs; 0 decodes every image every epoch.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    cache_images: u64,
    /// Augmentation recipe (auto: from the images' channels).
    #[arg(long, value_enum, default_value = "auto")]
    recipe: RecipeArg,
    /// Crop area range MIN,MAX as fractions of the image (overrides the recipe's).
    #[arg(long, value_parser = parse_range, value_name = "MIN,MAX")]
    crop_scale: Option<(f64, f64)>,
    /// Horizontal-flip probability (overrides the recipe's).
    #[arg(long)]
    flip: Option<f64>,
    /// No horizontal flip (--flip 0).
    #[arg(long, conflicts_with = "flip")]
    no_flip: bool,
    /// Colour-jitter strength S (overrides the recipe's): brightness, contrast and saturation
    /// factors from [1-S, 1+S], hue shift ±S/4; 0 turns jitter off.
    #[arg(long, value_name = "S")]
    color_jitter: Option<f64>,
    /// Pretraining epochs.
    #[arg(long, value_parser = at_least_one)]
    epochs: Option<usize>,
    /// Images per step (two views each for SupCon/SimCLR).
    #[arg(long, value_parser = at_least_two)]
    batch_size: Option<usize>,
    /// Gradient caching: run the encoder on C images (two views each) at a time, twice per
    /// step, with the loss and gradients of the whole batch (memory: one chunk's activations;
    /// time: one more forward pass). 0 or absent: off.
    #[arg(long, value_name = "C")]
    grad_cache_chunk: Option<usize>,
    /// A queue of the last Q keys (both views' projections of earlier steps, with their labels)
    /// that every batch is also contrasted against (memory: Q x projection dim floats; time: a
    /// loss over N + Q columns). 0 or absent: off.
    #[arg(long, value_name = "Q")]
    queue_size: Option<usize>,
    /// The queue's keys from a momentum encoder with momentum M (MoCo: 0.999), an averaged
    /// copy of encoder + head (memory: one more model; time: one more forward pass without
    /// gradients). Needs --queue-size.
    #[arg(long, value_name = "M")]
    momentum_encoder: Option<f64>,
    /// Peak learning rate (SGD, momentum 0.9, cosine decay).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// LARS (layer-wise adaptive rate scaling, trust coefficient 0.001) for large batches.
    #[arg(long)]
    lars: bool,
    /// Loss temperature τ.
    #[arg(long, default_value_t = 0.1)]
    temp: f64,
    /// τ_base; the loss is scaled by τ/τ_base (default: τ, i.e. no scaling).
    #[arg(long)]
    base_temp: Option<f64>,
    /// Epochs of linear learning-rate warmup.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Seed of weights, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Linear-evaluation epochs.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    linear_epochs: usize,
    /// k of the kNN monitor.
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    knn_k: usize,
    /// kNN monitor every N epochs (0: only at the end).
    #[arg(long, default_value_t = 1)]
    knn_every: usize,
    /// Stop each epoch after this many steps (smoke tests).
    #[arg(long, value_parser = at_least_one)]
    max_steps_per_epoch: Option<usize>,
    /// Output folder (default: runs/<method>-<dataset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the newest checkpoint in the output folder (its files are verified against
    /// their checksums first).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// With --resume: `latest` (the newest checkpoint; a damaged file is an error that names
    /// it) or `previous` (the newest checkpoint before it whose files verify; the epochs after
    /// it are trained again).
    #[arg(long, requires = "resume", value_parser = parse_resume_from, default_value = "latest")]
    resume_from: ResumeFrom,
    /// How many checkpoints stay on disk: the newest and the ones --resume-from previous can
    /// go back to.
    #[arg(long, value_parser = at_least_one, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Start over in an output folder that holds another run (its checkpoints, metrics,
    /// summary, encoder and plots are deleted first).
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many epochs in total (checkpointed; continue later with --resume).
    #[arg(long, value_parser = at_least_one)]
    stop_after_epochs: Option<usize>,
    /// Run even when the device memory check says a step does not fit (its estimate is an
    /// upper bound); a step that then fails on the device ends the run with an error.
    #[arg(long)]
    skip_memory_check: bool,
    /// Train on several devices: adapter indices (`0,1`; an index twice gives two devices on
    /// one adapter) or `all` (every GPU). Each step's batch is split over them and the loss
    /// runs over the whole batch on the first, which also holds the model and evaluates. A bad
    /// index is an error that lists the adapters. Default: one device, the one wgpu prefers.
    #[arg(long, value_parser = parse_devices)]
    devices: Option<DeviceList>,
    /// Also train on every device of a remote server, `ws://HOST:PORT` (the `serve_device`
    /// example on the other machine; repeatable), after the local devices: each step's batch
    /// is split over all of them. The token comes from SUPCON_REMOTE_TOKEN or
    /// --remote-token-file. Needs the `remote` feature.
    #[arg(long, value_name = "URL")]
    remote: Vec<String>,
    /// A file whose first line is the remote servers' token (default: SUPCON_REMOTE_TOKEN).
    #[arg(long, value_name = "FILE")]
    remote_token_file: Option<PathBuf>,
}

/// The devices of the `--remote` servers, with a name for each.
#[cfg(feature = "remote")]
fn remote_devices(args: &Args) -> Result<Vec<(burn::tensor::Device, String)>> {
    use supcon_wgpu::backend::remote;
    if args.remote.is_empty() {
        return Ok(Vec::new());
    }
    let token = remote::read_token(args.remote_token_file.as_deref())?;
    let mut devices = Vec::new();
    for url in &args.remote {
        for (i, device) in remote::connect(url, &token)?.into_iter().enumerate() {
            devices.push((device, format!("{url} device {i}")));
        }
    }
    Ok(devices)
}

#[cfg(not(feature = "remote"))]
fn remote_devices(args: &Args) -> Result<Vec<(burn::tensor::Device, String)>> {
    if args.remote.is_empty() && args.remote_token_file.is_none() {
        return Ok(Vec::new());
    }
    Err(supcon_wgpu::Error::Unsupported(
        "--remote needs the `remote` feature: cargo run --release --features remote --example \
         train_wgpu -- ..."
            .into(),
    )
    .into())
}

/// `--devices`: adapter indices, or every GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceList {
    Indices(Vec<usize>),
    All,
}

fn parse_devices(text: &str) -> std::result::Result<DeviceList, String> {
    if text == "all" {
        return Ok(DeviceList::All);
    }
    let indices = text
        .split(',')
        .map(|i| i.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format!("{text:?}: adapter indices separated by commas (e.g. 0,1), or all"))?;
    Ok(DeviceList::Indices(indices))
}

/// `--resume-from`: `latest` or `previous`.
fn parse_resume_from(text: &str) -> std::result::Result<ResumeFrom, String> {
    match text {
        "latest" => Ok(ResumeFrom::Latest),
        "previous" => Ok(ResumeFrom::Previous),
        other => Err(format!("{other:?}: latest or previous")),
    }
}

/// A count that must be at least `min`: refused when the flags are read, before any work.
fn count_at_least(text: &str, min: usize) -> std::result::Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}

fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    count_at_least(text, 1)
}

fn at_least_two(text: &str) -> std::result::Result<usize, String> {
    count_at_least(text, 2)
}

fn parse_range(text: &str) -> std::result::Result<(f64, f64), String> {
    let (a, b) = text
        .split_once(',')
        .ok_or_else(|| format!("expected MIN,MAX (e.g. 0.2,1), got {text:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| format!("{v:?} is not a number"))
    };
    Ok((parse(a)?, parse(b)?))
}

/// The augmentation recipe: the rule's (or the chosen) preset, then the override flags.
fn augmentation(args: &Args, train: &dyn ImageSource, look: Look) -> AugmentConfig {
    let Look {
        mean,
        std,
        grayscale,
    } = look;
    let [channels, height, width] = train.shape();
    let recipe = match args.recipe {
        RecipeArg::Auto => Recipe::for_grayscale(grayscale),
        RecipeArg::Natural => Recipe::Natural,
        RecipeArg::Mild => Recipe::Mild,
    };
    let mut config = recipe.config(height.min(width), mean, std);
    if let Some(scale) = args.crop_scale {
        config.crop_scale = scale;
    }
    if let Some(p) = args.flip {
        config.flip_p = p;
    }
    if args.no_flip {
        config.flip_p = 0.0;
    }
    if let Some(s) = args.color_jitter {
        config.brightness = s;
        config.contrast = s;
        config.saturation = s;
        config.hue = s / 4.0;
        if s == 0.0 {
            config.jitter_p = 0.0;
        }
    }
    log::info!(
        "augmentation: {} recipe{} for {}-channel {} {}×{} images: {config}",
        recipe.name(),
        if args.recipe == RecipeArg::Auto {
            " (auto)"
        } else {
            ""
        },
        channels,
        if grayscale { "grayscale" } else { "colour" },
        height,
        width
    );
    config
}

/// Images of a folder that the normalisation statistics and the recipe rule look at (drawn with
/// a fixed seed; in-memory sets are looked at whole).
const STATS_SAMPLE: usize = 2048;

/// What the run's settings are computed from: per-channel mean and standard deviation of the
/// pixels and whether every image is grayscale.
struct Look {
    mean: Vec<f32>,
    std: Vec<f32>,
    grayscale: bool,
}

/// The [`Look`] of the training images at `indices`, read 1,024 at a time.
fn look(data: &dyn ImageSource, indices: &[usize]) -> Result<Look> {
    let [channels, height, width] = data.shape();
    let plane = height * width;
    let mut mean = vec![0f64; channels];
    let mut sq = vec![0f64; channels];
    let mut grayscale = true;
    for chunk in indices.chunks(1024) {
        let pixels = data.read(chunk)?;
        for img in pixels.chunks_exact(channels * plane) {
            for c in 0..channels {
                for &v in &img[c * plane..(c + 1) * plane] {
                    mean[c] += v as f64;
                    sq[c] += (v as f64) * (v as f64);
                }
            }
            grayscale &= (1..channels).all(|c| img[c * plane..(c + 1) * plane] == img[..plane]);
        }
    }
    let n = (indices.len() * plane).max(1) as f64;
    let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| ((s / n - m * m).max(1e-12)).sqrt() as f32)
        .collect();
    Ok(Look {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std,
        grayscale,
    })
}

/// The training and test images and the data set's name.
type Loaded = (Box<dyn ImageSource>, Box<dyn ImageSource>, &'static str);

fn loaded(
    train: impl ImageSource + 'static,
    test: impl ImageSource + 'static,
    name: &'static str,
) -> Loaded {
    (Box::new(train), Box::new(test), name)
}

/// Default decoding threads: the cores minus one (the training thread's), at least one.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

fn load(args: &Args) -> Result<Loaded> {
    let dir = || {
        args.data_dir.clone().ok_or_else(|| {
            PipelineError::Config(format!("--dataset {:?} needs --data-dir", args.dataset))
        })
    };
    // Fixed seed: the held-out part is the same for every run and method.
    let split = |labels: &[u32]| data::stratified_split(labels, 0.2, 0);
    Ok(match args.dataset {
        DatasetArg::Digits => {
            let all = data::digits()?;
            let (tr, te) = split(&all.labels)?;
            loaded(all.subset(&tr), all.subset(&te), "digits")
        }
        DatasetArg::Folder => {
            let channels = match args.channels {
                ChannelsArg::Auto => FolderChannels::Auto,
                ChannelsArg::One => FolderChannels::Gray,
                ChannelsArg::Three => FolderChannels::Rgb,
            };
            let options = FolderOptions {
                channels,
                skip_bad_images: args.skip_bad_images,
                workers: Some(args.workers.unwrap_or_else(default_workers)),
                cache_bytes: args.cache_images.saturating_mul(1 << 20),
                ..FolderOptions::new(args.image_size)
            };
            let root = dir()?;
            let hint = |e: &DataError| {
                if matches!(e, DataError::ImageDecode { .. } | DataError::Io { .. }) {
                    log::error!(
                        "--skip-bad-images leaves files that cannot be read or decoded out"
                    );
                }
            };
            let report = |opened: FolderOpen, from: &Path| {
                for bad in &opened.skipped {
                    log::warn!("skipped {}: {}", bad.path.display(), bad.error);
                }
                if !opened.skipped.is_empty() {
                    log::warn!(
                        "--skip-bad-images: {} file(s) of {} left out ({} images kept)",
                        opened.skipped.len(),
                        from.display(),
                        opened.source.len()
                    );
                }
                opened.source
            };
            let (a, b) = match data::split_folders(&root)? {
                // train/ and val/ (or test/): the split as given.
                Some((train, test)) => {
                    log::info!(
                        "{} comes split: training on {}, testing on {}",
                        root.display(),
                        train.display(),
                        test.display()
                    );
                    let (a, b) =
                        data::open_split_image_folder(&train, &test, &options).inspect_err(hint)?;
                    (report(a, &train), report(b, &test))
                }
                None => {
                    let all = report(
                        data::open_image_folder(&root, &options).inspect_err(hint)?,
                        &root,
                    );
                    let (tr, te) = split(all.labels())?;
                    (all.subset(&tr), all.subset(&te))
                }
            };
            log::info!(
                "{}: images decoded when read by {} worker thread(s), up to {} MiB of them kept \
                 as bytes",
                root.display(),
                a.workers(),
                args.cache_images
            );
            loaded(a, b, "folder")
        }
        DatasetArg::Cifar10 | DatasetArg::Cifar100 | DatasetArg::Cifar100Coarse => {
            let (which, name) = match args.dataset {
                DatasetArg::Cifar10 => (Cifar::Ten, "cifar10"),
                DatasetArg::Cifar100 => (Cifar::HundredFine, "cifar100"),
                _ => (Cifar::HundredCoarse, "cifar100-coarse"),
            };
            let d = dir()?;
            if args.download && data::download_cifar(&d, which, None)? {
                log::info!("downloaded {} into {}", which.archive_url(), d.display());
            }
            loaded(
                data::load_cifar(&d, which, Split::Train)?,
                data::load_cifar(&d, which, Split::Test)?,
                name,
            )
        }
    })
}

/// The run's settings from the flags and the training images (per-data-set defaults, the
/// augmentation recipe and its normalisation).
fn train_config(args: &Args, train: &dyn ImageSource) -> Result<TrainConfig> {
    let digits = args.dataset == DatasetArg::Digits;
    let method = match args.method {
        MethodArg::Supcon => Method::SupCon,
        MethodArg::Simclr => Method::SimClr,
        MethodArg::Ce => Method::Ce,
    };
    let model = match args.model {
        Some(ModelArg::Small) => ModelPreset::Small,
        Some(ModelArg::Resnet18) => ModelPreset::ResNet18,
        Some(ModelArg::Resnet34) => ModelPreset::ResNet34,
        Some(ModelArg::Resnet50) => ModelPreset::ResNet50,
        None if digits => ModelPreset::Small,
        None => ModelPreset::ResNet18,
    };
    // A folder is looked at through a sample; the sets held in memory whole.
    let max = match args.dataset {
        DatasetArg::Folder => STATS_SAMPLE,
        _ => usize::MAX,
    };
    let augment = augmentation(
        args,
        train,
        look(train, &data::sample_indices(train.len(), max, 0))?,
    );
    let epochs = args.epochs.unwrap_or(if digits { 15 } else { 200 });
    Ok(TrainConfig {
        method,
        model,
        stem: match args.stem {
            StemArg::Cifar => Stem::Cifar,
            StemArg::Imagenet => Stem::ImageNet,
        },
        head: match args.head {
            HeadArg::Mlp => HeadKind::Mlp,
            HeadArg::Linear => HeadKind::Linear,
        },
        projection_dim: args.feat_dim,
        epochs,
        batch_size: args.batch_size.unwrap_or(256),
        lr: args.lr.unwrap_or(if digits { 0.1 } else { 0.05 }),
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        lars: args.lars,
        warmup_epochs: args
            .warmup_epochs
            .unwrap_or(if digits { 2 } else { 10 }.min(epochs.saturating_sub(1))),
        temperature: args.temp,
        base_temperature: args.base_temp,
        seed: args.seed,
        augment,
        linear: LinearEvalConfig {
            epochs: args.linear_epochs,
            seed: args.seed,
            ..LinearEvalConfig::default()
        },
        knn_k: args.knn_k,
        knn_every: args.knn_every,
        max_steps_per_epoch: args.max_steps_per_epoch,
        grad_cache_chunk: args.grad_cache_chunk.filter(|&c| c > 0),
        queue_size: args.queue_size.unwrap_or(0),
        momentum_encoder: args.momentum_encoder,
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or("warn,wgpu_hal::gles=off,supcon_wgpu=info,train_wgpu=info"),
    )
    .init();
    let args = Args::parse();
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(args: &Args) -> Result<()> {
    let (train, test, dataset) = load(args)?;
    let config = train_config(args, &*train)?;
    let method = config.method;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{dataset}", method.name())));
    use supcon_wgpu::backend::device::{
        all_adapter_indices, request_burn_device, request_burn_devices,
    };
    let mut devices = match &args.devices {
        None => vec![request_burn_device()?],
        Some(DeviceList::Indices(indices)) => request_burn_devices(indices)?,
        Some(DeviceList::All) => request_burn_devices(&all_adapter_indices())?,
    };
    let remote = remote_devices(args)?;
    let (device, adapter) = devices.remove(0);
    let more: Vec<(burn::tensor::Device, String)> = devices
        .into_iter()
        .map(|(d, a)| (d, a.name))
        .chain(remote)
        .collect();
    for (i, (_, name)) in more.iter().enumerate() {
        log::info!("device {}: {name}", i + 1);
    }
    log::info!(
        "{} on {}{} ({:?}, Burn kernels {}); {} training / {} test images of {}×{}×{}, {} classes",
        method.name(),
        adapter.name,
        match more.len() {
            0 => String::new(),
            n => format!(" and {n} more device(s), each step's batch split over them"),
        },
        adapter.backend,
        if supcon_wgpu::backend::BURN_AUTOTUNE {
            "autotuned"
        } else {
            "fixed: built without the `autotune` feature"
        },
        train.len(),
        test.len(),
        train.shape()[0],
        train.shape()[1],
        train.shape()[2],
        train.n_classes()
    );
    if !supcon_wgpu::backend::BURN_AUTOTUNE && !matches!(config.model, ModelPreset::Small) {
        log::warn!(
            "{} runs on Burn's fixed kernels: this build lacks the `autotune` feature, and tuned \
             kernels train ResNets faster (docs/training.md, \"Autotune and the first run\"); rebuild with \
             `cargo run --release --features autotune --example train_wgpu -- ...`",
            config.model.name()
        );
    }
    let info = RunInfo {
        dataset: dataset.into(),
        adapter: std::iter::once(adapter.name.as_str())
            .chain(more.iter().map(|(_, name)| name.as_str()))
            .collect::<Vec<_>>()
            .join(" + "),
        backend: format!("{:?}", adapter.backend),
    };
    let options = RunOptions {
        resume: args.resume,
        resume_from: args.resume_from,
        keep_checkpoints: args.keep_checkpoints,
        overwrite: args.overwrite,
        stop_after_epochs: args.stop_after_epochs,
        on_epoch_end: None,
        skip_memory_check: args.skip_memory_check,
        more_devices: more.into_iter().map(|(d, _)| d).collect(),
    };
    let Some(summary) = run(&config, &*train, &*test, &out, &options, &device, &info)? else {
        println!("checkpoint: {}", out.join("checkpoints").display());
        return Ok(());
    };
    println!(
        "{}: linear-eval test accuracy {:.2}%, kNN {:.2}%, {:.0} s, {:.0} images/s",
        summary.method,
        summary.linear_eval_test_accuracy * 100.0,
        summary.knn_test_accuracy * 100.0,
        summary.wall_time_s,
        summary.images_per_s
    );
    println!("{}", out.join("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_counts_are_refused_when_the_flags_are_read() {
        let flags = [
            "--epochs",
            "--linear-epochs",
            "--knn-k",
            "--max-steps-per-epoch",
            "--stop-after-epochs",
            "--feat-dim",
        ];
        for flag in flags {
            let err = Args::try_parse_from(["train_wgpu", flag, "0"]).unwrap_err();
            assert!(err.to_string().contains("at least 1"), "{flag}: {err}");
            Args::try_parse_from(["train_wgpu", flag, "1"]).unwrap();
        }
        let err = Args::try_parse_from(["train_wgpu", "--batch-size", "1"]).unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");
        assert!(Args::try_parse_from(["train_wgpu", "--epochs", "-1"]).is_err());
    }

    #[test]
    fn device_lists_are_parsed_when_the_flags_are_read() {
        let devices =
            |v: &str| Args::try_parse_from(["train_wgpu", "--devices", v]).map(|a| a.devices);
        assert_eq!(
            devices("0,1").unwrap(),
            Some(DeviceList::Indices(vec![0, 1]))
        );
        assert_eq!(
            devices("0, 0").unwrap(),
            Some(DeviceList::Indices(vec![0, 0]))
        );
        assert_eq!(devices("all").unwrap(), Some(DeviceList::All));
        for bad in ["", "gpu", "0,", "1.5", "1;2"] {
            let err = devices(bad).unwrap_err();
            assert!(
                err.to_string().contains("adapter indices"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(Args::try_parse_from(["train_wgpu"]).unwrap().devices, None);
    }

    /// `--remote` repeats; a bad URL or a missing token is an error before any connection.
    #[test]
    fn remote_servers() {
        let args = Args::try_parse_from([
            "train_wgpu",
            "--remote",
            "ws://gpu-a:3000",
            "--remote",
            "ws://gpu-b:3000",
        ])
        .unwrap();
        assert_eq!(args.remote, ["ws://gpu-a:3000", "ws://gpu-b:3000"]);
        assert!(
            Args::try_parse_from(["train_wgpu"])
                .unwrap()
                .remote
                .is_empty()
        );
        let missing = std::env::temp_dir().join("supcon-wgpu-no-such-token-file");
        let args = Args::try_parse_from([
            "train_wgpu",
            "--remote",
            "ws://gpu-a:3000",
            "--remote-token-file",
            missing.to_str().unwrap(),
        ])
        .unwrap();
        let err = remote_devices(&args).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("token") || err.contains("`remote` feature"),
            "{err}"
        );
    }

    /// One epoch: the default warm-up shrinks to fit (no underflow), and the settings pass.
    #[test]
    fn one_epoch_gets_a_valid_configuration() {
        let args = Args::try_parse_from(["train_wgpu", "--epochs", "1"]).unwrap();
        let (train, _, _) = load(&args).unwrap();
        let config = train_config(&args, &*train).unwrap();
        assert_eq!((config.epochs, config.warmup_epochs), (1, 0));
        config.validate(&*train).unwrap();
        let args = Args::try_parse_from(["train_wgpu", "--epochs", "3"]).unwrap();
        assert_eq!(train_config(&args, &*train).unwrap().warmup_epochs, 2);
    }

    /// `--grad-cache-chunk`: 0 is off; a chunk larger than the batch, or caching with the
    /// cross-entropy baseline, is refused before any work.
    #[test]
    fn grad_cache_chunks_are_checked() {
        let config = |flags: &[&str]| {
            let args = Args::try_parse_from([&["train_wgpu"], flags].concat()).unwrap();
            let (train, _, _) = load(&args).unwrap();
            (train_config(&args, &*train).unwrap(), train)
        };
        let (c, train) = config(&["--grad-cache-chunk", "0"]);
        assert_eq!(c.grad_cache_chunk, None);
        c.validate(&*train).unwrap();
        let (c, train) = config(&["--batch-size", "64", "--grad-cache-chunk", "24"]);
        assert_eq!(c.grad_cache_chunk, Some(24));
        c.validate(&*train).unwrap();
        let (c, train) = config(&["--batch-size", "64", "--grad-cache-chunk", "65"]);
        let err = c.validate(&*train).unwrap_err().to_string();
        assert!(err.contains("--grad-cache-chunk 65"), "{err}");
        let (c, train) = config(&["--method", "ce", "--grad-cache-chunk", "8"]);
        let err = c.validate(&*train).unwrap_err().to_string();
        assert!(err.contains("contrastive methods"), "{err}");
    }

    /// `--queue-size` and `--momentum-encoder`: 0 is off; a queue with the cross-entropy
    /// baseline, a momentum encoder without a queue or outside [0, 1), are refused before any
    /// work.
    #[test]
    fn queue_flags_are_checked() {
        let config = |flags: &[&str]| {
            let args = Args::try_parse_from([&["train_wgpu"], flags].concat()).unwrap();
            let (train, _, _) = load(&args).unwrap();
            (train_config(&args, &*train).unwrap(), train)
        };
        let (c, train) = config(&["--queue-size", "0"]);
        assert_eq!(c.queue_size, 0);
        c.validate(&*train).unwrap();
        let (c, train) = config(&["--queue-size", "2048", "--momentum-encoder", "0.999"]);
        assert_eq!((c.queue_size, c.momentum_encoder), (2048, Some(0.999)));
        c.validate(&*train).unwrap();
        let refused = [
            (
                &["--method", "ce", "--queue-size", "64"][..],
                "contrastive methods",
            ),
            (&["--momentum-encoder", "0.99"][..], "needs --queue-size"),
            (
                &["--queue-size", "64", "--momentum-encoder", "1"][..],
                "[0, 1)",
            ),
            (
                &["--queue-size", "64", "--momentum-encoder", "1.5"][..],
                "[0, 1)",
            ),
            (
                &["--queue-size", "64", "--momentum-encoder", "NaN"][..],
                "[0, 1)",
            ),
        ];
        for (flags, why) in refused {
            let (c, train) = config(flags);
            let err = c.validate(&*train).unwrap_err().to_string();
            assert!(err.contains(why), "{flags:?}: {err}");
        }
    }
}
