//! Adam on f32 master weights: the flat parameter set ([`Params`], [`ParamLayout`]) and the
//! optimizer ([`Adam`]: moments, step count, bias corrections) around the kernels of
//! `ops::adam`, with the loss scaler; [`HostAdam`] is the same update on the host for the small
//! models that live there (Scaled-cPIKAN).
//!
//! **Parameters** live in one flat packed f32 buffer ([`Params::values`]), each tensor in its
//! PyTorch layout at an offset of the [`ParamLayout`] (aligned to [`PARAM_ALIGN`] elements =
//! 256 bytes, so a tensor can be bound on its own as a buffer range on every device); the
//! gradients ([`Params::grads`]) and Adam's moments share that layout. A model's kernels bind
//! those ranges directly ([`Params::value`], [`Params::grad`]; the U-Net trainer does): they read
//! each parameter from its range of the values and *accumulate* (`+=`) its gradient into its
//! range of the gradients, and Adam updates both whole buffers in place, so no copies travel
//! between a model and its optimizer. Padding is never bound: it stays 0 in the gradients, and
//! Adam leaves zero padding at zero.
//!
//! [`Adam::step`] runs one step (see `ops::adam` for the kernels) with one submission and one u32
//! readback (found_inf), then updates the scaler and the step count. A trainer that records the
//! step into its own encoder calls [`Adam::prepare`] before submitting and [`Adam::finish`] after
//! reading the flag.

use num_traits::Float;

use crate::error::{Error, Result};
use crate::gpu::{Binding, Dispatch, Gpu, Readback, storage};
use crate::ops::adam::reference::{self, State};
use crate::ops::adam::{AdamBuffers, AdamKernels};
use crate::optim::scaler::LossScaler;

pub use crate::ops::adam::AdamConfig;

/// Alignment (elements) of every tensor's offset in the flat buffer, and of its total length:
/// 64 f32 = 256 bytes, the largest `min_storage_buffer_offset_alignment` WebGPU allows.
pub const PARAM_ALIGN: usize = 64;

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
        let values = storage(gpu, "parameters", bytemuck::cast_slice(values))?;
        let grads = storage(gpu, "gradients", bytemuck::cast_slice(&vec![0f32; layout.len()]))?;
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

    fn entry(&self, name: &str) -> Result<&ParamEntry> {
        self.layout.get(name).ok_or_else(|| Error::Invalid(format!("no parameter '{name}' in this model")))
    }

    /// Parameter `name` in the flat values: the range a kernel reads it from.
    pub fn value(&self, name: &str) -> Result<Binding<'_>> {
        Ok(Binding::range(&self.values, self.entry(name)?.byte_range()))
    }

    /// The gradient of `name` in the flat gradients: the range a kernel accumulates it into.
    pub fn grad(&self, name: &str) -> Result<Binding<'_>> {
        Ok(Binding::range(&self.grads, self.entry(name)?.byte_range()))
    }

    /// Overwrite the tensors named by `entries` with `values`, their concatenation; only those
    /// bytes travel.
    pub fn upload_entries(&self, gpu: &Gpu, entries: &[ParamEntry], values: &[f32]) -> Result<()> {
        let need: usize = entries.iter().map(|e| e.len).sum();
        if values.len() != need {
            return Err(Error::Shape(format!("{} values for parameters of {need}", values.len())));
        }
        let mut at = 0;
        for e in entries {
            let entry = self.entry(&e.name)?;
            if entry.len != e.len {
                return Err(Error::Shape(format!("parameter {}: {} values, not {}", e.name, entry.len, e.len)));
            }
            let v = bytemuck::cast_slice(&values[at..at + e.len]);
            gpu.queue.write_buffer(&self.values, entry.offset as u64 * 4, v);
            at += e.len;
        }
        Ok(())
    }

    /// The gradients of the tensors named by `entries`, concatenated (one readback).
    pub fn read_grad_entries(&self, gpu: &Gpu, entries: &[ParamEntry]) -> Result<Vec<f32>> {
        let parts: Vec<(Binding, u64)> =
            entries.iter().map(|e| self.grad(&e.name).map(|b| (b, b.size()))).collect::<Result<_>>()?;
        Ok(bytemuck::pod_collect_to_vec(&Readback::concat(gpu, &parts)?))
    }
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
    kernels: AdamKernels,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    /// `[norm, coef]` of the last clipping.
    clip: wgpu::Buffer,
    _partials: wgpu::Buffer,
}

impl Adam {
    /// Moments (zero) for `params` and the kernels bound to them and to `scaler`'s buffers.
    pub fn new(gpu: &Gpu, config: AdamConfig, params: &Params, scaler: &LossScaler) -> Result<Adam> {
        config.validate()?;
        let len = params.len();
        let zeros = vec![0f32; len];
        let m = storage(gpu, "adam m", bytemuck::cast_slice(&zeros))?;
        let v = storage(gpu, "adam v", bytemuck::cast_slice(&zeros))?;
        let clip = storage(gpu, "grad norm", bytemuck::cast_slice(&[0f32, 1.0]))?;
        let groups = AdamKernels::partials(gpu, len);
        let partials = storage(gpu, "grad norm partials", bytemuck::cast_slice(&vec![0f32; groups]))?;
        let buffers = AdamBuffers {
            values: &params.values,
            grads: &params.grads,
            m: &m,
            v: &v,
            clip: &clip,
            partials: &partials,
            scale: scaler.scale_buffer(),
            found_inf: scaler.found_inf_buffer(),
        };
        let kernels = AdamKernels::new(gpu, &config, len, buffers)?;
        Ok(Adam { config, len, steps: 0, scaler_enabled: scaler.enabled(), kernels, m, v, clip, _partials: partials })
    }

    /// Fill the gradients with zeros: record at the start of each accumulation cycle.
    pub fn zero_grad(&self) -> &Dispatch {
        self.kernels.zero_grad()
    }

    /// The kernels of one optimizer step, in order (see `ops::adam`). Call [`Adam::prepare`]
    /// before submitting them and [`Adam::finish`] after.
    pub fn step_dispatches(&self) -> Vec<&Dispatch> {
        self.kernels.step(self.scaler_enabled, self.config.max_grad_norm.is_some())
    }

    /// Write the step kernel's uniforms for learning rate `lr` at step t = [`Adam::steps`] + 1
    /// (bias corrections in f64). Takes effect at the next submission.
    pub fn prepare(&mut self, gpu: &Gpu, lr: f64) {
        let t = (self.steps + 1) as i32;
        let (b1, b2) = self.config.betas;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        self.kernels.set_step(gpu, (lr / bc1) as f32, bc2.sqrt() as f32);
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

/// torch.optim.Adam on host vectors (f32 or f64): the update of `ops::adam::reference`, for
/// models whose parameters live on the host (a Scaled-cPIKAN has a few thousand).
pub struct HostAdam<T> {
    pub config: AdamConfig,
    lr: T,
    state: State<T>,
}

impl<T: Float + std::iter::Sum> HostAdam<T> {
    /// Zero moments for `len` parameters, learning rate `lr`, PyTorch's other defaults.
    pub fn new(len: usize, lr: T) -> HostAdam<T> {
        HostAdam { config: AdamConfig::default(), lr, state: State::new(len) }
    }

    /// One step on `params` with gradients `grads`; false (nothing changed) when a gradient is
    /// not finite.
    pub fn step(&mut self, params: &mut [T], grads: &[T]) -> bool {
        reference::step(params, grads, T::one(), &mut self.state, &self.config, self.lr)
    }
}
