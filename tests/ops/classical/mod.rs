//! The classical multi-wavelength solver (`psi_gpu::ops::classical`) against its f64 CPU
//! reference and against the true heights of synthetic frames, on every adapter: both unwrap
//! modes, invalid pixels and calibrated steps here; what NaN means and what calibration buys in
//! `invalid`; the accuracy table of the issue in `table` (ignored: run it by name).

use crate::common::{Rng, f32s, f64s, gpus};
use psi_gpu::gpu::Precision;
use psi_gpu::nn::classical::Classical;
use psi_gpu::ops::classical::reference::{Status, classical as reference, fit_pixel};
use psi_gpu::ops::classical::{ClassicalConfig, Levels, Unwrap};
use psi_gpu::psi::buckets::{self as synth, SynthConfig, intensity};
use psi_gpu::psi::phase::fit_steps;
use psi_gpu::psi::reason::Reason;
use psi_gpu::psi::surface::seed_heights;
use psi_gpu::psi::{PhaseSteps, PsiConfig};
use psi_gpu::{Error, HostType};

pub(crate) mod invalid;
mod prune;
mod robust;
mod table;

/// Cost gap (turns²) and distance from a half fringe (turns) under which a pixel's reference
/// solution is ambiguous at f32 precision.
const AMBIGUOUS: f64 = 1e-4;

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

/// Levels of u8 frames fed in counts (input scale 1): 3 counts of modulation, clipped at 0 and 255.
fn u8_levels() -> Levels {
    Levels::for_input(HostType::U8, 1.0, None, None).unwrap()
}

/// Physical frames at the configuration's own phase steps, then spoiled where `spoil` says so:
/// every bucket clamped to [0, 255] (A + B often passes 255), and per pixel by chance a NaN or
/// infinite bucket (3 %), every laser's B at 1 count (4 %), one laser's B at 1 count (4 %),
/// a saturated patch (all buckets at 255, 3 %) or one laser saturated (5 %).
fn hard_frame(rng: &mut Rng, cfg: &ClassicalConfig, hw: usize, range: (f32, f32), spoil: bool) -> Vec<f32> {
    let (nl, nb) = (cfg.lasers(), cfg.psi.buckets);
    let mut out = vec![0f32; nl * nb * hw];
    for i in 0..hw {
        let h = rng.uniform(range.0, range.1) as f64;
        let a = rng.uniform(40.0, 200.0) as f64;
        let mut b: Vec<f64> = (0..nl).map(|_| rng.uniform(0.15, 0.9) as f64 * a.min(255.0 - a + 60.0)).collect();
        let (kind, which) = (rng.uniform(0.0, 1.0), rng.int(0, nl - 1));
        if spoil && (0.03..0.07).contains(&kind) {
            b.iter_mut().for_each(|b| *b = 1.0);
        } else if spoil && (0.07..0.11).contains(&kind) {
            b[which] = 1.0;
        }
        for l in 0..nl {
            for k in 0..nb {
                let v = intensity(a, b[l], h, cfg.psi.wavelengths[l] as f64, cfg.psi.phase_step(l, k));
                let v = v + rng.uniform(-1.0, 1.0) as f64;
                let sat = spoil && ((0.11..0.14).contains(&kind) || ((0.14..0.19).contains(&kind) && l == which));
                out[(l * nb + k) * hw + i] = if sat { 255.0 } else { v.clamp(0.0, 255.0) as f32 };
            }
        }
        if spoil && kind < 0.03 {
            let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.int(0, 2)];
            out[rng.int(0, nl * nb - 1) * hw + i] = bad;
        }
    }
    out
}

/// Is the reference's decision for this pixel clear-cut at f32 precision: no cost near a tie, no
/// residual near half a fringe, no modulation near the floor, no weight near another's (the
/// weighted anchor), no candidate near the range's edge?
fn clear_cut(px: &[f64], cfg: &ClassicalConfig) -> bool {
    let fit = fit_pixel(px, cfg);
    let lv = &cfg.levels;
    let near = |x: f64, y: f64| (x - y).abs() <= 1e-3 * y.abs().max(1e-9);
    let floor_ok = fit.lasers.iter().all(|f| {
        f.status == Status::NonFinite
            || f.n < 3
            || !(near(f.b, lv.min_b as f64) || near(f.b, lv.min_contrast as f64 * f.a))
    });
    // A clipped bucket the fit of all buckets predicts near the clip level may be kept or left out.
    let nb = cfg.psi.buckets;
    let censor_ok = (0..cfg.lasers()).all(|l| {
        let v = &px[l * nb..(l + 1) * nb];
        let steps: Vec<f64> = (0..nb).map(|k| cfg.psi.phase_step(l, k)).collect();
        match fit_steps(v, &steps, |_| true).filter(|_| v.iter().all(|x| x.is_finite())) {
            Some([a, p, q]) => (0..nb).all(|k| {
                let predicted = a + p * steps[k].cos() - q * steps[k].sin();
                [lv.clip_lo, lv.clip_hi].iter().all(|&c| (predicted - c as f64).abs() > 1e-3)
            }),
            None => true,
        }
    });
    let floor_ok = floor_ok && censor_ok;
    // A candidate near an edge of the range may be in or out.
    let wl = |l: usize| cfg.psi.wavelengths[l] as f64;
    let f = fit.lasers[fit.anchor].turns;
    let (h0, h1) = cfg.height_range;
    let edge_ok = [h0, h1].iter().all(|&e| {
        let x = 2.0 * e as f64 / wl(fit.anchor) - f;
        (x - x.round()).abs() > 1e-4
    });
    if fit.reason != Reason::Ok {
        return floor_ok && edge_ok;
    }
    let gap = match cfg.unwrap {
        Unwrap::PerPixel => fit.runner_up - fit.cost > AMBIGUOUS,
        Unwrap::Weighted | Unwrap::Robust => {
            fit.runner_up.is_infinite() || fit.runner_up - fit.cost > 1e-3 * fit.runner_up
        }
    };
    let weights: Vec<f64> = fit.lasers.iter().enumerate().map(|(l, f)| f.weight(wl(l))).collect();
    let anchor_ok = cfg.unwrap == Unwrap::PerPixel
        || weights.iter().enumerate().all(|(l, &w)| l == fit.anchor || !near(w, weights[fit.anchor]));
    floor_ok && gap && anchor_ok && edge_ok && fit.max_residual < 0.5 - AMBIGUOUS
}

/// The GPU's `[n, out_c, h, w]` output against the reference on the clear-cut pixels: the same
/// reason and NaN positions, heights within 1e-4 µm, quality within 1e-4 relative. Returns the
/// pixels compared.
fn compare(got: &[f32], frames: &[Vec<f32>], cfg: &ClassicalConfig, [h, w]: [usize; 2], what: &str) -> usize {
    let (hw, oc, c) = (h * w, cfg.out_channels(), cfg.in_channels());
    let (mut checked, mut worst) = (0, 0.0f64);
    for (img, frame) in frames.iter().enumerate() {
        let want = reference(&f64s(frame), [1, c, h, w], cfg);
        let got = &got[img * oc * hw..(img + 1) * oc * hw];
        for i in 0..hw {
            let px: Vec<f64> = (0..c).map(|ch| frame[ch * hw + i] as f64).collect();
            if !clear_cut(&px, cfg) {
                continue;
            }
            let at = format!("{what}: image {img} pixel {i}");
            if cfg.reason {
                assert_eq!(got[(oc - 1) * hw + i], want[(oc - 1) * hw + i] as f32, "{at}: reason");
            }
            let (g, r) = (got[i] as f64, want[i]);
            assert_eq!(g.is_nan(), r.is_nan(), "{at}: height {g} vs reference {r}");
            if !r.is_nan() {
                assert!((g - r).abs() < 1e-4, "{at}: height {g} vs reference {r}");
                worst = worst.max((g - r).abs());
            }
            if cfg.quality {
                let (g, q) = (got[hw + i] as f64, want[hw + i]);
                assert!(
                    if q.is_nan() { g.is_nan() } else { (g - q).abs() <= 1e-4 * q.abs().max(1.0) },
                    "{at}: quality {g} vs {q}"
                );
            }
            checked += 1;
        }
    }
    eprintln!("{what}: {checked}/{} pixels compared, max |GPU - CPU| {worst:.2e} µm", frames.len() * hw);
    checked
}

#[test]
fn gpu_matches_reference() {
    let mut rng = Rng::new(11);
    let three = ClassicalConfig {
        psi: PsiConfig::with(vec![4.2, 5.1, 6.3], 5),
        height_range: (-30.0, 45.0),
        quality: true,
        ..Default::default()
    };
    let one = ClassicalConfig {
        psi: PsiConfig::with(vec![5.0], 3),
        height_range: (-1.2, 1.2),
        quality: true,
        ..Default::default()
    };
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
        for &(base, n, h, w, kind) in &cases {
            for unwrap in [Unwrap::PerPixel, Unwrap::Weighted] {
                let cfg = &ClassicalConfig { unwrap, ..base.clone() };
                let hw = h * w;
                let range = (cfg.height_range.0 * 0.95, cfg.height_range.1 * 0.95);
                let frames: Vec<Vec<f32>> = (0..n)
                    .map(|_| match kind {
                        0 => random_frame(&mut rng, cfg, hw, range, 1.0),
                        1 => random_frame(&mut rng, cfg, hw, range, 0.0),
                        _ => rng.vec(cfg.in_channels() * hw, 0.0, 255.0),
                    })
                    .collect();
                let got = Classical::new(gpu, cfg.clone()).unwrap().solve(gpu, &frames.concat(), n, h, w).unwrap();
                let what = format!(
                    "{} L{} N{} {} n{n} {h}x{w} kind {kind}",
                    gpu.describe(),
                    cfg.lasers(),
                    cfg.psi.buckets,
                    unwrap.name()
                );
                if kind == 1 {
                    for frame in &frames {
                        for i in 0..hw {
                            let px: Vec<f64> = (0..cfg.in_channels()).map(|ch| frame[ch * hw + i] as f64).collect();
                            assert!(clear_cut(&px, cfg), "{what}: noiseless pixel {i} is ambiguous");
                        }
                    }
                }
                let checked = compare(&got, &frames, cfg, [h, w], &what);
                // Physical frames are almost never ambiguous; uniform noise often is.
                if kind != 2 {
                    assert!(checked * 10 >= n * hw * 9, "{what}: only {checked} of {} pixels clear-cut", n * hw);
                }
            }
        }
    }
}

#[test]
fn gpu_matches_reference_on_invalid_pixels_and_calibrated_steps() {
    let mut rng = Rng::new(23);
    let calibrated = PsiConfig {
        phase_steps: PhaseSteps::PerLaser(
            [[0.0, 95.0, 171.0, 268.0, 330.0], [2.0, 80.0, 185.0, 262.0, 340.0], [0.0, 91.0, 178.0, 275.0, 316.0]]
                .iter()
                .map(|d| d.iter().map(|v: &f64| v.to_radians()).collect())
                .collect(),
        ),
        ..PsiConfig::with(vec![4.2, 5.1, 6.3], 5)
    };
    let shared =
        PsiConfig { phase_steps: PhaseSteps::from_degrees(vec![vec![0.0, 85.0, 183.0, 271.0]]), ..Default::default() };
    let psis = [(PsiConfig::default(), (-100.0, 100.0)), (calibrated, (-30.0, 45.0)), (shared, (-60.0, 20.0))];
    // (psi, levels, n, h, w)
    let cases =
        [(0, true, 1, 23, 29), (0, true, 2, 1, 37), (0, false, 1, 9, 8), (1, true, 2, 11, 13), (2, true, 1, 19, 17)];
    for gpu in gpus() {
        for &(which, levels, n, h, w) in &cases {
            for unwrap in [Unwrap::PerPixel, Unwrap::Weighted] {
                let (psi, height_range) = psis[which].clone();
                let levels = if levels { u8_levels() } else { Levels::default() };
                let cfg = ClassicalConfig {
                    psi,
                    height_range,
                    quality: true,
                    unwrap,
                    levels,
                    reason: true,
                    ..Default::default()
                };
                let range = (height_range.0 * 0.95, height_range.1 * 0.95);
                let frames: Vec<Vec<f32>> = (0..n).map(|_| hard_frame(&mut rng, &cfg, h * w, range, true)).collect();
                let got = Classical::new(gpu, cfg.clone()).unwrap().solve(gpu, &frames.concat(), n, h, w).unwrap();
                let what = format!(
                    "{} psi {which} levels {} {} n{n} {h}x{w}",
                    gpu.describe(),
                    levels != Levels::default(),
                    unwrap.name()
                );
                let checked = compare(&got, &frames, &cfg, [h, w], &what);
                assert!(checked * 10 >= n * h * w * 8, "{what}: only {checked} of {} pixels clear-cut", n * h * w);
            }
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
    let cfg = ClassicalConfig { quality: true, unwrap: Unwrap::PerPixel, ..Default::default() };
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
        (
            "5 and 5.5 µm over ±100 µm",
            ClassicalConfig { psi: PsiConfig::with(vec![5.0, 5.5], 4), ..ok.clone() },
            "nearly coincide at heights 27.5 µm apart",
        ),
        (
            "one laser over two fringes",
            ClassicalConfig { psi: PsiConfig::with(vec![5.0], 4), height_range: (0.0, 5.0), ..ok.clone() },
            "undecidable",
        ),
        (
            "two equal steps of three",
            ClassicalConfig {
                psi: PsiConfig {
                    phase_steps: PhaseSteps::from_degrees(vec![vec![0.0, 0.0, 180.0]]),
                    ..PsiConfig::with(vec![5.0, 6.0], 3)
                },
                ..ok.clone()
            },
            "cannot separate offset, amplitude and phase",
        ),
        (
            "steps for 3 buckets of 4",
            ClassicalConfig {
                psi: PsiConfig {
                    phase_steps: PhaseSteps::from_degrees(vec![vec![0.0, 90.0, 180.0]]),
                    ..ok.psi.clone()
                },
                ..ok.clone()
            },
            "3 phase steps for 4 buckets",
        ),
        (
            "negative floor",
            ClassicalConfig { levels: Levels { min_b: -1.0, ..Levels::default() }, ..ok.clone() },
            "not negative",
        ),
        (
            "empty clip levels",
            ClassicalConfig { levels: Levels { clip_lo: 5.0, clip_hi: 5.0, ..Levels::default() }, ..ok.clone() },
            "clip levels",
        ),
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
