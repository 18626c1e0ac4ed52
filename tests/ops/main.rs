//! Kernels against their CPU references and PyTorch, the optimizers, and the naga cross-compile.
//! One test binary per group (one link, one GPU context per process).

#[path = "../common/mod.rs"]
mod common;

mod adam;
mod chebykan;
mod classical;
mod grad_conv;
mod grad_layers;
mod kernels;
mod lbfgs;
mod loss;
mod shaders;
