//! Training the residual model's U-Net, supervised on the truth: per batch the raw frames are
//! scaled into the robust classical solver's input, the solver and the feature kernel run on the
//! GPU (constants of the step: no gradient flows through them), the U-Net trains on buckets +
//! features, and the loss is the residual height `hc + bound·tanh(u)` against the truth over the
//! pixels where both are finite and the classical height is within [`CUTOFF`] of the truth
//! ([`LossKind::Residual`]: a pixel on a wrong fringe order is beyond any bounded correction). The U-Net's step, optimizer and state
//! are a [`UNetTrainer`]'s.

use crate::dtype::HostType;
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, Plan};
use crate::io::weights::Weights;
use crate::nn::classical::Classical;
use crate::nn::residual::{checked, half_fringe};
use crate::nn::unet::train::{TrainConfig, UNetTrainer};
use crate::ops::classical::ClassicalConfig;
use crate::ops::convert::{RawBuffer, from_raw};
use crate::ops::loss::{LossKind, ResidualLoss};

/// Pixels whose classical height is this far (µm) from the truth or farther are wrong fringe
/// orders, left out of the loss: a fifth of the first laser's fringe period in height (λ1/2 = 2.5 µm).
pub const CUTOFF: f32 = 0.5;
use crate::ops::residual::{Feature, features};

/// A residual model in training: its classical solver's plan for the batch shape, the feature
/// kernel writing the U-Net trainer's input, and the trainer.
pub struct ResidualTrainer {
    pub trainer: UNetTrainer,
    pub features: Vec<Feature>,
    /// µm.
    pub bound: f32,
    /// The classical solver as the model runs it (robust).
    pub classical: ClassicalConfig,
    plan: Plan,
    features_dispatch: Dispatch,
    input_scale: f32,
    /// Raw frame upload and its conversion into the solver's input.
    upload: Option<(RawBuffer, Dispatch)>,
}

impl ResidualTrainer {
    /// The trainer for the residual model `weights` (its `features` and `bound` metadata) over
    /// frames `classical` describes (levels those of the frames' type and `train.input_scale`), for
    /// batches of `n` frames of `h` x `w`. `train.loss` is set to the residual loss.
    pub fn new(
        gpu: &Gpu,
        weights: &Weights,
        classical: ClassicalConfig,
        [n, h, w]: [usize; 3],
        mut train: TrainConfig,
    ) -> Result<ResidualTrainer> {
        let (features_list, bound, classical) = checked(weights, classical)?;
        train.loss = LossKind::Residual(ResidualLoss { bound, cutoff: CUTOFF });
        let input_scale = train.input_scale;
        let trainer = UNetTrainer::new(gpu, weights, n, h, w, train)?;
        let plan = Classical::new(gpu, classical.clone())?.plan(gpu, n, h, w)?;
        let (input, _) = trainer.inputs();
        let half = half_fringe(&classical);
        let features_dispatch = features(gpu, &plan.input, &plan.output, &features_list, half, input)?;
        Ok(ResidualTrainer {
            trainer,
            features: features_list,
            bound,
            classical,
            plan,
            features_dispatch,
            input_scale,
            upload: None,
        })
    }

    /// Upload a batch of raw `ty` frames `(C, h, w)`, concatenated, and run the classical solver
    /// and the features on it: the U-Net's input and the loss's classical heights are then set.
    pub fn set_frames(&mut self, gpu: &Gpu, ty: HostType, bytes: &[u8]) -> Result<()> {
        match &self.upload {
            Some((raw, _)) if raw.ty == ty && raw.count * ty.size() == bytes.len() => {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4) * 4, 0);
                gpu.queue.write_buffer(&raw.buffer, 0, &padded);
            }
            _ => {
                let raw = RawBuffer::upload(gpu, ty, bytes)?;
                let convert = from_raw(gpu, &raw, self.input_scale, &self.plan.input)?;
                self.upload = Some((raw, convert));
            }
        }
        let (_, convert) = self.upload.as_ref().expect("set above");
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            convert.record(&mut pass);
            for d in &self.plan.dispatches {
                d.record(&mut pass);
            }
            self.features_dispatch.record(&mut pass);
        }
        // The height channel of each image's classical output into the loss's [n, 1, h, w].
        let (_, heights) = self.trainer.inputs();
        let [n, c, h, w] = self.plan.output.shape;
        let plane = (h * w * 4) as u64;
        for z in 0..n as u64 {
            enc.copy_buffer_to_buffer(
                &self.plan.output.buffer,
                z * c as u64 * plane,
                &heights.buffer,
                z * plane,
                plane,
            );
        }
        gpu.queue.submit([enc.finish()]);
        gpu.wait()
    }

    /// The classical heights of the uploaded batch `[n, h, w]` (NaN where the solver gave none).
    pub fn classical_heights(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.trainer.inputs().1.to_f32(gpu)
    }
}
