//! Gather a batch of tiles from a block of frame rows, converting the raw dtype to the model's
//! storage type and scaling (`shaders/gather.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Shader, Tensor, grid_1d};

pub static SHADER: Shader = wgsl!("gather": "lib/grid.wgsl", "lib/decode.wgsl", "gather.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GatherParams {
    pub c: u32,
    pub th: u32,
    pub tw: u32,
    /// Columns of the block.
    pub bw: u32,
    /// Tiles of the batch that are real (the rest of the plan's slots are skipped).
    pub count: u32,
    pub scale: f32,
    /// The block's host data type: [`host_type_code`](super::host_type_code).
    pub kind: u32,
    pub _pad: u32,
}

/// `output[k] = block[:, :, tiles[k].z ..][.. th, .. tw] * scale` for the batch's tiles, the raw
/// `block` holding values of the host type `params.kind`. `output` is the model's
/// `[n, c, th, tw]` input; `tiles` holds `vec4<u32>` descriptors.
pub fn gather(
    gpu: &Gpu,
    block: &wgpu::Buffer,
    tiles: &wgpu::Buffer,
    params: &GatherParams,
    output: &Tensor,
) -> Result<Dispatch> {
    let [n, c, th, tw] = output.shape;
    if params.kind > 3 || (params.c, params.th, params.tw) != (c as u32, th as u32, tw as u32) {
        return Err(Error::Shape(format!(
            "gathering {}x{}x{} tiles of host type code {} into {:?}",
            params.c, params.th, params.tw, params.kind, output.shape
        )));
    }
    let [gx, gy] = grid_1d(gpu, th * tw, 256);
    let bufs = [(1, block), (2, tiles), (3, &output.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("gather"), output.precision, params, &bufs, [gx, gy, (n * c) as u32])
}

/// The gather on the CPU (conventions in [`crate::ops`]).
pub mod reference {
    /// Tile `k` of the output `[tiles.len(), c, th, tw]` is `block[:, :, tiles[k][2] ..][.., .. tw]
    /// · scale`, for a block `[c, th, bw]` of frame rows and the batch's tile descriptors.
    pub fn gather(block: &[f64], [c, th, bw]: [usize; 3], tiles: &[[u32; 4]], tw: usize, scale: f64) -> Vec<f64> {
        assert_eq!(block.len(), c * th * bw, "block size");
        let mut out = Vec::with_capacity(tiles.len() * c * th * tw);
        for t in tiles {
            for ch in 0..c {
                for y in 0..th {
                    let row = (ch * th + y) * bw + t[2] as usize;
                    out.extend(block[row..row + tw].iter().map(|v| v * scale));
                }
            }
        }
        out
    }
}
