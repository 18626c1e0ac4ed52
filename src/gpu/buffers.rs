//! Buffer helpers: uniform parameter blocks and reading results back to the host.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

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

    /// The first `bytes` bytes of each buffer, concatenated (4-byte multiples except the last):
    /// one staging buffer, one submit, one wait.
    pub fn concat(gpu: &Gpu, parts: &[(&wgpu::Buffer, u64)]) -> Result<Vec<u8>> {
        let sizes: Vec<u64> = parts.iter().map(|(_, b)| b.div_ceil(4) * 4).collect();
        let total: u64 = sizes.iter().sum();
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for ((src, _), &size) in parts.iter().zip(&sizes) {
            if size > 0 {
                enc.copy_buffer_to_buffer(src, 0, &staging, at, size);
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
