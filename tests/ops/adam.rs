//! The optimizer (`psi_gpu::optim`): Adam with weight decay, gradient clipping and the dynamic
//! loss scaler on the GPU against the f64 CPU reference and against torch.optim.Adam
//! (tests/fixtures/make_loss_adam_fixtures.py), skipped steps on inf/NaN gradients, scale growth,
//! the flat parameter layout and the learning-rate schedules.

use crate::common::{Rng, fixture, gpus};
use psi_gpu::gpu::{Gpu, Readback};
use psi_gpu::io::npy::read_f32;
use psi_gpu::ops::adam::reference;
use psi_gpu::optim::adam::PARAM_ALIGN;
use psi_gpu::optim::{Adam, AdamConfig, LossScaler, LrSchedule, ParamLayout, Params, ScalerConfig};

/// Per element |got − want| ≤ rel·|want| + floor·max|want|.
fn assert_close(got: &[f32], want: &[f64], rel: f64, floor: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let peak = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let bound = rel * w.abs() + floor * peak;
        assert!((g as f64 - w).abs() <= bound, "{what}: element {i}: got {g}, want {w} (bound {bound:e})");
    }
}

fn layout(shapes: &[Vec<usize>]) -> ParamLayout {
    let mut l = ParamLayout::new();
    for (i, s) in shapes.iter().enumerate() {
        l.push(&format!("p{i}"), s);
    }
    l
}

fn scaler(gpu: &Gpu, scale: Option<f32>) -> LossScaler {
    match scale {
        Some(s) => LossScaler::new(gpu, ScalerConfig { init_scale: s, ..Default::default() }).unwrap(),
        None => LossScaler::disabled(gpu),
    }
}

/// Random flat values with zero padding.
fn flat(rng: &mut Rng, layout: &ParamLayout, lo: f32, hi: f32) -> Vec<f32> {
    let tensors: Vec<Vec<f32>> = layout.entries().iter().map(|e| rng.vec(e.len, lo, hi)).collect();
    layout.pack(&tensors.iter().map(|t| t.as_slice()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn adam_matches_reference() {
    let shapes = vec![vec![3, 5, 3, 3], vec![7], vec![1], vec![33, 4], vec![2, 2, 2, 2]];
    // (config, loss scale (None: scaler disabled), schedule)
    let cases = [
        (AdamConfig::default(), None, LrSchedule::Constant),
        (
            AdamConfig { lr: 3e-3, weight_decay: 0.05, max_grad_norm: Some(0.3), ..Default::default() },
            Some(65536.0),
            LrSchedule::Exponential { gamma: 0.9 },
        ),
        // β1 < 0.5 takes torch.lerp's other branch; the clipping norm is never reached.
        (
            AdamConfig { lr: 1e-2, betas: (0.3, 0.9), weight_decay: 0.01, max_grad_norm: Some(100.0), eps: 1e-6 },
            Some(1024.0),
            LrSchedule::Step { step_size: 2, gamma: 0.5 },
        ),
    ];
    let mut rng = Rng::new(21);
    for gpu in gpus() {
        for (cfg, scale, schedule) in &cases {
            let layout = layout(&shapes);
            let init = flat(&mut rng, &layout, -1.0, 1.0);
            let params = Params::new(gpu, layout.clone(), &init).unwrap();
            let mut sc = scaler(gpu, *scale);
            let mut adam = Adam::new(gpu, cfg.clone(), &params, &sc).unwrap();
            let mut want: Vec<f64> = init.iter().map(|&v| v as f64).collect();
            let mut state = reference::State::new(layout.len());
            for (k, mag) in [0.01f32, 2.0, 0.3, 0.05, 1.0].into_iter().enumerate() {
                let s = sc.scale();
                let grads: Vec<f32> = flat(&mut rng, &layout, -mag, mag).iter().map(|g| g * s).collect();
                params.upload_grads(gpu, &grads);
                let lr = schedule.lr(cfg.lr, k);
                let report = adam.step(gpu, &mut sc, lr).unwrap();
                assert!(report.applied && report.scale == s && report.lr == lr);
                let g64: Vec<f64> = grads.iter().map(|&g| g as f64).collect();
                assert!(reference::step(&mut want, &g64, s as f64, &mut state, cfg, lr));
                let what = format!("{} {cfg:?} step {}", gpu.describe(), k + 1);
                assert_close(&params.read(gpu).unwrap(), &want, 1e-6, 1e-8, &what);
                if let Some(max_norm) = cfg.max_grad_norm {
                    let unscaled: Vec<f64> = g64.iter().map(|g| g / s as f64).collect();
                    let (norm, _) = reference::clip_coefficient(&unscaled, max_norm);
                    let got = adam.read_grad_norm(gpu).unwrap().unwrap() as f64;
                    assert!((got - norm).abs() <= 1e-6 * norm, "{what}: grad norm {got} vs {norm}");
                } else {
                    assert_eq!(adam.read_grad_norm(gpu).unwrap(), None);
                }
            }
            assert_eq!(adam.steps(), 5);
            let (m, v) = adam.read_moments(gpu).unwrap();
            assert_close(&m, &state.m, 1e-5, 1e-7, "m");
            assert_close(&v, &state.v, 1e-5, 1e-7, "v");
            // The gradients are left as they were (scaled) and the padding stays zero.
            let read = params.read(gpu).unwrap();
            let mut used = vec![false; layout.len()];
            for e in layout.entries() {
                used[e.offset..e.offset + e.len].iter_mut().for_each(|u| *u = true);
            }
            assert!(read.iter().zip(&used).all(|(v, u)| *u || *v == 0.0), "padding changed");
        }
    }
}

#[test]
fn adam_matches_pytorch() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("adam_meta.json")).unwrap()).unwrap();
    let shapes: Vec<Vec<usize>> = meta["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect())
        .collect();
    let f = |k: &str| meta[k].as_f64().unwrap();
    let layout = layout(&shapes);
    // A torch row (tensors concatenated) as our flat buffer (tensors at aligned offsets).
    let to_flat = |row: &[f32]| {
        let mut tensors = Vec::new();
        let mut o = 0;
        for e in layout.entries() {
            tensors.push(&row[o..o + e.len]);
            o += e.len;
        }
        layout.pack(&tensors).unwrap()
    };
    let from_flat = |flat: &[f32]| layout.unpack(flat).concat();
    for (file, clip) in [("adam_plain.npy", false), ("adam_clip.npy", true)] {
        let (shape, data) = read_f32(&fixture(file)).unwrap();
        let cols = shape[1];
        let row = |i: usize| &data[i * cols..(i + 1) * cols];
        let cfg = AdamConfig {
            lr: f("lr"),
            betas: (meta["betas"][0].as_f64().unwrap(), meta["betas"][1].as_f64().unwrap()),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
            max_grad_norm: clip.then(|| f("max_norm")),
        };
        let schedule = if clip { LrSchedule::Step { step_size: 2, gamma: 0.5 } } else { LrSchedule::Constant };
        for gpu in gpus() {
            let params = Params::new(gpu, layout.clone(), &to_flat(row(0))).unwrap();
            // Gradients arrive scaled by 1024 (exact) and are unscaled by the optimizer.
            let mut sc = scaler(gpu, Some(1024.0));
            let mut adam = Adam::new(gpu, cfg.clone(), &params, &sc).unwrap();
            for step in 0..3 {
                let grads: Vec<f32> = to_flat(row(1 + step)).iter().map(|g| g * 1024.0).collect();
                params.upload_grads(gpu, &grads);
                let lr = schedule.lr(cfg.lr, step);
                if clip {
                    assert_eq!(lr, meta["clip_lrs"][step].as_f64().unwrap(), "StepLR vs torch");
                }
                assert!(adam.step(gpu, &mut sc, lr).unwrap().applied);
                let what = format!("{} torch {file} step {}", gpu.describe(), step + 1);
                let want: Vec<f64> = row(4 + step).iter().map(|&v| v as f64).collect();
                assert_close(&from_flat(&params.read(gpu).unwrap()), &want, 1e-6, 1e-8, &what);
                if clip {
                    let norm = meta["clip_norms"][step].as_f64().unwrap();
                    let got = adam.read_grad_norm(gpu).unwrap().unwrap() as f64;
                    assert!((got - norm).abs() <= 1e-6 * norm, "{what}: norm {got} vs torch {norm}");
                }
            }
            let (m, v) = adam.read_moments(gpu).unwrap();
            let want_m: Vec<f64> = row(7).iter().map(|&v| v as f64).collect();
            let want_v: Vec<f64> = row(8).iter().map(|&v| v as f64).collect();
            assert_close(&from_flat(&m), &want_m, 1e-6, 1e-6, &format!("{file}: exp_avg"));
            assert_close(&from_flat(&v), &want_v, 1e-6, 1e-6, &format!("{file}: exp_avg_sq"));
        }
    }
}

fn read_scale(gpu: &Gpu, sc: &LossScaler) -> f32 {
    Readback::f32(gpu, sc.scale_buffer(), 1).unwrap()[0]
}

#[test]
fn non_finite_gradients_skip_the_step_and_halve_the_scale() {
    let shapes = vec![vec![4, 3, 3, 3], vec![5], vec![2, 7]];
    let cfg = AdamConfig { lr: 1e-2, weight_decay: 0.01, max_grad_norm: Some(1.0), ..Default::default() };
    let mut rng = Rng::new(5);
    for gpu in gpus() {
        let layout = layout(&shapes);
        let init = flat(&mut rng, &layout, -1.0, 1.0);
        let params = Params::new(gpu, layout.clone(), &init).unwrap();
        let mut sc = scaler(gpu, Some(65536.0));
        let mut adam = Adam::new(gpu, cfg.clone(), &params, &sc).unwrap();
        let mut want: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        let mut state = reference::State::new(layout.len());
        let mut step = |grads: Vec<f32>, adam: &mut Adam, sc: &mut LossScaler| {
            let s = sc.scale();
            let scaled: Vec<f32> = grads.iter().map(|g| g * s).collect();
            params.upload_grads(gpu, &scaled);
            let g64: Vec<f64> = scaled.iter().map(|&g| g as f64).collect();
            let applied = reference::step(&mut want, &g64, s as f64, &mut state, &cfg, cfg.lr);
            let report = adam.step(gpu, sc, cfg.lr).unwrap();
            assert_eq!(report.applied, applied);
            assert_close(&params.read(gpu).unwrap(), &want, 1e-6, 1e-8, "after step");
            report
        };
        // A clean step: applied, the growth counter advances.
        let r = step(flat(&mut rng, &layout, -0.1, 0.1), &mut adam, &mut sc);
        assert!(r.applied && r.next_scale == 65536.0 && sc.growth_tracker() == 1);
        let before = params.read(gpu).unwrap();
        let (m0, v0) = adam.read_moments(gpu).unwrap();
        // +inf, NaN, −inf: skipped, nothing changes, the scale halves each time.
        for (bad, scale_after) in [(f32::INFINITY, 32768.0), (f32::NAN, 16384.0), (f32::NEG_INFINITY, 8192.0)] {
            let mut g = flat(&mut rng, &layout, -0.1, 0.1);
            g[layout.entries()[1].offset + 3] = bad;
            let r = step(g, &mut adam, &mut sc);
            let what = format!("{} gradient {bad}", gpu.describe());
            assert!(!r.applied, "{what}: applied");
            assert_eq!(r.next_scale, scale_after, "{what}: scale");
            assert_eq!(sc.scale(), scale_after);
            assert_eq!(read_scale(gpu, &sc), scale_after, "{what}: GPU scale buffer");
            assert_eq!(sc.growth_tracker(), 0);
            assert_eq!(adam.steps(), 1, "{what}: step count");
            let after = params.read(gpu).unwrap();
            assert!(after.iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: params changed");
            let (m1, v1) = adam.read_moments(gpu).unwrap();
            assert!(m1 == m0 && v1 == v0, "{what}: moments changed");
        }
        // The next clean step is applied as Adam's step 2 (bias corrections of t = 2).
        let r = step(flat(&mut rng, &layout, -0.1, 0.1), &mut adam, &mut sc);
        assert!(r.applied && r.scale == 8192.0);
        assert_eq!(adam.steps(), 2);
    }
}

#[test]
fn clean_steps_double_the_scale() {
    for gpu in gpus() {
        let mut l = ParamLayout::new();
        l.push("w", &[3, 3]);
        let params = Params::new(gpu, l.clone(), &vec![0.5; l.len()]).unwrap();
        let mut sc = scaler(gpu, Some(65536.0));
        let mut adam = Adam::new(gpu, AdamConfig::default(), &params, &sc).unwrap();
        params.upload_grads(gpu, &vec![0.25 * 65536.0; l.len()]);
        // 1998 clean steps so far: one more is not enough.
        sc.set_growth_tracker(1998);
        let r = adam.step(gpu, &mut sc, 1e-3).unwrap();
        assert!(r.applied && r.next_scale == 65536.0 && sc.growth_tracker() == 1999);
        // The 2000th clean step doubles the scale (host and GPU buffer) and restarts the count.
        params.upload_grads(gpu, &vec![0.25 * 65536.0; l.len()]);
        let r = adam.step(gpu, &mut sc, 1e-3).unwrap();
        assert!(r.applied && r.scale == 65536.0 && r.next_scale == 131072.0);
        assert_eq!(sc.growth_tracker(), 0);
        assert_eq!(read_scale(gpu, &sc), 131072.0);
        assert_eq!(adam.steps(), 2);
    }
    // The host bookkeeping alone, with a short interval.
    let gpu = &gpus()[0];
    let mut sc =
        LossScaler::new(gpu, ScalerConfig { growth_interval: 3, init_scale: 8.0, ..Default::default() }).unwrap();
    let seq: Vec<f32> =
        [false, false, true, false, false, false, false].iter().map(|&inf| sc.update(gpu, inf)).collect();
    assert_eq!(seq, [8.0, 8.0, 4.0, 4.0, 4.0, 8.0, 8.0]);
}

#[test]
fn disabled_scaler_and_zero_grad() {
    for gpu in gpus() {
        let mut l = ParamLayout::new();
        l.push("w", &[5]);
        let params = Params::new(gpu, l.clone(), &vec![1.0; l.len()]).unwrap();
        let mut sc = LossScaler::disabled(gpu);
        assert_eq!((sc.scale(), read_scale(gpu, &sc)), (1.0, 1.0));
        let mut adam = Adam::new(gpu, AdamConfig::default(), &params, &sc).unwrap();
        // No inf check is recorded: reset, update.
        assert_eq!(adam.step_dispatches().len(), 2);
        params.upload_grads(gpu, &vec![2.0; l.len()]);
        let r = adam.step(gpu, &mut sc, 1e-3).unwrap();
        assert!(r.applied && r.next_scale == 1.0);
        // Unscaled step 1 of Adam moves every used element by lr (m̂ / sqrt(v̂) = 1).
        let p = params.read(gpu).unwrap();
        assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-7, "{}", p[0]);
        gpu.run(&[adam.zero_grad()]).unwrap();
        assert!(params.read_grads(gpu).unwrap().iter().all(|&g| g == 0.0));
    }
}

#[test]
fn layout_packs_at_aligned_offsets() {
    let mut l = ParamLayout::new();
    assert_eq!(l.push("a", &[3, 5]), 0);
    assert_eq!(l.push("b", &[64]), PARAM_ALIGN);
    assert_eq!(l.push("c", &[65]), 2 * PARAM_ALIGN);
    assert_eq!(l.len(), 4 * PARAM_ALIGN);
    let c = l.get("c").unwrap();
    assert_eq!((c.len, c.byte_range()), (65, 512..772));
    let (a, b, cc) = (vec![1.0; 15], vec![2.0; 64], vec![3.0; 65]);
    let flat = l.pack(&[&a, &b, &cc]).unwrap();
    assert_eq!(flat.len(), l.len());
    assert_eq!(flat[15..64].iter().sum::<f32>(), 0.0);
    assert_eq!(l.unpack(&flat), vec![&a[..], &b[..], &cc[..]]);
    assert!(l.pack(&[&a, &b]).is_err());
    assert!(l.pack(&[&a, &b, &a]).is_err());
}

#[test]
fn schedules_match_pytorch() {
    let step = LrSchedule::Step { step_size: 3, gamma: 0.1 };
    let lrs: Vec<f64> = (0..7).map(|k| step.lr(1.0, k)).collect();
    let want = [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1f64.powi(2)];
    assert!(lrs.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15), "{lrs:?}");
    let exp = LrSchedule::Exponential { gamma: 0.95 };
    assert!((exp.lr(2e-3, 10) - 2e-3 * 0.95f64.powi(10)).abs() < 1e-18);
    assert_eq!(LrSchedule::Constant.lr(3e-4, 1000), 3e-4);
    assert!(LrSchedule::Step { step_size: 0, gamma: 0.5 }.validate().is_err());
    assert!(LrSchedule::Exponential { gamma: -1.0 }.validate().is_err());
}

#[test]
fn bad_configurations_are_errors() {
    let gpu = &gpus()[0];
    let mut l = ParamLayout::new();
    l.push("w", &[4]);
    assert!(Params::new(gpu, l.clone(), &[0.0; 4]).is_err(), "unpadded length");
    assert!(Params::new(gpu, ParamLayout::new(), &[]).is_err(), "empty");
    let params = Params::new(gpu, l.clone(), &vec![0.0; l.len()]).unwrap();
    let sc = LossScaler::disabled(gpu);
    for cfg in [
        AdamConfig { betas: (1.0, 0.999), ..Default::default() },
        AdamConfig { lr: f64::NAN, ..Default::default() },
        AdamConfig { weight_decay: -1.0, ..Default::default() },
        AdamConfig { max_grad_norm: Some(0.0), ..Default::default() },
    ] {
        assert!(Adam::new(gpu, cfg.clone(), &params, &sc).is_err(), "{cfg:?}");
    }
    assert!(LossScaler::new(gpu, ScalerConfig { growth_interval: 0, ..Default::default() }).is_err());
    assert!(LossScaler::new(gpu, ScalerConfig { init_scale: 0.0, ..Default::default() }).is_err());
    let adam = Adam::new(gpu, AdamConfig::default(), &params, &sc).unwrap();
    assert!(adam.upload_moments(gpu, &[0.0; 3], &[0.0; 3]).is_err());
}

/// A tensor of the flat layout bound on its own (what the U-Net trainer does): a kernel adds
/// into exactly its range of the gradients, the entry read/write touch only their ranges, and a
/// range the adapter cannot bind is an error, not a device failure.
#[test]
fn tensors_bind_as_ranges_of_the_flat_buffers() {
    use crate::common::f64s;
    use psi_gpu::gpu::{Binding, Precision, Tensor};
    use psi_gpu::ops::conv::{self, reference as conv_ref};
    let mut rng = Rng::new(11);
    let l = layout(&[vec![5], vec![3], vec![70]]);
    for gpu in gpus() {
        let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
        eprintln!("{}: min_storage_buffer_offset_alignment {align} bytes", gpu.describe());
        assert_eq!(PARAM_ALIGN * 4 % align, 0, "{}: offset alignment {align}", gpu.describe());
        let params = Params::new(gpu, l.clone(), &flat(&mut rng, &l, -1.0, 1.0)).unwrap();
        let grads = flat(&mut rng, &l, -1.0, 1.0);
        params.upload_grads(gpu, &grads);
        let dy_host = rng.vec(2 * 3 * 4 * 5, -1.0, 1.0);
        let dy = Tensor::from_f32(gpu, [2, 3, 4, 5], Precision::F32, &dy_host).unwrap();
        let add = conv::conv_grad_bias(gpu, dy.view(), params.grad(&l.entries()[1].name).unwrap(), true).unwrap();
        gpu.run(&[&add]).unwrap();
        let mut want = grads.clone();
        let b = &l.entries()[1];
        for (w, s) in
            want[b.offset..b.offset + b.len].iter_mut().zip(conv_ref::conv_grad_bias(&f64s(&dy_host), [2, 3, 4, 5]))
        {
            *w += s as f32;
        }
        let got = params.read_grads(gpu).unwrap();
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "{}: bias gradient in its range off by {err}", gpu.describe());
        assert_eq!(got[..b.offset], grads[..b.offset], "{}: before the range", gpu.describe());
        assert_eq!(got[b.offset + b.len..], grads[b.offset + b.len..], "{}: after the range", gpu.describe());
        // Entry read/write by name: only those ranges.
        let sub = [l.entries()[2].clone(), l.entries()[0].clone()];
        let sub_grads: Vec<f32> = sub.iter().flat_map(|e| got[e.offset..e.offset + e.len].to_vec()).collect();
        assert_eq!(params.read_grad_entries(gpu, &sub).unwrap(), sub_grads);
        let before = params.read(gpu).unwrap();
        params.upload_entries(gpu, &sub, &vec![7.0; 75]).unwrap();
        let after = params.read(gpu).unwrap();
        for e in l.entries() {
            let written = sub.iter().any(|s| s.name == e.name);
            let (a, b) = (&after[e.offset..e.offset + e.len], &before[e.offset..e.offset + e.len]);
            assert!(if written { a.iter().all(|&v| v == 7.0) } else { a == b }, "{}", e.name);
        }
        assert!(params.upload_entries(gpu, &sub, &[0.0; 74]).is_err());
        assert!(params.grad("nope").is_err());
        // Ranges that cannot be bound: past the end, empty, misaligned.
        let end = params.grads.size();
        for range in [end - 8..end + 8, 256..256] {
            assert!(conv::conv_grad_bias(gpu, dy.view(), Binding::range(&params.grads, range), true).is_err());
        }
        if align >= 8 {
            let off = (align / 2) as u64;
            let r = Binding::range(&params.grads, off..off + 12);
            assert!(conv::conv_grad_bias(gpu, dy.view(), r, true).is_err(), "{}: offset {off}", gpu.describe());
        }
    }
}
