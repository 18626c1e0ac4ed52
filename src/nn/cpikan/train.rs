//! Training a Scaled-cPIKAN from the host, shared by [`super::fit`] and [`super::helmholtz`]: the
//! (small) parameter vector lives on the host in the order of [`flatten`], every loss evaluation
//! is one GPU derivative pass and its backward ([`Cpikan::derivative_loss`]), and Adam
//! ([`HostAdam`]) or L-BFGS (strong Wolfe, [`crate::optim::lbfgs`]) update it.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::cpikan::{Cpikan, CpikanWeights, flatten, unflatten};
use crate::optim::HostAdam;
use crate::optim::lbfgs::{Lbfgs, LbfgsConfig, LineSearch};

/// A loss of the network and its flat parameter gradient.
pub type LossFn<'f> = dyn FnMut(&Trainee<'_>) -> Result<(f32, Vec<f32>)> + 'f;

/// The network with its host weights and the GPU copy kept in step.
pub struct Trainee<'a> {
    pub gpu: &'a Gpu,
    pub model: Cpikan,
    pub weights: CpikanWeights,
}

impl Trainee<'_> {
    pub fn new(gpu: &Gpu, weights: CpikanWeights) -> Result<Trainee<'_>> {
        Ok(Trainee { gpu, model: Cpikan::new(gpu, &weights)?, weights })
    }

    /// The parameters as one vector (the order of [`flatten`]).
    pub fn params(&self) -> Vec<f32> {
        flatten(&self.weights.coeffs, &self.weights.ln_weight, &self.weights.ln_bias)
    }

    /// Make `params` (flat) the network's parameters, on the host and the GPU.
    pub fn set(&mut self, params: &[f32]) -> Result<()> {
        unflatten(&mut self.weights, params);
        self.model.upload(self.gpu, &self.weights)
    }
}

/// `steps` Adam steps from `params` on `loss`: each sets the parameters, evaluates, fails with
/// "`what` STEP" on a non-finite loss, shows `seen` (step, loss, the parameters that gave it) and
/// updates `params`.
pub fn adam(
    net: &mut Trainee,
    params: &mut [f32],
    steps: usize,
    lr: f32,
    what: &str,
    loss: &mut LossFn,
    mut seen: impl FnMut(usize, f32, &[f32]),
) -> Result<()> {
    let mut adam = HostAdam::new(params.len(), lr);
    for step in 0..steps {
        crate::error::interrupt::check()?;
        net.set(params)?;
        let (value, g) = loss(net)?;
        if !value.is_finite() {
            return Err(Error::Invalid(format!("{what} {step}")));
        }
        seen(step, value, params);
        adam.step(params, &g);
    }
    Ok(())
}

/// One L-BFGS `step` of up to `iterations` iterations (`max_eval` 5/4 of them, strong Wolfe,
/// history 50, no tolerances) from `params` on `loss`; none for 0. Returns the optimizer (its
/// counts) and the loss at the start.
pub fn lbfgs(
    net: &mut Trainee,
    params: &mut [f32],
    iterations: usize,
    loss: &mut LossFn,
) -> Result<(Lbfgs, Option<f32>)> {
    let config = LbfgsConfig {
        lr: 1.0,
        max_iter: iterations,
        max_eval: Some(iterations * 5 / 4),
        tolerance_grad: 0.0,
        tolerance_change: 0.0,
        history_size: 50,
        line_search: LineSearch::StrongWolfe,
    };
    let mut lbfgs = Lbfgs::new(config, params.len())?;
    if iterations == 0 {
        return Ok((lbfgs, None));
    }
    let mut closure = |p: &[f32], g: &mut [f32]| -> Result<f32> {
        crate::error::interrupt::check()?;
        net.set(p)?;
        let (value, grad) = loss(net)?;
        g.copy_from_slice(&grad);
        Ok(value)
    };
    let first = lbfgs.step(params, &mut closure)?;
    Ok((lbfgs, Some(first)))
}
