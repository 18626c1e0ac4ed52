//! Synthetic PSI frames generated on the GPU (`shaders/synth.wgsl`), written band by band into a
//! `(L·N, H, W)` bucket stack `.npy` (channel `laser * N + bucket`), optionally with the true
//! heights `(H, W)` f32 beside it.
//!
//! Each bucket is `I = A + B·cos(4π·h/λ_l + 2πk/N)` (+ Gaussian noise), with A and B optionally
//! varying smoothly over the frame. Heights are either the seed's test surface
//! ([`synth::seed_heights`]) or a random smooth surface drawn from the seed as a short list of
//! terms ([`random_terms`]). The GPU computes a band of rows (every channel), quantises and packs
//! it into u32 words, and the host writes each channel's part at its offset in the file, so the
//! memory needed depends on the band and the width, never on the height.
//!
//! Precision (f32 on the GPU): seed heights come from per-column and per-row tables computed in
//! f64 (within about one f32 ulp of the CPU's values); the phase is formed in turns with the large
//! integer part dropped exactly, and the cosine is a range-reduced polynomial, so f32 buckets stay
//! within about 1e-3 counts of the f64 model for B = 100 (1e-4 on the written heights). The error
//! scales with B: at full 16-bit scale (B = 20000) it is a few 1e-3 counts, so a few in a
//! thousand u16 values that sit at a .5 tie round the other way than the f64 model would.
//! [`random_heights_cpu`] and [`model_cpu`] are the f64 references the tests compare against.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Shader, grid_1d};
use crate::io::npy::NpyWriter;
use crate::psi::synth;
use crate::tensor::HostType;

pub static SHADER: Shader = Shader {
    name: "synth",
    body: concat!(include_str!("../../shaders/phase.wgsl"), include_str!("../../shaders/synth.wgsl")),
};
pub static SURFACE: Kernel = Kernel { shader: &SHADER, entry: "surface" };
pub static BUCKETS: Kernel = Kernel { shader: &SHADER, entry: "buckets" };

/// Most random-surface terms (the host draws 3 to this many).
pub const MAX_TERMS: usize = 8;
/// Random surfaces are scaled so that |h| stays within this bound (µm).
pub const RANDOM_HEIGHT_BOUND: f64 = 60.0;
/// Bytes one band's output buffer may take (the adapter's binding limit applies as well).
const BAND_BUDGET: u64 = 32 << 20;
const WG: usize = 256;

/// The height map of a generated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The seed's test surface, exactly [`synth::seed_heights`].
    Seed,
    /// A smooth random surface drawn from `seed` ([`random_terms`]), |h| ≤ 60 µm.
    Random,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub height: usize,
    pub width: usize,
    /// Element type of the bucket file: f32, f16, u8 or u16 (integers rounded half away from
    /// zero and clipped, as [`synth::quantize_u8`]).
    pub dtype: HostType,
    /// One wavelength per laser, µm.
    pub wavelengths: Vec<f32>,
    /// Phase shifts per laser (δ_k = 2πk/N).
    pub buckets: usize,
    /// Offset A (counts).
    pub a: f32,
    /// Modulation B (counts).
    pub b: f32,
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

impl Shape {
    /// `seed` or `random` (case-insensitive).
    pub fn parse(s: &str) -> Option<Shape> {
        match s.to_ascii_lowercase().as_str() {
            "seed" => Some(Shape::Seed),
            "random" => Some(Shape::Random),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Seed => "seed",
            Shape::Random => "random",
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            height: 256,
            width: 256,
            dtype: HostType::F32,
            wavelengths: vec![5.0, 5.5, 6.05, 6.655],
            buckets: 4,
            a: 128.0,
            b: 100.0,
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
        self.wavelengths.len() * self.buckets
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
        if self.wavelengths.is_empty() {
            return Err(Error::Invalid("generating a frame needs at least one wavelength; got none".into()));
        }
        for (i, &w) in self.wavelengths.iter().enumerate() {
            if !(w.is_finite() && w > 0.0) {
                return Err(Error::Invalid(format!(
                    "wavelength {} is {w} µm; wavelengths must be positive and finite",
                    i + 1
                )));
            }
        }
        if self.buckets == 0 {
            return Err(Error::Invalid("generating a frame needs at least one bucket per laser; got 0".into()));
        }
        if self.channels() > 4096 {
            return Err(Error::Invalid(format!("{} channels is too many (at most 4096)", self.channels())));
        }
        if !(self.a.is_finite() && self.b.is_finite()) {
            return Err(Error::Invalid(format!("A = {} and B = {} must be finite", self.a, self.b)));
        }
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
}

/// What [`generate`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateStats {
    /// `(channels, height, width)` of the bucket file.
    pub shape: [usize; 3],
    pub dtype: HostType,
    /// Rows per band and number of bands.
    pub band_rows: usize,
    pub bands: usize,
    /// Bytes of bucket data written (without the header).
    pub bytes: u64,
    /// Least and greatest height, µm.
    pub height_range: (f32, f32),
    pub seconds: f64,
}

/// splitmix64 (the same generator as [`synth`]'s noise), for drawing parameters.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), rounded to f32 (the GPU and the CPU reference use the same values).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (lo + (hi - lo) * u) as f32 as f64
    }

    fn sign(&mut self) -> f64 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }
}

/// Kinds of random-surface terms (the shader's `switch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermKind {
    /// `amp·exp(−r²·p0)`, p0 = 1/σ².
    Gaussian = 0,
    /// `amp·(1 − r²·p0)²` inside r² < 1/p0, 0 outside (a rounded cap).
    Cap = 1,
    /// `amp·(p0·(x − cx) + p1·(y − cy))`, (p0, p1) a unit direction.
    Plane = 2,
    /// `(amp/2)·tanh(p2·(p0·(x − cx) + p1·(y − cy)))`, (p0, p1) the unit normal of the edge.
    Step = 3,
    /// `amp·cos(2π(p0·x + p1·y + p2))·exp(−r²·p3)`: a sinusoid (cycles per unit) in an envelope.
    Ripple = 4,
}

/// One term of a random surface: `[kind, amp, cx, cy, p0, p1, p2, p3]` as the shader reads it,
/// with x, y the column and row mapped to [−1, 1] and `r² = (x − cx)² + (y − cy)²`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Term {
    pub kind: TermKind,
    pub amp: f32,
    pub center: [f32; 2],
    pub p: [f32; 4],
}

impl Term {
    /// The largest |value| the term can take.
    fn bound(&self) -> f64 {
        let amp = self.amp.abs() as f64;
        match self.kind {
            TermKind::Plane => amp * ((self.p[0] as f64).abs() + (self.p[1] as f64).abs()) * 2.0,
            TermKind::Step => amp / 2.0,
            _ => amp,
        }
    }

    /// The term's value at (x, y), in f64.
    pub fn eval(&self, x: f64, y: f64) -> f64 {
        let [p0, p1, p2, p3] = self.p.map(f64::from);
        let amp = self.amp as f64;
        let (dx, dy) = (x - self.center[0] as f64, y - self.center[1] as f64);
        let r2 = dx * dx + dy * dy;
        match self.kind {
            TermKind::Gaussian => amp * (-r2 * p0).exp(),
            TermKind::Cap => amp * (1.0 - r2 * p0).max(0.0).powi(2),
            TermKind::Plane => amp * (p0 * dx + p1 * dy),
            TermKind::Step => 0.5 * amp * (p2 * (p0 * dx + p1 * dy)).tanh(),
            TermKind::Ripple => amp * (2.0 * std::f64::consts::PI * (p0 * x + p1 * y + p2)).cos() * (-r2 * p3).exp(),
        }
    }
}

/// The terms of the random surface of `seed`: a tilt plane plus 2 to 7 bumps, caps, steps and
/// ripples, scaled so that the sum of their bounds (hence |h|) is at most 60 µm.
pub fn random_terms(seed: u64) -> Vec<Term> {
    let mut rng = SplitMix(seed ^ 0x5EED_5A4F_ACE5_0001);
    let n = 3 + (rng.next_u64() % (MAX_TERMS as u64 - 2)) as usize;
    let mut terms = Vec::with_capacity(n);
    let tau = 2.0 * std::f64::consts::PI;
    for i in 0..n {
        let kind = if i == 0 {
            TermKind::Plane
        } else {
            [TermKind::Gaussian, TermKind::Cap, TermKind::Step, TermKind::Ripple][(rng.next_u64() % 4) as usize]
        };
        let center = [rng.uniform(-1.0, 1.0) as f32, rng.uniform(-1.0, 1.0) as f32];
        let angle = rng.uniform(0.0, tau);
        let (dx, dy) = ((angle.cos() as f32), (angle.sin() as f32));
        let (amp, p) = match kind {
            TermKind::Plane => (rng.uniform(0.0, 15.0), [dx, dy, 0.0, 0.0]),
            TermKind::Gaussian => {
                let sigma = rng.uniform(0.15, 0.8);
                (rng.sign() * rng.uniform(5.0, 40.0), [(1.0 / (sigma * sigma)) as f32, 0.0, 0.0, 0.0])
            }
            TermKind::Cap => {
                let r = rng.uniform(0.2, 1.0);
                (rng.sign() * rng.uniform(5.0, 40.0), [(1.0 / (r * r)) as f32, 0.0, 0.0, 0.0])
            }
            TermKind::Step => {
                let width = rng.uniform(0.05, 0.3);
                (rng.sign() * rng.uniform(2.0, 20.0), [dx, dy, (1.0 / width) as f32, 0.0])
            }
            TermKind::Ripple => {
                let k = rng.uniform(0.5, 4.0);
                let env = rng.uniform(0.3, 1.0);
                let phase = rng.uniform(0.0, 1.0);
                let (kx, ky) = ((k * angle.cos()) as f32, (k * angle.sin()) as f32);
                (rng.uniform(0.5, 5.0), [kx, ky, phase as f32, (1.0 / (env * env)) as f32])
            }
        };
        terms.push(Term { kind, amp: amp as f32, center, p });
    }
    let total: f64 = terms.iter().map(Term::bound).sum();
    if total > RANDOM_HEIGHT_BOUND {
        let s = RANDOM_HEIGHT_BOUND / total * (1.0 - 1e-6);
        for t in &mut terms {
            t.amp = (t.amp as f64 * s) as f32;
        }
    }
    terms
}

/// Coordinate of pixel `i` of `n` in [−1, 1] (as [`synth::seed_heights`]: a single one at −1).
fn coord(i: usize, n: usize) -> f64 {
    if n > 1 { -1.0 + 2.0 * i as f64 / (n - 1) as f64 } else { -1.0 }
}

/// The terms of `opts`' random surface: [`random_terms`] with amplitudes × `height_scale`, plus
/// a constant `height_offset` (a Gaussian of zero width parameter, exactly `amp` everywhere).
pub fn surface_terms(opts: &GenerateOptions) -> Vec<Term> {
    let mut terms = random_terms(opts.seed);
    for t in &mut terms {
        t.amp *= opts.height_scale;
    }
    if opts.height_offset != 0.0 {
        terms.push(Term { kind: TermKind::Gaussian, amp: opts.height_offset, center: [0.0; 2], p: [0.0; 4] });
    }
    terms
}

/// The random surface of `seed` on `height` rows × `width` columns (µm), evaluated in f64.
pub fn random_heights_cpu(seed: u64, height: usize, width: usize) -> Vec<f32> {
    heights_from_terms(&random_terms(seed), height, width)
}

/// A surface given by `terms` on `height` rows × `width` columns (µm), evaluated in f64.
fn heights_from_terms(terms: &[Term], height: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(height * width);
    for r in 0..height {
        let y = coord(r, height) as f32 as f64;
        for c in 0..width {
            let x = coord(c, width) as f32 as f64;
            out.push(terms.iter().map(|t| t.eval(x, y)).sum::<f64>() as f32);
        }
    }
    out
}

/// The heights of `opts` on the CPU (f64 inside): [`synth::seed_heights`] or
/// [`random_heights_cpu`].
pub fn heights_cpu(opts: &GenerateOptions) -> Vec<f32> {
    match opts.shape {
        Shape::Seed => synth::seed_heights(opts.height, opts.width),
        Shape::Random => heights_from_terms(&surface_terms(opts), opts.height, opts.width),
    }
}

/// Frequencies and phases of the A and B variation fields:
/// `f(x, y) = cos(2π(f0·x + f1))·cos(2π(f2·y + f3))`.
fn ab_fields(seed: u64) -> [[f32; 4]; 2] {
    let mut rng = SplitMix(seed ^ 0xAB0F_1E1D_0000_0002);
    let mut field = || {
        [rng.uniform(0.1, 0.5), rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.5), rng.uniform(0.0, 1.0)].map(|v| v as f32)
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
/// variation this is [`synth::buckets`] without the final rounding to f32.
pub fn model_cpu(opts: &GenerateOptions, heights: &[f32]) -> Vec<f64> {
    let (h, w) = (opts.height, opts.width);
    assert_eq!(heights.len(), h * w, "heights for {h} x {w}");
    let tau = 2.0 * std::f64::consts::PI;
    let fields = ab_fields(opts.seed);
    let (a, b, v) = (opts.a as f64, opts.b as f64, opts.ab_variation as f64);
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
    let mut out = Vec::with_capacity(opts.channels() * h * w);
    for &wl in &opts.wavelengths {
        for k in 0..opts.buckets {
            let delta = tau * k as f64 / opts.buckets as f64;
            for (&z, &(a, b)) in heights.iter().zip(&ab) {
                out.push(a + b * (2.0 * tau * z as f64 / wl as f64 + delta).cos());
            }
        }
    }
    out
}

/// `v` with only its 12 leading significant bits.
fn hi12(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0xFFFF_F000)
}

/// Per laser `[2/λ hi, 2/λ lo]` (hi with 12 significant bits; hi + lo = 2/λ).
fn laser_constants(wavelengths: &[f32]) -> Vec<f32> {
    wavelengths
        .iter()
        .flat_map(|&wl| {
            let c = 2.0 / wl as f64;
            let hi = hi12(c as f32);
            [hi, (c - hi as f64) as f32]
        })
        .collect()
}

/// Per column `[x, 15·exp(−(x−0.2)²/0.2), 5x, 100·(x+0.5)²]`, then per row
/// `[y, exp(−(y+0.3)²/0.2), 2.5y, 100·(y−0.4)²]`, computed in f64: the seed surface is
/// `col[1]·row[1] + (col[2] + row[2]) + sqrt(col[3] + row[3])`.
fn coordinate_tables(h: usize, w: usize) -> Vec<[f32; 4]> {
    let cols = (0..w).map(|c| {
        let x = coord(c, w);
        [x, 15.0 * (-(x - 0.2).powi(2) / 0.2).exp(), 5.0 * x, 100.0 * (x + 0.5).powi(2)]
    });
    let rows = (0..h).map(|r| {
        let y = coord(r, h);
        [y, (-(y + 0.3).powi(2) / 0.2).exp(), 2.5 * y, 100.0 * (y - 0.4).powi(2)]
    });
    cols.chain(rows).map(|v| v.map(|x| x as f32)).collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GenParams {
    w: u32,
    rows: u32,
    row0: u32,
    channels: u32,
    buckets: u32,
    shape: u32,
    terms: u32,
    kind: u32,
    wpc: u32,
    seed_lo: u32,
    seed_hi: u32,
    _pad0: u32,
    a: f32,
    b: f32,
    ab_var: f32,
    sigma: f32,
    fa: [f32; 4],
    fb: [f32; 4],
}

/// Output words per channel band of `rows` rows.
fn words_per_channel(rows: usize, w: usize, ty: HostType) -> usize {
    (rows * w * ty.size()).div_ceil(4)
}

/// The buffers and recorded dispatches of one band in flight.
struct Slot {
    field: wgpu::Buffer,
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
    surface: Dispatch,
    buckets: Dispatch,
}

/// A band submitted and being mapped for reading.
struct Pending {
    slot: usize,
    row0: usize,
    rows: usize,
    submission: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

fn storage(gpu: &Gpu, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4),
        usage,
        mapped_at_creation: false,
    })
}

/// Generate the frame of `opts` on the GPU into the `.npy` file `out` (`(L·N, H, W)` of
/// `opts.dtype`) and, if `truth` is given, its heights `(H, W)` f32 (µm). `on_rows(done, total)`
/// reports progress in rows. Files appear under their names only when complete.
pub fn generate(
    gpu: &Gpu,
    opts: &GenerateOptions,
    out: &Path,
    truth: Option<&Path>,
    mut on_rows: impl FnMut(usize, usize),
) -> Result<GenerateStats> {
    opts.validate()?;
    let start = Instant::now();
    let (h, w, channels, ty) = (opts.height, opts.width, opts.channels(), opts.dtype);

    // Rows per band: as asked, within the band budget (at least one row) and the binding limit.
    let row_bytes = 4 * (channels as u64 * words_per_channel(1, w, ty) as u64 + 1);
    let by_budget = ((BAND_BUDGET / row_bytes) as usize).max(1);
    let by_binding = (gpu.max_binding() / row_bytes).min(gpu.max_binding() / (12 * w as u64)) as usize;
    let band = opts.band_rows.max(1).min(h).min(by_budget).min(by_binding);
    if band == 0 {
        return Err(Error::Shape(format!(
            "one row of {channels} x {w} {} values does not fit this adapter's {} MiB storage-binding limit",
            ty.name(),
            gpu.max_binding() >> 20
        )));
    }
    let wpc = words_per_channel(band, w, ty);
    let out_bytes = (channels * wpc * 4) as u64;
    let plane_bytes = (band * w * 4) as u64;

    // Constant inputs.
    let init = |label: &str, contents: &[u8]| {
        gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let coords = init("synth coords", bytemuck::cast_slice(&coordinate_tables(h, w)));
    let terms = match opts.shape {
        Shape::Seed => Vec::new(),
        Shape::Random => surface_terms(opts),
    };
    let mut term_data: Vec<f32> = terms
        .iter()
        .flat_map(|t| [t.kind as u32 as f32, t.amp, t.center[0], t.center[1], t.p[0], t.p[1], t.p[2], t.p[3]])
        .collect();
    term_data.resize(term_data.len().max(8), 0.0);
    let term_buf = init("synth terms", bytemuck::cast_slice(&term_data));
    let lasers = init("synth lasers", bytemuck::cast_slice(&laser_constants(&opts.wavelengths)));
    let [fa, fb] = ab_fields(opts.seed);
    let params = |row0: usize, rows: usize| GenParams {
        w: w as u32,
        rows: rows as u32,
        row0: row0 as u32,
        channels: channels as u32,
        buckets: opts.buckets as u32,
        shape: match opts.shape {
            Shape::Seed => 0,
            Shape::Random => 1,
        },
        terms: terms.len() as u32,
        kind: match ty {
            HostType::F32 => 0,
            HostType::U8 => 1,
            HostType::U16 => 2,
            HostType::F16 => 3,
        },
        wpc: words_per_channel(rows, w, ty) as u32,
        seed_lo: opts.seed as u32,
        seed_hi: (opts.seed >> 32) as u32,
        _pad0: 0,
        a: opts.a,
        b: opts.b,
        ab_var: opts.ab_variation,
        sigma: opts.noise,
        fa,
        fb,
    };

    // Two slots: the GPU computes one band while the host writes the other.
    let bands = h.div_ceil(band);
    let nslots = bands.min(2);
    let mut slots = Vec::with_capacity(nslots);
    for _ in 0..nslots {
        use wgpu::BufferUsages as U;
        let field = storage(gpu, "synth field", 3 * plane_bytes, U::STORAGE | U::COPY_SRC);
        let out_buf = storage(gpu, "synth out", out_bytes, U::STORAGE | U::COPY_SRC);
        let staging = storage(gpu, "synth staging", out_bytes + plane_bytes, U::MAP_READ | U::COPY_DST);
        let p0 = params(0, band);
        let [sx, sy] = grid_1d(gpu, band * w, WG);
        let surface = Dispatch::new(
            gpu,
            &SURFACE,
            Precision::F32,
            &p0,
            &[(1, &coords), (2, &term_buf), (3, &field)],
            [sx, sy, 1],
        )?;
        let [bx, by] = grid_1d(gpu, channels * wpc, WG);
        let buckets = Dispatch::new(
            gpu,
            &BUCKETS,
            Precision::F32,
            &p0,
            &[(3, &field), (4, &lasers), (5, &out_buf)],
            [bx, by, 1],
        )?;
        slots.push(Slot { field, out: out_buf, staging, surface, buckets });
    }

    let mut writer = NpyWriter::new(out, ty, &[channels, h, w])?;
    let mut truth_writer = truth.map(|p| NpyWriter::new(p, HostType::F32, &[h, w])).transpose()?;
    let mut range = (f32::INFINITY, f32::NEG_INFINITY);
    let itemsize = ty.size();

    let mut finish = |job: Pending, slots: &[Slot]| -> Result<()> {
        gpu.device
            .poll(wgpu::PollType::Wait { submission_index: Some(job.submission), timeout: None })
            .map_err(|e| Error::Gpu(e.to_string()))?;
        job.mapped
            .recv()
            .map_err(|e| Error::Gpu(e.to_string()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let slot = &slots[job.slot];
        let band_wpc = words_per_channel(job.rows, w, ty);
        let plane = job.rows * w;
        {
            let view = slot
                .staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
            for c in 0..channels {
                let src = c * band_wpc * 4;
                let offset = ((c * h + job.row0) * w * itemsize) as u64;
                writer.write_at(offset, &view[src..src + plane * itemsize])?;
            }
            let hb = channels * band_wpc * 4;
            let heights: &[f32] = bytemuck::cast_slice(&view[hb..hb + plane * 4]);
            for &v in heights {
                range = (range.0.min(v), range.1.max(v));
            }
            if let Some(t) = truth_writer.as_mut() {
                t.write(&view[hb..hb + plane * 4])?;
            }
        }
        slot.staging.unmap();
        on_rows(job.row0 + job.rows, h);
        Ok(())
    };

    let mut pending: Option<Pending> = None;
    for b in 0..bands {
        let (row0, rows) = (b * band, band.min(h - b * band));
        let si = b % nslots;
        let slot = &slots[si];
        let p = params(row0, rows);
        slot.surface.update(gpu, &p);
        slot.buckets.update(gpu, &p);
        let band_out = (channels * words_per_channel(rows, w, ty) * 4) as u64;
        let band_plane = (rows * w * 4) as u64;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            slot.surface.record(&mut pass);
            slot.buckets.record(&mut pass);
        }
        enc.copy_buffer_to_buffer(&slot.out, 0, &slot.staging, 0, band_out);
        enc.copy_buffer_to_buffer(&slot.field, 0, &slot.staging, band_out, band_plane);
        let submission = gpu.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        slot.staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let job = Pending { slot: si, row0, rows, submission, mapped: rx };
        if let Some(prev) = pending.replace(job) {
            finish(prev, &slots)?;
        }
    }
    if let Some(last) = pending.take() {
        finish(last, &slots)?;
    }
    writer.finish()?;
    if let Some(t) = truth_writer {
        t.finish()?;
    }
    Ok(GenerateStats {
        shape: [channels, h, w],
        dtype: ty,
        band_rows: band,
        bands,
        bytes: (channels * h * w * itemsize) as u64,
        height_range: range,
        seconds: start.elapsed().as_secs_f64(),
    })
}
