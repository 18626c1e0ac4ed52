//! psi-gpu: phase-shifting-interferometry bucket images to height maps on any GPU (wgpu).
//!
//! Data flows one way: `io` reads frames and weights, `gpu` owns the device and pipelines,
//! `ops` launches the WGSL kernels in `shaders/`, `nn` builds models from those ops (the U-Net,
//! Scaled-cPIKAN) and `psi` holds the physics (classical solver, synthesis, losses). `tiling`
//! streams a frame band by band through a model (`infer`); `autograd`, `optim` and `train` train
//! the U-Net, `finetune` adapts it with L-BFGS; `eval`, `demo`, `bench`, `convert` are the other commands' libraries.

pub mod autograd;
pub mod bench;
pub mod convert;
pub mod demo;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod gpu;
pub mod infer;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod psi;
pub mod rng;
pub mod tensor;
pub mod tiling;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Precision};
pub use tensor::{ChannelView, HostType, Tensor};
