//! The convolutions on the CPU (f64 accumulation): forward with the scale/shift/ReLU epilogue,
//! and the three gradients of the plain convolution.

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

/// `dx[n, ci, y, x] = Σ_{oc, ky, kx} dy[n, oc, y + p − ky, x + p − kx] · W[oc, ci, ky, kx]`.
pub fn grad_input(dy: &[f32], [n, cout, h, w]: [usize; 4], wt: &[f32], cin: usize, k: usize) -> Vec<f32> {
    let pad = (k / 2) as isize;
    let mut dx = vec![0f32; n * cin * h * w];
    for b in 0..n {
        for ci in 0..cin {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0f64;
                    for oc in 0..cout {
                        for ky in 0..k {
                            let sy = y as isize + pad - ky as isize;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let sx = x as isize + pad - kx as isize;
                                if sx < 0 || sx >= w as isize {
                                    continue;
                                }
                                let g = dy[((b * cout + oc) * h + sy as usize) * w + sx as usize] as f64;
                                acc += g * wt[((oc * cin + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    dx[((b * cin + ci) * h + y) * w + x] = acc as f32;
                }
            }
        }
    }
    dx
}

/// `dW[oc, ci, ky, kx] = Σ_{n, y, x} dy[n, oc, y, x] · x[n, ci, y + ky − p, x + kx − p]` (zero
/// padding), in the layout `[cout, cin, k, k]`.
pub fn grad_weight(x: &[f32], [n, cin, h, w]: [usize; 4], dy: &[f32], cout: usize, k: usize) -> Vec<f32> {
    let pad = (k / 2) as isize;
    let mut dw = vec![0f32; cout * cin * k * k];
    for oc in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    let mut acc = 0f64;
                    for b in 0..n {
                        for y in 0..h {
                            let sy = y as isize + ky as isize - pad;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            for xx in 0..w {
                                let sx = xx as isize + kx as isize - pad;
                                if sx < 0 || sx >= w as isize {
                                    continue;
                                }
                                let g = dy[((b * cout + oc) * h + y) * w + xx] as f64;
                                acc += g * x[((b * cin + ci) * h + sy as usize) * w + sx as usize] as f64;
                            }
                        }
                    }
                    dw[((oc * cin + ci) * k + ky) * k + kx] = acc as f32;
                }
            }
        }
    }
    dw
}

/// `db[oc] = Σ_{n, y, x} dy[n, oc, y, x]`.
pub fn grad_bias(dy: &[f32], [n, cout, h, w]: [usize; 4]) -> Vec<f32> {
    let hw = h * w;
    (0..cout)
        .map(|oc| {
            let s: f64 =
                (0..n).flat_map(|b| &dy[(b * cout + oc) * hw..(b * cout + oc + 1) * hw]).map(|&v| v as f64).sum();
            s as f32
        })
        .collect()
}
