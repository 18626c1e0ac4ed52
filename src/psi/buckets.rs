//! The one CPU bucket model: ideal buckets `I = A + B·cos(4π·h/λ_l + δ_k)` of a height map, with
//! optional Gaussian noise, and quantization to camera integers. Deterministic (crate::rng), f64
//! inside. The GPU generator (`ops::synth`), the physics loss's reference and the PINN fit compute
//! the same formula; [`intensity`] is its single statement.

use crate::psi::PsiConfig;
use crate::rng::Rng;

/// One bucket: `a + b·cos(4π·h/λ + δ)` for a height `h` (µm), wavelength `wl` (µm), step `delta`.
pub fn intensity(a: f64, b: f64, h: f64, wl: f64, delta: f64) -> f64 {
    let tau = 2.0 * std::f64::consts::PI;
    a + b * (2.0 * tau * h / wl + delta).cos()
}

/// The `(L·N, H·W)` bucket stack of `heights` (µm, `H·W` values) under `psi`, channel
/// `laser * N + bucket`, in f64: `ab(pixel)` gives each pixel's (A, B) and `noise()` is added to
/// every value in channel-major order.
pub fn render(
    heights: &[f32],
    psi: &PsiConfig,
    ab: impl Fn(usize) -> (f64, f64),
    mut noise: impl FnMut() -> f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(psi.channels() * heights.len());
    for (l, &wl) in psi.wavelengths.iter().enumerate() {
        for k in 0..psi.buckets {
            let delta = psi.phase_step(l, k);
            for (p, &z) in heights.iter().enumerate() {
                let (a, b) = ab(p);
                out.push(intensity(a, b, z as f64, wl as f64, delta) + noise());
            }
        }
    }
    out
}

/// How to render buckets from heights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SynthConfig {
    /// Lasers, buckets and the uniform A and B.
    pub psi: PsiConfig,
    /// Standard deviation of additive Gaussian noise (counts).
    pub noise: f32,
    pub seed: u64,
}

/// The `(L·N, h, w)` bucket stack of a height map `heights` (`h × w`, µm) with uniform A and B
/// plus noise of σ = `cfg.noise`, as f32.
pub fn buckets(heights: &[f32], h: usize, w: usize, cfg: &SynthConfig) -> Vec<f32> {
    assert_eq!(heights.len(), h * w, "heights for {h} x {w}");
    let (a, b, sigma) = (cfg.psi.a as f64, cfg.psi.b as f64, cfg.noise as f64);
    let mut rng = Rng::new(cfg.seed);
    let noise = || if sigma > 0.0 { sigma * rng.normal() } else { 0.0 };
    render(heights, &cfg.psi, |_| (a, b), noise).into_iter().map(|v| v as f32).collect()
}

/// Round to the nearest integer and clip to 0..=255.
pub fn quantize_u8(v: &[f32]) -> Vec<u8> {
    v.iter().map(|&x| x.round().clamp(0.0, 255.0) as u8).collect()
}

/// Round to the nearest integer and clip to 0..=65535.
pub fn quantize_u16(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| x.round().clamp(0.0, 65535.0) as u16).collect()
}
