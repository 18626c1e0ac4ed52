//! Bilinear x2 upsampling (align_corners = true) fused with pad-to-skip-size and the write into a
//! concatenation's channel slot (`shaders/upsample.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Shader, grid_1d};
use crate::tensor::ChannelView;

pub static SHADER: Shader = Shader { name: "upsample", body: include_str!("../../shaders/upsample.wgsl") };
pub static UPSAMPLE2X_PAD: Kernel = Kernel { shader: &SHADER, entry: "upsample2x_pad" };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpParams {
    c: u32,
    ih: u32,
    iw: u32,
    in_ctot: u32,
    in_coff: u32,
    oh: u32,
    ow: u32,
    out_ctot: u32,
    out_coff: u32,
    pad_top: i32,
    pad_left: i32,
    _pad: u32,
}

/// Upsample `input` x2 and pad it as PyTorch's `F.pad(x, [dx//2, dx-dx//2, dy//2, dy-dy//2])`
/// to the output view's size (negative differences crop), writing into `output`'s channels.
pub fn upsample2x_pad(gpu: &Gpu, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let precision = super::same_precision(&input, &output)?;
    if input.channels != output.channels || input.n() != output.n() {
        return Err(Error::Shape(format!(
            "upsampling {} channels into a {}-channel slot",
            input.channels, output.channels
        )));
    }
    let (oh, ow) = (output.h(), output.w());
    let dy = oh as i64 - 2 * input.h() as i64;
    let dx = ow as i64 - 2 * input.w() as i64;
    let p = UpParams {
        c: input.channels as u32,
        ih: input.h() as u32,
        iw: input.w() as u32,
        in_ctot: input.total() as u32,
        in_coff: input.offset as u32,
        oh: oh as u32,
        ow: ow as u32,
        out_ctot: output.total() as u32,
        out_coff: output.offset as u32,
        pad_top: dy.div_euclid(2) as i32,
        pad_left: dx.div_euclid(2) as i32,
        _pad: 0,
    };
    let [gx, gy] = grid_1d(gpu, oh * ow, 256);
    let planes = (input.n() * input.channels) as u32;
    let bufs = [(1, &input.tensor.buffer), (2, &output.tensor.buffer)];
    Dispatch::new(gpu, &UPSAMPLE2X_PAD, precision, &p, &bufs, [gx, gy, planes])
}
