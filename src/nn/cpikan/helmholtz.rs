//! Physics-informed training of a Scaled-cPIKAN ([`crate::nn::cpikan`]) on the 1-D Helmholtz
//! benchmark of `BENCHMARKS.md`: `u_xx + k² u = 0` on [−1, 1], `u(−1) = 0`, `u_x(1) = k`, exact
//! `u = sin(k x)`.
//!
//! Every loss evaluation is one GPU forward-mode derivative pass ([`Cpikan::forward_derivatives_train`])
//! and its backward ([`Cpikan::backward_derivatives`]) over the collocation points plus the two
//! boundary points; the (tiny) parameter vector lives on the host, where Adam and then L-BFGS
//! (strong Wolfe, [`crate::optim::lbfgs`]) update it.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::cpikan::{
    Cpikan, CpikanConfig, CpikanGrads, CpikanWeights, Derivatives, flatten, init_weights, unflatten,
};
use crate::optim::HostAdam;
use crate::optim::lbfgs::{Lbfgs, LbfgsConfig, LineSearch};
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

fn flatten_grads(g: &CpikanGrads) -> Vec<f32> {
    flatten(&g.coeffs, &g.ln_weight, &g.ln_bias)
}

/// The Helmholtz loss on the GPU at the parameters of `model`: points `xs` are the collocation
/// points followed by −1 and 1. Returns the loss and its parameter gradient (flat).
fn loss_and_grad(gpu: &Gpu, model: &Cpikan, xs: &[f32], k: f32, w_bc: f32) -> Result<(f32, Vec<f32>)> {
    let (d, acts) = model.forward_derivatives_train(gpu, xs)?;
    let n = xs.len() - 2;
    let k2 = k * k;
    let mut g = Derivatives {
        u: vec![0.0; xs.len()],
        ux: vec![0.0; xs.len()],
        uy: Vec::new(),
        uxx: vec![0.0; xs.len()],
        uyy: Vec::new(),
    };
    let mut pde = 0.0f64;
    for b in 0..n {
        let r = d.uxx[b] + k2 * d.u[b];
        pde += (r as f64) * (r as f64);
        g.uxx[b] = 2.0 * r / n as f32;
        g.u[b] = 2.0 * r * k2 / n as f32;
    }
    let (ul, uxr) = (d.u[n], d.ux[n + 1] - k);
    let loss = pde / n as f64 + w_bc as f64 * ((ul as f64).powi(2) + (uxr as f64).powi(2));
    g.u[n] = 2.0 * w_bc * ul;
    g.ux[n + 1] = 2.0 * w_bc * uxr;
    let grads = model.backward_derivatives(gpu, &acts, &g)?;
    Ok((loss as f32, flatten_grads(&grads)))
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
    let mut w = init_weights(&config, &mut rng);
    let model = Cpikan::new(gpu, &w)?;
    let mut xs: Vec<f32> =
        latin_hypercube_1d(cfg.n_collocation, -1.0, 1.0, &mut rng).iter().map(|&x| x as f32).collect();
    xs.extend_from_slice(&[-1.0, 1.0]);
    let k = cfg.k as f32;
    let initial_rel_l2 = relative_error(gpu, &model, cfg.k, cfg.eval_points)?;
    let mut params = flatten(&w.coeffs, &w.ln_weight, &w.ln_bias);
    let np = params.len();
    let mut loss_curve = Vec::new();
    let mut adam = HostAdam::new(np, cfg.adam_lr);
    let mut initial_loss = f32::NAN;
    let mut loss_after_adam = f32::NAN;
    for step in 0..cfg.adam_steps {
        unflatten(&mut w, &params);
        model.upload(gpu, &w)?;
        let (loss, g) = loss_and_grad(gpu, &model, &xs, k, cfg.w_bc)?;
        if step == 0 {
            initial_loss = loss;
        }
        if step % 100 == 0 {
            loss_curve.push((step, loss));
        }
        if !loss.is_finite() {
            return Err(Error::Invalid(format!("Helmholtz: non-finite loss at Adam step {step}")));
        }
        adam.step(&mut params, &g);
        loss_after_adam = loss;
    }
    // L-BFGS.
    let mut lbfgs = Lbfgs::new(
        LbfgsConfig {
            lr: 1.0,
            max_iter: cfg.lbfgs_iterations,
            max_eval: Some(cfg.lbfgs_iterations * 5 / 4),
            tolerance_grad: 0.0,
            tolerance_change: 0.0,
            history_size: 50,
            line_search: LineSearch::StrongWolfe,
        },
        np,
    )?;
    if cfg.lbfgs_iterations > 0 {
        let mut closure = |p: &[f32], g: &mut [f32]| -> Result<f32> {
            unflatten(&mut w, p);
            model.upload(gpu, &w)?;
            let (loss, grad) = loss_and_grad(gpu, &model, &xs, k, cfg.w_bc)?;
            g.copy_from_slice(&grad);
            Ok(loss)
        };
        let l0 = lbfgs.step(&mut params, &mut closure)?;
        if cfg.adam_steps == 0 {
            initial_loss = l0;
        }
        loss_after_adam = if cfg.adam_steps == 0 { l0 } else { loss_after_adam };
    }
    unflatten(&mut w, &params);
    model.upload(gpu, &w)?;
    let (final_loss, _) = loss_and_grad(gpu, &model, &xs, k, cfg.w_bc)?;
    loss_curve.push((cfg.adam_steps + lbfgs.evaluations(), final_loss));
    let rel_l2 = relative_error(gpu, &model, cfg.k, cfg.eval_points)?;
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
        weights: w,
    })
}
