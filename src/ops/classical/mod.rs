//! The classical multi-wavelength PSI height solver (`shaders/classical.wgsl`), no weights needed.
//!
//! Per pixel and laser: the wrapped phase `φ_l` from the buckets — the N-step sums
//! `φ_l = atan2(−Σ_k I_k sin δ_k, Σ_k I_k cos δ_k)` for nominal steps with no bucket left out, else
//! the generalised least-squares fit of `(A, B·cos φ, B·sin φ)` over the buckets kept, at the
//! laser's own (calibrated) steps ([`crate::psi::phase::fit_steps`]). A bucket at a clip level
//! ([`Levels`]) is left out when the fit of all the laser's buckets predicts it beyond that level
//! too — truly saturated (or dark); one that noise alone pushed there stays in, since the
//! clipped reading is still nearer the truth than none (on u8 frames at σ = 30 counts with
//! A + B = 228, leaving every clipped bucket out raised the wrong orders from 17 % to 22 %). A
//! laser is *dropped* for the pixel when fewer than 3 buckets are kept or its modulation B is 0
//! or under the floor; the pixel is NaN when an input is not finite or the lasers left cannot
//! decide (see [`Reason`](crate::psi::reason::Reason), [`DECISIVE`]).
//!
//! Then the fringe orders, searched exhaustively over one laser's (the *anchor*'s) candidate
//! heights `h_m = λ_a/2·(m + f_a)` (`f` = phase in turns), two ways ([`Unwrap`]):
//! - `per-pixel` (the first solver; `--unwrap per-pixel`): anchor = the first laser left; candidates over
//!   the height range plus about one fringe of margin (those outside win only when none inside
//!   does); cost `Σ_{l≠a} (t_l − round t_l)²` with `t_l = 2h_m/λ_l − f_l` (turns²); height = the
//!   mean of the lasers' heights at their own orders `round t_l`.
//! - `weighted` (the comimag Fringes decoder's likelihood): anchor = the laser of most weight
//!   `w_l = n_l·B_l²/λ_l²` (`n_l` buckets used: the inverse variance of its height, up to the
//!   noise variance); candidates exactly inside the range; each laser's height `h_l` at its own
//!   order; cost = `Σ_l w_l (h_l − h̄)²` around the inverse-variance mean `h̄` (µm²·counts²:
//!   `8π²·cost/σ²` is a χ² of L − 1 degrees of freedom for camera noise σ); height = `h̄`.
//! - `robust` (the default): the weighted likelihood, then a spatial prior over a few passes that moves a
//!   pixel to the candidate nearest its neighbours' median height unless its own best beats
//!   that candidate by more than a χ² margin; NaN where neither decides ([`robust`](mod@robust)
//!   states the rule; [`robust_passes`] records its dispatches).
//!
//! The per-pixel and weighted searches skip the candidates a one-laser bound shows cannot win
//! ([`prune`](mod@prune)): the same decisions as scoring every candidate
//! ([`Search::Exhaustive`]), with about a third of the candidates scored.
//!
//! The GPU works in f32 but in fringe units ("turns", 2π = 1) with the large integer parts split
//! off exactly, so heights of ±100 µm keep an error of about one f32 ulp (see the shader's header).
//! [`classical`] records the one dispatch of per-pixel and weighted; the model around it is
//! `nn::classical`.
//! [`reference`](mod@reference) is the f64 CPU version the tests compare against.

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Shader, Tensor, grid_1d};
use crate::psi::phase::{fit_steps, split12};
use crate::psi::{PhaseSteps, PsiConfig};

use wgpu::util::DeviceExt;

pub mod prune;
pub mod reference;
pub mod robust;

pub use prune::Search;

pub static SHADER: Shader = wgsl!("classical": "lib/grid.wgsl", "classical.wgsl", "classical_robust.wgsl");

/// Most lasers the shader handles (it caches one phase per laser in a fixed-size array).
pub const MAX_LASERS: usize = 16;
/// Most candidate fringe orders of one laser (bounds the per-pixel search loop).
pub const MAX_CANDIDATES: i64 = 65536;
/// Least noiseless cost (turns², anchor excluded) of a wrong candidate for lasers to *decide* a
/// range: lasers whose fringes nearly coincide at two heights of the range (a wrong candidate
/// costing less, e.g. one laser alone over more than one fringe, or 5 and 5.5 µm, which agree
/// every 27.5 µm) cannot tell them apart once the phases carry a few degrees of noise.
pub const DECISIVE: f64 = 1e-3;
/// f32 values per laser in the constant table (see [`constants`]).
pub const LASER_STRIDE: usize = 8;

/// How the fringe orders are decided (`--unwrap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unwrap {
    /// Residuals against the first laser, over the range plus a fringe of margin (the first
    /// solver: one dispatch, no neighbourhood).
    PerPixel,
    /// Noise-weighted spread of all lasers' heights, exactly over the range.
    Weighted,
    /// The weighted likelihood, plus a spatial prior where a pixel's own cost does not decide
    /// its order ([`robust`](mod@robust)); the default: on noisy frames the per-pixel decisions
    /// flip orders pixel by pixel, silently.
    #[default]
    Robust,
}

impl Unwrap {
    pub fn name(self) -> &'static str {
        match self {
            Unwrap::PerPixel => "per-pixel",
            Unwrap::Weighted => "weighted",
            Unwrap::Robust => "robust",
        }
    }
}

/// `--min-modulation`: the least B a laser needs, in counts of the raw frame (`3`) or as a
/// fraction of its offset A (`0.05A`: B ≥ 0.05·A).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinModulation {
    Counts(f32),
    OfOffset(f32),
}

/// Which buckets and lasers the solver trusts, in the solver's input units (raw × input scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    /// A laser with B below this is dropped (0: off).
    pub min_b: f32,
    /// ... or with B below this times A (0: off).
    pub min_contrast: f32,
    /// A bucket at or below this is clipped (dark); `-f32::MAX`: none.
    pub clip_lo: f32,
    /// A bucket at or above this is clipped (saturated); `f32::MAX`: none.
    pub clip_hi: f32,
}

impl Default for Levels {
    /// Nothing dropped: no modulation floor, no clip levels.
    fn default() -> Self {
        Levels { min_b: 0.0, min_contrast: 0.0, clip_lo: -f32::MAX, clip_hi: f32::MAX }
    }
}

/// The modulation floor of integer frames unless told: below 3 counts, even a quiet camera's
/// 2 counts of noise put the 4-step phase noise `√(2/N)·σ/B` near π/6, where orders flip.
pub const DEFAULT_MIN_COUNTS: f32 = 3.0;

impl Levels {
    /// The levels of a frame of raw type `ty` that reaches the solver multiplied by `scale`:
    /// `min_modulation` (default [`DEFAULT_MIN_COUNTS`] for u8/u16, none for floats, whose unit is
    /// unknown); buckets at 0 or at `saturation` and above (default: the type's maximum for
    /// u8/u16, none for floats) are clipped.
    pub fn for_input(
        ty: HostType,
        scale: f32,
        min_modulation: Option<MinModulation>,
        saturation: Option<f32>,
    ) -> Result<Levels> {
        let max = match ty {
            HostType::U8 => Some(255.0),
            HostType::U16 => Some(65535.0),
            HostType::F16 | HostType::F32 => None,
        };
        let mut levels = Levels::default();
        match min_modulation.or(max.map(|_| MinModulation::Counts(DEFAULT_MIN_COUNTS))) {
            Some(MinModulation::Counts(b)) => levels.min_b = b * scale,
            Some(MinModulation::OfOffset(f)) => levels.min_contrast = f,
            None => {}
        }
        if let Some(s) = saturation
            && !(s.is_finite() && s > 0.0 && max.is_none_or(|m| s <= m))
        {
            return Err(Error::Invalid(format!(
                "--saturation {s}: expected a positive level{}",
                max.map(|m| format!(" up to the {} maximum {m}", ty.name())).unwrap_or_default()
            )));
        }
        match max {
            // Integers: clipped at 0 and at the level; half a count of slack against rounding.
            Some(m) => {
                levels.clip_lo = 0.5 * scale;
                levels.clip_hi = (saturation.unwrap_or(m).ceil() - 0.5) * scale;
            }
            None => levels.clip_hi = saturation.map_or(f32::MAX, |s| s * scale),
        }
        levels.validate()?;
        Ok(levels)
    }

    pub fn validate(&self) -> Result<()> {
        let Levels { min_b, min_contrast, clip_lo, clip_hi } = *self;
        if !(min_b.is_finite() && min_b >= 0.0 && min_contrast.is_finite() && min_contrast >= 0.0) {
            return Err(Error::Invalid(format!(
                "minimum modulation {min_b} (B) / {min_contrast} (B/A) must be finite and not negative"
            )));
        }
        if clip_lo.partial_cmp(&clip_hi) != Some(std::cmp::Ordering::Less) {
            return Err(Error::Invalid(format!("clip levels {clip_lo}..{clip_hi} are empty or not numbers")));
        }
        Ok(())
    }
}

/// What the classical solver needs to know about the frames.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassicalConfig {
    /// Lasers (wavelengths, µm, in channel order), buckets per laser and their phase steps.
    pub psi: PsiConfig,
    /// Heights searched, µm: (min, max).
    pub height_range: (f32, f32),
    /// Also output the fringe contrast as a channel.
    pub quality: bool,
    /// How fringe orders are decided.
    pub unwrap: Unwrap,
    /// Which buckets and lasers are trusted.
    pub levels: Levels,
    /// Also output the [`Reason`](crate::psi::reason::Reason) code of each pixel (as f32) as the last channel.
    pub reason: bool,
    /// Skip the candidates that cannot win ([`prune`](mod@prune)) or score every one.
    pub search: Search,
}

impl Default for ClassicalConfig {
    fn default() -> Self {
        ClassicalConfig {
            psi: PsiConfig::default(),
            height_range: (-100.0, 100.0),
            quality: false,
            unwrap: Unwrap::default(),
            levels: Levels::default(),
            reason: false,
            search: Search::Pruned,
        }
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

    /// Output channels: height, then quality and reason if asked for.
    pub fn out_channels(&self) -> usize {
        1 + self.quality as usize + self.reason as usize
    }

    /// The height range in turns of laser `l`, `2·h/λ_l`.
    fn turn_range(&self, l: usize) -> (f64, f64) {
        let wl = self.psi.wavelengths[l] as f64;
        (2.0 * self.height_range.0 as f64 / wl, 2.0 * self.height_range.1 as f64 / wl)
    }

    /// Every fringe order m of laser `l` whose candidate `h_m` can fall inside the height range
    /// for some wrapped phase in [−π, π] (the per-pixel search's candidates; valid configurations).
    pub fn laser_orders(&self, l: usize) -> (i64, i64) {
        let (u0, u1) = self.turn_range(l);
        ((u0 - 0.5).ceil() as i64, (u1 + 0.5).floor() as i64)
    }

    /// [`Self::laser_orders`] of the first laser.
    pub fn fringe_orders(&self) -> (i64, i64) {
        self.laser_orders(0)
    }

    /// Whole fringes of laser `l` the height range spans: the shifts `j·λ_l/2` that keep two
    /// candidates inside it, `1..=shifts`.
    fn shifts(&self, l: usize) -> i64 {
        let (h0, h1) = self.height_range;
        (2.0 * (h1 as f64 - h0 as f64) / self.psi.wavelengths[l] as f64).floor() as i64
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
        self.validate_steps()?;
        self.levels.validate()?;
        let (h0, h1) = self.height_range;
        if !(h0.is_finite() && h1.is_finite() && h0 < h1) {
            return Err(Error::Invalid(format!(
                "height range {h0}..{h1} µm is empty or not finite; the minimum must be below the maximum"
            )));
        }
        for (i, &wl) in self.psi.wavelengths.iter().enumerate() {
            let (m0, m1) = self.laser_orders(i);
            if m1 - m0 + 1 > MAX_CANDIDATES {
                return Err(Error::Invalid(format!(
                    "height range {h0}..{h1} µm spans {} fringes of laser {} ({wl} µm), over the {MAX_CANDIDATES} \
                     the search allows; narrow the range",
                    m1 - m0 + 1,
                    i + 1
                )));
            }
        }
        self.validate_decisive()
    }

    /// Each laser's steps separate A, B·cos φ and B·sin φ when every bucket is usable.
    fn validate_steps(&self) -> Result<()> {
        self.psi.validate_phase_steps()?;
        let nb = self.psi.buckets;
        for l in 0..self.lasers() {
            let steps: Vec<f64> = (0..nb).map(|k| self.psi.phase_step(l, k)).collect();
            if fit_steps(&vec![0.0; nb], &steps, |_| true).is_none() {
                let deg: Vec<String> = steps.iter().map(|d| format!("{:.1}", d.to_degrees())).collect();
                return Err(Error::Invalid(format!(
                    "the phase steps of laser {} ({} degrees) cannot separate offset, amplitude and phase; \
                     they need three distinct angles, well spread",
                    l + 1,
                    deg.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// All lasers together decide the height range from any anchor (else every pixel would be
    /// unresolved).
    fn validate_decisive(&self) -> Result<()> {
        let all = (1u32 << self.lasers()) - 1;
        for a in 0..self.lasers() {
            if let Some(shift) = reference::ambiguity(self, a, all) {
                let (h0, h1) = self.height_range;
                return Err(Error::Invalid(format!(
                    "the lasers' fringes ({:?} µm) nearly coincide at heights {shift} µm apart, inside the height \
                     range {h0}..{h1} µm, so the fringe orders are undecidable; narrow --height-range below \
                     {shift} µm or add a laser",
                    self.psi.wavelengths
                )));
            }
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
    flags: u32,
    _pad0: u32,
    /// Robust passes: the threshold's factor over the median best cost ([`robust`](mod@robust)).
    decisive: f32,
    min_b: f32,
    min_contrast: f32,
    clip_lo: f32,
    clip_hi: f32,
    /// The robust noise floor: `median(χ²_k)/k` of the variance estimate, and the modulation test's
    /// normal quantiles ([`robust::noise_median`], [`robust::NOISE_Z`], [`robust::NOISE_Z_ALONE`]).
    noise_median: f32,
    noise_z: f32,
    noise_z_alone: f32,
    _pad1: u32,
}

/// Bits of `ClassicalParams::flags`.
const WEIGHTED: u32 = 1;
const NOMINAL: u32 = 2;
const QUALITY: u32 = 4;
const REASON: u32 = 8;
/// The robust solver's first prior pass (finds each pixel's threshold and keeps it in the state).
const FIRST_PASS: u32 = 16;
/// Score every candidate ([`Search::Exhaustive`]).
const EXHAUSTIVE: u32 = 32;

/// The shader's constant table (computed in f64): per laser `l` ([`LASER_STRIDE`] values)
/// `[λ/2 hi, λ/2 lo, u_min, u_max, m_min, m_max, 1/λ², shifts]` — hi + lo = the value, `u` the
/// height range in its turns, `m` its per-pixel candidate orders, `shifts` the whole fringes the
/// range spans; then `[r hi, r lo]` of `r = λ_a/λ_l` for every pair (a, l), row a; then
/// `[cos δ, sin δ]` per laser and bucket.
pub fn constants(config: &ClassicalConfig) -> Vec<f32> {
    let psi = &config.psi;
    let nl = psi.lasers();
    let wl: Vec<f64> = psi.wavelengths.iter().map(|&v| v as f64).collect();
    let mut c = Vec::with_capacity(LASER_STRIDE * nl + 2 * nl * nl + 2 * psi.channels());
    for (l, &w) in wl.iter().enumerate() {
        let (u0, u1) = config.turn_range(l);
        let (m0, m1) = config.laser_orders(l);
        c.extend(split12(w / 2.0)); // λ/2 is exact in f32
        c.extend([u0 as f32, u1 as f32, m0 as f32, m1 as f32, (1.0 / (w * w)) as f32, config.shifts(l) as f32]);
    }
    for a in &wl {
        for b in &wl {
            c.extend(split12(a / b));
        }
    }
    for l in 0..nl {
        for k in 0..psi.buckets {
            let d = psi.phase_step(l, k);
            c.extend([d.cos() as f32, d.sin() as f32]);
        }
    }
    c
}

/// The solver's one dispatch over a batch: `input` `[n, L·N, h, w]` f32 → `output`
/// `[n, out_c, h, w]` f32 (height, then quality if `config.quality`, then the reason code if
/// `config.reason`), with `consts` the [`constants`] of `config` in a storage buffer.
pub fn classical(
    gpu: &Gpu,
    config: &ClassicalConfig,
    consts: &wgpu::Buffer,
    input: &Tensor,
    output: &Tensor,
) -> Result<Dispatch> {
    let [n, c, h, w] = input.shape;
    let want = [n, config.out_channels(), h, w];
    if config.unwrap == Unwrap::Robust {
        return Err(Error::Invalid("the robust solver is several dispatches: use robust_passes".into()));
    }
    if c != config.in_channels() || output.shape != want {
        return Err(Error::Shape(format!(
            "classical solver of {} channels: input {:?} and output {:?} (expected {want:?})",
            config.in_channels(),
            input.shape,
            output.shape
        )));
    }
    let params = params(config, h, w);
    let [gx, gy] = grid_1d(gpu, h * w, 256);
    let buffers = [(1, &input.buffer), (2, consts), (3, &output.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("classical"), Precision::F32, &params, &buffers, [gx, gy, n as u32])
}

/// The parameter block of a batch of `h` x `w` images.
fn params(config: &ClassicalConfig, h: usize, w: usize) -> ClassicalParams {
    let bit = |on: bool, flag: u32| if on { flag } else { 0 };
    let flags = bit(config.unwrap != Unwrap::PerPixel, WEIGHTED)
        | bit(config.psi.phase_steps == PhaseSteps::Nominal, NOMINAL)
        | bit(config.quality, QUALITY)
        | bit(config.reason, REASON)
        | bit(config.search == Search::Exhaustive, EXHAUSTIVE);
    let lv = &config.levels;
    ClassicalParams {
        lasers: config.lasers() as u32,
        buckets: config.psi.buckets as u32,
        h: h as u32,
        w: w as u32,
        out_c: config.out_channels() as u32,
        flags,
        _pad0: 0,
        decisive: robust::decisive_factor(config, robust::DECISIVE_CHI2) as f32,
        min_b: lv.min_b,
        min_contrast: lv.min_contrast,
        clip_lo: lv.clip_lo,
        clip_hi: lv.clip_hi,
        noise_median: robust::noise_median(config) as f32,
        noise_z: robust::NOISE_Z as f32,
        noise_z_alone: robust::NOISE_Z_ALONE as f32,
        _pad1: 0,
    }
}

/// f32 values per pixel of the robust solver's state (see `shaders/classical_robust.wgsl`).
pub fn state_stride(config: &ClassicalConfig) -> usize {
    2 * config.lasers() + 9
}

/// The robust solver's dispatches over a batch (`config.unwrap` = [`Unwrap::Robust`]): solve the
/// `input` pixels into `state` (`[n, state_stride, h, w]`) and `planes[0]` (`[n, 1, h, w]`), drop
/// the pixels whose modulation the noise explains, then [`robust::PASSES`] prior passes
/// ping-ponging between `planes[0]` and `planes[1]` (each after the first only if the one before
/// changed a pixel: an indirect dispatch whose workgroups a one-invocation gate sets), then write
/// `output` from the last plane as [`classical`] does.
pub fn robust_passes(
    gpu: &Gpu,
    config: &ClassicalConfig,
    consts: &wgpu::Buffer,
    input: &Tensor,
    output: &Tensor,
    state: &Tensor,
    planes: [&Tensor; 2],
) -> Result<Vec<Dispatch>> {
    let [n, c, h, w] = input.shape;
    let want = [n, config.out_channels(), h, w];
    let shapes = [state_stride(config), 1, 1];
    let ok = [state, planes[0], planes[1]].iter().zip(shapes).all(|(t, s)| t.shape == [n, s, h, w]);
    if config.unwrap != Unwrap::Robust || c != config.in_channels() || output.shape != want || !ok {
        return Err(Error::Shape(format!(
            "robust classical solver of {} channels: input {:?}, output {:?} (expected {want:?}), state {:?}, planes \
             {:?} and {:?}",
            config.in_channels(),
            input.shape,
            output.shape,
            state.shape,
            planes[0].shape,
            planes[1].shape
        )));
    }
    let params = params(config, h, w);
    let groups = {
        let [gx, gy] = grid_1d(gpu, h * w, 256);
        [gx, gy, n as u32]
    };
    let kernel = |name| SHADER.kernel(name);
    // The gate: the pixels a prior pass changed, and [the next pass's workgroups, the full grid's].
    let buffer = |label, contents: &[u32], usage| {
        let usage = wgpu::BufferUsages::STORAGE | usage;
        gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(contents),
            usage,
        })
    };
    let changed = buffer("robust pixels changed", &[0], wgpu::BufferUsages::empty());
    let grid = buffer("robust pass grid", &[groups, groups].concat(), wgpu::BufferUsages::INDIRECT);
    let solve = [(1, &input.buffer), (2, consts), (4, &state.buffer), (6, &planes[0].buffer)];
    let noise = [(2, consts), (4, &state.buffer), (6, &planes[0].buffer)];
    let mut out = vec![
        Dispatch::new(gpu, &kernel("robust_solve"), Precision::F32, &params, &solve, groups)?,
        Dispatch::new(gpu, &kernel("robust_noise"), Precision::F32, &params, &noise, groups)?,
    ];
    // Prior passes ping-pong between the planes; from the second on, each runs only if the one
    // before changed a pixel (else both planes hold the same heights).
    let first = ClassicalParams { flags: params.flags | FIRST_PASS, ..params };
    let gate =
        || Dispatch::new(gpu, &kernel("robust_gate"), Precision::F32, &params, &[(7, &changed), (8, &grid)], [1, 1, 1]);
    for pass in 0..robust::PASSES {
        let (from, to) = (&planes[pass % 2].buffer, &planes[(pass + 1) % 2].buffer);
        let b = [(2, consts), (4, &state.buffer), (5, from), (6, to), (7, &changed)];
        let d = Dispatch::new(
            gpu,
            &kernel("robust_prior"),
            Precision::F32,
            if pass == 0 { &first } else { &params },
            &b,
            groups,
        )?;
        if pass > 0 {
            out.push(gate()?);
            out.push(d.indirect(&grid, 0));
        } else {
            out.push(d);
        }
    }
    // The last gate also zeroes the count for the next batch.
    out.push(gate()?);
    let last = &planes[robust::PASSES % 2].buffer;
    let b = [(3, &output.buffer), (4, &state.buffer), (5, last)];
    out.push(Dispatch::new(gpu, &kernel("robust_emit"), Precision::F32, &params, &b, groups)?);
    Ok(out)
}
