//! The user API, following Burn's conventions: `SupConLossConfig::new().with_temperature(..).init()`.

use burn::backend::{Dispatch, DispatchDevice};
use burn::config::Config;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use super::composed::{self, ComposedKeys, ComposedPositives};
use super::ops::{LossParams, SupConBackend};
use crate::error::to_u32;
use crate::kernels::supcon::{PositiveKind, SupConShape, mask_words};
use crate::{ContrastMode, Error, Reduction, Result, SupConOptions, Variant};

/// Which implementation computes the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Implementation {
    /// The fused WGSL kernels on a burn-wgpu device, the composed ops anywhere else.
    #[default]
    Auto,
    /// Always the fused WGSL kernels (panics / errors on a device that cannot run them).
    Fused,
    /// Always the composed Burn tensor ops (O(N²) memory; any backend).
    Composed,
}

/// Configuration of [`SupConLoss`].
///
/// The loss (Khosla et al. 2020, Eq. 2, `L_out`): with `z = x / |x|`, `s_ij = z_i·z_j / τ`,
/// `A(i)` all rows but `i` and `P(i)` the rows of `A(i)` with `i`'s label,
///
/// `L_i = −(τ / τ_base) · (1/|P(i)|) · Σ_{p∈P(i)} ( s_ip − log Σ_{a∈A(i)} exp s_ia )`,
///
/// averaged over the anchors. Anchors without a positive contribute 0.
///
/// - Reference PyTorch code (HobbitLong/SupContrast): `temperature = 0.07`,
///   `base_temperature = Some(0.07)`; its scaling is the factor τ / τ_base.
/// - Official TensorFlow code: `scale_by_temperature = true` multiplies the loss by τ, which is
///   `base_temperature = Some(1.0)`.
/// - Default: `base_temperature = None`, meaning τ_base = τ: exactly the paper's Eq. 2 mean.
///
/// [`try_init`](Self::try_init) checks the temperatures:
///
/// ```
/// use supcon_wgpu::Error;
/// use supcon_wgpu::backend::SupConLossConfig;
///
/// // The reference PyTorch code's settings.
/// let config = SupConLossConfig::new()
///     .with_temperature(0.07)
///     .with_base_temperature(Some(0.07));
/// assert!(config.try_init().is_ok());
///
/// let config = SupConLossConfig::new().with_temperature(0.0);
/// assert!(matches!(config.try_init(), Err(Error::InvalidTemperature(t)) if t == 0.0));
/// ```
#[derive(Config, Debug)]
pub struct SupConLossConfig {
    /// τ, dividing the cosine similarities.
    #[config(default = 0.1)]
    pub temperature: f64,
    /// τ_base (the loss is scaled by τ / τ_base); `None` = equal to `temperature`.
    pub base_temperature: Option<f64>,
    /// Which views are anchors.
    #[config(default = "ContrastMode::All")]
    pub contrast_mode: ContrastMode,
    /// `L_out` (Eq. 2) or `L_in` (Eq. 3).
    #[config(default = "Variant::Out")]
    pub variant: Variant,
    /// Mean over all anchors or over anchors with a positive.
    #[config(default = "Reduction::AllAnchors")]
    pub reduction: Reduction,
    /// Fused kernels, composed ops, or automatic.
    #[config(default = "Implementation::Auto")]
    pub implementation: Implementation,
}

impl SupConLossConfig {
    /// The loss module. Panics with the message of [`try_init`](Self::try_init)'s error.
    pub fn init(&self) -> SupConLoss {
        self.try_init()
            .unwrap_or_else(|e| panic!("SupConLossConfig: {e}"))
    }

    /// The loss module, or [`Error::InvalidTemperature`] / [`Error::InvalidBaseTemperature`].
    pub fn try_init(&self) -> Result<SupConLoss> {
        let options = SupConOptions {
            temperature: self.temperature,
            base_temperature: self.base_temperature.unwrap_or(self.temperature),
            contrast_mode: self.contrast_mode,
            variant: self.variant,
            reduction: self.reduction,
        };
        options.validate()?;
        Ok(SupConLoss {
            options,
            implementation: self.implementation,
            pass_columns: None,
            split_columns: None,
            strategy: None,
        })
    }
}

/// The supervised contrastive loss. Create it with [`SupConLossConfig`]; the
/// [module docs](crate::backend) show a forward and backward pass.
#[derive(Clone, Debug)]
pub struct SupConLoss {
    options: SupConOptions,
    implementation: Implementation,
    pass_columns: Option<u32>,
    split_columns: Option<u32>,
    strategy: Option<crate::Strategy>,
}

impl SupConLoss {
    /// The fused kernels' column loop in passes of `columns` contrast rows instead of
    /// [`default_pass_columns`](crate::kernels::supcon::default_pass_columns) (see
    /// [`LossParams::pass_columns`]). For tests of the multi-pass path; the loss is the same.
    pub fn with_pass_columns(mut self, columns: u32) -> Self {
        self.pass_columns = Some(columns);
        self
    }

    /// The fused kernels' passes cut into splits of `columns` contrast rows (run side by side)
    /// instead of the plan's rule (see [`LossParams::split_columns`]). For tests of the split
    /// path on any device, and measurements; the loss is the same up to float rounding.
    pub fn with_split_columns(mut self, columns: u32) -> Self {
        self.split_columns = Some(columns);
        self
    }

    /// The fused kernels with `strategy` instead of the one chosen per device (see
    /// [`LossParams::strategy`]). For tests and measurements; the loss is the same.
    pub fn with_strategy(mut self, strategy: crate::Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// The options in force.
    pub fn options(&self) -> &SupConOptions {
        &self.options
    }

    /// The loss of `features` with `labels`, or SimCLR's loss when `labels` is `None`.
    ///
    /// # Shapes
    /// - `features`: `[bsz, n_views, dim]`, raw projection-head output (the L2 normalisation is
    ///   part of the loss), flattened view-major as the reference PyTorch code;
    /// - `labels`: `[bsz]`;
    /// - output: `[1]`.
    ///
    /// # Panics
    /// On bad input, with the message of [`try_forward`](Self::try_forward)'s error, as Burn's
    /// own ops do.
    ///
    /// # Example
    /// The composed ops on Burn's CPU backend against the crate's f64 reference:
    ///
    /// ```
    /// use burn::tensor::{Device, Int, Tensor, TensorData};
    /// use supcon_wgpu::backend::SupConLossConfig;
    /// use supcon_wgpu::kernels::supcon::{conformance::LOSS_TOLERANCE, reference};
    /// use supcon_wgpu::{Positives, SupConOptions, SupConShape};
    ///
    /// let device = Device::flex();
    /// let x: Vec<f32> = (0..3 * 2 * 4).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    /// let features = Tensor::<3>::from_data(TensorData::new(x.clone(), [3, 2, 4]), &device);
    /// let labels = Tensor::<1, Int>::from_ints([0, 1, 0], &device);
    ///
    /// let loss = SupConLossConfig::new().with_temperature(0.5).init();
    /// let got: f32 = loss.forward(features, Some(labels)).into_scalar();
    ///
    /// let x: Vec<f64> = x.into_iter().map(f64::from).collect();
    /// let (shape, options) = (SupConShape::new(3, 2, 4), SupConOptions::new(0.5));
    /// let want = reference::supcon(&x, shape, Positives::Labels(&[0, 1, 0]), &options).loss;
    /// assert!((f64::from(got) - want).abs() <= LOSS_TOLERANCE * want.abs());
    /// ```
    pub fn forward(&self, features: Tensor<3>, labels: Option<Tensor<1, Int>>) -> Tensor<1> {
        self.try_forward(features, labels)
            .unwrap_or_else(|e| panic!("SupConLoss::forward: {e}"))
    }

    /// [`forward`](Self::forward) with the checks returned as an [`Error`].
    pub fn try_forward(
        &self,
        features: Tensor<3>,
        labels: Option<Tensor<1, Int>>,
    ) -> Result<Tensor<1>> {
        let shape = check_features(&features)?;
        if let Some(l) = &labels {
            check_len("labels", l.dims()[0], shape.bsz as usize)?;
        }
        match labels {
            Some(l) => {
                // 64-bit labels (hashed ids) are compared at full width, never narrowed.
                let kind = match l.dtype() {
                    DType::I64 | DType::U64 => PositiveKind::Labels64,
                    _ => PositiveKind::Labels,
                };
                let composed = ComposedPositives::Labels(l.clone());
                self.run(features, shape, kind, Some(l), composed, None)
            }
            None => self.run(
                features,
                shape,
                PositiveKind::None,
                None,
                ComposedPositives::None,
                None,
            ),
        }
    }

    /// The loss with K contrast-only rows `keys` (a feature queue, MoCo-style): each anchor is
    /// contrasted against the other batch rows and all keys; keys sharing its label are
    /// positives (with `labels: None`, SimCLR, keys are negatives only). Keys are detached: they
    /// get no gradient even when tracked. With K = 0 this is [`forward`](Self::forward).
    ///
    /// # Shapes
    /// - `features`: `[bsz, n_views, dim]`; `labels`: `[bsz]`;
    /// - `keys`: `[K, dim]` (raw or normalised: the loss normalises them);
    /// - `key_labels`: `[K]`, of the labels' width (32 or 64 bits), given exactly when `labels`
    ///   is; output `[1]`.
    ///
    /// # Panics
    /// On bad input, with the message of [`try_forward_with_keys`](Self::try_forward_with_keys)'s
    /// error.
    ///
    /// # Example
    /// A queue of four keys, two of them positives of sample 0; the tracked queue gets no
    /// gradient:
    ///
    /// ```
    /// use burn::tensor::{Device, Distribution, Int, Tensor};
    /// use supcon_wgpu::backend::SupConLossConfig;
    ///
    /// let device = Device::flex().autodiff();
    /// let normal = Distribution::Normal(0.0, 1.0);
    /// let features = Tensor::<3>::random([2, 2, 8], normal, &device).require_grad();
    /// let keys = Tensor::<2>::random([4, 8], normal, &device).require_grad();
    /// let labels = Tensor::<1, Int>::from_ints([0, 1], &device);
    /// let key_labels = Tensor::<1, Int>::from_ints([0, 2, 0, 3], &device);
    ///
    /// let loss = SupConLossConfig::new().init();
    /// let value =
    ///     loss.forward_with_keys(features.clone(), Some(labels), keys.clone(), Some(key_labels));
    /// let grads = value.backward();
    /// let value: f32 = value.into_scalar();
    /// assert!(value.is_finite() && value > 0.0);
    /// assert!(features.grad(&grads).is_some());
    /// assert!(keys.grad(&grads).is_none());
    /// ```
    pub fn forward_with_keys(
        &self,
        features: Tensor<3>,
        labels: Option<Tensor<1, Int>>,
        keys: Tensor<2>,
        key_labels: Option<Tensor<1, Int>>,
    ) -> Tensor<1> {
        self.try_forward_with_keys(features, labels, keys, key_labels)
            .unwrap_or_else(|e| panic!("SupConLoss::forward_with_keys: {e}"))
    }

    /// [`forward_with_keys`](Self::forward_with_keys) with the checks returned as an [`Error`].
    pub fn try_forward_with_keys(
        &self,
        features: Tensor<3>,
        labels: Option<Tensor<1, Int>>,
        keys: Tensor<2>,
        key_labels: Option<Tensor<1, Int>>,
    ) -> Result<Tensor<1>> {
        let shape = check_features(&features)?;
        let [k, key_dim] = keys.dims();
        if key_dim != shape.dim as usize {
            return Err(Error::Keys(format!(
                "keys are [{k}, {key_dim}], the features' dim is {}",
                shape.dim
            )));
        }
        if !keys.dtype().is_float() {
            return Err(Error::Keys(format!(
                "keys must be floats, got {:?}",
                keys.dtype()
            )));
        }
        if keys.device() != features.device() {
            return Err(Error::Keys(
                "keys and features are on different devices".into(),
            ));
        }
        let wide = |t: &Tensor<1, Int>| matches!(t.dtype(), DType::I64 | DType::U64);
        match (&labels, &key_labels) {
            (Some(l), Some(kl)) => {
                check_len("labels", l.dims()[0], shape.bsz as usize)?;
                check_len("key labels", kl.dims()[0], k)?;
                if wide(l) != wide(kl) {
                    return Err(Error::Keys(format!(
                        "labels are {:?}, key labels {:?}: both 64-bit or neither",
                        l.dtype(),
                        kl.dtype()
                    )));
                }
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Keys("labels were given without key labels".into()));
            }
            (None, Some(_)) => {
                return Err(Error::Keys(
                    "key labels were given without labels (SimCLR keys are negatives)".into(),
                ));
            }
        }
        if k == 0 {
            return self.try_forward(features, labels);
        }
        let shape = shape.with_keys(to_u32(k, "keys")?);
        shape.validate()?;
        let keys = keys.detach();
        let kind = match &labels {
            Some(l) if wide(l) => PositiveKind::Labels64,
            Some(_) => PositiveKind::Labels,
            None => PositiveKind::None,
        };
        // The kernels read the batch's labels, then the keys'.
        let (positives, composed) = match (labels, &key_labels) {
            (Some(l), Some(kl)) => (
                Some(Tensor::cat(vec![l.clone(), kl.clone()], 0)),
                ComposedPositives::Labels(l),
            ),
            _ => (None, ComposedPositives::None),
        };
        let keys = ComposedKeys {
            features: keys,
            labels: key_labels,
        };
        self.run(features, shape, kind, positives, composed, Some(keys))
    }

    /// The loss with an explicit `[bsz, bsz]` positive mask (`mask[i][j]`: sample `j` is a
    /// positive of sample `i`; tiled over views, the anchor's own row always excluded, as the
    /// reference code's `mask` argument).
    ///
    /// # Shapes
    /// - `features`: `[bsz, n_views, dim]`; `mask`: `[bsz, bsz]`; output `[1]`.
    pub fn forward_with_mask(&self, features: Tensor<3>, mask: Tensor<2, Bool>) -> Tensor<1> {
        self.try_forward_with_mask(features, mask)
            .unwrap_or_else(|e| panic!("SupConLoss::forward_with_mask: {e}"))
    }

    /// [`forward_with_mask`](Self::forward_with_mask) with the checks returned as an [`Error`].
    pub fn try_forward_with_mask(
        &self,
        features: Tensor<3>,
        mask: Tensor<2, Bool>,
    ) -> Result<Tensor<1>> {
        let shape = check_features(&features)?;
        let [r, c] = mask.dims();
        check_len("mask rows", r, shape.bsz as usize)?;
        check_len("mask columns", c, shape.bsz as usize)?;
        let packed = if self.fused(&features.device())? {
            Some(pack_mask(mask.clone(), shape.bsz))
        } else {
            None
        };
        self.run(
            features,
            shape,
            PositiveKind::Mask,
            packed,
            ComposedPositives::Mask(mask),
            None,
        )
    }

    fn fused(&self, device: &Device) -> Result<bool> {
        match self.implementation {
            Implementation::Composed => Ok(false),
            Implementation::Auto => Ok(fused_available(device)),
            Implementation::Fused if fused_available(device) => Ok(true),
            Implementation::Fused => Err(Error::Unsupported(format!(
                "Implementation::Fused needs a burn-wgpu device (WGSL compiler), got {device:?}"
            ))),
        }
    }

    /// The fused kernels (reading `positives`: the batch's labels then the keys', or the packed
    /// mask) or the composed ops (reading `composed_positives`), with `keys` when
    /// `shape.keys > 0`.
    fn run(
        &self,
        features: Tensor<3>,
        shape: SupConShape,
        kind: PositiveKind,
        positives: Option<Tensor<1, Int>>,
        composed_positives: ComposedPositives,
        keys: Option<ComposedKeys>,
    ) -> Result<Tensor<1>> {
        let device = features.device();
        if self.fused(&device)? {
            let params = LossParams {
                shape,
                kind,
                options: self.options,
                pass_columns: self.pass_columns,
                split_columns: self.split_columns,
                strategy: self.strategy,
            };
            match fused_device(&device).expect("checked by `fused`") {
                FusedDevice::Cube(cube) => super::cube::check_problem(&cube, &params)?,
                #[cfg(feature = "remote")]
                FusedDevice::Remote => super::remote::check_problem(&params)?,
            }
            // Placeholders where the kernels read nothing (no labels, no keys).
            let positives = positives.unwrap_or_else(|| Tensor::<1, Int>::zeros([1], &device));
            let keys = keys.map_or_else(|| Tensor::<2>::zeros([1, 1], &device), |k| k.features);
            Ok(Tensor::from_dispatch(Dispatch::supcon_loss(
                features.into_dispatch(),
                keys.into_dispatch(),
                positives.into_dispatch(),
                params,
            )))
        } else {
            Ok(composed::supcon_loss_with_keys(
                features,
                composed_positives,
                keys,
                &self.options,
            ))
        }
    }
}

/// `[n, d] x [m, d] -> [n, m]` cosine similarities (rows L2-normalised with an epsilon of 1e-12):
/// the fused kernel on burn-wgpu devices, Burn tensor ops elsewhere. Differentiable.
///
/// # Shapes
/// - `a`: `[n, d]`, `b`: `[m, d]`, output `[n, m]`.
///
/// # Panics
/// On bad input, with the message of [`try_cosine_similarity`]'s error.
pub fn cosine_similarity(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    try_cosine_similarity(a, b).unwrap_or_else(|e| panic!("cosine_similarity: {e}"))
}

/// [`cosine_similarity`] with the checks returned as an [`Error`]: equal widths, no empty side,
/// and on a burn-wgpu device the kernels' limits (32-bit indexing, the largest binding, the
/// workgroup grid), so a problem too large for the device is an error, never a wgpu panic.
///
/// # Shapes
/// - `a`: `[n, d]`, `b`: `[m, d]`, output `[n, m]`.
pub fn try_cosine_similarity(a: Tensor<2>, b: Tensor<2>) -> Result<Tensor<2>> {
    let [n, da] = a.dims();
    let [m, db] = b.dims();
    if da != db {
        return Err(Error::InvalidShape(format!(
            "cosine_similarity: a has {da} columns, b has {db}"
        )));
    }
    let Some(fused) = fused_device(&a.device()) else {
        if n == 0 || m == 0 || da == 0 {
            return Err(Error::InvalidShape(format!(
                "cosine similarity needs n, m, dim >= 1, got n = {n}, m = {m}, dim = {da}"
            )));
        }
        return Ok(composed::cosine_similarity(a, b));
    };
    match fused {
        FusedDevice::Cube(cube) => super::cube::check_similarity(&cube, n, m, da)?,
        #[cfg(feature = "remote")]
        FusedDevice::Remote => super::remote::check_similarity(n, m, da)?,
    }
    Ok(Tensor::from_dispatch(Dispatch::cosine_similarity(
        a.into_dispatch(),
        b.into_dispatch(),
    )))
}

/// Whether `device` can run the WGSL kernels: Burn's wgpu runtime (autodiff or not), or, with
/// the `remote` feature, a device of a server opened by
/// [`remote::connect`](super::remote::connect).
pub fn fused_available(device: &Device) -> bool {
    fused_device(device).is_some()
}

/// Where the fused kernels of a device run, whose limits a problem is checked against.
pub(crate) enum FusedDevice {
    /// A local cubecl device that runs them (its own limits).
    Cube(cubecl::Device),
    /// A device of a server opened by `remote::connect` (WebGPU's default limits).
    #[cfg(feature = "remote")]
    Remote,
}

/// How `device` runs the fused kernels, if it does.
pub(crate) fn fused_device(device: &Device) -> Option<FusedDevice> {
    let base = base_device(device.as_dispatch());
    #[cfg(feature = "remote")]
    if super::remote::is_fused_remote(&base) {
        return Some(FusedDevice::Remote);
    }
    match base {
        DispatchDevice::Cube(cube) if super::cube::runs_kernels(&cube) => {
            Some(FusedDevice::Cube(cube))
        }
        _ => None,
    }
}

/// `device` without its autodiff layers.
fn base_device(device: &DispatchDevice) -> DispatchDevice {
    match device {
        DispatchDevice::Autodiff(inner) => base_device(&inner.clone().inner()),
        other => other.clone(),
    }
}

/// The cubecl device under `device` (autodiff or not), if it is one.
pub(crate) fn cube_device(device: &Device) -> Option<cubecl::Device> {
    match base_device(device.as_dispatch()) {
        DispatchDevice::Cube(cube) => Some(cube),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn check_features(features: &Tensor<3>) -> Result<SupConShape> {
    let [bsz, n_views, dim] = features.dims();
    let dtype = features.dtype();
    if !dtype.is_float() {
        return Err(Error::InvalidShape(format!(
            "features must be floats, got {dtype:?}"
        )));
    }
    let shape = SupConShape::new(
        to_u32(bsz, "bsz")?,
        to_u32(n_views, "n_views")?,
        to_u32(dim, "dim")?,
    );
    shape.validate()?;
    Ok(shape)
}

fn check_len(name: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(Error::LengthMismatch {
            name,
            expected,
            got,
        });
    }
    Ok(())
}

/// Packs a `[bsz, bsz]` mask into the kernels' bit layout on the device, with integer ops:
/// row `i` becomes `ceil(bsz/32)` words, bit `j % 32` of word `j / 32` = `mask[i][j]`. The bits
/// are distinct powers of two, so their sum is their OR (2^31 as i32::MIN keeps it in i32).
fn pack_mask(mask: Tensor<2, Bool>, bsz: u32) -> Tensor<1, Int> {
    let device = mask.device();
    let n = bsz as usize;
    let words = mask_words(bsz) as usize;
    let mut bits = mask.int();
    if words * 32 > n {
        bits = Tensor::cat(
            vec![bits, Tensor::<2, Int>::zeros([n, words * 32 - n], &device)],
            1,
        );
    }
    let powers: Vec<i32> = (0..32).map(|b| (1u32 << b) as i32).collect();
    let powers =
        Tensor::<1, Int>::from_data(TensorData::new(powers, [32]), &device).reshape([1, 1, 32]);
    (bits.reshape([n, words, 32]) * powers)
        .sum_dim(2)
        .reshape([n * words])
}
