//! f64 CPU references of the training-side layer kernels: BatchNorm2d in training mode (forward,
//! running statistics, backward fused with ReLU), ReLU backward, 2x2 max-pool backward and the
//! backward of bilinear x2 upsampling (align_corners = true) with pad/crop. Everything is f64 in
//! and out (the tests convert), so the same functions serve finite-difference checks. Tensors
//! are contiguous NCHW with their shape passed alongside.

/// Output and batch statistics of a training-mode BatchNorm2d.
pub struct BnForward {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    /// Biased (divide by N·H·W) batch variance.
    pub var: Vec<f64>,
}

/// Gradients of a training-mode BatchNorm2d (+ ReLU).
pub struct BnGrads {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// Per-channel mean and biased variance over N·H·W (two passes).
fn channel_stats(x: &[f64], [n, c, h, w]: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let hw = h * w;
    let count = (n * hw) as f64;
    let values = |ch: usize| (0..n).flat_map(move |b| ((b * c + ch) * hw..(b * c + ch + 1) * hw).map(|i| x[i]));
    let mean: Vec<f64> = (0..c).map(|ch| values(ch).sum::<f64>() / count).collect();
    let var = (0..c).map(|ch| values(ch).map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / count).collect();
    (mean, var)
}

/// `y = relu?(γ·(x − mean)/sqrt(var + eps) + β)` with the batch's own statistics.
pub fn batchnorm_train(x: &[f64], shape: [usize; 4], gamma: &[f64], beta: &[f64], eps: f64, relu: bool) -> BnForward {
    let [_, c, h, w] = shape;
    let (mean, var) = channel_stats(x, shape);
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / (h * w)) % c;
            let r = gamma[ch] * (v - mean[ch]) / (var[ch] + eps).sqrt() + beta[ch];
            if relu { r.max(0.0) } else { r }
        })
        .collect();
    BnForward { y, mean, var }
}

/// PyTorch's running-statistics update: `(1 − m)·running + m·batch`, with the unbiased variance
/// `var·count/(count − 1)` (`count` = N·H·W). Returns (running_mean, running_var).
pub fn bn_update_running(
    running_mean: &[f64],
    running_var: &[f64],
    mean: &[f64],
    var: &[f64],
    count: usize,
    momentum: f64,
) -> (Vec<f64>, Vec<f64>) {
    let unbias = count as f64 / (count as f64 - 1.0);
    let rm = running_mean.iter().zip(mean).map(|(r, m)| (1.0 - momentum) * r + momentum * m).collect();
    let rv = running_var.iter().zip(var).map(|(r, v)| (1.0 - momentum) * r + momentum * v * unbias).collect();
    (rm, rv)
}

/// Backward of `batchnorm_train` (with the ReLU mask `y > 0` when `relu`), given `dy`.
pub fn batchnorm_train_backward(
    dy: &[f64],
    x: &[f64],
    shape: [usize; 4],
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    relu: bool,
) -> BnGrads {
    let [n, c, h, w] = shape;
    let hw = h * w;
    let count = (n * hw) as f64;
    let fwd = batchnorm_train(x, shape, gamma, beta, eps, relu);
    let inv: Vec<f64> = fwd.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let ch = |i: usize| (i / hw) % c;
    let xhat = |i: usize| (x[i] - fwd.mean[ch(i)]) * inv[ch(i)];
    let g: Vec<f64> = dy.iter().enumerate().map(|(i, &d)| if relu && fwd.y[i] <= 0.0 { 0.0 } else { d }).collect();
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for i in 0..x.len() {
        dgamma[ch(i)] += g[i] * xhat(i);
        dbeta[ch(i)] += g[i];
    }
    let dx = (0..x.len())
        .map(|i| {
            let k = ch(i);
            gamma[k] * inv[k] * (g[i] - dbeta[k] / count - xhat(i) * dgamma[k] / count)
        })
        .collect();
    BnGrads { dx, dgamma, dbeta }
}

/// `dx = dy·[y > 0]`.
pub fn relu_backward(dy: &[f64], y: &[f64]) -> Vec<f64> {
    dy.iter().zip(y).map(|(&d, &v)| if v > 0.0 { d } else { 0.0 }).collect()
}

/// 2x2 max-pooling with stride 2, flooring odd sizes.
pub fn maxpool2x2_forward(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0.0; n * c * oh * ow];
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (k, _) = window_argmax(x, p, h, w, oy, ox);
                y[(p * oh + oy) * ow + ox] = x[k];
            }
        }
    }
    y
}

/// Index into `x` of the maximum of window (oy, ox) of plane `p`: the first maximum in row-major
/// window order, a NaN replacing the running maximum (PyTorch's CPU max_pool2d).
fn window_argmax(x: &[f64], p: usize, h: usize, w: usize, oy: usize, ox: usize) -> (usize, f64) {
    let b = (p * h + 2 * oy) * w + 2 * ox;
    let mut best = (b, x[b]);
    for k in [b + 1, b + w, b + w + 1] {
        if x[k] > best.1 || x[k].is_nan() {
            best = (k, x[k]);
        }
    }
    best
}

/// Backward of `maxpool2x2_forward`: each window's `dy` goes to its argmax, 0 elsewhere (the last
/// row / column of odd sizes included).
pub fn maxpool2x2_backward(x: &[f64], dy: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0.0; x.len()];
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (k, _) = window_argmax(x, p, h, w, oy, ox);
                dx[k] += dy[(p * oh + oy) * ow + ox];
            }
        }
    }
    dx
}

/// The bilinear (align_corners = true) x2 upsampling of an axis of `isz` values, padded / cropped
/// to `osz` as PyTorch's `F.pad` with `d // 2` before: for each output index, its
/// `(i0, w0, i1, w1)` source indices and weights, or None in the padding.
fn upsample_axis(isz: usize, osz: usize) -> Vec<Option<(usize, f64, usize, f64)>> {
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
            Some((i0, 1.0 - l, (i0 + 1).min(isz - 1), l))
        })
        .collect()
}

/// Bilinear x2 upsampling (align_corners = true) padded / cropped to `oh` x `ow`.
pub fn upsample2x_pad_forward(x: &[f64], [n, c, h, w]: [usize; 4], oh: usize, ow: usize) -> Vec<f64> {
    let (ay, ax) = (upsample_axis(h, oh), upsample_axis(w, ow));
    let mut y = vec![0.0; n * c * oh * ow];
    for p in 0..n * c {
        for (oy, ry) in ay.iter().enumerate() {
            for (ox, rx) in ax.iter().enumerate() {
                if let (Some((y0, wy0, y1, wy1)), Some((x0, wx0, x1, wx1))) = (ry, rx) {
                    let at = |yy: usize, xx: usize| x[(p * h + yy) * w + xx];
                    let top = at(*y0, *x0) * wx0 + at(*y0, *x1) * wx1;
                    let bot = at(*y1, *x0) * wx0 + at(*y1, *x1) * wx1;
                    y[(p * oh + oy) * ow + ox] = top * wy0 + bot * wy1;
                }
            }
        }
    }
    y
}

/// Backward (adjoint) of `upsample2x_pad_forward`: `dy` is `[n, c, oh, ow]`, the result
/// `[n, c, h, w]` (scattered here; the GPU kernel gathers).
pub fn upsample2x_pad_backward(dy: &[f64], [n, c, h, w]: [usize; 4], oh: usize, ow: usize) -> Vec<f64> {
    let (ay, ax) = (upsample_axis(h, oh), upsample_axis(w, ow));
    let mut dx = vec![0.0; n * c * h * w];
    for p in 0..n * c {
        for (oy, ry) in ay.iter().enumerate() {
            for (ox, rx) in ax.iter().enumerate() {
                if let (Some((y0, wy0, y1, wy1)), Some((x0, wx0, x1, wx1))) = (ry, rx) {
                    let g = dy[(p * oh + oy) * ow + ox];
                    for (yy, wy) in [(*y0, wy0), (*y1, wy1)] {
                        for (xx, wx) in [(*x0, wx0), (*x1, wx1)] {
                            dx[(p * h + yy) * w + xx] += g * wy * wx;
                        }
                    }
                }
            }
        }
    }
    dx
}
