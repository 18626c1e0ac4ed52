//! Kernels against their CPU references and PyTorch, the optimizers, and the naga cross-compile.
//! One test binary per group (one link, one GPU context per process). A kernel is one walk:
//! `shaders/X.wgsl` ↔ `src/ops/X.rs` ↔ `tests/ops/X.rs`.

#[path = "../common/mod.rs"]
mod common;

mod check;

mod adam;
mod batchnorm;
mod blend;
mod chebykan;
mod classical;
mod conv;
mod conv_winograd;
mod convert;
mod gather;
mod lbfgs;
mod loss;
mod pool;
mod residual;
mod shaders;
mod upsample;
