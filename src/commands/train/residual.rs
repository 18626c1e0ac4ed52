//! `train --residual`: the residual model's generated frames, fresh weights and validation.
//!
//! Frames: u8, 4 lasers × 4 buckets, heights within ±[`HEIGHT_SPAN`] µm — a third of them a
//! steep spherical cap (0.1–0.4 µm per pixel at the corners) raised or lowered at random, the
//! others a random surface (tilt, bumps, caps, steps, ripples) mapped onto a random sub-range
//! at least 2 µm wide; per frame the modulation B is drawn in [30, 110) counts (A = 128) and the
//! noise σ in [0, max); half of the frames get a dark (0) or saturated (255) rectangle over
//! every bucket, which the classical solver leaves NaN (the loss skips it).

use crate::dtype::HostType;
use crate::error::Result;
use crate::gpu::{Gpu, Precision};
use crate::io::frames::Frame;
use crate::io::weights::{NamedTensor, Weights};
use crate::nn::Model;
use crate::nn::classical::Classical;
use crate::nn::residual::{MODEL_KEY, MODEL_NAME, Residual, checked};
use crate::nn::unet::HEAD;
use crate::nn::unet::init::{he_init, to_weights};
use crate::ops::classical::{ClassicalConfig, Levels};
use crate::ops::residual::Feature;
use crate::psi::PsiConfig;
use crate::psi::buckets::{self, SynthConfig};
use crate::psi::surface::{random_heights_cpu, steep_heights};
use crate::rng::Rng;
use crate::tiling::region;

/// Generated heights stay within ±this (µm).
pub const HEIGHT_SPAN: f32 = 15.0;

/// An error larger than this (µm) is a wrong fringe order, not noise.
pub const OFF_UM: f64 = 1.0;

/// The generated frame of `seed`: `size` x `size`, noise σ drawn in [0, `max_noise`).
pub fn generated_frame(seed: u64, size: usize, max_noise: f32) -> Frame {
    let mut rng = Rng::new(seed ^ 0x7e51_d0a1);
    let heights = generated_heights(&mut rng, seed, size);
    let psi = PsiConfig { b: rng.range_f32(30.0, 110.0) as f32, ..PsiConfig::default() };
    let noise = rng.range_f32(0.0, max_noise as f64) as f32;
    let cfg = SynthConfig { psi, noise, seed: rng.next_u64() };
    let mut bytes = buckets::quantize_u8(&buckets::buckets(&heights, size, size, &cfg));
    if rng.uniform() < 0.5 {
        let level = if rng.uniform() < 0.5 { 0 } else { 255 };
        let (ph, pw) = (size / 8 + rng.below(size / 8 + 1), size / 8 + rng.below(size / 8 + 1));
        let (y0, x0) = (rng.below(size - ph + 1), rng.below(size - pw + 1));
        for plane in bytes.chunks_mut(size * size) {
            for y in y0..y0 + ph {
                plane[y * size + x0..y * size + x0 + pw].fill(level);
            }
        }
    }
    Frame { ty: HostType::U8, c: 16, h: size, w: size, bytes, truth: Some(heights) }
}

/// A steep cap shifted within the span, or a random surface mapped onto a random sub-range.
fn generated_heights(rng: &mut Rng, seed: u64, size: usize) -> Vec<f32> {
    let span = HEIGHT_SPAN as f64;
    let (mut heights, lo, hi) = if rng.uniform() < 1.0 / 3.0 {
        (steep_heights(size, size, rng.range_f32(0.1, 0.4)), None, None)
    } else {
        let lo = rng.range_f32(-span, span - 2.0);
        (random_heights_cpu(seed, size, size), Some(lo), Some(rng.range_f32(lo + 2.0, span)))
    };
    let (min, max) = heights.iter().fold((f64::MAX, f64::MIN), |(a, b), &h| (a.min(h as f64), b.max(h as f64)));
    let (lo, hi) = match (lo, hi) {
        (Some(lo), Some(hi)) => (lo, hi),
        // The cap keeps its shape (clipped to the span if it is taller), moved at random.
        _ => {
            let sag = (max - min).min(2.0 * span);
            let lo = rng.range_f32(-span, span - sag);
            (lo, lo + sag)
        }
    };
    let s = if max > min { (hi - lo) / (max - min) } else { 0.0 };
    for h in &mut heights {
        *h = (lo + (*h as f64 - min) * s) as f32;
    }
    heights
}

/// The features a fresh residual model reads.
pub const FEATURES: [Feature; 4] = Feature::ALL;

/// The residual metadata of a model reading `features` with `bound` (µm).
pub fn metadata(features: &[Feature], bound: f32) -> [(String, String); 3] {
    let names: Vec<&str> = features.iter().map(|f| f.name()).collect();
    [
        (MODEL_KEY.to_string(), MODEL_NAME.to_string()),
        ("features".to_string(), names.join(",")),
        ("bound".to_string(), bound.to_string()),
    ]
}

/// Fresh He-initialised weights of a residual model over `channels` buckets, the head zero (so
/// the untrained model is the classical solver exactly).
pub fn fresh_weights(channels: usize, base: usize, bound: f32, seed: u64) -> Weights {
    let mut state = he_init(channels + FEATURES.len(), 1, base, seed);
    for (name, _, data) in &mut state {
        if name.starts_with(HEAD) {
            data.fill(0.0);
        }
    }
    to_weights(&state, metadata(&FEATURES, bound))
}

/// The classical solver of u8-like frames of `ty` scaled by `scale`, as the residual model's
/// part and as the baseline (default configuration, levels of the type; robust).
pub fn classical_config(ty: HostType, scale: f32) -> Result<ClassicalConfig> {
    Ok(ClassicalConfig { levels: Levels::for_input(ty, scale, None, None)?, ..ClassicalConfig::default() })
}

/// Validation figures of one model: RMSE over the pixels it solved, the share of those off by
/// more than [`OFF_UM`], and the share it left NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub rmse: f64,
    pub off: f64,
    pub invalid: f64,
}

/// Sums over frames toward [`Figures`].
#[derive(Default)]
struct Sums {
    se: f64,
    off: usize,
    valid: usize,
    all: usize,
}

impl Sums {
    fn add(&mut self, out: &[f32], truth: &[f32]) {
        for (&h, &t) in out.iter().zip(truth) {
            self.all += 1;
            if h.is_finite() {
                let e = (h - t) as f64;
                self.se += e * e;
                self.off += (e.abs() > OFF_UM) as usize;
                self.valid += 1;
            }
        }
    }

    fn figures(&self) -> Figures {
        let v = self.valid.max(1) as f64;
        Figures {
            rmse: (self.se / v).sqrt(),
            off: self.off as f64 / v,
            invalid: (self.all - self.valid) as f64 / self.all.max(1) as f64,
        }
    }
}

/// The residual model of `state` + `meta` (f32) and its robust classical part alone, on `frames`
/// (each as one tile): their [`Figures`], model first.
pub fn validate(
    gpu: &Gpu,
    state: &[NamedTensor],
    meta: &[(String, String)],
    frames: &[Frame],
    scale: f32,
) -> Result<(Figures, Figures)> {
    let weights = to_weights(state, meta.iter().cloned());
    let config = classical_config(HostType::U8, scale)?;
    let model = Model::Residual(Residual::new(gpu, &weights, Precision::F32, config.clone())?);
    let (_, _, robust) = checked(&weights, config)?;
    let classical = Model::Classical(Classical::new(gpu, robust)?);
    let (mut m, mut c) = (Sums::default(), Sums::default());
    for f in frames {
        let truth = f.truth.as_ref().expect("validation frames are generated");
        for (model, sums) in [(&model, &mut m), (&classical, &mut c)] {
            let out = region::run_raw(gpu, model, f.ty, [f.c, f.h, f.w], &f.bytes, Some(scale))?;
            let (out, _) = out.into_raw_vec_and_offset();
            sums.add(&out[..f.h * f.w], truth);
        }
    }
    Ok((m.figures(), c.figures()))
}
