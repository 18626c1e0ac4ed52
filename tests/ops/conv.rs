//! The convolutions (`ops::conv`): the forward (tiled 3x3, 1x1 and the naive 3x3) and the
//! backward passes (`conv_grad_*`, `relayout`) against the f64 CPU references on every adapter and
//! precision, the references' gradients against central finite differences of their forward, and
//! everything against gradients PyTorch computed (`tests/fixtures/make_grad_conv_fixtures.py`).

use std::collections::BTreeSet;

use crate::check::{Slot, assert_close_scaled as check, assert_near, dot, finite_diff, serial, vector as f32_buffer};
use crate::common::{Rng, assert_close, f32s, f64s, fixture, rel_l2, round_to, slice_channels, targets, tol};
use psi_gpu::gpu::Tensor;
use psi_gpu::gpu::{Gpu, Precision};
use psi_gpu::io::npy;
use psi_gpu::ops::conv::reference as cpu;
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

/// The f64 forward reference on f32 data, rounded back to f32.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f32],
    shape: [usize; 4],
    wt: &[f32],
    ck: [usize; 2],
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    f32s(&cpu::conv(&f64s(x), shape, &f64s(wt), ck, &f64s(scale), &f64s(shift), relu))
}

#[test]
fn conv_matches_reference() {
    // (n, cin, cout, h, w, k)
    let shapes = [
        (1, 3, 5, 7, 9, 3),
        (2, 8, 16, 8, 32, 3),
        (1, 13, 19, 33, 35, 3),
        (1, 1, 1, 1, 1, 3),
        (1, 5, 3, 1, 40, 3),
        (1, 6, 7, 37, 1, 3),
        (1, 17, 33, 16, 16, 3),
        (2, 9, 6, 11, 13, 1),
        (1, 16, 1, 20, 21, 1),
    ];
    let mut rng = Rng::new(1);
    for (gpu, p) in targets() {
        for &(n, cin, cout, h, w, k) in &shapes {
            // Read from channels [2, 2 + cin) of a wider tensor; write into channels [1, 1 + cout).
            let (ict, oct) = (cin + 3, cout + 2);
            let x_all = round_to(p, &rng.vec(n * ict * h * w, -1.0, 1.0));
            let wt = round_to(p, &rng.vec(cout * cin * k * k, -0.5, 0.5));
            let scale = rng.vec(cout, 0.5, 1.5);
            let shift = rng.vec(cout, -0.2, 0.2);
            for relu in [false, true] {
                let x = Tensor::from_f32(gpu, [n, ict, h, w], p, &x_all).unwrap();
                let y = Tensor::from_f32(gpu, [n, oct, h, w], p, &vec![7.0; n * oct * h * w]).unwrap();
                let cw = conv::ConvWeights::new(gpu, p, &wt, [cout, cin, k], &scale, &shift, relu).unwrap();
                let d = conv::conv(gpu, &cw, x.channels(2, cin), y.channels(1, cout)).unwrap();
                gpu.run(&[&d]).unwrap();
                let got = y.to_f32(gpu).unwrap();
                let xin = slice_channels(&x_all, [n, ict, h, w], 2, cin);
                let want = conv_ref(&xin, [n, cin, h, w], &wt, [cout, k], &scale, &shift, relu);
                let what = format!("conv{k}x{k} {} {p} n{n} {cin}->{cout} {h}x{w} relu={relu}", gpu.describe());
                assert_close(&slice_channels(&got, [n, oct, h, w], 1, cout), &want, &tol(p), &what);
                // Channels outside the view are untouched.
                assert!(
                    slice_channels(&got, [n, oct, h, w], 0, 1).iter().all(|&v| v == 7.0),
                    "{what}: wrote outside view"
                );
                assert!(
                    slice_channels(&got, [n, oct, h, w], 1 + cout, 1).iter().all(|&v| v == 7.0),
                    "{what}: wrote outside view"
                );
            }
        }
    }
}

#[test]
fn naive_conv_matches_reference() {
    let mut rng = Rng::new(2);
    let (n, cin, cout, h, w) = (1, 5, 6, 9, 11);
    for (gpu, p) in targets() {
        let x = round_to(p, &rng.vec(n * cin * h * w, -1.0, 1.0));
        let wt = round_to(p, &rng.vec(cout * cin * 9, -0.5, 0.5));
        let (scale, shift) = (vec![1.0; cout], vec![0.0; cout]);
        let xt = Tensor::from_f32(gpu, [n, cin, h, w], p, &x).unwrap();
        let yt = Tensor::new(gpu, [n, cout, h, w], p, "y").unwrap();
        let cw = conv::ConvWeights::new(gpu, p, &wt, [cout, cin, 3], &scale, &shift, false).unwrap();
        gpu.run(&[&conv::conv3x3_naive(gpu, &cw, xt.view(), yt.view()).unwrap()]).unwrap();
        let want = conv_ref(&x, [n, cin, h, w], &wt, [cout, 3], &scale, &shift, false);
        assert_close(&yt.to_f32(gpu).unwrap(), &want, &tol(p), "naive conv");
    }
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
            let dx = Slot::new(gpu, p, &mut rng, [n, ict, h, w], 2, cin);
            let trainable = i % 2 == 0;
            let (cw, _master) = weights(gpu, p, &wt, [cout, cin, k], trainable);
            let dy = Tensor::from_f32(gpu, [n, oct, h, w], p, &dy_all).unwrap();
            let dyin = slice_channels(&dy_all, [n, oct, h, w], 1, cout);
            let want = f32s(&cpu::conv_grad_input(&f64s(&dyin), [n, cout, h, w], &f64s(&wt), cin, k));
            for accumulate in [false, true] {
                dx.reset(gpu);
                let d = conv::conv_grad_input(gpu, &cw, dy.channels(1, cout), dx.view(), accumulate).unwrap();
                gpu.run(&[&d]).unwrap();
                let what = format!(
                    "grad_input {k}x{k} {} {p} n{n} {cin}->{cout} {h}x{w} trainable={trainable} acc={accumulate}",
                    gpu.describe()
                );
                dx.check(gpu, &want, accumulate, p, &what);
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
            let want = f32s(&cpu::conv_grad_weight(&f64s(&xin), [n, cin, h, w], &f64s(&dyin), cout, k));
            let mut first = None;
            for accumulate in [false, true, false] {
                let dw = f32_buffer(gpu, &old);
                let d = conv::conv_grad_weight_in(
                    gpu,
                    &cw,
                    x.channels(2, cin),
                    dy.channels(1, cout),
                    &dw.buffer,
                    accumulate,
                    None,
                )
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
            let want = f32s(&cpu::conv_grad_bias(&f64s(&slice_channels(&dy_all, [n, ct, h, w], 1, c)), [n, c, h, w]));
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
                let want = conv_ref(&x_all, [n, cin, h, w], &wt, [cout, k], &vec![1.0; cout], &b, false);
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
    assert!(conv::conv_grad_weight_in(gpu, &cw, x.view(), dy.view(), &small.buffer, false, None).is_err());
    assert!(conv::conv_grad_weight_in(gpu, &cw, dy.view(), x.view(), &dw.buffer, false, None).is_err());
    assert!(conv::conv_grad_bias(gpu, dy.view(), &f32_buffer(gpu, &[0.0; 3]).buffer, false).is_err());
    assert!(conv::relayout(gpu, &small.buffer, &cw).is_err());
    assert!(ConvWeights::trainable(gpu, p, [4, 3, 5]).is_err());
}

/// The references' gradients are those of their forward: `L = Σ g · (conv(x, W) + b)` is linear
/// in each argument, so central differences are exact up to rounding.
#[test]
fn reference_matches_finite_differences() {
    let mut rng = Rng::new(15);
    for &(n, cin, cout, h, w, k) in &[(2, 3, 4, 5, 6, 3), (1, 2, 3, 1, 4, 3), (2, 4, 3, 3, 5, 1)] {
        let shape = [n, cin, h, w];
        let x = f64s(&rng.vec(n * cin * h * w, -1.0, 1.0));
        let wt = f64s(&rng.vec(cout * cin * k * k, -0.5, 0.5));
        let b = f64s(&rng.vec(cout, -0.2, 0.2));
        let g = f64s(&rng.vec(n * cout * h * w, -1.0, 1.0));
        let ones = vec![1.0; cout];
        let loss = |x: &[f64], wt: &[f64], b: &[f64]| dot(&cpu::conv(x, shape, wt, [cout, k], &ones, b, false), &g);
        let what = format!("{k}x{k} {shape:?} -> {cout}");
        let dx = cpu::conv_grad_input(&g, [n, cout, h, w], &wt, cin, k);
        assert_near(&dx, &finite_diff(&x, 0.5, |x| loss(x, &wt, &b)), 1e-12, &format!("dx {what}"));
        let dw = cpu::conv_grad_weight(&x, shape, &g, cout, k);
        assert_near(&dw, &finite_diff(&wt, 0.5, |wt| loss(&x, wt, &b)), 1e-12, &format!("dW {what}"));
        let db = cpu::conv_grad_bias(&g, [n, cout, h, w]);
        assert_near(&db, &finite_diff(&b, 0.5, |b| loss(&x, &wt, b)), 1e-12, &format!("db {what}"));
    }
}

fn conv_fixture(case: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let path = fixture(&format!("grad_conv_{case}_{name}.npy"));
    npy::read_f32(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn matches_pytorch_autograd() {
    let _gpu = serial();
    for case in ["3x3", "1x1"] {
        let (xs, x) = conv_fixture(case, "x");
        let (ws, wt) = conv_fixture(case, "w");
        let (_, b) = conv_fixture(case, "b");
        let (_, g) = conv_fixture(case, "g");
        let (_, want_dx) = conv_fixture(case, "dx");
        let (_, want_dw) = conv_fixture(case, "dw");
        let (_, want_db) = conv_fixture(case, "db");
        let [n, cin, h, w] = [xs[0], xs[1], xs[2], xs[3]];
        let (cout, k) = (ws[0], ws[2]);
        assert_eq!(b.len(), cout);

        // The CPU references agree with PyTorch.
        let what = format!("CPU reference vs PyTorch {case}");
        let (x64, w64, g64) = (f64s(&x), f64s(&wt), f64s(&g));
        check(&f32s(&cpu::conv_grad_input(&g64, [n, cout, h, w], &w64, cin, k)), &want_dx, Precision::F32, &what);
        check(&f32s(&cpu::conv_grad_weight(&x64, [n, cin, h, w], &g64, cout, k)), &want_dw, Precision::F32, &what);
        check(&f32s(&cpu::conv_grad_bias(&g64, [n, cout, h, w])), &want_db, Precision::F32, &what);

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
            d.extend(conv::conv_grad_weight_in(gpu, &cw, xt.view(), gt.view(), &dw.buffer, false, None).unwrap());
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
