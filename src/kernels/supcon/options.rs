//! What the caller asks for: strategy, options, shape and positives.

use crate::{Error, Result};

/// Which forward and backward kernels run (the same results up to float rounding).
/// [`Strategy::for_adapter`] picks one per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// GPUs: `supcon_forward.wgsl` and `supcon_backward.wgsl`, 16×16 workgroups whose threads
    /// compute 4×4 blocks of dot products from slices of the rows staged in workgroup memory, two
    /// barriers per slice.
    Tiles,
    /// CPU adapters: `supcon_forward_direct.wgsl`, then per backward pass
    /// `supcon_backward_weights.wgsl` and `supcon_backward_apply.wgsl`. 8×8 workgroups whose
    /// threads read their rows straight from memory as vec4s into 8×8 register blocks, with no
    /// barrier in any loop: on CPU drivers (lavapipe) workgroup memory is no faster than the
    /// cache, each barrier saves and restores every invocation's registers, and each loaded value
    /// should feed as many multiply-adds as possible. Measured about 3× faster there than `Tiles`.
    Direct,
}

impl Strategy {
    /// [`Direct`](Self::Direct) on a CPU adapter (`wgpu::DeviceType::Cpu`: lavapipe, WARP,
    /// SwiftShader), [`Tiles`](Self::Tiles) on every GPU.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        Self::for_device_type(info.device_type)
    }

    /// The rule itself, from the adapter's device type alone: [`Direct`](Self::Direct) for
    /// `wgpu::DeviceType::Cpu`, [`Tiles`](Self::Tiles) for every other type. Both launch paths
    /// (raw wgpu and the Burn extension) decide with it.
    pub fn for_device_type(device_type: wgpu::DeviceType) -> Self {
        if device_type == wgpu::DeviceType::Cpu {
            Strategy::Direct
        } else {
            Strategy::Tiles
        }
    }
}

/// Which rows are anchors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContrastMode {
    /// Every view of every sample is an anchor (the paper's setting; the default).
    #[default]
    All,
    /// Only view 0 of each sample is an anchor; all views are contrasted against.
    One,
}

/// Where the average over positives sits (Khosla et al. 2020, Eq. 2 and 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// `L_out`: the mean over positives outside the log (Eq. 2; the better one, the default).
    #[default]
    Out,
    /// `L_in`: the mean over positives inside the log (Eq. 3).
    In,
}

/// How per-anchor losses become one number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reduction {
    /// Mean over all anchors; anchors without a positive count as 0 (the reference PyTorch code).
    #[default]
    AllAnchors,
    /// Mean over the anchors that have at least one positive.
    AnchorsWithPositives,
}

/// Options of the loss. `SupConOptions::default()` is τ = τ_base = 0.1, contrast mode `All`,
/// `L_out`, mean over all anchors.
/// The temperatures are f64 (as Burn's configs), rounded to f32 on the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupConOptions {
    /// τ, dividing the cosine similarities.
    pub temperature: f64,
    /// τ_base: the loss is scaled by τ / τ_base (the reference PyTorch code uses 0.07 for both).
    pub base_temperature: f64,
    /// Which rows are anchors: all views (`All`) or the first view only (`One`).
    pub contrast_mode: ContrastMode,
    /// Where the mean over positives sits: outside the log (`Out`, the paper's best) or inside
    /// (`In`).
    pub variant: Variant,
    /// How the anchors' losses become one number.
    pub reduction: Reduction,
}

impl Default for SupConOptions {
    fn default() -> Self {
        SupConOptions::new(0.1)
    }
}

impl SupConOptions {
    /// Defaults with temperature τ and base temperature τ (so the loss is exactly Eq. 2's mean).
    pub fn new(temperature: f64) -> Self {
        SupConOptions {
            temperature,
            base_temperature: temperature,
            contrast_mode: ContrastMode::All,
            variant: Variant::Out,
            reduction: Reduction::AllAnchors,
        }
    }
    /// With τ_base = `base_temperature`.
    pub fn with_base_temperature(mut self, base_temperature: f64) -> Self {
        self.base_temperature = base_temperature;
        self
    }
    /// With the given contrast mode.
    pub fn with_contrast_mode(mut self, contrast_mode: ContrastMode) -> Self {
        self.contrast_mode = contrast_mode;
        self
    }
    /// With the given variant.
    pub fn with_variant(mut self, variant: Variant) -> Self {
        self.variant = variant;
        self
    }
    /// With the given reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Checks τ and τ_base: each in [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]], and the loss
    /// scale τ / τ_base a normal f32 (what the device computes with).
    pub fn validate(&self) -> Result<()> {
        if !temperature_in_range(self.temperature) {
            return Err(Error::InvalidTemperature(self.temperature));
        }
        let scale = self.temperature / self.base_temperature;
        if !temperature_in_range(self.base_temperature)
            || !(f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&scale)
        {
            return Err(Error::InvalidBaseTemperature(self.base_temperature));
        }
        Ok(())
    }
}

/// The smallest temperature (τ or τ_base) accepted: f32's smallest normal number, 2^-126.
pub const MIN_TEMPERATURE: f64 = f32::MIN_POSITIVE as f64;
/// The largest temperature accepted, 1 / [`MIN_TEMPERATURE`] = 2^126: within
/// [`MIN_TEMPERATURE`, `MAX_TEMPERATURE`] both τ and 1/τ are normal f32 numbers on the device.
pub const MAX_TEMPERATURE: f64 = 1.0 / MIN_TEMPERATURE;

/// Whether `t` lies in [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]] (false for NaN).
fn temperature_in_range(t: f64) -> bool {
    (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)
}

/// Shape of the features: `[bsz, n_views, dim]`, flattened view-major into `N = bsz·n_views`
/// rows (row `v·bsz + b` is view `v` of sample `b`, as the reference PyTorch code's
/// `torch.cat(torch.unbind(features, dim=1))`). The buffers themselves stay in the caller's
/// `[bsz, n_views, dim]` layout; the kernels index it.
///
/// `keys` (K, default 0) adds contrast-only rows, `[K, dim]` in a buffer of their own (a feature
/// queue, MoCo-style): every anchor is contrasted against the other N − 1 batch rows and all K
/// keys; a key is a positive when its label equals the anchor's (never without labels); keys
/// are not anchors and get no gradient. With K = 0 the loss is the plain one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupConShape {
    /// Samples in the batch.
    pub bsz: u32,
    /// Views of each sample (N = bsz · n_views rows).
    pub n_views: u32,
    /// Feature dimension.
    pub dim: u32,
    /// Contrast-only rows (keys) beside the batch.
    pub keys: u32,
}

impl SupConShape {
    /// A batch of `bsz` samples with `n_views` views of `dim` features each, no keys.
    pub fn new(bsz: u32, n_views: u32, dim: u32) -> Self {
        SupConShape {
            bsz,
            n_views,
            dim,
            keys: 0,
        }
    }
    /// The same shape with `keys` contrast-only rows.
    pub fn with_keys(mut self, keys: u32) -> Self {
        self.keys = keys;
        self
    }
    /// `N = bsz · n_views`.
    pub fn rows(&self) -> u64 {
        u64::from(self.bsz) * u64::from(self.n_views)
    }
    /// `N + K`: the rows every anchor is contrasted against (itself excluded).
    pub fn contrast_rows(&self) -> u64 {
        self.rows() + u64::from(self.keys)
    }
    /// Number of f32s in the keys (`K · dim`).
    pub fn keys_len(&self) -> u64 {
        u64::from(self.keys) * u64::from(self.dim)
    }
    /// Number of f32s in the features (and the gradient).
    pub fn len(&self) -> u64 {
        self.rows() * u64::from(self.dim)
    }
    /// True when the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Checks bsz, n_views, dim ≥ 1, N ≥ 2 and 32-bit indexing (of the features and of the
    /// normalised batch rows and keys).
    pub fn validate(&self) -> Result<()> {
        if self.bsz == 0 || self.n_views == 0 || self.dim == 0 {
            return Err(Error::InvalidShape(format!(
                "bsz, n_views and dim must be >= 1, got [{}, {}, {}]",
                self.bsz, self.n_views, self.dim
            )));
        }
        if self.rows() < 2 {
            return Err(Error::InvalidShape(format!(
                "the loss needs N = bsz * n_views >= 2 rows, got {}",
                self.rows()
            )));
        }
        if self.len() >= 1 << 32 {
            return Err(Error::InvalidShape(format!(
                "{} feature elements exceed 32-bit indexing",
                self.len()
            )));
        }
        // The kernels index the normalised rows, N + K of ceil(dim / 4) vec4s each.
        let padded = self.contrast_rows() * u64::from(self.dim.div_ceil(4)) * 4;
        if padded >= 1 << 32 || self.keys_len() >= 1 << 32 {
            return Err(Error::InvalidShape(format!(
                "{} rows and {} keys of dim {} exceed 32-bit indexing",
                self.rows(),
                self.keys,
                self.dim
            )));
        }
        Ok(())
    }
}

/// How the positives buffer is read on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositiveKind {
    /// `[bsz]` integer labels (i32 or u32, compared bit for bit).
    Labels,
    /// `[bsz]` 64-bit integer labels (i64 or u64, little-endian: two u32 words each), compared
    /// at full width.
    Labels64,
    /// No labels: each sample is its own class (SimCLR). No buffer.
    None,
    /// A `[bsz, bsz]` positive mask, bit-packed by [`pack_mask`]: row `i` takes
    /// `ceil(bsz / 32)` u32 words, bit `j % 32` of word `j / 32` is `mask[i][j]`. As in the
    /// reference code the mask is tiled over views and the diagonal of the full N×N mask is
    /// dropped, so `mask[i][i]` decides whether the other views of sample `i` are positives.
    Mask,
}

/// Host-side positives for the convenience calls and the reference.
#[derive(Clone, Copy, Debug)]
pub enum Positives<'a> {
    /// `[bsz]` class labels.
    Labels(&'a [i32]),
    /// `[bsz]` 64-bit class labels (hashed ids and the like), compared at full width.
    Labels64(&'a [i64]),
    /// SimCLR: each sample its own class.
    None,
    /// `[bsz, bsz]` row-major positive mask.
    Mask(&'a [bool]),
}

impl Positives<'_> {
    /// The kind of these positives (what the kernels read).
    pub fn kind(&self) -> PositiveKind {
        match self {
            Positives::Labels(_) => PositiveKind::Labels,
            Positives::Labels64(_) => PositiveKind::Labels64,
            Positives::None => PositiveKind::None,
            Positives::Mask(_) => PositiveKind::Mask,
        }
    }

    /// Checks these key positives (`keys` entries) against the batch's: the same kind, labels
    /// or none (an explicit mask has no key columns), `keys` labels.
    pub fn validate_keys(&self, batch: PositiveKind, keys: u32) -> Result<()> {
        if self.kind() != batch {
            return Err(Error::Keys(format!(
                "the keys' positives are {:?}, the batch's {batch:?}: they must be alike",
                self.kind()
            )));
        }
        if matches!(self, Positives::Mask(_)) {
            return Err(Error::Keys(
                "keys need labels (or none, for SimCLR); an explicit mask has no key columns"
                    .into(),
            ));
        }
        self.validate_labels(keys, "key labels")
    }

    /// Checks the length against `bsz`.
    pub fn validate(&self, bsz: u32) -> Result<()> {
        if let Positives::Mask(m) = self
            && m.len() != bsz as usize * bsz as usize
        {
            return Err(Error::LengthMismatch {
                name: "mask",
                expected: bsz as usize * bsz as usize,
                got: m.len(),
            });
        }
        self.validate_labels(bsz, "labels")
    }

    /// Checks the number of labels (nothing for the other kinds).
    fn validate_labels(&self, expected: u32, name: &'static str) -> Result<()> {
        let len = match self {
            Positives::Labels(l) => l.len(),
            Positives::Labels64(l) => l.len(),
            Positives::None | Positives::Mask(_) => return Ok(()),
        };
        if len != expected as usize {
            return Err(Error::LengthMismatch {
                name,
                expected: expected as usize,
                got: len,
            });
        }
        Ok(())
    }

    /// Whether anchor `i` (a batch row) and key `k` are positives, these being the batch's
    /// positives and `keys` the keys' (of the same kind; never without labels).
    pub fn is_key_positive(&self, keys: &Positives<'_>, i: usize, k: usize, bsz: usize) -> bool {
        match (self, keys) {
            (Positives::Labels(l), Positives::Labels(kl)) => l[i % bsz] == kl[k],
            (Positives::Labels64(l), Positives::Labels64(kl)) => l[i % bsz] == kl[k],
            _ => false,
        }
    }

    /// Whether view-major rows `i != j` of a batch of `bsz` samples are positives.
    pub fn is_positive(&self, i: usize, j: usize, bsz: usize) -> bool {
        let (si, sj) = (i % bsz, j % bsz);
        i != j
            && match self {
                Positives::Labels(l) => l[si] == l[sj],
                Positives::Labels64(l) => l[si] == l[sj],
                Positives::None => si == sj,
                Positives::Mask(m) => m[si * bsz + sj],
            }
    }
}

/// Host-side keys for the convenience calls ([`SupConLoss::loss_and_grad_with_keys`]): K
/// contrast-only rows `[K, dim]` (row-major) and their positives, of the batch's kind
/// ([`Positives::Labels`] / [`Positives::Labels64`] with K labels, or [`Positives::None`]).
///
/// [`SupConLoss::loss_and_grad_with_keys`]: super::SupConLoss::loss_and_grad_with_keys
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    /// The keys' features, `[K, dim]` row-major.
    pub features: &'a [f32],
    /// Their labels (K of them), or [`Positives::None`].
    pub positives: Positives<'a>,
}

/// u32 words per row of a packed `[bsz, bsz]` mask.
pub fn mask_words(bsz: u32) -> u32 {
    bsz.div_ceil(32)
}

/// Packs a row-major `[bsz, bsz]` boolean mask for [`PositiveKind::Mask`].
pub fn pack_mask(mask: &[bool], bsz: u32) -> Result<Vec<u32>> {
    let n = bsz as usize;
    if mask.len() != n * n {
        return Err(Error::LengthMismatch {
            name: "mask",
            expected: n * n,
            got: mask.len(),
        });
    }
    let words = mask_words(bsz) as usize;
    let mut packed = vec![0u32; n * words];
    for (i, row) in mask.chunks(n).enumerate() {
        for (j, &bit) in row.iter().enumerate() {
            if bit {
                packed[i * words + j / 32] |= 1 << (j % 32);
            }
        }
    }
    Ok(packed)
}
