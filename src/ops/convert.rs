//! Element-wise conversions (`shaders/convert.wgsl`): raw u8/u16/f16/f32 frames to the storage
//! type with a scale, and the storage type back to f32.

use wgpu::util::DeviceExt;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Shader, grid_1d};
use crate::gpu::{Tensor, check_binding};

pub static SHADER: Shader = wgsl!("convert": "lib/grid.wgsl", "lib/decode.wgsl", "convert.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ConvertParams {
    count: u32,
    scale: f32,
    /// [`super::host_type_code`] of the raw data (`from_raw`).
    kind: u32,
    _pad: u32,
}

/// Raw host data uploaded as is (little-endian, padded to 4 bytes).
pub struct RawBuffer {
    pub buffer: wgpu::Buffer,
    pub ty: HostType,
    pub count: usize,
}

impl RawBuffer {
    pub fn upload(gpu: &Gpu, ty: HostType, bytes: &[u8]) -> Result<RawBuffer> {
        if !bytes.len().is_multiple_of(ty.size()) {
            return Err(Error::Shape(format!("{} bytes is not a whole number of {} values", bytes.len(), ty.name())));
        }
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        check_binding(gpu, padded.len() as u64, "raw frame")?;
        let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("raw frame"),
            contents: &padded,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        });
        Ok(RawBuffer { buffer, ty, count: bytes.len() / ty.size() })
    }
}

/// `output = raw * scale` in the output's storage type; counts must match.
pub fn from_raw(gpu: &Gpu, raw: &RawBuffer, scale: f32, output: &Tensor) -> Result<Dispatch> {
    if raw.count != output.len() {
        return Err(Error::Shape(format!("converting {} values into a tensor of {}", raw.count, output.len())));
    }
    let p = ConvertParams { count: raw.count as u32, scale, kind: super::host_type_code(raw.ty), _pad: 0 };
    elementwise(gpu, "from_raw", output.precision, &p, &[(1, &raw.buffer), (4, &output.buffer)])
}

/// `output (f32) = input * scale`; `output` must be an f32 tensor with as many values.
pub fn to_f32(gpu: &Gpu, input: &Tensor, scale: f32, output: &Tensor) -> Result<Dispatch> {
    if output.precision != Precision::F32 || output.len() != input.len() {
        return Err(Error::Shape("to_f32 needs an f32 output of the input's size".into()));
    }
    let p = ConvertParams { count: input.len() as u32, scale, kind: 0, _pad: 0 };
    elementwise(gpu, "to_f32", input.precision, &p, &[(3, &input.buffer), (5, &output.buffer)])
}

/// The entry point `entry` over `p.count` values, one invocation each.
fn elementwise(
    gpu: &Gpu,
    entry: &'static str,
    precision: Precision,
    p: &ConvertParams,
    bufs: &[(u32, &wgpu::Buffer)],
) -> Result<Dispatch> {
    let [gx, gy] = grid_1d(gpu, p.count as usize, 256);
    Dispatch::new(gpu, &SHADER.kernel(entry), precision, p, bufs, [gx, gy, 1])
}

/// The conversions on the CPU (conventions in [`crate::ops`]).
pub mod reference {
    use crate::dtype::HostType;
    use crate::io::npy;

    /// Raw little-endian `bytes` of type `ty` times `scale`: what [`super::from_raw`] stores before
    /// rounding to the storage type.
    pub fn from_raw(ty: HostType, bytes: &[u8], scale: f64) -> Vec<f64> {
        npy::to_f32(ty, bytes).into_iter().map(|v| v as f64 * scale).collect()
    }

    /// `input · scale`, what [`super::to_f32`] computes from the stored values.
    pub fn to_f32(input: &[f64], scale: f64) -> Vec<f64> {
        input.iter().map(|v| v * scale).collect()
    }
}
