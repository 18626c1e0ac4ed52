//! CPU-only physics: the frame's configuration ([`PsiConfig`]), the bucket model, phase helpers,
//! and synthetic surfaces and frames. What every model, generator and reference reads.

pub mod buckets;
pub mod config;
pub mod phase;
pub mod surface;
pub mod synthetic;

pub use config::{PhaseSteps, PsiConfig};
