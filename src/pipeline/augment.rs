//! Batched, per-sample random augmentation on the device, with a CPU reference.
//!
//! The recipe of the SupCon paper's CIFAR experiments (torchvision semantics): random resized
//! crop back to the input size (bilinear, `align_corners = false`), horizontal flip, colour
//! jitter (brightness, contrast, saturation, hue, in a random order per sample) applied with a
//! probability, random grayscale, then per-channel normalisation.
//!
//! Random parameters are drawn on the CPU from a seeded generator ([`AugmentConfig::sample`]:
//! a few numbers per image); the pixels never leave the device. [`augment`] turns the
//! parameters into tensors and applies every op to the whole batch with Burn tensor ops, so it
//! runs on any Burn backend (wgpu, Flex, ...). Crop and resize are two batched matrix
//! products with per-sample bilinear interpolation matrices built on the device; the colour ops
//! are element-wise. [`reference`](mod@reference) applies the same parameters pixel by pixel in
//! f64.
//!
//! On 1-channel images the colour ops (saturation, hue, grayscale) are skipped; brightness and
//! contrast still apply when jitter is on.

use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::data::ImageDataset;

/// Augmentation recipe. Probabilities are in `[0, 1]`; jitter strengths as in torchvision's
/// `ColorJitter(brightness, contrast, saturation, hue)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Area fraction range of the random resized crop.
    pub crop_scale: (f64, f64),
    /// Aspect-ratio range (width / height) of the crop, sampled log-uniformly.
    pub crop_ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Probability that colour jitter is applied to an image.
    pub jitter_p: f64,
    /// Brightness factor drawn from `[1 - b, 1 + b]`.
    pub brightness: f64,
    /// Contrast factor drawn from `[1 - c, 1 + c]`.
    pub contrast: f64,
    /// Saturation factor drawn from `[1 - s, 1 + s]`.
    pub saturation: f64,
    /// Hue shift drawn from `[-h, h]` (fraction of a turn, `h ≤ 0.5`).
    pub hue: f64,
    /// Probability of converting to grayscale.
    pub gray_p: f64,
    /// Per-channel mean subtracted at the end.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by at the end.
    pub std: Vec<f32>,
}

/// A named augmentation recipe; [`Recipe::for_images`] picks one from what the images are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipe {
    /// The SupCon paper's recipe for natural colour images (CIFAR): crops of 20–100 % of the
    /// area, horizontal flips, colour jitter and random grayscale.
    Natural,
    /// For grayscale content such as handwriting, glyphs and digits: crops of 50–100 % of the
    /// area (a small fragment of a digit shares too little with its class), no flip (a
    /// mirrored 2 is not a 2), brightness/contrast jitter only.
    Mild,
}

/// The smallest crop side any recipe draws, in pixels: a crop of tiny images never shrinks
/// below this (the area floor is `(MIN_CROP_SIDE / side)²`).
pub const MIN_CROP_SIDE: f64 = 4.0;

impl Recipe {
    /// The rule: images with colour (channels that differ somewhere) get [`Recipe::Natural`],
    /// grayscale images (one channel, or three equal ones, as when grayscale is stored as RGB
    /// or loaded with `--channels 3`) [`Recipe::Mild`].
    pub fn for_images(data: &ImageDataset) -> Recipe {
        Recipe::for_grayscale(data.is_grayscale())
    }

    /// The rule of [`Recipe::for_images`] for images known to be grayscale or not.
    pub fn for_grayscale(grayscale: bool) -> Recipe {
        if grayscale {
            Recipe::Mild
        } else {
            Recipe::Natural
        }
    }

    /// The recipe's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Natural => "natural",
            Recipe::Mild => "mild",
        }
    }

    /// The recipe for `side × side`-pixel images (the smaller side of non-square ones), with the
    /// given normalisation. The crop's area floor is raised to keep at least
    /// [`MIN_CROP_SIDE`] pixels of side.
    pub fn config(self, side: usize, mean: Vec<f32>, std: Vec<f32>) -> AugmentConfig {
        let floor = (MIN_CROP_SIDE / side.max(1) as f64).powi(2).min(1.0);
        let mut config = match self {
            Recipe::Natural => AugmentConfig {
                crop_scale: (0.2, 1.0),
                crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
                flip_p: 0.5,
                jitter_p: 0.8,
                brightness: 0.4,
                contrast: 0.4,
                saturation: 0.4,
                hue: 0.1,
                gray_p: 0.2,
                mean,
                std,
            },
            Recipe::Mild => AugmentConfig {
                crop_scale: (0.5, 1.0),
                crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
                flip_p: 0.0,
                jitter_p: 0.8,
                brightness: 0.4,
                contrast: 0.4,
                saturation: 0.0,
                hue: 0.0,
                gray_p: 0.0,
                mean,
                std,
            },
        };
        config.crop_scale.0 = config.crop_scale.0.max(floor);
        config
    }
}

impl AugmentConfig {
    /// The paper's CIFAR recipe ([`Recipe::Natural`] at 32×32): crop scale 0.2–1, ratio
    /// 3/4–4/3, flip 0.5, jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2.
    pub fn cifar(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Recipe::Natural.config(32, mean, std)
    }

    /// [`Recipe::Mild`] at 8×8 (the embedded digits): crops of 50–100 % of the area, no
    /// flip, brightness/contrast jitter 0.4 with p = 0.8.
    pub fn digits(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Recipe::Mild.config(8, mean, std)
    }

    /// Checks ranges; the message names the bad field.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        let (s0, s1) = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(format!(
                "crop scale ({s0}, {s1}) must satisfy 0 < min <= max <= 1"
            ));
        }
        let (r0, r1) = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(format!(
                "crop ratio ({r0}, {r1}) must satisfy 0 < min <= max"
            ));
        }
        for (name, p) in [
            ("flip probability", self.flip_p),
            ("jitter probability", self.jitter_p),
            ("grayscale probability", self.gray_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} {p} is not in [0, 1]"));
            }
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} jitter {v} is not in [0, 1]"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(format!("hue jitter {} is not in [0, 0.5]", self.hue));
        }
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(format!(
                "normalisation has {} means and {} stds for {channels}-channel images",
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err("normalisation std must be positive and finite".into());
        }
        Ok(())
    }

    /// Draws the random parameters of `n` images of `height × width`.
    pub fn sample<R: Rng>(
        &self,
        n: usize,
        height: usize,
        width: usize,
        rng: &mut R,
    ) -> AugmentParams {
        let mut p = AugmentParams {
            crop: Vec::with_capacity(n),
            flip: Vec::with_capacity(n),
            jitter: Vec::with_capacity(n),
            factors: Vec::with_capacity(n),
            order: Vec::with_capacity(n),
            gray: Vec::with_capacity(n),
        };
        for _ in 0..n {
            p.crop.push(self.sample_crop(height, width, rng));
            p.flip.push(rng.random::<f64>() < self.flip_p);
            p.jitter.push(rng.random::<f64>() < self.jitter_p);
            let mut factor = |strength: f64| {
                if strength > 0.0 {
                    rng.random_range(1.0 - strength..=1.0 + strength) as f32
                } else {
                    1.0
                }
            };
            let b = factor(self.brightness);
            let c = factor(self.contrast);
            let s = factor(self.saturation);
            let h = if self.hue > 0.0 {
                rng.random_range(-self.hue..=self.hue) as f32
            } else {
                0.0
            };
            p.factors.push([b, c, s, h]);
            let mut order = [0u8, 1, 2, 3];
            // Fisher–Yates, as torch.randperm(4).
            for i in (1..4).rev() {
                let j = rng.random_range(0..=i);
                order.swap(i, j);
            }
            p.order.push(order);
            p.gray.push(rng.random::<f64>() < self.gray_p);
        }
        p
    }

    /// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and ratio,
    /// then a centre crop at the clamped ratio. Returns `[top, left, height, width]` in pixels.
    fn sample_crop<R: Rng>(&self, height: usize, width: usize, rng: &mut R) -> [u32; 4] {
        let area = (height * width) as f64;
        let (lr0, lr1) = (self.crop_ratio.0.ln(), self.crop_ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.crop_scale.0..=self.crop_scale.1);
            let ratio = if lr1 > lr0 {
                rng.random_range(lr0..lr1).exp()
            } else {
                lr0.exp()
            };
            let w = (target * ratio).sqrt().round() as usize;
            let h = (target / ratio).sqrt().round() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return [top as u32, left as u32, h as u32, w as u32];
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.crop_ratio.0 {
            (
                width,
                ((width as f64 / self.crop_ratio.0).round() as usize).clamp(1, height),
            )
        } else if in_ratio > self.crop_ratio.1 {
            (
                ((height as f64 * self.crop_ratio.1).round() as usize).clamp(1, width),
                height,
            )
        } else {
            (width, height)
        };
        [
            ((height - h) / 2) as u32,
            ((width - w) / 2) as u32,
            h as u32,
            w as u32,
        ]
    }
}

impl std::fmt::Display for AugmentConfig {
    /// One line: crop, flip, jitter and grayscale settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crop scale {:.2}–{:.2} (ratio {:.2}–{:.2}), flip p {:.2}, ",
            self.crop_scale.0, self.crop_scale.1, self.crop_ratio.0, self.crop_ratio.1, self.flip_p
        )?;
        if self.jitter_p > 0.0 {
            write!(
                f,
                "colour jitter p {:.2} (brightness {:.2}, contrast {:.2}, saturation {:.2}, hue {:.2}), ",
                self.jitter_p, self.brightness, self.contrast, self.saturation, self.hue
            )?;
        } else {
            write!(f, "no colour jitter, ")?;
        }
        write!(f, "grayscale p {:.2}", self.gray_p)
    }
}

/// The random parameters of one batch, one entry per image.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    /// Crop box `[top, left, height, width]` in input pixels.
    pub crop: Vec<[u32; 4]>,
    /// Horizontal flip.
    pub flip: Vec<bool>,
    /// Whether colour jitter applies.
    pub jitter: Vec<bool>,
    /// Jitter factors `[brightness, contrast, saturation, hue shift]`.
    pub factors: Vec<[f32; 4]>,
    /// The order of the four jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue).
    pub order: Vec<[u8; 4]>,
    /// Grayscale conversion.
    pub gray: Vec<bool>,
}

impl AugmentParams {
    /// The identity: full-image crop, no flip, no jitter, no grayscale (normalisation only).
    pub fn identity(n: usize, height: usize, width: usize) -> Self {
        AugmentParams {
            crop: vec![[0, 0, height as u32, width as u32]; n],
            flip: vec![false; n],
            jitter: vec![false; n],
            factors: vec![[1.0, 1.0, 1.0, 0.0]; n],
            order: vec![[0, 1, 2, 3]; n],
            gray: vec![false; n],
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.crop.len()
    }

    /// True for zero images.
    pub fn is_empty(&self) -> bool {
        self.crop.is_empty()
    }
}

const GRAY_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

fn column<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Bilinear weights `[n, out, len]` of a crop `[start, start + size)` of an axis of `len`
/// pixels resized to `out` pixels (`align_corners = false`, edges clamped), optionally mirrored.
fn interpolation(
    start: Vec<f32>,
    size: Vec<f32>,
    mirror: Vec<f32>,
    out: usize,
    len: usize,
    device: &Device,
) -> Tensor<3> {
    let n = start.len();
    let start = column(start, [n, 1], device);
    let size = column(size, [n, 1], device);
    let mirror = column(mirror, [n, 1], device);
    let o = Tensor::<1, Int>::arange(0..out as i64, device)
        .float()
        .reshape([1, out]);
    // A mirrored output pixel o reads where pixel out-1-o would.
    let o = o.clone() + mirror * (o.mul_scalar(-2.0).add_scalar((out - 1) as f32));
    let src = (o.add_scalar(0.5) * size.clone())
        .div_scalar(out as f32)
        .sub_scalar(0.5);
    let src = src
        .clamp_min(0.0)
        .min_pair(size.sub_scalar(1.0).expand([n, out]))
        + start;
    let i = Tensor::<1, Int>::arange(0..len as i64, device)
        .float()
        .reshape([1, 1, len]);
    relu((src.reshape([n, out, 1]) - i).abs().neg().add_scalar(1.0))
}

fn gray(rgb: &Tensor<4>) -> Tensor<4> {
    let r = rgb.clone().narrow(1, 0, 1);
    let g = rgb.clone().narrow(1, 1, 1);
    let b = rgb.clone().narrow(1, 2, 1);
    r.mul_scalar(GRAY_WEIGHTS[0]) + g.mul_scalar(GRAY_WEIGHTS[1]) + b.mul_scalar(GRAY_WEIGHTS[2])
}

fn blend(x: Tensor<4>, other: Tensor<4>, factor: Tensor<4>) -> Tensor<4> {
    // factor * x + (1 - factor) * other, clamped, as torchvision's _blend.
    (other.clone() + factor * (x - other)).clamp(0.0, 1.0)
}

fn floor_mod(x: Tensor<4>, m: f32) -> Tensor<4> {
    x.clone() - x.div_scalar(m).floor().mul_scalar(m)
}

/// torchvision's `adjust_hue`: RGB → HSV, shift the hue, back to RGB.
fn shift_hue(rgb: Tensor<4>, shift: Tensor<4>) -> Tensor<4> {
    let r = rgb.clone().narrow(1, 0, 1);
    let g = rgb.clone().narrow(1, 1, 1);
    let b = rgb.clone().narrow(1, 2, 1);
    let maxc = r.clone().max_pair(g.clone()).max_pair(b.clone());
    let minc = r.clone().min_pair(g.clone()).min_pair(b.clone());
    let delta = maxc.clone() - minc;
    let chroma = delta.clone().greater_elem(0.0).float();
    // Saturation and a safe divisor (gray pixels: hue 0, saturation 0).
    let s = delta.clone() / maxc.clone().clamp_min(1e-12);
    let safe = delta + chroma.clone().neg().add_scalar(1.0);
    let is_r = maxc.clone().equal(r.clone()).float();
    let is_g = maxc.clone().equal(g.clone()).float() * is_r.clone().neg().add_scalar(1.0);
    let is_b = (is_r.clone() + is_g.clone()).neg().add_scalar(1.0);
    let hr = (g.clone() - b.clone()) / safe.clone();
    let hg = ((b - r.clone()) / safe.clone()).add_scalar(2.0);
    let hb = ((r - g) / safe).add_scalar(4.0);
    let h6 = (is_r * hr + is_g * hg + is_b * hb) * chroma;
    let h = floor_mod(h6.div_scalar(6.0) + shift, 1.0);
    // HSV → RGB: channel(n) = v - v·s·clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    let v = maxc;
    let vs = v.clone() * s;
    let channel = |n: f32| {
        let k = floor_mod(h.clone().mul_scalar(6.0).add_scalar(n), 6.0);
        let t = k.clone().min_pair(k.neg().add_scalar(4.0)).clamp(0.0, 1.0);
        v.clone() - vs.clone() * t
    };
    Tensor::cat(vec![channel(5.0), channel(3.0), channel(1.0)], 1)
}

/// Applies the augmentation given by `params` to a batch and normalises it.
///
/// # Shapes
/// - `images`: `[n, channels, height, width]`, values in `[0, 1]`
/// - output: `[n, channels, height, width]` (the same size: crops are resized back)
///
/// `config` supplies the normalisation; `params.len()` must equal `n`, and the mean/std must
/// have one entry per channel (checked by [`AugmentConfig::validate`]).
pub fn augment(images: Tensor<4>, params: &AugmentParams, config: &AugmentConfig) -> Tensor<4> {
    let device = images.device();
    let [n, c, h, w] = images.dims();
    assert_eq!(params.len(), n, "one parameter set per image");
    let mut x = crop_resize(images, params, &device);
    if c == 3 || c == 1 {
        x = jitter(x, params, &device);
    }
    if c == 3 && params.gray.iter().any(|&g| g) {
        let gray_mask = column(
            params.gray.iter().map(|&g| g as u8 as f32).collect(),
            [n, 1, 1, 1],
            &device,
        );
        let g = gray(&x).expand([n, c, h, w]);
        x = x.clone() + gray_mask * (g - x);
    }
    normalize(x, config)
}

/// Only the normalisation (evaluation).
///
/// # Shapes
/// - `images`: `[n, channels, height, width]` → the same
pub fn normalize(images: Tensor<4>, config: &AugmentConfig) -> Tensor<4> {
    let device = images.device();
    let c = images.dims()[1];
    let mean = column(config.mean.clone(), [1, c, 1, 1], &device);
    let std = column(config.std.clone(), [1, c, 1, 1], &device);
    (images - mean) / std
}

fn crop_resize(images: Tensor<4>, params: &AugmentParams, device: &Device) -> Tensor<4> {
    let [n, c, h, w] = images.dims();
    let full = params
        .crop
        .iter()
        .zip(&params.flip)
        .all(|(b, &f)| *b == [0, 0, h as u32, w as u32] && !f);
    if full {
        return images;
    }
    let pick = |k: usize| params.crop.iter().map(|b| b[k] as f32).collect::<Vec<_>>();
    let flips = params.flip.iter().map(|&f| f as u8 as f32).collect();
    let ry = interpolation(pick(0), pick(2), vec![0.0; n], h, h, device); // [n, h, h]
    let rx = interpolation(pick(1), pick(3), flips, w, w, device); // [n, w, w]
    // Columns: [n, c*h, w_in] · [n, w_in, w] → [n, c*h, w].
    let x = images.reshape([n, c * h, w]).matmul(rx.swap_dims(1, 2));
    // Rows: [n, h_out, h_in] · [n, h_in, c*w].
    let x = x
        .reshape([n, c, h, w])
        .swap_dims(1, 2)
        .reshape([n, h, c * w]);
    ry.matmul(x).reshape([n, h, c, w]).swap_dims(1, 2)
}

fn jitter(x: Tensor<4>, params: &AugmentParams, device: &Device) -> Tensor<4> {
    let [n, c, _, _] = x.dims();
    let active: Vec<bool> = params.jitter.clone();
    if !active.iter().any(|&a| a) {
        return x;
    }
    // Identity factors where jitter is off, so one code path covers the batch.
    let factor = |k: usize, neutral: f32| {
        column(
            params
                .factors
                .iter()
                .zip(&active)
                .map(|(f, &a)| if a { f[k] } else { neutral })
                .collect(),
            [n, 1, 1, 1],
            device,
        )
    };
    let (fb, fc, fs, fh) = (
        factor(0, 1.0),
        factor(1, 1.0),
        factor(2, 1.0),
        factor(3, 0.0),
    );
    let color = c == 3;
    let mut x = x;
    for slot in 0..4 {
        let mut next: Option<Tensor<4>> = None;
        for op in 0..4u8 {
            if !color && op >= 2 {
                continue;
            }
            let sel: Vec<f32> = params
                .order
                .iter()
                .map(|o| (o[slot] == op) as u8 as f32)
                .collect();
            if sel.iter().all(|&s| s == 0.0) {
                continue;
            }
            let y = match op {
                0 => (x.clone() * fb.clone()).clamp(0.0, 1.0),
                1 => {
                    let g = if color { gray(&x) } else { x.clone() };
                    let mean = g.mean_dim(3).mean_dim(2);
                    blend(x.clone(), mean.expand(x.dims()), fc.clone())
                }
                2 => {
                    let g = gray(&x).expand(x.dims());
                    blend(x.clone(), g, fs.clone())
                }
                _ => shift_hue(x.clone(), fh.clone()),
            };
            let term = column(sel, [n, 1, 1, 1], device) * y;
            next = Some(match next {
                Some(acc) => acc + term,
                None => term,
            });
        }
        if let Some(mut acc) = next {
            if !color {
                // Slots that hold a colour op leave a 1-channel image unchanged.
                let skip: Vec<f32> = params
                    .order
                    .iter()
                    .map(|o| (o[slot] >= 2) as u8 as f32)
                    .collect();
                acc = acc + column(skip, [n, 1, 1, 1], device) * x.clone();
            }
            x = acc;
        }
    }
    x
}

/// The f64, pixel-by-pixel reference of [`augment`] on `[n, c, h, w]` images in a flat slice.
pub mod reference {
    use super::{AugmentConfig, AugmentParams, GRAY_WEIGHTS};

    fn axis_weights(
        start: f64,
        size: f64,
        mirror: bool,
        out: usize,
        o: usize,
    ) -> (usize, usize, f64) {
        let o = if mirror { out - 1 - o } else { o } as f64;
        let src = ((o + 0.5) * size / out as f64 - 0.5).clamp(0.0, size - 1.0) + start;
        let i0 = src.floor();
        let frac = src - i0;
        let i0 = i0 as usize;
        let i1 = if frac > 0.0 { i0 + 1 } else { i0 };
        (i0, i1, frac)
    }

    fn gray(p: &[f64; 3]) -> f64 {
        GRAY_WEIGHTS[0] as f64 * p[0]
            + GRAY_WEIGHTS[1] as f64 * p[1]
            + GRAY_WEIGHTS[2] as f64 * p[2]
    }

    fn hue(p: [f64; 3], shift: f64) -> [f64; 3] {
        let [r, g, b] = p;
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let delta = maxc - minc;
        let v = maxc;
        let s = if maxc > 0.0 { delta / maxc } else { 0.0 };
        let h6 = if delta <= 0.0 {
            0.0
        } else if maxc == r {
            (g - b) / delta
        } else if maxc == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        };
        let h = (h6 / 6.0 + shift).rem_euclid(1.0);
        let ch = |n: f64| {
            let k = (n + 6.0 * h).rem_euclid(6.0);
            v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
        };
        [ch(5.0), ch(3.0), ch(1.0)]
    }

    /// Augments and normalises `images` (`[n, c, h, w]`, row-major) with `params`.
    pub fn augment(
        images: &[f32],
        dims: [usize; 4],
        params: &AugmentParams,
        config: &AugmentConfig,
    ) -> Vec<f32> {
        let [n, c, h, w] = dims;
        let mut out = vec![0f32; images.len()];
        let mut img = vec![0f64; c * h * w];
        for s in 0..n {
            let src = &images[s * c * h * w..(s + 1) * c * h * w];
            let [top, left, ch, cw] = params.crop[s].map(|v| v as f64);
            for y in 0..h {
                let (y0, y1, fy) = axis_weights(top, ch, false, h, y);
                for x in 0..w {
                    let (x0, x1, fx) = axis_weights(left, cw, params.flip[s], w, x);
                    for k in 0..c {
                        let at = |yy: usize, xx: usize| src[k * h * w + yy * w + xx] as f64;
                        let top_row = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                        let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                        img[k * h * w + y * w + x] = top_row * (1.0 - fy) + bottom * fy;
                    }
                }
            }
            let color = c == 3;
            if params.jitter[s] && (c == 1 || c == 3) {
                let [fb, fc, fs, fh] = params.factors[s].map(|v| v as f64);
                for &op in &params.order[s] {
                    match op {
                        0 => img.iter_mut().for_each(|v| *v = (*v * fb).clamp(0.0, 1.0)),
                        1 => {
                            let mean = if color {
                                (0..h * w)
                                    .map(|i| gray(&[img[i], img[h * w + i], img[2 * h * w + i]]))
                                    .sum::<f64>()
                                    / (h * w) as f64
                            } else {
                                img.iter().sum::<f64>() / (h * w) as f64
                            };
                            img.iter_mut()
                                .for_each(|v| *v = (mean + fc * (*v - mean)).clamp(0.0, 1.0));
                        }
                        2 if color => {
                            for i in 0..h * w {
                                let g = gray(&[img[i], img[h * w + i], img[2 * h * w + i]]);
                                for k in 0..3 {
                                    let v = &mut img[k * h * w + i];
                                    *v = (g + fs * (*v - g)).clamp(0.0, 1.0);
                                }
                            }
                        }
                        3 if color => {
                            for i in 0..h * w {
                                let p = hue([img[i], img[h * w + i], img[2 * h * w + i]], fh);
                                for (k, value) in p.into_iter().enumerate() {
                                    img[k * h * w + i] = value;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if color && params.gray[s] {
                for i in 0..h * w {
                    let g = gray(&[img[i], img[h * w + i], img[2 * h * w + i]]);
                    for k in 0..3 {
                        img[k * h * w + i] = g;
                    }
                }
            }
            for k in 0..c {
                for i in 0..h * w {
                    out[s * c * h * w + k * h * w + i] =
                        ((img[k * h * w + i] - config.mean[k] as f64) / config.std[k] as f64)
                            as f32;
                }
            }
        }
        out
    }
}
