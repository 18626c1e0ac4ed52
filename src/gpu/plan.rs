//! `Plan`: a model instantiated for one batch size and tile size — every activation buffer
//! allocated and every dispatch recorded once, replayed for each batch of tiles.

use crate::gpu::Dispatch;
use crate::gpu::Tensor;

pub struct Plan {
    /// `[n, in_channels, h, w]`: the (scaled) frame data goes here.
    pub input: Tensor,
    /// `[n, out_channels, h, w]`.
    pub output: Tensor,
    pub dispatches: Vec<Dispatch>,
    /// Intermediate buffers the dispatches use (kept alive with the plan).
    pub buffers: Vec<Tensor>,
    /// Bytes of all the plan's buffers, input and output included.
    pub bytes: u64,
}

impl Plan {
    /// The largest single buffer (what the storage-binding limit constrains).
    pub fn largest_buffer(&self) -> u64 {
        self.buffers.iter().chain([&self.input, &self.output]).map(|t| t.buffer.size()).max().unwrap_or(0)
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }
}
