//! Training-side layer kernels: BatchNorm2d in training mode (statistics, forward + ReLU, running
//! statistics, backward) and frozen (eval) mode, ReLU backward, max-pool backward and bilinear-upsample + pad backward.
//! GPU against the f64 CPU references (`reference::layers_grad`) on random shapes through channel
//! views with accumulation, on every adapter and precision; the references against central finite
//! differences; and everything against PyTorch's gradients (tests/fixtures/grad_layers_*, made by
//! make_grad_layers_fixtures.py).

use std::collections::HashMap;

use crate::common::{Rng, Tol, assert_close, round_to, targets, tol};
use psi_gpu::gpu::Tensor;
use psi_gpu::gpu::{Dispatch, Gpu, Precision};
use psi_gpu::ops::batchnorm::reference as bn_ref;
use psi_gpu::ops::batchnorm::{self, BnLayer, BnParamGrads, ReluMask};
use psi_gpu::ops::pool::reference as pool_ref;
use psi_gpu::ops::upsample::reference as up_ref;
use psi_gpu::ops::{pool, upsample};

fn run(gpu: &Gpu, ds: &[Dispatch]) {
    gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// An f32 tensor holding a per-channel vector.
fn vector(gpu: &Gpu, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, [1, 1, 1, v.len()], Precision::F32, v).unwrap()
}

/// Channels [off, off + c) of every image of an NCHW host tensor.
fn slice_channels(v: &[f32], [n, ct, h, w]: [usize; 4], off: usize, c: usize) -> Vec<f32> {
    let hw = h * w;
    (0..n).flat_map(|i| v[(i * ct + off) * hw..(i * ct + off + c) * hw].to_vec()).collect()
}

/// Element-wise sum.
fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Statistics, parameter gradients and running statistics are f32 in every precision.
fn tol_f32() -> Tol {
    tol(Precision::F32)
}

/// BatchNorm's dx is `γ/σ·(dy' − mean(dy') − x̂·mean(dy'·x̂))`: its rounding error scales with
/// `γ/σ·|dy|`, not with `|dx|`, which cancellation can make arbitrarily small (two values per
/// channel, close to each other). Compare element-wise with an absolute bound scaled by the
/// channel's `γ/σ·max|dy|` and in L2 relative to `‖γ/σ·dy‖`.
fn assert_dx_close(
    got: &[f32],
    want: &[f32],
    t: &Tol,
    scale: &[f64],
    dy: &[f32],
    [_, c, h, w]: [usize; 4],
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let dmax = dy.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (g, wv)) in got.iter().zip(want).enumerate() {
        let s = scale[(i / (h * w)) % c];
        let (g, wv) = (*g as f64, *wv as f64);
        let bound = (t.rel * wv.abs()).max(t.abs * s * dmax.max(1.0));
        assert!((g - wv).abs() <= bound, "{what}: element {i}: got {g}, want {wv} (bound {bound:e})");
        num += (g - wv).powi(2);
        den += (s * dy[i] as f64).powi(2);
    }
    let e = (num / den.max(1e-30)).sqrt();
    assert!(e < t.l2, "{what}: relative L2 {e:e} over {:e}", t.l2);
}

/// Channels of `got` outside [off, off + c) still hold `fill`.
fn assert_untouched(got: &[f32], shape: [usize; 4], off: usize, c: usize, fill: &[f32], what: &str) {
    let ct = shape[1];
    for ch in (0..off).chain(off + c..ct) {
        assert_eq!(
            slice_channels(got, shape, ch, 1),
            slice_channels(fill, shape, ch, 1),
            "{what}: wrote outside its view (channel {ch})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm

#[test]
fn batchnorm_matches_reference() {
    let mut rng = Rng::new(11);
    // (n, c, h, w): odd sizes, 1-pixel images in a batch of 2, several reduction chunks.
    let shapes = [(2, 3, 7, 9), (2, 5, 1, 1), (1, 6, 33, 35), (2, 3, 50, 45), (1, 2, 70, 130)];
    for (gpu, p) in targets() {
        for (si, &(n, c, h, w)) in shapes.iter().enumerate() {
            for relu in [false, true] {
                let what = format!("batchnorm {} {p} {n}x{c}x{h}x{w} relu={relu}", gpu.describe());
                let count = n * h * w;
                // x: channels [1, 1 + c) of a (c + 3)-channel tensor, with per-channel offsets.
                let xs = [n, c + 3, h, w];
                let x_all: Vec<f32> = (0..xs.iter().product())
                    .map(|i| rng.uniform(-2.0, 2.0) + 0.7 * ((i / (h * w)) % (c + 3)) as f32 - 1.0)
                    .collect();
                let x_all = round_to(p, &x_all);
                let x_host = slice_channels(&x_all, xs, 1, c);
                let gamma = rng.vec(c, 0.5, 1.5);
                let beta = rng.vec(c, -0.5, 0.5);
                let (rm0, rv0) = (rng.vec(c, -0.3, 0.3), rng.vec(c, 0.5, 1.5));
                // y: channels [2, 2 + c) of a (c + 2)-channel "concatenation".
                let ys = [n, c + 2, h, w];
                let y_fill = vec![7.0; ys.iter().product()];
                // dy: channels [1, 1 + c) of c + 1; dx: channels [0, c) of c + 2, prefilled.
                let ds = [n, c + 1, h, w];
                let dy_all = round_to(p, &rng.vec(ds.iter().product(), -1.0, 1.0));
                let dy_host = slice_channels(&dy_all, ds, 1, c);
                let gs = [n, c + 2, h, w];
                let dx_fill = round_to(p, &rng.vec(gs.iter().product(), -1.0, 1.0));
                let (dg0, db0) = (rng.vec(c, -1.0, 1.0), rng.vec(c, -1.0, 1.0));
                let acc_dx = (si + relu as usize) % 2 == 1;
                let acc_params = si % 2 == 0;

                let want_f =
                    bn_ref::batchnorm_train(&f64s(&x_host), [n, c, h, w], &f64s(&gamma), &f64s(&beta), 1e-5, relu);
                let (want_rm, want_rv) =
                    bn_ref::bn_update_running(&f64s(&rm0), &f64s(&rv0), &want_f.mean, &want_f.var, count, 0.1);
                let want_b = bn_ref::batchnorm_train_backward(
                    &f64s(&dy_host),
                    &f64s(&x_host),
                    [n, c, h, w],
                    &f64s(&gamma),
                    &f64s(&beta),
                    1e-5,
                    relu,
                );

                let x = Tensor::from_f32(gpu, xs, p, &x_all).unwrap();
                let y = Tensor::from_f32(gpu, ys, p, &y_fill).unwrap();
                let (gt, bt) = (vector(gpu, &gamma), vector(gpu, &beta));
                let stats = Tensor::new(gpu, [1, 1, 2, c], Precision::F32, "stats").unwrap();
                let (rm, rv) = (vector(gpu, &rm0), vector(gpu, &rv0));
                let bn = BnLayer {
                    gamma: (&gt).into(),
                    beta: (&bt).into(),
                    stats: &stats,
                    eps: batchnorm::EPS,
                    frozen: false,
                };
                let mut ds_fwd = batchnorm::bn_stats(gpu, x.channels(1, c), &stats).unwrap();
                ds_fwd.push(batchnorm::bn_forward_relu(gpu, x.channels(1, c), &bn, relu, y.channels(2, c)).unwrap());
                ds_fwd.push(batchnorm::bn_update_running(gpu, &stats, count, batchnorm::MOMENTUM, &rm, &rv).unwrap());
                run(gpu, &ds_fwd);

                let st = stats.to_f32(gpu).unwrap();
                assert_close(&st[..c], &f32s(&want_f.mean), &tol_f32(), &format!("{what}: mean"));
                assert_close(&st[c..], &f32s(&want_f.var), &tol_f32(), &format!("{what}: var"));
                let y_got = y.to_f32(gpu).unwrap();
                assert_close(&slice_channels(&y_got, ys, 2, c), &f32s(&want_f.y), &tol(p), &format!("{what}: y"));
                assert_untouched(&y_got, ys, 2, c, &y_fill, &what);
                assert_close(&rm.to_f32(gpu).unwrap(), &f32s(&want_rm), &tol_f32(), &format!("{what}: running mean"));
                assert_close(&rv.to_f32(gpu).unwrap(), &f32s(&want_rv), &tol_f32(), &format!("{what}: running var"));

                let masks: Vec<ReluMask> = if relu {
                    vec![ReluMask::Output(y.channels(2, c)), ReluMask::Recompute]
                } else {
                    vec![ReluMask::None]
                };
                for mask in masks {
                    let mname = match mask {
                        ReluMask::None => "none",
                        ReluMask::Output(_) => "from y",
                        ReluMask::Recompute => "recomputed",
                    };
                    let what = format!("{what} mask {mname} acc dx={acc_dx} params={acc_params}");
                    let dy = Tensor::from_f32(gpu, ds, p, &dy_all).unwrap();
                    let dx = Tensor::from_f32(gpu, gs, p, &dx_fill).unwrap();
                    let (dg, db) = (vector(gpu, &dg0), vector(gpu, &db0));
                    let grads = BnParamGrads { dgamma: (&dg).into(), dbeta: (&db).into(), accumulate: acc_params };
                    let d = batchnorm::bn_backward(
                        gpu,
                        dy.channels(1, c),
                        x.channels(1, c),
                        mask,
                        &bn,
                        &grads,
                        dx.channels(0, c),
                        acc_dx,
                    )
                    .unwrap();
                    run(gpu, &d);
                    let mut want_dx = f32s(&want_b.dx);
                    let (mut want_dg, mut want_db) = (f32s(&want_b.dgamma), f32s(&want_b.dbeta));
                    if acc_dx {
                        want_dx = add(&want_dx, &slice_channels(&dx_fill, gs, 0, c));
                    }
                    if acc_params {
                        want_dg = add(&want_dg, &dg0);
                        want_db = add(&want_db, &db0);
                    }
                    let dx_got = dx.to_f32(gpu).unwrap();
                    let scale: Vec<f64> =
                        (0..c).map(|k| (gamma[k] as f64 / (want_f.var[k] + 1e-5).sqrt()).max(1.0)).collect();
                    let dx_view = slice_channels(&dx_got, gs, 0, c);
                    assert_dx_close(
                        &dx_view,
                        &want_dx,
                        &tol(p),
                        &scale,
                        &dy_host,
                        [n, c, h, w],
                        &format!("{what}: dx"),
                    );
                    assert_untouched(&dx_got, gs, 0, c, &dx_fill, &what);
                    assert_close(&dg.to_f32(gpu).unwrap(), &want_dg, &tol_f32(), &format!("{what}: dgamma"));
                    assert_close(&db.to_f32(gpu).unwrap(), &want_db, &tol_f32(), &format!("{what}: dbeta"));
                }
            }
        }
    }
}

/// Eval-mode (frozen) BatchNorm, what `finetune` trains through: the running statistics are
/// copied into `stats`, the forward normalises with them and the backward treats them as constants:
/// dx = γ/σ_r·dy', dγ = Σ dy'·x̂, dβ = Σ dy' (f64 CPU reference written out here), checked also
/// against central finite differences of the forward.
#[test]
fn frozen_batchnorm_matches_reference() {
    let mut rng = Rng::new(23);
    for (gpu, p) in targets() {
        for &(n, c, h, w) in &[(2, 3, 5, 7), (1, 4, 1, 1), (2, 2, 40, 70)] {
            let what = format!("frozen batchnorm {} {p} {n}x{c}x{h}x{w}", gpu.describe());
            let hw = h * w;
            let x_host = round_to(p, &rng.vec(n * c * hw, -2.0, 2.0));
            let dy_host = round_to(p, &rng.vec(n * c * hw, -1.0, 1.0));
            let gamma = rng.vec(c, 0.5, 1.5);
            let beta = rng.vec(c, -0.5, 0.5);
            let (rm0, rv0) = (rng.vec(c, -0.3, 0.3), rng.vec(c, 0.5, 1.5));
            // CPU reference in f64.
            let inv: Vec<f64> = rv0.iter().map(|&v| 1.0 / (v as f64 + 1e-5).sqrt()).collect();
            let pre = |x: &[f64], i: usize| {
                let k = (i / hw) % c;
                (x[i] - rm0[k] as f64) * inv[k] * gamma[k] as f64 + beta[k] as f64
            };
            let xd = f64s(&x_host);
            let want_y: Vec<f32> = (0..xd.len()).map(|i| pre(&xd, i).max(0.0) as f32).collect();
            let (mut want_dx, mut want_dg, mut want_db) = (vec![0f32; xd.len()], vec![0f64; c], vec![0f64; c]);
            for i in 0..xd.len() {
                let k = (i / hw) % c;
                let g = if pre(&xd, i) > 0.0 { dy_host[i] as f64 } else { 0.0 };
                want_dx[i] = (g * gamma[k] as f64 * inv[k]) as f32;
                want_dg[k] += g * (xd[i] - rm0[k] as f64) * inv[k];
                want_db[k] += g;
            }
            // Finite differences of L = Σ dy·y with respect to a few inputs agree with the reference.
            if p == Precision::F32 {
                let loss = |x: &[f64]| (0..x.len()).map(|i| dy_host[i] as f64 * pre(x, i).max(0.0)).sum::<f64>();
                for i in [0, xd.len() / 2, xd.len() - 1] {
                    let (mut a, mut b) = (xd.clone(), xd.clone());
                    a[i] += 1e-6;
                    b[i] -= 1e-6;
                    let fd = (loss(&a) - loss(&b)) / 2e-6;
                    assert!(
                        (fd - want_dx[i] as f64).abs() < 1e-5,
                        "{what}: reference dx[{i}] {} vs fd {fd}",
                        want_dx[i]
                    );
                }
            }

            let x = Tensor::from_f32(gpu, [n, c, h, w], p, &x_host).unwrap();
            let y = Tensor::new(gpu, [n, c, h, w], p, "y").unwrap();
            let dy = Tensor::from_f32(gpu, [n, c, h, w], p, &dy_host).unwrap();
            let dx = Tensor::new(gpu, [n, c, h, w], p, "dx").unwrap();
            let (gt, bt) = (vector(gpu, &gamma), vector(gpu, &beta));
            let (rm, rv) = (vector(gpu, &rm0), vector(gpu, &rv0));
            let (dg, db) = (vector(gpu, &vec![0.0; c]), vector(gpu, &vec![0.0; c]));
            let stats = Tensor::new(gpu, [1, 1, 2, c], Precision::F32, "stats").unwrap();
            let bn =
                BnLayer { gamma: (&gt).into(), beta: (&bt).into(), stats: &stats, eps: batchnorm::EPS, frozen: true };
            let grads = BnParamGrads { dgamma: (&dg).into(), dbeta: (&db).into(), accumulate: false };
            let mut d = vec![batchnorm::bn_stats_from_running(gpu, &rm, &rv, &stats).unwrap()];
            d.push(batchnorm::bn_forward_relu(gpu, x.view(), &bn, true, y.view()).unwrap());
            d.extend(
                batchnorm::bn_backward(
                    gpu,
                    dy.view(),
                    x.view(),
                    ReluMask::Output(y.view()),
                    &bn,
                    &grads,
                    dx.view(),
                    false,
                )
                .unwrap(),
            );
            run(gpu, &d);
            assert_close(&y.to_f32(gpu).unwrap(), &want_y, &tol(p), &format!("{what}: y"));
            assert_close(&dx.to_f32(gpu).unwrap(), &want_dx, &tol(p), &format!("{what}: dx"));
            assert_close(&dg.to_f32(gpu).unwrap(), &f32s(&want_dg), &tol_f32(), &format!("{what}: dgamma"));
            assert_close(&db.to_f32(gpu).unwrap(), &f32s(&want_db), &tol_f32(), &format!("{what}: dbeta"));
            // The running statistics are only read.
            assert_eq!(rm.to_f32(gpu).unwrap(), rm0, "{what}: running mean changed");
            assert_eq!(rv.to_f32(gpu).unwrap(), rv0, "{what}: running var changed");
        }
    }
}

#[test]
fn batchnorm_statistics_are_deterministic_and_sound() {
    // Large offset relative to the spread (mean 1000, std ~0.3) over several chunks: a one-pass
    // E[x²] − E[x]² in f32 would lose the variance entirely.
    let (gpu, _) = targets()[0];
    let mut rng = Rng::new(12);
    let (n, c, h, w) = (2, 2, 61, 67);
    let x_host: Vec<f32> = (0..n * c * h * w).map(|_| 1000.0 + rng.uniform(-0.5, 0.5)).collect();
    let x = Tensor::from_f32(gpu, [n, c, h, w], Precision::F32, &x_host).unwrap();
    let stats = Tensor::new(gpu, [1, 1, 2, c], Precision::F32, "stats").unwrap();
    let want = bn_ref::batchnorm_train(&f64s(&x_host), [n, c, h, w], &[1.0; 2], &[0.0; 2], 1e-5, false);
    let mut first = None;
    for _ in 0..3 {
        run(gpu, &batchnorm::bn_stats(gpu, x.view(), &stats).unwrap());
        let st = stats.to_f32(gpu).unwrap();
        assert_close(&st[..c], &f32s(&want.mean), &tol_f32(), "mean");
        let tv = Tol { rel: 1e-4, abs: 0.0, l2: 1e-4 };
        assert_close(&st[c..], &f32s(&want.var), &tv, "var");
        if let Some(f) = &first {
            assert_eq!(f, &st, "statistics differ between runs");
        }
        first = Some(st);
    }
}

/// Central finite differences of `f` at `x` in every coordinate.
fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let a = f(&xp);
            xp[i] = x[i] - h;
            let b = f(&xp);
            xp[i] = x[i];
            (a - b) / (2.0 * h)
        })
        .collect()
}

fn assert_near(got: &[f64], want: &[f64], eps: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= eps * scale, "{what}: element {i}: {g} vs finite differences {w}");
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn batchnorm_reference_matches_finite_differences() {
    let mut rng = Rng::new(13);
    let shape = [2, 3, 3, 4];
    let len: usize = shape.iter().product();
    for relu in [false, true] {
        let x = f64s(&rng.vec(len, -2.0, 2.0));
        let r = f64s(&rng.vec(len, -1.0, 1.0));
        let gamma = f64s(&rng.vec(3, 0.5, 1.5));
        let beta = f64s(&rng.vec(3, -0.5, 0.5));
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&bn_ref::batchnorm_train(x, shape, g, b, 1e-5, relu).y, &r);
        let got = bn_ref::batchnorm_train_backward(&r, &x, shape, &gamma, &beta, 1e-5, relu);
        let h = 1e-6;
        assert_near(&got.dx, &finite_diff(&x, h, |x| loss(x, &gamma, &beta)), 1e-6, "bn dx");
        assert_near(&got.dgamma, &finite_diff(&gamma, h, |g| loss(&x, g, &beta)), 1e-6, "bn dgamma");
        assert_near(&got.dbeta, &finite_diff(&beta, h, |b| loss(&x, &gamma, b)), 1e-6, "bn dbeta");
    }
}

#[test]
fn relu_backward_matches_reference() {
    let mut rng = Rng::new(14);
    for (gpu, p) in targets() {
        for (k, &(n, c, h, w)) in [(1, 3, 7, 9), (2, 5, 1, 1), (1, 2, 17, 33)].iter().enumerate() {
            let acc = k % 2 == 1;
            let (ys, ds, gs) = ([n, c + 1, h, w], [n, c + 2, h, w], [n, c + 1, h, w]);
            let y_all =
                round_to(p, &rng.vec(ys.iter().product(), -1.0, 1.0).iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
            let dy_all = round_to(p, &rng.vec(ds.iter().product(), -1.0, 1.0));
            let dx_fill = round_to(p, &rng.vec(gs.iter().product(), -1.0, 1.0));
            let y = Tensor::from_f32(gpu, ys, p, &y_all).unwrap();
            let dy = Tensor::from_f32(gpu, ds, p, &dy_all).unwrap();
            let dx = Tensor::from_f32(gpu, gs, p, &dx_fill).unwrap();
            let d = batchnorm::relu_backward(gpu, dy.channels(2, c), y.channels(1, c), dx.channels(1, c), acc).unwrap();
            run(gpu, &[d]);
            let mut want = f32s(&bn_ref::relu_backward(
                &f64s(&slice_channels(&dy_all, ds, 2, c)),
                &f64s(&slice_channels(&y_all, ys, 1, c)),
            ));
            if acc {
                want = add(&want, &slice_channels(&dx_fill, gs, 1, c));
            }
            let what = format!("relu backward {p} {n}x{c}x{h}x{w} acc={acc}");
            let got = dx.to_f32(gpu).unwrap();
            assert_close(&slice_channels(&got, gs, 1, c), &want, &tol(p), &what);
            assert_untouched(&got, gs, 1, c, &dx_fill, &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Max-pool

#[test]
fn maxpool_backward_matches_reference() {
    let mut rng = Rng::new(15);
    let shapes =
        [(1, 3, 7, 9), (2, 5, 16, 16), (1, 1, 2, 2), (1, 4, 3, 65), (1, 2, 1, 9), (2, 3, 5, 5), (1, 2, 35, 37)];
    for (gpu, p) in targets() {
        for (k, &(n, c, h, w)) in shapes.iter().enumerate() {
            let ties = k % 2 == 0;
            let acc = k % 3 != 0;
            let (oh, ow) = (h / 2, w / 2);
            let (xs, ds, gs) = ([n, c + 2, h, w], [n, c + 1, oh, ow], [n, c + 3, h, w]);
            let x_all: Vec<f32> = if ties {
                (0..xs.iter().product()).map(|_| rng.int(0, 3) as f32 * 0.5).collect()
            } else {
                round_to(p, &rng.vec(xs.iter().product(), -2.0, 2.0))
            };
            let dy_all = round_to(p, &rng.vec(ds.iter().product(), -1.0, 1.0));
            let dx_fill = round_to(p, &rng.vec(gs.iter().product(), -1.0, 1.0));
            let x = Tensor::from_f32(gpu, xs, p, &x_all).unwrap();
            let dy = Tensor::from_f32(gpu, ds, p, &dy_all).unwrap();
            let dx = Tensor::from_f32(gpu, gs, p, &dx_fill).unwrap();
            let d =
                pool::maxpool2x2_backward(gpu, x.channels(1, c), dy.channels(1, c), dx.channels(2, c), acc).unwrap();
            run(gpu, &[d]);
            let mut want = f32s(&pool_ref::maxpool2x2_backward(
                &f64s(&slice_channels(&x_all, xs, 1, c)),
                &f64s(&slice_channels(&dy_all, ds, 1, c)),
                [n, c, h, w],
            ));
            if acc {
                want = add(&want, &slice_channels(&dx_fill, gs, 2, c));
            }
            let what = format!("maxpool backward {} {p} {n}x{c}x{h}x{w} ties={ties} acc={acc}", gpu.describe());
            let got = dx.to_f32(gpu).unwrap();
            assert_close(&slice_channels(&got, gs, 2, c), &want, &tol(p), &what);
            assert_untouched(&got, gs, 2, c, &dx_fill, &what);
        }
    }
}

#[test]
fn maxpool_reference_matches_finite_differences() {
    let mut rng = Rng::new(16);
    let shape = [2, 2, 5, 7];
    let len: usize = shape.iter().product();
    // Distinct values at least 0.01 apart, so a 1e-3 step never changes an argmax.
    let mut x: Vec<f64> = (0..len).map(|i| i as f64 * 0.01 - 0.7).collect();
    for i in (1..len).rev() {
        x.swap(i, rng.int(0, i));
    }
    let dy = f64s(&rng.vec(2 * 2 * 2 * 3, -1.0, 1.0));
    let got = pool_ref::maxpool2x2_backward(&x, &dy, shape);
    let fd = finite_diff(&x, 1e-3, |x| dot(&pool_ref::maxpool2x2_forward(x, shape), &dy));
    assert_near(&got, &fd, 1e-9, "maxpool dx");
    // The f64 forward agrees with the f32 forward reference (ties included).
    let xt: Vec<f32> = (0..len).map(|_| rng.int(0, 3) as f32).collect();
    assert_eq!(f32s(&pool_ref::maxpool2x2_forward(&f64s(&xt), shape)), pool_ref::maxpool2x2(&xt, shape));
}

// ---------------------------------------------------------------------------------------------
// Bilinear upsampling + pad

/// (n, c, h, w, out_h, out_w): exact, +1 pads (odd skips), 1-pixel inputs, +3 pads, crops, and
/// inputs larger than a workgroup.
const UP_CASES: [(usize, usize, usize, usize, usize, usize); 9] = [
    (1, 3, 4, 5, 8, 10),
    (2, 2, 7, 3, 15, 7),
    (1, 1, 1, 1, 2, 3),
    (1, 5, 6, 6, 15, 12),
    (1, 2, 5, 4, 9, 6),
    (1, 2, 3, 3, 5, 5),
    (1, 1, 2, 9, 4, 21),
    (2, 1, 1, 5, 1, 10),
    (1, 3, 33, 17, 67, 35),
];

#[test]
fn upsample_backward_matches_reference() {
    let mut rng = Rng::new(17);
    for (gpu, p) in targets() {
        for (k, &(n, c, h, w, oh, ow)) in UP_CASES.iter().enumerate() {
            let acc = k % 2 == 1;
            // dy: the upsampled branch's slot [2, 2 + c) of a (c + 3)-channel concat gradient.
            let (ds, gs) = ([n, c + 3, oh, ow], [n, c + 1, h, w]);
            let dy_all = round_to(p, &rng.vec(ds.iter().product(), -1.0, 1.0));
            let dx_fill = round_to(p, &rng.vec(gs.iter().product(), -1.0, 1.0));
            let dy = Tensor::from_f32(gpu, ds, p, &dy_all).unwrap();
            let dx = Tensor::from_f32(gpu, gs, p, &dx_fill).unwrap();
            let d = upsample::upsample2x_pad_backward(gpu, dy.channels(2, c), dx.channels(1, c), acc).unwrap();
            run(gpu, &[d]);
            let mut want =
                f32s(&up_ref::upsample2x_pad_backward(&f64s(&slice_channels(&dy_all, ds, 2, c)), [n, c, h, w], oh, ow));
            if acc {
                want = add(&want, &slice_channels(&dx_fill, gs, 1, c));
            }
            let what = format!("upsample backward {} {p} {n}x{c}x{h}x{w} from {oh}x{ow} acc={acc}", gpu.describe());
            let got = dx.to_f32(gpu).unwrap();
            assert_close(&slice_channels(&got, gs, 1, c), &want, &tol(p), &what);
            assert_untouched(&got, gs, 1, c, &dx_fill, &what);
        }
    }
}

#[test]
fn upsample_reference_is_the_adjoint() {
    let mut rng = Rng::new(18);
    for &(n, c, h, w, oh, ow) in &UP_CASES[..8] {
        let shape = [n, c, h, w];
        let x = f64s(&rng.vec(n * c * h * w, -1.0, 1.0));
        let dy = f64s(&rng.vec(n * c * oh * ow, -1.0, 1.0));
        let dx = up_ref::upsample2x_pad_backward(&dy, shape, oh, ow);
        // Linear map: central differences are exact up to rounding for any step.
        let fd = finite_diff(&x, 0.5, |x| dot(&up_ref::upsample2x_pad_forward(x, shape, oh, ow), &dy));
        assert_near(&dx, &fd, 1e-12, &format!("upsample {shape:?} -> {oh}x{ow}"));
        // The f64 forward agrees with the f32 forward reference.
        let xf = f32s(&x);
        let y32 = up_ref::upsample2x_pad(&xf, shape, oh, ow);
        let y64 = up_ref::upsample2x_pad_forward(&f64s(&xf), shape, oh, ow);
        assert_close(&y32, &f32s(&y64), &tol_f32(), "upsample f64 forward vs f32 forward");
    }
}

// ---------------------------------------------------------------------------------------------
// PyTorch

/// Every tensor of a fixture file as (shape, f32 values).
fn fixture(name: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            (k, (v.shape().to_vec(), bytemuck::pod_collect_to_vec(v.data())))
        })
        .collect()
}

fn shape4(s: &[usize]) -> [usize; 4] {
    s.try_into().expect("4-d tensor")
}

#[test]
fn batchnorm_matches_pytorch() {
    let fx = fixture("grad_layers_bn.safetensors");
    let get = |k: &str| fx[k].1.clone();
    for (gpu, p) in targets() {
        for (case, relu) in [("relu.", true), ("plain.", false)] {
            let k = |name: &str| format!("{case}{name}");
            let shape = shape4(&fx[&k("x")].0);
            let [n, c, h, w] = shape;
            let what = format!("batchnorm vs pytorch {} {p} {case}", gpu.describe());
            let x = Tensor::from_f32(gpu, shape, p, &get(&k("x"))).unwrap();
            let y = Tensor::new(gpu, shape, p, "y").unwrap();
            let (gt, bt) = (vector(gpu, &get(&k("gamma"))), vector(gpu, &get(&k("beta"))));
            let (rm, rv) = (vector(gpu, &get(&k("running_mean"))), vector(gpu, &get(&k("running_var"))));
            let stats = Tensor::new(gpu, [1, 1, 2, c], Precision::F32, "stats").unwrap();
            let bn =
                BnLayer { gamma: (&gt).into(), beta: (&bt).into(), stats: &stats, eps: batchnorm::EPS, frozen: false };
            let mut ds = batchnorm::bn_stats(gpu, x.view(), &stats).unwrap();
            ds.push(batchnorm::bn_forward_relu(gpu, x.view(), &bn, relu, y.view()).unwrap());
            ds.push(batchnorm::bn_update_running(gpu, &stats, n * h * w, batchnorm::MOMENTUM, &rm, &rv).unwrap());
            run(gpu, &ds);
            let st = stats.to_f32(gpu).unwrap();
            assert_close(&st[..c], &get(&k("mean")), &tol_f32(), &format!("{what}: mean"));
            assert_close(&st[c..], &get(&k("var")), &tol_f32(), &format!("{what}: var"));
            assert_close(&y.to_f32(gpu).unwrap(), &get(&k("y")), &tol(p), &format!("{what}: y"));
            assert_close(&rm.to_f32(gpu).unwrap(), &get(&k("new_running_mean")), &tol_f32(), &format!("{what}: rm"));
            assert_close(&rv.to_f32(gpu).unwrap(), &get(&k("new_running_var")), &tol_f32(), &format!("{what}: rv"));

            let masks = if relu { vec![ReluMask::Output(y.view()), ReluMask::Recompute] } else { vec![ReluMask::None] };
            for mask in masks {
                let dy = Tensor::from_f32(gpu, shape, p, &get(&k("dy"))).unwrap();
                let dx = Tensor::new(gpu, shape, p, "dx").unwrap();
                let (dg, db) = (vector(gpu, &vec![0.0; c]), vector(gpu, &vec![0.0; c]));
                let grads = BnParamGrads { dgamma: (&dg).into(), dbeta: (&db).into(), accumulate: false };
                run(
                    gpu,
                    &batchnorm::bn_backward(gpu, dy.view(), x.view(), mask, &bn, &grads, dx.view(), false).unwrap(),
                );
                assert_close(&dx.to_f32(gpu).unwrap(), &get(&k("dx")), &tol(p), &format!("{what}: dx"));
                assert_close(&dg.to_f32(gpu).unwrap(), &get(&k("dgamma")), &tol_f32(), &format!("{what}: dgamma"));
                assert_close(&db.to_f32(gpu).unwrap(), &get(&k("dbeta")), &tol_f32(), &format!("{what}: dbeta"));
            }
        }
    }
}

#[test]
fn maxpool_backward_matches_pytorch() {
    let fx = fixture("grad_layers_pool.safetensors");
    for (gpu, p) in targets() {
        for case in ["case0.", "case1."] {
            let (xs, xv) = &fx[&format!("{case}x")];
            let (ds, dyv) = &fx[&format!("{case}dy")];
            let want = &fx[&format!("{case}dx")].1;
            let x = Tensor::from_f32(gpu, shape4(xs), p, xv).unwrap();
            let dy = Tensor::from_f32(gpu, shape4(ds), p, dyv).unwrap();
            let dx = Tensor::new(gpu, shape4(xs), p, "dx").unwrap();
            run(gpu, &[pool::maxpool2x2_backward(gpu, x.view(), dy.view(), dx.view(), false).unwrap()]);
            let what = format!("maxpool backward vs pytorch {} {p} {case}", gpu.describe());
            assert_close(&dx.to_f32(gpu).unwrap(), want, &tol(p), &what);
            // The CPU reference breaks ties the same way.
            let cpu = pool_ref::maxpool2x2_backward(&f64s(xv), &f64s(dyv), shape4(xs));
            assert_close(&f32s(&cpu), want, &tol_f32(), &format!("{what} (CPU reference)"));
        }
    }
}

#[test]
fn upsample_backward_matches_pytorch() {
    let fx = fixture("grad_layers_upsample.safetensors");
    for (gpu, p) in targets() {
        for case in ["case0.", "case1.", "case2.", "case3."] {
            let (ds, dyv) = &fx[&format!("{case}dy")];
            let (xs, want) = &fx[&format!("{case}dx")];
            let dy = Tensor::from_f32(gpu, shape4(ds), p, dyv).unwrap();
            let dx = Tensor::new(gpu, shape4(xs), p, "dx").unwrap();
            run(gpu, &[upsample::upsample2x_pad_backward(gpu, dy.view(), dx.view(), false).unwrap()]);
            let what = format!("upsample backward vs pytorch {} {p} {case}", gpu.describe());
            assert_close(&dx.to_f32(gpu).unwrap(), want, &tol(p), &what);
            let cpu = up_ref::upsample2x_pad_backward(&f64s(dyv), shape4(xs), ds[2], ds[3]);
            assert_close(&f32s(&cpu), want, &tol_f32(), &format!("{what} (CPU reference)"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shape checks

#[test]
fn bad_shapes_are_rejected() {
    let (gpu, p) = targets()[0];
    let t = |s: [usize; 4]| Tensor::new(gpu, s, p, "t").unwrap();
    let v = |n: usize| Tensor::new(gpu, [1, 1, 1, n], Precision::F32, "v").unwrap();
    // BatchNorm: one value per channel, wrong-length statistics, f16-typed statistics.
    let (x1, stats) = (t([1, 3, 1, 1]), v(6));
    assert!(batchnorm::bn_stats(gpu, x1.view(), &stats).is_err());
    let x = t([2, 3, 4, 4]);
    assert!(batchnorm::bn_stats(gpu, x.view(), &v(5)).is_err());
    let (g, b) = (v(3), v(3));
    let bn = BnLayer { gamma: (&g).into(), beta: (&b).into(), stats: &stats, eps: batchnorm::EPS, frozen: false };
    let y_small = t([2, 3, 4, 3]);
    assert!(batchnorm::bn_forward_relu(gpu, x.view(), &bn, true, y_small.view()).is_err());
    assert!(batchnorm::bn_forward_relu(gpu, x.view(), &bn, true, x.view()).is_err(), "in place");
    let (dg, db) = (v(3), v(2));
    let grads = BnParamGrads { dgamma: (&dg).into(), dbeta: (&db).into(), accumulate: false };
    let (dy, dx) = (t([2, 3, 4, 4]), t([2, 3, 4, 4]));
    assert!(batchnorm::bn_backward(gpu, dy.view(), x.view(), ReluMask::None, &bn, &grads, dx.view(), false).is_err());
    assert!(batchnorm::bn_update_running(gpu, &stats, 1, 0.1, &v(3), &v(3)).is_err());
    // Max-pool backward: dy of the wrong size, dx aliasing x.
    let x = t([1, 2, 7, 9]);
    let (dy_bad, dy, dx) = (t([1, 2, 4, 4]), t([1, 2, 3, 4]), t([1, 2, 7, 9]));
    assert!(pool::maxpool2x2_backward(gpu, x.view(), dy_bad.view(), dx.view(), false).is_err());
    assert!(pool::maxpool2x2_backward(gpu, x.view(), dy.view(), x.view(), false).is_err());
    assert!(pool::maxpool2x2_backward(gpu, x.view(), dy.view(), dx.view(), false).is_ok());
    // Upsample backward: channel mismatch.
    let (dy, dx) = (t([1, 4, 8, 8]), t([1, 3, 4, 4]));
    assert!(upsample::upsample2x_pad_backward(gpu, dy.view(), dx.view(), false).is_err());
    assert!(upsample::upsample2x_pad_backward(gpu, dy.channels(1, 3), dx.view(), false).is_ok());
}
