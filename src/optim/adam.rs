//! Adam on f32 master weights (`shaders/adam.wgsl`), with the loss scaler's inf check, gradient
//! clipping by global norm and zero_grad, as PyTorch does them.
//!
//! **Parameters** live in one flat packed f32 buffer ([`Params::values`]), each tensor in its
//! PyTorch layout at an offset of the [`ParamLayout`] (aligned to [`PARAM_ALIGN`] elements =
//! 256 bytes, so a tensor can also be bound on its own as a buffer range on every device); the
//! gradients ([`Params::grads`]) and Adam's moments share that layout. The model holds views
//! (buffer + element offset) into them; the tape *accumulates* (`+=`) each tensor's gradient into
//! its range of `grads` (padding stays 0, and Adam leaves zero padding at zero).
//!
//! **One optimizer step** ([`Adam::step_dispatches`], one kernel each over the flat buffer):
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
//!
//! [`Adam::step`] does all of it with one submission and one u32 readback (found_inf), then
//! updates the scaler and the step count. A trainer that records the step into its own encoder
//! calls [`Adam::prepare`] before submitting and [`Adam::finish`] after reading the flag.
//! [`reference`](mod@reference) is the f64 CPU version.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Readback, Shader, grid_1d};
use crate::optim::scaler::LossScaler;
use crate::tensor::check_binding;

pub static SHADER: Shader = Shader { name: "adam", body: include_str!("../../shaders/adam.wgsl") };
pub static FILL: Kernel = Kernel { shader: &SHADER, entry: "fill" };
pub static CHECK: Kernel = Kernel { shader: &SHADER, entry: "check" };
pub static NORM_PARTIAL: Kernel = Kernel { shader: &SHADER, entry: "norm_partial" };
pub static NORM_FINISH: Kernel = Kernel { shader: &SHADER, entry: "norm_finish" };
pub static ADAM_STEP: Kernel = Kernel { shader: &SHADER, entry: "adam_step" };

/// Alignment (elements) of every tensor's offset in the flat buffer, and of its total length:
/// 64 f32 = 256 bytes, the largest `min_storage_buffer_offset_alignment` WebGPU allows.
pub const PARAM_ALIGN: usize = 64;
const WG: usize = 256;

/// One tensor of a [`ParamLayout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// State-dict name, e.g. `inc.double_conv.0.weight`.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// First element in the flat buffer (a multiple of [`PARAM_ALIGN`]).
    pub offset: usize,
    /// Elements (the product of `shape`).
    pub len: usize,
}

impl ParamEntry {
    /// Byte range of the tensor in the flat buffer (for a `wgpu::BufferBinding`).
    pub fn byte_range(&self) -> std::ops::Range<u64> {
        (self.offset as u64 * 4)..((self.offset + self.len) as u64 * 4)
    }
}

/// Where each parameter tensor sits in the flat buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    len: usize,
}

impl ParamLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a tensor; returns its offset (elements).
    pub fn push(&mut self, name: &str, shape: &[usize]) -> usize {
        let offset = self.len;
        let len = shape.iter().product();
        self.entries.push(ParamEntry { name: name.to_string(), shape: shape.to_vec(), offset, len });
        self.len = (offset + len).div_ceil(PARAM_ALIGN) * PARAM_ALIGN;
        offset
    }

    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Elements of the flat buffer (padded; a multiple of [`PARAM_ALIGN`]).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The flat buffer holding `tensors` (one per entry, in order; padding zero).
    pub fn pack(&self, tensors: &[&[f32]]) -> Result<Vec<f32>> {
        if tensors.len() != self.entries.len() {
            return Err(Error::Shape(format!("{} tensors for {} parameters", tensors.len(), self.entries.len())));
        }
        let mut flat = vec![0f32; self.len];
        for (e, t) in self.entries.iter().zip(tensors) {
            if t.len() != e.len {
                return Err(Error::Shape(format!("parameter {}: {} values for shape {:?}", e.name, t.len(), e.shape)));
            }
            flat[e.offset..e.offset + e.len].copy_from_slice(t);
        }
        Ok(flat)
    }

    /// The tensors of a flat buffer, in entry order.
    pub fn unpack<'a>(&self, flat: &'a [f32]) -> Vec<&'a [f32]> {
        self.entries.iter().map(|e| &flat[e.offset..e.offset + e.len]).collect()
    }
}

fn storage_buffer(gpu: &Gpu, label: &str, contents: &[u8]) -> Result<wgpu::Buffer> {
    check_binding(gpu, contents.len() as u64, label)?;
    Ok(gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    }))
}

/// The flat f32 parameter and gradient buffers of a model.
pub struct Params {
    pub layout: ParamLayout,
    /// f32 master weights, `layout.len()` elements.
    pub values: wgpu::Buffer,
    /// f32 gradients, same layout (zeroed at creation).
    pub grads: wgpu::Buffer,
}

impl Params {
    /// Upload `values` (the flat buffer, `layout.len()` elements; see [`ParamLayout::pack`]).
    pub fn new(gpu: &Gpu, layout: ParamLayout, values: &[f32]) -> Result<Params> {
        if layout.is_empty() {
            return Err(Error::Invalid("a parameter set needs at least one tensor".into()));
        }
        if values.len() != layout.len() {
            return Err(Error::Shape(format!(
                "{} values for a flat parameter buffer of {}",
                values.len(),
                layout.len()
            )));
        }
        let values = storage_buffer(gpu, "parameters", bytemuck::cast_slice(values))?;
        let grads = storage_buffer(gpu, "gradients", bytemuck::cast_slice(&vec![0f32; layout.len()]))?;
        Ok(Params { layout, values, grads })
    }

    pub fn len(&self) -> usize {
        self.layout.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }

    /// Read the flat parameters (waits for queued work).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        Readback::f32(gpu, &self.values, self.len())
    }

    /// Read the flat gradients (waits for queued work).
    pub fn read_grads(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        Readback::f32(gpu, &self.grads, self.len())
    }

    /// Overwrite the flat parameters.
    pub fn upload(&self, gpu: &Gpu, values: &[f32]) {
        assert_eq!(values.len(), self.len(), "flat parameter length");
        gpu.queue.write_buffer(&self.values, 0, bytemuck::cast_slice(values));
    }

    /// Overwrite the flat gradients (tests; the tape accumulates into them on the GPU).
    pub fn upload_grads(&self, gpu: &Gpu, grads: &[f32]) {
        assert_eq!(grads.len(), self.len(), "flat gradient length");
        gpu.queue.write_buffer(&self.grads, 0, bytemuck::cast_slice(grads));
    }
}

/// torch.optim.Adam's hyper-parameters (f64 as PyTorch's Python floats; the kernel gets f32).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate (a schedule may override it per step; see [`Adam::step`]).
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
struct AdamParams {
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

/// What one [`Adam::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// False when the gradients had inf/NaN and the step was skipped.
    pub applied: bool,
    /// The learning rate of the step.
    pub lr: f64,
    /// The loss scale the gradients were divided by.
    pub scale: f32,
    /// The loss scale for the next step.
    pub next_scale: f32,
}

/// Adam's moments and recorded kernels over one [`Params`] set.
pub struct Adam {
    pub config: AdamConfig,
    len: usize,
    /// Applied steps (torch's `state['step']`).
    steps: u64,
    scaler_enabled: bool,
    params: AdamParams,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    /// `[norm, coef]` of the last clipping.
    clip: wgpu::Buffer,
    _partials: wgpu::Buffer,
    zero_grad: Dispatch,
    reset_inf: Dispatch,
    check: Dispatch,
    norm_partial: Dispatch,
    norm_finish: Dispatch,
    step: Dispatch,
}

impl Adam {
    /// Moments (zero) for `params` and the kernels bound to them and to `scaler`'s buffers.
    pub fn new(gpu: &Gpu, config: AdamConfig, params: &Params, scaler: &LossScaler) -> Result<Adam> {
        config.validate()?;
        let len = params.len();
        let len4 = len / 4;
        let zeros = vec![0f32; len];
        let m = storage_buffer(gpu, "adam m", bytemuck::cast_slice(&zeros))?;
        let v = storage_buffer(gpu, "adam v", bytemuck::cast_slice(&zeros))?;
        let clip = storage_buffer(gpu, "grad norm", bytemuck::cast_slice(&[0f32, 1.0]))?;
        let [gx, gy] = grid_1d(gpu, len4, WG);
        let groups = gx as usize * gy as usize;
        let partials = storage_buffer(gpu, "grad norm partials", bytemuck::cast_slice(&vec![0f32; groups]))?;
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
        let f32p = Precision::F32;
        let [fx, fy] = grid_1d(gpu, len, WG);
        let zero_grad = Dispatch::new(
            gpu,
            &FILL,
            f32p,
            &AdamParams { count: len as u32, ..base },
            &[(8, &params.grads)],
            [fx, fy, 1],
        )?;
        let found = scaler.found_inf_buffer();
        let reset_inf = Dispatch::new(gpu, &FILL, f32p, &AdamParams { count: 1, ..base }, &[(8, found)], [1, 1, 1])?;
        let scale = scaler.scale_buffer();
        let check = Dispatch::new(gpu, &CHECK, f32p, &base, &[(2, &params.grads), (5, scale), (6, found)], grid)?;
        let norm_partial =
            Dispatch::new(gpu, &NORM_PARTIAL, f32p, &base, &[(2, &params.grads), (5, scale), (7, &partials)], grid)?;
        let norm_finish = Dispatch::new(gpu, &NORM_FINISH, f32p, &base, &[(7, &partials), (9, &clip)], [1, 1, 1])?;
        let step_buffers =
            [(1, &params.values), (2, &params.grads), (3, &m), (4, &v), (5, scale), (6, found), (9, &clip)];
        let step = Dispatch::new(gpu, &ADAM_STEP, f32p, &base, &step_buffers, grid)?;
        Ok(Adam {
            config,
            len,
            steps: 0,
            scaler_enabled: scaler.enabled(),
            params: base,
            m,
            v,
            clip,
            _partials: partials,
            zero_grad,
            reset_inf,
            check,
            norm_partial,
            norm_finish,
            step,
        })
    }

    /// Fill the gradients with zeros: record at the start of each accumulation cycle.
    pub fn zero_grad(&self) -> &Dispatch {
        &self.zero_grad
    }

    /// The kernels of one optimizer step, in order (see the module notes). Call
    /// [`Adam::prepare`] before submitting them and [`Adam::finish`] after.
    pub fn step_dispatches(&self) -> Vec<&Dispatch> {
        let mut d = vec![&self.reset_inf];
        if self.scaler_enabled {
            d.push(&self.check);
        }
        if self.config.max_grad_norm.is_some() {
            d.push(&self.norm_partial);
            d.push(&self.norm_finish);
        }
        d.push(&self.step);
        d
    }

    /// Write the step kernel's uniforms for learning rate `lr` at step t = [`Adam::steps`] + 1
    /// (bias corrections in f64). Takes effect at the next submission.
    pub fn prepare(&mut self, gpu: &Gpu, lr: f64) {
        let t = (self.steps + 1) as i32;
        let (b1, b2) = self.config.betas;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        self.params.step_size = (lr / bc1) as f32;
        self.params.bc2_sqrt = bc2.sqrt() as f32;
        self.step.update(gpu, &self.params);
    }

    /// Count the step if it was applied (found_inf was clear).
    pub fn finish(&mut self, applied: bool) {
        if applied {
            self.steps += 1;
        }
    }

    /// One optimizer step with learning rate `lr`: prepare, submit, read found_inf (scaler
    /// enabled), update the scaler and the step count.
    pub fn step(&mut self, gpu: &Gpu, scaler: &mut LossScaler, lr: f64) -> Result<StepReport> {
        let scale = scaler.scale();
        self.prepare(gpu, lr);
        gpu.run(&self.step_dispatches())?;
        let found = scaler.enabled() && scaler.read_found_inf(gpu)?;
        let next_scale = scaler.update(gpu, found);
        self.finish(!found);
        Ok(StepReport { applied: !found, lr, scale, next_scale })
    }

    /// Applied steps so far (torch's `state['step']`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Set the applied-step count (resuming from a checkpoint).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// The global L2 norm of the unscaled gradients computed by the last step (before clipping);
    /// `None` without clipping (it is only computed then).
    pub fn read_grad_norm(&self, gpu: &Gpu) -> Result<Option<f32>> {
        if self.config.max_grad_norm.is_none() {
            return Ok(None);
        }
        Ok(Some(Readback::f32(gpu, &self.clip, 1)?[0]))
    }

    /// The flat moments (m, v) (waits for queued work).
    pub fn read_moments(&self, gpu: &Gpu) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((Readback::f32(gpu, &self.m, self.len)?, Readback::f32(gpu, &self.v, self.len)?))
    }

    /// Overwrite the moments (resuming from a checkpoint).
    pub fn upload_moments(&self, gpu: &Gpu, m: &[f32], v: &[f32]) -> Result<()> {
        if m.len() != self.len || v.len() != self.len {
            return Err(Error::Shape(format!(
                "Adam moments of {} and {} values for {} parameters",
                m.len(),
                v.len(),
                self.len
            )));
        }
        gpu.queue.write_buffer(&self.m, 0, bytemuck::cast_slice(m));
        gpu.queue.write_buffer(&self.v, 0, bytemuck::cast_slice(v));
        Ok(())
    }
}

/// f64 CPU versions of the optimizer step and of gradient clipping.
pub mod reference {
    use super::AdamConfig;

    /// Adam's moments and applied-step count.
    #[derive(Clone, Debug, PartialEq)]
    pub struct State {
        pub m: Vec<f64>,
        pub v: Vec<f64>,
        pub steps: u64,
    }

    impl State {
        pub fn new(len: usize) -> State {
            State { m: vec![0.0; len], v: vec![0.0; len], steps: 0 }
        }
    }

    /// torch.nn.utils.clip_grad_norm_: the global L2 norm and the factor
    /// `min(1, max_norm / (norm + 1e-6))` the gradients are multiplied by.
    pub fn clip_coefficient(grads: &[f64], max_norm: f64) -> (f64, f64) {
        let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
        (norm, (max_norm / (norm + 1e-6)).min(1.0))
    }

    /// One step as the GPU does it: gradients `grads` scaled by `scale` are unscaled; any inf/NaN
    /// skips the step (returns false, nothing changes); else clipping (`cfg.max_grad_norm`) and
    /// torch.optim.Adam's update with learning rate `lr`.
    pub fn step(params: &mut [f64], grads: &[f64], scale: f64, state: &mut State, cfg: &AdamConfig, lr: f64) -> bool {
        assert_eq!(params.len(), grads.len(), "parameter and gradient lengths");
        let mut g: Vec<f64> = grads.iter().map(|g| g / scale).collect();
        if g.iter().any(|v| !v.is_finite()) {
            return false;
        }
        if let Some(max_norm) = cfg.max_grad_norm {
            let (_, coef) = clip_coefficient(&g, max_norm);
            g.iter_mut().for_each(|v| *v *= coef);
        }
        state.steps += 1;
        let t = state.steps as i32;
        let (b1, b2) = cfg.betas;
        let step_size = lr / (1.0 - b1.powi(t));
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for (i, p) in params.iter_mut().enumerate() {
            let gi = g[i] + cfg.weight_decay * *p;
            state.m[i] = b1 * state.m[i] + (1.0 - b1) * gi;
            state.v[i] = b2 * state.v[i] + (1.0 - b2) * gi * gi;
            *p -= step_size * state.m[i] / (state.v[i].sqrt() / bc2_sqrt + cfg.eps);
        }
        true
    }
}
