//! Plain-Rust CPU versions of the kernels (f64 accumulation), the ground truth of the kernel
//! tests. Tensors are contiguous NCHW `Vec<f32>`s with their shape passed alongside.

pub mod conv_grad;
pub mod layers_grad;

/// `act(conv(x, w) * scale + shift)` for a `k`x`k` kernel with padding `k / 2`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    wt: &[f32],
    cout: usize,
    k: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    let pad = (k / 2) as isize;
    let mut y = vec![0f32; n * cout * h * w];
    for b in 0..n {
        for oc in 0..cout {
            for oy in 0..h {
                for ox in 0..w {
                    let mut acc = 0f64;
                    for ci in 0..cin {
                        for ky in 0..k {
                            let sy = oy as isize + ky as isize - pad;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let sx = ox as isize + kx as isize - pad;
                                if sx < 0 || sx >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * cin + ci) * h + sy as usize) * w + sx as usize] as f64;
                                acc += xv * wt[((oc * cin + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    let mut v = acc * scale[oc] as f64 + shift[oc] as f64;
                    if relu {
                        v = v.max(0.0);
                    }
                    y[((b * cout + oc) * h + oy) * w + ox] = v as f32;
                }
            }
        }
    }
    y
}

/// 2x2 max-pooling with stride 2, flooring odd sizes.
pub fn maxpool2x2(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0f32; n * c * oh * ow];
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let at = |dy: usize, dx: usize| x[(p * h + 2 * oy + dy) * w + 2 * ox + dx];
                y[(p * oh + oy) * ow + ox] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
            }
        }
    }
    y
}

/// Bilinear x2 upsampling with align_corners = true, then PyTorch's
/// `F.pad(x, [dx//2, dx-dx//2, dy//2, dy-dy//2])` to `oh` x `ow` (negative pads crop).
pub fn upsample2x_pad(x: &[f32], [n, c, h, w]: [usize; 4], oh: usize, ow: usize) -> Vec<f32> {
    let (uh, uw) = (2 * h, 2 * w);
    let top = (oh as isize - uh as isize).div_euclid(2);
    let left = (ow as isize - uw as isize).div_euclid(2);
    let axis = |o: usize, isz: usize, osz: usize| {
        let scale = if osz > 1 { (isz - 1) as f64 / (osz - 1) as f64 } else { 0.0 };
        let src = scale * o as f64;
        let i0 = (src.floor() as usize).min(isz - 1);
        (i0, (i0 + 1).min(isz - 1), src - i0 as f64)
    };
    let mut y = vec![0f32; n * c * oh * ow];
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let uy = oy as isize - top;
                let ux = ox as isize - left;
                if uy < 0 || ux < 0 || uy >= uh as isize || ux >= uw as isize {
                    continue;
                }
                let (y0, y1, ly) = axis(uy as usize, h, uh);
                let (x0, x1, lx) = axis(ux as usize, w, uw);
                let at = |yy: usize, xx: usize| x[(p * h + yy) * w + xx] as f64;
                let top_v = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
                let bot_v = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
                y[(p * oh + oy) * ow + ox] = (top_v * (1.0 - ly) + bot_v * ly) as f32;
            }
        }
    }
    y
}

/// Channel concatenation of two NCHW tensors of the same n, h, w.
pub fn concat(a: &[f32], ca: usize, b: &[f32], cb: usize, n: usize, hw: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(a.len() + b.len());
    for i in 0..n {
        y.extend_from_slice(&a[i * ca * hw..(i + 1) * ca * hw]);
        y.extend_from_slice(&b[i * cb * hw..(i + 1) * cb * hw]);
    }
    y
}
