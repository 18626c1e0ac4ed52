//! A model on a frame held in memory: the `(C, h, w)` frame runs as one tile — no grid, no
//! halo, no blending — and the model's output comes back as `(channels, h, w)` f32.
//!
//! This is the host API in ndarray terms: frames in as [`ArrayView3`] of a [`HostElement`]
//! (`u8`, `u16`, `f16`, `f32`), maps out as [`Array3<f32>`] / [`Array2<f32>`] — what numpy
//! arrays map onto. [`run_raw`] takes the raw little-endian bytes a file holds instead (as
//! [`crate::io::npy::NpyReader::read_region`] returns them).
//!
//! The result equals `infer --tile 0` on the same frame: the same conversion (raw value ×
//! input scale, in the model's storage type) and the same model plan. The one difference is
//! the sign of zero: infer's blending adds the output into zeroed accumulators, which turns a
//! `-0.0` into `+0.0`; here the model's values come back as they are.

use ndarray::{Array2, Array3, ArrayView3, Axis};

pub use crate::dtype::HostElement;
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Model;
use crate::ops::convert::{RawBuffer, from_raw};

/// The scale a frame of `ty` is multiplied by before the model: the caller's, else the model's
/// (its weights' `input_scale` metadata), else the type's default (1/255 for u8, 1/65535 for
/// u16, 1 for floats).
pub fn input_scale(user: Option<f32>, metadata: Option<f32>, ty: HostType) -> f32 {
    user.or(metadata).unwrap_or(ty.default_scale())
}

/// Run `model` over the `(C, h, w)` `frame` (any memory layout) as one tile; `scale` overrides
/// the input scale (see [`input_scale`]). Returns the model's `(out_channels, h, w)` output.
pub fn run<T: HostElement>(gpu: &Gpu, model: &Model, frame: ArrayView3<T>, scale: Option<f32>) -> Result<Array3<f32>> {
    let (c, h, w) = frame.dim();
    let mut bytes = Vec::with_capacity(frame.len() * T::TYPE.size());
    for &v in frame.iter() {
        v.push_le(&mut bytes);
    }
    run_raw(gpu, model, T::TYPE, [c, h, w], &bytes, scale)
}

/// The first output channel of [`run`] (the height map), `(h, w)`.
pub fn heights<T: HostElement>(
    gpu: &Gpu,
    model: &Model,
    frame: ArrayView3<T>,
    scale: Option<f32>,
) -> Result<Array2<f32>> {
    Ok(run(gpu, model, frame, scale)?.index_axis_move(Axis(0), 0))
}

/// [`run`] on `bytes`, the raw little-endian data of a C-order `(C, h, w)` array of `ty`.
pub fn run_raw(
    gpu: &Gpu,
    model: &Model,
    ty: HostType,
    [c, h, w]: [usize; 3],
    bytes: &[u8],
    scale: Option<f32>,
) -> Result<Array3<f32>> {
    if c == 0 || h == 0 || w == 0 {
        return Err(Error::Shape(format!("an empty ({c}, {h}, {w}) frame")));
    }
    if bytes.len() != c * h * w * ty.size() {
        return Err(Error::Shape(format!("{} bytes for a ({c}, {h}, {w}) {} frame", bytes.len(), ty.name())));
    }
    if c != model.in_channels() {
        return Err(Error::Shape(format!(
            "the frame has {c} channels but the model ({}) expects {}",
            model.name(),
            model.in_channels()
        )));
    }
    let scale = input_scale(scale, model.input_scale(), ty);
    let raw = RawBuffer::upload(gpu, ty, bytes)?;
    let plan = model.plan(gpu, 1, h, w)?;
    let convert = from_raw(gpu, &raw, scale, &plan.input)?;
    let mut dispatches = vec![&convert];
    dispatches.extend(&plan.dispatches);
    gpu.run(&dispatches)?;
    let out = plan.output.to_f32(gpu)?;
    Array3::from_shape_vec((model.out_channels(), h, w), out).map_err(|e| Error::Shape(format!("model output: {e}")))
}
