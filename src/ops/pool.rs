//! 2x2 max-pooling, flooring odd sizes, and its backward (`shaders/pool.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::ChannelView;
use crate::gpu::{Dispatch, Gpu, Shader, grid_1d};

pub static SHADER: Shader = wgsl!("pool": "lib/grid.wgsl", "lib/views.wgsl", "pool.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct PoolParams {
    c: u32,
    h: u32,
    w: u32,
    in_ctot: u32,
    in_coff: u32,
    oh: u32,
    ow: u32,
    /// Backward only: add into dx.
    accumulate: u32,
    dy_ctot: u32,
    dy_coff: u32,
    dx_ctot: u32,
    dx_coff: u32,
}

impl PoolParams {
    /// The forward's fields: pooling the view `x` into `[h / 2, w / 2]`.
    fn of(x: &ChannelView) -> PoolParams {
        let ([_, c, h, w], [in_ctot, in_coff]) = (super::dims(x), super::slot(x));
        PoolParams { c, h, w, in_ctot, in_coff, oh: h / 2, ow: w / 2, ..Default::default() }
    }
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
    let p = PoolParams::of(&input);
    let [gx, gy] = grid_1d(gpu, oh * ow, 256);
    let planes = (input.n() * input.channels) as u32;
    let bufs = [(1, &input.tensor.buffer), (2, &output.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("maxpool2x2"), precision, &p, &bufs, [gx, gy, planes])
}

/// Backward of `maxpool2x2(x)`: `dx[n, c]` gets `dy` at each window's argmax (recomputed from `x`,
/// first maximum in row-major order as PyTorch's CPU kernel) and 0 elsewhere, including the last
/// row / column of odd sizes; with `accumulate` it is added to what `dx` holds. `dy` is
/// `[n, c, h / 2, w / 2]`, `dx` is shaped like `x`; all three are channel views.
pub fn maxpool2x2_backward(
    gpu: &Gpu,
    x: ChannelView,
    dy: ChannelView,
    dx: ChannelView,
    accumulate: bool,
) -> Result<Dispatch> {
    let precision = super::same_precision(&x, &dy)?;
    super::same_precision(&x, &dx)?;
    let (n, c, h, w) = (x.n(), x.channels, x.h(), x.w());
    let (oh, ow) = (h / 2, w / 2);
    if (dy.n(), dy.channels, dy.h(), dy.w()) != (n, c, oh, ow) || (dx.n(), dx.channels, dx.h(), dx.w()) != (n, c, h, w)
    {
        return Err(Error::Shape(format!(
            "max-pool backward of [{n}, {c}, {h}, {w}] needs dy of [{n}, {c}, {oh}, {ow}] and dx of \
             [{n}, {c}, {h}, {w}], got dy [{}, {}, {}, {}] and dx [{}, {}, {}, {}]",
            dy.n(),
            dy.channels,
            dy.h(),
            dy.w(),
            dx.n(),
            dx.channels,
            dx.h(),
            dx.w()
        )));
    }
    if std::ptr::eq(dx.tensor, x.tensor) || std::ptr::eq(dx.tensor, dy.tensor) {
        return Err(Error::Shape("max-pool backward: dx must not share a tensor with x or dy".into()));
    }
    let ([dy_ctot, dy_coff], [dx_ctot, dx_coff]) = (super::slot(&dy), super::slot(&dx));
    let p = PoolParams { accumulate: accumulate as u32, dy_ctot, dy_coff, dx_ctot, dx_coff, ..PoolParams::of(&x) };
    let [gx, gy] = grid_1d(gpu, h.div_ceil(2) * w.div_ceil(2), 256);
    let bufs = [(1, &x.tensor.buffer), (3, &dy.tensor.buffer), (4, &dx.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("maxpool2x2_backward"), precision, &p, &bufs, [gx, gy, (n * c) as u32])
}

/// 2x2 max-pooling (flooring odd sizes) and its backward on the CPU in f64 (conventions in
/// [`crate::ops`]).
pub mod reference {
    /// Each output index of 2x2 pooling of `[n, c, h, w]` (`[n, c, h / 2, w / 2]`) with the index
    /// in `x` of its window's maximum: the first maximum in row-major window order, a NaN
    /// replacing the running maximum (PyTorch's CPU max_pool2d).
    fn argmax_windows(x: &[f64], [n, c, h, w]: [usize; 4]) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (oh, ow) = (h / 2, w / 2);
        (0..n * c * oh * ow).map(move |o| {
            let (p, oy, ox) = (o / (oh * ow), (o / ow) % oh, o % ow);
            let b = (p * h + 2 * oy) * w + 2 * ox;
            let best =
                [b + 1, b + w, b + w + 1].into_iter().fold(b, |m, k| if x[k] > x[m] || x[k].is_nan() { k } else { m });
            (o, best)
        })
    }

    /// 2x2 max-pooling with stride 2 of `x` `[n, c, h, w]`, flooring odd sizes.
    pub fn maxpool2x2(x: &[f64], shape: [usize; 4]) -> Vec<f64> {
        argmax_windows(x, shape).map(|(_, k)| x[k]).collect()
    }

    /// Backward of [`maxpool2x2`]: each window's `dy` goes to its argmax, 0 elsewhere (the last
    /// row / column of odd sizes included).
    pub fn maxpool2x2_backward(x: &[f64], dy: &[f64], shape: [usize; 4]) -> Vec<f64> {
        let mut dx = vec![0.0; x.len()];
        for (o, k) in argmax_windows(x, shape) {
            dx[k] += dy[o];
        }
        dx
    }
}
