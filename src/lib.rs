//! psi-gpu: phase-shifting-interferometry bucket images to height maps on any GPU (wgpu).
//!
//! Layers, lowest first; a module imports only from layers below its own (a test checks it):
//!
//! ```text
//! error, rng, dtype   the bottom: errors, deterministic random numbers, element types
//! io, psi             file formats (npy, safetensors, PNG/BMP, the atomic writer);
//!                     CPU-only physics (PsiConfig, bucket model, phase helpers, surfaces)
//! gpu                 device, pipelines, buffers, Tensor, Plan
//! ops                 every WGSL kernel's launcher and its CPU reference
//! autograd, optim     the tape; Adam, loss scaling, schedules, L-BFGS
//! nn                  models: the U-Net, the classical solver, Scaled-cPIKAN
//! tiling              tile grid, band streaming, a model on an in-memory region
//! commands            one module per subcommand: Options, run, Report
//! ```
//!
//! Data flows one way: read → tiles → model → blend → write (`tiling::stream`).

pub mod dtype;
pub mod error;
pub mod rng;

pub mod io;
pub mod psi;

pub mod gpu;

pub mod ops;

pub mod autograd;
pub mod optim;

pub mod nn;

pub mod tiling;

pub mod commands;

pub mod layering;

pub use dtype::HostType;
pub use error::{Error, Result};
pub use gpu::{ChannelView, Gpu, GpuOptions, Precision, Tensor};
