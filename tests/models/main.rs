//! Models against PyTorch and their references: the U-Net (inference and a training step), the
//! residual model, Scaled-cPIKAN, the PINN fit, the Helmholtz benchmark, and tiled streaming.
//! One test binary per group (one link, one GPU context per process).

#[path = "../common/mod.rs"]
mod common;

mod cpikan;
mod helmholtz;
mod pinn_fit;
mod residual;
mod residual_table;
mod tiling;
mod train;
mod unet;
