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
//! [`classical`] records the one dispatch; the model around it is `nn::classical`.
//! [`reference`](mod@reference) is the f64 CPU version the tests compare against.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Shader, Tensor, grid_1d};
use crate::psi::PsiConfig;
use crate::psi::phase::split12;

pub static SHADER: Shader = wgsl!("classical": "lib/grid.wgsl", "classical.wgsl");

/// Most lasers the shader handles (it caches one phase per laser in a fixed-size array).
pub const MAX_LASERS: usize = 16;
/// Most candidate fringe orders of the first laser (bounds the per-pixel search loop).
pub const MAX_CANDIDATES: i64 = 65536;

/// What the classical solver needs to know about the frames.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassicalConfig {
    /// Lasers (wavelengths, µm, in channel order) and phase-shift buckets per laser.
    pub psi: PsiConfig,
    /// Heights searched, µm: (min, max).
    pub height_range: (f32, f32),
    /// Also output the fringe contrast as a second channel.
    pub quality: bool,
}

impl Default for ClassicalConfig {
    fn default() -> Self {
        ClassicalConfig { psi: PsiConfig::default(), height_range: (-100.0, 100.0), quality: false }
    }
}

impl ClassicalConfig {
    pub fn lasers(&self) -> usize {
        self.psi.lasers()
    }

    /// Input channels: lasers × buckets.
    pub fn in_channels(&self) -> usize {
        self.psi.channels()
    }

    /// Output channels: height, plus quality if asked for.
    pub fn out_channels(&self) -> usize {
        if self.quality { 2 } else { 1 }
    }

    /// The height range in turns of the first laser, `2·h/λ_1`.
    fn turn_range(&self) -> (f64, f64) {
        let l1 = self.psi.wavelengths[0] as f64;
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
        if self.psi.buckets < 3 {
            return Err(Error::Invalid(format!(
                "phase-shifting needs at least 3 buckets per laser to separate offset, amplitude and phase; got {}",
                self.psi.buckets
            )));
        }
        self.psi.validate_wavelengths("the classical solver")?;
        self.psi.validate_distinct_wavelengths()?;
        self.psi.require_nominal_steps("the classical solver")?;
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
                self.psi.wavelengths[0]
            )));
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ClassicalParams {
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

/// The shader's constant table: per laser `[λ/2 hi, λ/2 lo, r hi, r lo]` with `r = λ_1/λ_l`
/// (hi + lo = the value), then `[cos δ_k, sin δ_k]` per bucket (computed in f64).
pub fn constants(config: &ClassicalConfig) -> Vec<f32> {
    let psi = &config.psi;
    let l1 = psi.wavelengths[0] as f64;
    let mut c = Vec::with_capacity(4 * psi.lasers() + 2 * psi.buckets);
    for &wl in &psi.wavelengths {
        c.extend(split12((wl / 2.0) as f64)); // λ/2 is exact in f32
        c.extend(split12(l1 / wl as f64));
    }
    for k in 0..psi.buckets {
        let d = psi.phase_step(0, k);
        c.extend([d.cos() as f32, d.sin() as f32]);
    }
    c
}

/// The solver's one dispatch over a batch: `input` `[n, L·N, h, w]` f32 → `output`
/// `[n, out_c, h, w]` f32 (height, then quality if `config.quality`), with `consts` the
/// [`constants`] of `config` in a storage buffer.
pub fn classical(
    gpu: &Gpu,
    config: &ClassicalConfig,
    consts: &wgpu::Buffer,
    input: &Tensor,
    output: &Tensor,
) -> Result<Dispatch> {
    let [n, c, h, w] = input.shape;
    let want = [n, config.out_channels(), h, w];
    if c != config.in_channels() || output.shape != want {
        return Err(Error::Shape(format!(
            "classical solver of {} channels: input {:?} and output {:?} (expected {want:?})",
            config.in_channels(),
            input.shape,
            output.shape
        )));
    }
    let (m_min, m_max) = config.fringe_orders();
    let (u_min, u_max) = config.turn_range();
    let params = ClassicalParams {
        lasers: config.lasers() as u32,
        buckets: config.psi.buckets as u32,
        h: h as u32,
        w: w as u32,
        out_c: config.out_channels() as u32,
        m_min: m_min as i32,
        m_max: m_max as i32,
        _pad0: 0,
        u_min: u_min as f32,
        u_max: u_max as f32,
        _pad1: 0,
        _pad2: 0,
    };
    let [gx, gy] = grid_1d(gpu, h * w, 256);
    let buffers = [(1, &input.buffer), (2, consts), (3, &output.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("classical"), Precision::F32, &params, &buffers, [gx, gy, n as u32])
}

/// The solver on the CPU in f64 (conventions in [`crate::ops`]).
pub mod reference {
    use super::ClassicalConfig;
    use crate::psi::phase;

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
        let (nl, nb) = (config.lasers(), config.psi.buckets);
        assert_eq!(intensities.len(), nl * nb, "intensities per pixel");
        let tau = 2.0 * std::f64::consts::PI;
        let mut turns = vec![0f64; nl];
        let mut quality = 0.0;
        for l in 0..nl {
            let (s, c, sum) = phase::sums(intensities[l * nb..(l + 1) * nb].iter().copied());
            turns[l] = (-s).atan2(c) / tau;
            if sum != 0.0 {
                quality += 2.0 * (s * s + c * c).sqrt() / sum;
            }
        }
        quality /= nl as f64;
        let wl: Vec<f64> = config.psi.wavelengths.iter().map(|&v| v as f64).collect();
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

    /// The classical solver on the CPU for `frame` `[n, L·N, h, w]`: output `[n, out_c, h, w]`
    /// (height, then quality if `config.quality`).
    pub fn classical(frame: &[f64], [n, c, h, w]: [usize; 4], config: &ClassicalConfig) -> Vec<f64> {
        let (oc, hw) = (config.out_channels(), h * w);
        assert_eq!((c, frame.len()), (config.in_channels(), n * c * hw), "frame size");
        let mut out = vec![0f64; n * oc * hw];
        for (img, o) in (0..n).zip(out.chunks_exact_mut(oc * hw)) {
            for i in 0..hw {
                let px: Vec<f64> = (0..c).map(|ch| frame[(img * c + ch) * hw + i]).collect();
                let fit = fit_pixel(&px, config);
                o[i] = fit.height;
                if config.quality {
                    o[hw + i] = fit.quality;
                }
            }
        }
        out
    }
}
