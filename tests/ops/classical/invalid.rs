//! What the solver refuses and what it weighs: dark, dim, saturated and non-finite pixels come out
//! NaN with their reason while a laser lost to saturation only costs precision; calibrated phase
//! steps remove the error nominal steps leave; the weighted mode's height is the inverse-variance
//! mean and its candidates stay inside the height range.

use super::{rmse_max, u8_levels};
use crate::common::{f64s, gpus};
use psi_gpu::nn::classical::Classical;
use psi_gpu::ops::classical::reference::{fit_pixel, height_at_true_orders};
use psi_gpu::ops::classical::{ClassicalConfig, Unwrap};
use psi_gpu::psi::buckets::{intensity, quantize_u8, render};
use psi_gpu::psi::reason::Reason;
use psi_gpu::psi::surface::seed_heights;
use psi_gpu::psi::{PhaseSteps, PsiConfig};
use psi_gpu::rng::Rng;

/// Regions of the test frame, by pixel column band.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Region {
    Good,
    /// Lights off: every bucket 0.
    Dark,
    /// Low contrast: B = 1 count on A = 128 (σ = 0.5 counts).
    Dim,
    /// Every bucket at 255.
    Saturated,
    /// Laser 1 saturated (A = 400), the others good.
    OneLaserSaturated,
    /// Lasers 1 and 2 saturated: 6.05 and 6.655 µm alone cannot decide ±100 µm.
    TwoLasersSaturated,
    /// One bucket NaN or infinite.
    NonFinite,
}

const REGIONS: [Region; 7] = [
    Region::Good,
    Region::Dark,
    Region::Dim,
    Region::Saturated,
    Region::OneLaserSaturated,
    Region::TwoLasersSaturated,
    Region::NonFinite,
];

fn region(x: usize, w: usize) -> Region {
    REGIONS[x * REGIONS.len() / w]
}

/// A u8-valued frame (as f32 counts) of the seed surface, σ = 2 counts, with a band of each
/// region; the truth.
pub(super) fn regions_frame(h: usize, w: usize) -> (Vec<f32>, Vec<f32>) {
    let truth = seed_heights(h, w);
    let psi = PsiConfig::default();
    let mut rng = Rng::new(3);
    let hw = h * w;
    let mut frame = vec![0f32; psi.channels() * hw];
    for (l, &wl) in psi.wavelengths.iter().enumerate() {
        for k in 0..psi.buckets {
            for i in 0..hw {
                let r = region(i % w, w);
                let (a, b) = match r {
                    Region::Dark => (0.0, 0.0),
                    Region::Dim => (128.0, 1.0),
                    Region::Saturated => (400.0, 0.0),
                    Region::OneLaserSaturated if l == 0 => (400.0, 100.0),
                    Region::TwoLasersSaturated if l < 2 => (400.0, 100.0),
                    _ => (128.0, 100.0),
                };
                let sigma = match r {
                    Region::Dark => 0.0,
                    Region::Dim => 0.5,
                    _ => 2.0,
                };
                let noise = sigma * rng.normal();
                let v = intensity(a, b, truth[i] as f64, wl as f64, psi.phase_step(l, k)) + noise;
                frame[(l * psi.buckets + k) * hw + i] = quantize_u8(&[v as f32])[0] as f32;
            }
        }
    }
    for i in (0..hw).filter(|i| region(i % w, w) == Region::NonFinite) {
        frame[(i % 16) * hw + i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
    }
    (frame, truth)
}

#[test]
fn invalid_pixels_are_nan_with_their_reason() {
    let (h, w) = (24, 70);
    let (frame, truth) = regions_frame(h, w);
    let hw = h * w;
    for gpu in gpus() {
        for unwrap in [Unwrap::PerPixel, Unwrap::Weighted] {
            let cfg = ClassicalConfig { unwrap, levels: u8_levels(), reason: true, ..Default::default() };
            let out = Classical::new(gpu, cfg).unwrap().solve(gpu, &frame, 1, h, w).unwrap();
            let what = format!("{} {}", gpu.describe(), unwrap.name());
            let mut worst = [0.0f64; 2];
            for i in 0..hw {
                let (height, reason) = (out[i], Reason::from_code(out[hw + i] as u8).unwrap());
                let r = region(i % w, w);
                let want = match r {
                    Region::Good | Region::OneLaserSaturated => Reason::Ok,
                    Region::Dark | Region::Dim => Reason::LowModulation,
                    Region::Saturated | Region::TwoLasersSaturated => Reason::Saturated,
                    Region::NonFinite => Reason::NonFiniteInput,
                };
                assert_eq!(reason, want, "{what}: pixel {i} in {r:?}");
                assert_eq!(height.is_nan(), want != Reason::Ok, "{what}: pixel {i} in {r:?}: height {height}");
                if want == Reason::Ok {
                    let k = (r == Region::OneLaserSaturated) as usize;
                    worst[k] = worst[k].max((height - truth[i]).abs() as f64);
                }
            }
            eprintln!("{what}: max error {:.4} µm (4 lasers), {:.4} µm (laser 1 saturated)", worst[0], worst[1]);
            assert!(worst[0] < 0.02 && worst[1] < 0.05, "{what}: max errors {worst:?} µm");
        }
    }
}

#[test]
fn noise_clipping_loses_few_pixels() {
    // σ = 30 counts on A + B = 228: most pixels have a bucket at 0 or 255, a few lose a laser.
    let (h, w) = (48, 64);
    let truth = seed_heights(h, w);
    let psi = PsiConfig::default();
    let mut rng = Rng::new(8);
    let frame: Vec<f32> = render(&truth, &psi, |_| (128.0, 100.0), || 30.0 * rng.normal())
        .into_iter()
        .map(|v| quantize_u8(&[v as f32])[0] as f32)
        .collect();
    let hw = h * w;
    let clipped = (0..hw).filter(|&i| (0..16).any(|c| [0.0, 255.0].contains(&frame[c * hw + i]))).count();
    let gpu = &gpus()[0];
    for unwrap in [Unwrap::PerPixel, Unwrap::Weighted] {
        let cfg = ClassicalConfig { unwrap, levels: u8_levels(), ..Default::default() };
        let out = Classical::new(gpu, cfg).unwrap().solve(gpu, &frame, 1, h, w).unwrap();
        let lost = out.iter().filter(|v| v.is_nan()).count();
        eprintln!("{}: {clipped} of {hw} pixels have a clipped bucket, {lost} are NaN", unwrap.name());
        assert!(clipped * 2 > hw && lost * 200 <= hw, "{clipped} clipped, {lost} lost of {hw}");
    }
}

/// Nominal steps plus up to ±7° of error, different per laser.
fn miscalibrated(buckets: usize) -> PhaseSteps {
    let errors = [[0.0, 4.0, -3.0, 6.0], [1.0, -5.0, 2.0, -4.0], [0.0, 7.0, 5.0, -2.0], [-1.0, -3.0, -6.0, 3.0]];
    PhaseSteps::from_degrees(
        errors.iter().map(|e| (0..buckets).map(|k| 360.0 * k as f64 / buckets as f64 + e[k]).collect()).collect(),
    )
}

#[test]
fn calibrated_steps_remove_the_step_error() {
    let (h, w) = (20, 36);
    let truth = seed_heights(h, w);
    for buckets in [4, 3] {
        let true_psi =
            PsiConfig { phase_steps: miscalibrated(buckets), ..PsiConfig::with(vec![5.0, 5.5, 6.05, 6.655], buckets) };
        let frame: Vec<f32> = render(&truth, &true_psi, |_| (128.0, 100.0), || 0.0).iter().map(|&v| v as f32).collect();
        for gpu in gpus() {
            for unwrap in [Unwrap::PerPixel, Unwrap::Weighted] {
                let solve = |psi: &PsiConfig| {
                    let cfg = ClassicalConfig { psi: psi.clone(), unwrap, ..Default::default() };
                    rmse_max(&Classical::new(gpu, cfg).unwrap().solve(gpu, &frame, 1, h, w).unwrap(), &truth)
                };
                let nominal = solve(&PsiConfig { phase_steps: PhaseSteps::Nominal, ..true_psi.clone() });
                let calibrated = solve(&true_psi);
                eprintln!(
                    "{} {} N = {buckets}: steps off by up to 7°: RMSE {:.2e} µm (max {:.2e}) with nominal steps, \
                     {:.2e} µm (max {:.2e}) with the true ones",
                    gpu.describe(),
                    unwrap.name(),
                    nominal.0,
                    nominal.1,
                    calibrated.0,
                    calibrated.1
                );
                assert!(calibrated.1 < 1e-4 && nominal.0 > 100.0 * calibrated.0, "{nominal:?} vs {calibrated:?}");
            }
        }
    }
}

#[test]
fn weighted_height_is_the_inverse_variance_mean() {
    // Each laser sees its own height h + e_l with its own B: the orders are clear, the mean is not.
    let psi = PsiConfig::default();
    let (h, e, b) = (12.3, [0.01, -0.03, 0.02, 0.04], [100.0, 20.0, 100.0, 20.0]);
    let mut px = Vec::new();
    for (l, &wl) in psi.wavelengths.iter().enumerate() {
        px.extend((0..4).map(|k| intensity(128.0, b[l], h + e[l], wl as f64, psi.phase_step(l, k)) as f32));
    }
    let wl: Vec<f64> = psi.wavelengths.iter().map(|&v| v as f64).collect();
    let weight = |l: usize| 4.0 * b[l] * b[l] / (wl[l] * wl[l]);
    let want_weighted = (0..4).map(|l| weight(l) * (h + e[l])).sum::<f64>() / (0..4).map(weight).sum::<f64>();
    let want_mean = (0..4).map(|l| h + e[l]).sum::<f64>() / 4.0;
    for (unwrap, want) in [(Unwrap::Weighted, want_weighted), (Unwrap::PerPixel, want_mean)] {
        let cfg = ClassicalConfig { unwrap, ..Default::default() };
        let fit = fit_pixel(&f64s(&px), &cfg);
        assert!((fit.height - want).abs() < 1e-5, "{}: reference {} vs {want}", unwrap.name(), fit.height);
        let floor = height_at_true_orders(&f64s(&px), &cfg, h);
        assert!((floor - want).abs() < 1e-5, "{}: at the true orders {floor} vs {want}", unwrap.name());
        for gpu in gpus() {
            let got = Classical::new(gpu, cfg.clone()).unwrap().solve(gpu, &px, 1, 1, 1).unwrap()[0] as f64;
            assert!((got - want).abs() < 2e-5, "{} {}: {got} vs {want}", gpu.describe(), unwrap.name());
        }
    }
    assert!((want_weighted - want_mean).abs() > 2e-3, "the test tells the two apart");
}

#[test]
fn weighted_candidates_stay_inside_the_range() {
    // Noiseless heights solved over a range narrower than them: inside, both modes find them;
    // outside, weighted never does (its candidates lie inside), while per-pixel's fringe of margin
    // finds those just beyond a range narrower than one fringe.
    let psi = PsiConfig::default();
    let gpu = &gpus()[0];
    for (range, span) in [((-10.0, 10.0), 12.0), ((-1.0, 1.0), 1.4)] {
        let hw = 400;
        let truth: Vec<f32> = (0..hw).map(|i| -span + 2.0 * span * i as f32 / (hw - 1) as f32).collect();
        let frame: Vec<f32> = render(&truth, &psi, |_| (128.0, 100.0), || 0.0).iter().map(|&v| v as f32).collect();
        let cfg = |unwrap| ClassicalConfig { unwrap, height_range: range, ..Default::default() };
        let solve = |unwrap| Classical::new(gpu, cfg(unwrap)).unwrap().solve(gpu, &frame, 1, 1, hw).unwrap();
        let (per_pixel, weighted) = (solve(Unwrap::PerPixel), solve(Unwrap::Weighted));
        let found = |t: f32, g: f32| (g - t).abs() < 1e-4;
        let outside = |t: f32| t < range.0 - 0.01 || t > range.1 + 0.01;
        let beyond = (0..hw).filter(|&i| outside(truth[i]) && found(truth[i], per_pixel[i])).count();
        assert_eq!(beyond > 0, span < 2.0, "{range:?}: per-pixel found {beyond} heights beyond the range");
        for i in 0..hw {
            let (t, g) = (truth[i], weighted[i]);
            if t > range.0 + 0.01 && t < range.1 - 0.01 {
                assert!(found(t, g) && found(t, per_pixel[i]), "{range:?} pixel {i}: {g}, {} vs {t}", per_pixel[i]);
            }
            if outside(t) {
                assert!(!found(t, g), "{range:?} pixel {i}: weighted found {t} outside the range");
                let px: Vec<f64> = (0..16).map(|c| frame[c * hw + i] as f64).collect();
                let fit = fit_pixel(&px, &cfg(Unwrap::Weighted));
                let u = fit.order as f64 + fit.lasers[fit.anchor].turns;
                let h_anchor = psi.wavelengths[fit.anchor] as f64 / 2.0 * u;
                let inside = (range.0 as f64..=range.1 as f64).contains(&h_anchor);
                assert!(fit.reason != Reason::Ok || inside, "{range:?} pixel {i}: candidate at {h_anchor} µm");
            }
        }
    }
}
