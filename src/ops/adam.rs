//! Adam's kernels (`shaders/adam.wgsl`) over a flat packed f32 parameter buffer, with the loss
//! scaler's inf check, gradient clipping by global norm and zero_grad, as PyTorch does them — and
//! their CPU version ([`reference`](mod@reference)), which is also the optimizer of the small
//! host-side models (`optim::HostAdam`).
//!
//! One optimizer step (one kernel each over the flat buffer; see the shader's header):
//! 1. reset the scaler's `found_inf` flag;
//! 2. `check` (scaler enabled): `found_inf |= any(!finite(grad / scale))`;
//! 3. clipping (`max_grad_norm`): the global L2 norm of `grad / scale` (deterministic two-pass
//!    reduction) and `coef = min(1, max_norm / (norm + 1e-6))` (torch.nn.utils.clip_grad_norm_);
//! 4. `adam_step`: nothing at all when `found_inf` is set (GradScaler skips optimizer.step), else
//!    per element `g = grad / scale · coef + weight_decay · p` (L2 as torch.optim.Adam, not
//!    AdamW), `m = lerp(m, g, 1 − β1)`, `v = β2·v + (1 − β2)·g²`,
//!    `p −= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)` with `bc = 1 − β^t` for the count t of
//!    applied steps (computed on the host in f64, passed as uniforms) — torch's formula exactly.
//!    The gradient buffer itself is left as it is (scaled).

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Shader, grid_1d};

pub static SHADER: Shader = wgsl!("adam": "lib/grid.wgsl", "lib/reduce.wgsl", "adam.wgsl");

const WG: usize = 256;

/// torch.optim.Adam's hyper-parameters (f64 as PyTorch's Python floats; the kernel gets f32).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate (a schedule may override it per step; see `optim::Adam::step`).
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// L2 penalty added to the gradient (torch.optim.Adam's `weight_decay`, not AdamW).
    pub weight_decay: f64,
    /// Clip the unscaled gradients to this global L2 norm before the step.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, max_grad_norm: None }
    }
}

impl AdamConfig {
    pub fn validate(&self) -> Result<()> {
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return Err(Error::Invalid(format!("Adam betas ({b1}, {b2}) must be in [0, 1)")));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::Invalid(format!("learning rate {} must be finite and at least 0", self.lr)));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::Invalid(format!("Adam eps {} must be finite and at least 0", self.eps)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Invalid(format!("weight decay {} must be finite and at least 0", self.weight_decay)));
        }
        if let Some(c) = self.max_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::Invalid(format!("gradient clipping norm {c} must be positive and finite")));
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct AdamParams {
    count: u32,
    clip: u32,
    partials: u32,
    fill: u32,
    step_size: f32,
    bc2_sqrt: f32,
    lerp_w: f32,
    beta2: f32,
    beta2_c: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,
}

/// The buffers the kernels bind: the flat parameters and gradients (`len` f32, a multiple of 4),
/// the two moments (same layout), `[norm, coef]` of the clipping, one f32 per workgroup of norm
/// partials ([`AdamKernels::partials`]), and the loss scaler's scale (f32) and found-inf flag (u32).
pub struct AdamBuffers<'a> {
    pub values: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub m: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub clip: &'a wgpu::Buffer,
    pub partials: &'a wgpu::Buffer,
    pub scale: &'a wgpu::Buffer,
    pub found_inf: &'a wgpu::Buffer,
}

/// The recorded kernels of one optimizer over one flat parameter buffer.
pub struct AdamKernels {
    params: AdamParams,
    zero_grad: Dispatch,
    reset_inf: Dispatch,
    check: Dispatch,
    norm_partial: Dispatch,
    norm_finish: Dispatch,
    step: Dispatch,
}

impl AdamKernels {
    /// Norm partial sums (workgroups of the vec4 kernels) for `len` parameters.
    pub fn partials(gpu: &Gpu, len: usize) -> usize {
        let [gx, gy] = grid_1d(gpu, len / 4, WG);
        gx as usize * gy as usize
    }

    /// Bind the kernels for `len` parameters (a multiple of 4) with hyper-parameters `config`.
    pub fn new(gpu: &Gpu, config: &AdamConfig, len: usize, b: AdamBuffers) -> Result<AdamKernels> {
        if !len.is_multiple_of(4) {
            return Err(Error::Shape(format!("Adam over {len} parameters: the flat length must be a multiple of 4")));
        }
        let len4 = len / 4;
        let [gx, gy] = grid_1d(gpu, len4, WG);
        let groups = gx as usize * gy as usize;
        let (b1, b2) = config.betas;
        let base = AdamParams {
            count: len4 as u32,
            clip: config.max_grad_norm.is_some() as u32,
            partials: groups as u32,
            fill: 0,
            step_size: 0.0,
            bc2_sqrt: 1.0,
            lerp_w: (1.0 - b1) as f32,
            beta2: b2 as f32,
            beta2_c: (1.0 - b2) as f32,
            eps: config.eps as f32,
            weight_decay: config.weight_decay as f32,
            max_norm: config.max_grad_norm.unwrap_or(0.0) as f32,
        };
        let grid = [gx, gy, 1];
        let launch = |entry, p: &AdamParams, bufs: &[(u32, &wgpu::Buffer)], groups| {
            Dispatch::new(gpu, &SHADER.kernel(entry), Precision::F32, p, bufs, groups)
        };
        let [fx, fy] = grid_1d(gpu, len, WG);
        let zero_grad = launch("fill", &AdamParams { count: len as u32, ..base }, &[(8, b.grads)], [fx, fy, 1])?;
        let reset_inf = launch("fill", &AdamParams { count: 1, ..base }, &[(8, b.found_inf)], [1, 1, 1])?;
        let check = launch("check", &base, &[(2, b.grads), (5, b.scale), (6, b.found_inf)], grid)?;
        let norm_partial = launch("norm_partial", &base, &[(2, b.grads), (5, b.scale), (7, b.partials)], grid)?;
        let norm_finish = launch("norm_finish", &base, &[(7, b.partials), (9, b.clip)], [1, 1, 1])?;
        let step_buffers =
            [(1, b.values), (2, b.grads), (3, b.m), (4, b.v), (5, b.scale), (6, b.found_inf), (9, b.clip)];
        let step = launch("adam_step", &base, &step_buffers, grid)?;
        Ok(AdamKernels { params: base, zero_grad, reset_inf, check, norm_partial, norm_finish, step })
    }

    /// Fill the gradients with zeros.
    pub fn zero_grad(&self) -> &Dispatch {
        &self.zero_grad
    }

    /// The kernels of one step, in order: reset found_inf, `check` (if `check`), the norm (if
    /// `clip`), the update.
    pub fn step(&self, check: bool, clip: bool) -> Vec<&Dispatch> {
        let mut d = vec![&self.reset_inf];
        if check {
            d.push(&self.check);
        }
        if clip {
            d.push(&self.norm_partial);
            d.push(&self.norm_finish);
        }
        d.push(&self.step);
        d
    }

    /// Write the update's uniforms: `step_size = lr / bc1` and `sqrt(bc2)`. Takes effect at the
    /// next submission.
    pub fn set_step(&mut self, gpu: &Gpu, step_size: f32, bc2_sqrt: f32) {
        self.params.step_size = step_size;
        self.params.bc2_sqrt = bc2_sqrt;
        self.step.update(gpu, &self.params);
    }
}

/// The CPU version of the optimizer step and of gradient clipping, generic over f64 (the tests'
/// reference) and f32 (host-side models): the one exception to the conventions in [`crate::ops`].
pub mod reference {
    use super::AdamConfig;
    use num_traits::Float;

    /// Adam's moments and applied-step count.
    #[derive(Clone, Debug, PartialEq)]
    pub struct State<T> {
        pub m: Vec<T>,
        pub v: Vec<T>,
        pub steps: u64,
    }

    impl<T: Float> State<T> {
        pub fn new(len: usize) -> State<T> {
            State { m: vec![T::zero(); len], v: vec![T::zero(); len], steps: 0 }
        }
    }

    fn cast<T: Float>(v: f64) -> T {
        T::from(v).expect("f64 converts to every float type")
    }

    /// torch.nn.utils.clip_grad_norm_: the global L2 norm and the factor
    /// `min(1, max_norm / (norm + 1e-6))` the gradients are multiplied by.
    pub fn clip_coefficient<T: Float + std::iter::Sum>(grads: &[T], max_norm: T) -> (T, T) {
        let norm = grads.iter().map(|&g| g * g).sum::<T>().sqrt();
        (norm, (max_norm / (norm + cast(1e-6))).min(T::one()))
    }

    /// One step as the GPU does it: gradients `grads` scaled by `scale` are unscaled; any inf/NaN
    /// skips the step (returns false, nothing changes); else clipping (`cfg.max_grad_norm`) and
    /// torch.optim.Adam's update with learning rate `lr`.
    pub fn step<T: Float + std::iter::Sum>(
        params: &mut [T],
        grads: &[T],
        scale: T,
        state: &mut State<T>,
        cfg: &AdamConfig,
        lr: T,
    ) -> bool {
        assert_eq!(params.len(), grads.len(), "parameter and gradient lengths");
        let mut g: Vec<T> = grads.iter().map(|&g| g / scale).collect();
        if g.iter().any(|v| !v.is_finite()) {
            return false;
        }
        if let Some(max_norm) = cfg.max_grad_norm {
            let (_, coef) = clip_coefficient(&g, cast(max_norm));
            g.iter_mut().for_each(|v| *v = *v * coef);
        }
        state.steps += 1;
        let t = state.steps as i32;
        let (b1, b2): (T, T) = (cast(cfg.betas.0), cast(cfg.betas.1));
        let (eps, weight_decay): (T, T) = (cast(cfg.eps), cast(cfg.weight_decay));
        let one = T::one();
        let step_size = lr / (one - b1.powi(t));
        let bc2_sqrt = (one - b2.powi(t)).sqrt();
        for (i, p) in params.iter_mut().enumerate() {
            let gi = if weight_decay == T::zero() { g[i] } else { g[i] + weight_decay * *p };
            state.m[i] = b1 * state.m[i] + (one - b1) * gi;
            state.v[i] = b2 * state.v[i] + (one - b2) * gi * gi;
            *p = *p - step_size * state.m[i] / (state.v[i].sqrt() / bc2_sqrt + eps);
        }
        true
    }
}
