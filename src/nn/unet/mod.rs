//! The seed's U-Net (bilinear upsampling, BatchNorm), at parity with its PyTorch definition:
//!
//! ```text
//! DoubleConv(cin, cout, mid = cout) = conv3x3-BN-ReLU (cin -> mid), conv3x3-BN-ReLU (mid -> cout)
//! inc   = DoubleConv(C, b)
//! downi = MaxPool2d(2) + DoubleConv        widths b -> 2b -> 4b -> 8b -> 8b
//! upi   = bilinear x2 (align_corners), pad to the skip's size, cat [skip, up],
//!         DoubleConv(cin, cout, mid = cin / 2)   up1 16b->4b, up2 8b->2b, up3 4b->b, up4 2b->b
//! outc  = conv1x1 with bias (b -> classes)
//! ```
//!
//! `C`, `classes` and `b` come from the shapes in the weights (PyTorch state_dict names).
//! The architecture is written once, as a table: [`blocks`] (the nine DoubleConv blocks with
//! their state_dict names, widths and resolution level), the head [`HEAD`], and [`state_dict`]
//! (every tensor in PyTorch's order). Inference ([`UNet`]), training ([`train`]) and
//! initialisation ([`init`]) all read it. Eval-mode BatchNorm is folded into each convolution's
//! scale/shift epilogue.
//!
//! A [`Plan`] holds every activation buffer and recorded dispatch for one input size, so a
//! tile size is planned once and replayed for every tile. Concatenations cost nothing: the skip's
//! second convolution writes straight into channels `[0, c)` of the concat buffer and the
//! upsampling kernel into `[c, 2c)`.

pub mod init;
pub mod train;

use crate::error::{Error, Result};
use crate::gpu::Plan;
use crate::gpu::Tensor;
use crate::gpu::{ChannelView, Dispatch, Gpu, Precision};
use crate::io::weights::{HostTensor, Weights};
use crate::ops::conv::select::{Conv, Tuner};
use crate::ops::conv::winograd::{WinogradWeights, conv_winograd};
use crate::ops::conv::{ConvWeights, conv};
use crate::ops::pool::maxpool2x2;
use crate::ops::upsample::upsample2x_pad;
use std::sync::Mutex;

/// PyTorch's BatchNorm2d default epsilon.
const BN_EPS: f32 = 1e-5;

/// Channel counts read from the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UNetConfig {
    pub n_channels: usize,
    pub n_classes: usize,
    pub base: usize,
}

/// Skip width of each resolution level 0..=4 (level `l` works at `h >> l` x `w >> l`).
pub fn widths(base: usize) -> [usize; 5] {
    [base, 2 * base, 4 * base, 8 * base, 8 * base]
}

/// One conv3x3–BatchNorm–ReLU layer: `{conv}.weight` `[cout, cin, 3, 3]` (no bias) and the
/// BatchNorm2d `{bn}.weight`, `.bias`, `.running_mean`, `.running_var` of `cout` channels,
/// working at resolution level `level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    pub conv: String,
    pub bn: String,
    pub cin: usize,
    pub cout: usize,
    pub level: usize,
}

/// What a state_dict tensor is (how it is initialised, whether the optimizer trains it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ConvWeight,
    ConvBias,
    BnWeight,
    BnBias,
    RunningMean,
    RunningVar,
}

impl Role {
    /// Trained by the optimizer; the running statistics are buffers.
    pub fn is_parameter(self) -> bool {
        !matches!(self, Role::RunningMean | Role::RunningVar)
    }
}

/// One floating-point tensor of the state_dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

impl ConvLayer {
    /// `{conv}.weight`.
    pub fn weight(&self) -> String {
        format!("{}.weight", self.conv)
    }

    /// `{bn}.{field}` (`weight`, `bias`, `running_mean` or `running_var`).
    pub fn bn(&self, field: &str) -> String {
        format!("{}.{field}", self.bn)
    }

    /// The layer's tensors in state_dict order.
    pub fn tensors(&self) -> [TensorSpec; 5] {
        let spec = |name: String, shape: Vec<usize>, role| TensorSpec { name, shape, role };
        let c = self.cout;
        [
            spec(self.weight(), vec![c, self.cin, 3, 3], Role::ConvWeight),
            spec(self.bn("weight"), vec![c], Role::BnWeight),
            spec(self.bn("bias"), vec![c], Role::BnBias),
            spec(self.bn("running_mean"), vec![c], Role::RunningMean),
            spec(self.bn("running_var"), vec![c], Role::RunningVar),
        ]
    }
}

/// `DoubleConv(cin, cout, mid)` named `{prefix}.double_conv`: layers `.0`/`.1` (cin -> mid) and
/// `.3`/`.4` (mid -> cout), both at `level`.
pub type Block = [ConvLayer; 2];

fn double_conv(prefix: &str, level: usize, cin: usize, mid: usize, cout: usize) -> Block {
    let d = format!("{prefix}.double_conv");
    let layer =
        |i: usize, cin, cout| ConvLayer { conv: format!("{d}.{i}"), bn: format!("{d}.{}", i + 1), cin, cout, level };
    [layer(0, cin, mid), layer(3, mid, cout)]
}

/// The nine DoubleConv blocks in state_dict order: `inc`, `down1..4`, `up1..4`. The encoder
/// block at level `l` is `blocks[l]` (`inc` at 0), the decoder block at level `l` is
/// `blocks[8 - l]`.
pub fn blocks(config: &UNetConfig) -> Vec<Block> {
    let (c, b) = (config.n_channels, config.base);
    let w = widths(b);
    let mut out = vec![double_conv("inc", 0, c, b, b)];
    for l in 1..=4 {
        out.push(double_conv(&format!("down{l}.maxpool_conv.1"), l, w[l - 1], w[l], w[l]));
    }
    // Up(cin, cout): cin = [skip, upsampled] channels, mid = cin / 2; up1 works at level 3.
    for (i, (cin, cout)) in [(16 * b, 4 * b), (8 * b, 2 * b), (4 * b, b), (2 * b, b)].into_iter().enumerate() {
        out.push(double_conv(&format!("up{}.conv", i + 1), 3 - i, cin, cin / 2, cout));
    }
    out
}

/// The 1x1 head: `{HEAD}.weight` `[classes, base, 1, 1]` and `{HEAD}.bias` `[classes]`.
pub const HEAD: &str = "outc.conv";

/// The head's tensors in state_dict order.
pub fn head(config: &UNetConfig) -> [TensorSpec; 2] {
    let (k, b) = (config.n_classes, config.base);
    [
        TensorSpec { name: format!("{HEAD}.weight"), shape: vec![k, b, 1, 1], role: Role::ConvWeight },
        TensorSpec { name: format!("{HEAD}.bias"), shape: vec![k], role: Role::ConvBias },
    ]
}

/// Every floating-point tensor of PyTorch's `UNet.state_dict()`, in its order (the integer
/// `num_batches_tracked` buffers left out).
pub fn state_dict(config: &UNetConfig) -> Vec<TensorSpec> {
    let layers = blocks(config).into_iter().flatten();
    layers.flat_map(|l| l.tensors()).chain(head(config)).collect()
}

/// A U-Net's weights on the GPU in one precision.
pub struct UNet {
    pub config: UNetConfig,
    pub precision: Precision,
    /// `input_scale` from the weights' metadata, if any.
    pub input_scale: Option<f32>,
    /// `height_range` (µm, "lo,hi") the model was trained on, from the metadata, if recorded.
    pub trained_heights: Option<String>,
    /// The kernel of the 3x3 convolutions.
    pub conv: Conv,
    /// The convolutions of [`blocks`], in its order.
    blocks: Vec<[ConvWeights; 2]>,
    /// The same in the Winograd domain (empty with [`Conv::Direct`]).
    winograd: Vec<[WinogradWeights; 2]>,
    /// Picks the kernel per layer shape with [`Conv::Auto`].
    tuner: Option<Tuner>,
    /// Layers the last [`UNet::plan`] gave the Winograd kernel, of all 3x3 layers.
    winograd_layers: Mutex<Option<[usize; 2]>>,
    outc: ConvWeights,
}

/// `{bn}.running_var` of `layer`, checked: a variance is never negative (one below 0 would make
/// eval-mode BatchNorm's scale the root of a negative number, or a huge plausible-looking gain).
pub fn running_var<'a>(wts: &'a Weights, layer: &ConvLayer) -> Result<&'a HostTensor> {
    let name = layer.bn("running_var");
    let var = wts.get(&name, &[layer.cout])?;
    if let Some(o) = var.data.iter().position(|&v| v.is_nan() || v < 0.0) {
        return Err(Error::Weights {
            path: wts.path.clone(),
            message: format!("tensor '{name}' is {} in channel {o}: a variance cannot be negative", var.data[o]),
        });
    }
    Ok(var)
}

/// One 3x3 convolution followed by eval-mode BatchNorm and ReLU, for the direct kernel and, with
/// `winograd`, also in the Winograd domain.
fn conv_bn_relu(
    gpu: &Gpu,
    p: Precision,
    wts: &Weights,
    layer: &ConvLayer,
    winograd: bool,
) -> Result<(ConvWeights, Option<WinogradWeights>)> {
    let [w, g, beta, mean, _] = layer.tensors().map(|t| wts.get(&t.name, &t.shape));
    let (w, g, beta, mean, var) = (w?, g?, beta?, mean?, running_var(wts, layer)?);
    let (cin, cout) = (layer.cin, layer.cout);
    let mut scale = vec![0f32; cout];
    let mut shift = vec![0f32; cout];
    for o in 0..cout {
        let s = g.data[o] as f64 / (var.data[o] as f64 + BN_EPS as f64).sqrt();
        scale[o] = s as f32;
        shift[o] = (beta.data[o] as f64 - mean.data[o] as f64 * s) as f32;
    }
    let direct = ConvWeights::new(gpu, p, &w.data, [cout, cin, 3], &scale, &shift, true)?;
    let wino =
        winograd.then(|| WinogradWeights::new(gpu, p, &w.data, [cout, cin], &scale, &shift, true)).transpose()?;
    Ok((direct, wino))
}

impl UNet {
    /// Read the configuration from the shapes of `inc.double_conv.0.weight` and `outc.conv.weight`.
    pub fn config(wts: &Weights) -> Result<UNetConfig> {
        let inc = wts.shape("inc.double_conv.0.weight")?;
        let out = wts.shape("outc.conv.weight")?;
        if inc.len() != 4 || out.len() != 4 || inc[0] == 0 || out[0] == 0 {
            return Err(Error::Weights {
                path: wts.path.clone(),
                message: format!("unexpected shapes {inc:?} (inc.double_conv.0.weight), {out:?} (outc.conv.weight)"),
            });
        }
        Ok(UNetConfig { n_channels: inc[1], n_classes: out[0], base: inc[0] })
    }

    /// Upload a U-Net from its state_dict, checking every tensor's presence, shape and
    /// finiteness, and that every running variance is ≥ 0; its 3x3 convolutions run the direct
    /// kernel.
    pub fn new(gpu: &Gpu, wts: &Weights, precision: Precision) -> Result<UNet> {
        Self::with_conv(gpu, wts, precision, Conv::Direct, None)
    }

    /// [`UNet::new`] with the 3x3 kernel `conv`; [`Conv::Auto`] measures with `tuner` (`None`:
    /// the cache of this process's environment, [`Tuner::from_env`]).
    pub fn with_conv(gpu: &Gpu, wts: &Weights, precision: Precision, conv: Conv, tuner: Option<Tuner>) -> Result<UNet> {
        wts.check_finite()?;
        let config = Self::config(wts)?;
        let with_winograd = conv != Conv::Direct;
        let (mut direct, mut winograd) = (Vec::new(), Vec::new());
        for [a, b] in blocks(&config) {
            let ((da, wa), (db, wb)) = (
                conv_bn_relu(gpu, precision, wts, &a, with_winograd)?,
                conv_bn_relu(gpu, precision, wts, &b, with_winograd)?,
            );
            direct.push([da, db]);
            if let (Some(wa), Some(wb)) = (wa, wb) {
                winograd.push([wa, wb]);
            }
        }
        let tuner = (conv == Conv::Auto).then(|| tuner.unwrap_or_else(Tuner::from_env));
        let [w, bias] = head(&config).map(|t| wts.get(&t.name, &t.shape));
        let (w, bias, k) = (w?, bias?, config.n_classes);
        let outc = ConvWeights::new(gpu, precision, &w.data, [k, config.base, 1], &vec![1.0; k], &bias.data, false)?;
        let input_scale = wts.metadata_f32("input_scale")?;
        let trained_heights = wts.metadata.get("height_range").cloned();
        let winograd_layers = Mutex::new(None);
        Ok(UNet {
            config,
            precision,
            input_scale,
            trained_heights,
            conv,
            blocks: direct,
            winograd,
            tuner,
            winograd_layers,
            outc,
        })
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let winograd: u64 = self.winograd.iter().flatten().map(WinogradWeights::bytes).sum();
        self.blocks.iter().flatten().map(ConvWeights::bytes).sum::<u64>() + winograd + self.outc.bytes()
    }

    /// `[layers on the Winograd kernel, 3x3 layers]` of the last [`UNet::plan`], if any.
    pub fn winograd_layers(&self) -> Option<[usize; 2]> {
        *self.winograd_layers.lock().unwrap()
    }

    /// Convolution `layer` (0 or 1) of block `block` from `input` into `output`, on the kernel
    /// [`UNet::conv`] picks; counts the Winograd ones in `tally`.
    fn conv3x3(
        &self,
        gpu: &Gpu,
        [block, layer]: [usize; 2],
        input: ChannelView,
        output: ChannelView,
        tally: &mut usize,
    ) -> Result<Dispatch> {
        let direct = &self.blocks[block][layer];
        if self.conv == Conv::Direct {
            return conv(gpu, direct, input, output);
        }
        let winograd = conv_winograd(gpu, &self.winograd[block][layer], input, output)?;
        if let Some(tuner) = &self.tuner {
            let d = conv(gpu, direct, input, output)?;
            let shape = [input.n(), direct.cin, direct.cout, input.h(), input.w()];
            if tuner.choose(gpu, self.precision, shape, &d, &winograd)? == Conv::Direct {
                return Ok(d);
            }
        }
        *tally += 1;
        Ok(winograd)
    }

    /// Allocate activations and record the forward pass for `n` images of `h` x `w`.
    pub fn plan(&self, gpu: &Gpu, n: usize, h: usize, w: usize) -> Result<Plan> {
        if h < 16 || w < 16 {
            return Err(Error::Shape(format!(
                "the U-Net pools four times and needs frames of at least 16 x 16 pixels; got {h} x {w}"
            )));
        }
        let p = self.precision;
        let UNetConfig { n_channels, n_classes, base: b } = self.config;
        let t = |c: usize, l: usize, label: &str| Tensor::new(gpu, [n, c, h >> l, w >> l], p, label);
        // Level l (0..4) has size (h >> l, w >> l) and skip width c[l].
        let c = widths(b);
        let input = t(n_channels, 0, "unet input")?;
        let mut cat = Vec::new();
        let mut mid = Vec::new();
        for (l, &cl) in c[..4].iter().enumerate() {
            cat.push(t(2 * cl, l, "unet concat")?);
            mid.push(t(cl, l, "unet mid")?);
        }
        // pooled[l - 1] (level l = 1..=4) holds maxpool(skip of level l - 1); once the down block
        // has read it, it is free and receives the output of the up block at level l (same shape).
        let pooled: Vec<Tensor> = (1..=4).map(|l| t(c[l - 1], l, "unet pooled")).collect::<Result<_>>()?;
        let mid5 = t(c[4], 4, "unet bottom mid")?;
        let x5 = t(c[4], 4, "unet bottom")?;
        let up_out = t(b, 0, "unet up4 out")?;
        let output = t(n_classes, 0, "unet output")?;

        // The encoder block at level l is blocks[l], the decoder block blocks[8 - l].
        let mut d: Vec<Dispatch> = Vec::new();
        let mut tally = 0;
        let mut conv3 = |at, i: ChannelView, o: ChannelView| self.conv3x3(gpu, at, i, o, &mut tally);
        d.push(conv3([0, 0], input.view(), mid[0].view())?);
        d.push(conv3([0, 1], mid[0].view(), cat[0].channels(0, c[0]))?);
        for l in 1..=4 {
            let skip = cat[l - 1].channels(0, c[l - 1]);
            d.push(maxpool2x2(gpu, skip, pooled[l - 1].view())?);
            if l < 4 {
                d.push(conv3([l, 0], pooled[l - 1].view(), mid[l].view())?);
                d.push(conv3([l, 1], mid[l].view(), cat[l].channels(0, c[l]))?);
            } else {
                d.push(conv3([l, 0], pooled[3].view(), mid5.view())?);
                d.push(conv3([l, 1], mid5.view(), x5.view())?);
            }
        }
        // up1..up4 work at levels 3..0; their input is x5, then the previous up block's output.
        // Up at level l reads 2 c[l] channels and its middle width is c[l], the size of mid[l].
        for l in (0..4).rev() {
            let below = if l == 3 { x5.view() } else { pooled[l].view() };
            d.push(upsample2x_pad(gpu, below, cat[l].channels(c[l], below.channels))?);
            d.push(conv3([8 - l, 0], cat[l].view(), mid[l].view())?);
            let out = if l == 0 { up_out.view() } else { pooled[l - 1].view() };
            d.push(conv3([8 - l, 1], mid[l].view(), out)?);
        }
        *self.winograd_layers.lock().unwrap() = Some([tally, 2 * self.blocks.len()]);
        d.push(conv(gpu, &self.outc, up_out.view(), output.view())?);

        let mut buffers = vec![mid5, x5, up_out];
        buffers.extend(cat);
        buffers.extend(mid);
        buffers.extend(pooled);
        let bytes = buffers.iter().chain([&input, &output]).map(|t| t.buffer.size()).sum();
        Ok(Plan { input, output, dispatches: d, buffers, bytes })
    }
}
