//! 2x2 max-pooling (`ops::pool`): the forward and the backward against the f64 CPU references on
//! random shapes with odd sizes and ties, through channel views with accumulation, on every adapter
//! and precision; the reference backward against finite differences; and both against PyTorch's
//! gradients (tests/fixtures/grad_layers_pool.safetensors, made by make_grad_layers_fixtures.py).

use crate::check::{Slot, assert_near, dot, finite_diff, random_tensor, run, shape4, tensors};
use crate::common::{Rng, assert_close, f32s, f64s, round_to, slice_channels, targets, tol};
use psi_gpu::gpu::{Precision, Tensor};
use psi_gpu::ops::pool::{self, reference as cpu};

#[test]
fn maxpool_matches_reference() {
    let mut rng = Rng::new(3);
    for (gpu, p) in targets() {
        for &(n, c, h, w) in &[(1, 3, 7, 9), (2, 5, 16, 16), (1, 1, 2, 2), (1, 4, 3, 65), (1, 2, 1, 9)] {
            let ct = c + 2;
            let x_all = round_to(p, &rng.vec(n * ct * h * w, -2.0, 2.0));
            let x = Tensor::from_f32(gpu, [n, ct, h, w], p, &x_all).unwrap();
            let y = Tensor::new(gpu, [n, c, h / 2, w / 2], p, "y").unwrap();
            gpu.run(&[&pool::maxpool2x2(gpu, x.channels(1, c), y.view()).unwrap()]).unwrap();
            let want = f32s(&cpu::maxpool2x2(&f64s(&slice_channels(&x_all, [n, ct, h, w], 1, c)), [n, c, h, w]));
            assert_close(&y.to_f32(gpu).unwrap(), &want, &tol(p), &format!("maxpool {p} {n}x{c}x{h}x{w}"));
        }
    }
}

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
            let (dy_all, dy) = random_tensor(gpu, p, &mut rng, ds, [-1.0, 1.0]);
            let dx = Slot::new(gpu, p, &mut rng, gs, 2, c);
            let x = Tensor::from_f32(gpu, xs, p, &x_all).unwrap();
            run(gpu, &[pool::maxpool2x2_backward(gpu, x.channels(1, c), dy.channels(1, c), dx.view(), acc).unwrap()]);
            let (x64, dy64) = (f64s(&slice_channels(&x_all, xs, 1, c)), f64s(&slice_channels(&dy_all, ds, 1, c)));
            let want = f32s(&cpu::maxpool2x2_backward(&x64, &dy64, [n, c, h, w]));
            let what = format!("maxpool backward {} {p} {n}x{c}x{h}x{w} ties={ties} acc={acc}", gpu.describe());
            dx.check(gpu, &want, acc, p, &what);
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
    let got = cpu::maxpool2x2_backward(&x, &dy, shape);
    let fd = finite_diff(&x, 1e-3, |x| dot(&cpu::maxpool2x2(x, shape), &dy));
    assert_near(&got, &fd, 1e-9, "maxpool dx");
    // Ties go to the first maximum in row-major window order (PyTorch's CPU kernel).
    assert_eq!(cpu::maxpool2x2_backward(&[0.5, 2.0, 2.0, 2.0], &[3.0], [1, 1, 2, 2]), [0.0, 3.0, 0.0, 0.0]);
}

#[test]
fn maxpool_backward_matches_pytorch() {
    let fx = tensors("grad_layers_pool.safetensors");
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
            let cpu = cpu::maxpool2x2_backward(&f64s(xv), &f64s(dyv), shape4(xs));
            assert_close(&f32s(&cpu), want, &tol(Precision::F32), &format!("{what} (CPU reference)"));
        }
    }
}

#[test]
fn bad_shapes_are_rejected() {
    let (gpu, p) = targets()[0];
    let t = |s: [usize; 4]| Tensor::new(gpu, s, p, "t").unwrap();
    // Forward: an output that is not the floored half size.
    assert!(pool::maxpool2x2(gpu, t([1, 2, 8, 8]).view(), t([1, 2, 5, 4]).view()).is_err());
    // Backward: dy of the wrong size, dx aliasing x.
    let x = t([1, 2, 7, 9]);
    let (dy_bad, dy, dx) = (t([1, 2, 4, 4]), t([1, 2, 3, 4]), t([1, 2, 7, 9]));
    assert!(pool::maxpool2x2_backward(gpu, x.view(), dy_bad.view(), dx.view(), false).is_err());
    assert!(pool::maxpool2x2_backward(gpu, x.view(), dy.view(), x.view(), false).is_err());
    assert!(pool::maxpool2x2_backward(gpu, x.view(), dy.view(), dx.view(), false).is_ok());
}
