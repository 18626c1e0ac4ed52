//! `Tensor`: a GPU buffer with an NCHW shape and a storage precision. No hidden host copies:
//! data moves to or from the host only through the explicit `upload`/`to_f32` calls.

use half::f16;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision, Readback};

pub struct Tensor {
    pub buffer: wgpu::Buffer,
    /// `[n, c, h, w]`, C-order.
    pub shape: [usize; 4],
    pub precision: Precision,
}

/// A contiguous range of channels of a tensor: kernels read from and write into channel offsets
/// of a larger tensor, which is how the U-Net concatenates skip connections without copies.
#[derive(Clone, Copy)]
pub struct ChannelView<'a> {
    pub tensor: &'a Tensor,
    pub offset: usize,
    pub channels: usize,
}

impl<'a> ChannelView<'a> {
    pub fn n(&self) -> usize {
        self.tensor.shape[0]
    }
    pub fn h(&self) -> usize {
        self.tensor.shape[2]
    }
    pub fn w(&self) -> usize {
        self.tensor.shape[3]
    }
    /// Total channels of the underlying tensor (the stride between images).
    pub fn total(&self) -> usize {
        self.tensor.shape[1]
    }
}

/// Bytes a buffer of `elements` values needs (rounded up to 4 for f16 and copy alignment).
pub fn buffer_bytes(elements: usize, precision: Precision) -> u64 {
    (elements as u64 * precision.size()).div_ceil(4).max(1) * 4
}

/// Fail with a clear message when a buffer would exceed the device's storage-binding limit.
pub fn check_binding(gpu: &Gpu, bytes: u64, what: &str) -> Result<()> {
    let max = gpu.max_binding();
    if bytes > max {
        return Err(Error::Shape(format!(
            "{what} needs a {:.1} MiB buffer, more than this adapter's {:.1} MiB storage-binding limit \
             ({}); use smaller tiles (--tile) or a smaller batch",
            bytes as f64 / 1048576.0,
            max as f64 / 1048576.0,
            gpu.info.name
        )));
    }
    Ok(())
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An uninitialised (zeroed) tensor.
    pub fn new(gpu: &Gpu, shape: [usize; 4], precision: Precision, label: &str) -> Result<Tensor> {
        let bytes = buffer_bytes(shape.iter().product(), precision);
        check_binding(gpu, bytes, label)?;
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Tensor { buffer, shape, precision })
    }

    /// A tensor holding `data` (converted to the storage precision on the host).
    pub fn from_f32(gpu: &Gpu, shape: [usize; 4], precision: Precision, data: &[f32]) -> Result<Tensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!("{} values for shape {shape:?}", data.len())));
        }
        let t = Tensor::new(gpu, shape, precision, "tensor")?;
        t.upload(gpu, data);
        Ok(t)
    }

    /// Overwrite the whole tensor with `data` (length must match).
    pub fn upload(&self, gpu: &Gpu, data: &[f32]) {
        assert_eq!(data.len(), self.len(), "upload length");
        gpu.queue.write_buffer(&self.buffer, 0, &encode(data, self.precision));
    }

    pub fn view(&self) -> ChannelView<'_> {
        ChannelView { tensor: self, offset: 0, channels: self.shape[1] }
    }

    pub fn channels(&self, offset: usize, channels: usize) -> ChannelView<'_> {
        assert!(offset + channels <= self.shape[1], "channel view out of range");
        ChannelView { tensor: self, offset, channels }
    }

    /// Read the tensor back as f32 (waits for queued work).
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let n = self.len();
        match self.precision {
            Precision::F32 => Readback::f32(gpu, &self.buffer, n),
            Precision::F16 => {
                let b = Readback::bytes(gpu, &self.buffer, n as u64 * 2)?;
                Ok(b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
        }
    }
}

/// Host values as the bytes of a storage buffer in `precision`, padded to 4 bytes.
pub fn encode(data: &[f32], precision: Precision) -> Vec<u8> {
    let mut bytes = match precision {
        Precision::F32 => bytemuck::cast_slice(data).to_vec(),
        Precision::F16 => data.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
    };
    bytes.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
    bytes
}
