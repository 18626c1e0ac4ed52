//! CPU-only physics: the frame's configuration ([`PsiConfig`]), the bucket model, phase helpers,
//! synthetic surfaces and frames, and the reason codes of pixels without a height. What every
//! model, generator and reference reads.

pub mod buckets;
pub mod config;
pub mod phase;
pub mod reason;
pub mod surface;
pub mod synthetic;

pub use config::{PhaseSteps, PsiConfig};
