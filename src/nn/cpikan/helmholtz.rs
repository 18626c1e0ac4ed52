//! Physics-informed training of a Scaled-cPIKAN ([`crate::nn::cpikan`]) on the 1-D Helmholtz
//! benchmark of `BENCHMARKS.md`: `u_xx + k² u = 0` on [−1, 1], `u(−1) = 0`, `u_x(1) = k`, exact
//! `u = sin(k x)`.
//!
//! Every loss evaluation is one GPU forward-mode derivative pass and its backward
//! ([`Cpikan::derivative_loss`]) over the collocation points plus the two boundary points; the
//! (tiny) parameter vector lives on the host, where Adam and then L-BFGS (strong Wolfe) update it
//! ([`super::train`]).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::cpikan::train::{self, Trainee};
use crate::nn::cpikan::{Cpikan, CpikanConfig, CpikanWeights, Derivatives, init_weights};
use crate::rng::Rng;

/// Settings of [`helmholtz`].
#[derive(Clone, Debug, PartialEq)]
pub struct HelmholtzConfig {
    /// Network widths, `[1, …, 1]`.
    pub layers: Vec<usize>,
    /// Chebyshev degree.
    pub degree: usize,
    /// Wave number (4π in the benchmark).
    pub k: f64,
    /// Collocation points (Latin hypercube on [−1, 1]).
    pub n_collocation: usize,
    /// Weight of the boundary terms.
    pub w_bc: f32,
    pub adam_steps: usize,
    pub adam_lr: f32,
    /// L-BFGS iterations after Adam (one `step` with `max_iter` = this).
    pub lbfgs_iterations: usize,
    /// Seeds the initial weights and the collocation points.
    pub seed: u64,
    /// Uniform evaluation points for the relative L2 error.
    pub eval_points: usize,
}

impl Default for HelmholtzConfig {
    fn default() -> Self {
        HelmholtzConfig {
            layers: vec![1, 16, 16, 1],
            degree: 3,
            k: 4.0 * std::f64::consts::PI,
            n_collocation: 256,
            w_bc: 100.0,
            adam_steps: 1000,
            adam_lr: 1e-2,
            lbfgs_iterations: 1000,
            seed: 0,
            eval_points: 1000,
        }
    }
}

/// Figures of one [`helmholtz`] run.
#[derive(Clone, Debug)]
pub struct HelmholtzReport {
    /// Relative L2 of u against sin(k x) on `eval_points` uniform points, before and after training.
    pub initial_rel_l2: f64,
    pub rel_l2: f64,
    pub initial_loss: f32,
    pub loss_after_adam: f32,
    pub final_loss: f32,
    /// (evaluation index, loss) every 100 Adam steps and after L-BFGS.
    pub loss_curve: Vec<(usize, f32)>,
    pub adam_steps: usize,
    pub lbfgs_iterations: usize,
    pub lbfgs_evaluations: usize,
    pub wall_s: f64,
    /// The trained parameters.
    pub weights: CpikanWeights,
}

/// Latin hypercube sample of `n` points on [lo, hi] (one uniform point per stratum, shuffled).
pub fn latin_hypercube_1d(n: usize, lo: f64, hi: f64, rng: &mut Rng) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n).map(|i| lo + (hi - lo) * (i as f64 + rng.uniform()) / n as f64).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// The Helmholtz loss of the network's output `d` at the points `xs` (the collocation points
/// followed by −1 and 1); fills its gradient `g`.
fn loss(xs: &[f32], k: f32, w_bc: f32, d: &Derivatives, g: &mut Derivatives) -> f64 {
    let n = xs.len() - 2;
    let k2 = k * k;
    let mut pde = 0.0f64;
    for b in 0..n {
        let r = d.uxx[b] + k2 * d.u[b];
        pde += (r as f64) * (r as f64);
        g.uxx[b] = 2.0 * r / n as f32;
        g.u[b] = 2.0 * r * k2 / n as f32;
    }
    let (ul, uxr) = (d.u[n], d.ux[n + 1] - k);
    g.u[n] = 2.0 * w_bc * ul;
    g.ux[n + 1] = 2.0 * w_bc * uxr;
    pde / n as f64 + w_bc as f64 * ((ul as f64).powi(2) + (uxr as f64).powi(2))
}

/// Relative L2 of the network against sin(k x) on `n` uniform points of [−1, 1].
pub fn relative_error(gpu: &Gpu, model: &Cpikan, k: f64, n: usize) -> Result<f64> {
    let xs: Vec<f64> = (0..n).map(|i| -1.0 + 2.0 * i as f64 / (n.max(2) - 1) as f64).collect();
    let u = model.forward(gpu, &xs.iter().map(|&x| x as f32).collect::<Vec<f32>>())?;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, u) in xs.iter().zip(&u) {
        let e = (k * x).sin();
        num += (*u as f64 - e).powi(2);
        den += e * e;
    }
    Ok((num / den).sqrt())
}

/// Train a Scaled-cPIKAN on the Helmholtz benchmark: Adam, then L-BFGS with strong Wolfe.
pub fn helmholtz(gpu: &Gpu, cfg: &HelmholtzConfig) -> Result<HelmholtzReport> {
    let start = Instant::now();
    if cfg.layers.first() != Some(&1) || cfg.layers.last() != Some(&1) || cfg.n_collocation == 0 {
        return Err(Error::Invalid(format!(
            "Helmholtz needs a 1 -> 1 network and collocation points, got layers {:?}, {} points",
            cfg.layers, cfg.n_collocation
        )));
    }
    let config =
        CpikanConfig { layers: cfg.layers.clone(), degree: cfg.degree, domain_min: vec![-1.0], domain_max: vec![1.0] };
    let mut rng = Rng::new(cfg.seed);
    let mut net = Trainee::new(gpu, init_weights(&config, &mut rng))?;
    let mut xs: Vec<f32> =
        latin_hypercube_1d(cfg.n_collocation, -1.0, 1.0, &mut rng).iter().map(|&x| x as f32).collect();
    xs.extend_from_slice(&[-1.0, 1.0]);
    let k = cfg.k as f32;
    let initial_rel_l2 = relative_error(gpu, &net.model, cfg.k, cfg.eval_points)?;
    let mut params = net.params();
    let mut helmholtz_loss = |n: &Trainee| n.model.derivative_loss(gpu, &xs, |d, g| loss(&xs, k, cfg.w_bc, d, g));
    // Adam: the loss at the first step, every 100 steps and at the last (before its update).
    let mut loss_curve = Vec::new();
    let (mut initial_loss, mut loss_after_adam) = (f32::NAN, f32::NAN);
    let seen = |step: usize, loss: f32, _: &[f32]| {
        if step == 0 {
            initial_loss = loss;
        }
        if step.is_multiple_of(100) {
            loss_curve.push((step, loss));
        }
        loss_after_adam = loss;
    };
    let what = "Helmholtz: non-finite loss at Adam step";
    train::adam(&mut net, &mut params, cfg.adam_steps, cfg.adam_lr, what, &mut helmholtz_loss, seen)?;
    let (lbfgs, first) = train::lbfgs(&mut net, &mut params, cfg.lbfgs_iterations, &mut helmholtz_loss)?;
    if let Some(l0) = first
        && cfg.adam_steps == 0
    {
        (initial_loss, loss_after_adam) = (l0, l0);
    }
    net.set(&params)?;
    let (final_loss, _) = helmholtz_loss(&net)?;
    loss_curve.push((cfg.adam_steps + lbfgs.evaluations(), final_loss));
    let rel_l2 = relative_error(gpu, &net.model, cfg.k, cfg.eval_points)?;
    Ok(HelmholtzReport {
        initial_rel_l2,
        rel_l2,
        initial_loss,
        loss_after_adam,
        final_loss,
        loss_curve,
        adam_steps: cfg.adam_steps,
        lbfgs_iterations: lbfgs.iterations(),
        lbfgs_evaluations: lbfgs.evaluations(),
        wall_s: start.elapsed().as_secs_f64(),
        weights: net.weights,
    })
}
