//! ResNet encoders and projection heads, written with Burn's nn modules.
//!
//! The encoder maps `[batch, channels, height, width]` images to `[batch, feature_dim]`
//! features (global average pooling after the last stage). The CIFAR stem (3×3 conv, stride 1,
//! no max-pool) suits small images; the ImageNet stem (7×7, stride 2, 3×3 max-pool) is an
//! option. [`ModelPreset`] names the standard depths and a small preset for tiny inputs.

use crate::backend::CachedForward;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Which residual block a network stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1 → 3×3 → 1×1 convolutions (ResNet-50), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block per unit of its width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The first layers of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// 3×3 convolution, stride 1, no max-pool (small images: CIFAR, digits).
    Cifar,
    /// 7×7 convolution, stride 2, then a 3×3 max-pool with stride 2 (ImageNet-sized images).
    ImageNet,
}

/// Named encoder sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelPreset {
    /// Three basic-block stages of widths 16/32/64, one block each: 64-d features, ~0.1 M
    /// parameters. For 8×8 digits and quick runs.
    Small,
    /// ResNet-18: basic blocks [2, 2, 2, 2], widths 64..512, 512-d features.
    ResNet18,
    /// ResNet-34: basic blocks [3, 4, 6, 3], 512-d features.
    ResNet34,
    /// ResNet-50: bottleneck blocks [3, 4, 6, 3], 2048-d features.
    ResNet50,
}

impl ModelPreset {
    /// The preset's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            ModelPreset::Small => "small",
            ModelPreset::ResNet18 => "resnet18",
            ModelPreset::ResNet34 => "resnet34",
            ModelPreset::ResNet50 => "resnet50",
        }
    }

    /// Parses a preset name (`small`, `resnet18`, `resnet34`, `resnet50`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "small" => Some(ModelPreset::Small),
            "resnet18" => Some(ModelPreset::ResNet18),
            "resnet34" => Some(ModelPreset::ResNet34),
            "resnet50" => Some(ModelPreset::ResNet50),
            _ => None,
        }
    }

    /// The encoder configuration of this preset.
    pub fn config(self, in_channels: usize, stem: Stem) -> ResNetConfig {
        let (block, blocks, widths): (BlockKind, Vec<usize>, Vec<usize>) = match self {
            ModelPreset::Small => (BlockKind::Basic, vec![1, 1, 1], vec![16, 32, 64]),
            ModelPreset::ResNet18 => (BlockKind::Basic, vec![2, 2, 2, 2], vec![64, 128, 256, 512]),
            ModelPreset::ResNet34 => (BlockKind::Basic, vec![3, 4, 6, 3], vec![64, 128, 256, 512]),
            ModelPreset::ResNet50 => (
                BlockKind::Bottleneck,
                vec![3, 4, 6, 3],
                vec![64, 128, 256, 512],
            ),
        };
        ResNetConfig {
            block,
            blocks,
            stem_width: widths[0],
            widths,
            stem,
            in_channels,
        }
    }
}

/// A ResNet encoder's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage; the first stage keeps the resolution, every later one halves it.
    pub blocks: Vec<usize>,
    /// Width (channels before expansion) of each stage.
    pub widths: Vec<usize>,
    /// Output channels of the stem.
    pub stem_width: usize,
    /// Stem type.
    pub stem: Stem,
    /// Input image channels (1 for digits, 3 for colour images).
    pub in_channels: usize,
}

impl ResNetConfig {
    /// The dimension of the encoder's output features.
    pub fn feature_dim(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.stem_width) * self.block.expansion()
    }

    /// Builds the encoder with freshly initialised weights (Kaiming, as torchvision).
    ///
    /// # Panics
    /// If `blocks` and `widths` differ in length or are empty, or a size is zero; callers check
    /// user input first.
    pub fn init(&self, device: &Device) -> ResNet {
        assert!(
            !self.blocks.is_empty() && self.blocks.len() == self.widths.len(),
            "one width per stage"
        );
        let stem = match self.stem {
            Stem::Cifar => StemLayers {
                conv: conv(self.in_channels, self.stem_width, 3, 1, 1, device),
                bn: bn(self.stem_width, device),
                pool: None,
            },
            Stem::ImageNet => StemLayers {
                conv: conv(self.in_channels, self.stem_width, 7, 2, 3, device),
                bn: bn(self.stem_width, device),
                pool: Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            },
        };
        let blocks = self
            .block_plan()
            .into_iter()
            .map(|(cin, width, stride)| match self.block {
                BlockKind::Basic => Block::Basic(BasicBlock::new(cin, width, stride, device)),
                BlockKind::Bottleneck => {
                    Block::Bottleneck(Bottleneck::new(cin, width, stride, device))
                }
            })
            .collect();
        ResNet { stem, blocks }
    }

    /// Every residual block as (input channels, width, stride): the first block of every stage
    /// after the first halves the resolution.
    fn block_plan(&self) -> Vec<(usize, usize, usize)> {
        let mut plan = Vec::new();
        let mut in_ch = self.stem_width;
        for (stage, (&n, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                plan.push((in_ch, width, stride));
                in_ch = width * self.block.expansion();
            }
        }
        plan
    }

    /// The feature maps one image makes in the encoder's forward pass (convolution outputs,
    /// the stem's max-pool), in order, for `height × width` input images: what the device
    /// memory preflight ([`crate::pipeline::memory`]) sizes a step by. Batch norm, ReLU and the
    /// residual sum make maps of the same shape as the convolution before them.
    pub fn feature_maps(&self, height: usize, width: usize) -> Vec<FeatureMap> {
        // A convolution or pooling window of size k, stride s, padding p.
        let out = |x: usize, k: usize, s: usize, p: usize| (x + 2 * p).saturating_sub(k) / s + 1;
        let mut maps = Vec::new();
        // A convolution of `cin` inputs, a k×k kernel, and its batch norm (4 values a channel).
        let mut push = |name: String, (cin, k): (usize, usize), channels: usize, h, w| {
            maps.push(FeatureMap {
                name,
                channels,
                height: h,
                width: w,
                weights: if k == 0 {
                    0
                } else {
                    cin * channels * k * k + 4 * channels
                },
            })
        };
        let (k, s, p) = match self.stem {
            Stem::Cifar => (3, 1, 1),
            Stem::ImageNet => (7, 2, 3),
        };
        let (mut h, mut w) = (out(height, k, s, p), out(width, k, s, p));
        push(
            "stem convolution".into(),
            (self.in_channels, k),
            self.stem_width,
            h,
            w,
        );
        if self.stem == Stem::ImageNet {
            (h, w) = (out(h, 3, 2, 1), out(w, 3, 2, 1));
            push("stem max-pool".into(), (0, 0), self.stem_width, h, w);
        }
        for (i, (cin, width, stride)) in self.block_plan().into_iter().enumerate() {
            let (ho, wo) = (out(h, 3, stride, 1), out(w, 3, stride, 1));
            let cout = width * self.block.expansion();
            let name = |layer: &str| format!("block {} {layer}", i + 1);
            match self.block {
                BlockKind::Basic => {
                    push(name("conv1"), (cin, 3), width, ho, wo);
                    push(name("conv2"), (width, 3), width, ho, wo);
                }
                BlockKind::Bottleneck => {
                    push(name("conv1"), (cin, 1), width, h, w);
                    push(name("conv2"), (width, 3), width, ho, wo);
                    push(name("conv3"), (width, 1), cout, ho, wo);
                }
            }
            if stride != 1 || cin != cout {
                push(name("shortcut"), (cin, 1), cout, ho, wo);
            }
            (h, w) = (ho, wo);
        }
        maps
    }
}

/// One feature map of an image in the encoder ([`ResNetConfig::feature_maps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureMap {
    /// The layer that makes it, e.g. `block 3 conv1`.
    pub name: String,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// The weights of the layer that makes it: its kernel and its batch norm's scale, shift
    /// and running statistics (none for a pooling layer).
    pub weights: usize,
}

impl FeatureMap {
    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the map is empty (a zero-sized layer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(burn::nn::Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// Batch norm with `bn`'s parameters and running statistics, as `BatchNorm::forward` (batch
/// statistics on an autodiff device while the layer trains, running statistics otherwise), but
/// with the batch statistics reduced one axis at a time (batch, then height, then width).
///
/// Burn 0.22.1 computes them with a single reduction over the N·H·W values of each channel, and
/// on wgpu such a reduction goes wrong beyond about 65,536 values (measured on lavapipe: a
/// relative error of 1 at 131,072, e.g. 512 views of 16×16). The training output stays
/// normalised by whatever statistics came out, so training seems to work, but the running
/// statistics are garbage and every evaluation-mode feature collapses to one point. Each axis
/// here is at most as long as the batch or an image side.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_with(bn, x, RunningStats::Update)
}

/// What batch norm does in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunningStats {
    /// As `BatchNorm::forward`: batch statistics that move the running ones while the layer
    /// trains on an autodiff device, the running statistics otherwise.
    Update,
    /// Batch statistics on any device, the running ones left alone: gradient caching's first
    /// pass, which the second pass (with [`RunningStats::Update`]) repeats.
    Keep,
}

/// [`batch_norm`], with the running statistics updated or kept.
fn batch_norm_with(bn: &BatchNorm, x: Tensor<4>, stats: RunningStats) -> Tensor<4> {
    let device = x.device();
    let batch_statistics = match stats {
        RunningStats::Update => device.is_autodiff() && bn.training.is_enabled(),
        RunningStats::Keep => true,
    };
    if !batch_statistics {
        // Running statistics: no reduction.
        return bn.forward(x);
    }
    let [_, channels, _, _] = x.dims();
    let per_channel = |t: Tensor<4>| t.mean_dim(0).mean_dim(2).mean_dim(3);
    let mean = per_channel(x.clone());
    let centered = x - mean.clone();
    let variance = per_channel(centered.clone().powi_scalar(2));
    let shape = [1, channels, 1, 1];
    let output = centered / variance.clone().add_scalar(bn.epsilon).sqrt()
        * bn.gamma.val().reshape(shape)
        + bn.beta.val().reshape(shape);
    let m = bn.momentum;
    let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<4>| {
        let running = state
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - m)
            .add(batch.reshape([channels]).detach().mul_scalar(m));
        state.update(running.detach());
    };
    if stats == RunningStats::Update {
        update(&bn.running_mean, mean);
        update(&bn.running_var, variance);
    }
    output
}

/// The stem: a convolution, batch norm, ReLU and (ImageNet stem) a max-pool.
#[derive(Module, Debug)]
pub struct StemLayers {
    conv: Conv2d,
    bn: BatchNorm,
    pool: Option<MaxPool2d>,
}

/// A 1×1 projection shortcut with batch norm, where a block changes shape.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Downsample {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Option<Self> {
        (stride != 1 || cin != cout).then(|| Downsample {
            conv: conv(cin, cout, 1, stride, 0, device),
            bn: bn(cout, device),
        })
    }

    fn forward(&self, x: Tensor<4>, stats: RunningStats) -> Tensor<4> {
        batch_norm_with(&self.bn, self.conv.forward(x), stats)
    }
}

/// The residual branch: the projection where the block changes shape, else the input itself.
fn shortcut(downsample: &Option<Downsample>, x: &Tensor<4>, stats: RunningStats) -> Tensor<4> {
    match downsample {
        Some(d) => d.forward(x.clone(), stats),
        None => x.clone(),
    }
}

/// ResNet basic block: 3×3 conv → BN → ReLU → 3×3 conv → BN, plus the shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(cin: usize, width: usize, stride: usize, device: &Device) -> Self {
        BasicBlock {
            conv1: conv(cin, width, 3, stride, 1, device),
            bn1: bn(width, device),
            conv2: conv(width, width, 3, 1, 1, device),
            bn2: bn(width, device),
            downsample: Downsample::new(cin, width, stride, device),
        }
    }

    fn forward(&self, x: Tensor<4>, stats: RunningStats) -> Tensor<4> {
        let identity = shortcut(&self.downsample, &x, stats);
        let y = relu(batch_norm_with(&self.bn1, self.conv1.forward(x), stats));
        let y = batch_norm_with(&self.bn2, self.conv2.forward(y), stats);
        relu(y + identity)
    }
}

/// ResNet bottleneck block: 1×1 → 3×3 (stride) → 1×1 (×4 channels), BN after each, shortcut.
#[derive(Module, Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    fn new(cin: usize, width: usize, stride: usize, device: &Device) -> Self {
        let cout = width * BlockKind::Bottleneck.expansion();
        Bottleneck {
            conv1: conv(cin, width, 1, 1, 0, device),
            bn1: bn(width, device),
            conv2: conv(width, width, 3, stride, 1, device),
            bn2: bn(width, device),
            conv3: conv(width, cout, 1, 1, 0, device),
            bn3: bn(cout, device),
            downsample: Downsample::new(cin, cout, stride, device),
        }
    }

    fn forward(&self, x: Tensor<4>, stats: RunningStats) -> Tensor<4> {
        let identity = shortcut(&self.downsample, &x, stats);
        let y = relu(batch_norm_with(&self.bn1, self.conv1.forward(x), stats));
        let y = relu(batch_norm_with(&self.bn2, self.conv2.forward(y), stats));
        let y = batch_norm_with(&self.bn3, self.conv3.forward(y), stats);
        relu(y + identity)
    }
}

/// One residual block of either kind (a model holds a few dozen at most, so the size
/// difference of the variants does not matter).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Block {
    /// A basic block.
    Basic(BasicBlock),
    /// A bottleneck block.
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: Tensor<4>, stats: RunningStats) -> Tensor<4> {
        match self {
            Block::Basic(b) => b.forward(x, stats),
            Block::Bottleneck(b) => b.forward(x, stats),
        }
    }
}

/// A ResNet encoder (no classifier): stem, residual stages, global average pooling.
#[derive(Module, Debug)]
pub struct ResNet {
    stem: StemLayers,
    blocks: Vec<Block>,
}

impl ResNet {
    /// Encodes images.
    ///
    /// # Shapes
    /// - `images`: `[batch, in_channels, height, width]`
    /// - output: `[batch, feature_dim]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(images, RunningStats::Update)
    }

    fn forward_with(&self, images: Tensor<4>, stats: RunningStats) -> Tensor<2> {
        let mut x = relu(batch_norm_with(
            &self.stem.bn,
            self.stem.conv.forward(images),
            stats,
        ));
        if let Some(pool) = &self.stem.pool {
            x = pool.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x, stats);
        }
        // Global average pooling over the spatial axes.
        let [b, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([b, c])
    }
}

/// The projection head's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadKind {
    /// `d → d → out` with a ReLU between (the paper's default).
    Mlp,
    /// A single linear layer `d → out`.
    Linear,
}

/// The projection head; its output is L2-normalised inside the loss.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    first: Linear,
    second: Option<Linear>,
}

impl ProjectionHead {
    /// A head from `input` features to `output` dimensions.
    pub fn new(kind: HeadKind, input: usize, output: usize, device: &Device) -> Self {
        match kind {
            HeadKind::Mlp => ProjectionHead {
                first: LinearConfig::new(input, input).init(device),
                second: Some(LinearConfig::new(input, output).init(device)),
            },
            HeadKind::Linear => ProjectionHead {
                first: LinearConfig::new(input, output).init(device),
                second: None,
            },
        }
    }

    /// # Shapes
    /// - `features`: `[batch, input]`
    /// - output: `[batch, output]`
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let x = self.first.forward(features);
        match &self.second {
            Some(second) => second.forward(relu(x)),
            None => x,
        }
    }
}

/// The stage-1 model: an encoder with a projection head (SupCon, SimCLR) or a linear
/// classifier (the cross-entropy baseline).
#[derive(Module, Debug)]
pub struct PretrainModel {
    /// The encoder, the part that is kept and evaluated.
    pub encoder: ResNet,
    /// Projection head (contrastive methods).
    pub head: Option<ProjectionHead>,
    /// Linear classifier (cross-entropy method).
    pub classifier: Option<Linear>,
}

impl PretrainModel {
    /// Encoder features → head projections or class logits.
    ///
    /// # Shapes
    /// - `images`: `[batch, in_channels, height, width]`
    /// - output: `[batch, projection_dim]` (head) or `[batch, n_classes]` (classifier)
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(images, RunningStats::Update)
    }

    fn forward_with(&self, images: Tensor<4>, stats: RunningStats) -> Tensor<2> {
        let features = self.encoder.forward_with(images, stats);
        match (&self.head, &self.classifier) {
            (Some(head), _) => head.forward(features),
            (None, Some(classifier)) => classifier.forward(features),
            (None, None) => features,
        }
    }
}

/// Gradient caching's two passes: the first with batch statistics but the running statistics
/// left alone, so that only the second pass (the one with the graph) moves them, once per chunk.
impl CachedForward<4> for PretrainModel {
    fn forward_tracked(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn forward_untracked(&self, images: Tensor<4>) -> Tensor<2> {
        // Batch statistics where the training forward uses them, on the inference copy (no
        // autodiff, so no graph); running statistics otherwise, as the training forward.
        let trains = images.device().is_autodiff() && self.encoder.stem.bn.training.is_enabled();
        let stats = if trains {
            RunningStats::Keep
        } else {
            RunningStats::Update
        };
        Tensor::from_inner(self.valid().forward_with(images.inner(), stats))
    }
}
