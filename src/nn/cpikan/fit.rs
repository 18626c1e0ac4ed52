//! `pinn fit`: refine the height of one frame region with a Scaled-cPIKAN `h(x, y)`
//! ([`crate::nn::cpikan`]) fitted to the PSI physics, like the seed's PINN reconstruction.
//!
//! 1. Read only the region's rows of the `(C, H, W)` frame (raw intensities as f32, integers
//!    unscaled) and take an initial height `h0` on the region: the classical solver
//!    ([`crate::nn::classical`]) or heights supplied by the caller (e.g. a U-Net's output).
//! 2. Supervised: fit the network to `h0` (`mean((u − h0)²)`) with Adam.
//! 3. Physics: minimise `mean_c((A + B·cos(4π·u/λ_l + δ_k) − I)²) + w_s·mean((u_xx + u_yy)²)`
//!    with Adam then L-BFGS (strong Wolfe). Every evaluation is one GPU forward-mode derivative
//!    pass and its backward; the host computes `dL/du`, `dL/du_xx`, `dL/du_yy` (in f64: the phase
//!    `4πu/λ` is large) and Adam / L-BFGS update the (small) parameter vector on the host
//!    ([`super::train`]), keeping the best parameters seen.
//!
//! Coordinates are frame pixels (x = column, y = row); the network's domain is the region's
//! pixel-centre bounds. Nothing is written here: see [`save_model`] for the weights.

use std::path::Path;
use std::time::Instant;

use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::npy::{NpyReader, to_f32};
use crate::io::weights::{f32_bytes, to_safetensors};
use crate::nn::classical::Classical;
use crate::nn::cpikan::train::{self, Trainee};
use crate::nn::cpikan::{CpikanConfig, CpikanWeights, Derivatives, init_weights};
use crate::ops::classical::ClassicalConfig;
use crate::optim::lbfgs::Lbfgs;
use crate::psi::{PsiConfig, phase};
use crate::rng::Rng;

/// Where the initial height comes from.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Init {
    /// The classical solver on the region.
    #[default]
    Classical,
    /// Caller-supplied heights on the region, `h × w` row-major (µm).
    Heights(Vec<f32>),
}

/// Settings of [`pinn_fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct PinnFitOptions {
    /// `[y, x, h, w]` in frame pixels.
    pub region: [usize; 4],
    /// Lasers, buckets, and the offset A and modulation B of the bucket model (used unless
    /// `estimate_ab`).
    pub psi: PsiConfig,
    /// Estimate A and B per pixel and laser from the frame (N-step least squares) instead.
    pub estimate_ab: bool,
    /// Weight w_s of the Laplacian smoothness term (frame-pixel units).
    pub smoothness: f32,
    /// Network widths, `[2, …, 1]`.
    pub layers: Vec<usize>,
    /// Chebyshev degree.
    pub degree: usize,
    /// Adam steps on `mean((u − h0)²)`.
    pub supervised_steps: usize,
    /// Adam steps on the physics loss.
    pub adam_steps: usize,
    /// L-BFGS iterations on the physics loss after Adam.
    pub lbfgs_iters: usize,
    /// Adam learning rate of the supervised phase.
    pub lr: f32,
    /// Adam learning rate of the physics phase (small: the bucket loss is steep in u).
    pub physics_lr: f32,
    /// Heights searched by the classical solver, µm.
    pub height_range: (f32, f32),
    pub init: Init,
    /// Seeds the initial weights.
    pub seed: u64,
}

impl Default for PinnFitOptions {
    fn default() -> Self {
        PinnFitOptions {
            region: [0, 0, 64, 64],
            psi: PsiConfig::default(),
            estimate_ab: false,
            smoothness: 0.0,
            layers: vec![2, 32, 32, 1],
            degree: 3,
            supervised_steps: 1000,
            adam_steps: 200,
            lbfgs_iters: 500,
            lr: 1e-2,
            physics_lr: 1e-4,
            height_range: (-100.0, 100.0),
            init: Init::Classical,
            seed: 0,
        }
    }
}

/// Figures and results of one [`pinn_fit`] run.
#[derive(Clone, Debug)]
pub struct PinnFitReport {
    /// The fitted network on the region's pixels, `h × w` row-major (µm).
    pub heights: Vec<f32>,
    /// The initial height `h0` on the region, `h × w`.
    pub initial_heights: Vec<f32>,
    /// `mean((u − h0)²)` after the supervised phase.
    pub supervised_mse: f32,
    /// Physics loss of the supervised-only network, after physics Adam, and at the end.
    pub initial_loss: f32,
    pub loss_after_adam: f32,
    pub final_loss: f32,
    /// Data term (no smoothness) of the physics loss at `h0` itself, for comparison.
    pub h0_data_loss: f32,
    pub weights: CpikanWeights,
    pub supervised_steps: usize,
    pub adam_steps: usize,
    pub lbfgs_iterations: usize,
    pub lbfgs_evaluations: usize,
    pub wall_s: f64,
}

/// The region's frame data and the physics constants.
struct Problem {
    /// `(x, y)` per pixel, frame coordinates.
    coords: Vec<f32>,
    /// Intensities `(C, P)`.
    frame: Vec<f64>,
    /// Per channel: `4π/λ_l`, δ_k.
    k: Vec<(f64, f64)>,
    /// A and B per `(laser, pixel)` (or one value each when fixed).
    a: Vec<f64>,
    b: Vec<f64>,
    buckets: usize,
    pixels: usize,
    smoothness: f64,
}

impl Problem {
    /// The region's intensities `data` (`(C, h, w)` raw counts) of a frame whose top-left pixel
    /// is (`x0`, `y0`), under `opts`' physics.
    fn new(opts: &PinnFitOptions, data: &[f32]) -> Problem {
        let [y0, x0, h, w] = opts.region;
        let (l, n, np) = (opts.psi.lasers(), opts.psi.buckets, h * w);
        let tau = 2.0 * std::f64::consts::PI;
        let k = (0..l * n)
            .map(|ch| (2.0 * tau / opts.psi.wavelengths[ch / n] as f64, opts.psi.phase_step(ch / n, ch % n)))
            .collect::<Vec<_>>();
        let frame: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let (a, b) = if opts.estimate_ab {
            let (mut a, mut b) = (vec![0.0; l * np], vec![0.0; l * np]);
            for las in 0..l {
                for p in 0..np {
                    let values = (0..n).map(|kk| frame[(las * n + kk) * np + p]);
                    (a[las * np + p], b[las * np + p]) = phase::estimate_ab(values);
                }
            }
            (a, b)
        } else {
            (vec![opts.psi.a as f64], vec![opts.psi.b as f64])
        };
        let coords: Vec<f32> = (0..np).flat_map(|p| [(x0 + p % w) as f32, (y0 + p / w) as f32]).collect();
        Problem { coords, frame, k, a, b, buckets: n, pixels: np, smoothness: opts.smoothness as f64 }
    }

    fn ab(&self, c: usize, p: usize) -> (f64, f64) {
        if self.a.len() == 1 {
            (self.a[0], self.b[0])
        } else {
            let i = (c / self.buckets) * self.pixels + p;
            (self.a[i], self.b[i])
        }
    }

    /// The data term `mean_c((A + B cos(k u + δ) − I)²)` and, if `grad`, its gradient in u.
    fn data_loss(&self, u: &[f32], mut grad: Option<&mut [f32]>) -> f64 {
        let (np, nc) = (self.pixels, self.k.len());
        let scale = 1.0 / (np * nc) as f64;
        let mut loss = 0.0;
        for p in 0..np {
            let up = u[p] as f64;
            let mut g = 0.0;
            for (c, &(kl, delta)) in self.k.iter().enumerate() {
                let (a, b) = self.ab(c, p);
                let phase = kl * up + delta;
                let r = a + b * phase.cos() - self.frame[c * np + p];
                loss += r * r;
                g -= 2.0 * r * b * phase.sin() * kl;
            }
            if let Some(gr) = grad.as_deref_mut() {
                gr[p] = (g * scale) as f32;
            }
        }
        loss * scale
    }
}

impl Problem {
    /// The physics loss of the network's output `d` (data term plus `w_s · mean((u_xx + u_yy)²)`);
    /// fills its gradient `g`.
    fn physics(&self, d: &Derivatives, g: &mut Derivatives) -> f64 {
        let np = self.pixels;
        let mut loss = self.data_loss(&d.u, Some(&mut g.u));
        if self.smoothness > 0.0 {
            let mut s2 = 0.0;
            for p in 0..np {
                let s = d.uxx[p] as f64 + d.uyy[p] as f64;
                s2 += s * s;
                let gs = (2.0 * self.smoothness * s / np as f64) as f32;
                g.uxx[p] = gs;
                g.uyy[p] = gs;
            }
            loss += self.smoothness * s2 / np as f64;
        }
        loss
    }
}

/// The supervised loss `mean((u − h0)²)` of the network's output `d`; fills its gradient `g`.
fn supervised(h0: &[f32], d: &Derivatives, g: &mut Derivatives) -> f64 {
    let np = h0.len();
    let mut loss = 0.0f64;
    for ((gu, &u), &t) in g.u.iter_mut().zip(&d.u).zip(h0) {
        let r = u as f64 - t as f64;
        loss += r * r;
        *gu = (2.0 * r / np as f64) as f32;
    }
    loss / np as f64
}

/// Read rows `y..y+h`, columns `x..x+w` of every channel of the `(C, H, W)` frame as f32 `(C, h, w)`.
pub fn read_region(frame: &Path, region: [usize; 4]) -> Result<(usize, Vec<f32>)> {
    let mut reader = NpyReader::open(frame)?;
    let bytes = reader.read_region(region)?;
    Ok((reader.header().shape[0], to_f32(reader.header().ty, &bytes)))
}

/// Check the options that do not depend on the frame.
fn validate(opts: &PinnFitOptions) -> Result<ClassicalConfig> {
    if opts.layers.first() != Some(&2) || opts.layers.last() != Some(&1) {
        return Err(Error::Invalid(format!("pinn fit needs a 2 -> 1 network, got layers {:?}", opts.layers)));
    }
    let psi = &opts.psi;
    if !(psi.a.is_finite() && psi.b.is_finite() && opts.smoothness >= 0.0 && opts.lr > 0.0 && opts.physics_lr > 0.0) {
        return Err(Error::Invalid(format!(
            "pinn fit: A = {}, B = {}, smoothness = {}, lr = {} must be finite (smoothness >= 0, lr > 0)",
            psi.a, psi.b, opts.smoothness, opts.lr
        )));
    }
    let classical = ClassicalConfig { psi: psi.clone(), height_range: opts.height_range, ..Default::default() };
    classical.validate()?;
    Ok(classical)
}

/// The initial height on the region: the classical solver's, or the caller's.
fn initial_heights(gpu: &Gpu, opts: &PinnFitOptions, classical: ClassicalConfig, data: &[f32]) -> Result<Vec<f32>> {
    let [_, _, h, w] = opts.region;
    let h0 = match &opts.init {
        Init::Classical => Classical::new(gpu, classical)?.solve(gpu, data, 1, h, w)?,
        Init::Heights(v) => {
            if v.len() != h * w {
                return Err(Error::Shape(format!("{} initial heights for a {h} x {w} region", v.len())));
            }
            v.clone()
        }
    };
    if h0.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid("pinn fit: the initial heights are not all finite".into()));
    }
    Ok(h0)
}

/// Fresh weights on the region's pixel-centre domain, the output biased to the mean of `h0`.
fn initial_network(opts: &PinnFitOptions, h0: &[f32]) -> CpikanWeights {
    let [y0, x0, h, w] = opts.region;
    let config = CpikanConfig {
        layers: opts.layers.clone(),
        degree: opts.degree,
        domain_min: vec![x0 as f32, y0 as f32],
        domain_max: vec![(x0 + w.max(2) - 1) as f32, (y0 + h.max(2) - 1) as f32],
    };
    let mut rng = Rng::new(opts.seed);
    let mut wts = init_weights(&config, &mut rng);
    let mean = h0.iter().map(|&v| v as f64).sum::<f64>() / h0.len() as f64;
    let last = wts.coeffs.last_mut().unwrap();
    let n_in = opts.layers[opts.layers.len() - 2];
    let kk = opts.degree + 1;
    for i in 0..n_in {
        last[i * kk] += (mean / n_in as f64) as f32;
    }
    wts
}

/// Fit a Scaled-cPIKAN height `h(x, y)` to the physics of `opts.region` of `frame`.
pub fn pinn_fit(gpu: &Gpu, frame: &Path, opts: &PinnFitOptions) -> Result<PinnFitReport> {
    validate(opts)?;
    let (c, data) = read_region(frame, opts.region)?;
    pinn_fit_region(gpu, frame, c, &data, opts)
}

/// [`pinn_fit`] on a region already read: `data` holds its `(c, h, w)` raw intensities as f32
/// (see [`read_region`]); `frame` names the file in errors.
pub fn pinn_fit_region(
    gpu: &Gpu,
    frame: &Path,
    c: usize,
    data: &[f32],
    opts: &PinnFitOptions,
) -> Result<PinnFitReport> {
    let start = Instant::now();
    let classical = validate(opts)?;
    let [_, _, h, w] = opts.region;
    if data.len() != c * h * w {
        return Err(Error::Shape(format!("{} values for a {c} x {h} x {w} region", data.len())));
    }
    if c != opts.psi.channels() {
        return Err(Error::Shape(format!(
            "{}: {c} channels, but {} wavelengths x {} buckets = {} expected",
            frame.display(),
            opts.psi.lasers(),
            opts.psi.buckets,
            opts.psi.channels()
        )));
    }
    let h0 = initial_heights(gpu, opts, classical, data)?;
    let pb = Problem::new(opts, data);
    let mut net = Trainee::new(gpu, initial_network(opts, &h0))?;
    let mut params = net.params();

    // 1. Supervised.
    let mut supervised = |n: &Trainee| n.model.derivative_loss(gpu, &pb.coords, |d, g| supervised(&h0, d, g));
    let what = "pinn fit: non-finite supervised loss at step";
    train::adam(&mut net, &mut params, opts.supervised_steps, opts.lr, what, &mut supervised, |_, _, _| {})?;
    net.set(&params)?;
    let supervised_mse = if opts.supervised_steps > 0 { supervised(&net)?.0 } else { f32::NAN };

    // 2. Physics.
    let physics = physics_phases(&mut net, &mut params, &pb, opts)?;
    let heights = net.model.forward(gpu, &pb.coords)?;
    debug_assert_eq!(heights.len(), opts.region[2] * opts.region[3]);
    Ok(PinnFitReport {
        heights,
        h0_data_loss: pb.data_loss(&h0, None) as f32,
        initial_heights: h0,
        supervised_mse,
        initial_loss: physics.initial_loss,
        loss_after_adam: physics.loss_after_adam,
        final_loss: physics.final_loss,
        weights: net.weights,
        supervised_steps: opts.supervised_steps,
        adam_steps: opts.adam_steps,
        lbfgs_iterations: physics.lbfgs.iterations(),
        lbfgs_evaluations: physics.lbfgs.evaluations(),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// What [`physics_phases`] reports.
struct Physics {
    initial_loss: f32,
    loss_after_adam: f32,
    final_loss: f32,
    lbfgs: Lbfgs,
}

/// The physics phases from `params`: Adam, then L-BFGS from the best parameters seen, keeping the
/// best (the physics loss is far from convex: never end worse); leaves those on `net`.
fn physics_phases(net: &mut Trainee, params: &mut Vec<f32>, pb: &Problem, opts: &PinnFitOptions) -> Result<Physics> {
    let gpu = net.gpu;
    let mut physics = |n: &Trainee| n.model.derivative_loss(gpu, &pb.coords, |d, g| pb.physics(d, g));
    let (initial_loss, _) = physics(net)?;
    let mut best = (initial_loss, params.clone());
    let keep_best = |_, loss: f32, p: &[f32]| {
        if loss < best.0 {
            best = (loss, p.to_vec());
        }
    };
    let what = "pinn fit: non-finite physics loss at Adam step";
    train::adam(net, params, opts.adam_steps, opts.physics_lr, what, &mut physics, keep_best)?;
    net.set(params)?;
    let loss_after_adam = physics(net)?.0;
    if loss_after_adam < best.0 {
        best = (loss_after_adam, params.clone());
    }
    if opts.lbfgs_iters > 0 {
        params.clone_from(&best.1);
    }
    let (lbfgs, _) = train::lbfgs(net, params, opts.lbfgs_iters, &mut physics)?;
    net.set(params)?;
    let mut final_loss = physics(net)?.0;
    if final_loss.is_nan() || final_loss > best.0 {
        // L-BFGS made it worse (or diverged): keep the best earlier parameters.
        net.set(&best.1)?;
        final_loss = best.0;
    }
    Ok(Physics { initial_loss, loss_after_adam, final_loss, lbfgs })
}

/// Write `w` as an F32 safetensors state_dict with the seed's names (`domain_min`, `domain_max`,
/// `network.{3l}.cheby_coeffs`, `network.{3l + 1}.weight` / `.bias`), readable by
/// [`CpikanWeights::load`] / [`super::Cpikan::load`], through the atomic writer. A NaN or ±Inf
/// parameter is refused by name and `path` left as it was.
pub fn save_model(path: &Path, w: &CpikanWeights) -> Result<()> {
    w.validate()?;
    let c = &w.config;
    let d = c.d_in();
    let f32s = |name: String, shape: Vec<usize>, v: &[f32]| (name, Dtype::F32, shape, f32_bytes(v));
    let mut tensors =
        vec![f32s("domain_min".into(), vec![d], &c.domain_min), f32s("domain_max".into(), vec![d], &c.domain_max)];
    for l in 0..c.n_layers() {
        let shape = vec![c.layers[l], c.layers[l + 1], c.degree + 1];
        tensors.push(f32s(format!("network.{}.cheby_coeffs", 3 * l), shape, &w.coeffs[l]));
        if l + 1 < c.n_layers() {
            let nf = c.layers[l + 1];
            tensors.push(f32s(format!("network.{}.weight", 3 * l + 1), vec![nf], &w.ln_weight[l]));
            tensors.push(f32s(format!("network.{}.bias", 3 * l + 1), vec![nf], &w.ln_bias[l]));
        }
    }
    let invalid = |m: String| Error::Invalid(format!("cPIKAN weights {}: {m}", path.display()));
    let bytes = to_safetensors(&tensors, Default::default(), invalid)?;
    crate::io::atomic::write_bytes(path, &bytes)
}
