//! Height maps of synthetic frames (µm), on the CPU in f64: the seed's test surface, smooth
//! random surfaces drawn from a seed as a short list of terms (the GPU generator evaluates the
//! same terms, `ops::synth`), and a steep spherical cap whose fringes are dense. Coordinates x
//! (column) and y (row) run over [−1, 1]; the cap is laid out in pixels.

use crate::rng::Rng;

/// Most random-surface terms (the host draws 3 to this many).
pub const MAX_TERMS: usize = 8;
/// Random surfaces are scaled so that |h| stays within this bound (µm).
pub const RANDOM_HEIGHT_BOUND: f64 = 60.0;

/// Coordinate of pixel `i` of `n` in [−1, 1], like `np.linspace(-1, 1, n)` (a single one at −1).
pub fn coord(i: usize, n: usize) -> f64 {
    if n > 1 { -1.0 + 2.0 * i as f64 / (n - 1) as f64 } else { -1.0 }
}

/// The seed's test surface (µm) on `h` rows × `w` columns, x and y in [−1, 1] (column and row
/// mapped linearly, like `np.linspace(-1, 1, n)`; a single column or row sits at −1):
/// `15·exp(−((x−0.2)² + (y+0.3)²)/0.2) + 5x + 2.5y + 10·sqrt((x+0.5)² + (y−0.4)²)`.
pub fn seed_heights(h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(h * w);
    for r in 0..h {
        let y = coord(r, h);
        for c in 0..w {
            let x = coord(c, w);
            let bump = 15.0 * (-((x - 0.2).powi(2) + (y + 0.3).powi(2)) / 0.2).exp();
            let cone = 10.0 * ((x + 0.5).powi(2) + (y - 0.4).powi(2)).sqrt();
            out.push((bump + 5.0 * x + 2.5 * y + cone) as f32);
        }
    }
    out
}

/// The height map of a generated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The seed's test surface, exactly [`seed_heights`].
    Seed,
    /// A smooth random surface drawn from `seed` ([`random_terms`]), |h| ≤ 60 µm.
    Random,
    /// A spherical cap centred on the frame, steepest at its corners ([`SphericalCap`]).
    Steep,
}

impl Shape {
    /// `seed`, `random` or `steep` (case-insensitive).
    pub fn parse(s: &str) -> Option<Shape> {
        match s.to_ascii_lowercase().as_str() {
            "seed" => Some(Shape::Seed),
            "random" => Some(Shape::Random),
            "steep" => Some(Shape::Steep),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Seed => "seed",
            Shape::Random => "random",
            Shape::Steep => "steep",
        }
    }
}

/// The steep surface: a sphere seen from above, centred on a `height` × `width` frame, whose
/// slope reaches `slope` µm per pixel at the frame's corners (the fringes of λ = 5 µm light are
/// then `λ/2 / slope` pixels apart there). With r the distance in pixels from the centre and
/// `r_c` that of the corners, the sphere's radius R satisfies `R² − r_c² = q = r_c²/slope²`, and
/// `h = sqrt(R² − r²) − m` with m halfway between apex and corners, so the heights span
/// ±sag/2, `sag = R − √q` (a 256² frame at 0.5 µm/px: ±21 µm).
///
/// `R² − r² = q + c·(w−1−c) + r·(h−1−r)` for pixel (row r, column c): the two products are
/// integers, which the GPU receives as per-column and per-row tables, and
/// `h = C / (sqrt(q + C) + √q) − sag/2` with `C` their sum avoids cancellation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SphericalCap {
    /// `R² − r_c²` (pixels²).
    pub q: f64,
    /// `sag / 2` (µm): the apex is at +half_sag, the corners at −half_sag.
    pub half_sag: f64,
}

impl SphericalCap {
    pub fn new(height: usize, width: usize, slope: f64) -> SphericalCap {
        let half = |n: usize| (n.max(1) - 1) as f64 / 2.0;
        let rc2 = half(width).powi(2) + half(height).powi(2);
        let q = rc2 / (slope * slope);
        SphericalCap { q, half_sag: ((q + rc2).sqrt() - q.sqrt()) / 2.0 }
    }

    /// `i·(n − 1 − i)`: the column's (or row's) share of `R² − r² − q`.
    pub fn axis_term(i: usize, n: usize) -> f64 {
        i as f64 * (n - 1 - i) as f64
    }

    /// The height for `c = axis_term(col) + axis_term(row)`.
    pub fn height(&self, c: f64) -> f64 {
        let d = (self.q + c).sqrt() + self.q.sqrt();
        if d > 0.0 { c / d - self.half_sag } else { -self.half_sag }
    }
}

/// The steep surface of a `height` × `width` frame (µm), evaluated in f64.
pub fn steep_heights(height: usize, width: usize, slope: f64) -> Vec<f32> {
    let cap = SphericalCap::new(height, width, slope);
    let mut out = Vec::with_capacity(height * width);
    for r in 0..height {
        let cy = SphericalCap::axis_term(r, height);
        for c in 0..width {
            out.push(cap.height(cy + SphericalCap::axis_term(c, width)) as f32);
        }
    }
    out
}

/// Kinds of random-surface terms (the shader's `switch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermKind {
    /// `amp·exp(−r²·p0)`, p0 = 1/σ².
    Gaussian = 0,
    /// `amp·(1 − r²·p0)²` inside r² < 1/p0, 0 outside (a rounded cap).
    Cap = 1,
    /// `amp·(p0·(x − cx) + p1·(y − cy))`, (p0, p1) a unit direction.
    Plane = 2,
    /// `(amp/2)·tanh(p2·(p0·(x − cx) + p1·(y − cy)))`, (p0, p1) the unit normal of the edge.
    Step = 3,
    /// `amp·cos(2π(p0·x + p1·y + p2))·exp(−r²·p3)`: a sinusoid (cycles per unit) in an envelope.
    Ripple = 4,
}

/// One term of a random surface: `[kind, amp, cx, cy, p0, p1, p2, p3]` as the shader reads it,
/// with x, y the column and row mapped to [−1, 1] and `r² = (x − cx)² + (y − cy)²`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Term {
    pub kind: TermKind,
    pub amp: f32,
    pub center: [f32; 2],
    pub p: [f32; 4],
}

impl Term {
    /// The largest |value| the term can take.
    fn bound(&self) -> f64 {
        let amp = self.amp.abs() as f64;
        match self.kind {
            TermKind::Plane => amp * ((self.p[0] as f64).abs() + (self.p[1] as f64).abs()) * 2.0,
            TermKind::Step => amp / 2.0,
            _ => amp,
        }
    }

    /// The term's value at (x, y), in f64.
    pub fn eval(&self, x: f64, y: f64) -> f64 {
        let [p0, p1, p2, p3] = self.p.map(f64::from);
        let amp = self.amp as f64;
        let (dx, dy) = (x - self.center[0] as f64, y - self.center[1] as f64);
        let r2 = dx * dx + dy * dy;
        match self.kind {
            TermKind::Gaussian => amp * (-r2 * p0).exp(),
            TermKind::Cap => amp * (1.0 - r2 * p0).max(0.0).powi(2),
            TermKind::Plane => amp * (p0 * dx + p1 * dy),
            TermKind::Step => 0.5 * amp * (p2 * (p0 * dx + p1 * dy)).tanh(),
            TermKind::Ripple => amp * (2.0 * std::f64::consts::PI * (p0 * x + p1 * y + p2)).cos() * (-r2 * p3).exp(),
        }
    }
}

/// The terms of the random surface of `seed`: a tilt plane plus 2 to 7 bumps, caps, steps and
/// ripples, scaled so that the sum of their bounds (hence |h|) is at most 60 µm.
pub fn random_terms(seed: u64) -> Vec<Term> {
    let mut rng = Rng::new(seed ^ 0x5EED_5A4F_ACE5_0001);
    let n = 3 + (rng.next_u64() % (MAX_TERMS as u64 - 2)) as usize;
    let mut terms = Vec::with_capacity(n);
    let tau = 2.0 * std::f64::consts::PI;
    for i in 0..n {
        let kind = if i == 0 {
            TermKind::Plane
        } else {
            [TermKind::Gaussian, TermKind::Cap, TermKind::Step, TermKind::Ripple][(rng.next_u64() % 4) as usize]
        };
        let center = [rng.range_f32(-1.0, 1.0) as f32, rng.range_f32(-1.0, 1.0) as f32];
        let angle = rng.range_f32(0.0, tau);
        let (dx, dy) = ((angle.cos() as f32), (angle.sin() as f32));
        let (amp, p) = match kind {
            TermKind::Plane => (rng.range_f32(0.0, 15.0), [dx, dy, 0.0, 0.0]),
            TermKind::Gaussian => {
                let sigma = rng.range_f32(0.15, 0.8);
                (rng.sign() * rng.range_f32(5.0, 40.0), [(1.0 / (sigma * sigma)) as f32, 0.0, 0.0, 0.0])
            }
            TermKind::Cap => {
                let r = rng.range_f32(0.2, 1.0);
                (rng.sign() * rng.range_f32(5.0, 40.0), [(1.0 / (r * r)) as f32, 0.0, 0.0, 0.0])
            }
            TermKind::Step => {
                let width = rng.range_f32(0.05, 0.3);
                (rng.sign() * rng.range_f32(2.0, 20.0), [dx, dy, (1.0 / width) as f32, 0.0])
            }
            TermKind::Ripple => {
                let k = rng.range_f32(0.5, 4.0);
                let env = rng.range_f32(0.3, 1.0);
                let phase = rng.range_f32(0.0, 1.0);
                let (kx, ky) = ((k * angle.cos()) as f32, (k * angle.sin()) as f32);
                (rng.range_f32(0.5, 5.0), [kx, ky, phase as f32, (1.0 / (env * env)) as f32])
            }
        };
        terms.push(Term { kind, amp: amp as f32, center, p });
    }
    let total: f64 = terms.iter().map(Term::bound).sum();
    if total > RANDOM_HEIGHT_BOUND {
        let s = RANDOM_HEIGHT_BOUND / total * (1.0 - 1e-6);
        for t in &mut terms {
            t.amp = (t.amp as f64 * s) as f32;
        }
    }
    terms
}

/// The terms of the random surface of `seed` with amplitudes × `scale`, plus a constant `offset`
/// (a Gaussian of zero width parameter, exactly `amp` everywhere).
pub fn scaled_terms(seed: u64, scale: f32, offset: f32) -> Vec<Term> {
    let mut terms = random_terms(seed);
    for t in &mut terms {
        t.amp *= scale;
    }
    if offset != 0.0 {
        terms.push(Term { kind: TermKind::Gaussian, amp: offset, center: [0.0; 2], p: [0.0; 4] });
    }
    terms
}

/// The random surface of `seed` on `height` rows × `width` columns (µm), evaluated in f64.
pub fn random_heights_cpu(seed: u64, height: usize, width: usize) -> Vec<f32> {
    heights_from_terms(&random_terms(seed), height, width)
}

/// A surface given by `terms` on `height` rows × `width` columns (µm), evaluated in f64.
pub fn heights_from_terms(terms: &[Term], height: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(height * width);
    for r in 0..height {
        let y = coord(r, height) as f32 as f64;
        for c in 0..width {
            let x = coord(c, width) as f32 as f64;
            out.push(terms.iter().map(|t| t.eval(x, y)).sum::<f64>() as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steep_cap_has_its_slope_at_the_corners_and_spans_its_sag() {
        let (h, w, slope) = (41, 61, 0.5);
        let z = steep_heights(h, w, slope);
        let cap = SphericalCap::new(h, w, slope);
        // The sphere itself: sqrt(R² − r²) − m.
        let (cy, cx) = ((h - 1) as f64 / 2.0, (w - 1) as f64 / 2.0);
        let r2 = cy * cy + cx * cx + cap.q;
        let m = (r2.sqrt() + cap.q.sqrt()) / 2.0;
        for (r, c) in [(0, 0), (20, 30), (7, 51), (40, 60)] {
            let d2 = (r as f64 - cy).powi(2) + (c as f64 - cx).powi(2);
            let want = (r2 - d2).sqrt() - m;
            assert!((z[r * w + c] as f64 - want).abs() < 1e-5, "({r}, {c})");
        }
        assert!((z[0] as f64 + cap.half_sag).abs() < 1e-5 && (z[20 * w + 30] as f64 - cap.half_sag).abs() < 1e-5);
        // Radial slope at the corner, by a central difference along the diagonal.
        let along = |t: f64| {
            let d2 = (cy * t).powi(2) + (cx * t).powi(2);
            (r2 - d2).sqrt()
        };
        let rc = (cy * cy + cx * cx).sqrt();
        let got = (along(1.0 - 1e-6) - along(1.0 + 1e-6)) / (2e-6 * rc);
        assert!((got - slope).abs() < 1e-6, "slope {got}");
        assert_eq!(steep_heights(1, 1, 0.5), vec![0.0]);
    }
}
