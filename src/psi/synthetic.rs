//! What a synthetic frame is: its size and element type, its physics ([`PsiConfig`], calibrated
//! phase steps included), its surface ([`Shape`]), the smooth per-pixel variation of A and B, the
//! dark, low-contrast and saturated [`Patch`]es, noise and seed — and its exact content computed
//! on the CPU in f64 ([`heights_cpu`], [`model_cpu`]), the reference of the GPU generator
//! (`ops::synth`, `commands::generate`), plus what a solver should make of each pixel
//! ([`reason_rows`]).

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::psi::PsiConfig;
use crate::psi::buckets;
use crate::psi::reason::Reason;
use crate::psi::surface::{Shape, Term, coord, heights_from_terms, scaled_terms, seed_heights, steep_heights};
use crate::rng::Rng;

/// Most patches a frame may have (the GPU tests each pixel against every one).
pub const MAX_PATCHES: usize = 256;
/// Default slope of the steep surface at the frame's corners, µm per pixel (fringes of 5 µm light
/// 5 pixels apart there).
pub const DEFAULT_SLOPE: f32 = 0.5;

/// What a [`Patch`] does to its pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PatchKind {
    /// No fringes: B = 0, A unchanged (a spot that scatters the light away).
    Dark,
    /// B × the factor (in [0, 1]).
    LowContrast(f32),
    /// A raised until `A − B` exceeds the integer type's maximum by 6σ + 1, so every bucket of
    /// every laser clips at the maximum, noise included (u8 and u16 frames only).
    Saturate,
}

/// A rectangle of pixels whose A or B is changed: rows `y .. y + h`, columns `x .. x + w`.
/// Patches may overlap: the B factors of every patch covering a pixel multiply, then the
/// pixel saturates if any of them is [`PatchKind::Saturate`] (the order of patches is
/// irrelevant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Patch {
    pub kind: PatchKind,
    /// `[y, x, h, w]` in pixels.
    pub region: [usize; 4],
}

impl Patch {
    /// The patch covers pixel (`row`, `col`).
    pub fn contains(&self, row: usize, col: usize) -> bool {
        let [y, x, h, w] = self.region;
        (y..y + h).contains(&row) && (x..x + w).contains(&col)
    }

    /// The factor on B: 0 for dark, the given one for low contrast, 1 for saturated.
    pub fn b_factor(&self) -> f32 {
        match self.kind {
            PatchKind::Dark => 0.0,
            PatchKind::LowContrast(f) => f,
            PatchKind::Saturate => 1.0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            PatchKind::Dark => "dark",
            PatchKind::LowContrast(_) => "low-contrast",
            PatchKind::Saturate => "saturated",
        }
    }
}

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
    /// Steep surfaces only: the slope at the frame's corners, µm per pixel.
    pub slope: f32,
    /// Dark, low-contrast and saturated rectangles, applied after the A/B variation.
    pub patches: Vec<Patch>,
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
            slope: DEFAULT_SLOPE,
            patches: Vec::new(),
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
        self.psi.validate_phase_steps()?;
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
        if self.shape != Shape::Random && (self.height_scale != 1.0 || self.height_offset != 0.0) {
            return Err(Error::Invalid("a height scale or offset needs --shape random".into()));
        }
        if self.shape == Shape::Steep {
            if !(self.slope.is_finite() && self.slope > 0.0) {
                return Err(Error::Invalid(format!("slope {} µm per pixel must be positive and finite", self.slope)));
            }
        } else if self.slope != DEFAULT_SLOPE {
            return Err(Error::Invalid("a slope needs --shape steep".into()));
        }
        self.validate_patches()?;
        if !(self.ab_variation.is_finite() && (0.0..1.0).contains(&self.ab_variation)) {
            return Err(Error::Invalid(format!(
                "A/B variation {} must be in [0, 1) (a relative amplitude)",
                self.ab_variation
            )));
        }
        Ok(())
    }

    /// Each patch lies inside the frame and is not empty, low-contrast factors are in [0, 1],
    /// saturated patches have an integer type to clip them.
    fn validate_patches(&self) -> Result<()> {
        if self.patches.len() > MAX_PATCHES {
            return Err(Error::Invalid(format!("{} patches is too many (at most {MAX_PATCHES})", self.patches.len())));
        }
        for p in &self.patches {
            let [y, x, h, w] = p.region;
            let (name, (fh, fw)) = (p.name(), (self.height, self.width));
            if h == 0 || w == 0 || y.saturating_add(h) > fh || x.saturating_add(w) > fw {
                return Err(Error::Invalid(format!(
                    "{name} patch y,x,h,w = {y},{x},{h},{w} must be a non-empty rectangle inside the {fh} x {fw} frame"
                )));
            }
            if let PatchKind::LowContrast(f) = p.kind
                && !(f.is_finite() && (0.0..=1.0).contains(&f))
            {
                return Err(Error::Invalid(format!("low-contrast factor {f} must be in [0, 1]")));
            }
            if p.kind == PatchKind::Saturate && self.saturation_level().is_none() {
                return Err(Error::Invalid(format!(
                    "saturated patches need an integer dtype (u8 or u16) whose range clips them; got {}",
                    self.dtype.name()
                )));
            }
        }
        Ok(())
    }

    /// The largest value of the integer output type (u8, u16); `None` for floats.
    pub fn saturation_level(&self) -> Option<f64> {
        match self.dtype {
            HostType::U8 => Some(255.0),
            HostType::U16 => Some(65535.0),
            HostType::F16 | HostType::F32 => None,
        }
    }

    /// A saturated pixel's `A − B`: the type's maximum plus 6σ (more than Box–Muller from 24-bit
    /// uniforms reaches: 5.77σ) plus 1, so that every bucket clips (0 for float types).
    pub fn saturated_base(&self) -> f32 {
        self.saturation_level().map_or(0.0, |m| (m + 6.0 * self.noise as f64 + 1.0) as f32)
    }

    /// The terms of the random surface (scaled and offset as asked); empty for other surfaces.
    pub fn surface_terms(&self) -> Vec<Term> {
        match self.shape {
            Shape::Random => scaled_terms(self.seed, self.height_scale, self.height_offset),
            Shape::Seed | Shape::Steep => Vec::new(),
        }
    }
}

/// The heights of `opts` on the CPU (f64 inside): [`seed_heights`], the random surface or
/// [`steep_heights`].
pub fn heights_cpu(opts: &GenerateOptions) -> Vec<f32> {
    match opts.shape {
        Shape::Seed => seed_heights(opts.height, opts.width),
        Shape::Random => heights_from_terms(&opts.surface_terms(), opts.height, opts.width),
        Shape::Steep => steep_heights(opts.height, opts.width, opts.slope as f64),
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

/// A and B of every pixel of `opts` (row-major, f64): the A/B variation, then the patches.
pub fn ab_cpu(opts: &GenerateOptions) -> Vec<(f64, f64)> {
    let (h, w) = (opts.height, opts.width);
    let fields = ab_fields(opts.seed);
    let (a, b, v) = (opts.psi.a as f64, opts.psi.b as f64, opts.ab_variation as f64);
    let saturated = opts.saturated_base() as f64;
    let mut ab = Vec::with_capacity(h * w);
    for r in 0..h {
        let y = coord(r, h) as f32 as f64;
        for c in 0..w {
            let x = coord(c, w) as f32 as f64;
            let (mut pa, mut pb) = if v == 0.0 {
                (a, b)
            } else {
                (a * (1.0 + v * ab_shape(&fields[0], x, y)), b * (1.0 + v * ab_shape(&fields[1], x, y)))
            };
            let mut sat = false;
            for p in opts.patches.iter().filter(|p| p.contains(r, c)) {
                pb *= p.b_factor() as f64;
                sat |= p.kind == PatchKind::Saturate;
            }
            if sat {
                pa = saturated + pb;
            }
            ab.push((pa, pb));
        }
    }
    ab
}

/// The noise-free bucket stack `(L·N, H, W)` of `opts` for the height map `heights` (`H × W`),
/// in f64: `A(x, y) + B(x, y)·cos(4π·h/λ_l + δ_lk)` with the phase steps, the A/B variation and
/// the patches of `opts`. With no variation and no patches this is [`buckets::buckets`] without
/// the final rounding to f32.
pub fn model_cpu(opts: &GenerateOptions, heights: &[f32]) -> Vec<f64> {
    let (h, w) = (opts.height, opts.width);
    assert_eq!(heights.len(), h * w, "heights for {h} x {w}");
    let ab = ab_cpu(opts);
    buckets::render(heights, &opts.psi, |p| ab[p], || 0.0)
}

/// What a solver should make of rows `row0 .. row0 + rows` of the frame of `opts`, one
/// [`Reason`] code per pixel into `out` (cleared first): [`Reason::Saturated`] inside a saturated
/// patch, [`Reason::LowModulation`] where B is exactly 0 (dark patches, low-contrast factor 0,
/// or B = 0 for the whole frame), [`Reason::Ok`] elsewhere — low-contrast pixels with B > 0 are
/// left for the solver to decide.
pub fn reason_rows(opts: &GenerateOptions, row0: usize, rows: usize, out: &mut Vec<u8>) {
    out.clear();
    for r in row0..row0 + rows {
        for c in 0..opts.width {
            let mut b_zero = opts.psi.b == 0.0;
            let mut sat = false;
            for p in opts.patches.iter().filter(|p| p.contains(r, c)) {
                b_zero |= p.b_factor() == 0.0;
                sat |= p.kind == PatchKind::Saturate;
            }
            let reason = match (sat, b_zero) {
                (true, _) => Reason::Saturated,
                (false, true) => Reason::LowModulation,
                (false, false) => Reason::Ok,
            };
            out.push(reason.code());
        }
    }
}
