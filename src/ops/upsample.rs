//! Bilinear x2 upsampling (align_corners = true) fused with pad-to-skip-size and the write into a
//! concatenation's channel slot, and its backward (`shaders/upsample.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Shader, grid_1d};
use crate::tensor::ChannelView;

pub static SHADER: Shader = Shader { name: "upsample", body: include_str!("../../shaders/upsample.wgsl") };
pub static UPSAMPLE2X_PAD: Kernel = Kernel { shader: &SHADER, entry: "upsample2x_pad" };
pub static UPSAMPLE2X_PAD_BACKWARD: Kernel = Kernel { shader: &SHADER, entry: "upsample2x_pad_backward" };

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
    /// Backward only: add into dx.
    accumulate: u32,
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
        accumulate: 0,
    };
    let [gx, gy] = grid_1d(gpu, oh * ow, 256);
    let planes = (input.n() * input.channels) as u32;
    let bufs = [(1, &input.tensor.buffer), (2, &output.tensor.buffer)];
    Dispatch::new(gpu, &UPSAMPLE2X_PAD, precision, &p, &bufs, [gx, gy, planes])
}

/// Backward of `upsample2x_pad(x → y)`: `dx (+)= upsample2x_padᵀ(dy)`, where `dy` is the
/// gradient of the output view (e.g. the concatenation gradient's channel slot) and `dx` is shaped
/// like the forward's input. A gather (one invocation per input value, no atomics), so the result
/// is deterministic; `accumulate` adds into what `dx` holds.
pub fn upsample2x_pad_backward(gpu: &Gpu, dy: ChannelView, dx: ChannelView, accumulate: bool) -> Result<Dispatch> {
    let precision = super::same_precision(&dx, &dy)?;
    if dx.channels != dy.channels || dx.n() != dy.n() {
        return Err(Error::Shape(format!(
            "upsampling backward from a {}-channel slot into {} channels",
            dy.channels, dx.channels
        )));
    }
    if std::ptr::eq(dx.tensor, dy.tensor) {
        return Err(Error::Shape("upsampling backward: dx must not share a tensor with dy".into()));
    }
    let (ih, iw, oh, ow) = (dx.h(), dx.w(), dy.h(), dy.w());
    let pad_y = oh as i64 - 2 * ih as i64;
    let pad_x = ow as i64 - 2 * iw as i64;
    let p = UpParams {
        c: dx.channels as u32,
        ih: ih as u32,
        iw: iw as u32,
        in_ctot: dx.total() as u32,
        in_coff: dx.offset as u32,
        oh: oh as u32,
        ow: ow as u32,
        out_ctot: dy.total() as u32,
        out_coff: dy.offset as u32,
        pad_top: pad_y.div_euclid(2) as i32,
        pad_left: pad_x.div_euclid(2) as i32,
        accumulate: accumulate as u32,
    };
    let [gx, gy] = grid_1d(gpu, ih * iw, 256);
    let planes = (dx.n() * dx.channels) as u32;
    let bufs = [(3, &dy.tensor.buffer), (4, &dx.tensor.buffer)];
    Dispatch::new(gpu, &UPSAMPLE2X_PAD_BACKWARD, precision, &p, &bufs, [gx, gy, planes])
}
