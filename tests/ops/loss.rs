//! The training losses (`psi_gpu::psi::loss`): the GPU against the f64 CPU reference (odd sizes,
//! batch 2, 4 lasers × 4 buckets, smoothness and per-pixel A/B on and off, f32 and f16 storage of
//! h and dL/dh), the reference against finite differences, and both against PyTorch autograd
//! (tests/fixtures/make_loss_adam_fixtures.py).

use crate::common::{Rng, f64s, fixture, gpus, round_to, targets};
use psi_gpu::gpu::Tensor;
use psi_gpu::gpu::{Gpu, Precision};
use psi_gpu::io::npy::read_f32;
use psi_gpu::ops::loss::{Loss, LossValue, PhysicsConfig, ResidualLoss, reference};
use psi_gpu::optim::{LossScaler, ScalerConfig};
use psi_gpu::psi::PsiConfig;

/// A scaler holding `scale` in its GPU buffer.
fn scaler(gpu: &Gpu, scale: f32) -> LossScaler {
    LossScaler::new(gpu, ScalerConfig { init_scale: scale, ..Default::default() }).unwrap()
}

/// Relative 1e-5 in f32, 5e-3 in f16 storage.
fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-5,
        Precision::F16 => 5e-3,
    }
}

/// Every element within `tol · max|want|`, and relative L2 within `tol`.
fn assert_field(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let peak = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let (mut num, mut den) = (0.0, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        assert!(e <= tol * peak, "{what}: element {i}: got {g}, want {w} (peak {peak:e})");
        num += e * e;
        den += w * w;
    }
    let rel = (num / den.max(1e-300)).sqrt();
    assert!(rel <= tol, "{what}: relative L2 {rel:e} over {tol:e}");
}

fn assert_value(got: f32, want: f64, tol: f64, what: &str) {
    let e = (got as f64 - want).abs();
    assert!(e <= tol * want.abs().max(1e-12), "{what}: got {got}, want {want} (rel {:e})", e / want.abs());
}

/// A frame of `n` images from heights near `heights` (perturbed by 0.5 µm), with per-pixel
/// offset and modulation and uniform noise: residuals of the loss are large and varied.
fn make_frame(rng: &mut Rng, heights: &[f32], [n, h, w]: [usize; 3], cfg: &PhysicsConfig) -> Vec<f32> {
    let (nl, nb, hw) = (cfg.lasers(), cfg.psi.buckets, h * w);
    let tau = 2.0 * std::f64::consts::PI;
    let mut out = vec![0f32; n * nl * nb * hw];
    for img in 0..n {
        for px in 0..hw {
            let ht = heights[img * hw + px] as f64 + rng.uniform(-0.5, 0.5) as f64;
            let a = rng.uniform(80.0, 170.0) as f64;
            let b = rng.uniform(30.0, 100.0) as f64;
            for l in 0..nl {
                for k in 0..nb {
                    let th = 2.0 * tau * ht / cfg.psi.wavelengths[l] as f64 + tau * k as f64 / nb as f64;
                    let v = a + b * th.cos() + rng.uniform(-3.0, 3.0) as f64;
                    out[((img * nl + l) * nb + k) * hw + px] = (v / cfg.frame_scale as f64) as f32;
                }
            }
        }
    }
    out
}

/// Run the physics loss backward on the GPU: (value, gradient).
fn gpu_physics(
    gpu: &Gpu,
    p: Precision,
    cfg: &PhysicsConfig,
    heights: &[f32],
    frame: &[f32],
    [n, h, w]: [usize; 3],
    scale: &LossScaler,
) -> (LossValue, Vec<f32>) {
    let ht = Tensor::from_f32(gpu, [n, 1, h, w], p, heights).unwrap();
    let fr = Tensor::from_f32(gpu, [n, cfg.channels(), h, w], Precision::F32, frame).unwrap();
    let grad = Tensor::new(gpu, [n, 1, h, w], p, "grad").unwrap();
    let loss = Loss::physics(gpu, cfg, &ht, &fr, Some(&grad), scale.scale_buffer()).unwrap();
    let value = loss.evaluate(gpu, true).unwrap();
    (value, grad.to_f32(gpu).unwrap())
}

/// The f64 reference of the physics loss of a `[n, h, w]` height map against an f32 frame.
fn physics_ref(
    heights: &[f64],
    frame: &[f32],
    [n, h, w]: [usize; 3],
    cfg: &PhysicsConfig,
) -> (reference::Value, Vec<f64>) {
    reference::physics(heights, &f64s(frame), [n, 1, h, w], cfg)
}

fn check_value(got: &LossValue, want: &reference::Value, tol: f64, what: &str) {
    assert_value(got.total, want.total, tol, &format!("{what}: total"));
    assert_value(got.data, want.data, tol, &format!("{what}: data"));
    if want.laplacian != 0.0 {
        assert_value(got.laplacian, want.laplacian, tol, &format!("{what}: laplacian"));
    }
    if want.smoothness != 0.0 {
        assert_value(got.smoothness, want.smoothness, tol, &format!("{what}: smoothness"));
    } else {
        assert_eq!(got.smoothness, 0.0, "{what}: smoothness");
    }
}

#[test]
fn physics_matches_reference() {
    let default = PhysicsConfig::default();
    let three = PhysicsConfig {
        psi: PsiConfig { wavelengths: vec![4.2, 5.1, 6.3], buckets: 5, a: 100.0, b: 60.0, ..Default::default() },
        frame_scale: 1.0 / 255.0,
        ..Default::default()
    };
    // (config, per-pixel A/B, smoothness, [n, h, w])
    let cases: [(&PhysicsConfig, bool, f32, [usize; 3]); 7] = [
        (&default, false, 0.0, [2, 7, 13]),
        (&default, false, 0.05, [2, 9, 11]),
        (&default, true, 0.0, [2, 9, 11]),
        (&default, true, 0.02, [2, 5, 3]),
        (&default, false, 0.1, [1, 1, 1]),
        (&default, true, 0.01, [2, 3, 150]),
        (&three, true, 0.01, [1, 17, 19]),
    ];
    let mut rng = Rng::new(5);
    for (gpu, p) in targets() {
        let scale = scaler(gpu, 1.0);
        for &(base, per_pixel, smooth, shape) in &cases {
            let cfg = PhysicsConfig { per_pixel_ab: per_pixel, smoothness: smooth, ..base.clone() };
            let [n, h, w] = shape;
            // Heights up to ±95 µm: the turns arithmetic must keep the phase accurate there.
            let heights = round_to(p, &rng.vec(n * h * w, -95.0, 95.0));
            let frame = make_frame(&mut rng, &heights, shape, &cfg);
            let (value, grad) = gpu_physics(gpu, p, &cfg, &heights, &frame, shape, &scale);
            let h64 = f64s(&heights);
            let (want, want_grad) = physics_ref(&h64, &frame, shape, &cfg);
            let what = format!("{} {p} {shape:?} L{} per_pixel={per_pixel} w_s={smooth}", gpu.describe(), cfg.lasers());
            // Values are computed in f32 from the stored heights in either precision.
            check_value(&value, &want, 1e-5, &what);
            assert_field(&grad, &want_grad, tolerance(p), &format!("{what}: gradient"));
        }
    }
}

#[test]
fn per_pixel_ab_matches_reference() {
    let cfg = PhysicsConfig { per_pixel_ab: true, ..Default::default() };
    let mut rng = Rng::new(8);
    for gpu in gpus() {
        let shape = [2, 5, 7];
        let heights = rng.vec(70, -50.0, 50.0);
        let frame = make_frame(&mut rng, &heights, shape, &cfg);
        let ht = Tensor::from_f32(gpu, [2, 1, 5, 7], Precision::F32, &heights).unwrap();
        let fr = Tensor::from_f32(gpu, [2, 16, 5, 7], Precision::F32, &frame).unwrap();
        let scale = scaler(gpu, 1.0);
        let loss = Loss::physics(gpu, &cfg, &ht, &fr, None, scale.scale_buffer()).unwrap();
        gpu.run(&[loss.estimate().unwrap()]).unwrap();
        let got = loss.read_ab(gpu).unwrap().unwrap();
        let want = reference::loss_ab(&f64s(&frame), [2, 16, 5, 7], &cfg);
        assert_field(&got, &want, 1e-6, &format!("{} A/B", gpu.describe()));
    }
}

#[test]
fn reference_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let shape = [2, 4, 5];
    let n = 2 * 4 * 5;
    for (per_pixel, smooth) in [(false, 0.0), (false, 0.07), (true, 0.03)] {
        let cfg = PhysicsConfig { per_pixel_ab: per_pixel, smoothness: smooth, ..Default::default() };
        let heights = rng.vec(n, -60.0, 60.0);
        let frame = make_frame(&mut rng, &heights, shape, &cfg);
        let h64 = f64s(&heights);
        let (_, grad) = physics_ref(&h64, &frame, shape, &cfg);
        let peak = grad.iter().fold(0f64, |m, v| m.max(v.abs()));
        let step = 1e-5;
        for i in 0..n {
            let mut hp = h64.clone();
            hp[i] += step;
            let mut hm = h64.clone();
            hm[i] -= step;
            let fd = (physics_ref(&hp, &frame, shape, &cfg).0.total - physics_ref(&hm, &frame, shape, &cfg).0.total)
                / (2.0 * step);
            assert!(
                (fd - grad[i]).abs() <= 1e-6 * peak,
                "per_pixel={per_pixel} w_s={smooth} element {i}: finite difference {fd}, analytic {}",
                grad[i]
            );
        }
    }
    // The MSE.
    let pred: Vec<f64> = rng.vec(30, -5.0, 5.0).iter().map(|&v| v as f64).collect();
    let truth = rng.vec(30, -5.0, 5.0);
    let truth = f64s(&truth);
    let (_, grad) = reference::mse(&pred, &truth);
    for i in 0..30 {
        let (mut hp, mut hm) = (pred.clone(), pred.clone());
        hp[i] += 1e-4;
        hm[i] -= 1e-4;
        let fd = (reference::mse(&hp, &truth).0 - reference::mse(&hm, &truth).0) / 2e-4;
        assert!((fd - grad[i]).abs() <= 1e-9, "mse element {i}: {fd} vs {}", grad[i]);
    }
}

/// Residual-loss inputs: U-Net outputs from deep in tanh's tails to 0, classical heights near the
/// truth (a sixth of them beyond the cutoff), and every 7th classical height and every 11th
/// truth NaN (they add nothing); pixel weights in [0, 3).
fn residual_inputs(rng: &mut Rng, len: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let u = rng.vec(len, -6.0, 6.0);
    let truth: Vec<f32> =
        rng.vec(len, -15.0, 15.0).iter().enumerate().map(|(i, &t)| if i % 11 == 3 { f32::NAN } else { t }).collect();
    let hc = truth
        .iter()
        .enumerate()
        .map(|(i, &t)| if i % 7 == 2 { f32::NAN } else { t + rng.uniform(-0.6, 0.6) })
        .collect();
    (u, hc, truth, rng.vec(len, 0.0, 3.0))
}

#[test]
fn residual_loss_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(21);
    let (bound, cutoff) = (0.1, 0.5);
    // The reference's gradient through bound·tanh against central differences.
    let (u, hc, truth, wt) = residual_inputs(&mut rng, 40);
    let (u, hc, truth, wt) = (f64s(&u), f64s(&hc), f64s(&truth), f64s(&wt));
    let (value, grad) = reference::residual(&u, &hc, &truth, &wt, bound, cutoff);
    assert!(value > 0.0 && value.is_finite());
    let peak = grad.iter().fold(0f64, |m, v| m.max(v.abs()));
    for i in 0..u.len() {
        let (mut up, mut um) = (u.clone(), u.clone());
        up[i] += 1e-5;
        um[i] -= 1e-5;
        let fd = (reference::residual(&up, &hc, &truth, &wt, bound, cutoff).0
            - reference::residual(&um, &hc, &truth, &wt, bound, cutoff).0)
            / 2e-5;
        assert!((fd - grad[i]).abs() <= 1e-7 * peak, "element {i}: finite difference {fd}, analytic {}", grad[i]);
        if !(hc[i].is_finite() && truth[i].is_finite() && (hc[i] - truth[i]).abs() < cutoff) {
            assert_eq!(grad[i], 0.0, "element {i}: a NaN or cut-off pixel has no gradient");
        } else {
            assert!(grad[i] != 0.0, "element {i}: a supervised pixel has a gradient");
        }
    }
    // The GPU against the reference, f32 and f16 storage of u and dL/du.
    let constants = ResidualLoss { bound: bound as f32, cutoff: cutoff as f32 };
    for (gpu, p) in targets() {
        let scale = scaler(gpu, 1.0);
        for shape in [[2, 7, 13], [1, 3, 200]] {
            let [n, h, w] = shape;
            let (u, hc, truth, wt) = residual_inputs(&mut rng, n * h * w);
            let u = round_to(p, &u);
            let ut = Tensor::from_f32(gpu, [n, 1, h, w], p, &u).unwrap();
            let ct = Tensor::from_f32(gpu, [n, 1, h, w], Precision::F32, &hc).unwrap();
            let tt = Tensor::from_f32(gpu, [n, 1, h, w], Precision::F32, &truth).unwrap();
            let wtt = Tensor::from_f32(gpu, [n, 1, h, w], Precision::F32, &wt).unwrap();
            let grad = Tensor::new(gpu, [n, 1, h, w], p, "grad").unwrap();
            let loss = Loss::residual(gpu, &ut, &ct, &tt, &wtt, &constants, Some(&grad), scale.scale_buffer()).unwrap();
            let value = loss.evaluate(gpu, true).unwrap();
            let (want, want_grad) =
                reference::residual(&f64s(&u), &f64s(&hc), &f64s(&truth), &f64s(&wt), bound, cutoff);
            let what = format!("{} {p} residual {shape:?}", gpu.describe());
            assert_value(value.total, want, 1e-5, &what);
            assert_field(&grad.to_f32(gpu).unwrap(), &want_grad, tolerance(p), &format!("{what}: gradient"));
        }
        // Shapes and the bound are checked.
        let t = |c: usize, p: Precision| Tensor::new(gpu, [1, c, 4, 4], p, "t").unwrap();
        let (u, f, sc) = (t(1, p), t(1, Precision::F32), scale.scale_buffer());
        let r = |bound: f32, cutoff: f32| ResidualLoss { bound, cutoff };
        assert!(Loss::residual(gpu, &u, &t(2, Precision::F32), &f, &f, &constants, None, sc).is_err());
        assert!(Loss::residual(gpu, &u, &f, &f, &t(2, Precision::F32), &constants, None, sc).is_err());
        assert!(Loss::residual(gpu, &u, &f, &f, &f, &r(0.0, 0.5), None, sc).is_err());
        assert!(Loss::residual(gpu, &u, &f, &f, &f, &r(f32::NAN, 0.5), None, sc).is_err());
        assert!(Loss::residual(gpu, &u, &f, &f, &f, &r(0.1, 0.0), None, sc).is_err());
    }
}

#[test]
fn laplacian_reference_is_self_adjoint() {
    let mut rng = Rng::new(4);
    let shape = [2, 1, 6, 7];
    let a: Vec<f64> = rng.vec(84, -1.0, 1.0).iter().map(|&v| v as f64).collect();
    let b: Vec<f64> = rng.vec(84, -1.0, 1.0).iter().map(|&v| v as f64).collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let (la, lb) = (reference::laplacian(&a, shape), reference::laplacian(&b, shape));
    assert!((dot(&la, &b) - dot(&a, &lb)).abs() < 1e-12);
}

fn load(name: &str) -> Vec<f32> {
    read_f32(&fixture(name)).unwrap().1
}

#[test]
fn physics_matches_pytorch() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("train_loss_values.json")).unwrap()).unwrap();
    let wavelengths: Vec<f32> =
        json["wavelengths"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let heights = load("train_loss_h.npy");
    let frame = load("train_loss_frame.npy");
    let shape = [2, 9, 11];
    for case in ["const", "pixel"] {
        let c = &json[case];
        let cfg = PhysicsConfig {
            psi: PsiConfig {
                wavelengths: wavelengths.clone(),
                buckets: json["buckets"].as_u64().unwrap() as usize,
                a: c["a"].as_f64().unwrap() as f32,
                b: c["b"].as_f64().unwrap() as f32,
                ..Default::default()
            },
            per_pixel_ab: c["per_pixel_ab"].as_bool().unwrap(),
            smoothness: c["smoothness"].as_f64().unwrap() as f32,
            frame_scale: 1.0,
        };
        let want_grad: Vec<f64> = load(&format!("train_loss_grad_{case}.npy")).iter().map(|&v| v as f64).collect();
        let want = reference::Value {
            total: c["total"].as_f64().unwrap(),
            data: c["data"].as_f64().unwrap(),
            smoothness: c["smoothness"].as_f64().unwrap() * c["laplacian"].as_f64().unwrap(),
            laplacian: c["laplacian"].as_f64().unwrap(),
        };
        // The CPU reference agrees with torch.autograd (float64) up to w_s held as f32 here
        // (relative 1.5e-8) and the fixture's f32 gradient.
        let h64 = f64s(&heights);
        let (cpu, cpu_grad) = physics_ref(&h64, &frame, shape, &cfg);
        assert!((cpu.data - want.data).abs() <= 1e-12 * want.data, "{case}: cpu {cpu:?} vs torch {want:?}");
        assert!((cpu.laplacian - want.laplacian).abs() <= 1e-12 * want.laplacian, "{case}: laplacian");
        assert!((cpu.total - want.total).abs() <= 1e-8 * want.total, "{case}: cpu {cpu:?} vs torch {want:?}");
        assert_field(&cpu_grad.iter().map(|&v| v as f32).collect::<Vec<_>>(), &want_grad, 1e-7, case);
        for gpu in gpus() {
            let scale = scaler(gpu, 1.0);
            let (value, grad) = gpu_physics(gpu, Precision::F32, &cfg, &heights, &frame, shape, &scale);
            let what = format!("{} torch {case}", gpu.describe());
            check_value(&value, &want, 1e-5, &what);
            assert_field(&grad, &want_grad, 1e-5, &format!("{what}: gradient"));
        }
    }
}

#[test]
fn mse_matches_reference_and_pytorch() {
    let mut rng = Rng::new(9);
    for (gpu, p) in targets() {
        let scale = scaler(gpu, 1.0);
        for shape in [[2, 7, 13], [1, 1, 1], [2, 3, 200]] {
            let [n, h, w] = shape;
            let pred = round_to(p, &rng.vec(n * h * w, -90.0, 90.0));
            let truth: Vec<f32> = pred.iter().map(|&v| v + rng.uniform(-2.0, 2.0)).collect();
            let pt = Tensor::from_f32(gpu, [n, 1, h, w], p, &pred).unwrap();
            let tt = Tensor::from_f32(gpu, [n, 1, h, w], Precision::F32, &truth).unwrap();
            let grad = Tensor::new(gpu, [n, 1, h, w], p, "grad").unwrap();
            let loss = Loss::mse(gpu, &pt, &tt, Some(&grad), scale.scale_buffer()).unwrap();
            let value = loss.evaluate(gpu, true).unwrap();
            let p64 = f64s(&pred);
            let (want, want_grad) = reference::mse(&p64, &f64s(&truth));
            let what = format!("{} {p} mse {shape:?}", gpu.describe());
            assert_value(value.total, want, 1e-5, &what);
            assert_value(value.data, want, 1e-5, &what);
            assert_eq!((value.smoothness, value.laplacian), (0.0, 0.0), "{what}");
            assert_field(&grad.to_f32(gpu).unwrap(), &want_grad, tolerance(p), &format!("{what}: gradient"));
        }
    }
    // PyTorch's F.mse_loss and its gradient.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("train_loss_values.json")).unwrap()).unwrap();
    let (pred, truth) = (load("train_loss_h.npy"), load("train_loss_truth.npy"));
    let want_grad: Vec<f64> = load("train_loss_grad_mse.npy").iter().map(|&v| v as f64).collect();
    for gpu in gpus() {
        let scale = scaler(gpu, 1.0);
        let pt = Tensor::from_f32(gpu, [2, 1, 9, 11], Precision::F32, &pred).unwrap();
        let tt = Tensor::from_f32(gpu, [2, 1, 9, 11], Precision::F32, &truth).unwrap();
        let grad = Tensor::new(gpu, [2, 1, 9, 11], Precision::F32, "grad").unwrap();
        let loss = Loss::mse(gpu, &pt, &tt, Some(&grad), scale.scale_buffer()).unwrap();
        let value = loss.evaluate(gpu, true).unwrap();
        assert_value(value.total, json["mse"].as_f64().unwrap(), 1e-5, "torch mse");
        assert_field(&grad.to_f32(gpu).unwrap(), &want_grad, 1e-5, "torch mse gradient");
    }
}

#[test]
fn gradient_carries_scale_and_weight() {
    let cfg = PhysicsConfig { smoothness: 0.05, per_pixel_ab: true, ..Default::default() };
    let mut rng = Rng::new(12);
    let shape = [2, 6, 9];
    let heights = rng.vec(108, -40.0, 40.0);
    let frame = make_frame(&mut rng, &heights, shape, &cfg);
    let h64 = f64s(&heights);
    let (want, want_grad) = physics_ref(&h64, &frame, shape, &cfg);
    for (gpu, p) in targets() {
        let heights = round_to(p, &heights);
        let ht = Tensor::from_f32(gpu, [2, 1, 6, 9], p, &heights).unwrap();
        let fr = Tensor::from_f32(gpu, [2, 16, 6, 9], Precision::F32, &frame).unwrap();
        let grad = Tensor::new(gpu, [2, 1, 6, 9], p, "grad").unwrap();
        let sc = scaler(gpu, 1024.0);
        let mut loss = Loss::physics(gpu, &cfg, &ht, &fr, Some(&grad), sc.scale_buffer()).unwrap();
        loss.set_grad_weight(gpu, 0.25);
        let value = loss.evaluate(gpu, true).unwrap();
        let what = format!("{} {p} scaled", gpu.describe());
        if p == Precision::F32 {
            // The value is not scaled.
            check_value(&value, &want, 1e-5, &what);
            let scaled: Vec<f64> = want_grad.iter().map(|g| g * 256.0).collect();
            assert_field(&grad.to_f32(gpu).unwrap(), &scaled, 1e-5, &what);
        } else {
            let h64 = f64s(&heights);
            let scaled: Vec<f64> = physics_ref(&h64, &frame, shape, &cfg).1.iter().map(|g| g * 256.0).collect();
            assert_field(&grad.to_f32(gpu).unwrap(), &scaled, 5e-3, &what);
        }
        // Forward alone gives the same value and leaves the gradient alone.
        grad.upload(gpu, &vec![7.0; 108]);
        let mut d: Vec<_> = loss.estimate().into_iter().collect();
        d.extend(loss.forward());
        gpu.run(&d).unwrap();
        assert_eq!(loss.read(gpu).unwrap(), value, "{what}: forward value");
        assert!(grad.to_f32(gpu).unwrap().iter().all(|&v| v == 7.0), "{what}: forward wrote the gradient");
        // Changing the scale on the GPU changes the gradient without rebuilding anything.
        let mut sc = sc;
        sc.set_scale(gpu, 2.0);
        loss.evaluate(gpu, true).unwrap();
        let g2 = grad.to_f32(gpu).unwrap();
        let (_, g_ref) = physics_ref(&f64s(&heights), &frame, shape, &cfg);
        let half: Vec<f64> = g_ref.iter().map(|g| g * 0.5).collect();
        assert_field(&g2, &half, tolerance(p), &format!("{what}: scale 2, weight 0.25"));
    }
}

#[test]
fn bad_inputs_are_errors() {
    let gpu = &gpus()[0];
    let sc = scaler(gpu, 1.0);
    let ht = Tensor::new(gpu, [1, 1, 4, 5], Precision::F32, "h").unwrap();
    let fr = Tensor::new(gpu, [1, 16, 4, 5], Precision::F32, "frame").unwrap();
    let cfg = PhysicsConfig::default();
    let wrong = Tensor::new(gpu, [1, 12, 4, 5], Precision::F32, "frame").unwrap();
    assert!(Loss::physics(gpu, &cfg, &ht, &wrong, None, sc.scale_buffer()).is_err());
    let g = Tensor::new(gpu, [1, 1, 4, 4], Precision::F32, "g").unwrap();
    assert!(Loss::physics(gpu, &cfg, &ht, &fr, Some(&g), sc.scale_buffer()).is_err());
    let bad = PhysicsConfig { psi: PsiConfig::with(vec![5.0, -1.0], 4), ..Default::default() };
    assert!(Loss::physics(gpu, &bad, &ht, &fr, None, sc.scale_buffer()).is_err());
    let two = PhysicsConfig { psi: PsiConfig::with(vec![5.0; 8], 2), per_pixel_ab: true, ..Default::default() };
    assert!(Loss::physics(gpu, &two, &ht, &fr, None, sc.scale_buffer()).is_err());
    let loss = Loss::physics(gpu, &cfg, &ht, &fr, None, sc.scale_buffer()).unwrap();
    assert!(loss.backward().is_err(), "backward without a gradient tensor");
    assert!(loss.estimate().is_none());
    let truth16 = Tensor::new(gpu, [1, 1, 4, 5], Precision::F32, "t").unwrap();
    let three = Tensor::new(gpu, [1, 3, 4, 5], Precision::F32, "t").unwrap();
    assert!(Loss::mse(gpu, &three, &truth16, None, sc.scale_buffer()).is_err());
}
