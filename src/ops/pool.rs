//! 2x2 max-pooling, flooring odd sizes (`shaders/pool.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Shader, grid_1d};
use crate::tensor::ChannelView;

pub static SHADER: Shader = Shader { name: "pool", body: include_str!("../../shaders/pool.wgsl") };
pub static MAXPOOL2X2: Kernel = Kernel { shader: &SHADER, entry: "maxpool2x2" };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    c: u32,
    h: u32,
    w: u32,
    in_ctot: u32,
    in_coff: u32,
    oh: u32,
    ow: u32,
    _pad: u32,
}

/// `output[n, c] = maxpool2x2(input[n, c])`; `output` must be a whole tensor of
/// `[n, c, h / 2, w / 2]`.
pub fn maxpool2x2(gpu: &Gpu, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let precision = super::same_precision(&input, &output)?;
    let (oh, ow) = (input.h() / 2, input.w() / 2);
    if output.offset != 0
        || output.total() != input.channels
        || (output.n(), output.h(), output.w()) != (input.n(), oh, ow)
    {
        return Err(Error::Shape(format!(
            "max-pool of {}x{}x{} needs a whole [{}, {}, {oh}, {ow}] output",
            input.channels,
            input.h(),
            input.w(),
            input.n(),
            input.channels
        )));
    }
    let p = PoolParams {
        c: input.channels as u32,
        h: input.h() as u32,
        w: input.w() as u32,
        in_ctot: input.total() as u32,
        in_coff: input.offset as u32,
        oh: oh as u32,
        ow: ow as u32,
        _pad: 0,
    };
    let [gx, gy] = grid_1d(gpu, oh * ow, 256);
    let planes = (input.n() * input.channels) as u32;
    Dispatch::new(
        gpu,
        &MAXPOOL2X2,
        precision,
        &p,
        &[(1, &input.tensor.buffer), (2, &output.tensor.buffer)],
        [gx, gy, planes],
    )
}
