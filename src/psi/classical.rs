//! The classical multi-wavelength PSI height solver (`shaders/classical.wgsl`), no weights needed.
//!
//! Per pixel: the N-step least-squares wrapped phase of each laser,
//! `φ_l = atan2(−Σ_k I_k sin δ_k, Σ_k I_k cos δ_k)`; then the fringe orders resolved jointly by an
//! exhaustive search over the first laser's candidate heights `h_m = λ_1/(4π)·(φ_1 + 2πm)` inside
//! the height range, each scored by `Σ_{l>0} wrap(4π·h_m/λ_l − φ_l)²` (least cost wins, ties go to
//! the first); then every laser's own order at the chosen height and the mean of the heights.
//! Optionally a second output channel holds the fringe contrast `mean_l 2·|S + iC| / Σ_k I_k`
//! (`B/A` for ideal data; scale-invariant).
//!
//! The GPU works in f32 but in fringe units ("turns", 2π = 1) with the large integer parts split
//! off exactly, so heights of ±100 µm keep an error of about one f32 ulp (see the shader's header).
//! [`reference`] is the f64 CPU version the tests compare against.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Shader, grid_1d};
use crate::nn::Plan;
use crate::tensor::Tensor;

pub static SHADER: Shader = Shader { name: "classical", body: include_str!("../../shaders/classical.wgsl") };
pub static CLASSICAL: Kernel = Kernel { shader: &SHADER, entry: "classical" };

/// Most lasers the shader handles (it caches one phase per laser in a fixed-size array).
pub const MAX_LASERS: usize = 16;
/// Most candidate fringe orders of the first laser (bounds the per-pixel search loop).
pub const MAX_CANDIDATES: i64 = 65536;

/// What the classical solver needs to know about the frames.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassicalConfig {
    /// One wavelength per laser, µm, in channel order.
    pub wavelengths: Vec<f32>,
    /// Phase-shift buckets per laser (N); bucket k has δ_k = 2πk/N.
    pub buckets: usize,
    /// Heights searched, µm: (min, max).
    pub height_range: (f32, f32),
    /// Also output the fringe contrast as a second channel.
    pub quality: bool,
}

impl Default for ClassicalConfig {
    fn default() -> Self {
        ClassicalConfig {
            wavelengths: vec![5.0, 5.5, 6.05, 6.655],
            buckets: 4,
            height_range: (-100.0, 100.0),
            quality: false,
        }
    }
}

impl ClassicalConfig {
    pub fn lasers(&self) -> usize {
        self.wavelengths.len()
    }

    /// Input channels: lasers × buckets.
    pub fn in_channels(&self) -> usize {
        self.lasers() * self.buckets
    }

    /// Output channels: height, plus quality if asked for.
    pub fn out_channels(&self) -> usize {
        if self.quality { 2 } else { 1 }
    }

    /// The height range in turns of the first laser, `2·h/λ_1`.
    fn turn_range(&self) -> (f64, f64) {
        let l1 = self.wavelengths[0] as f64;
        (2.0 * self.height_range.0 as f64 / l1, 2.0 * self.height_range.1 as f64 / l1)
    }

    /// Every fringe order m of the first laser whose candidate `h_m` can fall inside the height
    /// range for some wrapped phase in [−π, π] (valid configurations only).
    pub fn fringe_orders(&self) -> (i64, i64) {
        let (u0, u1) = self.turn_range();
        ((u0 - 0.5).ceil() as i64, (u1 + 0.5).floor() as i64)
    }

    pub fn validate(&self) -> Result<()> {
        let l = self.lasers();
        if l == 0 {
            return Err(Error::Invalid("the classical solver needs at least one wavelength; got none".into()));
        }
        if l > MAX_LASERS {
            return Err(Error::Invalid(format!(
                "the classical solver handles at most {MAX_LASERS} lasers (wavelengths); got {l}"
            )));
        }
        if self.buckets < 3 {
            return Err(Error::Invalid(format!(
                "phase-shifting needs at least 3 buckets per laser to separate offset, amplitude and phase; got {}",
                self.buckets
            )));
        }
        for (i, &w) in self.wavelengths.iter().enumerate() {
            if !(w.is_finite() && w > 0.0) {
                return Err(Error::Invalid(format!(
                    "wavelength {} is {w} µm; wavelengths must be positive and finite",
                    i + 1
                )));
            }
        }
        let (h0, h1) = self.height_range;
        if !(h0.is_finite() && h1.is_finite() && h0 < h1) {
            return Err(Error::Invalid(format!(
                "height range {h0}..{h1} µm is empty or not finite; the minimum must be below the maximum"
            )));
        }
        let (m0, m1) = self.fringe_orders();
        if m1 - m0 + 1 > MAX_CANDIDATES {
            return Err(Error::Invalid(format!(
                "height range {h0}..{h1} µm spans {} fringes of the first laser ({} µm), over the {MAX_CANDIDATES} \
                 the search allows; narrow the range",
                m1 - m0 + 1,
                self.wavelengths[0]
            )));
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClassicalParams {
    lasers: u32,
    buckets: u32,
    h: u32,
    w: u32,
    out_c: u32,
    m_min: i32,
    m_max: i32,
    _pad0: u32,
    u_min: f32,
    u_max: f32,
    _pad1: u32,
    _pad2: u32,
}

/// `v` with only its 12 leading significant bits: `hi(v) * m` is exact in f32 for |m| < 4096.
fn hi12(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0xFFFF_F000)
}

/// The shader's constant table: per laser `[λ/2 hi, λ/2 lo, r hi, r lo]` with `r = λ_1/λ_l`
/// (hi + lo = the value), then `[cos δ_k, sin δ_k]` per bucket (computed in f64).
fn constants(config: &ClassicalConfig) -> Vec<f32> {
    let l1 = config.wavelengths[0] as f64;
    let mut c = Vec::with_capacity(4 * config.lasers() + 2 * config.buckets);
    for &wl in &config.wavelengths {
        let half = wl / 2.0; // exact
        let r = l1 / wl as f64;
        let r_hi = hi12(r as f32);
        c.extend([hi12(half), half - hi12(half), r_hi, (r - r_hi as f64) as f32]);
    }
    for k in 0..config.buckets {
        let d = 2.0 * std::f64::consts::PI * k as f64 / config.buckets as f64;
        c.extend([d.cos() as f32, d.sin() as f32]);
    }
    c
}

/// The classical solver on the GPU: its configuration and constant table.
pub struct Classical {
    pub config: ClassicalConfig,
    consts: wgpu::Buffer,
}

impl Classical {
    pub fn new(gpu: &Gpu, config: ClassicalConfig) -> Result<Classical> {
        config.validate()?;
        let consts = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("classical constants"),
            contents: bytemuck::cast_slice(&constants(&config)),
            usage: wgpu::BufferUsages::STORAGE,
        });
        Ok(Classical { config, consts })
    }

    /// Lasers × buckets.
    pub fn in_channels(&self) -> usize {
        self.config.in_channels()
    }

    /// 1 (height) or 2 (height, quality).
    pub fn out_channels(&self) -> usize {
        self.config.out_channels()
    }

    /// Allocate an f32 input `[n, L·N, h, w]` and output `[n, out_c, h, w]` and record the solver's
    /// one dispatch. Always f32: heights of ±100 µm need its 24 bits.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::Shape(format!("classical solver on an empty batch: {n} images of {h} x {w}")));
        }
        let c = &self.config;
        let input = Tensor::new(gpu, [n, self.in_channels(), h, w], Precision::F32, "classical input")?;
        let output = Tensor::new(gpu, [n, self.out_channels(), h, w], Precision::F32, "classical output")?;
        let (m_min, m_max) = c.fringe_orders();
        let (u_min, u_max) = c.turn_range();
        let params = ClassicalParams {
            lasers: c.lasers() as u32,
            buckets: c.buckets as u32,
            h: h as u32,
            w: w as u32,
            out_c: self.out_channels() as u32,
            m_min: m_min as i32,
            m_max: m_max as i32,
            _pad0: 0,
            u_min: u_min as f32,
            u_max: u_max as f32,
            _pad1: 0,
            _pad2: 0,
        };
        let [gx, gy] = grid_1d(gpu, h * w, 256);
        let buffers = [(1, &input.buffer), (2, &self.consts), (3, &output.buffer)];
        let d = Dispatch::new(gpu, &CLASSICAL, Precision::F32, &params, &buffers, [gx, gy, n as u32])?;
        let bytes = input.buffer.size() + output.buffer.size();
        Ok(Plan { input, output, dispatches: vec![d], buffers: Vec::new(), bytes })
    }

    /// Plan, upload `frame` (`[n, L·N, h, w]`), run and read back `[n, out_c, h, w]`. For tests and
    /// small frames; big frames go through a reused [`Plan`].
    pub fn solve(&self, gpu: &Gpu, frame: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let want = n * self.in_channels() * h * w;
        if frame.len() != want {
            return Err(Error::Shape(format!(
                "{} values for a classical frame of {n} x {} x {h} x {w} ({want} values)",
                frame.len(),
                self.in_channels()
            )));
        }
        let plan = self.plan(gpu, n, h, w)?;
        plan.input.upload(gpu, frame);
        gpu.run(&plan.dispatches.iter().collect::<Vec<_>>())?;
        plan.output.to_f32(gpu)
    }
}

/// The CPU solver's result for one pixel, with what a test needs to tell an ambiguous pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelFit {
    /// µm.
    pub height: f64,
    /// Mean fringe contrast over the lasers.
    pub quality: f64,
    /// Least search cost, turns² (radians² / 4π²).
    pub cost: f64,
    /// Second-least cost among the candidates of the winner's kind (inside or outside the
    /// range); infinite when there is none.
    pub runner_up: f64,
    /// Largest |t_l − round(t_l)| of the refine step (turns): near 0.5 the order is ambiguous.
    pub max_residual: f64,
}

/// Solve one pixel in f64 from its `L·N` intensities (channel `laser * N + bucket`).
pub fn fit_pixel(intensities: &[f64], config: &ClassicalConfig) -> PixelFit {
    let (nl, nb) = (config.lasers(), config.buckets);
    assert_eq!(intensities.len(), nl * nb, "intensities per pixel");
    let tau = 2.0 * std::f64::consts::PI;
    let mut turns = vec![0f64; nl];
    let mut quality = 0.0;
    for l in 0..nl {
        let (mut s, mut c, mut sum) = (0.0, 0.0, 0.0);
        for k in 0..nb {
            let d = tau * k as f64 / nb as f64;
            let v = intensities[l * nb + k];
            s += v * d.sin();
            c += v * d.cos();
            sum += v;
        }
        turns[l] = (-s).atan2(c) / tau;
        if sum != 0.0 {
            quality += 2.0 * (s * s + c * c).sqrt() / sum;
        }
    }
    quality /= nl as f64;
    let wl: Vec<f64> = config.wavelengths.iter().map(|&v| v as f64).collect();
    // t_l - round(t_l) and round(t_l) for t_l = 2 h / λ_l - f_l at the candidate u = m + f_1.
    let residual = |l: usize, u: f64| {
        let t = u * wl[0] / wl[l] - turns[l];
        (t - t.round(), t.round())
    };
    let (u_min, u_max) = config.turn_range();
    let (m_min, m_max) = config.fringe_orders();
    let candidates: Vec<(i64, bool, f64)> = (m_min..=m_max)
        .map(|m| {
            let u = m as f64 + turns[0];
            let cost = (1..nl).map(|l| residual(l, u).0.powi(2)).sum();
            (m, u < u_min || u > u_max, cost)
        })
        .collect();
    let mut best = 0;
    for (i, c) in candidates.iter().enumerate() {
        let b = candidates[best];
        if (b.1 && !c.1) || (c.1 == b.1 && c.2 < b.2) {
            best = i;
        }
    }
    let (m, outside, cost) = candidates[best];
    let runner_up = candidates
        .iter()
        .enumerate()
        .filter(|(i, c)| *i != best && c.1 == outside)
        .map(|(_, c)| c.2)
        .fold(f64::INFINITY, f64::min);
    let u = m as f64 + turns[0];
    let mut height = wl[0] / 2.0 * u;
    let mut max_residual: f64 = 0.0;
    for l in 1..nl {
        let (d, order) = residual(l, u);
        max_residual = max_residual.max(d.abs());
        height += wl[l] / 2.0 * (order + turns[l]);
    }
    PixelFit { height: height / nl as f64, quality, cost, runner_up, max_residual }
}

/// The classical solver on the CPU in f64 for one image `frame` of `[L·N, h, w]` (`l_n` = (L, N),
/// matching `config`): output `[out_c, h, w]` (height, then quality if `config.quality`).
pub fn reference(frame: &[f32], l_n: (usize, usize), h: usize, w: usize, config: &ClassicalConfig) -> Vec<f32> {
    assert_eq!(l_n, (config.lasers(), config.buckets), "(lasers, buckets) vs the configuration");
    let (c, hw) = (l_n.0 * l_n.1, h * w);
    assert_eq!(frame.len(), c * hw, "frame size");
    let mut out = vec![0f32; config.out_channels() * hw];
    let mut px = vec![0f64; c];
    for i in 0..hw {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = frame[ch * hw + i] as f64;
        }
        let fit = fit_pixel(&px, config);
        out[i] = fit.height as f32;
        if config.quality {
            out[hw + i] = fit.quality as f32;
        }
    }
    out
}
