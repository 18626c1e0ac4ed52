//! The device layer: adapter choice, enabled features and limits ([`Gpu`]), the pipeline cache,
//! recorded dispatches, the buffer helpers and readback, [`Tensor`] (a buffer with an NCHW shape
//! and a storage precision) and [`Plan`] (a model instantiated for one batch and tile size).

mod adapter_choice;
mod buffers;
mod context;
mod dispatch;
mod pipeline;
mod plan;
mod staging;
mod tensor;

pub use adapter_choice::AdapterChoice;
pub use buffers::{Readback, staging, storage, storage_f32, uniform, zeroed, zeroed_f32};
pub use context::{AdapterReport, Gpu, GpuOptions, list_adapters, parse_backends, quiet_display_probe_env};
pub use dispatch::{Binding, Dispatch, grid_1d};
pub use pipeline::{Kernel, Precision, Shader};
pub use plan::Plan;
pub use staging::{Download, Upload, UploadSink};
pub use tensor::{ChannelView, Tensor, buffer_bytes, check_binding, encode};
