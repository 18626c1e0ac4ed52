//! The models `infer` can run: the seed U-Net (weights) or the classical solver (no weights).

use crate::error::Result;
use crate::gpu::{Gpu, Precision};
use crate::nn::Plan;
use crate::nn::unet::UNet;
use crate::psi::classical::Classical;

pub enum Model {
    UNet(UNet),
    Classical(Classical),
}

impl Model {
    pub fn name(&self) -> String {
        match self {
            Model::UNet(m) => format!("unet (base {})", m.config.base),
            Model::Classical(c) => {
                format!("classical ({} lasers x {} buckets)", c.config.wavelengths.len(), c.config.buckets)
            }
        }
    }

    pub fn in_channels(&self) -> usize {
        match self {
            Model::UNet(m) => m.config.n_channels,
            Model::Classical(c) => c.in_channels(),
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Model::UNet(m) => m.config.n_classes,
            Model::Classical(c) => c.out_channels(),
        }
    }

    /// Storage precision of the model's input and activations.
    pub fn precision(&self) -> Precision {
        match self {
            Model::UNet(m) => m.precision,
            Model::Classical(_) => Precision::F32,
        }
    }

    /// The `input_scale` the model was trained with, if it says.
    pub fn input_scale(&self) -> Option<f32> {
        match self {
            Model::UNet(m) => m.input_scale,
            Model::Classical(_) => None,
        }
    }

    pub fn weight_bytes(&self) -> u64 {
        match self {
            Model::UNet(m) => m.weight_bytes(),
            Model::Classical(_) => 0,
        }
    }

    /// Buffers and dispatches for batches of `n` tiles of `h` x `w`.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        match self {
            Model::UNet(m) => m.plan(gpu, n, h, w),
            Model::Classical(c) => c.plan(gpu, n, h, w),
        }
    }
}
