//! The residual model: the robust classical height plus a bounded correction from a U-Net,
//! `h = h_classical + bound · tanh(u)`.
//!
//! Per tile batch: the robust classical solver ([`Classical`], `Unwrap::Robust`, with its
//! contrast channel when a feature needs it) solves the scaled buckets; the U-Net's input is the
//! same scaled buckets followed by the [`Feature`]s of that solution (the weights name them);
//! the U-Net's one output channel `u` becomes a correction of at most `bound` µm, well under a
//! quarter fringe of the first laser (`λ1/8`), so it cannot move a pixel to another fringe
//! order. A pixel the solver leaves NaN stays NaN; its features are 0 and a non-finite bucket
//! enters as 0, so it feeds only finite numbers to its neighbours' convolutions.
//!
//! Weights: the U-Net's PyTorch state_dict names, with `inc.double_conv.0.weight` reading
//! buckets + features channels, and the metadata `psi_gpu_model = residual`, `features` (names,
//! comma-separated, in input order) and `bound` (µm, default [`DEFAULT_BOUND`]).
//!
//! Reach: the tiles are cut (each pixel from the one tile whose core holds it) with a halo of
//! the classical solver's plus half the U-Net's default overlap, so the classical heights — and
//! the NaN positions — are the whole frame's bit for bit, and the correction sees at least 64
//! pixels of context around every pixel it gives.
//!
//! Training on generated frames, supervised on the truth, is [`train`].

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Plan, Precision, Tensor};
use crate::io::weights::Weights;
use crate::nn::classical::Classical;
use crate::nn::model::UNET_OVERLAP;
use crate::nn::unet::UNet;
use crate::ops::classical::{ClassicalConfig, Unwrap};
use crate::ops::residual::{Feature, MAX_FEATURES, combine, features};

pub mod train;

/// The metadata key naming a psi-gpu model kind, and its value for this one.
pub const MODEL_KEY: &str = "psi_gpu_model";
pub const MODEL_NAME: &str = "residual";
/// The correction's bound (µm) when the weights do not say.
pub const DEFAULT_BOUND: f32 = 0.1;

/// A residual model on the GPU: its classical solver, U-Net, features and bound.
pub struct Residual {
    pub classical: Classical,
    pub unet: UNet,
    pub features: Vec<Feature>,
    /// µm.
    pub bound: f32,
}

/// The weights say they are a residual model.
pub fn is_residual(wts: &Weights) -> bool {
    wts.metadata.get(MODEL_KEY).is_some_and(|v| v.trim() == MODEL_NAME)
}

/// The `features` and `bound` of the weights' metadata.
pub fn spec(wts: &Weights) -> Result<(Vec<Feature>, f32)> {
    let err = |message: String| Error::Weights { path: wts.path.clone(), message };
    let names = wts.metadata.get("features").map(String::as_str).unwrap_or_default();
    let features = names
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Feature::parse(s).ok_or_else(|| {
                let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                err(format!("residual feature '{}' is unknown (known: {})", s.trim(), known.join(", ")))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if features.len() > MAX_FEATURES {
        return Err(err(format!("{} residual features; at most {MAX_FEATURES}", features.len())));
    }
    let bound = wts.metadata_f32("bound")?.unwrap_or(DEFAULT_BOUND);
    Ok((features, bound))
}

/// The features and bound of `wts`, checked against the classical solver of `config` (the bound
/// under a quarter fringe of its first laser, a U-Net reading its buckets + the features and
/// giving one channel), and `config` as the model runs it: robust, with the contrast channel when
/// a feature reads it, no reason codes.
pub fn checked(wts: &Weights, mut config: ClassicalConfig) -> Result<(Vec<Feature>, f32, ClassicalConfig)> {
    let (features, bound) = spec(wts)?;
    let err = |message: String| Error::Weights { path: wts.path.clone(), message };
    let quarter = config.psi.wavelengths.first().map_or(0.0, |l| l / 8.0);
    if bound >= quarter {
        return Err(err(format!(
            "residual bound {bound} µm is not under a quarter fringe of the first laser ({quarter} µm)"
        )));
    }
    let unet_config = UNet::config(wts)?;
    let want = config.in_channels() + features.len();
    if unet_config.n_channels != want || unet_config.n_classes != 1 {
        return Err(err(format!(
            "a residual model over {} bucket channels and {} features ({}) needs a U-Net of {want} input \
             channels and 1 output; inc.double_conv.0.weight reads {} channels and outc.conv.weight gives {}",
            config.in_channels(),
            features.len(),
            features.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
            unet_config.n_channels,
            unet_config.n_classes
        )));
    }
    config.unwrap = Unwrap::Robust;
    config.quality = features.contains(&Feature::Contrast);
    config.reason = false;
    Ok((features, bound, config))
}

/// The first laser's λ/2 (µm): the period of the height features.
pub fn half_fringe(config: &ClassicalConfig) -> f32 {
    config.psi.wavelengths[0] / 2.0
}

impl Residual {
    /// The residual model of `wts` over frames `config` describes (its unwrap made robust, its
    /// levels already those of the frame's type), the U-Net in `precision`.
    pub fn new(gpu: &Gpu, wts: &Weights, precision: Precision, config: ClassicalConfig) -> Result<Residual> {
        let (features, bound, config) = checked(wts, config)?;
        let classical = Classical::new(gpu, config)?;
        let unet = UNet::new(gpu, wts, precision)?;
        Ok(Residual { classical, unet, features, bound })
    }

    /// Lasers × buckets.
    pub fn in_channels(&self) -> usize {
        self.classical.in_channels()
    }

    /// The halo of the tiles: the classical solver's plus half the U-Net's default overlap.
    pub fn halo(&self) -> usize {
        self.classical.halo() + UNET_OVERLAP / 2
    }

    fn half_fringe(&self) -> f32 {
        half_fringe(&self.classical.config)
    }

    /// Buffers and dispatches for `n` tiles of `h` x `w`: the classical solver on the f32 input,
    /// the features into the U-Net's input, the U-Net, the bounded sum into the f32 output.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        let cp = self.classical.plan(gpu, n, h, w)?;
        let up = self.unet.plan(gpu, n, h, w)?;
        let output = Tensor::new(gpu, [n, 1, h, w], Precision::F32, "residual output")?;
        let feat = features(gpu, &cp.input, &cp.output, &self.features, self.half_fringe(), &up.input)?;
        let sum = combine(gpu, &cp.output, &up.output, self.bound, &output)?;
        let mut dispatches = cp.dispatches;
        dispatches.push(feat);
        dispatches.extend(up.dispatches);
        dispatches.push(sum);
        let bytes = cp.bytes + up.bytes + output.buffer.size();
        let mut buffers = cp.buffers;
        buffers.extend([cp.output, up.input, up.output]);
        buffers.extend(up.buffers);
        Ok(Plan { input: cp.input, output, dispatches, buffers, bytes })
    }
}
