//! Synthetic PSI frames on the CPU: the seed's height model, ideal buckets plus Gaussian noise,
//! and quantization to camera integers. Deterministic (crate::rng), f64 inside.

use crate::rng::Rng;

/// The seed's test surface (µm) on `h` rows × `w` columns, x and y in [−1, 1] (column and row
/// mapped linearly, like `np.linspace(-1, 1, n)`; a single column or row sits at −1):
/// `15·exp(−((x−0.2)² + (y+0.3)²)/0.2) + 5x + 2.5y + 10·sqrt((x+0.5)² + (y−0.4)²)`.
pub fn seed_heights(h: usize, w: usize) -> Vec<f32> {
    let coord = |i: usize, n: usize| if n > 1 { -1.0 + 2.0 * i as f64 / (n - 1) as f64 } else { -1.0 };
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

/// How to render buckets from heights.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// One wavelength per laser, µm.
    pub wavelengths: Vec<f32>,
    /// Phase shifts per laser (δ_k = 2πk/N).
    pub buckets: usize,
    /// Offset A.
    pub a: f32,
    /// Modulation B.
    pub b: f32,
    /// Standard deviation of additive Gaussian noise (counts).
    pub noise: f32,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { wavelengths: vec![5.0, 5.5, 6.05, 6.655], buckets: 4, a: 128.0, b: 100.0, noise: 0.0, seed: 0 }
    }
}

/// The `(L·N, h, w)` bucket stack `A + B·cos(4π·h/λ_l + 2πk/N)` (+ noise) of a height map
/// `heights` (`h × w`, µm); channel `laser * N + bucket`.
pub fn buckets(heights: &[f32], h: usize, w: usize, cfg: &SynthConfig) -> Vec<f32> {
    let hw = h * w;
    assert_eq!(heights.len(), hw, "heights for {h} x {w}");
    let tau = 2.0 * std::f64::consts::PI;
    let n = cfg.buckets;
    let (a, b, sigma) = (cfg.a as f64, cfg.b as f64, cfg.noise as f64);
    let mut rng = Rng::new(cfg.seed);
    let mut out = Vec::with_capacity(cfg.wavelengths.len() * n * hw);
    for &wl in &cfg.wavelengths {
        for k in 0..n {
            let delta = tau * k as f64 / n as f64;
            for &z in heights {
                let mut v = a + b * (2.0 * tau * z as f64 / wl as f64 + delta).cos();
                if sigma > 0.0 {
                    v += sigma * rng.normal();
                }
                out.push(v as f32);
            }
        }
    }
    out
}

/// Round to the nearest integer and clip to 0..=255.
pub fn quantize_u8(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| x.round().clamp(0.0, 255.0) as u8).collect()
}

/// Round to the nearest integer and clip to 0..=65535.
pub fn quantize_u16(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| x.round().clamp(0.0, 65535.0) as u16).collect()
}
