//! Bilinear x2 upsampling (align_corners = true) fused with pad-to-skip-size and the write into a
//! concatenation's channel slot, and its backward (`shaders/upsample.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::ChannelView;
use crate::gpu::{Dispatch, Gpu, Shader, grid_1d};

pub static SHADER: Shader = wgsl!("upsample": "lib/grid.wgsl", "lib/views.wgsl", "upsample.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct UpParams {
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

impl UpParams {
    /// Upsampling the view `small` into the view `big` (forward: input and output; backward: dx
    /// and dy), with PyTorch's pad `d // 2` before on each axis.
    fn of(small: &ChannelView, big: &ChannelView, accumulate: bool) -> UpParams {
        let ([_, c, ih, iw], [in_ctot, in_coff]) = (super::dims(small), super::slot(small));
        let ([_, _, oh, ow], [out_ctot, out_coff]) = (super::dims(big), super::slot(big));
        let pad = |o: u32, i: u32| (o as i64 - 2 * i as i64).div_euclid(2) as i32;
        let (pad_top, pad_left) = (pad(oh, ih), pad(ow, iw));
        UpParams {
            c,
            ih,
            iw,
            in_ctot,
            in_coff,
            oh,
            ow,
            out_ctot,
            out_coff,
            pad_top,
            pad_left,
            accumulate: accumulate as u32,
        }
    }
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
    let p = UpParams::of(&input, &output, false);
    let [gx, gy] = grid_1d(gpu, output.h() * output.w(), 256);
    let planes = (input.n() * input.channels) as u32;
    let bufs = [(1, &input.tensor.buffer), (2, &output.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("upsample2x_pad"), precision, &p, &bufs, [gx, gy, planes])
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
    let p = UpParams::of(&dx, &dy, accumulate);
    let [gx, gy] = grid_1d(gpu, dx.h() * dx.w(), 256);
    let planes = (dx.n() * dx.channels) as u32;
    let bufs = [(3, &dy.tensor.buffer), (4, &dx.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("upsample2x_pad_backward"), precision, &p, &bufs, [gx, gy, planes])
}

/// Bilinear x2 upsampling (align_corners = true) with PyTorch's pad / crop to the skip's size, and
/// its backward, on the CPU in f64 (conventions in [`crate::ops`]).
pub mod reference {
    /// The bilinear (align_corners = true) x2 upsampling of an axis of `isz` values, padded / cropped
    /// to `osz` as PyTorch's `F.pad` with `d // 2` before: for each output index, its
    /// `[(i0, w0), (i1, w1)]` source indices and weights, or None in the padding.
    fn upsample_axis(isz: usize, osz: usize) -> Vec<Option<[(usize, f64); 2]>> {
        let usz = 2 * isz;
        let before = (osz as isize - usz as isize).div_euclid(2);
        let scale = if usz > 1 { (isz - 1) as f64 / (usz - 1) as f64 } else { 0.0 };
        (0..osz)
            .map(|o| {
                let u = o as isize - before;
                if u < 0 || u >= usz as isize {
                    return None;
                }
                let src = scale * u as f64;
                let i0 = (src.floor() as usize).min(isz - 1);
                let l = src - i0 as f64;
                Some([(i0, 1.0 - l), ((i0 + 1).min(isz - 1), l)])
            })
            .collect()
    }

    /// Every term `weight · x[input index]` of the upsampled, padded `[n, c, oh, ow]` output of
    /// `[n, c, h, w]`, as `f(input index, output index, weight)`.
    fn for_each_term([n, c, h, w]: [usize; 4], oh: usize, ow: usize, mut f: impl FnMut(usize, usize, f64)) {
        let (ay, ax) = (upsample_axis(h, oh), upsample_axis(w, ow));
        for p in 0..n * c {
            for (oy, ry) in ay.iter().enumerate() {
                for (ox, rx) in ax.iter().enumerate() {
                    let (Some(ry), Some(rx)) = (ry, rx) else { continue };
                    for (yy, wy) in ry {
                        for (xx, wx) in rx {
                            f((p * h + yy) * w + xx, (p * oh + oy) * ow + ox, wy * wx);
                        }
                    }
                }
            }
        }
    }

    /// Bilinear x2 upsampling of `x` `[n, c, h, w]` with align_corners = true, then PyTorch's
    /// `F.pad(x, [dx//2, dx-dx//2, dy//2, dy-dy//2])` to `oh` x `ow` (negative pads crop).
    pub fn upsample2x_pad(x: &[f64], shape: [usize; 4], oh: usize, ow: usize) -> Vec<f64> {
        let mut y = vec![0.0; shape[0] * shape[1] * oh * ow];
        for_each_term(shape, oh, ow, |xi, yi, wt| y[yi] += wt * x[xi]);
        y
    }

    /// Backward (adjoint) of [`upsample2x_pad`]: `dy` is `[n, c, oh, ow]`, the result
    /// `[n, c, h, w]` (scattered here; the GPU kernel gathers).
    pub fn upsample2x_pad_backward(dy: &[f64], shape: [usize; 4], oh: usize, ow: usize) -> Vec<f64> {
        let mut dx = vec![0.0; shape.iter().product()];
        for_each_term(shape, oh, ow, |xi, yi, wt| dx[xi] += wt * dy[yi]);
        dx
    }
}
