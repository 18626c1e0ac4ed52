//! The classical multi-wavelength solver (`psi_gpu::psi::classical`) against its f64 CPU
//! reference and against the true heights of synthetic frames, on every adapter.

use crate::common::{Rng, f32s, f64s, gpus};
use psi_gpu::Error;
use psi_gpu::gpu::Precision;
use psi_gpu::nn::classical::Classical;
use psi_gpu::ops::classical::ClassicalConfig;
use psi_gpu::ops::classical::reference::{classical as reference, fit_pixel};
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::buckets::{self as synth, SynthConfig};
use psi_gpu::psi::surface::seed_heights;

/// Cost gap (turns²) and distance from a half fringe (turns) under which a pixel's reference
/// solution is ambiguous at f32 precision.
const AMBIGUOUS: f64 = 1e-4;

/// Per pixel of one image `[L·N, h, w]`: is the reference's solution clear-cut?
fn unambiguous(frame: &[f32], hw: usize, cfg: &ClassicalConfig) -> Vec<bool> {
    let c = cfg.in_channels();
    (0..hw)
        .map(|i| {
            let px: Vec<f64> = (0..c).map(|ch| frame[ch * hw + i] as f64).collect();
            let fit = fit_pixel(&px, cfg);
            fit.runner_up - fit.cost > AMBIGUOUS && fit.max_residual < 0.5 - AMBIGUOUS
        })
        .collect()
}

/// Random heights in `range` with per-pixel offset and modulation (and a little noise).
fn random_frame(rng: &mut Rng, cfg: &ClassicalConfig, hw: usize, range: (f32, f32), noise: f32) -> Vec<f32> {
    let (nl, nb) = (cfg.lasers(), cfg.psi.buckets);
    let heights = rng.vec(hw, range.0, range.1);
    let a = rng.vec(hw, 60.0, 160.0);
    let b: Vec<f32> = a.iter().map(|&a| a * 0.2 + rng.uniform(0.0, 0.6 * a)).collect();
    let mut out = vec![0f32; nl * nb * hw];
    for l in 0..nl {
        for k in 0..nb {
            for i in 0..hw {
                let ph = 4.0 * std::f64::consts::PI * heights[i] as f64 / cfg.psi.wavelengths[l] as f64
                    + 2.0 * std::f64::consts::PI * k as f64 / nb as f64;
                let n = noise * rng.uniform(-1.0, 1.0);
                out[(l * nb + k) * hw + i] = (a[i] as f64 + b[i] as f64 * ph.cos()) as f32 + n;
            }
        }
    }
    out
}

fn rmse_max(got: &[f32], truth: &[f32]) -> (f64, f64) {
    let (mut se, mut mx) = (0.0f64, 0.0f64);
    for (g, t) in got.iter().zip(truth) {
        let e = (*g as f64 - *t as f64).abs();
        se += e * e;
        mx = mx.max(e);
    }
    ((se / truth.len() as f64).sqrt(), mx)
}

#[test]
fn gpu_matches_reference() {
    let mut rng = Rng::new(11);
    let three =
        ClassicalConfig { psi: PsiConfig::with(vec![4.2, 5.1, 6.3], 5), height_range: (-30.0, 45.0), quality: true };
    let one = ClassicalConfig { psi: PsiConfig::with(vec![5.0], 3), height_range: (-1.2, 1.2), quality: true };
    let default_q = ClassicalConfig { quality: true, ..Default::default() };
    // (config, n, h, w, kind): 0 = physical frames with noise, 1 = noiseless, 2 = uniform noise
    let cases = [
        (&default_q, 1, 7, 13, 0),
        (&default_q, 1, 1, 1, 0),
        (&default_q, 2, 16, 9, 0),
        (&default_q, 1, 17, 19, 1),
        (&default_q, 2, 5, 11, 2),
        (&ClassicalConfig::default(), 1, 3, 300, 0),
        (&three, 2, 9, 10, 0),
        (&three, 1, 6, 7, 2),
        (&one, 1, 4, 5, 1),
    ];
    for gpu in gpus() {
        for &(cfg, n, h, w, kind) in &cases {
            let hw = h * w;
            let range = (cfg.height_range.0 * 0.95, cfg.height_range.1 * 0.95);
            let frames: Vec<Vec<f32>> = (0..n)
                .map(|_| match kind {
                    0 => random_frame(&mut rng, cfg, hw, range, 1.0),
                    1 => random_frame(&mut rng, cfg, hw, range, 0.0),
                    _ => rng.vec(cfg.in_channels() * hw, 0.0, 255.0),
                })
                .collect();
            let model = Classical::new(gpu, cfg.clone()).unwrap();
            let got = model.solve(gpu, &frames.concat(), n, h, w).unwrap();
            let oc = cfg.out_channels();
            let what = format!("{} L{} N{} n{n} {h}x{w} kind {kind}", gpu.describe(), cfg.lasers(), cfg.psi.buckets);
            let (mut checked, mut worst) = (0, 0.0f64);
            for (img, frame) in frames.iter().enumerate() {
                let want = reference(&f64s(frame), [1, cfg.in_channels(), h, w], cfg);
                let got = &got[img * oc * hw..(img + 1) * oc * hw];
                let clear = unambiguous(frame, hw, cfg);
                for i in 0..hw {
                    if kind == 1 {
                        assert!(clear[i], "{what}: noiseless pixel {i} is ambiguous");
                    }
                    if clear[i] {
                        let e = (got[i] as f64 - want[i]).abs();
                        assert!(e < 1e-4, "{what}: image {img} pixel {i}: height {} vs reference {}", got[i], want[i]);
                        worst = worst.max(e);
                        checked += 1;
                    }
                    if oc == 2 {
                        let (g, q) = (got[hw + i] as f64, want[hw + i]);
                        assert!((g - q).abs() <= 1e-4 * q.abs().max(1.0), "{what}: pixel {i}: quality {g} vs {q}");
                    }
                }
            }
            // Physical frames are almost never ambiguous; uniform noise often is.
            if kind != 2 {
                assert!(checked * 10 >= n * hw * 9, "{what}: only {checked} of {} pixels unambiguous", n * hw);
            }
            eprintln!("{what}: {checked}/{} pixels compared, max |GPU - CPU| {worst:.2e} µm", n * hw);
        }
    }
}

/// The solver with `cfg` on one `h` x `w` image, on every adapter: the output and the (RMSE, max
/// error) of its heights against `truth`, printed as `what`.
fn solve_everywhere(
    frame: &[f32],
    [h, w]: [usize; 2],
    cfg: &ClassicalConfig,
    truth: &[f32],
    what: &str,
) -> Vec<(Vec<f32>, f64, f64)> {
    gpus()
        .iter()
        .map(|gpu| {
            let out = Classical::new(gpu, cfg.clone()).unwrap().solve(gpu, frame, 1, h, w).unwrap();
            let (rmse, max) = rmse_max(&out[..h * w], truth);
            eprintln!("{}: {what} {h}x{w}: RMSE {rmse:.2e} µm, max error {max:.2e} µm", gpu.describe());
            (out, rmse, max)
        })
        .collect()
}

#[test]
fn noiseless_seed_surface() {
    let (h, w) = (64, 80);
    let truth = seed_heights(h, w);
    let frame = synth::buckets(&truth, h, w, &SynthConfig::default());
    let cfg = ClassicalConfig { quality: true, ..Default::default() };
    for (out, rmse, max) in solve_everywhere(&frame, [h, w], &cfg, &truth, "noiseless seed surface") {
        let qerr = out[h * w..].iter().map(|&q| (q as f64 - 100.0 / 128.0).abs()).fold(0.0, f64::max);
        assert!(rmse < 1e-4, "RMSE {rmse:e}");
        assert!(max < 1e-5, "max error {max:e}");
        assert!(qerr < 1e-4, "quality off B/A by {qerr:e}");
    }
}

#[test]
fn noiseless_full_height_range() {
    // Heights over the whole default range, f32 buckets: error about one f32 ulp of the height.
    let (h, w) = (40, 50);
    let mut rng = Rng::new(5);
    let truth = rng.vec(h * w, -99.9, 99.9);
    let frame = synth::buckets(&truth, h, w, &SynthConfig::default());
    for (_, _, max) in solve_everywhere(&frame, [h, w], &ClassicalConfig::default(), &truth, "noiseless ±100 µm") {
        assert!(max < 1e-5, "max error {max:e}");
    }
}

#[test]
fn noisy_u8_frame() {
    let (h, w) = (64, 80);
    let truth = seed_heights(h, w);
    let cfg = SynthConfig { noise: 2.0, seed: 42, ..Default::default() };
    let frame: Vec<f32> = synth::quantize_u8(&synth::buckets(&truth, h, w, &cfg)).iter().map(|&v| v as f32).collect();
    let cfg = ClassicalConfig::default();
    let expect = reference(&f64s(&frame), [1, cfg.in_channels(), h, w], &cfg);
    let (cpu_rmse, cpu_max) = rmse_max(&f32s(&expect), &truth);
    eprintln!("CPU reference: u8 frame, noise σ = 2: RMSE {cpu_rmse:.2e} µm, max error {cpu_max:.2e} µm");
    for (_, rmse, max) in solve_everywhere(&frame, [h, w], &cfg, &truth, "u8 frame, noise σ = 2") {
        assert!(rmse < 1e-2, "RMSE {rmse:e}");
        assert!(max < 0.5, "a pixel is off by a fringe: max error {max} µm");
    }
}

#[test]
fn plan_shapes_and_bytes() {
    let gpu = &gpus()[0];
    let cfg = ClassicalConfig { quality: true, ..Default::default() };
    let model = Classical::new(gpu, cfg).unwrap();
    assert_eq!((model.in_channels(), model.out_channels()), (16, 2));
    let plan = model.plan(gpu, 3, 5, 7).unwrap();
    assert_eq!(plan.input.shape, [3, 16, 5, 7]);
    assert_eq!(plan.output.shape, [3, 2, 5, 7]);
    assert_eq!((plan.input.precision, plan.output.precision), (Precision::F32, Precision::F32));
    assert_eq!(plan.dispatches.len(), 1);
    assert_eq!(plan.bytes, (3 * 16 * 35 + 3 * 2 * 35) * 4);
    assert!(matches!(model.plan(gpu, 0, 5, 7), Err(Error::Shape(_))));
    assert!(matches!(model.solve(gpu, &[0.0; 10], 1, 5, 7), Err(Error::Shape(_))));
}

#[test]
fn config_validation() {
    let ok = ClassicalConfig::default();
    assert!(ok.validate().is_ok());
    let bad = [
        ("no lasers", ClassicalConfig { psi: PsiConfig::with(vec![], 4), ..ok.clone() }, "at least one wavelength"),
        ("17 lasers", ClassicalConfig { psi: PsiConfig::with(vec![5.0; 17], 4), ..ok.clone() }, "at most 16"),
        (
            "N = 2",
            ClassicalConfig { psi: PsiConfig::with(ok.psi.wavelengths.clone(), 2), ..ok.clone() },
            "at least 3 buckets",
        ),
        ("hmin = hmax", ClassicalConfig { height_range: (1.0, 1.0), ..ok.clone() }, "minimum must be below"),
        ("hmin > hmax", ClassicalConfig { height_range: (5.0, -5.0), ..ok.clone() }, "minimum must be below"),
        ("NaN range", ClassicalConfig { height_range: (f32::NAN, 5.0), ..ok.clone() }, "not finite"),
        (
            "negative wavelength",
            ClassicalConfig { psi: PsiConfig::with(vec![5.0, -5.5], 4), ..ok.clone() },
            "wavelength 2",
        ),
        ("zero wavelength", ClassicalConfig { psi: PsiConfig::with(vec![0.0], 4), ..ok.clone() }, "positive"),
        ("huge range", ClassicalConfig { height_range: (-1e6, 1e6), ..ok.clone() }, "narrow the range"),
    ];
    for (what, cfg, msg) in bad {
        match cfg.validate() {
            Err(Error::Invalid(m)) => assert!(m.contains(msg), "{what}: message {m:?} lacks {msg:?}"),
            other => panic!("{what}: expected Error::Invalid, got {other:?}"),
        }
        assert!(matches!(Classical::new(&gpus()[0], cfg), Err(Error::Invalid(_))), "{what}: Classical::new");
    }
    // 16 lasers is the limit, not over it.
    let sixteen = ClassicalConfig { psi: PsiConfig::with((0..16).map(|i| 5.0 + 0.1 * i as f32).collect(), 4), ..ok };
    assert!(sixteen.validate().is_ok());
}

#[test]
fn synth_helpers() {
    let hts = seed_heights(3, 5);
    assert_eq!(hts.len(), 15);
    // Corner (x, y) = (-1, -1).
    let (x, y) = (-1.0f64, -1.0f64);
    let want = 15.0 * (-((x - 0.2).powi(2) + (y + 0.3).powi(2)) / 0.2).exp()
        + 5.0 * x
        + 2.5 * y
        + 10.0 * ((x + 0.5).powi(2) + (y - 0.4).powi(2)).sqrt();
    assert!((hts[0] as f64 - want).abs() < 1e-5);
    let cfg = SynthConfig { noise: 3.0, seed: 7, ..Default::default() };
    let a = synth::buckets(&hts, 3, 5, &cfg);
    assert_eq!(a.len(), 16 * 15);
    assert_eq!(a, synth::buckets(&hts, 3, 5, &cfg), "deterministic");
    assert_ne!(a, synth::buckets(&hts, 3, 5, &SynthConfig { seed: 8, ..cfg.clone() }), "seeded");
    // Noise statistics on a flat surface.
    let flat = vec![0.0f32; 10000];
    let v = synth::buckets(&flat, 100, 100, &SynthConfig { psi: PsiConfig::with(vec![5.0], 4), ..cfg.clone() });
    let k0 = &v[..10000]; // A + B
    let mean = k0.iter().map(|&x| x as f64).sum::<f64>() / 1e4;
    let sd = (k0.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / 1e4).sqrt();
    assert!((mean - 228.0).abs() < 0.1 && (sd - 3.0).abs() < 0.1, "noise mean {mean}, sd {sd}");
    assert_eq!(synth::quantize_u8(&[-3.0, 0.4, 0.6, 254.5, 300.0]), vec![0, 0, 1, 255, 255]);
    assert_eq!(synth::quantize_u16(&[-1.0, 1.5, 70000.0]), vec![0, 2, 65535]);
}
