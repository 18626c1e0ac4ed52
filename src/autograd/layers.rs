//! Trainable ops as units, in the style of burn's autodiff: each unit owns the state its backward
//! needs from its forward, and [`ConvBnRelu::op`], [`ConvBias::op`], [`maxpool2x2`] and
//! [`upsample2x`] return the forward and backward launches of one op as a tape [`Op`] (without
//! the input gradient when [`Io::dx`] is `None`).
//!
//! Activations and their gradients are channel views the caller owns (a unit may write into a
//! channel slot of a concatenation); parameters and their gradients are f32 [`Binding`]s (ranges
//! of a flat parameter buffer). Every backward *adds* into the parameter gradients (zero them
//! once per accumulation cycle); whether it adds into the input gradient `dx` is the caller's
//! choice (a tensor read by two consumers gets the second one's gradient added).

use crate::autograd::Op;
use crate::error::Result;
use crate::gpu::{Binding, ChannelView, Dispatch, Gpu, Precision, Tensor};
use crate::ops::batchnorm::{self, BnLayer, BnParamGrads, ReluMask};
use crate::ops::conv::{self, ConvWeights};
use crate::ops::pool::{maxpool2x2 as pool, maxpool2x2_backward};
use crate::ops::upsample::{upsample2x_pad, upsample2x_pad_backward};

/// Where an op reads and writes: forward `x -> y`, backward `dy -> dx`. `dx` is the view and
/// whether to add into it; `None` when the input needs no gradient (the model's input).
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub x: ChannelView<'a>,
    pub y: ChannelView<'a>,
    pub dy: ChannelView<'a>,
    pub dx: Option<(ChannelView<'a>, bool)>,
}

/// An f32 parameter tensor: the values a kernel reads and the gradient its backward adds into.
#[derive(Clone, Copy)]
pub struct Param<'a> {
    pub value: Binding<'a>,
    pub grad: Binding<'a>,
}

/// The parameters of a [`ConvBnRelu`]: the `[cout, cin, 3, 3]` weight, BatchNorm's γ and β.
#[derive(Clone, Copy)]
pub struct ConvBnReluParams<'a> {
    pub weight: Param<'a>,
    pub gamma: Param<'a>,
    pub beta: Param<'a>,
}

/// A 3x3 convolution without bias, BatchNorm2d and ReLU, trained: batch statistics (updating the
/// running ones), or in eval mode (`frozen`) the running statistics as constants.
///
/// Saved for the backward: the raw convolution output `z` and the statistics the forward
/// normalised with; the backward also reads the op's input `x` (weight gradient) and output `y`
/// (the ReLU mask), which the caller keeps.
pub struct ConvBnRelu {
    /// The weights in the kernels' layout and storage precision; [`ConvBnRelu::relayout`] fills
    /// them from the f32 master weights.
    pub conv: ConvWeights,
    /// BatchNorm's running statistics (module buffers, not parameters), f32 `[cout]`.
    pub running_mean: Tensor,
    pub running_var: Tensor,
    frozen: bool,
    z: Tensor,
    /// Mean[c] then biased variance[c] of this batch (or the running ones when frozen).
    stats: Tensor,
}

fn f32_tensor(gpu: &Gpu, data: &[f32], label: &str) -> Result<Tensor> {
    let t = Tensor::new(gpu, [1, 1, 1, data.len()], Precision::F32, label)?;
    t.upload(gpu, data);
    Ok(t)
}

impl ConvBnRelu {
    /// A `cin -> cout` layer over `[n, *, h, w]` activations in `precision`, with the running
    /// statistics `(mean, var)` (`cout` values each) to start from.
    pub fn new(
        gpu: &Gpu,
        precision: Precision,
        [cin, cout]: [usize; 2],
        [n, h, w]: [usize; 3],
        (mean, var): (&[f32], &[f32]),
        frozen: bool,
    ) -> Result<ConvBnRelu> {
        Ok(ConvBnRelu {
            conv: ConvWeights::trainable(gpu, precision, [cout, cin, 3])?,
            running_mean: f32_tensor(gpu, mean, "running_mean")?,
            running_var: f32_tensor(gpu, var, "running_var")?,
            frozen,
            z: Tensor::new(gpu, [n, cout, h, w], precision, "conv out")?,
            stats: Tensor::new(gpu, [1, 1, 1, 2 * cout], Precision::F32, "bn stats")?,
        })
    }

    /// Refresh the storage-precision weights from the f32 master `weight` (record before the
    /// forward, after each optimizer step).
    pub fn relayout(&self, gpu: &Gpu, weight: Binding) -> Result<Dispatch> {
        conv::relayout(gpu, weight, &self.conv)
    }

    /// The op: forward `x -> y`, backward `dy -> dx` adding into the parameter gradients. `dz`
    /// (`cout` channels at this op's size) holds the gradient of `z` during the backward and may
    /// be shared with ops whose backward does not run at the same time, as may `scratch`, the
    /// weight gradient's partial sums (see [`conv::grad_weight_scratch_bytes`]).
    pub fn op(
        &self,
        gpu: &Gpu,
        io: Io,
        p: &ConvBnReluParams,
        dz: ChannelView,
        scratch: Option<&wgpu::Buffer>,
    ) -> Result<Op> {
        let bn = BnLayer {
            gamma: p.gamma.value,
            beta: p.beta.value,
            stats: &self.stats,
            eps: batchnorm::EPS,
            frozen: self.frozen,
        };
        let forward = self.forward(gpu, io, &bn)?;
        let backward = self.backward(gpu, io, &bn, p, dz, scratch)?;
        Ok(Op { label: "conv-bn-relu", forward, backward })
    }

    /// conv -> z; the statistics (batch, or running when frozen); BN + ReLU -> y; running update.
    fn forward(&self, gpu: &Gpu, io: Io, bn: &BnLayer) -> Result<Vec<Dispatch>> {
        let (z, (rm, rv)) = (self.z.view(), (&self.running_mean, &self.running_var));
        let mut d = vec![conv::conv(gpu, &self.conv, io.x, z)?];
        if self.frozen {
            d.push(batchnorm::bn_stats_from_running(gpu, rm, rv, &self.stats)?);
        } else {
            d.extend(batchnorm::bn_stats(gpu, z, &self.stats)?);
        }
        d.push(batchnorm::bn_forward_relu(gpu, z, bn, true, io.y)?);
        if !self.frozen {
            let count = z.n() * z.h() * z.w();
            d.push(batchnorm::bn_update_running(gpu, &self.stats, count, batchnorm::MOMENTUM, rm, rv)?);
        }
        Ok(d)
    }

    /// BN + ReLU backward (dz, dγ, dβ), the weight gradient from `x` and dz, then dx.
    fn backward(
        &self,
        gpu: &Gpu,
        io: Io,
        bn: &BnLayer,
        p: &ConvBnReluParams,
        dz: ChannelView,
        scratch: Option<&wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>> {
        let grads = BnParamGrads { dgamma: p.gamma.grad, dbeta: p.beta.grad, accumulate: true };
        let mut d = batchnorm::bn_backward(gpu, io.dy, self.z.view(), ReluMask::Output(io.y), bn, &grads, dz, false)?;
        d.extend(conv::conv_grad_weight_in(gpu, &self.conv, io.x, dz, p.weight.grad, true, scratch)?);
        if let Some((dx, accumulate)) = io.dx {
            d.push(conv::conv_grad_input(gpu, &self.conv, dz, dx, accumulate)?);
        }
        Ok(d)
    }

    /// Bytes of the saved activations (`z` and the statistics).
    pub fn saved_bytes(&self) -> u64 {
        self.z.buffer.size() + self.stats.buffer.size()
    }

    /// Bytes of the running statistics and the storage-precision weight copies.
    pub fn state_bytes(&self) -> u64 {
        self.running_mean.buffer.size() + self.running_var.buffer.size() + self.conv.bytes()
    }
}

/// The parameters of a [`ConvBias`]: the `[cout, cin, k, k]` weight and the `[cout]` bias.
#[derive(Clone, Copy)]
pub struct ConvBiasParams<'a> {
    pub weight: Param<'a>,
    pub bias: Param<'a>,
}

/// A trainable convolution with bias and no activation (the U-Net's 1x1 head). Its backward
/// reads only the op's input `x`, which the caller keeps.
pub struct ConvBias {
    /// Weights and bias in the kernels' layout; [`ConvBias::relayout`] fills them.
    pub conv: ConvWeights,
}

impl ConvBias {
    /// A `cin -> cout` convolution with a `k` x `k` kernel (1 or 3) in `precision`.
    pub fn new(gpu: &Gpu, precision: Precision, [cin, cout, k]: [usize; 3]) -> Result<ConvBias> {
        Ok(ConvBias { conv: ConvWeights::trainable(gpu, precision, [cout, cin, k])? })
    }

    /// Refresh the storage-precision weights and bias from the f32 master values.
    pub fn relayout(&self, gpu: &Gpu, p: &ConvBiasParams) -> Result<[Dispatch; 2]> {
        Ok([conv::relayout(gpu, p.weight.value, &self.conv)?, conv::relayout_bias(gpu, p.bias.value, &self.conv)?])
    }

    /// The op: forward `x -> y`; backward: weight and bias gradients (added), then dx.
    pub fn op(&self, gpu: &Gpu, io: Io, p: &ConvBiasParams, scratch: Option<&wgpu::Buffer>) -> Result<Op> {
        let forward = vec![conv::conv(gpu, &self.conv, io.x, io.y)?];
        let mut backward = conv::conv_grad_weight_in(gpu, &self.conv, io.x, io.dy, p.weight.grad, true, scratch)?;
        backward.push(conv::conv_grad_bias(gpu, io.dy, p.bias.grad, true)?);
        if let Some((dx, accumulate)) = io.dx {
            backward.push(conv::conv_grad_input(gpu, &self.conv, io.dy, dx, accumulate)?);
        }
        Ok(Op { label: "outc", forward, backward })
    }
}

/// 2x2 max-pool `x -> y` (odd sizes floor); the backward routes `dy` to where each maximum was,
/// recomputed from `x` (nothing else is saved), into `dx`.
pub fn maxpool2x2(gpu: &Gpu, io: Io) -> Result<Op> {
    let backward = match io.dx {
        Some((dx, accumulate)) => vec![maxpool2x2_backward(gpu, io.x, io.dy, dx, accumulate)?],
        None => Vec::new(),
    };
    Ok(Op { label: "maxpool", forward: vec![pool(gpu, io.x, io.y)?], backward })
}

/// Bilinear x2 upsampling (align_corners) of `x`, padded to `y`'s size; the backward writes
/// `dx`. Nothing is saved: the backward needs only the shapes.
pub fn upsample2x(gpu: &Gpu, io: Io) -> Result<Op> {
    let backward = match io.dx {
        Some((dx, accumulate)) => vec![upsample2x_pad_backward(gpu, io.dy, dx, accumulate)?],
        None => Vec::new(),
    };
    Ok(Op { label: "upsample", forward: vec![upsample2x_pad(gpu, io.x, io.y)?], backward })
}
