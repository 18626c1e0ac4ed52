//! The residual model's kernels around its U-Net (`shaders/residual.wgsl`): [`features`] builds
//! the U-Net's input from the scaled buckets and the classical solver's height and contrast, and
//! [`combine`] adds the bounded correction, `h + bound · tanh(u)`. The model is `nn::residual`.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Shader, Tensor, grid_1d};

pub static SHADER: Shader = wgsl!("residual": "lib/grid.wgsl", "residual.wgsl");

/// Most features after the buckets (4-bit codes packed in one u32).
pub const MAX_FEATURES: usize = 8;

/// A per-pixel input the U-Net gets besides the buckets, from the classical solution. Every one
/// is 0 at a pixel the solver left NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `sin(2π·h/(λ1/2))`: the height's place within a fringe of the first laser.
    SinHeight,
    /// `cos(2π·h/(λ1/2))`.
    CosHeight,
    /// The fringe contrast (mean B/A of the lasers the solver used).
    Contrast,
    /// 1 where the solver gave a height.
    Valid,
}

impl Feature {
    pub const ALL: [Feature; 4] = [Feature::SinHeight, Feature::CosHeight, Feature::Contrast, Feature::Valid];

    /// The name in the weights' `features` metadata.
    pub fn name(self) -> &'static str {
        match self {
            Feature::SinHeight => "sin_height",
            Feature::CosHeight => "cos_height",
            Feature::Contrast => "contrast",
            Feature::Valid => "valid",
        }
    }

    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name.trim())
    }

    /// The shader's code (see `residual.wgsl`).
    fn code(self) -> u32 {
        self as u32
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ResidualParams {
    hw: u32,
    n: u32,
    c: u32,
    f: u32,
    codes: u32,
    cls_c: u32,
    half: f32,
    bound: f32,
}

fn params(classical: &Tensor, c: usize, features: &[Feature], half: f32, bound: f32) -> Result<ResidualParams> {
    let [n, cls_c, h, w] = classical.shape;
    if features.len() > MAX_FEATURES || classical.precision != Precision::F32 {
        return Err(Error::Shape(format!(
            "residual kernels: {} features (at most {MAX_FEATURES}) over a {} classical output",
            features.len(),
            classical.precision
        )));
    }
    let codes = features.iter().enumerate().fold(0, |acc, (k, f)| acc | f.code() << (4 * k));
    let (f, hw) = (features.len() as u32, (h * w) as u32);
    Ok(ResidualParams { hw, n: n as u32, c: c as u32, f, codes, cls_c: cls_c as u32, half, bound })
}

/// `unet_in` `[n, c + F, h, w]` (the U-Net's precision) from the f32 `buckets` `[n, c, h, w]` and
/// the f32 `classical` output `[n, 1 or 2, h, w]` (height, then contrast if there): the buckets
/// (non-finite ones as 0), then `features` in order; `half` is the first laser's λ/2 (µm).
pub fn features(
    gpu: &Gpu,
    buckets: &Tensor,
    classical: &Tensor,
    features: &[Feature],
    half: f32,
    unet_in: &Tensor,
) -> Result<Dispatch> {
    let [n, c, h, w] = buckets.shape;
    let wants = [n, c + features.len(), h, w];
    let cls = classical.shape;
    if buckets.precision != Precision::F32 || unet_in.shape != wants || [cls[0], cls[2], cls[3]] != [n, h, w] {
        return Err(Error::Shape(format!(
            "residual features: buckets {:?}, classical {cls:?} into {:?} (expected {wants:?})",
            buckets.shape, unet_in.shape
        )));
    }
    let p = params(classical, c, features, half, 0.0)?;
    let [gx, gy] = grid_1d(gpu, n * h * w, 256);
    let bufs = [(1, &buckets.buffer), (2, &classical.buffer), (3, &unet_in.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("features"), unet_in.precision, &p, &bufs, [gx, gy, 1])
}

/// `out` `[n, 1, h, w]` f32 = classical height + `bound · tanh(u)` for the U-Net output `u`
/// `[n, 1, h, w]`; NaN where the height is NaN.
pub fn combine(gpu: &Gpu, classical: &Tensor, u: &Tensor, bound: f32, out: &Tensor) -> Result<Dispatch> {
    let [n, _, h, w] = classical.shape;
    if u.shape != [n, 1, h, w] || out.shape != [n, 1, h, w] || out.precision != Precision::F32 {
        return Err(Error::Shape(format!(
            "residual combine: classical {:?}, correction {:?} into {:?} {}",
            classical.shape, u.shape, out.shape, out.precision
        )));
    }
    let p = params(classical, 0, &[], 0.0, bound)?;
    let [gx, gy] = grid_1d(gpu, n * h * w, 256);
    let bufs = [(2, &classical.buffer), (4, &u.buffer), (5, &out.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("combine"), u.precision, &p, &bufs, [gx, gy, 1])
}

/// The kernels on the CPU (conventions in [`crate::ops`]).
pub mod reference {
    use super::Feature;

    /// Feature `f` of a pixel of classical height `h` (NaN: invalid) and contrast `q`.
    pub fn feature(f: Feature, h: f64, q: f64, half: f64) -> f64 {
        if h.is_nan() {
            return 0.0;
        }
        let t = h / half;
        let turns = t - t.floor();
        match f {
            Feature::SinHeight => (std::f64::consts::TAU * turns).sin(),
            Feature::CosHeight => (std::f64::consts::TAU * turns).cos(),
            Feature::Contrast if q.is_finite() => q,
            Feature::Contrast => 0.0,
            Feature::Valid => 1.0,
        }
    }

    /// [`super::features`]: `buckets` `[n, c, h, w]`, `classical` `[n, cls_c, h, w]` (contrast in
    /// channel 1 if `cls_c > 1`, else 0) → `[n, c + F, h, w]`.
    pub fn features(
        buckets: &[f64],
        [n, c, h, w]: [usize; 4],
        classical: &[f64],
        cls_c: usize,
        features: &[Feature],
        half: f64,
    ) -> Vec<f64> {
        let hw = h * w;
        let mut out = Vec::with_capacity(n * (c + features.len()) * hw);
        for z in 0..n {
            out.extend(buckets[z * c * hw..(z + 1) * c * hw].iter().map(|&v| if v.is_finite() { v } else { 0.0 }));
            let height = &classical[z * cls_c * hw..][..hw];
            let q = |i: usize| if cls_c > 1 { classical[(z * cls_c + 1) * hw + i] } else { 0.0 };
            for &f in features {
                out.extend((0..hw).map(|i| feature(f, height[i], q(i), half)));
            }
        }
        out
    }

    /// [`super::combine`]: `classical` `[n, cls_c, h·w]` (height in channel 0), `u` `[n, h·w]`;
    /// NaN heights stay NaN.
    pub fn combine(classical: &[f64], [n, cls_c, hw]: [usize; 3], u: &[f64], bound: f64) -> Vec<f64> {
        (0..n * hw).map(|i| classical[(i / hw) * cls_c * hw + i % hw] + bound * u[i].tanh()).collect()
    }
}
