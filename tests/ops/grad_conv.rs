//! Convolution backward passes (`ops::conv::conv_grad_*`, `relayout`) against the CPU references
//! (`ops::reference::conv_grad`) on every adapter and precision, the CPU references against
//! central finite differences of an f64 forward, and everything against gradients PyTorch computed
//! (`tests/fixtures/make_grad_conv_fixtures.py`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use crate::common::{Rng, Tol, assert_close, rel_l2, round_to, targets, tol};
use psi_gpu::gpu::Tensor;
use psi_gpu::gpu::{Gpu, Precision};
use psi_gpu::io::npy;
use psi_gpu::ops::conv::reference::{self as conv_grad, conv2d};
use psi_gpu::ops::conv::{self, ConvWeights};

/// (n, cin, cout, h, w, k): odd sizes, 1-pixel edges, channel counts that are not multiples of
/// 4/8/16, sizes that do not divide the workgroups, batch 2.
const SHAPES: [(usize, usize, usize, usize, usize, usize); 10] = [
    (1, 3, 5, 7, 9, 3),
    (2, 5, 6, 9, 11, 3),
    (1, 13, 19, 33, 35, 3),
    (1, 1, 1, 1, 1, 3),
    (1, 5, 3, 1, 40, 3),
    (1, 6, 7, 37, 1, 3),
    (2, 17, 9, 16, 16, 3),
    (2, 9, 6, 11, 13, 1),
    (1, 16, 1, 20, 21, 1),
    (1, 1, 5, 1, 1, 1),
];

/// Channels [off, off + c) of every image of an NCHW host tensor.
fn slice_channels(v: &[f32], [n, ct, h, w]: [usize; 4], off: usize, c: usize) -> Vec<f32> {
    let hw = h * w;
    (0..n).flat_map(|i| v[(i * ct + off) * hw..(i * ct + off + c) * hw].to_vec()).collect()
}

/// `all` with channels [off, off + c) replaced by `part`.
fn embed(all: &[f32], [n, ct, h, w]: [usize; 4], off: usize, c: usize, part: &[f32]) -> Vec<f32> {
    let hw = h * w;
    let mut out = all.to_vec();
    for i in 0..n {
        out[(i * ct + off) * hw..(i * ct + off + c) * hw].copy_from_slice(&part[i * c * hw..(i + 1) * c * hw]);
    }
    out
}

/// The common tolerance, with its absolute floor scaled by the largest expected magnitude
/// (gradients are sums over many pixels): |x − y| ≤ max(r·|y|, a·max|y|).
fn check(got: &[f32], want: &[f32], p: Precision, what: &str) {
    let t = tol(p);
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs() as f64));
    assert_close(got, want, &Tol { rel: t.rel, abs: t.abs * scale, l2: t.l2 }, what);
}

/// The tests take turns on the GPUs: wgpu's GL backend panics when a thread waits over 6 s for
/// the GL context, and a cold shader compile on llvmpipe GL holds it that long.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn f32_buffer(gpu: &Gpu, data: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, [1, 1, 1, data.len()], Precision::F32, data).unwrap()
}

/// Weights on the GPU either uploaded for inference (with an epilogue the gradients must ignore)
/// or trainable, filled from f32 master weights by `relayout`. Returns the master buffer too.
fn weights(gpu: &Gpu, p: Precision, w: &[f32], shape: [usize; 3], trainable: bool) -> (ConvWeights, Option<Tensor>) {
    let cout = shape[0];
    if trainable {
        let cw = ConvWeights::trainable(gpu, p, shape).unwrap();
        let master = f32_buffer(gpu, w);
        gpu.run(&[&conv::relayout(gpu, &master.buffer, &cw).unwrap()]).unwrap();
        (cw, Some(master))
    } else {
        let (scale, shift) = (vec![1.5; cout], vec![0.25; cout]);
        (ConvWeights::new(gpu, p, w, shape, &scale, &shift, true).unwrap(), None)
    }
}

#[test]
fn grad_input_matches_reference() {
    let _gpu = serial();
    let mut rng = Rng::new(11);
    for (gpu, p) in targets() {
        for (i, &(n, cin, cout, h, w, k)) in SHAPES.iter().enumerate() {
            // dy is channels [1, 1 + cout) of a wider tensor; dx goes into channels [2, 2 + cin).
            let (oct, ict) = (cout + 2, cin + 3);
            let dy_all = round_to(p, &rng.vec(n * oct * h * w, -1.0, 1.0));
            let wt = round_to(p, &rng.vec(cout * cin * k * k, -0.5, 0.5));
            let base = round_to(p, &rng.vec(n * ict * h * w, -1.0, 1.0));
            let trainable = i % 2 == 0;
            let (cw, _master) = weights(gpu, p, &wt, [cout, cin, k], trainable);
            let dy = Tensor::from_f32(gpu, [n, oct, h, w], p, &dy_all).unwrap();
            let dyin = slice_channels(&dy_all, [n, oct, h, w], 1, cout);
            let want = conv_grad::grad_input(&dyin, [n, cout, h, w], &wt, cin, k);
            for accumulate in [false, true] {
                let dx = Tensor::from_f32(gpu, [n, ict, h, w], p, &base).unwrap();
                let d = conv::conv_grad_input(gpu, &cw, dy.channels(1, cout), dx.channels(2, cin), accumulate).unwrap();
                gpu.run(&[&d]).unwrap();
                let got = dx.to_f32(gpu).unwrap();
                let what = format!(
                    "grad_input {k}x{k} {} {p} n{n} {cin}->{cout} {h}x{w} trainable={trainable} acc={accumulate}",
                    gpu.describe()
                );
                let mut expect = want.clone();
                if accumulate {
                    let old = slice_channels(&base, [n, ict, h, w], 2, cin);
                    expect.iter_mut().zip(&old).for_each(|(e, o)| *e += o);
                }
                check(&slice_channels(&got, [n, ict, h, w], 2, cin), &expect, p, &what);
                // Channels outside the view are untouched.
                let outside = embed(&got, [n, ict, h, w], 2, cin, &slice_channels(&base, [n, ict, h, w], 2, cin));
                assert!(outside == base, "{what}: wrote outside the view");
            }
        }
    }
}

#[test]
fn grad_weight_matches_reference() {
    let _gpu = serial();
    let mut rng = Rng::new(12);
    let mut dispatch_counts = BTreeSet::new();
    let mut shapes = SHAPES.to_vec();
    // Enough pixels to split them across many workgroups (partial sums + reduce).
    shapes.push((2, 5, 6, 33, 35, 3));
    shapes.push((2, 3, 2, 30, 31, 1));
    for (gpu, p) in targets() {
        for &(n, cin, cout, h, w, k) in &shapes {
            // x is channels [2, 2 + cin) of a wider tensor, dy channels [1, 1 + cout).
            let (ict, oct) = (cin + 3, cout + 2);
            let x_all = round_to(p, &rng.vec(n * ict * h * w, -1.0, 1.0));
            let dy_all = round_to(p, &rng.vec(n * oct * h * w, -1.0, 1.0));
            let wt = rng.vec(cout * cin * k * k, -0.5, 0.5);
            let old = rng.vec(cout * cin * k * k, -1.0, 1.0);
            let cw = ConvWeights::new(gpu, p, &wt, [cout, cin, k], &vec![1.0; cout], &vec![0.0; cout], false).unwrap();
            let x = Tensor::from_f32(gpu, [n, ict, h, w], p, &x_all).unwrap();
            let dy = Tensor::from_f32(gpu, [n, oct, h, w], p, &dy_all).unwrap();
            let xin = slice_channels(&x_all, [n, ict, h, w], 2, cin);
            let dyin = slice_channels(&dy_all, [n, oct, h, w], 1, cout);
            let want = conv_grad::grad_weight(&xin, [n, cin, h, w], &dyin, cout, k);
            let mut first = None;
            for accumulate in [false, true, false] {
                let dw = f32_buffer(gpu, &old);
                let d =
                    conv::conv_grad_weight(gpu, &cw, x.channels(2, cin), dy.channels(1, cout), &dw.buffer, accumulate)
                        .unwrap();
                dispatch_counts.insert(d.len());
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                let got = dw.to_f32(gpu).unwrap();
                let what = format!(
                    "grad_weight {k}x{k} {} {p} n{n} {cin}->{cout} {h}x{w} acc={accumulate} ({} dispatches)",
                    gpu.describe(),
                    d.len()
                );
                let expect: Vec<f32> =
                    if accumulate { want.iter().zip(&old).map(|(a, b)| a + b).collect() } else { want.clone() };
                check(&got, &expect, p, &what);
                // Deterministic: the same inputs give the same bits.
                if !accumulate {
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert!(f == &got, "{what}: not deterministic"),
                    }
                }
            }
        }
    }
    assert_eq!(dispatch_counts.into_iter().collect::<Vec<_>>(), vec![1, 2], "both grad_weight paths covered");
}

#[test]
fn grad_bias_matches_reference() {
    let _gpu = serial();
    let mut rng = Rng::new(13);
    for (gpu, p) in targets() {
        for &(n, c, h, w) in &[(2, 6, 9, 11), (1, 1, 1, 1), (2, 3, 17, 19), (1, 5, 40, 33)] {
            let ct = c + 2;
            let dy_all = round_to(p, &rng.vec(n * ct * h * w, -1.0, 1.0));
            let old = rng.vec(c, -1.0, 1.0);
            let dy = Tensor::from_f32(gpu, [n, ct, h, w], p, &dy_all).unwrap();
            let want = conv_grad::grad_bias(&slice_channels(&dy_all, [n, ct, h, w], 1, c), [n, c, h, w]);
            for accumulate in [false, true] {
                let db = f32_buffer(gpu, &old);
                gpu.run(&[&conv::conv_grad_bias(gpu, dy.channels(1, c), &db.buffer, accumulate).unwrap()]).unwrap();
                let expect: Vec<f32> =
                    if accumulate { want.iter().zip(&old).map(|(a, b)| a + b).collect() } else { want.clone() };
                let what = format!("grad_bias {} {p} {n}x{c}x{h}x{w} acc={accumulate}", gpu.describe());
                check(&db.to_f32(gpu).unwrap(), &expect, p, &what);
            }
        }
    }
}

/// Trainable weights follow their f32 master (and bias) on the GPU, also after an update.
#[test]
fn relayout_feeds_forward_and_follows_updates() {
    let _gpu = serial();
    let mut rng = Rng::new(14);
    for (gpu, p) in targets() {
        for &(n, cin, cout, h, w, k) in &[(2, 5, 6, 9, 11, 3), (1, 7, 3, 6, 5, 1), (1, 17, 9, 5, 7, 3)] {
            let x_all = round_to(p, &rng.vec(n * cin * h * w, -1.0, 1.0));
            let x = Tensor::from_f32(gpu, [n, cin, h, w], p, &x_all).unwrap();
            let y = Tensor::new(gpu, [n, cout, h, w], p, "y").unwrap();
            let cw = ConvWeights::trainable(gpu, p, [cout, cin, k]).unwrap();
            let master = f32_buffer(gpu, &vec![0.0; cout * cin * k * k]);
            let bias = f32_buffer(gpu, &vec![0.0; cout]);
            let dispatches = [
                conv::relayout(gpu, &master.buffer, &cw).unwrap(),
                conv::relayout_bias(gpu, &bias.buffer, &cw).unwrap(),
                conv::conv(gpu, &cw, x.view(), y.view()).unwrap(),
            ];
            for step in 0..2 {
                // An optimizer step: new master weights and bias, written on the "GPU side".
                let wt = round_to(p, &rng.vec(cout * cin * k * k, -0.5, 0.5));
                let b = rng.vec(cout, -0.2, 0.2);
                master.upload(gpu, &wt);
                bias.upload(gpu, &b);
                gpu.run(&dispatches.iter().collect::<Vec<_>>()).unwrap();
                let want = conv2d(&x_all, [n, cin, h, w], &wt, cout, k, &vec![1.0; cout], &b, false);
                let what = format!("relayout {k}x{k} {} {p} {cin}->{cout} step {step}", gpu.describe());
                check(&y.to_f32(gpu).unwrap(), &want, p, &what);
            }
        }
        // Uploaded (inference) weights are read-only.
        let cw = ConvWeights::new(gpu, p, &[0.5; 4], [2, 2, 1], &[1.0; 2], &[0.0; 2], false).unwrap();
        assert!(conv::relayout(gpu, &f32_buffer(gpu, &[0.0; 4]).buffer, &cw).is_err());
        assert!(conv::relayout_bias(gpu, &f32_buffer(gpu, &[0.0; 2]).buffer, &cw).is_err());
    }
}

#[test]
fn grad_rejects_bad_arguments() {
    let _gpu = serial();
    let (gpu, p) = targets()[0];
    let cw = ConvWeights::trainable(gpu, p, [4, 3, 3]).unwrap();
    let x = Tensor::new(gpu, [1, 3, 5, 5], p, "x").unwrap();
    let dy = Tensor::new(gpu, [1, 4, 5, 5], p, "dy").unwrap();
    let wrong = Tensor::new(gpu, [1, 4, 6, 5], p, "wrong").unwrap();
    let small = f32_buffer(gpu, &[0.0; 10]);
    let dw = f32_buffer(gpu, &[0.0; 108]);
    // Channel counts swapped, sizes differing, gradient buffers too small.
    assert!(conv::conv_grad_input(gpu, &cw, x.view(), dy.view(), false).is_err());
    assert!(conv::conv_grad_input(gpu, &cw, dy.view(), wrong.channels(0, 3), false).is_err());
    assert!(conv::conv_grad_weight(gpu, &cw, x.view(), dy.view(), &small.buffer, false).is_err());
    assert!(conv::conv_grad_weight(gpu, &cw, dy.view(), x.view(), &dw.buffer, false).is_err());
    assert!(conv::conv_grad_bias(gpu, dy.view(), &f32_buffer(gpu, &[0.0; 3]).buffer, false).is_err());
    assert!(conv::relayout(gpu, &small.buffer, &cw).is_err());
    assert!(ConvWeights::trainable(gpu, p, [4, 3, 5]).is_err());
}

/// `Σ y·g` for `y = conv(x, W) + b` computed in f64 (an independent forward).
#[allow(clippy::too_many_arguments)]
fn loss_f64(x: &[f64], [n, cin, h, w]: [usize; 4], wt: &[f64], b: &[f64], cout: usize, k: usize, g: &[f64]) -> f64 {
    let pad = (k / 2) as isize;
    let mut loss = 0.0;
    for i in 0..n {
        for oc in 0..cout {
            for oy in 0..h {
                for ox in 0..w {
                    let mut y = b[oc];
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (sy, sx) = (oy as isize + ky as isize - pad, ox as isize + kx as isize - pad);
                                if sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize {
                                    y += x[((i * cin + ci) * h + sy as usize) * w + sx as usize]
                                        * wt[((oc * cin + ci) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                    loss += y * g[((i * cout + oc) * h + oy) * w + ox];
                }
            }
        }
    }
    loss
}

#[test]
fn reference_matches_finite_differences() {
    let mut rng = Rng::new(15);
    for &(n, cin, cout, h, w, k) in &[(2, 3, 4, 5, 6, 3), (1, 2, 3, 1, 4, 3), (2, 4, 3, 3, 5, 1)] {
        let x = rng.vec(n * cin * h * w, -1.0, 1.0);
        let wt = rng.vec(cout * cin * k * k, -0.5, 0.5);
        let b = rng.vec(cout, -0.2, 0.2);
        let g = rng.vec(n * cout * h * w, -1.0, 1.0);
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let (xd, wd, bd, gd) = (f64s(&x), f64s(&wt), f64s(&b), f64s(&g));
        // The f64 forward agrees with the library's CPU forward.
        let y = conv2d(&x, [n, cin, h, w], &wt, cout, k, &vec![1.0; cout], &b, false);
        let ly: f64 = y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
        let l0 = loss_f64(&xd, [n, cin, h, w], &wd, &bd, cout, k, &gd);
        assert!((ly - l0).abs() <= 1e-5 * l0.abs().max(1.0), "forward: {ly} vs {l0}");

        let dx = conv_grad::grad_input(&g, [n, cout, h, w], &wt, cin, k);
        let dw = conv_grad::grad_weight(&x, [n, cin, h, w], &g, cout, k);
        let db = conv_grad::grad_bias(&g, [n, cout, h, w]);
        let eps = 1e-3;
        let close = |fd: f64, an: f32, what: &str| {
            assert!(
                (fd - an as f64).abs() <= 1e-6 * fd.abs().max(1.0),
                "{what}: finite difference {fd}, analytic {an}"
            );
        };
        for _ in 0..6 {
            let i = rng.int(0, xd.len() - 1);
            let (mut xp, mut xm) = (xd.clone(), xd.clone());
            xp[i] += eps;
            xm[i] -= eps;
            let fd = (loss_f64(&xp, [n, cin, h, w], &wd, &bd, cout, k, &gd)
                - loss_f64(&xm, [n, cin, h, w], &wd, &bd, cout, k, &gd))
                / (2.0 * eps);
            close(fd, dx[i], &format!("dx[{i}] {k}x{k}"));

            let j = rng.int(0, wd.len() - 1);
            let (mut wp, mut wm) = (wd.clone(), wd.clone());
            wp[j] += eps;
            wm[j] -= eps;
            let fd = (loss_f64(&xd, [n, cin, h, w], &wp, &bd, cout, k, &gd)
                - loss_f64(&xd, [n, cin, h, w], &wm, &bd, cout, k, &gd))
                / (2.0 * eps);
            close(fd, dw[j], &format!("dW[{j}] {k}x{k}"));

            let o = rng.int(0, cout - 1);
            let (mut bp, mut bm) = (bd.clone(), bd.clone());
            bp[o] += eps;
            bm[o] -= eps;
            let fd = (loss_f64(&xd, [n, cin, h, w], &wd, &bp, cout, k, &gd)
                - loss_f64(&xd, [n, cin, h, w], &wd, &bm, cout, k, &gd))
                / (2.0 * eps);
            close(fd, db[o], &format!("db[{o}] {k}x{k}"));
        }
    }
}

fn fixture(case: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", &format!("grad_conv_{case}_{name}.npy")].iter().collect();
    npy::read_f32(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn matches_pytorch_autograd() {
    let _gpu = serial();
    for case in ["3x3", "1x1"] {
        let (xs, x) = fixture(case, "x");
        let (ws, wt) = fixture(case, "w");
        let (_, b) = fixture(case, "b");
        let (_, g) = fixture(case, "g");
        let (_, want_dx) = fixture(case, "dx");
        let (_, want_dw) = fixture(case, "dw");
        let (_, want_db) = fixture(case, "db");
        let [n, cin, h, w] = [xs[0], xs[1], xs[2], xs[3]];
        let (cout, k) = (ws[0], ws[2]);
        assert_eq!(b.len(), cout);

        // The CPU references agree with PyTorch.
        let what = format!("CPU reference vs PyTorch {case}");
        check(&conv_grad::grad_input(&g, [n, cout, h, w], &wt, cin, k), &want_dx, Precision::F32, &what);
        check(&conv_grad::grad_weight(&x, [n, cin, h, w], &g, cout, k), &want_dw, Precision::F32, &what);
        check(&conv_grad::grad_bias(&g, [n, cout, h, w]), &want_db, Precision::F32, &what);

        // The GPU kernels, on the training path (f32 master weights relaid on the GPU).
        for (gpu, p) in targets() {
            let (cw, _master) = weights(gpu, p, &wt, [cout, cin, k], true);
            let xt = Tensor::from_f32(gpu, [n, cin, h, w], p, &x).unwrap();
            let gt = Tensor::from_f32(gpu, [n, cout, h, w], p, &g).unwrap();
            let dx = Tensor::new(gpu, [n, cin, h, w], p, "dx").unwrap();
            let dw = f32_buffer(gpu, &vec![0.0; want_dw.len()]);
            let db = f32_buffer(gpu, &vec![0.0; cout]);
            let mut d = vec![
                conv::conv_grad_input(gpu, &cw, gt.view(), dx.view(), false).unwrap(),
                conv::conv_grad_bias(gpu, gt.view(), &db.buffer, false).unwrap(),
            ];
            d.extend(conv::conv_grad_weight(gpu, &cw, xt.view(), gt.view(), &dw.buffer, false).unwrap());
            gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
            let what = format!("GPU vs PyTorch {case} {} {p}", gpu.describe());
            for (name, got, want) in [
                ("dx", dx.to_f32(gpu).unwrap(), &want_dx),
                ("dW", dw.to_f32(gpu).unwrap(), &want_dw),
                ("db", db.to_f32(gpu).unwrap(), &want_db),
            ] {
                // f16 storage rounds x, W and g (PyTorch used the f32 values): relative L2 only.
                match p {
                    Precision::F32 => check(&got, want, p, &format!("{what} {name}")),
                    Precision::F16 => {
                        let e = rel_l2(&got, want);
                        assert!(e < tol(p).l2, "{what} {name}: relative L2 {e:e}");
                    }
                }
            }
        }
    }
}
