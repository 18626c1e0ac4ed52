//! The solver on the CPU in f64 (conventions in [`crate::ops`]): the shader's per-laser fits,
//! drops, fringe-order decisions and reasons, step for step (see the module above).

use super::{ClassicalConfig, DECISIVE, Unwrap};
use crate::psi::PhaseSteps;
use crate::psi::phase;
use crate::psi::reason::Reason;

const TAU: f64 = 2.0 * std::f64::consts::PI;

/// What one laser's buckets say at a pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Usable,
    /// B = 0 or under the modulation floor, or fewer than 3 buckets kept and none saturated.
    LowModulation,
    /// Fewer than 3 buckets kept, some at the saturation level.
    Clipped,
    /// A bucket is NaN or infinite.
    NonFinite,
}

/// One laser's fit at a pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaserFit {
    /// Wrapped phase in turns, [−0.5, 0.5].
    pub turns: f64,
    /// Offset A and modulation B (input units).
    pub a: f64,
    pub b: f64,
    /// Buckets used.
    pub n: usize,
    pub status: Status,
    /// Residual sum of squares of the fit (N − 3 degrees of freedom) when it is the nominal N-step
    /// fit of every bucket and N > 3: the robust solver's noise estimate.
    pub rss: Option<f64>,
}

impl LaserFit {
    fn dropped(status: Status) -> LaserFit {
        LaserFit { turns: 0.0, a: 0.0, b: 0.0, n: 0, status, rss: None }
    }

    /// Inverse variance of the laser's height up to the noise variance: `n·B²/λ²`.
    pub fn weight(&self, wavelength: f64) -> f64 {
        self.n as f64 * self.b * self.b / (wavelength * wavelength)
    }
}

/// Fit laser `l` from its `N` bucket values (see [`super`]): the nominal N-step sums when the
/// steps are nominal and no bucket is left out, else the least-squares fit over the buckets kept.
/// A clipped bucket (at or beyond a clip level) is left out when the fit of all the laser's
/// buckets predicts it clipped too (truly saturated or dark); one that noise pushed to the level
/// stays in, as its clipped reading is still closer to the truth than none.
pub fn fit_laser(values: &[f64], config: &ClassicalConfig, l: usize) -> LaserFit {
    let (nb, lv, psi) = (values.len(), &config.levels, &config.psi);
    if values.iter().any(|v| !v.is_finite()) {
        return LaserFit::dropped(Status::NonFinite);
    }
    let (lo, hi) = (lv.clip_lo as f64, lv.clip_hi as f64);
    let nominal = psi.phase_steps == PhaseSteps::Nominal;
    let steps: Vec<f64> = (0..nb).map(|k| psi.phase_step(l, k)).collect();
    let sums = || {
        let (s, c, sum) = phase::sums(values.iter().copied());
        ((-s).atan2(c) / TAU, sum / nb as f64, 2.0 * (s * s + c * c).sqrt() / nb as f64, [s, c, sum])
    };
    let mut left_out = vec![false; nb];
    if values.iter().any(|&v| v <= lo || v >= hi) {
        let all = if nominal {
            let [s, c, sum] = sums().3;
            [sum / nb as f64, 2.0 * c / nb as f64, -2.0 * s / nb as f64]
        } else {
            phase::fit_steps(values, &steps, |_| true).expect("validated steps")
        };
        for (k, out) in left_out.iter_mut().enumerate() {
            let predicted = all[0] + all[1] * steps[k].cos() - all[2] * steps[k].sin();
            *out = (values[k] >= hi && predicted >= hi) || (values[k] <= lo && predicted <= lo);
        }
    }
    let n = left_out.iter().filter(|&&o| !o).count();
    let mut rss = None;
    let (turns, a, b) = if nominal && n == nb {
        let (t, a, b, _) = sums();
        if nb > 3 {
            let sq: f64 = values.iter().map(|v| v * v).sum();
            rss = Some((sq - nb as f64 * (a * a + b * b / 2.0)).max(0.0));
        }
        (t, a, b)
    } else {
        match phase::fit_steps(values, &steps, |k| !left_out[k]) {
            Some([a, p, q]) => (q.atan2(p) / TAU, a, p.hypot(q)),
            None => {
                let top = values.iter().any(|&v| v >= hi);
                return LaserFit::dropped(if top { Status::Clipped } else { Status::LowModulation });
            }
        }
    };
    let status = if b <= 0.0 || b < lv.min_b as f64 || b < lv.min_contrast as f64 * a {
        Status::LowModulation
    } else {
        Status::Usable
    };
    LaserFit { turns, a, b, n, status, rss }
}

/// The CPU solver's result for one pixel, with what a test (and a later spatial pass) needs to
/// tell how clearly it was decided.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelFit {
    /// µm; NaN unless `reason` is [`Reason::Ok`].
    pub height: f64,
    /// Mean fringe contrast B/A over the usable lasers; NaN when none is usable.
    pub quality: f64,
    pub reason: Reason,
    /// The laser whose candidates were searched, and the fringe order it won with.
    pub anchor: usize,
    pub order: i64,
    /// Least search cost: turns² (per-pixel) or the weighted spread (weighted).
    pub cost: f64,
    /// Second-least cost (per-pixel: among the candidates of the winner's kind, inside or outside
    /// the range); infinite when there is none.
    pub runner_up: f64,
    /// Largest |t_l − round(t_l)| at the chosen order (turns): near 0.5 the order is ambiguous.
    pub max_residual: f64,
    pub lasers: Vec<LaserFit>,
}

impl PixelFit {
    /// The pixel's search as `config` makes it, from its laser fits.
    fn pixel<'a>(&'a self, config: &'a ClassicalConfig) -> Pixel<'a> {
        let mask =
            (0..self.lasers.len()).filter(|&l| self.lasers[l].status == Status::Usable).fold(0, |m, l| m | 1 << l);
        let wl = config.psi.wavelengths.iter().map(|&v| v as f64).collect();
        Pixel { config, fits: &self.lasers, wl, anchor: self.anchor, mask }
    }

    /// The weighted search's anchor orders: every candidate exactly inside the height range.
    pub fn weighted_orders(&self, config: &ClassicalConfig) -> (i64, i64) {
        let (u_min, u_max) = config.turn_range(self.anchor);
        let f = self.lasers[self.anchor].turns;
        ((u_min - f).ceil() as i64, (u_max - f).floor() as i64)
    }

    /// (cost, height) of the anchor's order `m` under the weighted likelihood: the weighted
    /// spread of the lasers' heights and their inverse-variance mean.
    pub fn weighted_at(&self, config: &ClassicalConfig, m: i64) -> (f64, f64) {
        let px = self.pixel(config);
        let (cost, mean) = px.spread(m);
        (cost, px.wl[self.anchor] / 2.0 * px.u(m) + mean)
    }
}

/// The smallest height shift (µm) inside the range at which the lasers of `mask` fit as well as
/// at no shift, seen from anchor `a` (a wrong candidate of noiseless cost under [`DECISIVE`]);
/// `None` when they decide the range.
pub fn ambiguity(config: &ClassicalConfig, a: usize, mask: u32) -> Option<f64> {
    let wl: Vec<f64> = config.psi.wavelengths.iter().map(|&v| v as f64).collect();
    (1..=config.shifts(a)).find_map(|j| {
        let cost: f64 = (0..wl.len())
            .filter(|&l| l != a && mask & (1 << l) != 0)
            .map(|l| {
                let t = j as f64 * wl[a] / wl[l];
                (t - t.round()).powi(2)
            })
            .sum();
        (cost < DECISIVE).then_some(j as f64 * wl[a] / 2.0)
    })
}

/// One candidate order's score.
struct Candidate {
    m: i64,
    outside: bool,
    cost: f64,
}

/// The per-laser quantities of a pixel a search reads.
struct Pixel<'a> {
    config: &'a ClassicalConfig,
    fits: &'a [LaserFit],
    wl: Vec<f64>,
    anchor: usize,
    mask: u32,
}

impl Pixel<'_> {
    /// The usable lasers other than the anchor.
    fn others(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.wl.len()).filter(|&l| l != self.anchor && self.mask & (1 << l) != 0)
    }

    /// `(t_l − round t_l, round t_l)` for `t_l = 2h/λ_l − f_l` at the anchor's `u = m + f_a`.
    fn residual(&self, l: usize, u: f64) -> (f64, f64) {
        let t = u * self.wl[self.anchor] / self.wl[l] - self.fits[l].turns;
        (t - t.round(), t.round())
    }

    fn u(&self, m: i64) -> f64 {
        m as f64 + self.fits[self.anchor].turns
    }

    /// Per-pixel mode: the candidate of least `Σ (t_l − round t_l)²`, inside the range first.
    fn per_pixel(&self) -> Vec<Candidate> {
        let (u_min, u_max) = self.config.turn_range(self.anchor);
        let (m_min, m_max) = self.config.laser_orders(self.anchor);
        (m_min..=m_max)
            .map(|m| {
                let u = self.u(m);
                let cost = self.others().map(|l| self.residual(l, u).0.powi(2)).sum();
                Candidate { m, outside: u < u_min || u > u_max, cost }
            })
            .collect()
    }

    /// Weighted mode: `(cost, h̄ − h_a)` of order `m`, the weighted spread of the lasers' heights.
    fn spread(&self, m: i64) -> (f64, f64) {
        let u = self.u(m);
        let mut hl = vec![(self.fits[self.anchor].weight(self.wl[self.anchor]), 0.0)];
        hl.extend(self.others().map(|l| (self.fits[l].weight(self.wl[l]), -self.wl[l] / 2.0 * self.residual(l, u).0)));
        let total: f64 = hl.iter().map(|(w, _)| w).sum();
        let mean = hl.iter().map(|(w, d)| w * d).sum::<f64>() / total;
        (hl.iter().map(|(w, d)| w * (d - mean).powi(2)).sum(), mean)
    }

    /// Weighted mode: every candidate exactly inside the range.
    fn weighted(&self) -> Vec<Candidate> {
        let (u_min, u_max) = self.config.turn_range(self.anchor);
        let f = self.fits[self.anchor].turns;
        let (m_min, m_max) = ((u_min - f).ceil() as i64, (u_max - f).floor() as i64);
        (m_min..=m_max).map(|m| Candidate { m, outside: false, cost: self.spread(m).0 }).collect()
    }

    /// The pixel's height at the anchor's order `m`.
    fn height(&self, m: i64) -> f64 {
        let u = self.u(m);
        let h_a = self.wl[self.anchor] / 2.0 * u;
        match self.config.unwrap {
            Unwrap::Weighted | Unwrap::Robust => h_a + self.spread(m).1,
            Unwrap::PerPixel => {
                let sum: f64 =
                    self.others().map(|l| self.wl[l] / 2.0 * (self.residual(l, u).1 + self.fits[l].turns)).sum();
                (h_a + sum) / (1 + self.others().count()) as f64
            }
        }
    }
}

/// The winner of `candidates` (inside the range first, then least cost, ties to the first) and
/// the runner-up's cost among those of its kind.
fn choose(candidates: &[Candidate]) -> Option<(&Candidate, f64)> {
    let mut best = candidates.first()?;
    for c in candidates {
        if (best.outside && !c.outside) || (c.outside == best.outside && c.cost < best.cost) {
            best = c;
        }
    }
    let runner_up = candidates
        .iter()
        .filter(|c| c.m != best.m && c.outside == best.outside)
        .map(|c| c.cost)
        .fold(f64::INFINITY, f64::min);
    Some((best, runner_up))
}

/// The anchor of the usable lasers `mask`: the first (per-pixel) or the one of most weight
/// (weighted; ties to the first).
fn anchor(config: &ClassicalConfig, fits: &[LaserFit], mask: u32) -> usize {
    let usable = (0..fits.len()).filter(|&l| mask & (1 << l) != 0);
    match config.unwrap {
        Unwrap::PerPixel => usable.min().unwrap_or(0),
        Unwrap::Weighted | Unwrap::Robust => usable
            .fold(None, |best: Option<(usize, f64)>, l| {
                let w = fits[l].weight(config.psi.wavelengths[l] as f64);
                if best.is_none_or(|(_, bw)| w > bw) { Some((l, w)) } else { best }
            })
            .map_or(0, |(l, _)| l),
    }
}

/// Solve one pixel in f64 from its `L·N` intensities (channel `laser * N + bucket`).
pub fn fit_pixel(intensities: &[f64], config: &ClassicalConfig) -> PixelFit {
    let (nl, nb) = (config.lasers(), config.psi.buckets);
    assert_eq!(intensities.len(), nl * nb, "intensities per pixel");
    let fits: Vec<LaserFit> = (0..nl).map(|l| fit_laser(&intensities[l * nb..(l + 1) * nb], config, l)).collect();
    let usable: Vec<&LaserFit> = fits.iter().filter(|f| f.status == Status::Usable).collect();
    let mask = (0..nl).filter(|&l| fits[l].status == Status::Usable).fold(0u32, |m, l| m | 1 << l);
    let quality = usable.iter().map(|f| if f.a != 0.0 { f.b / f.a } else { 0.0 }).sum::<f64>() / usable.len() as f64;
    let mut fit = PixelFit {
        height: f64::NAN,
        quality,
        reason: Reason::Ok,
        anchor: anchor(config, &fits, mask),
        order: 0,
        cost: f64::INFINITY,
        runner_up: f64::INFINITY,
        max_residual: 0.0,
        lasers: fits.clone(),
    };
    let dropped =
        if fits.iter().any(|f| f.status == Status::Clipped) { Reason::Saturated } else { Reason::LowModulation };
    if fits.iter().any(|f| f.status == Status::NonFinite) {
        (fit.reason, fit.quality) = (Reason::NonFiniteInput, f64::NAN);
        return fit;
    }
    if mask == 0 || (mask != (1 << nl) - 1 && ambiguity(config, fit.anchor, mask).is_some()) {
        fit.reason = dropped;
        return fit;
    }
    let px = Pixel {
        config,
        fits: &fits,
        wl: config.psi.wavelengths.iter().map(|&v| v as f64).collect(),
        anchor: fit.anchor,
        mask,
    };
    let candidates = match config.unwrap {
        Unwrap::PerPixel => px.per_pixel(),
        Unwrap::Weighted | Unwrap::Robust => px.weighted(),
    };
    let Some((best, runner_up)) = choose(&candidates) else {
        fit.reason = Reason::OrderUnresolved;
        return fit;
    };
    let u = px.u(best.m);
    fit.max_residual = px.others().map(|l| px.residual(l, u).0.abs()).fold(0.0, f64::max);
    (fit.order, fit.cost, fit.runner_up, fit.height) = (best.m, best.cost, runner_up, px.height(best.m));
    fit
}

/// The height of a pixel whose every usable laser takes its order from the true height `truth`
/// (µm), combined as `config.unwrap` combines them: the solver's noise floor. NaN where no
/// laser is usable or an input is not finite.
pub fn height_at_true_orders(intensities: &[f64], config: &ClassicalConfig, truth: f64) -> f64 {
    let fit = fit_pixel(intensities, config);
    let usable: Vec<usize> = (0..config.lasers()).filter(|&l| fit.lasers[l].status == Status::Usable).collect();
    if usable.is_empty() || fit.reason == Reason::NonFiniteInput {
        return f64::NAN;
    }
    let (mut sum, mut total) = (0.0, 0.0);
    for &l in &usable {
        let (f, wl) = (fit.lasers[l].turns, config.psi.wavelengths[l] as f64);
        let h = wl / 2.0 * ((2.0 * truth / wl - f).round() + f);
        let w = match config.unwrap {
            Unwrap::PerPixel => 1.0,
            Unwrap::Weighted | Unwrap::Robust => fit.lasers[l].weight(wl),
        };
        (sum, total) = (sum + w * h, total + w);
    }
    sum / total
}

/// The classical solver on the CPU for `frame` `[n, L·N, h, w]`: output `[n, out_c, h, w]`
/// (height, then quality if `config.quality`, then the reason code if `config.reason`).
pub fn classical(frame: &[f64], [n, c, h, w]: [usize; 4], config: &ClassicalConfig) -> Vec<f64> {
    let (oc, hw) = (config.out_channels(), h * w);
    assert_eq!((c, frame.len()), (config.in_channels(), n * c * hw), "frame size");
    let mut out = vec![0f64; n * oc * hw];
    for (img, o) in (0..n).zip(out.chunks_exact_mut(oc * hw)) {
        for i in 0..hw {
            let px: Vec<f64> = (0..c).map(|ch| frame[(img * c + ch) * hw + i]).collect();
            let fit = fit_pixel(&px, config);
            o[i] = fit.height;
            if config.quality {
                o[hw + i] = fit.quality;
            }
            if config.reason {
                o[(oc - 1) * hw + i] = fit.reason as u8 as f64;
            }
        }
    }
    out
}
