//! The Winograd F(2x2, 3x3) forward of a 3x3 convolution (padding 1) with the fused
//! `act(conv * scale[oc] + shift[oc])` epilogue (`shaders/conv_winograd.wgsl`): the same
//! interface and result as [`conv`](super::conv) on 3x3 weights, with 16 multiplies per 2x2 output
//! tile, input and output channel instead of 36. Inference only: training and the gradients stay
//! on the direct kernel.
//!
//! The weights are transformed once on upload, `U = G g G^T` per (output, input) channel, in f64
//! and then stored in the storage precision; the input and output transforms and the sums run in
//! f32 on the GPU. The CPU version of the algorithm is [`reference`].

use super::ConvParams;
use crate::error::{Error, Result};
use crate::gpu::{ChannelView, Dispatch, Gpu, Precision, Shader, encode, storage};

pub static SHADER: Shader = wgsl!("conv_winograd": "lib/conv_io.wgsl", "conv_winograd.wgsl");

/// Output tiles (2 x 2 pixels) of one workgroup along x and y, and its output channels.
const TILES: [usize; 3] = [8, 4, 16];

/// A 3x3 convolution's weights in the Winograd domain on the GPU, with its epilogue.
pub struct WinogradWeights {
    pub cin: usize,
    pub cout: usize,
    pub relu: bool,
    pub precision: Precision,
    /// `u[((oc / 4) * cin + ci) * 16 + t][oc % 4] = U[oc, ci, t]`.
    u: wgpu::Buffer,
    ss: wgpu::Buffer,
}

impl WinogradWeights {
    /// `w` is PyTorch's `[cout, cin, 3, 3]` weight; `scale`/`shift` have `cout` entries.
    pub fn new(
        gpu: &Gpu,
        precision: Precision,
        w: &[f32],
        [cout, cin]: [usize; 2],
        scale: &[f32],
        shift: &[f32],
        relu: bool,
    ) -> Result<WinogradWeights> {
        if w.len() != cout * cin * 9 || scale.len() != cout || shift.len() != cout {
            return Err(Error::Shape(format!("convolution weights do not match [{cout}, {cin}, 3, 3]")));
        }
        let mut packed = vec![0f32; cout.div_ceil(4) * cin * 16 * 4];
        for oc in 0..cout {
            for ci in 0..cin {
                let g = &w[(oc * cin + ci) * 9..][..9];
                let u = reference::transform_weight(&std::array::from_fn(|i| g[i] as f64));
                for (t, v) in u.into_iter().enumerate() {
                    packed[(((oc / 4) * cin + ci) * 16 + t) * 4 + oc % 4] = v as f32;
                }
            }
        }
        let u = storage(gpu, "winograd weights", &encode(&packed, precision))?;
        let ss = super::scale_shift(gpu, scale, shift)?;
        Ok(WinogradWeights { cin, cout, relu, precision, u, ss })
    }

    /// Bytes the weights occupy on the GPU.
    pub fn bytes(&self) -> u64 {
        self.u.size() + self.ss.size()
    }
}

/// `output = act(conv3x3(input) * scale + shift)`, padding 1: [`conv`](super::conv)'s result by
/// the Winograd algorithm.
pub fn conv_winograd(gpu: &Gpu, w: &WinogradWeights, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let c = super::view_params(w.precision, [w.cin, w.cout], &input, &output, "winograd convolution")?;
    let (tiles_x, tiles_y) = ((c.w as usize).div_ceil(2), (c.h as usize).div_ceil(2));
    let oc_tiles = w.cout.div_ceil(TILES[2]);
    let p = ConvParams { relu: w.relu as u32, oc_tiles: oc_tiles as u32, affine: 1, ..c };
    let groups = [tiles_x.div_ceil(TILES[0]) as u32, tiles_y.div_ceil(TILES[1]) as u32, (input.n() * oc_tiles) as u32];
    let bufs = [(1, &input.tensor.buffer), (2, &w.u), (3, &w.ss), (4, &output.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("winograd2x2"), w.precision, &p, &bufs, groups)
}

/// Multiplies of a 3x3 convolution of `n` images of `h` x `w`, `cin` -> `cout` channels, without
/// the transforms: `[direct, winograd]` = 9 per output pixel and channel pair, 16 per 2x2 tile
/// (4 per pixel where the tiles fit), for benchmark reports.
pub fn multiplies(n: usize, cin: usize, cout: usize, h: usize, w: usize) -> [f64; 2] {
    let pairs = (n * cin * cout) as f64;
    [9.0 * pairs * (h * w) as f64, 16.0 * pairs * (h.div_ceil(2) * w.div_ceil(2)) as f64]
}

/// The Winograd algorithm on the CPU in f64 (conventions in [`crate::ops`]).
pub mod reference {
    /// `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`.
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    /// `B^T`, the input transform.
    const BT: [[f64; 4]; 4] =
        [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]];
    /// `A^T`, the output transform.
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

    /// `L X R^T` of a row-major `X` (`L`: a x b, `X`: b x b, `R`: a x b).
    fn sandwich<const A: usize, const B: usize>(l: &[[f64; B]; A], x: &[f64], r: &[[f64; B]; A]) -> Vec<f64> {
        let mut out = vec![0.0; A * A];
        for i in 0..A {
            for j in 0..A {
                out[i * A + j] = (0..B)
                    .flat_map(|k| (0..B).map(move |m| (k, m)))
                    .map(|(k, m)| l[i][k] * x[k * B + m] * r[j][m])
                    .sum();
            }
        }
        out
    }

    /// `U = G g G^T` of a row-major 3x3 kernel `g`: the 4x4 tile the GPU multiplies by.
    pub fn transform_weight(g: &[f64; 9]) -> [f64; 16] {
        let u = sandwich(&G, g, &G);
        std::array::from_fn(|i| u[i])
    }

    /// `act(conv3x3(x, W) * scale + shift)` of `x` `[n, cin, h, w]` with `wt` `[cout, cin, 3, 3]`
    /// (padding 1) by F(2x2, 3x3) tiles: the launcher [`conv_winograd`](super::conv_winograd).
    pub fn conv_winograd(
        x: &[f64],
        [n, cin, h, w]: [usize; 4],
        wt: &[f64],
        cout: usize,
        scale: &[f64],
        shift: &[f64],
        relu: bool,
    ) -> Vec<f64> {
        let u: Vec<[f64; 16]> = wt.chunks(9).map(|g| transform_weight(&std::array::from_fn(|i| g[i]))).collect();
        let at = |b: usize, c: usize, y: isize, xx: isize| {
            let inside = y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w;
            if inside { x[((b * cin + c) * h + y as usize) * w + xx as usize] } else { 0.0 }
        };
        let mut out = vec![0.0; n * cout * h * w];
        for b in 0..n {
            for ty in (0..h).step_by(2) {
                for tx in (0..w).step_by(2) {
                    let v: Vec<Vec<f64>> = (0..cin)
                        .map(|c| {
                            let d: Vec<f64> = (0..16)
                                .map(|i| at(b, c, (ty + i / 4) as isize - 1, (tx + i % 4) as isize - 1))
                                .collect();
                            sandwich(&BT, &d, &BT)
                        })
                        .collect();
                    for oc in 0..cout {
                        let m: Vec<f64> =
                            (0..16).map(|t| (0..cin).map(|c| u[oc * cin + c][t] * v[c][t]).sum()).collect();
                        let y = sandwich(&AT, &m, &AT);
                        for (i, &val) in y.iter().enumerate() {
                            let (oy, ox) = (ty + i / 2, tx + i % 2);
                            if oy < h && ox < w {
                                let r = val * scale[oc] + shift[oc];
                                out[((b * cout + oc) * h + oy) * w + ox] = if relu { r.max(0.0) } else { r };
                            }
                        }
                    }
                }
            }
        }
        out
    }
}
