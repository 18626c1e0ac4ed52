//! The classical multi-wavelength solver as a model (no weights): its configuration and the
//! constant table on the GPU, planned per batch and tile size like every model. The kernel and its
//! CPU reference are `ops::classical`.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Plan, Precision, Tensor, storage_f32};
use crate::ops::classical::{ClassicalConfig, Unwrap, classical, constants, robust, robust_passes, state_stride};

/// The classical solver on the GPU: its configuration and constant table.
pub struct Classical {
    pub config: ClassicalConfig,
    consts: wgpu::Buffer,
}

impl Classical {
    pub fn new(gpu: &Gpu, config: ClassicalConfig) -> Result<Classical> {
        config.validate()?;
        let consts = storage_f32(gpu, "classical constants", &constants(&config))?;
        Ok(Classical { config, consts })
    }

    /// Lasers × buckets.
    pub fn in_channels(&self) -> usize {
        self.config.in_channels()
    }

    /// Height, then quality and the reason code if the configuration asks for them.
    pub fn out_channels(&self) -> usize {
        self.config.out_channels()
    }

    /// Pixels of reach of the solver: an output pixel depends on the inputs this far away
    /// (0 per pixel; the robust prior's radius × passes), so a tile computed with that much halo
    /// equals the whole frame there.
    pub fn halo(&self) -> usize {
        match self.config.unwrap {
            Unwrap::PerPixel | Unwrap::Weighted => 0,
            Unwrap::Robust => robust::halo(),
        }
    }

    /// Allocate an f32 input `[n, L·N, h, w]` and output `[n, out_c, h, w]` and record the solver's
    /// dispatch (robust: its state and two height planes in `buffers`, then its passes). Always
    /// f32: heights of ±100 µm need its 24 bits.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::Shape(format!("classical solver on an empty batch: {n} images of {h} x {w}")));
        }
        let input = Tensor::new(gpu, [n, self.in_channels(), h, w], Precision::F32, "classical input")?;
        let output = Tensor::new(gpu, [n, self.out_channels(), h, w], Precision::F32, "classical output")?;
        if self.config.unwrap != Unwrap::Robust {
            let d = classical(gpu, &self.config, &self.consts, &input, &output)?;
            let bytes = input.buffer.size() + output.buffer.size();
            return Ok(Plan { input, output, dispatches: vec![d], buffers: Vec::new(), bytes });
        }
        let state = Tensor::new(gpu, [n, state_stride(&self.config), h, w], Precision::F32, "robust state")?;
        let a = Tensor::new(gpu, [n, 1, h, w], Precision::F32, "robust heights a")?;
        let b = Tensor::new(gpu, [n, 1, h, w], Precision::F32, "robust heights b")?;
        let dispatches = robust_passes(gpu, &self.config, &self.consts, &input, &output, &state, [&a, &b])?;
        let buffers = vec![state, a, b];
        let bytes = [&input, &output].into_iter().chain(&buffers).map(|t| t.buffer.size()).sum();
        Ok(Plan { input, output, dispatches, buffers, bytes })
    }

    /// Plan, upload `frame` (`[n, L·N, h, w]`), run and read back `[n, out_c, h, w]`. For tests and
    /// small frames; big frames go through a reused [`Plan`].
    pub fn solve(&self, gpu: &Gpu, frame: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let want = n * self.in_channels() * h * w;
        if frame.len() != want {
            return Err(Error::Shape(format!(
                "{} values for a classical frame of {n} x {} x {h} x {w} ({want} values)",
                frame.len(),
                self.in_channels()
            )));
        }
        let plan = self.plan(gpu, n, h, w)?;
        plan.input.upload(gpu, frame);
        gpu.run(&plan.dispatches.iter().collect::<Vec<_>>())?;
        plan.output.to_f32(gpu)
    }
}
