//! Learning-rate schedules.

/// Learning-rate schedules as PyTorch's `lr_scheduler` computes them (closed form).
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// `StepLR(step_size, gamma)`: `base · gamma^(k / step_size)` (integer division).
    Step { step_size: usize, gamma: f64 },
    /// `ExponentialLR(gamma)`: `base · gamma^k`.
    Exponential { gamma: f64 },
}

impl LrSchedule {
    /// The learning rate after `k` calls of the scheduler's `step()` (k = 0 gives `base`). Whether
    /// k counts optimizer steps or epochs is the trainer's choice, as in PyTorch.
    pub fn lr(&self, base: f64, k: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => base * gamma.powi((k / step_size.max(1)) as i32),
            LrSchedule::Exponential { gamma } => base * gamma.powi(k as i32),
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Invalid(m));
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { step_size, gamma } => {
                if step_size == 0 {
                    return bad("StepLR: step_size must be at least 1".into());
                }
                if !(gamma.is_finite() && gamma > 0.0) {
                    return bad(format!("StepLR: gamma {gamma} must be positive and finite"));
                }
                Ok(())
            }
            LrSchedule::Exponential { gamma } => {
                if !(gamma.is_finite() && gamma > 0.0) {
                    return bad(format!("ExponentialLR: gamma {gamma} must be positive and finite"));
                }
                Ok(())
            }
        }
    }
}
