//! `--unwrap robust` (`psi_gpu::ops::classical::robust`) on every adapter against its f64 CPU
//! reference: the same decisions, NaN positions and reasons; on a noisy frame the prior changes
//! decisions and leaves no order wrong, on a steep one the guard keeps every pixel's own order
//! (which the prior alone would break); tiles computed with the model's halo equal the whole frame.

use super::invalid::regions_frame;
use super::{clear_cut, u8_levels};
use crate::common::{f64s, gpus};
use psi_gpu::nn::classical::Classical;
use psi_gpu::ops::classical::reference::{classical as per_pixel_reference, fit_pixel};
use psi_gpu::ops::classical::robust::{DECISIVE_CHI2, PASSES, REACH, halo, passes, robust as reference};
use psi_gpu::ops::classical::{ClassicalConfig, Unwrap};
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::buckets::{SynthConfig, buckets, quantize_u8};
use psi_gpu::psi::reason::Reason;
use psi_gpu::psi::surface::{seed_heights, steep_heights};

/// A u8-valued frame (as f32 counts) of `truth` with B = `b` and σ = `sigma` counts.
fn u8_frame(truth: &[f32], [h, w]: [usize; 2], b: f32, sigma: f32, seed: u64) -> Vec<f32> {
    let synth = SynthConfig { psi: PsiConfig { b, ..Default::default() }, noise: sigma, seed };
    quantize_u8(&buckets(truth, h, w, &synth)).iter().map(|&v| v as f32).collect()
}

fn robust_config() -> ClassicalConfig {
    ClassicalConfig { unwrap: Unwrap::Robust, levels: u8_levels(), quality: true, reason: true, ..Default::default() }
}

/// Pixels off the truth by more than 1 µm or NaN.
fn wrong(heights: &[f64], truth: &[f32]) -> usize {
    heights.iter().zip(truth).filter(|&(&g, &t)| g.is_nan() || (g - t as f64).abs() > 1.0).count()
}

/// The GPU's `[1, out_c, h, w]` output against the reference's: the same reasons and NaN
/// positions everywhere, heights within 1e-4 µm where the pixel's own fit is clear-cut at f32
/// precision (`super::clear_cut`) and within 0.05 µm (the same order: another order moves the
/// height by a fringe's share, ≥ 0.25 µm) elsewhere. Returns the clear-cut pixels.
fn compare(got: &[f32], want: &[f64], frame: &[f32], cfg: &ClassicalConfig, [h, w]: [usize; 2], what: &str) -> usize {
    let (hw, oc, c) = (h * w, cfg.out_channels(), cfg.in_channels());
    let (mut clear, mut worst) = (0, 0.0f64);
    for i in 0..hw {
        let at = format!("{what}: pixel {i}");
        assert_eq!(got[(oc - 1) * hw + i] as f64, want[(oc - 1) * hw + i], "{at}: reason");
        let (g, r) = (got[i] as f64, want[i]);
        assert_eq!(g.is_nan(), r.is_nan(), "{at}: height {g} vs reference {r}");
        if r.is_nan() {
            continue;
        }
        let px: Vec<f64> = (0..c).map(|ch| frame[ch * hw + i] as f64).collect();
        let tol = if clear_cut(&px, cfg) { 1e-4 } else { 0.05 };
        clear += (tol < 0.01) as usize;
        assert!((g - r).abs() < tol, "{at}: height {g} vs reference {r}");
        worst = worst.max((g - r).abs());
    }
    eprintln!("{what}: {clear}/{hw} pixels clear-cut, max |GPU - CPU| {worst:.2e} µm");
    clear
}

/// Solve `frame` with `cfg` on every adapter and compare with the reference, which it returns;
/// at least the share `min_clear` of the pixels must be clear-cut.
fn check(frame: &[f32], [h, w]: [usize; 2], cfg: &ClassicalConfig, min_clear: f64, what: &str) -> Vec<f64> {
    let want = reference(&f64s(frame), [1, cfg.in_channels(), h, w], cfg);
    for gpu in gpus() {
        let got = Classical::new(gpu, cfg.clone()).unwrap().solve(gpu, frame, 1, h, w).unwrap();
        let clear = compare(&got, &want, frame, cfg, [h, w], &format!("{} {what}", gpu.describe()));
        assert!(clear as f64 >= min_clear * (h * w) as f64, "{what}: only {clear} of {} pixels clear-cut", h * w);
    }
    want
}

#[test]
fn noisy_frame_the_prior_fixes_the_orders() {
    let (h, w) = (48, 64);
    let truth = seed_heights(h, w);
    let frame = u8_frame(&truth, [h, w], 100.0, 30.0, 7);
    let cfg = robust_config();
    let want = check(&frame, [h, w], &cfg, 0.9, "seed surface, B = 100, σ = 30");
    let weighted =
        per_pixel_reference(&f64s(&frame), [1, 16, h, w], &ClassicalConfig { unwrap: Unwrap::Weighted, ..cfg.clone() });
    let (before, after) = (wrong(&weighted[..h * w], &truth), wrong(&want[..h * w], &truth));
    eprintln!("σ = 30: {before} pixels wrong or NaN per pixel (weighted), {after} robust, of {}", h * w);
    assert!(before * 20 > h * w, "the frame should defeat the per-pixel decision: {before} wrong");
    assert_eq!(after, 0, "robust leaves {after} pixels wrong or unresolved");
}

#[test]
fn steep_frame_the_guard_keeps_the_own_orders() {
    let (h, w) = (48, 64);
    let truth = steep_heights(h, w, 1.5);
    let frame = u8_frame(&truth, [h, w], 100.0, 2.0, 9);
    let cfg = robust_config();
    let want = check(&frame, [h, w], &cfg, 0.9, "steep cap 1.5 µm/px, σ = 2");
    let weighted =
        per_pixel_reference(&f64s(&frame), [1, 16, h, w], &ClassicalConfig { unwrap: Unwrap::Weighted, ..cfg.clone() });
    assert_eq!(&want[..h * w], &weighted[..h * w], "robust must keep every decisive pixel's own height");
    assert_eq!(wrong(&want[..h * w], &truth), 0);
    // The prior without the guard (an infinite margin needed to keep the own order) breaks pixels.
    let hw = h * w;
    let fits: Vec<_> =
        (0..hw).map(|i| fit_pixel(&(0..16).map(|c| frame[c * hw + i] as f64).collect::<Vec<_>>(), &cfg)).collect();
    let unguarded = passes(&fits, [h, w], &cfg, f64::INFINITY, PASSES, REACH);
    let broken = wrong(&unguarded, &truth);
    eprintln!("steep cap: the prior without its guard breaks {broken} of {hw} pixels; with it none");
    assert!(broken > 0, "the steep frame should need the guard");
    assert_eq!(wrong(&passes(&fits, [h, w], &cfg, DECISIVE_CHI2, PASSES, REACH), &truth), 0);
}

#[test]
fn invalid_pixels_and_other_configurations() {
    // Dark, dim, saturated and non-finite bands: NaN with their reasons; they never steer.
    let (h, w) = (24, 70);
    let (frame, _) = regions_frame(h, w);
    let want = check(&frame, [h, w], &robust_config(), 0.25, "invalid regions");
    let weighted = per_pixel_reference(
        &f64s(&frame),
        [1, 16, h, w],
        &ClassicalConfig { unwrap: Unwrap::Weighted, ..robust_config() },
    );
    for i in 0..h * w {
        if weighted[2 * h * w + i] != Reason::Ok.code() as f64 {
            assert_eq!(want[2 * h * w + i], weighted[2 * h * w + i], "pixel {i}: an invalid pixel keeps its reason");
        }
    }
    // Three lasers, five buckets, another range; thin and single-pixel frames; no floor.
    let three = ClassicalConfig {
        psi: PsiConfig::with(vec![4.2, 5.1, 6.3], 5),
        height_range: (-30.0, 45.0),
        ..robust_config()
    };
    for (cfg, [h, w], sigma) in
        [(&three, [17, 23], 12.0), (&robust_config(), [1, 37], 20.0), (&robust_config(), [1, 1], 5.0)]
    {
        let truth: Vec<f32> = seed_heights(h, w).iter().map(|v| v * 0.4).collect();
        let synth = SynthConfig { psi: cfg.psi.clone(), noise: sigma, seed: 3 };
        let frame: Vec<f32> = quantize_u8(&buckets(&truth, h, w, &synth)).iter().map(|&v| v as f32).collect();
        check(&frame, [h, w], cfg, 0.8, &format!("{} lasers {h}x{w} σ = {sigma}", cfg.lasers()));
    }
}

#[test]
fn tiles_with_the_halo_equal_the_whole_frame() {
    let (h, w) = (40, 52);
    let truth = seed_heights(h, w);
    let frame = u8_frame(&truth, [h, w], 100.0, 30.0, 5);
    let cfg = robust_config();
    for gpu in gpus() {
        let model = Classical::new(gpu, cfg.clone()).unwrap();
        assert_eq!(model.halo(), halo());
        assert_eq!(
            Classical::new(gpu, ClassicalConfig { unwrap: Unwrap::PerPixel, ..Default::default() }).unwrap().halo(),
            0
        );
        let whole = model.solve(gpu, &frame, 1, h, w).unwrap();
        // Crops touching the frame's border on some sides; inside a crop, a pixel at least the
        // halo away from every crop edge that is not a frame edge must come out the same.
        for (y0, y1, x0, x1) in [(5, 40, 0, 30), (0, 22, 17, 52), (9, 31, 11, 41)] {
            let (ch, cw) = (y1 - y0, x1 - x0);
            let crop: Vec<f32> = (0..16)
                .flat_map(|c| (y0..y1).flat_map(move |y| (x0..x1).map(move |x| (c, y, x))))
                .map(|(c, y, x)| frame[(c * h + y) * w + x])
                .collect();
            let tile = model.solve(gpu, &crop, 1, ch, cw).unwrap();
            let inner = |v: usize, lo: usize, hi: usize, n: usize| {
                (lo == 0 || v >= lo + model.halo()) && (hi == n || v + model.halo() < hi)
            };
            let mut compared = 0;
            for y in (y0..y1).filter(|&y| inner(y, y0, y1, h)) {
                for x in (x0..x1).filter(|&x| inner(x, x0, x1, w)) {
                    for c in 0..3 {
                        let (a, b) = (whole[(c * h + y) * w + x], tile[(c * ch + y - y0) * cw + x - x0]);
                        assert_eq!(a.to_bits(), b.to_bits(), "crop {y0}..{y1} x {x0}..{x1}: ({y}, {x}) channel {c}");
                    }
                    compared += 1;
                }
            }
            assert!(compared > 0);
            eprintln!("{}: crop {y0}..{y1} x {x0}..{x1}: {compared} pixels equal the whole frame", gpu.describe());
        }
    }
}

#[test]
fn robust_plan() {
    let gpu = &gpus()[0];
    let model = Classical::new(gpu, robust_config()).unwrap();
    let plan = model.plan(gpu, 2, 5, 7).unwrap();
    // Solve, noise floor, the first prior pass, each later one behind its gate, the last gate
    // (which zeroes the count for the next batch), the output.
    let labels: Vec<&str> = plan.dispatches.iter().map(|d| d.label).collect();
    let mut want = vec!["robust_solve", "robust_noise", "robust_prior"];
    want.extend(std::iter::repeat_n(["robust_gate", "robust_prior"], PASSES - 1).flatten());
    want.extend(["robust_gate", "robust_emit"]);
    assert_eq!(labels, want);
    assert_eq!(plan.buffers.iter().map(|t| t.shape).collect::<Vec<_>>(), [[2, 17, 5, 7], [2, 1, 5, 7], [2, 1, 5, 7]]);
    assert_eq!(plan.bytes, ((16 + 3 + 17 + 2) * 2 * 35 * 4) as u64);
}

/// A frame of B = `b` and σ = `sigma` with a dark square (B = 0) in its middle; the square's mask.
fn dark_square_frame([h, w]: [usize; 2], b: f32, sigma: f32) -> (Vec<f32>, Vec<f32>, Vec<bool>) {
    let truth = seed_heights(h, w);
    let (lit, dark) = (u8_frame(&truth, [h, w], b, sigma, 21), u8_frame(&truth, [h, w], 0.0, sigma, 22));
    let square: Vec<bool> =
        (0..h * w).map(|i| (h / 4..3 * h / 4).contains(&(i / w)) && (w / 4..3 * w / 4).contains(&(i % w))).collect();
    let frame = (0..lit.len()).map(|j| if square[j % (h * w)] { dark[j] } else { lit[j] }).collect();
    (frame, truth, square)
}

#[test]
fn the_noise_floor_drops_dark_pixels_and_keeps_good_ones() {
    let (h, w) = (64, 64);
    for (b, sigma) in [(100.0, 30.0), (40.0, 15.0), (100.0, 2.0)] {
        let (frame, truth, square) = dark_square_frame([h, w], b, sigma);
        let want = check(&frame, [h, w], &robust_config(), 0.5, &format!("dark square, B = {b}, σ = {sigma}"));
        let hw = h * w;
        let low = |i: usize| want[2 * hw + i] == Reason::LowModulation.code() as f64;
        let dark_kept = (0..hw).filter(|&i| square[i] && !low(i)).count();
        let good: Vec<usize> = (0..hw).filter(|&i| !square[i]).collect();
        let lost = good.iter().filter(|&&i| low(i)).count();
        let off = good.iter().filter(|&&i| !want[i].is_nan() && (want[i] - truth[i] as f64).abs() > 1.0).count();
        eprintln!(
            "B = {b}, σ = {sigma}: {dark_kept} of {} dark pixels kept, {lost} of {} good pixels dropped, {off} off by > 1 µm",
            hw - good.len(),
            good.len()
        );
        assert!(dark_kept * 100 <= hw - good.len(), "B = {b}, σ = {sigma}: {dark_kept} dark pixels kept a height");
        assert!(lost * 200 <= good.len(), "B = {b}, σ = {sigma}: {lost} good pixels dropped");
        assert_eq!(off, 0, "B = {b}, σ = {sigma}");
    }
}

/// Timing, not correctness (ignored: run by name): each of the robust solver's dispatches alone
/// on a 512² frame, the least of 5 runs, beside the per-pixel solver's one dispatch.
#[test]
#[ignore]
fn robust_dispatch_timing() {
    let (h, w) = (512, 512);
    for sigma in [2.0, 30.0] {
        let frame = u8_frame(&seed_heights(h, w), [h, w], 100.0, sigma, 13);
        for gpu in gpus() {
            let time = |cfg: ClassicalConfig| {
                let plan = Classical::new(gpu, cfg).unwrap().plan(gpu, 1, h, w).unwrap();
                plan.input.upload(gpu, &frame);
                let mut best = vec![f64::INFINITY; plan.dispatches.len()];
                for _ in 0..5 {
                    for (d, t) in plan.dispatches.iter().zip(&mut best) {
                        let start = std::time::Instant::now();
                        gpu.run(&[d]).unwrap();
                        *t = t.min(start.elapsed().as_secs_f64());
                    }
                }
                best
            };
            let per_pixel = time(ClassicalConfig { unwrap: Unwrap::PerPixel, ..robust_config() });
            let weighted = time(ClassicalConfig { unwrap: Unwrap::Weighted, ..robust_config() });
            let robust = time(robust_config());
            eprintln!(
                "{} σ = {sigma}: per-pixel {:.3} s, weighted {:.3} s, robust {:?} s (sum {:.3})",
                gpu.describe(),
                per_pixel[0],
                weighted[0],
                robust.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                robust.iter().sum::<f64>()
            );
        }
    }
}
