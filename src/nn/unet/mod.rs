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
//! Eval-mode BatchNorm is folded into each convolution's scale/shift epilogue.
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
use crate::gpu::{Dispatch, Gpu, Precision};
use crate::io::weights::Weights;
use crate::ops::conv::{ConvWeights, conv};
use crate::ops::pool::maxpool2x2;
use crate::ops::upsample::upsample2x_pad;

/// PyTorch's BatchNorm2d default epsilon.
const BN_EPS: f32 = 1e-5;

/// Channel counts read from the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UNetConfig {
    pub n_channels: usize,
    pub n_classes: usize,
    pub base: usize,
}

struct DoubleConv {
    a: ConvWeights,
    b: ConvWeights,
}

/// A U-Net's weights on the GPU in one precision.
pub struct UNet {
    pub config: UNetConfig,
    pub precision: Precision,
    /// `input_scale` from the weights' metadata, if any.
    pub input_scale: Option<f32>,
    /// `height_range` (µm, "lo,hi") the model was trained on, from the metadata, if recorded.
    pub trained_heights: Option<String>,
    inc: DoubleConv,
    downs: Vec<DoubleConv>,
    ups: Vec<DoubleConv>,
    outc: ConvWeights,
}

/// One 3x3 convolution followed by eval-mode BatchNorm and ReLU: `{conv}.weight`, `{bn}.*`.
fn conv_bn_relu(
    gpu: &Gpu,
    p: Precision,
    wts: &Weights,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
) -> Result<ConvWeights> {
    let w = wts.get(&format!("{conv}.weight"), &[cout, cin, 3, 3])?;
    let g = wts.get(&format!("{bn}.weight"), &[cout])?;
    let beta = wts.get(&format!("{bn}.bias"), &[cout])?;
    let mean = wts.get(&format!("{bn}.running_mean"), &[cout])?;
    let var = wts.get(&format!("{bn}.running_var"), &[cout])?;
    let mut scale = vec![0f32; cout];
    let mut shift = vec![0f32; cout];
    for o in 0..cout {
        let s = g.data[o] as f64 / (var.data[o] as f64 + BN_EPS as f64).sqrt();
        scale[o] = s as f32;
        shift[o] = (beta.data[o] as f64 - mean.data[o] as f64 * s) as f32;
    }
    ConvWeights::new(gpu, p, &w.data, [cout, cin, 3], &scale, &shift, true)
}

fn double_conv(
    gpu: &Gpu,
    p: Precision,
    wts: &Weights,
    prefix: &str,
    cin: usize,
    mid: usize,
    cout: usize,
) -> Result<DoubleConv> {
    let d = format!("{prefix}.double_conv");
    Ok(DoubleConv {
        a: conv_bn_relu(gpu, p, wts, &format!("{d}.0"), &format!("{d}.1"), cin, mid)?,
        b: conv_bn_relu(gpu, p, wts, &format!("{d}.3"), &format!("{d}.4"), mid, cout)?,
    })
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

    /// Upload a U-Net from its state_dict, checking every tensor's presence and shape.
    pub fn new(gpu: &Gpu, wts: &Weights, precision: Precision) -> Result<UNet> {
        let config = Self::config(wts)?;
        let (c, b) = (config.n_channels, config.base);
        let inc = double_conv(gpu, precision, wts, "inc", c, b, b)?;
        let widths = [b, 2 * b, 4 * b, 8 * b, 8 * b];
        let mut downs = Vec::new();
        for i in 1..=4 {
            let (cin, cout) = (widths[i - 1], widths[i]);
            downs.push(double_conv(gpu, precision, wts, &format!("down{i}.maxpool_conv.1"), cin, cout, cout)?);
        }
        let up_io = [(16 * b, 4 * b), (8 * b, 2 * b), (4 * b, b), (2 * b, b)];
        let mut ups = Vec::new();
        for (i, &(cin, cout)) in up_io.iter().enumerate() {
            ups.push(double_conv(gpu, precision, wts, &format!("up{}.conv", i + 1), cin, cin / 2, cout)?);
        }
        let k = config.n_classes;
        let w = wts.get("outc.conv.weight", &[k, b, 1, 1])?;
        let bias = wts.get("outc.conv.bias", &[k])?;
        let outc = ConvWeights::new(gpu, precision, &w.data, [k, b, 1], &vec![1.0; k], &bias.data, false)?;
        let input_scale = wts.metadata_f32("input_scale")?;
        let trained_heights = wts.metadata.get("height_range").cloned();
        Ok(UNet { config, precision, input_scale, trained_heights, inc, downs, ups, outc })
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let dc = |d: &DoubleConv| d.a.bytes() + d.b.bytes();
        dc(&self.inc) + self.downs.iter().chain(&self.ups).map(dc).sum::<u64>() + self.outc.bytes()
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
        let c = [b, 2 * b, 4 * b, 8 * b, 8 * b];
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

        let mut d: Vec<Dispatch> = Vec::new();
        d.push(conv(gpu, &self.inc.a, input.view(), mid[0].view())?);
        d.push(conv(gpu, &self.inc.b, mid[0].view(), cat[0].channels(0, c[0]))?);
        for l in 1..=4 {
            let skip = cat[l - 1].channels(0, c[l - 1]);
            d.push(maxpool2x2(gpu, skip, pooled[l - 1].view())?);
            let dc = &self.downs[l - 1];
            if l < 4 {
                d.push(conv(gpu, &dc.a, pooled[l - 1].view(), mid[l].view())?);
                d.push(conv(gpu, &dc.b, mid[l].view(), cat[l].channels(0, c[l]))?);
            } else {
                d.push(conv(gpu, &dc.a, pooled[3].view(), mid5.view())?);
                d.push(conv(gpu, &dc.b, mid5.view(), x5.view())?);
            }
        }
        // up1..up4 work at levels 3..0; their input is x5, then the previous up block's output.
        // Up at level l reads 2 c[l] channels and its middle width is c[l], the size of mid[l].
        for (i, l) in (0..4).rev().enumerate() {
            let below = if l == 3 { x5.view() } else { pooled[l].view() };
            d.push(upsample2x_pad(gpu, below, cat[l].channels(c[l], below.channels))?);
            let dc = &self.ups[i];
            d.push(conv(gpu, &dc.a, cat[l].view(), mid[l].view())?);
            let out = if l == 0 { up_out.view() } else { pooled[l - 1].view() };
            d.push(conv(gpu, &dc.b, mid[l].view(), out)?);
        }
        d.push(conv(gpu, &self.outc, up_out.view(), output.view())?);

        let mut buffers = vec![mid5, x5, up_out];
        buffers.extend(cat);
        buffers.extend(mid);
        buffers.extend(pooled);
        let bytes = buffers.iter().chain([&input, &output]).map(|t| t.buffer.size()).sum();
        Ok(Plan { input, output, dispatches: d, buffers, bytes })
    }
}
