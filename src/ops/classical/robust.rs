//! `--unwrap robust` on the CPU in f64: the weighted per-pixel likelihood plus a spatial prior
//! that re-decides a pixel's fringe order only where its own cost does not decide it, step for
//! step as the shader's passes (`robust_*` in `shaders/classical_robust.wgsl`).
//!
//! 1. **Solve**: every pixel as [`Unwrap::Weighted`](super::Unwrap::Weighted) does — the anchor
//!    (laser of most weight), its best order over exactly the range, that order's cost and the
//!    runner-up's; the height is the lasers' inverse-variance mean at that order.
//! 2. **Noise floor**: a valid pixel whose modulation the noise explains is dropped as low
//!    modulation (NaN, [`Reason::LowModulation`]) before any pass reads it. The noise comes from
//!    the frame: each pixel's N-step fits that used every bucket leave a residual sum of squares
//!    of N − 3 degrees of freedom per laser; σ̂² is the lower median, over the valid pixels of its
//!    neighbourhood that have one (itself included), of their variance estimates, over the median
//!    of χ²_k/k ([`noise_median`]). For pure noise (B = 0) `Σ_l n_l·B̂_l² / 2σ²` is a χ² of 2L
//!    degrees of freedom, so a pixel below its quantile at [`NOISE_Z_ALONE`] (which 1 in 100
//!    pure-noise pixels passes) is dropped, and one below the quantile at [`NOISE_Z`] (1 in 1000)
//!    when most valid pixels of its neighbourhood are too (B = 40 at σ = 15 falls below the latter
//!    about once in 200 pixels, alone): on u8 frames at σ = 30 counts a dark patch's modulation estimate is
//!    about 0.9σ — over the fixed 3-count floor — while B = 100 stands at 3.3σ. Frames of 3
//!    buckets (no residual) or calibrated steps have no estimate and no such floor.
//! 3. **Prior**, [`PASSES`] times over the heights of the pass before (the solve's first): for a
//!    valid pixel, the lower median of the finite heights of its (2r+1)² neighbourhood, itself
//!    left out, and the least-cost anchor candidate of the range within [`REACH`] fringes of
//!    that median (one candidate: the one nearest it). The pixel takes that candidate unless its
//!    own best costs less by more than its threshold — then its own evidence is *decisive* and it
//!    keeps its best. With no finite neighbour, or no candidate of the range near the median, it
//!    keeps its best if the runner-up loses by more than the threshold, else it is unresolved
//!    (NaN, [`Reason::OrderUnresolved`]). Invalid pixels are NaN and never steer.
//! 4. **The guard's threshold** is [`DECISIVE_CHI2`] in χ² units: `8π²·cost/σ²` is a χ² of
//!    L − 1 degrees of freedom for camera noise σ, so the lower median best cost `c̃` of the valid
//!    pixels of the neighbourhood (itself included) over the median of that χ² estimates
//!    `σ²/8π²` without knowing σ, and the threshold is `DECISIVE_CHI2 · c̃ / median(χ²_{L−1})`. At
//!    low noise every wrong candidate costs hundreds of χ² units more, so the prior never moves a
//!    pixel (on steep slopes, where a one-sided neighbourhood at the frame border puts the median
//!    a fringe off, the unguarded prior breaks pixels); at σ = 30 counts a wrong order rarely
//!    beats the right one by 49 units, so the prior fixes it.
//!
//! The height is always the pixel's own inverse-variance mean at the order chosen, from its own
//! phases: nothing is smoothed. Each pass reads only pixels within r of the one it writes, and
//! the neighbourhood is the part inside the frame (as does the noise floor), so a tile computed
//! with a halo of [`halo`] pixels equals the whole frame.

use super::ClassicalConfig;
use super::reference::{PixelFit, Status, fit_pixel};
use crate::psi::reason::Reason;

/// Neighbourhood radius r of the prior passes ((2r+1)² pixels; the shader's ROBUST_RADIUS).
pub const RADIUS: usize = 2;
/// Half-width of the prior's window, in fringes of the anchor.
pub const REACH: f64 = 0.5;
/// Prior passes.
pub const PASSES: usize = 3;
/// Least margin, in χ² units, by which a pixel's own best must beat the prior's candidate (or,
/// with no prior, the runner-up) for its own evidence to decide.
pub const DECISIVE_CHI2: f64 = 49.0;

/// The normal quantile of the noise floor's test: a pure-noise pixel's modulation passes it with
/// probability 1e-3 ...
pub const NOISE_Z: f64 = 3.090232;
/// ... and this one with probability 1e-2: below it a pixel is dropped whatever its neighbours.
pub const NOISE_Z_ALONE: f64 = 2.326348;

/// Pixels of reach: the noise floor and each prior pass read r pixels away.
pub fn halo() -> usize {
    RADIUS * (PASSES + 1)
}

/// `median(χ²_k)/k` for the `k = L·(N − 3)` degrees of freedom of a pixel's variance estimate
/// when every laser is fitted from all its buckets (1 without any).
pub fn noise_median(config: &ClassicalConfig) -> f64 {
    let k = config.lasers() * config.psi.buckets.saturating_sub(3);
    if k == 0 { 1.0 } else { median_chi2(k) / k as f64 }
}

/// The quantile of χ² with `k` degrees of freedom at the normal quantile `z` (Wilson–Hilferty).
pub fn chi2_quantile(k: f64, z: f64) -> f64 {
    let v = 2.0 / (9.0 * k);
    k * (1.0 - v + z * v.sqrt()).powi(3)
}

/// A pixel's variance estimate (counts²): the residual sums of squares of its usable lasers'
/// fits over their degrees of freedom; `None` when it is invalid or has none.
fn variance(fit: &PixelFit, buckets: usize) -> Option<f64> {
    let usable = fit.lasers.iter().filter(|f| f.status == Status::Usable);
    let (rss, dof) = usable.filter_map(|f| f.rss).fold((0.0, 0), |(r, d), v| (r + v, d + buckets - 3));
    (fit.reason == Reason::Ok && dof > 0).then(|| rss / dof as f64)
}

/// The noise floor over one image's fits: each valid pixel whose modulation its neighbourhood's
/// noise explains becomes low modulation (NaN).
pub fn noise_floor(fits: &mut [PixelFit], hw: [usize; 2], config: &ClassicalConfig) {
    let var: Vec<Option<f64>> = fits.iter().map(|f| variance(f, config.psi.buckets)).collect();
    let wl: Vec<f64> = config.psi.wavelengths.iter().map(|&v| v as f64).collect();
    // Σ n·B² / 2σ² of a pixel's usable lasers less its pure-noise χ² quantile at z.
    let excess = |fit: &PixelFit, sigma2: f64, z: f64| {
        let usable: Vec<usize> = (0..wl.len()).filter(|&l| fit.lasers[l].status == Status::Usable).collect();
        let modulation: f64 = usable.iter().map(|&l| fit.lasers[l].weight(wl[l]) * wl[l] * wl[l]).sum();
        modulation / (2.0 * sigma2) - chi2_quantile(2.0 * usable.len() as f64, z)
    };
    let drop: Vec<bool> = (0..fits.len())
        .map(|i| {
            let hood = || neighbourhood(i, hw, RADIUS).filter(|&j| var[j].is_some());
            let Some(median) = lower_median(hood().filter_map(|j| var[j]).collect()) else {
                return false;
            };
            let sigma2 = median / noise_median(config);
            if fits[i].reason != Reason::Ok || sigma2 <= 0.0 || excess(&fits[i], sigma2, NOISE_Z) >= 0.0 {
                return false;
            }
            excess(&fits[i], sigma2, NOISE_Z_ALONE) < 0.0
                || lower_median(hood().map(|j| excess(&fits[j], sigma2, NOISE_Z)).collect()).is_some_and(|m| m < 0.0)
        })
        .collect();
    for (fit, drop) in fits.iter_mut().zip(drop) {
        if drop {
            (fit.reason, fit.height) = (Reason::LowModulation, f64::NAN);
        }
    }
}

/// The median of χ² with `dof` degrees of freedom (Wilson–Hilferty; 0 for none).
pub fn median_chi2(dof: usize) -> f64 {
    if dof == 0 {
        return 0.0;
    }
    let k = dof as f64;
    k * (1.0 - 2.0 / (9.0 * k)).powi(3)
}

/// The threshold's multiplier for a margin of `chi2` χ² units: threshold = factor · c̃.
pub fn decisive_factor(config: &ClassicalConfig, chi2: f64) -> f64 {
    match median_chi2(config.lasers() - 1) {
        0.0 => 0.0,
        m => chi2 / m,
    }
}

/// The lower median (element ⌊(k−1)/2⌋ of the sorted values); `None` for no values.
pub fn lower_median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

/// The in-frame neighbourhood of pixel `i` of an `h` x `w` plane within `r`, row by row.
pub fn neighbourhood(i: usize, [h, w]: [usize; 2], r: usize) -> impl Iterator<Item = usize> {
    let (y, x) = (i / w, i % w);
    let rows = y.saturating_sub(r)..(y + r + 1).min(h);
    rows.flat_map(move |yy| (x.saturating_sub(r)..(x + r + 1).min(w)).map(move |xx| yy * w + xx))
}

/// The margin (cost units) by which a pixel's own best order must beat the one its
/// neighbours suggest for it to keep its own: `factor · c̃`, `c̃` the lower median best cost of
/// the valid pixels of its neighbourhood, itself included; NaN for an invalid pixel.
pub fn threshold(fits: &[PixelFit], i: usize, hw: [usize; 2], factor: f64) -> f64 {
    if fits[i].reason != Reason::Ok {
        return f64::NAN;
    }
    let costs = neighbourhood(i, hw, RADIUS).filter(|&j| fits[j].reason == Reason::Ok).map(|j| fits[j].cost);
    factor * lower_median(costs.collect()).expect("the pixel itself is valid")
}

/// One prior pass: every valid pixel's height given its neighbours' current heights `prev`.
pub fn prior(
    fits: &[PixelFit],
    thresholds: &[f64],
    prev: &[f64],
    [h, w]: [usize; 2],
    config: &ClassicalConfig,
    reach: f64,
) -> Vec<f64> {
    (0..h * w)
        .map(|i| {
            let (f, t) = (&fits[i], thresholds[i]);
            if f.reason != Reason::Ok {
                return f64::NAN;
            }
            // Every other candidate loses by more than t: the pixel keeps its best whatever the
            // neighbours say (the rule below would keep it too); no median needed.
            if f.runner_up - f.cost > t {
                return f.height;
            }
            let heights = neighbourhood(i, [h, w], RADIUS).filter(|&j| j != i).map(|j| prev[j]);
            let Some(median) = lower_median(heights.filter(|v| !v.is_nan()).collect()) else {
                return f64::NAN;
            };
            let wl = config.psi.wavelengths[f.anchor] as f64;
            let u = 2.0 * median / wl;
            let turns = f.lasers[f.anchor].turns;
            let (m0, m1) = f.weighted_orders(config);
            let (lo, hi) = ((u - reach - turns).ceil() as i64, (u + reach - turns).floor() as i64);
            let mut best: Option<(f64, f64)> = None;
            for m in lo.max(m0)..=hi.min(m1) {
                let (cost, height) = f.weighted_at(config, m);
                if best.is_none_or(|(c, _)| cost < c) {
                    best = Some((cost, height));
                }
            }
            match best {
                Some((cost, height)) if cost - f.cost <= t => height,
                Some(_) => f.height,
                None => f64::NAN,
            }
        })
        .collect()
}

/// `passes` prior passes over one image's fits, for a margin of `chi2` χ² units: the heights.
pub fn passes(
    fits: &[PixelFit],
    hw: [usize; 2],
    config: &ClassicalConfig,
    chi2: f64,
    passes: usize,
    reach: f64,
) -> Vec<f64> {
    let factor = decisive_factor(config, chi2);
    let thresholds: Vec<f64> = (0..fits.len()).map(|i| threshold(fits, i, hw, factor)).collect();
    let mut heights: Vec<f64> = fits.iter().map(|f| f.height).collect();
    for _ in 0..passes {
        heights = prior(fits, &thresholds, &heights, hw, config, reach);
    }
    heights
}

/// The robust solver on the CPU for `frame` `[n, L·N, h, w]`: output `[n, out_c, h, w]` as
/// [`super::reference::classical`] lays it out.
pub fn robust(frame: &[f64], [n, c, h, w]: [usize; 4], config: &ClassicalConfig) -> Vec<f64> {
    let (oc, hw) = (config.out_channels(), h * w);
    assert_eq!((c, frame.len()), (config.in_channels(), n * c * hw), "frame size");
    let mut out = vec![0f64; n * oc * hw];
    for (img, o) in (0..n).zip(out.chunks_exact_mut(oc * hw)) {
        let mut fits: Vec<PixelFit> = (0..hw)
            .map(|i| fit_pixel(&(0..c).map(|ch| frame[(img * c + ch) * hw + i]).collect::<Vec<_>>(), config))
            .collect();
        noise_floor(&mut fits, [h, w], config);
        let heights = passes(&fits, [h, w], config, DECISIVE_CHI2, PASSES, REACH);
        for i in 0..hw {
            let reason = match fits[i].reason {
                Reason::Ok if heights[i].is_nan() => Reason::OrderUnresolved,
                r => r,
            };
            o[i] = heights[i];
            if config.quality {
                o[hw + i] = fits[i].quality;
            }
            if config.reason {
                o[(oc - 1) * hw + i] = reason as u8 as f64;
            }
        }
    }
    out
}
