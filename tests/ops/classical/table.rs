//! The accuracy table of issue 16 on frames of the CPU bucket model (u8, A = 128, four lasers ×
//! four buckets): RMSE and share of pixels off by more than 1 µm, per-pixel vs weighted vs
//! robust, and the noise floor (the heights when every order is right: each laser's height at the
//! order nearest the truth, combined as the mode combines them — robust as weighted), with the
//! robust solve's time over the per-pixel one's. Ignored (a minute on the software
//! driver); run it with
//!
//! ```text
//! cargo test --test ops classical::table -- --ignored --nocapture
//! ```

use super::u8_levels;
use crate::common::{f64s, gpus};
use psi_gpu::nn::classical::Classical;
use psi_gpu::ops::classical::reference::height_at_true_orders;
use psi_gpu::ops::classical::{ClassicalConfig, Levels, Unwrap};
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::buckets::{SynthConfig, buckets, quantize_u8};
use psi_gpu::psi::surface::{coord, seed_heights, steep_heights};

/// A spherical cap from +95 µm at the centre to −95 µm at the corners (about 2 µm per pixel at
/// the rim of a 256² frame: nearly a fringe per pixel for the 5 µm laser).
fn steep(h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        for x in 0..w {
            let r2 = (coord(x, w).powi(2) + coord(y, h).powi(2)) / 2.0;
            out.push((95.0 * (1.0 - 2.0 * r2)) as f32);
        }
    }
    out
}

/// (RMSE over the finite pixels, share off by > 1 µm, share NaN), shares in %.
fn score(got: &[f32], truth: &[f32]) -> (f64, f64, f64) {
    let finite: Vec<f64> = got.iter().zip(truth).filter(|(g, _)| g.is_finite()).map(|(g, t)| (g - t) as f64).collect();
    let rmse = (finite.iter().map(|e| e * e).sum::<f64>() / finite.len().max(1) as f64).sqrt();
    let off = finite.iter().filter(|e| e.abs() > 1.0).count() as f64;
    let n = truth.len() as f64;
    (rmse, 100.0 * off / n, 100.0 * (n - finite.len() as f64) / n)
}

/// RMSE of the heights at the true orders (the reference, f64).
fn floor(frame: &[f32], truth: &[f32], cfg: &ClassicalConfig) -> f64 {
    let hw = truth.len();
    let se: f64 = (0..hw)
        .map(|i| {
            let px: Vec<f32> = (0..cfg.in_channels()).map(|c| frame[c * hw + i]).collect();
            (height_at_true_orders(&f64s(&px), cfg, truth[i] as f64) - truth[i] as f64).powi(2)
        })
        .filter(|e| e.is_finite())
        .sum();
    (se / hw as f64).sqrt()
}

#[test]
#[ignore]
fn table() {
    let (h, w) = (256, 256);
    let gpu = &gpus()[0];
    let config = |unwrap, levels| ClassicalConfig { unwrap, levels, ..Default::default() };
    let today = config(Unwrap::PerPixel, Levels::default());
    let per_pixel = config(Unwrap::PerPixel, u8_levels());
    let weighted = config(Unwrap::Weighted, u8_levels());
    let robust = config(Unwrap::Robust, u8_levels());
    println!("{}, {h} x {w} u8 frames, A = 128, ±100 µm searched\n", gpu.describe());
    println!(
        "| surface | B | σ | today: RMSE µm, > 1 µm | per-pixel: RMSE, > 1 µm, NaN | weighted: RMSE, > 1 µm, NaN | \
         robust: RMSE, > 1 µm, NaN | floor per-pixel | floor weighted | robust / floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let surfaces = [
        ("smooth (seed)", seed_heights(h, w)),
        ("steep (cap ±95)", steep(h, w)),
        ("steep 0.5 µm/px", steep_heights(h, w, 0.5)),
    ];
    for (name, truth) in surfaces {
        for b in [100.0, 40.0] {
            for sigma in [2.0, 10.0, 15.0, 20.0, 30.0] {
                let synth = SynthConfig { psi: PsiConfig { b, ..Default::default() }, noise: sigma, seed: 7 };
                let frame: Vec<f32> = quantize_u8(&buckets(&truth, h, w, &synth)).iter().map(|&v| v as f32).collect();
                let run = |cfg: &ClassicalConfig| {
                    score(&Classical::new(gpu, cfg.clone()).unwrap().solve(gpu, &frame, 1, h, w).unwrap(), &truth)
                };
                let (t, p, q, r) = (run(&today), run(&per_pixel), run(&weighted), run(&robust));
                let fw = floor(&frame, &truth, &weighted);
                println!(
                    "| {name} | {b} | {sigma} | {:.4}, {:.3} % | {:.4}, {:.3} %, {:.3} % | {:.4}, {:.3} %, {:.3} % | \
                     {:.4}, {:.3} %, {:.3} % | {:.4} | {fw:.4} | {:.2} |",
                    t.0,
                    t.1,
                    p.0,
                    p.1,
                    p.2,
                    q.0,
                    q.1,
                    q.2,
                    r.0,
                    r.1,
                    r.2,
                    floor(&frame, &truth, &per_pixel),
                    r.0 / fw
                );
            }
        }
    }
}
