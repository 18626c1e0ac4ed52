//! Physics: the classical solver (and later synthesis, losses).

pub mod classical;
pub mod generate;
pub mod loss;
pub mod pde;
pub mod pinn_fit;
pub mod synth;
