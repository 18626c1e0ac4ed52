//! The models `infer` can run: the seed U-Net (weights) or the classical solver (no weights).

use crate::error::Result;
use crate::gpu::Plan;
use crate::gpu::Tensor;
use crate::gpu::{Gpu, Precision};
use crate::nn::classical::Classical;
use crate::nn::unet::UNet;
use crate::ops::classical::Unwrap;
use crate::ops::conv::{ConvWeights, conv};

#[allow(clippy::large_enum_variant)] // one model per run
pub enum Model {
    UNet(UNet),
    Classical(Classical),
    /// Returns its first input channel (a 1x1 convolution selecting it): the stitching check.
    FirstChannel(ConvWeights),
}

impl Model {
    pub fn name(&self) -> String {
        match self {
            Model::UNet(m) => match &m.trained_heights {
                Some(r) => format!("unet (base {}, trained on heights {} µm)", m.config.base, r.replace(',', "..")),
                None => format!("unet (base {})", m.config.base),
            },
            Model::Classical(c) => {
                let unwrap = match c.config.unwrap {
                    Unwrap::PerPixel => String::new(),
                    other => format!(", {} unwrap", other.name()),
                };
                format!("classical ({} lasers x {} buckets{unwrap})", c.config.lasers(), c.config.psi.buckets)
            }
            Model::FirstChannel(_) => "first channel".into(),
        }
    }

    pub fn in_channels(&self) -> usize {
        match self {
            Model::UNet(m) => m.config.n_channels,
            Model::Classical(c) => c.in_channels(),
            Model::FirstChannel(w) => w.cin,
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Model::UNet(m) => m.config.n_classes,
            Model::Classical(c) => c.out_channels(),
            Model::FirstChannel(_) => 1,
        }
    }

    /// Storage precision of the model's input and activations.
    pub fn precision(&self) -> Precision {
        match self {
            Model::UNet(m) => m.precision,
            Model::Classical(_) => Precision::F32,
            Model::FirstChannel(w) => w.precision,
        }
    }

    /// The `input_scale` the model was trained with, if it says.
    pub fn input_scale(&self) -> Option<f32> {
        match self {
            Model::UNet(m) => m.input_scale,
            Model::Classical(_) | Model::FirstChannel(_) => None,
        }
    }

    pub fn weight_bytes(&self) -> u64 {
        match self {
            Model::UNet(m) => m.weight_bytes(),
            Model::Classical(_) => 0,
            Model::FirstChannel(w) => w.bytes(),
        }
    }

    /// Buffers and dispatches for batches of `n` tiles of `h` x `w`.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        match self {
            Model::UNet(m) => m.plan(gpu, n, h, w),
            Model::Classical(c) => c.plan(gpu, n, h, w),
            Model::FirstChannel(wt) => {
                let input = Tensor::new(gpu, [n, wt.cin, h, w], wt.precision, "input")?;
                let output = Tensor::new(gpu, [n, 1, h, w], wt.precision, "output")?;
                let dispatches = vec![conv(gpu, wt, input.view(), output.view())?];
                let bytes = input.buffer.size() + output.buffer.size();
                Ok(Plan { input, output, dispatches, buffers: vec![], bytes })
            }
        }
    }

    /// The first-channel model for `channels`-channel frames.
    pub fn first_channel(gpu: &Gpu, channels: usize, precision: Precision) -> Result<Model> {
        let mut w = vec![0.0; channels];
        w[0] = 1.0;
        Ok(Model::FirstChannel(ConvWeights::new(gpu, precision, &w, [1, channels, 1], &[1.0], &[0.0], false)?))
    }
}
