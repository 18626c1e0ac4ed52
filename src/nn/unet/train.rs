//! Training the seed U-Net on the GPU: BatchNorm in training mode (or frozen in eval mode, for
//! fine-tuning), the backward pass recorded on an autograd [`Tape`], the physics (or supervised)
//! loss, and Adam with the loss scaler (or a host optimizer through the flat parameter and
//! gradient read/write).
//!
//! Parameters keep PyTorch's state_dict names and layouts. Each lives in its own f32 buffer (what
//! the kernels bind) and in the optimizer's flat buffer: after the backward the per-parameter
//! gradients are copied into the flat gradient buffer, Adam updates the flat parameters, and they
//! are copied back; `relayout` then refreshes the convolutions' storage-precision copies. All of it
//! stays on the GPU. One step per call of [`UNetTrainer::step`] (batch = the frames uploaded).

use std::collections::BTreeMap;

use crate::autograd::Tape;
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Readback;
use crate::gpu::{ChannelView, Tensor};
use crate::gpu::{Dispatch, Gpu, Precision};
use crate::io::checkpoint::OptimizerState;
use crate::io::weights::{NamedTensor, Weights};
use crate::nn::unet::{UNet, UNetConfig};
use crate::ops::batchnorm::{self, BnLayer, BnParamGrads, ReluMask};
use crate::ops::conv::{self, ConvWeights};
use crate::ops::convert::{RawBuffer, from_raw};
use crate::ops::loss::{Loss, LossKind, LossValue};
use crate::ops::pool::{maxpool2x2, maxpool2x2_backward};
use crate::ops::upsample::{upsample2x_pad, upsample2x_pad_backward};
use crate::optim::{Adam, AdamConfig, LossScaler, ParamEntry, ParamLayout, Params, StepReport};

/// An f32 parameter (or running statistic) with its gradient buffer.
struct Param {
    value: Tensor,
    grad: Tensor,
    /// Element offset in the optimizer's flat buffers (`None` for running statistics).
    flat: Option<usize>,
}

/// One conv3x3–BN–ReLU layer: weights, BN parameters, running statistics, activations.
struct Layer {
    prefix_conv: String,
    prefix_bn: String,
    conv: ConvWeights,
    /// Raw convolution output, its batch statistics, and the BN+ReLU output (owned unless it is
    /// written into a concatenation slot).
    z: Tensor,
    stats: Tensor,
    y: Option<Tensor>,
}

/// The raw frame buffer of a batch and the conversions into the model input and the loss frame.
struct FrameUpload {
    raw: RawBuffer,
    to_input: Dispatch,
    to_frame: Dispatch,
}

/// Training settings the plan needs.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub loss: LossKind,
    pub adam: AdamConfig,
    /// Factor the model's input is multiplied by (the loss compares raw intensities).
    pub input_scale: f32,
    pub precision: Precision,
    /// Dynamic loss scaling (GradScaler); meant for f16.
    pub loss_scaling: bool,
    /// BatchNorm in eval mode (`model.eval()`): normalise with the running statistics, leave them
    /// unchanged, and treat them as constants in the backward. What fine-tuning uses, so that the
    /// loss it minimises is the one `infer` sees.
    pub frozen_bn: bool,
}

/// The U-Net, its optimizer and every buffer of one training step of `n` frames of `h` x `w`.
pub struct UNetTrainer {
    pub config: UNetConfig,
    pub train: TrainConfig,
    shape: [usize; 3],
    params: BTreeMap<String, Param>,
    running: BTreeMap<String, Tensor>,
    num_batches_tracked: u64,
    flat: Params,
    adam: Adam,
    scaler: LossScaler,
    /// Raw frame upload (u8/u16/f16/f32) and its two conversions: model input and loss frame.
    upload: Option<FrameUpload>,
    input: Tensor,
    frame: Tensor,
    truth: Tensor,
    output: Tensor,
    loss: Loss,
    relayouts: Vec<Dispatch>,
    tape: Tape,
    _keep: Vec<Tensor>,
    _scratch: Option<wgpu::Buffer>,
    memory: MemoryUse,
}

/// GPU bytes a [`UNetTrainer`] allocated, by role; fixed for its lifetime (a static plan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Model input, loss frame and truth, and every forward activation the backward reads
    /// (convolution outputs, BatchNorm+ReLU outputs, concatenations, pooled maps, statistics).
    pub activations: u64,
    /// Gradients of activations: one set of buffers per resolution level, shared by the encoder and
    /// decoder blocks of that level (their backward launches never overlap).
    pub gradients: u64,
    /// Parameters and their gradients (per-tensor buffers), running statistics, and the optimizer's
    /// flat values, gradients and two moments.
    pub parameters: u64,
    /// Partial sums of the weight gradients: one buffer shared by every layer.
    pub scratch: u64,
}

impl MemoryUse {
    pub fn total(&self) -> u64 {
        self.activations + self.gradients + self.parameters + self.scratch
    }
}

fn f32_tensor(gpu: &Gpu, data: &[f32], label: &str) -> Result<Tensor> {
    let t = Tensor::new(gpu, [1, 1, 1, data.len()], Precision::F32, label)?;
    t.upload(gpu, data);
    Ok(t)
}

fn view(t: &Tensor) -> ChannelView<'_> {
    t.view()
}

impl UNetTrainer {
    /// Build the trainer from a state_dict (PyTorch names), for batches of `n` frames of `h` x `w`.
    pub fn new(gpu: &Gpu, weights: &Weights, n: usize, h: usize, w: usize, train: TrainConfig) -> Result<Self> {
        if h < 16 || w < 16 {
            return Err(Error::Shape(format!("the U-Net needs patches of at least 16 x 16 pixels; got {h} x {w}")));
        }
        let config = UNet::config(weights)?;
        let UNetConfig { n_channels, n_classes, base: b } = config;
        let p = train.precision;
        let c = [b, 2 * b, 4 * b, 8 * b, 8 * b];

        // Parameters in state_dict order, each in its own buffer and in the flat optimizer layout.
        let mut layout = ParamLayout::new();
        let mut host: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
        let mut running = BTreeMap::new();
        let mut add = |name: String, shape: Vec<usize>| -> Result<()> {
            let t = weights.get(&name, &shape)?;
            host.push((name, t.data.clone(), shape));
            Ok(())
        };
        let mut layer_specs: Vec<(String, String, usize, usize)> = Vec::new(); // (conv, bn, cin, cout)
        let mut block = |prefix: &str, cin: usize, mid: usize, cout: usize| {
            let d = format!("{prefix}.double_conv");
            layer_specs.push((format!("{d}.0"), format!("{d}.1"), cin, mid));
            layer_specs.push((format!("{d}.3"), format!("{d}.4"), mid, cout));
        };
        block("inc", n_channels, b, b);
        for i in 1..=4 {
            block(&format!("down{i}.maxpool_conv.1"), c[i - 1], c[i], c[i]);
        }
        for (i, (cin, cout)) in [(16 * b, 4 * b), (8 * b, 2 * b), (4 * b, b), (2 * b, b)].into_iter().enumerate() {
            block(&format!("up{}.conv", i + 1), cin, cin / 2, cout);
        }
        for (conv, bn, cin, cout) in &layer_specs {
            add(format!("{conv}.weight"), vec![*cout, *cin, 3, 3])?;
            add(format!("{bn}.weight"), vec![*cout])?;
            add(format!("{bn}.bias"), vec![*cout])?;
            for stat in ["running_mean", "running_var"] {
                let t = weights.get(&format!("{bn}.{stat}"), &[*cout])?;
                running.insert(format!("{bn}.{stat}"), f32_tensor(gpu, &t.data, stat)?);
            }
        }
        add("outc.conv.weight".into(), vec![n_classes, b, 1, 1])?;
        add("outc.conv.bias".into(), vec![n_classes])?;
        let mut params = BTreeMap::new();
        let mut flat_values = Vec::new();
        for (name, data, shape) in &host {
            let offset = layout.push(name, shape);
            if flat_values.len() < offset {
                flat_values.resize(offset, 0.0);
            }
            flat_values.extend_from_slice(data);
            let value = f32_tensor(gpu, data, name)?;
            let grad = Tensor::new(gpu, [1, 1, 1, data.len()], Precision::F32, "grad")?;
            params.insert(name.clone(), Param { value, grad, flat: Some(offset) });
        }
        flat_values.resize(layout.len(), 0.0);
        let flat = Params::new(gpu, layout, &flat_values)?;
        let scaler =
            if train.loss_scaling { LossScaler::new(gpu, Default::default())? } else { LossScaler::disabled(gpu) };
        let adam = Adam::new(gpu, train.adam.clone(), &flat, &scaler)?;

        // Activations.
        let t = |ch: usize, l: usize, label: &str| Tensor::new(gpu, [n, ch, h >> l, w >> l], p, label);
        let input = t(n_channels, 0, "input")?;
        let frame = Tensor::new(gpu, [n, n_channels, h, w], Precision::F32, "loss frame")?;
        let truth = Tensor::new(gpu, [n, n_classes, h, w], Precision::F32, "truth")?;
        let cat: Vec<Tensor> = (0..4).map(|l| t(2 * c[l], l, "concat")).collect::<Result<_>>()?;
        let dcat: Vec<Tensor> = (0..4).map(|l| t(2 * c[l], l, "concat grad")).collect::<Result<_>>()?;
        let pooled: Vec<Tensor> = (1..=4).map(|l| t(c[l - 1], l, "pooled")).collect::<Result<_>>()?;
        let dpooled: Vec<Tensor> = (1..=4).map(|l| t(c[l - 1], l, "pooled grad")).collect::<Result<_>>()?;
        // Per level: BN-backward output (dz) and the middle gradient (dy1), sized for the widest use.
        let dz: Vec<Tensor> = (0..5).map(|l| t(c[l.min(4)], l, "dz")).collect::<Result<_>>()?;
        let dmid: Vec<Tensor> = (0..5).map(|l| t(c[l.min(4)], l, "dmid")).collect::<Result<_>>()?;
        let x5 = t(c[4], 4, "bottom")?;
        let dx5 = t(c[4], 4, "bottom grad")?;
        let up_out: Vec<Tensor> =
            (0..4).map(|l| t(if l == 0 { b } else { c[l - 1] }, l, "up out")).collect::<Result<_>>()?;
        let dup_out: Vec<Tensor> = (0..4).map(|l| t(up_out[l].shape[1], l, "up out grad")).collect::<Result<_>>()?;
        let output = t(n_classes, 0, "output")?;
        let doutput = t(n_classes, 0, "output grad")?;

        // Layers (conv + BN), with activations at their level.
        let levels = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0];
        let mut layers = Vec::new();
        for ((conv, bn, cin, cout), &l) in layer_specs.iter().zip(&levels) {
            let cw = ConvWeights::trainable(gpu, p, [*cout, *cin, 3])?;
            let z = t(*cout, l, "conv out")?;
            let stats = Tensor::new(gpu, [1, 1, 1, 2 * cout], Precision::F32, "bn stats")?;
            layers.push(Layer { prefix_conv: conv.clone(), prefix_bn: bn.clone(), conv: cw, z, stats, y: None });
        }
        // The first layer of each block owns its output; the second writes into a slot or buffer.
        for (i, layer) in layers.iter_mut().enumerate() {
            if i % 2 == 0 {
                layer.y = Some(t(layer.conv.cout, levels[i], "bn out")?);
            }
        }
        let outc = ConvWeights::trainable(gpu, p, [n_classes, b, 1])?;
        // One partial-sum scratch for every weight gradient: they run one after another.
        let mut scratch_bytes = conv::grad_weight_scratch_bytes(gpu, [n_classes, b, 1], [n, h, w]);
        for ((_, _, cin, cout), &l) in layer_specs.iter().zip(&levels) {
            scratch_bytes =
                scratch_bytes.max(conv::grad_weight_scratch_bytes(gpu, [*cout, *cin, 3], [n, h >> l, w >> l]));
        }
        let gw_scratch = (scratch_bytes > 0).then(|| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("conv weight gradient partial sums (shared)"),
                size: scratch_bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        });

        let mut relayouts = Vec::new();
        for layer in &layers {
            relayouts.push(conv::relayout(
                gpu,
                &params[&format!("{}.weight", layer.prefix_conv)].value.buffer,
                &layer.conv,
            )?);
        }
        relayouts.push(conv::relayout(gpu, &params["outc.conv.weight"].value.buffer, &outc)?);
        relayouts.push(conv::relayout_bias(gpu, &params["outc.conv.bias"].value.buffer, &outc)?);

        let loss = match &train.loss {
            LossKind::Physics(cfg) => {
                let mut cfg = cfg.clone();
                cfg.frame_scale = 1.0;
                Loss::physics(gpu, &cfg, &output, &frame, Some(&doutput), scaler.scale_buffer())?
            }
            LossKind::Mse => Loss::mse(gpu, &output, &truth, Some(&doutput), scaler.scale_buffer())?,
        };

        // Record forward and backward on the tape.
        let mut tape = Tape::new();
        let par = |name: String| &params[&name];
        // A conv–BN–ReLU layer reading `x` and writing `y`; its backward reads dy and writes dx.
        let layer_op = |tape: &mut Tape,
                        li: usize,
                        x: ChannelView,
                        y: ChannelView,
                        dy: ChannelView,
                        dx: Option<(ChannelView, bool)>,
                        level: usize|
         -> Result<()> {
            let layer = &layers[li];
            let (gamma, beta) = (par(format!("{}.weight", layer.prefix_bn)), par(format!("{}.bias", layer.prefix_bn)));
            let frozen = train.frozen_bn;
            let bn = BnLayer {
                gamma: (&gamma.value).into(),
                beta: (&beta.value).into(),
                stats: &layer.stats,
                eps: batchnorm::EPS,
                frozen,
            };
            let (rm, rv) = (
                &running[&format!("{}.running_mean", layer.prefix_bn)],
                &running[&format!("{}.running_var", layer.prefix_bn)],
            );
            let mut fwd = vec![conv::conv(gpu, &layer.conv, x, view(&layer.z))?];
            if frozen {
                fwd.push(batchnorm::bn_stats_from_running(gpu, rm, rv, &layer.stats)?);
            } else {
                fwd.extend(batchnorm::bn_stats(gpu, view(&layer.z), &layer.stats)?);
            }
            fwd.push(batchnorm::bn_forward_relu(gpu, view(&layer.z), &bn, true, y)?);
            if !frozen {
                let [zn, _, zh, zw] = layer.z.shape;
                fwd.push(batchnorm::bn_update_running(gpu, &layer.stats, zn * zh * zw, batchnorm::MOMENTUM, rm, rv)?);
            }
            let grads = BnParamGrads { dgamma: (&gamma.grad).into(), dbeta: (&beta.grad).into(), accumulate: true };
            let dzv = dz[level].channels(0, layer.conv.cout);
            let mut bwd =
                batchnorm::bn_backward(gpu, dy, view(&layer.z), ReluMask::Output(y), &bn, &grads, dzv, false)?;
            let wgrad = &par(format!("{}.weight", layer.prefix_conv)).grad;
            bwd.extend(conv::conv_grad_weight_in(gpu, &layer.conv, x, dzv, &wgrad.buffer, true, gw_scratch.as_ref())?);
            if let Some((dxv, acc)) = dx {
                bwd.push(conv::conv_grad_input(gpu, &layer.conv, dzv, dxv, acc)?);
            }
            tape.push("conv-bn-relu", fwd, bwd);
            Ok(())
        };

        // Down path: block l reads `src`, its middle goes to layers[2l].y, its output to cat[l].
        for l in 0..5 {
            let (la, lb) = (2 * l, 2 * l + 1);
            let mid_y = layers[la].y.as_ref().unwrap();
            let (src, dsrc): (ChannelView, Option<(ChannelView, bool)>) = if l == 0 {
                (view(&input), None)
            } else {
                let skip = cat[l - 1].channels(0, c[l - 1]);
                let pool = maxpool2x2(gpu, skip, view(&pooled[l - 1]))?;
                let dskip = dcat[l - 1].channels(0, c[l - 1]);
                let unpool = maxpool2x2_backward(gpu, skip, view(&dpooled[l - 1]), dskip, true)?;
                tape.push("maxpool", vec![pool], vec![unpool]);
                (view(&pooled[l - 1]), Some((view(&dpooled[l - 1]), false)))
            };
            let (out, dout) =
                if l < 4 { (cat[l].channels(0, c[l]), dcat[l].channels(0, c[l])) } else { (view(&x5), view(&dx5)) };
            let dmid_v = dmid[l].channels(0, layers[la].conv.cout);
            layer_op(&mut tape, la, src, view(mid_y), dmid_v, dsrc, l)?;
            layer_op(&mut tape, lb, view(mid_y), out, dout, Some((dmid_v, false)), l)?;
        }
        // Up path: up block i at level l = 3 - i reads the concat [skip, upsample(below)].
        for i in 0..4 {
            let l = 3 - i;
            let (la, lb) = (10 + 2 * i, 11 + 2 * i);
            let (below, dbelow) =
                if l == 3 { (view(&x5), view(&dx5)) } else { (view(&up_out[l + 1]), view(&dup_out[l + 1])) };
            let slot = cat[l].channels(c[l], below.channels);
            let dslot = dcat[l].channels(c[l], below.channels);
            tape.push(
                "upsample",
                vec![upsample2x_pad(gpu, below, slot)?],
                vec![upsample2x_pad_backward(gpu, dslot, dbelow, false)?],
            );
            let mid_y = layers[la].y.as_ref().unwrap();
            let dmid_v = dmid[l].channels(0, layers[la].conv.cout);
            layer_op(&mut tape, la, view(&cat[l]), view(mid_y), dmid_v, Some((view(&dcat[l]), false)), l)?;
            layer_op(&mut tape, lb, view(mid_y), view(&up_out[l]), view(&dup_out[l]), Some((dmid_v, false)), l)?;
        }
        // Output convolution with bias.
        let fwd = vec![conv::conv(gpu, &outc, view(&up_out[0]), view(&output))?];
        let mut bwd = conv::conv_grad_weight_in(
            gpu,
            &outc,
            view(&up_out[0]),
            view(&doutput),
            &params["outc.conv.weight"].grad.buffer,
            true,
            gw_scratch.as_ref(),
        )?;
        bwd.push(conv::conv_grad_bias(gpu, view(&doutput), &params["outc.conv.bias"].grad.buffer, true)?);
        bwd.push(conv::conv_grad_input(gpu, &outc, view(&doutput), view(&dup_out[0]), false)?);
        tape.push("outc", fwd, bwd);

        let size = |ts: &[&Tensor]| ts.iter().map(|t| t.buffer.size()).sum::<u64>();
        let mut acts: Vec<&Tensor> = vec![&input, &frame, &truth, &output, &x5];
        acts.extend(cat.iter().chain(&pooled).chain(&up_out));
        for layer in &layers {
            acts.extend([&layer.z, &layer.stats].into_iter().chain(layer.y.as_ref()));
        }
        let mut grads: Vec<&Tensor> = vec![&dx5, &doutput];
        grads.extend(dcat.iter().chain(&dpooled).chain(&dz).chain(&dmid).chain(&dup_out));
        let param_tensors: Vec<&Tensor> =
            params.values().flat_map(|p| [&p.value, &p.grad]).chain(running.values()).collect();
        let memory = MemoryUse {
            activations: size(&acts),
            gradients: size(&grads),
            parameters: size(&param_tensors) + 4 * flat.values.size(),
            scratch: gw_scratch.as_ref().map_or(0, |b| b.size()),
        };

        let mut keep = vec![x5, dx5, doutput];
        keep.extend(cat);
        keep.extend(dcat);
        keep.extend(pooled);
        keep.extend(dpooled);
        keep.extend(dz);
        keep.extend(dmid);
        keep.extend(up_out);
        keep.extend(dup_out);
        for layer in layers {
            keep.push(layer.z);
            keep.push(layer.stats);
            keep.extend(layer.y);
        }
        let num_batches_tracked = 0;
        let _scratch = gw_scratch;
        Ok(UNetTrainer {
            config,
            train,
            shape: [n, h, w],
            params,
            running,
            num_batches_tracked,
            flat,
            adam,
            scaler,
            upload: None,
            input,
            frame,
            truth,
            output,
            loss,
            relayouts,
            tape,
            _keep: keep,
            _scratch,
            memory,
        })
    }

    /// Upload a batch: `n` frames `(C, h, w)` of raw `ty` values, concatenated. The raw buffer
    /// and its two conversions are made on the first call (and again if the dtype or size
    /// changes); later calls only write the bytes and run them.
    pub fn set_frames(&mut self, gpu: &Gpu, ty: HostType, bytes: &[u8]) -> Result<()> {
        match &self.upload {
            Some(u) if u.raw.ty == ty && u.raw.count * ty.size() == bytes.len() => {
                if bytes.len().is_multiple_of(4) {
                    gpu.queue.write_buffer(&u.raw.buffer, 0, bytes);
                } else {
                    let mut padded = bytes.to_vec();
                    padded.resize(bytes.len().div_ceil(4) * 4, 0);
                    gpu.queue.write_buffer(&u.raw.buffer, 0, &padded);
                }
            }
            _ => {
                let raw = RawBuffer::upload(gpu, ty, bytes)?;
                let to_input = from_raw(gpu, &raw, self.train.input_scale, &self.input)?;
                let to_frame = from_raw(gpu, &raw, 1.0, &self.frame)?;
                self.upload = Some(FrameUpload { raw, to_input, to_frame });
            }
        }
        let u = self.upload.as_ref().expect("set above");
        let mut d: Vec<&Dispatch> = vec![&u.to_input, &u.to_frame];
        if let Some(e) = self.loss.estimate() {
            d.push(e);
        }
        gpu.run(&d)
    }

    /// Upload the truth maps `[n, classes, h, w]` for the supervised loss.
    pub fn set_truth(&mut self, gpu: &Gpu, truth: &[f32]) -> Result<()> {
        if truth.len() != self.truth.len() {
            return Err(Error::Shape(format!("{} truth values for a {:?} batch", truth.len(), self.truth.shape)));
        }
        self.truth.upload(gpu, truth);
        Ok(())
    }

    /// Forward and backward on the uploaded batch, adding into the gradients (call `zero_grad`
    /// once per accumulation cycle), then return the loss of this micro-batch.
    pub fn accumulate(&mut self, gpu: &Gpu, loss_weight: f32) -> Result<LossValue> {
        self.loss.set_grad_weight(gpu, loss_weight);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in &self.relayouts {
                d.record(&mut pass);
            }
            self.tape.record_forward(&mut pass);
            for d in self.loss.backward()? {
                d.record(&mut pass);
            }
            self.tape.record_backward(&mut pass);
        }
        gpu.queue.submit([enc.finish()]);
        if !self.train.frozen_bn {
            self.num_batches_tracked += 1;
        }
        self.loss.read(gpu)
    }

    /// Zero every parameter gradient.
    pub fn zero_grad(&self, gpu: &Gpu) {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for p in self.params.values() {
            enc.clear_buffer(&p.grad.buffer, 0, None);
        }
        gpu.queue.submit([enc.finish()]);
    }

    /// Copy every parameter's gradient into the optimizer's flat gradient buffer.
    fn gather_grads(&self, gpu: &Gpu) {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.flat.grads, 0, None);
        for p in self.params.values() {
            if let Some(off) = p.flat {
                enc.copy_buffer_to_buffer(&p.grad.buffer, 0, &self.flat.grads, off as u64 * 4, p.grad.buffer.size());
            }
        }
        gpu.queue.submit([enc.finish()]);
    }

    /// Copy the optimizer's flat parameters back into every parameter's own buffer.
    fn scatter_values(&self, gpu: &Gpu) {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for p in self.params.values() {
            if let Some(off) = p.flat {
                enc.copy_buffer_to_buffer(&self.flat.values, off as u64 * 4, &p.value.buffer, 0, p.value.buffer.size());
            }
        }
        gpu.queue.submit([enc.finish()]);
    }

    /// Apply the optimizer to the accumulated gradients with learning rate `lr`.
    pub fn apply(&mut self, gpu: &Gpu, lr: f64) -> Result<StepReport> {
        self.gather_grads(gpu);
        let report = self.adam.step(gpu, &mut self.scaler, lr)?;
        self.scatter_values(gpu);
        Ok(report)
    }

    /// Where each parameter lives in the flat vectors of [`Self::read_params`] and
    /// [`Self::read_grads`] (state_dict names and shapes).
    pub fn layout(&self) -> &ParamLayout {
        &self.flat.layout
    }

    /// Every parameter, flat (f32, [`Self::layout`] order).
    pub fn read_params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.flat.read(gpu)
    }

    /// Replace every parameter (flat, [`Self::layout`] order); for an optimizer on the host (L-BFGS).
    pub fn write_params(&mut self, gpu: &Gpu, values: &[f32]) -> Result<()> {
        if values.len() != self.flat.len() {
            return Err(Error::Shape(format!("{} parameter values for a model of {}", values.len(), self.flat.len())));
        }
        self.flat.upload(gpu, values);
        self.scatter_values(gpu);
        Ok(())
    }

    /// Replace the parameters of `entries` (from [`Self::layout`]) with `values`, their
    /// concatenation; only those bytes travel (an optimizer over a subset of a large model).
    pub fn write_param_entries(&mut self, gpu: &Gpu, entries: &[ParamEntry], values: &[f32]) -> Result<()> {
        let need: usize = entries.iter().map(|e| e.len).sum();
        if values.len() != need {
            return Err(Error::Shape(format!("{} values for parameters of {need}", values.len())));
        }
        let mut at = 0;
        for e in entries {
            let p = self.param(&e.name)?;
            let v = bytemuck::cast_slice(&values[at..at + e.len]);
            gpu.queue.write_buffer(&p.value.buffer, 0, v);
            gpu.queue.write_buffer(&self.flat.values, e.offset as u64 * 4, v);
            at += e.len;
        }
        Ok(())
    }

    /// The accumulated gradients of `entries`, concatenated (one readback).
    pub fn read_grad_entries(&self, gpu: &Gpu, entries: &[ParamEntry]) -> Result<Vec<f32>> {
        let parts: Vec<(&wgpu::Buffer, u64)> =
            entries.iter().map(|e| Ok((&self.param(&e.name)?.grad.buffer, e.len as u64 * 4))).collect::<Result<_>>()?;
        Ok(bytemuck::pod_collect_to_vec(&Readback::concat(gpu, &parts)?))
    }

    fn param(&self, name: &str) -> Result<&Param> {
        self.params.get(name).ok_or_else(|| Error::Invalid(format!("the U-Net has no parameter '{name}'")))
    }

    /// The accumulated gradients, flat ([`Self::layout`] order), multiplied by the loss scale when
    /// loss scaling is on.
    pub fn read_grads(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.gather_grads(gpu);
        self.flat.read_grads(gpu)
    }

    /// One plain step: zero_grad, forward/backward on the uploaded batch, optimizer.
    pub fn step(&mut self, gpu: &Gpu, lr: f64) -> Result<(LossValue, StepReport)> {
        self.zero_grad(gpu);
        let loss = self.accumulate(gpu, 1.0)?;
        let report = self.apply(gpu, lr)?;
        Ok((loss, report))
    }

    /// The model's output for the uploaded batch after the last forward (`[n, classes, h, w]`).
    pub fn output(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.output.to_f32(gpu)
    }

    /// The current state_dict: parameters, running statistics, `num_batches_tracked` (as a count).
    pub fn state_dict(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        let flat = self.flat.read(gpu)?;
        for entry in self.flat.layout.entries() {
            out.push((entry.name.clone(), entry.shape.clone(), flat[entry.offset..entry.offset + entry.len].to_vec()));
        }
        for (name, t) in &self.running {
            out.push((name.clone(), vec![t.len()], t.to_f32(gpu)?));
        }
        Ok(out)
    }

    /// Batches stepped since the trainer was built (added to the weights' `num_batches_tracked`).
    pub fn batches(&self) -> u64 {
        self.num_batches_tracked
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Bytes of every buffer the trainer allocated (activations kept for the backward, gradients,
    /// parameters with the optimizer's flat copies and moments, scratch); fixed for the trainer's
    /// lifetime. Small per-launch reduction buffers (BatchNorm partials, a few KiB) are not counted.
    pub fn bytes(&self) -> u64 {
        self.memory.total()
    }

    /// [`Self::bytes`] by role.
    pub fn memory(&self) -> MemoryUse {
        self.memory
    }

    /// Optimizer state for a checkpoint: step count, moments, loss scale and growth tracker.
    pub fn optimizer_state(&self, gpu: &Gpu) -> Result<OptimizerState> {
        let (m, v) = self.adam.read_moments(gpu)?;
        Ok(OptimizerState {
            step: self.adam.steps(),
            m,
            v,
            loss_scale: self.scaler.scale(),
            growth_tracker: self.scaler.growth_tracker(),
        })
    }

    /// Restore what `optimizer_state` saved (resuming).
    pub fn restore_optimizer(&mut self, gpu: &Gpu, state: &OptimizerState) -> Result<()> {
        self.adam.upload_moments(gpu, &state.m, &state.v)?;
        self.adam.set_steps(state.step);
        if self.scaler.enabled() {
            self.scaler.set_scale(gpu, state.loss_scale);
            self.scaler.set_growth_tracker(state.growth_tracker);
        }
        Ok(())
    }

    /// The loss scaler (tests force overflows through it).
    pub fn scaler_mut(&mut self) -> &mut LossScaler {
        &mut self.scaler
    }
}
