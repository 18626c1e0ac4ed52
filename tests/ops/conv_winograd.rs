//! The Winograd F(2x2, 3x3) forward (`ops::conv::winograd`): its f64 CPU algorithm against the
//! direct reference, and the GPU kernel against the direct reference on every adapter and
//! precision (odd sizes, partial edge tiles, channel views, ReLU and affine epilogues).

use crate::common::{Rng, assert_close, f32s, f64s, round_to, slice_channels, targets, tol};
use psi_gpu::gpu::Tensor;
use psi_gpu::ops::conv::reference as direct;
use psi_gpu::ops::conv::winograd::{self, WinogradWeights, reference as cpu};

/// (n, cin, cout, h, w): odd sizes and 1-pixel edges (partial 2x2 tiles), channel counts that are
/// not multiples of 4 or 16, more tiles than one workgroup, batch 2.
const SHAPES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 5, 7, 9),
    (2, 5, 6, 9, 11),
    (1, 13, 19, 19, 35),
    (1, 1, 1, 1, 1),
    (1, 5, 3, 1, 40),
    (1, 6, 7, 37, 1),
    (1, 17, 33, 16, 16),
];

/// Weights on a 1/64 grid in [-0.5, 0.5]: their transform `G g G^T` (sums of quarters of them) is
/// exact in f16 too, so f16 storage rounds only the activations.
fn grid_weights(rng: &mut Rng, len: usize) -> Vec<f32> {
    rng.vec(len, -32.0, 32.0).iter().map(|v| v.round() / 64.0).collect()
}

#[test]
fn reference_equals_the_direct_reference() {
    let mut rng = Rng::new(21);
    for &(n, cin, cout, h, w) in &SHAPES {
        let shape = [n, cin, h, w];
        let x = f64s(&rng.vec(n * cin * h * w, -1.0, 1.0));
        let wt = f64s(&rng.vec(cout * cin * 9, -0.5, 0.5));
        let (scale, shift) = (f64s(&rng.vec(cout, 0.5, 1.5)), f64s(&rng.vec(cout, -0.2, 0.2)));
        for relu in [false, true] {
            let got = cpu::conv_winograd(&x, shape, &wt, cout, &scale, &shift, relu);
            let want = direct::conv(&x, shape, &wt, [cout, 3], &scale, &shift, relu);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-12, "{shape:?} -> {cout} relu={relu}: differs by {worst:e}");
        }
    }
}

#[test]
fn weight_transform_is_g_g_gt() {
    // A delta at the centre tap: U = column 1 of G times row 1 of G^T = [0 ½ −½ 0] ⊗ [0 ½ −½ 0].
    let mut g = [0.0; 9];
    g[4] = 1.0;
    let col = [0.0, 0.5, -0.5, 0.0];
    let want: Vec<f64> = (0..16).map(|i| col[i / 4] * col[i % 4]).collect();
    assert_eq!(cpu::transform_weight(&g).to_vec(), want);
}

#[test]
fn winograd_matches_direct_reference() {
    let mut rng = Rng::new(22);
    for (gpu, p) in targets() {
        for &(n, cin, cout, h, w) in &SHAPES {
            // Read from channels [2, 2 + cin) of a wider tensor; write into channels [1, 1 + cout).
            let (ict, oct) = (cin + 3, cout + 2);
            let x_all = round_to(p, &rng.vec(n * ict * h * w, -1.0, 1.0));
            let wt = grid_weights(&mut rng, cout * cin * 9);
            let scale = rng.vec(cout, 0.5, 1.5);
            let shift = rng.vec(cout, -0.2, 0.2);
            let xin = slice_channels(&x_all, [n, ict, h, w], 2, cin);
            for relu in [false, true] {
                let x = Tensor::from_f32(gpu, [n, ict, h, w], p, &x_all).unwrap();
                let y = Tensor::from_f32(gpu, [n, oct, h, w], p, &vec![7.0; n * oct * h * w]).unwrap();
                let ww = WinogradWeights::new(gpu, p, &wt, [cout, cin], &scale, &shift, relu).unwrap();
                let d = winograd::conv_winograd(gpu, &ww, x.channels(2, cin), y.channels(1, cout)).unwrap();
                gpu.run(&[&d]).unwrap();
                let got = y.to_f32(gpu).unwrap();
                let (s, t) = (f64s(&scale), f64s(&shift));
                let want = f32s(&direct::conv(&f64s(&xin), [n, cin, h, w], &f64s(&wt), [cout, 3], &s, &t, relu));
                let what = format!("winograd {} {p} n{n} {cin}->{cout} {h}x{w} relu={relu}", gpu.describe());
                assert_close(&slice_channels(&got, [n, oct, h, w], 1, cout), &want, &tol(p), &what);
                for (off, c) in [(0, 1), (1 + cout, 1)] {
                    let outside = slice_channels(&got, [n, oct, h, w], off, c);
                    assert!(outside.iter().all(|&v| v == 7.0), "{what}: wrote outside view");
                }
            }
        }
    }
}

#[test]
fn winograd_rejects_mismatched_views() {
    let (gpu, p) = targets()[0];
    assert!(WinogradWeights::new(gpu, p, &[0.0; 17], [2, 1], &[1.0; 2], &[0.0; 2], false).is_err());
    let ww = WinogradWeights::new(gpu, p, &[0.0; 18], [2, 1], &[1.0; 2], &[0.0; 2], false).unwrap();
    let x = Tensor::new(gpu, [1, 1, 5, 5], p, "x").unwrap();
    let y = Tensor::new(gpu, [1, 2, 5, 5], p, "y").unwrap();
    let small = Tensor::new(gpu, [1, 2, 4, 5], p, "small").unwrap();
    assert!(winograd::conv_winograd(gpu, &ww, x.view(), y.view()).is_ok());
    assert!(winograd::conv_winograd(gpu, &ww, y.view(), x.view()).is_err());
    assert!(winograd::conv_winograd(gpu, &ww, x.view(), small.view()).is_err());
}

#[test]
fn multiply_counts() {
    // 9 per pixel direct; 16 per 2x2 tile (a 3 x 3 image has 4 tiles).
    assert_eq!(winograd::multiplies(2, 8, 16, 128, 128), [9.0 * 2.0 * 128.0 * 16384.0, 4.0 * 2.0 * 128.0 * 16384.0]);
    assert_eq!(winograd::multiplies(1, 1, 1, 3, 3), [81.0, 64.0]);
}
