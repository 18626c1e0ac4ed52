//! Dynamic loss scaling with PyTorch `torch.amp.GradScaler` semantics.
//!
//! The scale lives in a GPU f32 buffer ([`LossScaler::scale_buffer`]) that the loss backward
//! multiplies its gradient by and Adam divides the gradients by, so no host round trip sits
//! between them. Adam's `check` kernel sets the u32 flag [`LossScaler::found_inf_buffer`] when an
//! unscaled gradient is inf or NaN, and its step kernel then skips the update on the GPU. After the
//! step the host reads the flag (one u32 per step) and calls [`LossScaler::update`]:
//! on inf/NaN the scale is multiplied by `backoff` (0.5) and the growth counter restarts; after
//! `interval` (2000) consecutive clean steps it is multiplied by `growth` (2).
//!
//! For f32 training the scaler can be disabled: the scale stays 1, the check is not recorded and
//! every step is applied (as PyTorch without a GradScaler).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Readback, storage};

/// GradScaler's parameters (PyTorch's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerConfig {
    pub enabled: bool,
    pub init_scale: f32,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: u32,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            enabled: true,
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl ScalerConfig {
    /// No scaling: scale 1, no inf check.
    pub fn disabled() -> Self {
        ScalerConfig { enabled: false, init_scale: 1.0, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = |v: f32| v.is_finite() && v > 0.0;
        if !(ok(self.init_scale) && ok(self.growth_factor) && ok(self.backoff_factor)) {
            return Err(Error::Invalid(format!(
                "loss scaler: scale {}, growth {} and backoff {} must be positive and finite",
                self.init_scale, self.growth_factor, self.backoff_factor
            )));
        }
        if self.growth_interval == 0 {
            return Err(Error::Invalid("loss scaler: the growth interval must be at least 1 step".into()));
        }
        Ok(())
    }
}

/// The loss scale and the found-inf flag on the GPU, and the host's growth bookkeeping.
pub struct LossScaler {
    pub config: ScalerConfig,
    scale: f32,
    growth_tracker: u32,
    scale_buf: wgpu::Buffer,
    found_inf: wgpu::Buffer,
}

impl LossScaler {
    pub fn new(gpu: &Gpu, config: ScalerConfig) -> Result<LossScaler> {
        config.validate()?;
        let scale = if config.enabled { config.init_scale } else { 1.0 };
        let scale_buf = storage(gpu, "loss scale", bytemuck::bytes_of(&scale))?;
        let found_inf = storage(gpu, "found inf", bytemuck::bytes_of(&0u32))?;
        Ok(LossScaler { config, scale, growth_tracker: 0, scale_buf, found_inf })
    }

    /// A scaler that does nothing (f32 training): scale 1, every step applied.
    pub fn disabled(gpu: &Gpu) -> LossScaler {
        Self::new(gpu, ScalerConfig::disabled()).expect("the disabled configuration is valid")
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The current scale (as in the GPU buffer).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Consecutive clean steps since the last change of scale.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// Set the growth counter (resuming from a checkpoint; tests).
    pub fn set_growth_tracker(&mut self, steps: u32) {
        self.growth_tracker = steps;
    }

    /// Set the scale (resuming from a checkpoint) and write it to the GPU buffer.
    pub fn set_scale(&mut self, gpu: &Gpu, scale: f32) {
        self.scale = scale;
        gpu.queue.write_buffer(&self.scale_buf, 0, bytemuck::bytes_of(&scale));
    }

    /// f32 `[scale]`: bound by the loss backward (multiplies) and Adam (divides).
    pub fn scale_buffer(&self) -> &wgpu::Buffer {
        &self.scale_buf
    }

    /// u32 `[found_inf]`: reset and set by Adam's kernels, read by [`LossScaler::read_found_inf`].
    pub fn found_inf_buffer(&self) -> &wgpu::Buffer {
        &self.found_inf
    }

    /// Read the flag of the last step (waits for queued work).
    pub fn read_found_inf(&self, gpu: &Gpu) -> Result<bool> {
        let b = Readback::bytes(gpu, &self.found_inf, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0)
    }

    /// GradScaler.update after a step: back off on inf/NaN (the step was skipped on the GPU), grow
    /// after `growth_interval` consecutive clean steps. Writes the new scale to the GPU buffer
    /// when it changes. Does nothing when disabled. Returns the new scale.
    pub fn update(&mut self, gpu: &Gpu, found_inf: bool) -> f32 {
        if !self.config.enabled {
            return self.scale;
        }
        let old = self.scale;
        if found_inf {
            self.scale *= self.config.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.config.growth_interval {
                let grown = self.scale * self.config.growth_factor;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            }
        }
        if self.scale != old {
            gpu.queue.write_buffer(&self.scale_buf, 0, bytemuck::bytes_of(&self.scale));
        }
        self.scale
    }
}
