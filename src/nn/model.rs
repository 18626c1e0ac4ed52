//! The models `infer` can run: the seed U-Net or the residual model (weights), or the classical
//! solver (no weights).

use crate::error::Result;
use crate::gpu::Plan;
use crate::gpu::Tensor;
use crate::gpu::{Gpu, Precision};
use crate::nn::classical::Classical;
use crate::nn::residual::Residual;
use crate::nn::unet::UNet;
use crate::ops::classical::{Search, Unwrap};
use crate::ops::conv::select::Conv;
use crate::ops::conv::{ConvWeights, conv};

/// How far a model's output at a pixel reaches into its input: what the tiler needs to cut a
/// frame into tiles that give the whole frame's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The output at a pixel depends only on input within `halo` pixels (the classical solver:
    /// 0 per pixel): tiles overlapping by `2 · halo`, each giving its core, equal the whole frame
    /// bit for bit. The residual model's halo covers its classical part exactly and gives its
    /// bounded correction 64 pixels of context (see [`crate::nn::residual`]).
    Local { halo: usize },
    /// A receptive field wider than any practical tile overlap (the U-Net's: four poolings of
    /// 3 x 3 convolutions): tiles overlap by `overlap` unless told otherwise, and their seams are
    /// feathered.
    Wide { overlap: usize },
}

/// The U-Net's overlap by default: a quarter of the default 512-pixel tile.
pub const UNET_OVERLAP: usize = 128;

#[allow(clippy::large_enum_variant)] // one model per run
pub enum Model {
    UNet(UNet),
    Classical(Classical),
    Residual(Residual),
    /// Returns its first input channel (a 1x1 convolution selecting it): the stitching check.
    FirstChannel(ConvWeights),
}

/// What a U-Net's name says of its 3x3 kernel: nothing for the default direct one.
fn conv_note(m: &UNet) -> String {
    match (m.conv, m.winograd_layers()) {
        (Conv::Direct, _) => String::new(),
        (Conv::Auto, Some([w, all])) => format!(", conv auto: winograd in {w} of {all} 3x3 layers"),
        (conv, _) => format!(", conv {}", conv.name()),
    }
}

impl Model {
    pub fn name(&self) -> String {
        match self {
            Model::UNet(m) => {
                let heights = match &m.trained_heights {
                    Some(r) => format!(", trained on heights {} µm", r.replace(',', "..")),
                    None => String::new(),
                };
                format!("unet (base {}{heights}{})", m.config.base, conv_note(m))
            }
            Model::Classical(c) => {
                let mut unwrap = match c.config.unwrap {
                    Unwrap::PerPixel => String::new(),
                    other => format!(", {} unwrap", other.name()),
                };
                if c.config.search == Search::Exhaustive {
                    unwrap += ", exhaustive search";
                }
                format!("classical ({} lasers x {} buckets{unwrap})", c.config.lasers(), c.config.psi.buckets)
            }
            Model::Residual(r) => {
                format!("residual (robust classical + unet base {}, bound {} µm)", r.unet.config.base, r.bound)
            }
            Model::FirstChannel(_) => "first channel".into(),
        }
    }

    pub fn in_channels(&self) -> usize {
        match self {
            Model::UNet(m) => m.config.n_channels,
            Model::Classical(c) => c.in_channels(),
            Model::Residual(r) => r.in_channels(),
            Model::FirstChannel(w) => w.cin,
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Model::UNet(m) => m.config.n_classes,
            Model::Classical(c) => c.out_channels(),
            Model::Residual(_) => 1,
            Model::FirstChannel(_) => 1,
        }
    }

    /// What the tiler must know of the model's reach (see [`Reach`]).
    pub fn reach(&self) -> Reach {
        match self {
            Model::UNet(_) => Reach::Wide { overlap: UNET_OVERLAP },
            Model::Classical(c) => Reach::Local { halo: c.halo() },
            Model::Residual(r) => Reach::Local { halo: r.halo() },
            // The stitching check: an identity model, blended as the U-Net is.
            Model::FirstChannel(_) => Reach::Wide { overlap: UNET_OVERLAP },
        }
    }

    /// Storage precision of the model's input and activations.
    pub fn precision(&self) -> Precision {
        match self {
            Model::UNet(m) => m.precision,
            Model::Classical(_) => Precision::F32,
            Model::Residual(r) => r.unet.precision,
            Model::FirstChannel(w) => w.precision,
        }
    }

    /// The `input_scale` the model was trained with, if it says.
    pub fn input_scale(&self) -> Option<f32> {
        match self {
            Model::UNet(m) => m.input_scale,
            Model::Residual(r) => r.unet.input_scale,
            Model::Classical(_) | Model::FirstChannel(_) => None,
        }
    }

    pub fn weight_bytes(&self) -> u64 {
        match self {
            Model::UNet(m) => m.weight_bytes(),
            Model::Classical(_) => 0,
            Model::Residual(r) => r.unet.weight_bytes(),
            Model::FirstChannel(w) => w.bytes(),
        }
    }

    /// Buffers and dispatches for batches of `n` tiles of `h` x `w`.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        match self {
            Model::UNet(m) => m.plan(gpu, n, h, w),
            Model::Classical(c) => c.plan(gpu, n, h, w),
            Model::Residual(r) => r.plan(gpu, n, h, w),
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
