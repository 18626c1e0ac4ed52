//! Staging buffers a run keeps: [`Upload`] (host → GPU) and [`Download`] (GPU → host), each one
//! host-visible buffer made once and reused for every batch or band, so the host memory a
//! stream holds for transfers is one buffer each, whatever the number of tiles, batches or rows.
//!
//! `Queue::write_buffer` and a fresh readback buffer per call would instead allocate a staging
//! buffer per call, freed only once its submission is known complete: a row of batches queued
//! ahead keeps a whole band's worth of them alive. Here the upload is filled in place (no host
//! copy in between) once the GPU has copied the previous contents out, and the copy is submitted
//! on its own, so waiting for it never waits for the compute that follows it.

use std::sync::mpsc::{Receiver, channel};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::row_sink::RowSink;

/// Wait until `buffer`'s requested mapping (`rx`) has resolved, polling for `index`.
fn wait_mapped(
    gpu: &Gpu,
    index: wgpu::SubmissionIndex,
    rx: Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
) -> Result<()> {
    gpu.device
        .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
        .map_err(|e| Error::Gpu(e.to_string()))?;
    rx.recv().map_err(|e| Error::Gpu(e.to_string()))?.map_err(|e| Error::Gpu(format!("mapping a staging buffer: {e}")))
}

/// A mappable buffer the host fills and the GPU copies into a storage buffer.
pub struct Upload {
    buffer: wgpu::Buffer,
    /// The copy that last read the buffer, and the mapping that resolves when it is done;
    /// `None` while the buffer is mapped and free to fill.
    pending: Option<(wgpu::SubmissionIndex, Receiver<std::result::Result<(), wgpu::BufferAsyncError>>)>,
}

impl Upload {
    /// An upload buffer of `bytes` (rounded up to a multiple of 4, at least 4), mapped.
    pub fn new(gpu: &Gpu, label: &str, bytes: u64) -> Upload {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.div_ceil(4).max(1) * 4,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        Upload { buffer, pending: None }
    }

    pub fn size(&self) -> u64 {
        self.buffer.size()
    }

    /// Let `fill` write the first `len` bytes (rounded up to 4; the padding is zeroed) and
    /// submit their copy to the start of `dst`. Waits for the previous copy out of this buffer,
    /// not for later work; queue order keeps the new copy after the work submitted before it.
    pub fn write(
        &mut self,
        gpu: &Gpu,
        dst: &wgpu::Buffer,
        len: usize,
        fill: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> Result<()>,
    ) -> Result<()> {
        let padded = (len as u64).div_ceil(4).max(1) * 4;
        if padded > self.buffer.size() || padded > dst.size() {
            return Err(Error::Gpu(format!(
                "an upload of {len} bytes into a {}-byte staging buffer and a {}-byte destination",
                self.buffer.size(),
                dst.size()
            )));
        }
        if let Some((index, rx)) = self.pending.take() {
            wait_mapped(gpu, index, rx)?;
        }
        {
            let mut view = self
                .buffer
                .slice(..padded)
                .get_mapped_range_mut()
                .map_err(|e| Error::Gpu(format!("mapping an upload buffer: {e}")))?;
            view.slice(len..).fill(0);
            fill(view.slice(..len))?;
        }
        self.buffer.unmap();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.buffer, 0, dst, 0, padded);
        let index = gpu.queue.submit([enc.finish()]);
        let (tx, rx) = channel();
        self.buffer.slice(..).map_async(wgpu::MapMode::Write, move |r| {
            let _ = tx.send(r);
        });
        self.pending = Some((index, rx));
        Ok(())
    }
}

/// An upload's bytes as a [`RowSink`]: a reader writes a band straight into the mapping.
pub struct UploadSink<'a> {
    out: wgpu::WriteOnly<'a, [u8]>,
    at: usize,
    /// Bytes offered past the end (dropped; [`UploadSink::finish`] reports them).
    over: usize,
}

impl<'a> UploadSink<'a> {
    pub fn new(out: wgpu::WriteOnly<'a, [u8]>) -> UploadSink<'a> {
        UploadSink { out, at: 0, over: 0 }
    }

    /// Whether exactly the whole view was written (`what` names the data in the error).
    pub fn finish(self, what: &str) -> Result<()> {
        let len = self.out.len();
        if self.at != len || self.over > 0 {
            return Err(Error::Shape(format!("{what}: {} bytes read for a {len}-byte block", self.at + self.over)));
        }
        Ok(())
    }
}

impl RowSink for UploadSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.out.len() - self.at);
        self.out.slice(self.at..self.at + n).copy_from_slice(&bytes[..n]);
        self.at += n;
        self.over += bytes.len() - n;
    }
}

/// A mappable buffer GPU results are copied into and read from in place.
pub struct Download {
    buffer: wgpu::Buffer,
}

impl Download {
    /// A download buffer of `bytes` (rounded up to a multiple of 4, at least 4).
    pub fn new(gpu: &Gpu, label: &str, bytes: u64) -> Download {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.div_ceil(4).max(1) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Download { buffer }
    }

    pub fn size(&self) -> u64 {
        self.buffer.size()
    }

    /// Copy the first `count` f32 values of `src` here (after the work queued before), wait for
    /// them and hand them to `read`; the buffer is unmapped again afterwards.
    pub fn f32<R>(
        &mut self,
        gpu: &Gpu,
        src: &wgpu::Buffer,
        count: usize,
        read: impl FnOnce(&[f32]) -> Result<R>,
    ) -> Result<R> {
        let bytes = (count as u64 * 4).max(4);
        if bytes > self.buffer.size() || bytes > src.size() {
            return Err(Error::Gpu(format!(
                "a download of {bytes} bytes from a {}-byte buffer into a {}-byte staging buffer",
                src.size(),
                self.buffer.size()
            )));
        }
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, &self.buffer, 0, bytes);
        let index = gpu.queue.submit([enc.finish()]);
        let (tx, rx) = channel();
        let slice = self.buffer.slice(..bytes);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        wait_mapped(gpu, index, rx)?;
        let result = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
            match bytemuck::try_cast_slice::<u8, f32>(&view) {
                Ok(values) => read(&values[..count]),
                // A mapping is at least 4-byte aligned on every backend; copy if one is not.
                Err(_) => read(&bytemuck::pod_collect_to_vec::<u8, f32>(&view)[..count]),
            }
        };
        self.buffer.unmap();
        result
    }
}
