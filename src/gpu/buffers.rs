//! Buffer helpers: the one way to make storage, uniform and staging buffers, and reading
//! results back to the host.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::tensor::check_binding;
use crate::gpu::{Binding, Gpu};

/// What every storage buffer of the engine may be used for: bound by kernels, copied from (read
/// back) and written to (uploads, clears).
const STORAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// A storage buffer holding `contents` (padded with zeros to a multiple of 4 bytes, at least 4),
/// checked against the adapter's storage-binding limit (`label` names it in the error).
pub fn storage(gpu: &Gpu, label: &str, contents: &[u8]) -> Result<wgpu::Buffer> {
    let padded;
    let contents = if contents.len().is_multiple_of(4) && !contents.is_empty() {
        contents
    } else {
        padded = [contents, &vec![0u8; contents.len().div_ceil(4).max(1) * 4 - contents.len()]].concat();
        &padded
    };
    check_binding(gpu, contents.len() as u64, label)?;
    Ok(gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents,
        usage: STORAGE,
    }))
}

/// [`storage`] holding f32 values.
pub fn storage_f32(gpu: &Gpu, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
    storage(gpu, label, bytemuck::cast_slice(values))
}

/// A zero-filled storage buffer of `bytes` (rounded up to a multiple of 4, at least 4), checked
/// against the storage-binding limit.
pub fn zeroed(gpu: &Gpu, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
    let bytes = bytes.div_ceil(4).max(1) * 4;
    check_binding(gpu, bytes, label)?;
    Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: STORAGE,
        mapped_at_creation: false,
    }))
}

/// [`zeroed`] for `len` f32 values (at least one).
pub fn zeroed_f32(gpu: &Gpu, label: &str, len: usize) -> Result<wgpu::Buffer> {
    zeroed(gpu, label, 4 * len as u64)
}

/// A host-mappable buffer of `bytes` that GPU buffers are copied into for reading.
pub fn staging(gpu: &Gpu, label: &str, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.div_ceil(4).max(1) * 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A small uniform buffer holding a kernel's parameters (rewritable with `write_buffer`).
pub fn uniform<P: bytemuck::Pod>(gpu: &Gpu, label: &str, params: &P) -> wgpu::Buffer {
    gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(params),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

/// Copies GPU buffers to the host through a mappable staging buffer.
pub struct Readback;

impl Readback {
    /// Read `bytes` bytes from the start of `src` (submits a copy and waits).
    pub fn bytes(gpu: &Gpu, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        Self::concat(gpu, &[(src, bytes)])
    }

    /// The first `bytes` bytes of each buffer (or buffer range), concatenated (4-byte multiples
    /// except the last): one staging buffer, one submit, one wait.
    pub fn concat<'b, B: Into<Binding<'b>> + Copy>(gpu: &Gpu, parts: &[(B, u64)]) -> Result<Vec<u8>> {
        let sizes: Vec<u64> = parts.iter().map(|(_, b)| b.div_ceil(4) * 4).collect();
        let total: u64 = sizes.iter().sum();
        let staging = staging(gpu, "readback", total);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for (&(src, _), &size) in parts.iter().zip(&sizes) {
            if size > 0 {
                let src = src.into();
                enc.copy_buffer_to_buffer(src.buffer, src.offset(), &staging, at, size);
            }
            at += size;
        }
        gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.wait()?;
        rx.recv()
            .map_err(|e| Error::Gpu(e.to_string()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?
            .to_vec();
        staging.unmap();
        let mut out = Vec::with_capacity(parts.iter().map(|(_, b)| *b as usize).sum());
        let mut at = 0usize;
        for ((_, bytes), &size) in parts.iter().zip(&sizes) {
            out.extend_from_slice(&data[at..at + *bytes as usize]);
            at += size as usize;
        }
        Ok(out)
    }

    pub fn f32(gpu: &Gpu, src: &wgpu::Buffer, count: usize) -> Result<Vec<f32>> {
        let b = Self::bytes(gpu, src, count as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }
}
