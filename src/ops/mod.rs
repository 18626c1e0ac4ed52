//! One module per shader: every `include_str!` of the crate, each kernel's launcher (parameter
//! block, shape checks, dispatch construction into buffers the caller owns) and its CPU version
//! in `mod reference`, which the tests compare against.
//!
//! A kernel is one walk: `shaders/X.wgsl` ↔ `src/ops/X.rs` ↔ `tests/ops/X.rs` ↔ bench group `X`;
//! the WGSL pieces several kernels share (phase arithmetic, raw-data decoding, the grid index,
//! the workgroup sum) live in `shaders/lib/`.
//!
//! # CPU references
//!
//! Every `X::reference` follows one convention, so a test reads the same for every kernel:
//! - plain Rust in f64: `&[f64]` in, `Vec<f64>` out (a struct of named vectors when a kernel has
//!   several outputs), so the references also serve finite differences; tests round the GPU's
//!   inputs to its storage precision and convert at the boundary;
//! - whole tensors in C order (no channel views): images NCHW with the first one's shape as an
//!   `[n, c, h, w]` array; other layouts (a block of frame rows, flat values, a window along one
//!   axis) are named in the function's doc; other sizes are named arguments;
//! - each function named after the launcher (or shader entry point) it mirrors, taking the
//!   launcher's own configuration types.
//!
//! One exception: `adam::reference` is also the optimizer of the host-side models, so it is
//! generic over the float type (f64 in the tests, f32 in `optim::HostAdam`) and updates the
//! parameters and moments in place.

/// A [`Shader`](crate::gpu::Shader) named `$name` whose body is the given files of `shaders/`
/// (shared pieces from `lib/` first), concatenated in order.
macro_rules! wgsl {
    ($name:literal: $($file:literal),+ $(,)?) => {
        crate::gpu::Shader {
            name: $name,
            body: concat!($(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file))),+),
        }
    };
}

pub mod adam;
pub mod batchnorm;
pub mod blend;
pub mod chebykan;
pub mod classical;
pub mod conv;
pub mod convert;
pub mod gather;
pub mod loss;
pub mod pool;
pub mod residual;
pub mod synth;
pub mod upsample;

#[cfg(test)]
mod uniforms;

use crate::dtype::HostType;
use crate::gpu::{ChannelView, Precision, Shader};
use conv::winograd;

/// One row of [`programs`]: a WGSL program with its parameter struct.
macro_rules! program {
    ($module:ident :: $shader:ident, $params:ident) => {
        Program {
            shader: &$module::$shader,
            params: stringify!($params),
            params_size: std::mem::size_of::<$module::$params>(),
        }
    };
}

/// A WGSL program and its parameter block: the struct of the same name in WGSL and Rust, bound as
/// `var<uniform>` at @group(0) @binding(0) (a test checks that naga lays it out in as many bytes).
pub struct Program {
    pub shader: &'static Shader,
    pub params: &'static str,
    pub params_size: usize,
}

/// Every WGSL program the engine compiles.
pub fn programs() -> [Program; 14] {
    [
        program!(adam::SHADER, AdamParams),
        program!(batchnorm::SHADER, BnParams),
        program!(blend::SHADER, BlendParams),
        program!(chebykan::SHADER, ChebyParams),
        program!(classical::SHADER, ClassicalParams),
        program!(conv::SHADER, ConvParams),
        // The Winograd kernel shares the convolutions' parameter block (lib/conv_io.wgsl).
        Program {
            shader: &winograd::SHADER,
            params: "ConvParams",
            params_size: std::mem::size_of::<conv::ConvParams>(),
        },
        program!(convert::SHADER, ConvertParams),
        program!(gather::SHADER, GatherParams),
        program!(loss::SHADER, LossParams),
        program!(pool::SHADER, PoolParams),
        program!(residual::SHADER, ResidualParams),
        program!(synth::SHADER, GenParams),
        program!(upsample::SHADER, UpParams),
    ]
}

/// Every WGSL program the engine compiles (the naga test checks each one in both precisions).
pub fn shaders() -> Vec<&'static Shader> {
    programs().iter().map(|p| p.shader).collect()
}

/// A view's shape as the shaders' u32 fields: `[n, channels, h, w]`.
fn dims(v: &ChannelView) -> [u32; 4] {
    [v.n(), v.channels, v.h(), v.w()].map(|d| d as u32)
}

/// Where a view sits in its tensor, as the shaders' u32 fields: `[total channels, channel offset]`.
fn slot(v: &ChannelView) -> [u32; 2] {
    [v.total() as u32, v.offset as u32]
}

/// Both views must live in tensors of one precision; returns it.
fn same_precision(a: &ChannelView, b: &ChannelView) -> crate::Result<Precision> {
    if a.tensor.precision != b.tensor.precision {
        return Err(crate::Error::Shape(format!(
            "precision mismatch: {} input, {} output",
            a.tensor.precision, b.tensor.precision
        )));
    }
    Ok(a.tensor.precision)
}

/// The code of a host data type in the shaders' parameters (`kind`): `lib/decode.wgsl`'s
/// `raw_value` reads it, `synth.wgsl` packs its output by it.
pub fn host_type_code(ty: HostType) -> u32 {
    match ty {
        HostType::F32 => 0,
        HostType::U8 => 1,
        HostType::U16 => 2,
        HostType::F16 => 3,
    }
}
