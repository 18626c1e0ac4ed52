//! GPU context: adapter choice, enabled features and limits, pipeline cache, buffers, readback.

mod buffers;
mod context;
mod dispatch;
mod pipeline;
pub use pipeline::Shader;

pub use buffers::{Readback, uniform};
pub use context::{AdapterReport, Gpu, GpuOptions, list_adapters, parse_backends};
pub use dispatch::{Dispatch, grid_1d};
pub use pipeline::{Kernel, Precision};
