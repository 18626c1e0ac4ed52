//! One module per shader: every `include_str!` of the crate, each kernel's launcher (parameter
//! block, shape checks, dispatch construction into buffers the caller owns) and its CPU version
//! in `mod reference` (plain Rust, f64 accumulation), which the tests compare against.
//!
//! A kernel is one walk: `shaders/X.wgsl` ↔ `src/ops/X.rs` ↔ `tests/ops/X.rs` ↔ bench group `X`.

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
pub mod synth;
pub mod upsample;

use crate::gpu::{ChannelView, Precision, Shader};

/// Every WGSL program the engine compiles (the naga test checks each one in both precisions).
pub fn shaders() -> Vec<&'static Shader> {
    vec![
        &adam::SHADER,
        &batchnorm::SHADER,
        &blend::SHADER_NATIVE,
        &blend::SHADER_CAS,
        &chebykan::SHADER,
        &classical::SHADER,
        &conv::SHADER,
        &convert::SHADER,
        &gather::SHADER,
        &loss::SHADER,
        &pool::SHADER,
        &synth::SHADER,
        &upsample::SHADER,
    ]
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
