//! One module per shader file: parameter blocks, shape checks and dispatch construction.
//! `reference` holds the plain-Rust CPU version of every kernel, used by the tests.

pub mod batchnorm;
pub mod conv;
pub mod convert;
pub mod pool;
pub mod reference;
pub mod upsample;

use crate::gpu::Shader;

/// Every WGSL program the engine compiles (the naga test checks each one in both precisions).
pub fn shaders() -> Vec<&'static Shader> {
    vec![
        &batchnorm::SHADER,
        &conv::SHADER,
        &convert::SHADER,
        &pool::SHADER,
        &upsample::SHADER,
        &crate::psi::classical::SHADER,
        &crate::psi::generate::SHADER,
        &crate::psi::loss::SHADER,
        &crate::optim::adam::SHADER,
        &crate::tiling::gather::SHADER,
        &crate::tiling::blend::SHADER_NATIVE,
        &crate::tiling::blend::SHADER_CAS,
        &crate::nn::cpikan::SHADER,
    ]
}

/// Both views must live in tensors of one precision; returns it.
fn same_precision(a: &crate::ChannelView, b: &crate::ChannelView) -> crate::Result<crate::Precision> {
    if a.tensor.precision != b.tensor.precision {
        return Err(crate::Error::Shape(format!(
            "precision mismatch: {} input, {} output",
            a.tensor.precision, b.tensor.precision
        )));
    }
    Ok(a.tensor.precision)
}
