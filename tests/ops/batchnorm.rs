//! BatchNorm2d (`ops::batchnorm`) in training mode (statistics, forward + ReLU, running
//! statistics, backward) and frozen (eval) mode, and ReLU backward: the GPU against the f64 CPU
//! references on random shapes through channel views with accumulation, on every adapter and
//! precision; the reference backward against central finite differences of its forward; and
//! everything against PyTorch (tests/fixtures/grad_layers_bn.safetensors, made by
//! make_grad_layers_fixtures.py).

use crate::check::{
    Slot, add, assert_near, assert_untouched, dot, finite_diff, random_tensor, run, shape4, tensors, vector,
};
use crate::common::{Rng, Tol, assert_close, f32s, f64s, round_to, slice_channels, targets, tol};
use psi_gpu::gpu::{Precision, Tensor};
use psi_gpu::ops::batchnorm::reference::{self as cpu, Layer, Stats};
use psi_gpu::ops::batchnorm::{self, BnLayer, BnParamGrads, ReluMask};

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

                let (x64, shape) = (f64s(&x_host), [n, c, h, w]);
                let want_s = cpu::bn_stats(&x64, shape);
                let (g64, b64) = (f64s(&gamma), f64s(&beta));
                let layer = Layer { gamma: &g64, beta: &b64, stats: &want_s, eps: 1e-5, frozen: false };
                let want_y = cpu::bn_forward_relu(&x64, shape, &layer, relu);
                let running = Stats { mean: f64s(&rm0), var: f64s(&rv0) };
                let want_r = cpu::bn_update_running(&running, &want_s, count, 0.1);
                let want_b = cpu::bn_backward(&f64s(&dy_host), &x64, shape, &layer, relu);

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
                assert_close(&st[..c], &f32s(&want_s.mean), &tol_f32(), &format!("{what}: mean"));
                assert_close(&st[c..], &f32s(&want_s.var), &tol_f32(), &format!("{what}: var"));
                let y_got = y.to_f32(gpu).unwrap();
                assert_close(&slice_channels(&y_got, ys, 2, c), &f32s(&want_y), &tol(p), &format!("{what}: y"));
                assert_untouched(&y_got, ys, 2, c, &y_fill, &what);
                let what_r = format!("{what}: running");
                assert_close(&rm.to_f32(gpu).unwrap(), &f32s(&want_r.mean), &tol_f32(), &format!("{what_r} mean"));
                assert_close(&rv.to_f32(gpu).unwrap(), &f32s(&want_r.var), &tol_f32(), &format!("{what_r} var"));

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
                        (0..c).map(|k| (gamma[k] as f64 / (want_s.var[k] + 1e-5).sqrt()).max(1.0)).collect();
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
/// dx = γ/σ_r·dy', dγ = Σ dy'·x̂, dβ = Σ dy'.
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
            let (x64, shape) = (f64s(&x_host), [n, c, h, w]);
            let (g64, b64, running) = (f64s(&gamma), f64s(&beta), Stats { mean: f64s(&rm0), var: f64s(&rv0) });
            let layer = Layer { gamma: &g64, beta: &b64, stats: &running, eps: 1e-5, frozen: true };
            let want_y = f32s(&cpu::bn_forward_relu(&x64, shape, &layer, true));
            let want = cpu::bn_backward(&f64s(&dy_host), &x64, shape, &layer, true);
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
            assert_close(&dx.to_f32(gpu).unwrap(), &f32s(&want.dx), &tol(p), &format!("{what}: dx"));
            assert_close(&dg.to_f32(gpu).unwrap(), &f32s(&want.dgamma), &tol_f32(), &format!("{what}: dgamma"));
            assert_close(&db.to_f32(gpu).unwrap(), &f32s(&want.dbeta), &tol_f32(), &format!("{what}: dbeta"));
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
    let want = cpu::bn_stats(&f64s(&x_host), [n, c, h, w]);
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

/// The reference backward against central differences of its forward, in training mode (the
/// statistics follow x) and frozen (they are constants).
#[test]
fn batchnorm_reference_matches_finite_differences() {
    let mut rng = Rng::new(13);
    let shape = [2, 3, 3, 4];
    let len: usize = shape.iter().product();
    let running = Stats { mean: f64s(&rng.vec(3, -0.3, 0.3)), var: f64s(&rng.vec(3, 0.5, 1.5)) };
    for (relu, frozen) in [(false, false), (true, false), (true, true)] {
        let x = f64s(&rng.vec(len, -2.0, 2.0));
        let r = f64s(&rng.vec(len, -1.0, 1.0));
        let gamma = f64s(&rng.vec(3, 0.5, 1.5));
        let beta = f64s(&rng.vec(3, -0.5, 0.5));
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            let batch = cpu::bn_stats(x, shape);
            let stats = if frozen { &running } else { &batch };
            dot(&cpu::bn_forward_relu(x, shape, &Layer { gamma, beta, stats, eps: 1e-5, frozen }, relu), &r)
        };
        let stats = if frozen { running.clone() } else { cpu::bn_stats(&x, shape) };
        let got = cpu::bn_backward(
            &r,
            &x,
            shape,
            &Layer { gamma: &gamma, beta: &beta, stats: &stats, eps: 1e-5, frozen },
            relu,
        );
        let (h, what) = (1e-6, format!("relu={relu} frozen={frozen}"));
        assert_near(&got.dx, &finite_diff(&x, h, |x| loss(x, &gamma, &beta)), 1e-6, &format!("bn dx {what}"));
        assert_near(&got.dgamma, &finite_diff(&gamma, h, |g| loss(&x, g, &beta)), 1e-6, &format!("bn dgamma {what}"));
        assert_near(&got.dbeta, &finite_diff(&beta, h, |b| loss(&x, &gamma, b)), 1e-6, &format!("bn dbeta {what}"));
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
            let (dy_all, dy) = random_tensor(gpu, p, &mut rng, ds, [-1.0, 1.0]);
            let dx = Slot::new(gpu, p, &mut rng, gs, 1, c);
            let y = Tensor::from_f32(gpu, ys, p, &y_all).unwrap();
            run(gpu, &[batchnorm::relu_backward(gpu, dy.channels(2, c), y.channels(1, c), dx.view(), acc).unwrap()]);
            let (dy64, y64) = (f64s(&slice_channels(&dy_all, ds, 2, c)), f64s(&slice_channels(&y_all, ys, 1, c)));
            let want = f32s(&cpu::relu_backward(&dy64, &y64));
            dx.check(gpu, &want, acc, p, &format!("relu backward {p} {n}x{c}x{h}x{w} acc={acc}"));
        }
    }
}

#[test]
fn batchnorm_matches_pytorch() {
    let fx = tensors("grad_layers_bn.safetensors");
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
}
