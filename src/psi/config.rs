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

/// The phase steps δ of each laser's buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PhaseSteps {
    /// δ_k = 2πk/N for every laser.
    #[default]
    Nominal,
    /// One calibrated list of N steps (radians) for every laser.
    Shared(Vec<f64>),
    /// N calibrated steps (radians) per laser, in channel order.
    PerLaser(Vec<Vec<f64>>),
}

impl PhaseSteps {
    /// Calibrated steps from lists in degrees: one list is [`PhaseSteps::Shared`], several are
    /// [`PhaseSteps::PerLaser`] (in channel order); none is nominal.
    pub fn from_degrees(mut lists: Vec<Vec<f64>>) -> PhaseSteps {
        let radians = |d: Vec<f64>| d.into_iter().map(f64::to_radians).collect();
        match lists.len() {
            0 => PhaseSteps::Nominal,
            1 => PhaseSteps::Shared(radians(lists.remove(0))),
            _ => PhaseSteps::PerLaser(lists.into_iter().map(radians).collect()),
        }
    }

    /// The lists in degrees ([`Self::from_degrees`] reversed).
    pub fn to_degrees(&self) -> Vec<Vec<f64>> {
        let degrees = |d: &[f64]| d.iter().map(|v| v.to_degrees()).collect();
        match self {
            PhaseSteps::Nominal => Vec::new(),
            PhaseSteps::Shared(d) => vec![degrees(d)],
            PhaseSteps::PerLaser(all) => all.iter().map(|d| degrees(d)).collect(),
        }
    }
}

/// Lasers, phase steps and the bucket model's A/B.
#[derive(Clone, Debug, PartialEq)]
pub struct PsiConfig {
    /// One wavelength per laser, µm, in channel order.
    pub wavelengths: Vec<f32>,
    /// Phase-shift buckets per laser (N).
    pub buckets: usize,
    /// The buckets' phase steps (nominal 2πk/N unless calibrated).
    pub phase_steps: PhaseSteps,
    /// Offset A (counts).
    pub a: f32,
    /// Modulation B (counts).
    pub b: f32,
}

impl Default for PsiConfig {
    fn default() -> Self {
        PsiConfig {
            wavelengths: DEFAULT_WAVELENGTHS.to_vec(),
            buckets: DEFAULT_BUCKETS,
            phase_steps: PhaseSteps::Nominal,
            a: DEFAULT_A,
            b: DEFAULT_B,
        }
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

    /// δ of bucket `k` of laser `laser` (radians, f64): 2πk/N unless calibrated.
    pub fn phase_step(&self, laser: usize, k: usize) -> f64 {
        match &self.phase_steps {
            PhaseSteps::Nominal => 2.0 * std::f64::consts::PI * k as f64 / self.buckets as f64,
            PhaseSteps::Shared(d) => d[k],
            PhaseSteps::PerLaser(d) => d[laser][k],
        }
    }

    /// The steps are the nominal 2πk/N.
    pub fn nominal_steps(&self) -> bool {
        self.phase_steps == PhaseSteps::Nominal
    }

    /// Calibrated steps, if any, have one finite value per bucket (and one list per laser).
    pub fn validate_phase_steps(&self) -> Result<()> {
        let n = self.buckets;
        let check = |d: &[f64], what: &str| {
            if d.len() != n {
                return Err(Error::Invalid(format!("{what}: {} phase steps for {n} buckets per laser", d.len())));
            }
            if d.iter().any(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!("{what}: phase steps must be finite")));
            }
            Ok(())
        };
        match &self.phase_steps {
            PhaseSteps::Nominal => Ok(()),
            PhaseSteps::Shared(d) => check(d, "phase steps"),
            PhaseSteps::PerLaser(all) => {
                if all.len() != self.lasers() {
                    return Err(Error::Invalid(format!(
                        "{} lists of phase steps for {} lasers",
                        all.len(),
                        self.lasers()
                    )));
                }
                all.iter().enumerate().try_for_each(|(l, d)| check(d, &format!("laser {}", l + 1)))
            }
        }
    }

    /// An error naming `what` unless the steps are nominal (for the code that assumes 2πk/N).
    pub fn require_nominal_steps(&self, what: &str) -> Result<()> {
        self.validate_phase_steps()?;
        if !self.nominal_steps() {
            return Err(Error::Invalid(format!("{what} supports only the nominal phase steps 2πk/N")));
        }
        Ok(())
    }

    /// No two lasers share a wavelength: the multi-wavelength fringe-order search is degenerate
    /// when two do.
    pub fn validate_distinct_wavelengths(&self) -> Result<()> {
        for (i, a) in self.wavelengths.iter().enumerate() {
            if let Some(j) = self.wavelengths[..i].iter().position(|b| b == a) {
                return Err(Error::Invalid(format!(
                    "wavelengths {} and {} are both {a} µm; the lasers' wavelengths must differ",
                    j + 1,
                    i + 1
                )));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_steps_nominal_and_calibrated() {
        let mut c = PsiConfig::with(vec![5.0, 6.0], 4);
        assert!((c.phase_step(1, 3) - 1.5 * std::f64::consts::PI).abs() < 1e-15);
        c.phase_steps = PhaseSteps::Shared(vec![0.0, 1.6, 3.1, 4.7]);
        assert_eq!(c.phase_step(1, 2), 3.1);
        assert!(c.validate_phase_steps().is_ok() && c.require_nominal_steps("x").is_err());
        c.phase_steps = PhaseSteps::PerLaser(vec![vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 1.5, 3.0, 4.5]]);
        assert_eq!(c.phase_step(1, 1), 1.5);
        c.phase_steps = PhaseSteps::PerLaser(vec![vec![0.0, 1.0, 2.0, 3.0]]);
        assert!(c.validate_phase_steps().unwrap_err().to_string().contains("1 lists of phase steps for 2 lasers"));
        c.phase_steps = PhaseSteps::Shared(vec![0.0, 1.0, f64::NAN, 3.0]);
        assert!(c.validate_phase_steps().is_err());
        c.phase_steps = PhaseSteps::Shared(vec![0.0, 1.0]);
        assert!(c.validate_phase_steps().unwrap_err().to_string().contains("2 phase steps for 4 buckets"));
    }

    #[test]
    fn phase_steps_in_degrees() {
        assert_eq!(PhaseSteps::from_degrees(vec![]), PhaseSteps::Nominal);
        let one = PhaseSteps::from_degrees(vec![vec![0.0, 90.0, 180.0]]);
        assert_eq!(one, PhaseSteps::Shared(vec![0.0, std::f64::consts::FRAC_PI_2, std::f64::consts::PI]));
        let two = vec![vec![0.0, 91.0], vec![1.0, 179.0]];
        let per = PhaseSteps::from_degrees(two.clone());
        assert!(
            matches!(&per, PhaseSteps::PerLaser(d) if d.len() == 2 && (d[1][1] - 179f64.to_radians()).abs() < 1e-15)
        );
        let back = per.to_degrees();
        assert!(back.iter().flatten().zip(two.iter().flatten()).all(|(a, b)| (a - b).abs() < 1e-12));
        assert!(PhaseSteps::Nominal.to_degrees().is_empty());
    }

    #[test]
    fn equal_wavelengths_are_refused() {
        assert!(PsiConfig::default().validate_distinct_wavelengths().is_ok());
        let e = PsiConfig::with(vec![5.0, 5.5, 5.0], 4).validate_distinct_wavelengths().unwrap_err();
        assert!(e.to_string().contains("wavelengths 1 and 3 are both 5 µm"), "{e}");
    }
}
