//! Device memory preflight: before a run loads its model or launches a kernel, the step's
//! largest tensor and its total device memory are estimated from the model, the image size and
//! the rows of a forward pass, and compared with what the device allows. A step that cannot
//! fit is refused with the limit, the estimate and the largest `--grad-cache-chunk` (or
//! `--batch-size`) that fits, instead of failing inside Burn minutes later.
//!
//! The estimate follows what Burn 0.22.1 allocates on wgpu:
//! - **One tensor** lives in one buffer of cubecl's pool, at most a page:
//!   `min(max_storage_buffer_binding_size, max_buffer_size)` ([`DeviceMemory::max_tensor_bytes`];
//!   lavapipe: 128 MiB). The largest tensor of a step is a feature map of the largest layer for
//!   every row of a forward pass (f32; Burn's direct convolution, the fixed kernels of the
//!   default build, makes no larger workspace), or the batch of input images.
//! - **All tensors together**: [`SAVED_MAPS_PER_LAYER`] maps per convolution kept for the
//!   backward pass (the batch norm's centred input and normalised output, the ReLU's output)
//!   and in flight, plus the weights with their gradients and optimizer state, plus the
//!   images. Compared with the device's memory where it is known: a CPU adapter (lavapipe)
//!   allocates host memory, compared with the host's available memory; under Burn's SPIR-V
//!   compiler cubecl reads a GPU's largest device-local heap; under WGSL nothing reports a GPU's
//!   size, so there only the per-tensor limit is checked and the estimate is logged.

use burn::tensor::Device;

use super::data::ImageSource;
use super::model::{FeatureMap, HeadKind};
use super::train::{Method, TrainConfig};
use super::{PipelineError, Result};

/// [`StepMemory::largest_name`] when the images are the largest tensor.
const INPUT_IMAGES: &str = "the input images";

/// Bytes of one activation value (f32).
const VALUE_BYTES: u64 = 4;

/// Feature maps of a layer's size alive at a step's peak, per convolution: the batch norm's
/// centred input and normalised output and the ReLU's output kept for the backward pass, the
/// gradients and layout copies in flight, and the pool's rounding. Measured on lavapipe (Burn's
/// reserved memory after a step, `tests/suite/pipeline_memory.rs`): 3.2 maps per layer for
/// ResNet-18 at 3×16×16, 4.8 for the small model at 1×16×16; 6 keeps the estimate above both.
pub const SAVED_MAPS_PER_LAYER: u64 = 6;

/// Copies of each weight on the device during training: the weights, their gradients, the
/// optimizer's momentum, and one in flight.
const WEIGHT_COPIES: u64 = 4;

/// What the device allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The largest tensor the device can hold: cubecl's page size, the device's
    /// `min(max_storage_buffer_binding_size, max_buffer_size)`.
    pub max_tensor_bytes: u64,
    /// The device's memory where it is known: a CPU adapter's is the host's available memory;
    /// a GPU's is known under Burn's SPIR-V compiler (the largest device-local heap), not under
    /// WGSL (WebGPU states no capacity): `None`.
    pub total_bytes: Option<u64>,
}

impl DeviceMemory {
    /// The limits of a Burn wgpu device; `None` for other backends (the CPU backends have no
    /// per-tensor limit).
    pub fn of(device: &Device) -> Option<Self> {
        let limits = crate::backend::device::memory_limits(device)?;
        Some(DeviceMemory {
            max_tensor_bytes: limits.max_tensor_bytes,
            total_bytes: match limits.is_cpu {
                true => host_available_bytes().or(limits.max_memory),
                false => limits.max_memory,
            },
        })
    }
}

/// The host's available memory (Linux: `MemAvailable` of /proc/meminfo).
fn host_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The images of one step and how the model sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepShape {
    /// Images per optimizer step.
    pub batch: usize,
    /// Images per forward pass (the gradient-caching chunk, else the batch).
    pub chunk: usize,
    /// Views of each image (2 for the contrastive methods, 1 for cross-entropy).
    pub views: usize,
    /// Input image `[channels, height, width]`.
    pub image: [usize; 3],
}

impl StepShape {
    /// The step of `config` with `train` as the training set.
    pub fn of(config: &TrainConfig, train: &dyn ImageSource) -> Self {
        let batch = config.batch_size.min(train.len());
        StepShape {
            batch,
            chunk: config.grad_cache_chunk.map_or(batch, |c| c.min(batch)),
            views: if config.method == Method::Ce { 1 } else { 2 },
            image: train.shape(),
        }
    }

    /// Rows of one forward pass.
    pub fn rows(&self) -> usize {
        self.chunk * self.views
    }
}

/// The estimated device memory of one training step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMemory {
    /// The shape it was estimated for.
    pub shape: StepShape,
    /// What the largest tensor holds: a layer's feature maps, or the input images.
    pub largest_name: String,
    /// Bytes of the largest tensor.
    pub largest_bytes: u64,
    /// Bytes of every tensor of the step together (an estimate, see the module's notes).
    pub total_bytes: u64,
}

impl StepMemory {
    /// The estimate for `maps` (one image's feature maps, [`super::model::ResNetConfig::
    /// feature_maps`]), a model of `params` weights and the step `shape`.
    pub fn estimate(maps: &[FeatureMap], params: u64, shape: StepShape) -> Self {
        let rows = shape.rows() as u64;
        let [c, h, w] = shape.image;
        // The batch of images, and each view of it, live whole even when the encoder sees
        // chunks of them; without chunks the views are joined into one tensor of all rows.
        let image_rows = if shape.chunk == shape.batch {
            shape.batch * shape.views
        } else {
            shape.batch
        } as u64;
        let image_bytes = image_rows * (c * h * w) as u64 * VALUE_BYTES;
        let map_bytes = |m: &FeatureMap| rows * m.len() as u64 * VALUE_BYTES;
        // The first of the largest (max_by_key keeps the last, so over the reversed list).
        let largest_map = maps.iter().rev().max_by_key(|m| map_bytes(m));
        let (largest_name, largest_bytes) = match largest_map {
            Some(map) if map_bytes(map) >= image_bytes => (
                format!(
                    "the {} output, {}×{}×{} per row",
                    map.name, map.channels, map.height, map.width
                ),
                map_bytes(map),
            ),
            _ => (INPUT_IMAGES.to_string(), image_bytes),
        };
        let maps_bytes: u64 = maps.iter().map(map_bytes).sum();
        let all_images = (shape.batch * (1 + shape.views) * c * h * w) as u64 * VALUE_BYTES;
        StepMemory {
            shape,
            largest_name,
            largest_bytes,
            total_bytes: SAVED_MAPS_PER_LAYER * maps_bytes
                + WEIGHT_COPIES * params * VALUE_BYTES
                + all_images,
        }
    }

    /// Whether the step fits `device`.
    pub fn fits(&self, device: &DeviceMemory) -> bool {
        self.largest_bytes <= device.max_tensor_bytes
            && device.total_bytes.is_none_or(|t| self.total_bytes <= t)
    }
}

/// The weights of `config`'s model (encoder with `maps`, and head or classifier) without
/// building it.
fn parameter_count(config: &TrainConfig, maps: &[FeatureMap], dim: usize, n_classes: usize) -> u64 {
    let head = match (config.method, config.head) {
        (Method::Ce, _) => dim * n_classes + n_classes,
        (_, HeadKind::Mlp) => dim * dim + dim + dim * config.projection_dim,
        (_, HeadKind::Linear) => dim * config.projection_dim,
    } + config.projection_dim;
    maps.iter().map(|m| m.weights as u64).sum::<u64>() + head as u64
}

/// The estimate of `config`'s model on `train`'s images for the step `shape`.
fn estimate_shape(config: &TrainConfig, train: &dyn ImageSource, shape: StepShape) -> StepMemory {
    let [channels, height, width] = train.shape();
    let encoder = config.model.config(channels, config.stem);
    let maps = encoder.feature_maps(height, width);
    let params = parameter_count(config, &maps, encoder.feature_dim(), train.n_classes());
    StepMemory::estimate(&maps, params, shape)
}

/// The estimate of `config`'s step on `train` for a forward pass of `chunk` images.
fn estimate_with(config: &TrainConfig, train: &dyn ImageSource, chunk: usize) -> StepMemory {
    let shape = StepShape {
        chunk,
        ..StepShape::of(config, train)
    };
    estimate_shape(config, train, shape)
}

/// The estimate of one training step of `config` on `train`.
pub fn estimate(config: &TrainConfig, train: &dyn ImageSource) -> StepMemory {
    estimate_shape(config, train, StepShape::of(config, train))
}

/// `bytes` in MiB, for messages.
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The kNN monitor and the linear evaluation keep the encoder features of every training
/// image in one tensor, `[images, feature_dim]` f32: that tensor must fit one buffer too.
fn check_features(
    config: &TrainConfig,
    train: &dyn ImageSource,
    device: &DeviceMemory,
) -> Result<()> {
    let dim = config
        .model
        .config(train.shape()[0], config.stem)
        .feature_dim();
    let bytes = (train.len() * dim) as u64 * VALUE_BYTES;
    if bytes <= device.max_tensor_bytes {
        return Ok(());
    }
    Err(PipelineError::DeviceMemory(format!(
        "the evaluation (kNN monitor and linear evaluation) keeps the {}-dimensional features of \
         the {} training images in one tensor of {}, above the {} the device allows one buffer \
         (min of max_storage_buffer_binding_size and max_buffer_size); at most {} training \
         images fit with {}: use fewer images or a model with smaller features",
        dim,
        train.len(),
        mib(bytes),
        mib(device.max_tensor_bytes),
        device.max_tensor_bytes / (dim as u64 * VALUE_BYTES),
        config.model.name(),
    )))
}

/// The largest `n` in `1..=max` for which `fits(n)` holds (`fits` monotone), if any.
fn largest_fitting(max: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    if !fits(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    Some(lo)
}

/// Checks that a step of `config` on `train` fits `device` before anything runs: the
/// estimate, or [`PipelineError::DeviceMemory`] naming the limit, the estimate and the largest
/// `--grad-cache-chunk` (contrastive methods) or `--batch-size` (cross-entropy) that fits.
pub fn preflight(
    config: &TrainConfig,
    train: &dyn ImageSource,
    device: &DeviceMemory,
) -> Result<StepMemory> {
    check_features(config, train, device)?;
    let step = estimate(config, train);
    if step.fits(device) {
        return Ok(step);
    }
    let shape = step.shape;
    let limit = if step.largest_bytes > device.max_tensor_bytes {
        format!(
            "its largest tensor ({}) takes {} for {} rows, above the {} the device allows one \
             buffer (min of max_storage_buffer_binding_size and max_buffer_size)",
            step.largest_name,
            mib(step.largest_bytes),
            shape.rows(),
            mib(device.max_tensor_bytes)
        )
    } else {
        format!(
            "its tensors take about {} together, above the {} available",
            mib(step.total_bytes),
            mib(device.total_bytes.unwrap_or(0))
        )
    };
    let what = format!(
        "a training step of {} on {}×{}×{} images, {} images × {} view{} per forward pass, does \
         not fit the device: {limit}",
        config.model.name(),
        shape.image[0],
        shape.image[1],
        shape.image[2],
        shape.chunk,
        shape.views,
        if shape.views == 1 { "" } else { "s" },
    );
    // A batch of one image: whether the model or the batch of images is what cannot fit.
    let one_image = StepShape {
        batch: 1,
        chunk: 1,
        ..shape
    };
    let nothing_fits = if estimate_shape(config, train, one_image).fits(device) {
        format!(
            "the batch of {} images alone is too large: lower --batch-size",
            shape.batch
        )
    } else {
        "not even one image fits: lower --image-size or choose a smaller --model".to_string()
    };
    let advice = if config.method == Method::Ce {
        let fits = |b: usize| {
            let mut c = config.clone();
            c.batch_size = b;
            estimate(&c, train).fits(device)
        };
        match largest_fitting(shape.batch, fits) {
            Some(b) => format!("--batch-size {b} is the largest that fits"),
            None => nothing_fits,
        }
    } else {
        let fits = |c: usize| estimate_with(config, train, c).fits(device);
        match largest_fitting(shape.batch, fits) {
            Some(c) => {
                let at = estimate_with(config, train, c);
                format!(
                    "--grad-cache-chunk {c} is the largest that fits ({} rows, largest tensor \
                     {}): the encoder then sees {c} images at a time, while the loss and the \
                     gradients stay those of the whole batch of {}",
                    at.shape.rows(),
                    mib(at.largest_bytes),
                    shape.batch
                )
            }
            None => nothing_fits,
        }
    };
    Err(PipelineError::DeviceMemory(format!("{what}; {advice}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::augment::AugmentConfig;
    use crate::pipeline::data::ImageDataset;
    use crate::pipeline::model::{ModelPreset, Stem};

    fn images(n: usize, [c, h, w]: [usize; 3]) -> ImageDataset {
        ImageDataset {
            images: vec![0.5; n * c * h * w],
            labels: (0..n as u32).map(|i| i % 10).collect(),
            class_names: (0..10).map(|i| i.to_string()).collect(),
            channels: c,
            height: h,
            width: w,
        }
    }

    fn resnet18(method: Method, batch: usize) -> TrainConfig {
        TrainConfig {
            method,
            augment: AugmentConfig::digits(vec![0.5; 3], vec![0.3; 3]),
            ..crate::pipeline::train::test_config(ModelPreset::ResNet18, batch)
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn feature_maps_of_the_presets() {
        let maps = ModelPreset::ResNet18
            .config(3, Stem::Cifar)
            .feature_maps(32, 32);
        // The stem, 8 blocks of two convolutions, a shortcut at each of 3 stage changes.
        assert_eq!(maps.len(), 1 + 16 + 3);
        assert_eq!((maps[0].channels, maps[0].height), (64, 32));
        let last = maps.last().unwrap();
        assert_eq!((last.channels, last.height, last.width), (512, 4, 4));
        // torchvision's ResNet-50 at 224 px: 64×112×112 after the stem, 56×56 after its
        // max-pool, 2048×7×7 at the end.
        let maps = ModelPreset::ResNet50
            .config(3, Stem::ImageNet)
            .feature_maps(224, 224);
        assert_eq!(
            (maps[0].channels, maps[0].height, maps[0].width),
            (64, 112, 112)
        );
        assert_eq!((maps[1].height, maps[1].weights), (56, 0));
        let last = maps.last().unwrap();
        assert_eq!((last.channels, last.height, last.width), (2048, 7, 7));
        assert_eq!(maps.len(), 2 + 16 * 3 + 4);
    }

    /// ResNet-18, 32×32, batch 1,024: 2,048 rows of 64×32×32 f32 = 512 MiB; with lavapipe's
    /// 128 MiB a buffer the largest chunk is 256 images (512 rows, 128 MiB exactly); the
    /// cross-entropy baseline (one view) fits batches of 512.
    #[test]
    fn resnet18_at_batch_1024_against_128_mib() {
        let train = images(1024, [3, 32, 32]);
        let device = DeviceMemory {
            max_tensor_bytes: 128 * MIB,
            total_bytes: None,
        };
        let config = resnet18(Method::SupCon, 1024);
        let step = estimate(&config, &train);
        assert_eq!(step.largest_bytes, 512 * MIB);
        assert!(
            step.largest_name.contains("stem convolution"),
            "{}",
            step.largest_name
        );
        let err = preflight(&config, &train, &device).unwrap_err().to_string();
        assert!(
            err.contains("--grad-cache-chunk 256 is the largest"),
            "{err}"
        );
        assert!(err.contains("512.0 MiB for 2048 rows"), "{err}");
        let fits = |chunk| TrainConfig {
            grad_cache_chunk: Some(chunk),
            ..config.clone()
        };
        assert_eq!(
            preflight(&fits(256), &train, &device)
                .unwrap()
                .largest_bytes,
            128 * MIB
        );
        assert!(preflight(&fits(257), &train, &device).is_err());

        let err = preflight(&resnet18(Method::Ce, 1024), &train, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--batch-size 512 is the largest"), "{err}");

        // A known total bounds the chunk too: the estimate is linear in the rows.
        let small = DeviceMemory {
            max_tensor_bytes: 128 * MIB,
            total_bytes: Some(estimate(&fits(100), &train).total_bytes),
        };
        let err = preflight(&config, &train, &small).unwrap_err().to_string();
        assert!(
            err.contains("--grad-cache-chunk 100 is the largest"),
            "{err}"
        );
    }

    /// When not even one image fits, the advice says what to change instead of a chunk.
    #[test]
    fn nothing_fits() {
        let train = images(64, [3, 224, 224]);
        let device = DeviceMemory {
            max_tensor_bytes: MIB,
            total_bytes: None,
        };
        let config = TrainConfig {
            stem: Stem::ImageNet,
            ..resnet18(Method::SupCon, 64)
        };
        let err = preflight(&config, &train, &device).unwrap_err().to_string();
        assert!(err.contains("lower --image-size"), "{err}");
        // The batch of images itself: 1,024 images of 3×64×64 f32 are 48 MiB a view, above
        // 32 MiB, where one image's feature maps (64×32×32 after the stem, 256 KiB) fit.
        let train = images(1024, [3, 64, 64]);
        let device = DeviceMemory {
            max_tensor_bytes: 32 * MIB,
            total_bytes: None,
        };
        let config = TrainConfig {
            stem: Stem::ImageNet,
            ..resnet18(Method::SupCon, 1024)
        };
        let err = preflight(&config, &train, &device).unwrap_err().to_string();
        assert!(err.contains("the batch of 1024 images alone"), "{err}");
    }

    /// ResNet-50's 2,048-d features of 20,000 images are 156.25 MiB: above 128 MiB, refused
    /// whatever the chunk, with the number of images that fit (16,384).
    #[test]
    fn evaluation_features_must_fit_one_buffer() {
        let train = images(20_000, [1, 8, 8]);
        let device = DeviceMemory {
            max_tensor_bytes: 128 * MIB,
            total_bytes: None,
        };
        let config = TrainConfig {
            model: ModelPreset::ResNet50,
            grad_cache_chunk: Some(1),
            ..resnet18(Method::SupCon, 64)
        };
        let err = preflight(&config, &train, &device).unwrap_err().to_string();
        assert!(
            err.contains("features of the 20000 training images"),
            "{err}"
        );
        assert!(
            err.contains("156.2 MiB") && err.contains("at most 16384"),
            "{err}"
        );
        let fewer = images(16_384, [1, 8, 8]);
        assert!(preflight(&config, &fewer, &device).is_ok());
    }

    #[test]
    fn largest_fitting_is_a_search() {
        assert_eq!(largest_fitting(10, |n| n <= 7), Some(7));
        assert_eq!(largest_fitting(10, |n| n <= 70), Some(10));
        assert_eq!(largest_fitting(10, |_| false), None);
        assert_eq!(largest_fitting(1, |_| true), Some(1));
    }
}
