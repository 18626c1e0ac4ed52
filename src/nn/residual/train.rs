//! Training the residual model's U-Net, supervised on the truth: per batch the raw frames are
//! scaled into the robust classical solver's input, the solver and the feature kernel run on the
//! GPU (constants of the step: no gradient flows through them), the U-Net trains on buckets +
//! features, and the loss is the residual height `hc + bound·tanh(u)` against the truth over the
//! pixels where both are finite and the classical height is within [`CUTOFF`] of the truth
//! ([`LossKind::Residual`]: a pixel on a wrong fringe order is beyond any bounded correction),
//! each crop's squared errors relative to the solver's own on it ([`crop_weights`]). The U-Net's
//! step, optimizer and state are a [`UNetTrainer`]'s.

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

/// The floor (µm²) under a crop's classical mean squared error in its loss weight: about the
/// solver's error on a noiseless u8 frame (0.001 µm RMS, quantisation alone).
pub const ERROR_FLOOR: f64 = 1e-6;

/// The default power of [`crop_weights`].
pub const RELATIVE_LOSS: f32 = 1.0;

/// Each pixel's loss weight: (the classical solver's mean squared error over the pixels of its
/// crop (image of the batch) that the loss keeps, + [`ERROR_FLOOR`])^−`power`. With power 1 the
/// loss is each crop's squared error relative to the solver's (1: the solver's own, the
/// untrained model's), so a crop at low noise, where the solver is already good and a
/// correction can only harm, weighs as much as a noisy one, where the correction helps; power 0
/// is the plain mean, ruled by the noisiest crops. `classical` and `truth` are `[n, h, w]`.
pub fn crop_weights(classical: &[f32], truth: &[f32], n: usize, cutoff: f32, power: f32) -> Vec<f32> {
    let plane = classical.len() / n.max(1);
    let mut out = Vec::with_capacity(classical.len());
    for (hc, t) in classical.chunks(plane).zip(truth.chunks(plane)) {
        let kept: Vec<f64> = hc
            .iter()
            .zip(t)
            .filter(|(h, t)| h.is_finite() && t.is_finite() && (*h - *t).abs() < cutoff)
            .map(|(h, t)| (h - t) as f64)
            .collect();
        let mse = kept.iter().map(|e| e * e).sum::<f64>() / kept.len().max(1) as f64;
        let e = mse + ERROR_FLOOR;
        let w = if power == 1.0 { 1.0 / e } else { e.powf(-power as f64) };
        out.extend(std::iter::repeat_n(w as f32, plane));
    }
    out
}

use crate::ops::residual::{Feature, features};

/// A residual model in training: its classical solver's plan for the batch shape, the feature
/// kernel writing the U-Net trainer's input, and the trainer.
pub struct ResidualTrainer {
    pub trainer: UNetTrainer,
    pub features: Vec<Feature>,
    /// µm.
    pub bound: f32,
    /// The power of the loss's [`crop_weights`] ([`RELATIVE_LOSS`] unless set).
    pub relative_loss: f32,
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
            relative_loss: RELATIVE_LOSS,
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

    /// Weigh the pixels of the batch uploaded by [`Self::set_frames`] by [`crop_weights`] against
    /// its `truth` `[n, h, w]`.
    pub fn weigh(&mut self, gpu: &Gpu, truth: &[f32]) -> Result<()> {
        let classical = self.classical_heights(gpu)?;
        let weights = crop_weights(&classical, truth, self.plan.output.shape[0], CUTOFF, self.relative_loss);
        self.trainer.set_loss_weights(gpu, &weights)
    }

    /// The classical heights of the uploaded batch `[n, h, w]` (NaN where the solver gave none).
    pub fn classical_heights(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.trainer.inputs().1.to_f32(gpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crop_weighs_by_the_solvers_error_over_the_pixels_the_loss_keeps() {
        // Crop 0: errors ±0.01 µm, one NaN and one wrong order (beyond the cutoff) left out;
        // crop 1: no error, so the floor alone.
        let truth = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let classical = [1.01, 1.99, f32::NAN, 5.0, 5.0, 6.0, 7.0, 8.0];
        let w = crop_weights(&classical, &truth, 2, CUTOFF, 1.0);
        assert!(crop_weights(&classical, &truth, 2, CUTOFF, 0.0).iter().all(|&v| v == 1.0));
        let mse = (0.01f64.powi(2) + 0.01f64.powi(2)) / 2.0;
        for &v in &w[..4] {
            assert!((v as f64 * (mse + ERROR_FLOOR) - 1.0).abs() < 1e-3, "{v}");
        }
        assert!(w[4..].iter().all(|&v| v == (1.0 / ERROR_FLOOR) as f32));
    }
}
