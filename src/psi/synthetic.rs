//! What a synthetic frame is: its size and element type, its physics ([`PsiConfig`]), its surface
//! ([`Shape`]), the smooth per-pixel variation of A and B, noise and seed — and its exact content
//! computed on the CPU in f64 ([`heights_cpu`], [`model_cpu`]), the reference of the GPU
//! generator (`ops::synth`, `commands::generate`).

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::psi::PsiConfig;
use crate::psi::buckets;
use crate::psi::surface::{Shape, Term, coord, heights_from_terms, scaled_terms, seed_heights};
use crate::rng::Rng;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub height: usize,
    pub width: usize,
    /// Element type of the bucket file: f32, f16, u8 or u16 (integers rounded half away from
    /// zero and clipped, as [`buckets::quantize_u8`]).
    pub dtype: HostType,
    /// Lasers, phase steps, and the offset A and modulation B (counts).
    pub psi: PsiConfig,
    /// Relative amplitude of a smooth per-pixel variation of A and B: `A·(1 + v·f_A(x, y))`,
    /// `f_A` in [−1, 1] (products of low-frequency cosines drawn from `seed`); 0 = uniform.
    pub ab_variation: f32,
    /// Standard deviation of additive Gaussian noise (counts).
    pub noise: f32,
    /// Seeds the random surface, the A/B variation and the noise.
    pub seed: u64,
    pub shape: Shape,
    /// Random surfaces only: heights become `height_offset + height_scale·h` (for example scale
    /// 0.02 and offset 1.25 keep |h| ≤ 60 µm within one 2.5 µm fringe of 5 µm light).
    pub height_scale: f32,
    pub height_offset: f32,
    /// Rows per GPU band (reduced to fit the adapter's limits and a 32 MiB band buffer).
    pub band_rows: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            height: 256,
            width: 256,
            dtype: HostType::F32,
            psi: PsiConfig::default(),
            ab_variation: 0.0,
            noise: 0.0,
            seed: 0,
            shape: Shape::Seed,
            height_scale: 1.0,
            height_offset: 0.0,
            band_rows: 256,
        }
    }
}

impl GenerateOptions {
    /// Lasers × buckets.
    pub fn channels(&self) -> usize {
        self.psi.channels()
    }

    pub fn validate(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 {
            return Err(Error::Invalid(format!(
                "cannot generate an empty frame of {} x {}; height and width must be at least 1",
                self.height, self.width
            )));
        }
        if self.height > u32::MAX as usize / 2 || self.width > u32::MAX as usize / 2 {
            return Err(Error::Invalid(format!("frame {} x {} is too large", self.height, self.width)));
        }
        self.psi.validate_wavelengths("generating a frame")?;
        self.psi.require_nominal_steps("the generator")?;
        if self.psi.buckets == 0 {
            return Err(Error::Invalid("generating a frame needs at least one bucket per laser; got 0".into()));
        }
        if self.channels() > 4096 {
            return Err(Error::Invalid(format!("{} channels is too many (at most 4096)", self.channels())));
        }
        self.psi.validate_ab()?;
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(Error::Invalid(format!("noise σ = {} must be finite and at least 0", self.noise)));
        }
        if !(self.height_scale.is_finite() && self.height_offset.is_finite()) {
            return Err(Error::Invalid(format!(
                "height scale {} and offset {} must be finite",
                self.height_scale, self.height_offset
            )));
        }
        if self.shape == Shape::Seed && (self.height_scale != 1.0 || self.height_offset != 0.0) {
            return Err(Error::Invalid("a height scale or offset needs --shape random".into()));
        }
        if !(self.ab_variation.is_finite() && (0.0..1.0).contains(&self.ab_variation)) {
            return Err(Error::Invalid(format!(
                "A/B variation {} must be in [0, 1) (a relative amplitude)",
                self.ab_variation
            )));
        }
        Ok(())
    }

    /// The terms of the random surface (scaled and offset as asked); empty for the seed surface.
    pub fn surface_terms(&self) -> Vec<Term> {
        match self.shape {
            Shape::Seed => Vec::new(),
            Shape::Random => scaled_terms(self.seed, self.height_scale, self.height_offset),
        }
    }
}

/// The heights of `opts` on the CPU (f64 inside): [`seed_heights`] or the random surface.
pub fn heights_cpu(opts: &GenerateOptions) -> Vec<f32> {
    match opts.shape {
        Shape::Seed => seed_heights(opts.height, opts.width),
        Shape::Random => heights_from_terms(&opts.surface_terms(), opts.height, opts.width),
    }
}

/// Frequencies and phases of the A and B variation fields:
/// `f(x, y) = cos(2π(f0·x + f1))·cos(2π(f2·y + f3))`.
pub fn ab_fields(seed: u64) -> [[f32; 4]; 2] {
    let mut rng = Rng::new(seed ^ 0xAB0F_1E1D_0000_0002);
    let mut field = || {
        [rng.range_f32(0.1, 0.5), rng.range_f32(0.0, 1.0), rng.range_f32(0.1, 0.5), rng.range_f32(0.0, 1.0)]
            .map(|v| v as f32)
    };
    [field(), field()]
}

fn ab_shape(f: &[f32; 4], x: f64, y: f64) -> f64 {
    let tau = 2.0 * std::f64::consts::PI;
    let [f0, f1, f2, f3] = f.map(f64::from);
    (tau * (f0 * x + f1)).cos() * (tau * (f2 * y + f3)).cos()
}

/// The noise-free bucket stack `(L·N, H, W)` of `opts` for the height map `heights` (`H × W`),
/// in f64: `A(x, y) + B(x, y)·cos(4π·h/λ_l + 2πk/N)` with the A/B variation of `opts`. With no
/// variation this is [`buckets::buckets`] without the final rounding to f32.
pub fn model_cpu(opts: &GenerateOptions, heights: &[f32]) -> Vec<f64> {
    let (h, w) = (opts.height, opts.width);
    assert_eq!(heights.len(), h * w, "heights for {h} x {w}");
    let fields = ab_fields(opts.seed);
    let (a, b, v) = (opts.psi.a as f64, opts.psi.b as f64, opts.ab_variation as f64);
    let mut ab = Vec::with_capacity(h * w);
    for r in 0..h {
        let y = coord(r, h) as f32 as f64;
        for c in 0..w {
            let x = coord(c, w) as f32 as f64;
            if v == 0.0 {
                ab.push((a, b));
            } else {
                ab.push((a * (1.0 + v * ab_shape(&fields[0], x, y)), b * (1.0 + v * ab_shape(&fields[1], x, y))));
            }
        }
    }
    buckets::render(heights, &opts.psi, |p| ab[p], || 0.0)
}
