//! The physics of a frame, in one place: the lasers' wavelengths, the phase steps per laser and
//! the ideal bucket model's offset and modulation. Every model, the generator, the losses and the
//! CLI defaults read it from here.
//!
//! Channel `laser * buckets + bucket` of a frame holds `I = A + B·cos(4π·h/λ_laser + δ_bucket)`
//! with `δ_k = 2πk/N`.

use crate::error::{Error, Result};

/// The lasers of the reference instrument, µm (they repeat only every 3327.5 µm of height).
pub const DEFAULT_WAVELENGTHS: [f32; 4] = [5.0, 5.5, 6.05, 6.655];
/// Phase steps per laser.
pub const DEFAULT_BUCKETS: usize = 4;
/// Offset A of synthetic frames (counts).
pub const DEFAULT_A: f32 = 128.0;
/// Modulation B of synthetic frames (counts).
pub const DEFAULT_B: f32 = 100.0;

/// Lasers, phase steps and the bucket model's A/B.
#[derive(Clone, Debug, PartialEq)]
pub struct PsiConfig {
    /// One wavelength per laser, µm, in channel order.
    pub wavelengths: Vec<f32>,
    /// Phase-shift buckets per laser (N); bucket k has δ_k = 2πk/N.
    pub buckets: usize,
    /// Offset A (counts).
    pub a: f32,
    /// Modulation B (counts).
    pub b: f32,
}

impl Default for PsiConfig {
    fn default() -> Self {
        PsiConfig { wavelengths: DEFAULT_WAVELENGTHS.to_vec(), buckets: DEFAULT_BUCKETS, a: DEFAULT_A, b: DEFAULT_B }
    }
}

impl PsiConfig {
    /// These lasers and buckets, with the default A and B.
    pub fn with(wavelengths: Vec<f32>, buckets: usize) -> PsiConfig {
        PsiConfig { wavelengths, buckets, ..Default::default() }
    }

    pub fn lasers(&self) -> usize {
        self.wavelengths.len()
    }

    /// Frame channels: lasers × buckets.
    pub fn channels(&self) -> usize {
        self.lasers() * self.buckets
    }

    /// δ_k = 2πk/N (radians), in f64.
    pub fn phase_step(&self, k: usize) -> f64 {
        2.0 * std::f64::consts::PI * k as f64 / self.buckets as f64
    }

    /// At least one wavelength, each positive and finite; `what` names the user ("the physics
    /// loss") in the message.
    pub fn validate_wavelengths(&self, what: &str) -> Result<()> {
        if self.wavelengths.is_empty() {
            return Err(Error::Invalid(format!("{what} needs at least one wavelength; got none")));
        }
        for (i, &w) in self.wavelengths.iter().enumerate() {
            if !(w.is_finite() && w > 0.0) {
                return Err(Error::Invalid(format!(
                    "wavelength {} is {w} µm; wavelengths must be positive and finite",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// A and B finite.
    pub fn validate_ab(&self) -> Result<()> {
        if !(self.a.is_finite() && self.b.is_finite()) {
            return Err(Error::Invalid(format!("A = {} and B = {} must be finite", self.a, self.b)));
        }
        Ok(())
    }
}
