//! The pruned fringe-order search (`psi_gpu::ops::classical::prune`): on every adapter its
//! outputs equal scoring every candidate bit for bit — per-pixel, weighted and robust, on noisy,
//! low-contrast, steep, invalid and miscalibrated frames and other laser sets — and its f64 replay
//! shows how few candidates it scores.

use super::invalid::regions_frame;
use super::u8_levels;
use crate::common::{f64s, gpus};
use psi_gpu::nn::classical::Classical;
use psi_gpu::ops::classical::prune::{Count, count, sharpest};
use psi_gpu::ops::classical::{ClassicalConfig, Search, Unwrap};
use psi_gpu::psi::buckets::{SynthConfig, buckets, quantize_u8};
use psi_gpu::psi::surface::{seed_heights, steep_heights};
use psi_gpu::psi::{PhaseSteps, PsiConfig};

/// A u8-valued frame (as f32 counts) of `truth` with B = `b` and σ = `sigma` counts.
fn u8_frame(psi: &PsiConfig, truth: &[f32], [h, w]: [usize; 2], b: f32, sigma: f32, seed: u64) -> Vec<f32> {
    let synth = SynthConfig { psi: PsiConfig { b, ..psi.clone() }, noise: sigma, seed };
    quantize_u8(&buckets(truth, h, w, &synth)).iter().map(|&v| v as f32).collect()
}

/// The test frames: (what, config's lasers, frame, shape).
fn frames() -> Vec<(String, PsiConfig, Vec<f32>, [usize; 2])> {
    let (h, w) = (32, 48);
    let psi = PsiConfig::default();
    let smooth = seed_heights(h, w);
    let steep = steep_heights(h, w, 1.5);
    let mut out = vec![];
    for (b, sigma) in [(100.0, 2.0), (100.0, 30.0), (40.0, 15.0)] {
        out.push((
            format!("smooth B = {b} σ = {sigma}"),
            psi.clone(),
            u8_frame(&psi, &smooth, [h, w], b, sigma, 5),
            [h, w],
        ));
    }
    out.push(("steep σ = 2".into(), psi.clone(), u8_frame(&psi, &steep, [h, w], 100.0, 2.0, 6), [h, w]));
    out.push(("invalid regions".into(), psi.clone(), regions_frame(24, 70).0, [24, 70]));
    let three = PsiConfig::with(vec![4.2, 5.1, 6.3], 5);
    let low: Vec<f32> = smooth.iter().map(|v| v * 0.3).collect();
    out.push((
        "3 lasers × 5 buckets σ = 12".into(),
        three.clone(),
        u8_frame(&three, &low, [h, w], 100.0, 12.0, 7),
        [h, w],
    ));
    let steps = PsiConfig {
        phase_steps: PhaseSteps::Shared([0.0f64, 95.0, 178.0, 272.0].iter().map(|d| d.to_radians()).collect()),
        ..psi.clone()
    };
    out.push((
        "miscalibrated steps σ = 10".into(),
        steps.clone(),
        u8_frame(&steps, &smooth, [h, w], 100.0, 10.0, 8),
        [h, w],
    ));
    out
}

fn config(psi: &PsiConfig, unwrap: Unwrap, search: Search) -> ClassicalConfig {
    let range = if psi.lasers() == 3 { (-30.0, 45.0) } else { (-100.0, 100.0) };
    ClassicalConfig {
        psi: psi.clone(),
        height_range: range,
        unwrap,
        levels: u8_levels(),
        quality: true,
        reason: true,
        search,
    }
}

#[test]
fn pruned_equals_exhaustive_bit_for_bit() {
    for (what, psi, frame, [h, w]) in frames() {
        for unwrap in [Unwrap::PerPixel, Unwrap::Weighted, Unwrap::Robust] {
            for gpu in gpus() {
                let solve = |search| {
                    let cfg = config(&psi, unwrap, search);
                    Classical::new(gpu, cfg).unwrap().solve(gpu, &frame, 1, h, w).unwrap()
                };
                let (pruned, all) = (solve(Search::Pruned), solve(Search::Exhaustive));
                let at = format!("{} {what} {}", gpu.describe(), unwrap.name());
                let differ = pruned.iter().zip(&all).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert_eq!(differ, 0, "{at}: {differ} output values differ from the exhaustive search");
            }
        }
    }
}

/// Candidates visited and scored over every pixel of `frame`.
fn counts(frame: &[f32], [h, w]: [usize; 2], cfg: &ClassicalConfig) -> Count {
    let (hw, c) = (h * w, cfg.in_channels());
    let mut total = Count::default();
    for i in 0..hw {
        total += count(&f64s(&(0..c).map(|ch| frame[ch * hw + i]).collect::<Vec<_>>()), cfg);
    }
    total
}

#[test]
fn pruning_scores_few_candidates() {
    for (what, psi, frame, shape) in frames() {
        for unwrap in [Unwrap::PerPixel, Unwrap::Weighted] {
            let n = counts(&frame, shape, &config(&psi, unwrap, Search::Pruned));
            let share = n.scored as f64 / n.candidates as f64;
            let px = (shape[0] * shape[1]) as f64;
            eprintln!(
                "{what} {}: {:.1} candidates per pixel, {:.1} scored ({:.0} %)",
                unwrap.name(),
                n.candidates as f64 / px,
                n.scored as f64 / px,
                100.0 * share
            );
            assert!(
                n.candidates > 0 && share < 0.45,
                "{what} {}: scored {:.0} % of the candidates",
                unwrap.name(),
                100.0 * share
            );
        }
    }
}

#[test]
fn the_sharpest_laser_steps_most_per_candidate() {
    let cfg = ClassicalConfig::default();
    // r = 5/5.5, 5/6.05, 5/6.655 step by 0.09, 0.17 and 0.25 of a fringe.
    assert_eq!(sharpest(&cfg, 0, 0b1111, true), Some(3));
    assert_eq!(sharpest(&cfg, 0, 0b0111, true), Some(2));
    assert_eq!(sharpest(&cfg, 3, 0b1111, false), Some(0));
    assert_eq!(sharpest(&cfg, 3, 0b1111, true), None);
    assert_eq!(sharpest(&cfg, 1, 0b0010, false), None);
}

/// Timing, not correctness (ignored: run by name): the solve of a 512² σ = 2 frame, pruned and
/// exhaustive alternately, the least of 5 runs each, per unwrap mode and adapter.
#[test]
#[ignore]
fn pruned_and_exhaustive_timing() {
    let (h, w) = (512, 512);
    let psi = PsiConfig::default();
    let frame = u8_frame(&psi, &seed_heights(h, w), [h, w], 100.0, 2.0, 11);
    for gpu in gpus() {
        for unwrap in [Unwrap::PerPixel, Unwrap::Weighted, Unwrap::Robust] {
            let models =
                [Search::Pruned, Search::Exhaustive].map(|s| Classical::new(gpu, config(&psi, unwrap, s)).unwrap());
            let mut best = [f64::INFINITY; 2];
            for _ in 0..5 {
                for (model, t) in models.iter().zip(&mut best) {
                    let start = std::time::Instant::now();
                    model.solve(gpu, &frame, 1, h, w).unwrap();
                    *t = t.min(start.elapsed().as_secs_f64());
                }
            }
            eprintln!("{} {}: pruned {:.3} s, exhaustive {:.3} s", gpu.describe(), unwrap.name(), best[0], best[1]);
        }
    }
}
