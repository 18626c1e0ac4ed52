//! The classical multi-wavelength solver as a model (no weights): its configuration and the
//! constant table on the GPU, planned per batch and tile size like every model. The kernel and its
//! CPU reference are `ops::classical`.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Plan, Precision, Tensor, storage_f32};
use crate::ops::classical::{ClassicalConfig, classical, constants};

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

    /// Pixels of input around a pixel that its output depends on: 0, every unwrap today decides
    /// each pixel from its own buckets.
    pub fn halo(&self) -> usize {
        0
    }

    /// Height, then quality and the reason code if the configuration asks for them.
    pub fn out_channels(&self) -> usize {
        self.config.out_channels()
    }

    /// Allocate an f32 input `[n, L·N, h, w]` and output `[n, out_c, h, w]` and record the solver's
    /// one dispatch. Always f32: heights of ±100 µm need its 24 bits.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::Shape(format!("classical solver on an empty batch: {n} images of {h} x {w}")));
        }
        let input = Tensor::new(gpu, [n, self.in_channels(), h, w], Precision::F32, "classical input")?;
        let output = Tensor::new(gpu, [n, self.out_channels(), h, w], Precision::F32, "classical output")?;
        let d = classical(gpu, &self.config, &self.consts, &input, &output)?;
        let bytes = input.buffer.size() + output.buffer.size();
        Ok(Plan { input, output, dispatches: vec![d], buffers: Vec::new(), bytes })
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
