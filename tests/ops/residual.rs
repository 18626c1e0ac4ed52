//! The residual model's kernels (`ops::residual`): the U-Net input (buckets + features of the
//! classical solution) and the bounded sum, against the CPU reference on every adapter and
//! precision, with NaN heights and a non-finite bucket (which must come out as 0 in the input,
//! and NaN heights as NaN in the output).

use crate::common::{Rng, Tol, assert_close, f32s, f64s, round_to, targets, tol};
use psi_gpu::gpu::{Precision, Tensor};
use psi_gpu::ops::residual::{self, Feature, reference as cpu};

const HALF: f32 = 2.5;

/// `[n, 2, h, w]` classical output: heights over ±60 µm (every 7th NaN) and contrasts (one NaN).
fn classical(rng: &mut Rng, n: usize, hw: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * 2 * hw);
    for _ in 0..n {
        v.extend((0..hw).map(|i| if i % 7 == 3 { f32::NAN } else { rng.uniform(-60.0, 60.0) }));
        v.extend(rng.vec(hw, 0.0, 1.0));
    }
    v[2 * hw - 1] = f32::NAN;
    v
}

#[test]
fn features_match_the_reference() {
    let mut rng = Rng::new(15);
    let features = [Feature::Valid, Feature::SinHeight, Feature::Contrast, Feature::CosHeight];
    for (gpu, p) in targets() {
        for (n, c, h, w, cls_c) in [(1, 3, 5, 7, 2), (2, 16, 9, 30, 2), (3, 4, 4, 4, 1)] {
            let hw = h * w;
            let mut buckets = rng.vec(n * c * hw, 0.0, 1.0);
            buckets[5] = f32::NAN;
            buckets[n * c * hw - 2] = f32::INFINITY;
            let two = classical(&mut rng, n, hw);
            let cls: Vec<f32> = if cls_c == 2 { two } else { two.chunks(hw).step_by(2).flatten().copied().collect() };
            let bt = Tensor::from_f32(gpu, [n, c, h, w], Precision::F32, &buckets).unwrap();
            let ct = Tensor::from_f32(gpu, [n, cls_c, h, w], Precision::F32, &cls).unwrap();
            let out = Tensor::new(gpu, [n, c + features.len(), h, w], p, "unet input").unwrap();
            let d = residual::features(gpu, &bt, &ct, &features, HALF, &out).unwrap();
            gpu.run(&[&d]).unwrap();
            let want = cpu::features(&f64s(&buckets), [n, c, h, w], &f64s(&cls), cls_c, &features, HALF as f64);
            let got = out.to_f32(gpu).unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{p}: the U-Net input must be finite");
            let what = format!("{} {p} features {n}x{c}x{h}x{w} ({cls_c} classical channels)", gpu.describe());
            // The phase is reduced in f32: heights of 60 µm carry ~4e-6 µm, 1e-5 rad of sine.
            let t = match p {
                Precision::F32 => Tol { rel: 1e-4, abs: 5e-5, l2: 1e-5 },
                Precision::F16 => tol(p),
            };
            assert_close(&got, &round_to(p, &f32s(&want)), &t, &what);
        }
    }
}

#[test]
fn combine_matches_the_reference_and_keeps_nan() {
    let mut rng = Rng::new(16);
    for (gpu, p) in targets() {
        let (n, h, w) = (2, 11, 13);
        let hw = h * w;
        let cls = classical(&mut rng, n, hw);
        // Large |u| too: tanh must saturate to ±1, not overflow.
        let mut u = round_to(p, &rng.vec(n * hw, -3.0, 3.0));
        u[1] = 60.0;
        u[2] = -60.0;
        let ct = Tensor::from_f32(gpu, [n, 2, h, w], Precision::F32, &cls).unwrap();
        let ut = Tensor::from_f32(gpu, [n, 1, h, w], p, &u).unwrap();
        let out = Tensor::new(gpu, [n, 1, h, w], Precision::F32, "out").unwrap();
        let d = residual::combine(gpu, &ct, &ut, 0.1, &out).unwrap();
        gpu.run(&[&d]).unwrap();
        let got = out.to_f32(gpu).unwrap();
        let want = f32s(&cpu::combine(&f64s(&cls), [n, 2, hw], &f64s(&u), 0.1));
        let nan: Vec<bool> = want.iter().map(|v| v.is_nan()).collect();
        assert!(nan.iter().filter(|&&b| b).count() > 10);
        assert_eq!(got.iter().map(|v| v.is_nan()).collect::<Vec<_>>(), nan, "{p}: NaN where the height is");
        let keep = |v: &[f32]| v.iter().zip(&nan).filter(|(_, n)| !**n).map(|(v, _)| *v).collect::<Vec<_>>();
        // The sum is f32 at heights of 60 µm: an ulp is 4e-6 µm.
        let t = Tol { rel: 1e-6, abs: 1e-5, l2: 1e-7 };
        assert_close(&keep(&got), &keep(&want), &t, &format!("{} {p} combine", gpu.describe()));
        let corr: Vec<f32> = (0..n * hw).map(|i| got[i] - cls[(i / hw) * 2 * hw + i % hw]).collect();
        assert!(corr.iter().filter(|v| v.is_finite()).all(|v| v.abs() <= 0.1 + 1e-5), "{p}: bounded");
    }
}
