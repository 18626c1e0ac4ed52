//! The convolutions on the CPU in f64 (conventions in [`crate::ops`]): the forward with the
//! scale/shift/ReLU epilogue and the three gradients of the plain convolution. All four walk the
//! same (output pixel, kernel tap) pairs of `for_each_product`, so each gradient is the exact
//! adjoint of the forward's sum.

/// The kernel taps `(t, o + t − pad)` whose source index lies inside `0..size`.
fn taps(o: usize, pad: usize, k: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).filter_map(move |t| (o + t).checked_sub(pad).filter(|&s| s < size).map(|s| (t, s)))
}

/// Every product `x[n, ci, y + ky − p, x + kx − p] · W[oc, ci, ky, kx]` of a zero-padded `k`x`k`
/// convolution (`p = k / 2`) of `[n, cin, h, w]` into `cout` channels, as
/// `f(x index, weight index, output index)`.
fn for_each_product([n, cin, h, w]: [usize; 4], cout: usize, k: usize, mut f: impl FnMut(usize, usize, usize)) {
    let pad = k / 2;
    for b in 0..n {
        for oc in 0..cout {
            for oy in 0..h {
                for ox in 0..w {
                    let out = ((b * cout + oc) * h + oy) * w + ox;
                    for ci in 0..cin {
                        for (ky, sy) in taps(oy, pad, k, h) {
                            for (kx, sx) in taps(ox, pad, k, w) {
                                f(((b * cin + ci) * h + sy) * w + sx, ((oc * cin + ci) * k + ky) * k + kx, out);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `act(conv(x, W) * scale + shift)` of `x` `[n, cin, h, w]` with `wt` `[cout, cin, k, k]`
/// (padding `k / 2`): the launcher [`conv`](super::conv).
pub fn conv(
    x: &[f64],
    shape: [usize; 4],
    wt: &[f64],
    [cout, k]: [usize; 2],
    scale: &[f64],
    shift: &[f64],
    relu: bool,
) -> Vec<f64> {
    let [n, _, h, w] = shape;
    let mut y = vec![0.0; n * cout * h * w];
    for_each_product(shape, cout, k, |xi, wi, yi| y[yi] += x[xi] * wt[wi]);
    for (i, v) in y.iter_mut().enumerate() {
        let oc = (i / (h * w)) % cout;
        *v = *v * scale[oc] + shift[oc];
        if relu {
            *v = v.max(0.0);
        }
    }
    y
}

/// `dx[n, ci, y, x] = Σ_{oc, ky, kx} dy[n, oc, y + p − ky, x + p − kx] · W[oc, ci, ky, kx]` for
/// `dy` `[n, cout, h, w]`: the result `[n, cin, h, w]`.
pub fn conv_grad_input(dy: &[f64], [n, cout, h, w]: [usize; 4], wt: &[f64], cin: usize, k: usize) -> Vec<f64> {
    let mut dx = vec![0.0; n * cin * h * w];
    for_each_product([n, cin, h, w], cout, k, |xi, wi, yi| dx[xi] += dy[yi] * wt[wi]);
    dx
}

/// `dW[oc, ci, ky, kx] = Σ_{n, y, x} dy[n, oc, y, x] · x[n, ci, y + ky − p, x + kx − p]` (zero
/// padding) for `x` `[n, cin, h, w]`, in the layout `[cout, cin, k, k]`.
pub fn conv_grad_weight(x: &[f64], shape: [usize; 4], dy: &[f64], cout: usize, k: usize) -> Vec<f64> {
    let mut dw = vec![0.0; cout * shape[1] * k * k];
    for_each_product(shape, cout, k, |xi, wi, yi| dw[wi] += dy[yi] * x[xi]);
    dw
}

/// `db[oc] = Σ_{n, y, x} dy[n, oc, y, x]`.
pub fn conv_grad_bias(dy: &[f64], [n, cout, h, w]: [usize; 4]) -> Vec<f64> {
    let hw = h * w;
    (0..cout).map(|oc| (0..n).flat_map(|b| &dy[(b * cout + oc) * hw..(b * cout + oc + 1) * hw]).sum()).collect()
}
