//! The pruned fringe-order search: the same winner as scoring every candidate, with most
//! candidates never scored.
//!
//! A candidate's cost sums over the lasers; one laser's share bounds it from below. The bound's
//! laser is the *sharpest*: the one (other than the anchor) whose residual moves most from one
//! anchor candidate to the next, `|r_al − round r_al|` largest for `r_al = λ_a/λ_l` — for the
//! default lasers (5, 5.5, 6.05, 6.655 µm) laser 4, whose residual steps by a quarter fringe, so
//! about three candidates in four are out of reach of the best one after a single term.
//! - **per-pixel** (`Σ (t_l − round t_l)²`): the sharpest laser's term `d_k²` alone. A sum of
//!   non-negative f32 terms never falls below one of them, so skipping a candidate whose `d_k²` is
//!   not below the best cost so far is exact in f32 as in real numbers; a candidate that would win
//!   by being the first inside the range is always scored.
//! - **weighted / robust** (`Σ w_l (h_l − h̄)²`): the spread of a subset of the lasers about its own
//!   mean is at most the whole's about the whole's mean, so the anchor and laser k give
//!   `w_a·w_k/(w_a + w_k)·d_k²` (`d_k = h_k − h_a`). The f32 cost has rounding error up to a few
//!   ulps of `Σ w d²`, itself at most `W = Σ w_l (λ_l/4)²` (each `|d_l| ≤ λ_l/4`), so a candidate
//!   is skipped only when `bound·(1 − SLACK) − SLACK·W` exceeds the best cost so far. The robust
//!   solver keeps the runner-up's cost too, exactly, and scores every candidate: a bound against
//!   the runner-up (a wrong candidate, no better than most) skipped about half of them, which did
//!   not pay for the bound on the software driver.
//!
//! The scan order is unchanged, so ties still go to the first candidate. `Search::Exhaustive`
//! scores every candidate (the tests compare the two bit for bit); [`count`] replays the rule on
//! the CPU in f64 to count scored candidates.
//!
//! The saving is in candidates; whether it is in time depends on the hardware running a skip as
//! a branch: lanes of a SIMD group skip together only when all of them may (neighbouring pixels
//! of a smooth surface mostly agree). The software driver, which runs 8 lanes masked, gained
//! 3–5 % (`cargo test --test ops classical::prune::pruned_and_exhaustive_timing -- --ignored`).

use super::reference::{PixelFit, Status, fit_pixel};
use super::{ClassicalConfig, Unwrap};
use crate::psi::reason::Reason;

/// Relative margin of the weighted bound over the f32 rounding of the cost (the shader's
/// PRUNE_SLACK): about 170 ulps, against an error under 40 ulps for 16 lasers.
pub const SLACK: f64 = 1e-5;

/// Whether the fringe-order searches skip candidates that cannot win.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    #[default]
    Pruned,
    /// Score every candidate (for tests and comparisons).
    Exhaustive,
}

impl Search {
    pub fn name(self) -> &'static str {
        match self {
            Search::Pruned => "pruned",
            Search::Exhaustive => "exhaustive",
        }
    }
}

/// The usable laser of `mask` other than `anchor` (after it when `after`) whose residual moves
/// most per anchor candidate; ties to the first; `None` when there is none.
pub fn sharpest(config: &ClassicalConfig, anchor: usize, mask: u32, after: bool) -> Option<usize> {
    let wl = &config.psi.wavelengths;
    let step = |l: usize| {
        let r = wl[anchor] as f64 / wl[l] as f64;
        (r - r.round()).abs()
    };
    (0..wl.len())
        .filter(|&l| l != anchor && (l > anchor || !after) && mask & (1 << l) != 0)
        .fold(None, |best: Option<usize>, l| if best.is_none_or(|b| step(l) > step(b)) { Some(l) } else { best })
}

/// Candidates a search visited and how many of them it scored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub candidates: u64,
    pub scored: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Count) {
        self.candidates += o.candidates;
        self.scored += o.scored;
    }
}

/// The pruned search of one pixel from its `L·N` intensities, replayed in f64: what it visits
/// and scores (none for a pixel the search never reaches; every candidate for the robust
/// solver, which does not prune).
pub fn count(intensities: &[f64], config: &ClassicalConfig) -> Count {
    let fit = fit_pixel(intensities, config);
    if fit.reason != Reason::Ok {
        return Count::default();
    }
    let mask =
        fit.lasers.iter().enumerate().filter(|(_, f)| f.status == Status::Usable).fold(0, |m, (l, _)| m | 1 << l);
    let wl: Vec<f64> = config.psi.wavelengths.iter().map(|&v| v as f64).collect();
    let a = fit.anchor;
    let residual = |l: usize, m: i64| {
        let t = (m as f64 + fit.lasers[a].turns) * wl[a] / wl[l] - fit.lasers[l].turns;
        t - t.round()
    };
    match config.unwrap {
        Unwrap::PerPixel => per_pixel(&fit, config, mask, &residual),
        Unwrap::Weighted => weighted(&fit, config, mask, &wl, &residual),
        Unwrap::Robust => {
            let (m0, m1) = fit.weighted_orders(config);
            let n = (m1 - m0 + 1).max(0) as u64;
            Count { candidates: n, scored: n }
        }
    }
}

fn per_pixel(fit: &PixelFit, config: &ClassicalConfig, mask: u32, residual: &dyn Fn(usize, i64) -> f64) -> Count {
    let a = fit.anchor;
    let k = sharpest(config, a, mask, true);
    let (m0, m1) = config.laser_orders(a);
    let wl = config.psi.wavelengths[a] as f64;
    let (u0, u1) = (2.0 * config.height_range.0 as f64 / wl, 2.0 * config.height_range.1 as f64 / wl);
    let (mut best, mut best_outside, mut n) = (f64::INFINITY, true, Count::default());
    for m in m0..=m1 {
        n.candidates += 1;
        let u = m as f64 + fit.lasers[a].turns;
        let outside = u < u0 || u > u1;
        if let Some(k) = k
            && (!best_outside || outside)
            && residual(k, m).powi(2) >= best
        {
            continue;
        }
        n.scored += 1;
        let cost: f64 =
            (a + 1..config.lasers()).filter(|&l| mask & (1 << l) != 0).map(|l| residual(l, m).powi(2)).sum();
        if (best_outside && !outside) || (outside == best_outside && cost < best) {
            (best, best_outside) = (cost, outside);
        }
    }
    n
}

fn weighted(
    fit: &PixelFit,
    config: &ClassicalConfig,
    mask: u32,
    wl: &[f64],
    residual: &dyn Fn(usize, i64) -> f64,
) -> Count {
    let a = fit.anchor;
    let k = sharpest(config, a, mask, false);
    let w = |l: usize| fit.lasers[l].weight(wl[l]);
    let slack = SLACK * (0..wl.len()).map(|l| w(l) * wl[l] * wl[l] / 16.0).sum::<f64>();
    let (m0, m1) = fit.weighted_orders(config);
    let (mut best, mut n) = (f64::INFINITY, Count::default());
    for m in m0..=m1 {
        n.candidates += 1;
        if let Some(k) = k {
            let bound = w(a) * w(k) / (w(a) + w(k)) * (wl[k] / 2.0 * residual(k, m)).powi(2);
            if bound * (1.0 - SLACK) - slack > best {
                continue;
            }
        }
        n.scored += 1;
        best = best.min(fit.weighted_at(config, m).0);
    }
    n
}
