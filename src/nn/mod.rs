//! Models built from the ops, each instantiated per batch and tile size as a [`Plan`](crate::gpu::Plan):
//! the seed U-Net ([`unet`]: inference, training, initialisation), the classical multi-wavelength
//! solver ([`classical`]), the residual model over both ([`residual`]) and Scaled-cPIKAN
//! ([`cpikan`]); [`Model`] is what `infer` runs.

pub mod classical;
pub mod cpikan;
mod model;
pub mod residual;
pub mod unet;

pub use model::{Model, Reach, UNET_OVERLAP};
