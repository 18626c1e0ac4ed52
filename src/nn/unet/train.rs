//! Training the seed U-Net on the GPU: BatchNorm in training mode (or frozen in eval mode, for
//! fine-tuning), the forward and backward recorded once on an autograd [`Tape`] from the units
//! of [`crate::autograd::layers`], the physics (or supervised) loss, and Adam with the loss
//! scaler (or a host optimizer through the flat parameter and gradient read/write).
//!
//! Parameters keep PyTorch's state_dict names and layouts and live only in the optimizer's flat
//! buffers ([`Params`]): each kernel binds its parameter's range of the flat values and adds its
//! gradient into that parameter's range of the flat gradients, and Adam updates the flat values
//! in place, so nothing is copied between the model and its optimizer. Before each forward,
//! relayout kernels refresh the convolutions' storage-precision weights from the flat values.
//! All of it stays on the GPU. One step per call of [`UNetTrainer::step`] (batch = the frames
//! uploaded).

use crate::autograd::Tape;
use crate::autograd::layers::{self, ConvBias, ConvBiasParams, ConvBnRelu, ConvBnReluParams, Io, Param};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{ChannelView, Tensor, zeroed};
use crate::gpu::{Dispatch, Gpu, Precision};
use crate::io::checkpoint::OptimizerState;
use crate::io::weights::{NamedTensor, Weights};
use crate::nn::unet::{self, Block, ConvLayer, UNet, UNetConfig, widths};
use crate::ops::conv;
use crate::ops::convert::{RawBuffer, from_raw};
use crate::ops::loss::{Loss, LossKind, LossValue};
use crate::optim::{Adam, AdamConfig, LossScaler, ParamEntry, ParamLayout, Params, StepReport};

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
    /// Parameters, gradients (flat, state_dict order) and the optimizer over them.
    flat: Params,
    adam: Adam,
    scaler: LossScaler,
    net: Net,
    bufs: Buffers,
    num_batches_tracked: u64,
    /// Raw frame upload (u8/u16/f16/f32) and its two conversions: model input and loss frame.
    upload: Option<FrameUpload>,
    loss: Loss,
    relayouts: Vec<Dispatch>,
    tape: Tape,
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
    /// The optimizer's flat parameters, gradients and two moments, the running statistics, and
    /// the convolutions' weights in the kernels' layout and storage precision.
    pub parameters: u64,
    /// Partial sums of the weight gradients: one buffer shared by every layer.
    pub scratch: u64,
}

impl MemoryUse {
    pub fn total(&self) -> u64 {
        self.activations + self.gradients + self.parameters + self.scratch
    }

    fn of(net: &Net, bufs: &Buffers, flat: &Params, scratch: Option<&wgpu::Buffer>) -> MemoryUse {
        fn size<'a>(ts: impl Iterator<Item = &'a Tensor>) -> u64 {
            ts.map(|t| t.buffer.size()).sum()
        }
        let (saved, state) = net.bytes();
        MemoryUse {
            activations: size(bufs.activations()) + saved,
            gradients: size(bufs.gradients()),
            // The flat values, gradients and Adam's two moments share one length.
            parameters: 4 * flat.values.size() + state,
            scratch: scratch.map_or(0, |b| b.size()),
        }
    }
}

/// One DoubleConv block being trained: its two layers and the first one's output, which the
/// second reads (and the first one's backward, as its ReLU mask).
struct TrainBlock {
    spec: Block,
    layers: [ConvBnRelu; 2],
    mid: Tensor,
}

/// The trainable layers: the blocks in [`unet::blocks`] order and the head.
struct Net {
    blocks: Vec<TrainBlock>,
    head: ConvBias,
}

impl Net {
    fn new(
        gpu: &Gpu,
        weights: &Weights,
        config: &UNetConfig,
        [n, h, w]: [usize; 3],
        train: &TrainConfig,
    ) -> Result<Net> {
        let p = train.precision;
        let layer = |l: &ConvLayer| -> Result<ConvBnRelu> {
            let mean = &weights.get(&l.bn("running_mean"), &[l.cout])?.data;
            let var = &unet::running_var(weights, l)?.data;
            let size = [n, h >> l.level, w >> l.level];
            ConvBnRelu::new(gpu, p, [l.cin, l.cout], size, (mean, var), train.frozen_bn)
        };
        let block = |spec: Block| -> Result<TrainBlock> {
            let [a, b] = &spec;
            let mid = Tensor::new(gpu, [n, a.cout, h >> a.level, w >> a.level], p, "bn out")?;
            Ok(TrainBlock { layers: [layer(a)?, layer(b)?], mid, spec })
        };
        let blocks = unet::blocks(config).into_iter().map(block).collect::<Result<_>>()?;
        let head = ConvBias::new(gpu, p, [config.base, config.n_classes, 1])?;
        Ok(Net { blocks, head })
    }

    /// The relayouts that refresh every convolution's storage-precision weights from `flat`.
    fn relayouts(&self, gpu: &Gpu, flat: &Params, config: &UNetConfig) -> Result<Vec<Dispatch>> {
        let mut d = Vec::new();
        for block in &self.blocks {
            for (layer, spec) in block.layers.iter().zip(&block.spec) {
                d.push(layer.relayout(gpu, flat.value(&spec.weight())?)?);
            }
        }
        d.extend(self.head.relayout(gpu, &head_params(flat, config)?)?);
        Ok(d)
    }

    /// (saved activations, running statistics and storage-precision weights) in bytes.
    fn bytes(&self) -> (u64, u64) {
        let layers = || self.blocks.iter().flat_map(|b| &b.layers);
        let mids: u64 = self.blocks.iter().map(|b| b.mid.buffer.size()).sum();
        let saved = mids + layers().map(ConvBnRelu::saved_bytes).sum::<u64>();
        (saved, layers().map(ConvBnRelu::state_bytes).sum::<u64>() + self.head.conv.bytes())
    }
}

/// The tensors the ops read and write that no unit owns, by resolution level (level `l`:
/// `h >> l` x `w >> l`, skip width `c[l]`). The gradient buffers of a level are shared by its
/// encoder and decoder blocks (their backward launches never overlap).
struct Buffers {
    /// Model input (storage precision), loss frame and truth (f32), output and its gradient; the
    /// residual loss's pixel weights (f32, 1 until set).
    input: Tensor,
    frame: Tensor,
    truth: Tensor,
    weight: Option<Tensor>,
    output: Tensor,
    doutput: Tensor,
    /// Levels 0..4: the concatenation [skip, upsampled] the decoder block reads.
    cat: Vec<Tensor>,
    dcat: Vec<Tensor>,
    /// Levels 1..=4 (index `l - 1`): the max-pooled skip of level `l - 1`.
    pooled: Vec<Tensor>,
    dpooled: Vec<Tensor>,
    /// Levels 0..=4: gradients of a convolution output and of a block's middle, widest use.
    dz: Vec<Tensor>,
    dmid: Vec<Tensor>,
    /// The bottom block's output (level 4).
    x5: Tensor,
    dx5: Tensor,
    /// Levels 0..4: the decoder block's output.
    up_out: Vec<Tensor>,
    dup_out: Vec<Tensor>,
}

impl Buffers {
    fn new(gpu: &Gpu, config: &UNetConfig, [n, h, w]: [usize; 3], train: &TrainConfig) -> Result<Buffers> {
        let UNetConfig { n_channels, n_classes, base: b } = *config;
        let p = train.precision;
        // The loss frame: the raw frame, or the classical heights of the residual loss.
        let frame_channels = if matches!(train.loss, LossKind::Residual(_)) { 1 } else { n_channels };
        let c = widths(b);
        let t = |ch: usize, l: usize, label: &str| Tensor::new(gpu, [n, ch, h >> l, w >> l], p, label);
        let per_level = |levels: std::ops::Range<usize>, ch: &dyn Fn(usize) -> usize, label: &str| {
            levels.map(|l| t(ch(l), l, label)).collect::<Result<Vec<_>>>()
        };
        let up_width = |l: usize| if l == 0 { b } else { c[l - 1] };
        Ok(Buffers {
            input: t(n_channels, 0, "input")?,
            frame: Tensor::new(gpu, [n, frame_channels, h, w], Precision::F32, "loss frame")?,
            truth: Tensor::new(gpu, [n, n_classes, h, w], Precision::F32, "truth")?,
            weight: match train.loss {
                LossKind::Residual(_) => {
                    Some(Tensor::from_f32(gpu, [n, 1, h, w], Precision::F32, &vec![1.0; n * h * w])?)
                }
                _ => None,
            },
            output: t(n_classes, 0, "output")?,
            doutput: t(n_classes, 0, "output grad")?,
            cat: per_level(0..4, &|l| 2 * c[l], "concat")?,
            dcat: per_level(0..4, &|l| 2 * c[l], "concat grad")?,
            pooled: per_level(1..5, &|l| c[l - 1], "pooled")?,
            dpooled: per_level(1..5, &|l| c[l - 1], "pooled grad")?,
            dz: per_level(0..5, &|l| c[l], "dz")?,
            dmid: per_level(0..5, &|l| c[l], "dmid")?,
            x5: t(c[4], 4, "bottom")?,
            dx5: t(c[4], 4, "bottom grad")?,
            up_out: per_level(0..4, &up_width, "up out")?,
            dup_out: per_level(0..4, &up_width, "up out grad")?,
        })
    }

    fn activations(&self) -> impl Iterator<Item = &Tensor> {
        let single = [&self.input, &self.frame, &self.truth, &self.output, &self.x5];
        single.into_iter().chain(self.weight.iter()).chain(self.cat.iter().chain(&self.pooled).chain(&self.up_out))
    }

    fn gradients(&self) -> impl Iterator<Item = &Tensor> {
        let levels = self.dcat.iter().chain(&self.dpooled).chain(&self.dz).chain(&self.dmid).chain(&self.dup_out);
        [&self.dx5, &self.doutput].into_iter().chain(levels)
    }
}

/// The optimizer's flat parameters (state_dict order), after checking that every tensor of the
/// state_dict (running statistics too) is in `weights` with its shape.
fn load_params(gpu: &Gpu, weights: &Weights, config: &UNetConfig) -> Result<Params> {
    let mut layout = ParamLayout::new();
    let mut values = Vec::new();
    for t in unet::state_dict(config) {
        let data = &weights.get(&t.name, &t.shape)?.data;
        if t.role.is_parameter() {
            layout.push(&t.name, &t.shape);
            values.push(data.as_slice());
        }
    }
    let packed = layout.pack(&values)?;
    Params::new(gpu, layout, &packed)
}

fn param<'a>(flat: &'a Params, name: &str) -> Result<Param<'a>> {
    Ok(Param { value: flat.value(name)?, grad: flat.grad(name)? })
}

fn layer_params<'a>(flat: &'a Params, l: &ConvLayer) -> Result<ConvBnReluParams<'a>> {
    let [weight, gamma, beta] = [l.weight(), l.bn("weight"), l.bn("bias")].map(|name| param(flat, &name));
    Ok(ConvBnReluParams { weight: weight?, gamma: gamma?, beta: beta? })
}

fn head_params<'a>(flat: &'a Params, config: &UNetConfig) -> Result<ConvBiasParams<'a>> {
    let [weight, bias] = unet::head(config).map(|t| param(flat, &t.name));
    Ok(ConvBiasParams { weight: weight?, bias: bias? })
}

/// One partial-sum buffer for every weight gradient (they run one after another), of the largest
/// size a layer needs; `None` when no layer splits its pixels.
fn weight_grad_scratch(gpu: &Gpu, config: &UNetConfig, [n, h, w]: [usize; 3]) -> Result<Option<wgpu::Buffer>> {
    let head = conv::grad_weight_scratch_bytes(gpu, [config.n_classes, config.base, 1], [n, h, w]);
    let layers = unet::blocks(config).into_iter().flatten();
    let bytes = layers
        .map(|l| conv::grad_weight_scratch_bytes(gpu, [l.cout, l.cin, 3], [n, h >> l.level, w >> l.level]))
        .fold(head, u64::max);
    (bytes > 0).then(|| zeroed(gpu, "conv weight gradient partial sums (shared)", bytes)).transpose()
}

/// What recording the ops needs besides their own views.
struct Recorder<'a> {
    gpu: &'a Gpu,
    flat: &'a Params,
    bufs: &'a Buffers,
    scratch: Option<&'a wgpu::Buffer>,
    /// Skip width per level.
    c: [usize; 5],
}

impl Recorder<'_> {
    /// Forward and backward of one step: the encoder (levels 0..=4), the decoder (3..=0), the head.
    fn record(&self, net: &Net, config: &UNetConfig) -> Result<Tape> {
        let mut tape = Tape::new();
        for l in 0..5 {
            self.down(&mut tape, &net.blocks[l], l)?;
        }
        for l in (0..4).rev() {
            self.up(&mut tape, &net.blocks[8 - l], l)?;
        }
        let b = self.bufs;
        let io = Io {
            x: b.up_out[0].view(),
            y: b.output.view(),
            dy: b.doutput.view(),
            dx: Some((b.dup_out[0].view(), false)),
        };
        tape.push(net.head.op(self.gpu, io, &head_params(self.flat, config)?, self.scratch)?);
        Ok(tape)
    }

    /// Encoder block `l`: max-pool of the skip of level `l - 1` (none for `inc`), then the block,
    /// writing its skip (channels `[0, c[l])` of the concatenation) or, at the bottom, x5.
    fn down(&self, tape: &mut Tape, block: &TrainBlock, l: usize) -> Result<()> {
        let (b, c) = (self.bufs, self.c);
        let (x, dx) = if l == 0 {
            (b.input.view(), None)
        } else {
            let (skip, dskip) = (b.cat[l - 1].channels(0, c[l - 1]), b.dcat[l - 1].channels(0, c[l - 1]));
            let (pooled, dpooled) = (b.pooled[l - 1].view(), b.dpooled[l - 1].view());
            // The skip's gradient also comes from the decoder: add to it.
            tape.push(layers::maxpool2x2(self.gpu, Io { x: skip, y: pooled, dy: dpooled, dx: Some((dskip, true)) })?);
            (pooled, Some((dpooled, false)))
        };
        let (out, dout) =
            if l < 4 { (b.cat[l].channels(0, c[l]), b.dcat[l].channels(0, c[l])) } else { (b.x5.view(), b.dx5.view()) };
        self.double_conv(tape, block, x, dx, out, dout)
    }

    /// Decoder block at level `l`: upsample the block below into channels `[c[l], 2 c[l])` of the
    /// concatenation, then the block over the whole concatenation.
    fn up(&self, tape: &mut Tape, block: &TrainBlock, l: usize) -> Result<()> {
        let (b, c) = (self.bufs, self.c);
        let (below, dbelow) =
            if l == 3 { (b.x5.view(), b.dx5.view()) } else { (b.up_out[l + 1].view(), b.dup_out[l + 1].view()) };
        let (slot, dslot) = (b.cat[l].channels(c[l], below.channels), b.dcat[l].channels(c[l], below.channels));
        tape.push(layers::upsample2x(self.gpu, Io { x: below, y: slot, dy: dslot, dx: Some((dbelow, false)) })?);
        let dx = Some((b.dcat[l].view(), false));
        self.double_conv(tape, block, b.cat[l].view(), dx, b.up_out[l].view(), b.dup_out[l].view())
    }

    /// A block's two layers: `x -> mid -> out`; backward `dout -> dmid -> dx`.
    fn double_conv(
        &self,
        tape: &mut Tape,
        block: &TrainBlock,
        x: ChannelView,
        dx: Option<(ChannelView, bool)>,
        out: ChannelView,
        dout: ChannelView,
    ) -> Result<()> {
        let level = block.spec[0].level;
        let (mid, dmid) = (block.mid.view(), self.bufs.dmid[level].channels(0, block.spec[0].cout));
        let ios = [Io { x, y: mid, dy: dmid, dx }, Io { x: mid, y: out, dy: dout, dx: Some((dmid, false)) }];
        for ((layer, spec), io) in block.layers.iter().zip(&block.spec).zip(ios) {
            let dz = self.bufs.dz[level].channels(0, spec.cout);
            tape.push(layer.op(self.gpu, io, &layer_params(self.flat, spec)?, dz, self.scratch)?);
        }
        Ok(())
    }
}

fn make_loss(gpu: &Gpu, kind: &LossKind, bufs: &Buffers, scaler: &LossScaler) -> Result<Loss> {
    let (output, grad, scale) = (&bufs.output, Some(&bufs.doutput), scaler.scale_buffer());
    match kind {
        LossKind::Physics(cfg) => {
            let mut cfg = cfg.clone();
            cfg.frame_scale = 1.0;
            Loss::physics(gpu, &cfg, output, &bufs.frame, grad, scale)
        }
        LossKind::Mse => Loss::mse(gpu, output, &bufs.truth, grad, scale),
        LossKind::Residual(r) => {
            let weight = bufs.weight.as_ref().expect("the residual loss's buffers have weights");
            Loss::residual(gpu, output, &bufs.frame, &bufs.truth, weight, r, grad, scale)
        }
    }
}

impl UNetTrainer {
    /// Build the trainer from a state_dict (PyTorch names), for batches of `n` frames of `h` x `w`;
    /// every tensor must be finite and every running variance ≥ 0.
    pub fn new(gpu: &Gpu, weights: &Weights, n: usize, h: usize, w: usize, train: TrainConfig) -> Result<Self> {
        if h < 16 || w < 16 {
            return Err(Error::Shape(format!("the U-Net needs patches of at least 16 x 16 pixels; got {h} x {w}")));
        }
        weights.check_finite()?;
        let config = UNet::config(weights)?;
        let flat = load_params(gpu, weights, &config)?;
        let scaler =
            if train.loss_scaling { LossScaler::new(gpu, Default::default())? } else { LossScaler::disabled(gpu) };
        let adam = Adam::new(gpu, train.adam.clone(), &flat, &scaler)?;
        let bufs = Buffers::new(gpu, &config, [n, h, w], &train)?;
        let net = Net::new(gpu, weights, &config, [n, h, w], &train)?;
        let scratch = weight_grad_scratch(gpu, &config, [n, h, w])?;
        let relayouts = net.relayouts(gpu, &flat, &config)?;
        let loss = make_loss(gpu, &train.loss, &bufs, &scaler)?;
        let recorder = Recorder { gpu, flat: &flat, bufs: &bufs, scratch: scratch.as_ref(), c: widths(config.base) };
        let tape = recorder.record(&net, &config)?;
        let memory = MemoryUse::of(&net, &bufs, &flat, scratch.as_ref());
        Ok(UNetTrainer {
            config,
            train,
            shape: [n, h, w],
            flat,
            adam,
            scaler,
            net,
            bufs,
            num_batches_tracked: 0,
            upload: None,
            loss,
            relayouts,
            tape,
            _scratch: scratch,
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
                let to_input = from_raw(gpu, &raw, self.train.input_scale, &self.bufs.input)?;
                let to_frame = from_raw(gpu, &raw, 1.0, &self.bufs.frame)?;
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

    /// The model's input `[n, C, h, w]` (storage precision) and the loss frame (f32: the raw
    /// frame `[n, C, h, w]`, or with the residual loss the classical heights `[n, 1, h, w]`), for
    /// a caller that fills them on the GPU itself instead of [`Self::set_frames`].
    pub fn inputs(&self) -> (&Tensor, &Tensor) {
        (&self.bufs.input, &self.bufs.frame)
    }

    /// Upload the residual loss's pixel weights `[n, 1, h, w]`.
    pub fn set_loss_weights(&mut self, gpu: &Gpu, weights: &[f32]) -> Result<()> {
        match &self.bufs.weight {
            Some(t) if t.len() == weights.len() => {
                t.upload(gpu, weights);
                Ok(())
            }
            Some(t) => Err(Error::Shape(format!("{} loss weights for a {:?} batch", weights.len(), t.shape))),
            None => Err(Error::Invalid("only the residual loss weighs its pixels".into())),
        }
    }

    /// Upload the truth maps `[n, classes, h, w]` for the supervised loss.
    pub fn set_truth(&mut self, gpu: &Gpu, truth: &[f32]) -> Result<()> {
        let t = &self.bufs.truth;
        if truth.len() != t.len() {
            return Err(Error::Shape(format!("{} truth values for a {:?} batch", truth.len(), t.shape)));
        }
        t.upload(gpu, truth);
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

    /// Zero every parameter gradient (the flat gradient buffer).
    pub fn zero_grad(&self, gpu: &Gpu) {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.flat.grads, 0, None);
        gpu.queue.submit([enc.finish()]);
    }

    /// Apply the optimizer to the accumulated gradients with learning rate `lr` (in place on the
    /// flat parameters, which the next forward reads).
    pub fn apply(&mut self, gpu: &Gpu, lr: f64) -> Result<StepReport> {
        self.adam.step(gpu, &mut self.scaler, lr)
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
        Ok(())
    }

    /// Replace the parameters of `entries` (from [`Self::layout`]) with `values`, their
    /// concatenation; only those bytes travel (an optimizer over a subset of a large model).
    pub fn write_param_entries(&mut self, gpu: &Gpu, entries: &[ParamEntry], values: &[f32]) -> Result<()> {
        self.flat.upload_entries(gpu, entries, values)
    }

    /// The accumulated gradients of `entries`, concatenated (one readback).
    pub fn read_grad_entries(&self, gpu: &Gpu, entries: &[ParamEntry]) -> Result<Vec<f32>> {
        self.flat.read_grad_entries(gpu, entries)
    }

    /// The accumulated gradients, flat ([`Self::layout`] order), multiplied by the loss scale when
    /// loss scaling is on.
    pub fn read_grads(&self, gpu: &Gpu) -> Result<Vec<f32>> {
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
        self.bufs.output.to_f32(gpu)
    }

    /// The current state_dict: parameters, running statistics, `num_batches_tracked` (as a count).
    pub fn state_dict(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        let flat = self.flat.read(gpu)?;
        for entry in self.flat.layout.entries() {
            out.push((entry.name.clone(), entry.shape.clone(), flat[entry.offset..entry.offset + entry.len].to_vec()));
        }
        // The running statistics by name, as a sorted map lists them.
        let mut running: Vec<(String, &Tensor)> = Vec::new();
        for (spec, layer) in self.net.blocks.iter().flat_map(|b| b.spec.iter().zip(&b.layers)) {
            running.push((spec.bn("running_mean"), &layer.running_mean));
            running.push((spec.bn("running_var"), &layer.running_var));
        }
        running.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in running {
            out.push((name, vec![t.len()], t.to_f32(gpu)?));
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

    /// Bytes of the trainer's buffers by [`MemoryUse`] role (activations kept for the backward,
    /// their gradients, parameters with the optimizer's gradients and moments and the
    /// convolutions' storage copies, scratch); fixed for the trainer's lifetime. Not counted: the
    /// raw frame upload, the loss's buffers, uniform blocks and the small per-launch reduction
    /// buffers (BatchNorm and gradient-norm partials, a few KiB).
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
