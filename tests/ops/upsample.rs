//! Bilinear x2 upsampling + pad (`ops::upsample`): the forward and the backward against the f64
//! CPU references on random shapes (exact, odd pads, crops, 1-pixel inputs) through channel views
//! with accumulation, on every adapter and precision; the reference backward against finite
//! differences (it is the adjoint); and against PyTorch's gradients
//! (tests/fixtures/grad_layers_upsample.safetensors, made by make_grad_layers_fixtures.py).

use crate::check::{Slot, assert_near, dot, finite_diff, random_tensor, run, shape4, tensors};
use crate::common::{Rng, assert_close, f32s, f64s, round_to, slice_channels, targets, tol};
use psi_gpu::gpu::{Precision, Tensor};
use psi_gpu::ops::upsample::{self, reference as cpu};

#[test]
fn upsample_pad_matches_reference() {
    let mut rng = Rng::new(4);
    // (n, c, h, w, out_h, out_w): exact, +1 pads (odd skips), 1-pixel inputs, +3 pads, crops.
    let cases =
        [(1, 3, 4, 5, 8, 10), (2, 2, 7, 3, 15, 7), (1, 1, 1, 1, 2, 3), (1, 5, 6, 6, 15, 12), (1, 2, 5, 4, 9, 6)];
    for (gpu, p) in targets() {
        for &(n, c, h, w, oh, ow) in &cases {
            let x = round_to(p, &rng.vec(n * c * h * w, -1.0, 1.0));
            let xt = Tensor::from_f32(gpu, [n, c, h, w], p, &x).unwrap();
            // Write into channels [1, 1 + c) of a (c + 1)-channel concat buffer.
            let yt = Tensor::from_f32(gpu, [n, c + 1, oh, ow], p, &vec![5.0; n * (c + 1) * oh * ow]).unwrap();
            gpu.run(&[&upsample::upsample2x_pad(gpu, xt.view(), yt.channels(1, c)).unwrap()]).unwrap();
            let got = yt.to_f32(gpu).unwrap();
            let want = f32s(&cpu::upsample2x_pad(&f64s(&x), [n, c, h, w], oh, ow));
            let what = format!("upsample {p} {n}x{c}x{h}x{w} -> {oh}x{ow}");
            assert_close(&slice_channels(&got, [n, c + 1, oh, ow], 1, c), &want, &tol(p), &what);
            assert!(
                slice_channels(&got, [n, c + 1, oh, ow], 0, 1).iter().all(|&v| v == 5.0),
                "{what}: wrote outside view"
            );
        }
    }
}

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
            let (dy_all, dy) = random_tensor(gpu, p, &mut rng, ds, [-1.0, 1.0]);
            let dx = Slot::new(gpu, p, &mut rng, gs, 1, c);
            run(gpu, &[upsample::upsample2x_pad_backward(gpu, dy.channels(2, c), dx.view(), acc).unwrap()]);
            let want =
                f32s(&cpu::upsample2x_pad_backward(&f64s(&slice_channels(&dy_all, ds, 2, c)), [n, c, h, w], oh, ow));
            let what = format!("upsample backward {} {p} {n}x{c}x{h}x{w} from {oh}x{ow} acc={acc}", gpu.describe());
            dx.check(gpu, &want, acc, p, &what);
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
        let dx = cpu::upsample2x_pad_backward(&dy, shape, oh, ow);
        // Linear map: central differences are exact up to rounding for any step.
        let fd = finite_diff(&x, 0.5, |x| dot(&cpu::upsample2x_pad(x, shape, oh, ow), &dy));
        assert_near(&dx, &fd, 1e-12, &format!("upsample {shape:?} -> {oh}x{ow}"));
    }
}

#[test]
fn upsample_backward_matches_pytorch() {
    let fx = tensors("grad_layers_upsample.safetensors");
    for (gpu, p) in targets() {
        for case in ["case0.", "case1.", "case2.", "case3."] {
            let (ds, dyv) = &fx[&format!("{case}dy")];
            let (xs, want) = &fx[&format!("{case}dx")];
            let dy = Tensor::from_f32(gpu, shape4(ds), p, dyv).unwrap();
            let dx = Tensor::new(gpu, shape4(xs), p, "dx").unwrap();
            run(gpu, &[upsample::upsample2x_pad_backward(gpu, dy.view(), dx.view(), false).unwrap()]);
            let what = format!("upsample backward vs pytorch {} {p} {case}", gpu.describe());
            assert_close(&dx.to_f32(gpu).unwrap(), want, &tol(p), &what);
            let cpu = cpu::upsample2x_pad_backward(&f64s(dyv), shape4(xs), ds[2], ds[3]);
            assert_close(&f32s(&cpu), want, &tol(Precision::F32), &format!("{what} (CPU reference)"));
        }
    }
}

#[test]
fn bad_shapes_are_rejected() {
    let (gpu, p) = targets()[0];
    let t = |s: [usize; 4]| Tensor::new(gpu, s, p, "t").unwrap();
    // Channel counts that differ between the two sides, and dx aliasing dy.
    let (x, y) = (t([1, 3, 4, 4]), t([1, 4, 8, 8]));
    assert!(upsample::upsample2x_pad(gpu, x.view(), y.view()).is_err());
    assert!(upsample::upsample2x_pad(gpu, x.view(), y.channels(1, 3)).is_ok());
    assert!(upsample::upsample2x_pad_backward(gpu, y.view(), x.view(), false).is_err());
    assert!(upsample::upsample2x_pad_backward(gpu, y.channels(1, 3), x.view(), false).is_ok());
    assert!(upsample::upsample2x_pad_backward(gpu, y.channels(1, 3), y.channels(0, 3), false).is_err());
}
