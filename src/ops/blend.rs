//! Seam-free stitching on the GPU (`shaders/blend.wgsl`): windowed atomic accumulation of tile
//! outputs into a ring of accumulator rows, and normalisation of finished rows.
//!
//! Native f32 atomics where the device has SHADER_FLOAT32_ATOMIC (`shaders/lib/atomic_native.wgsl`),
//! a compare-and-swap loop on u32 bit patterns elsewhere (`shaders/lib/atomic_cas.wgsl`, the GL
//! backend).
//! [`reference`](mod@reference) is the window on the CPU.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Readback, Shader, Tensor, check_binding, grid_1d};

pub static SHADER_NATIVE: Shader = wgsl!("blend_native": "lib/grid.wgsl", "lib/atomic_native.wgsl", "blend.wgsl");
pub static SHADER_CAS: Shader = wgsl!("blend_cas": "lib/grid.wgsl", "lib/atomic_cas.wgsl", "blend.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlendParams {
    pub count: u32,
    pub c: u32,
    pub th: u32,
    pub tw: u32,
    pub w: u32,
    pub ring: u32,
    pub overlap: u32,
    pub row0: u32,
    pub rows: u32,
    pub _pad: [u32; 3],
}

/// Accumulators for `ring` rows of a `w`-wide frame with `c` output channels, and the two
/// dispatches that fill and drain them.
pub struct Blender {
    pub params: BlendParams,
    accumulate: Dispatch,
    normalize: Dispatch,
    /// `[c, ring, w]` f32: normalised rows land here (the first `rows * w` of each channel block).
    pub rows_out: Tensor,
    /// Bytes of the accumulators and the row buffer.
    pub bytes: u64,
    /// The accumulators: weighted values `[c, ring, w]`, weights `[ring, w]` (at the start of a
    /// buffer of the values' size).
    acc: [wgpu::Buffer; 2],
}

impl Blender {
    /// `tile_out` is the model's `[n, c, th, tw]` output; `tiles` the batch's descriptors.
    pub fn new(
        gpu: &Gpu,
        tile_out: &Tensor,
        tiles: &wgpu::Buffer,
        w: usize,
        ring: usize,
        overlap: usize,
    ) -> Result<Blender> {
        let [n, c, th, tw] = tile_out.shape;
        if ring < th {
            return Err(Error::Shape(format!("accumulator ring of {ring} rows for {th}-row tiles")));
        }
        let acc_bytes = (c * ring * w * 4) as u64;
        check_binding(gpu, acc_bytes, "the row accumulator (channels x tile rows x frame width)")?;
        let make = |label| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: acc_bytes.max(4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let (acc, wsum) = (make("blend values"), make("blend weights"));
        let rows_out = Tensor::new(gpu, [1, c, ring, w], Precision::F32, "blended rows")?;
        let params = BlendParams {
            count: n as u32,
            c: c as u32,
            th: th as u32,
            tw: tw as u32,
            w: w as u32,
            ring: ring as u32,
            overlap: overlap as u32,
            row0: 0,
            rows: 0,
            _pad: [0; 3],
        };
        let shader = if gpu.float32_atomics { &SHADER_NATIVE } else { &SHADER_CAS };
        let launch = |entry, bufs: &[(u32, &wgpu::Buffer)], count: usize, planes: usize| {
            let [gx, gy] = grid_1d(gpu, count, 256);
            Dispatch::new(gpu, &shader.kernel(entry), tile_out.precision, &params, bufs, [gx, gy, planes as u32])
        };
        let accumulate = launch("accumulate", &[(1, tiles), (2, &acc), (3, &wsum), (4, &tile_out.buffer)], th * tw, n)?;
        let normalize = launch("normalize", &[(2, &acc), (3, &wsum), (5, &rows_out.buffer)], ring * w, 1)?;
        let bytes = 2 * acc.size() + rows_out.buffer.size();
        Ok(Blender { params, accumulate, normalize, rows_out, bytes, acc: [acc, wsum] })
    }

    /// The accumulate dispatch for a batch of `count` real tiles (parameters written now).
    pub fn accumulate(&mut self, gpu: &Gpu, count: usize) -> &Dispatch {
        self.params.count = count as u32;
        self.accumulate.update(gpu, &self.params);
        &self.accumulate
    }

    /// The accumulated weights `[ring, w]` (frame row y at ring row `y % ring`): what
    /// [`Blender::normalize`] divides by, before it resets them (waits for queued work).
    pub fn read_weights(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        Readback::f32(gpu, &self.acc[1], (self.params.ring * self.params.w) as usize)
    }

    /// The normalize dispatch for frame rows `row0 .. row0 + rows` (at most `ring`).
    pub fn normalize(&mut self, gpu: &Gpu, row0: usize, rows: usize) -> &Dispatch {
        self.params.row0 = row0 as u32;
        self.params.rows = rows as u32;
        self.normalize.update(gpu, &self.params);
        &self.normalize
    }
}

/// The blending window on the CPU (the shader's `ramp` / `axis_weight`): separable sin² ramps of
/// length `overlap` on the sides of a tile that have a neighbour, 1 elsewhere.
pub mod reference {
    /// Weight at distance `j` from a side that has a neighbouring tile.
    pub fn ramp(j: usize, overlap: usize) -> f64 {
        if j >= overlap {
            return 1.0;
        }
        let s = (std::f64::consts::PI * (j as f64 + 0.5) / (2.0 * overlap as f64)).sin();
        s * s
    }

    /// Weights along one tile axis of `n` pixels with neighbours below (`low`) and above (`high`).
    pub fn axis(n: usize, overlap: usize, low: bool, high: bool) -> Vec<f64> {
        (0..n)
            .map(|j| {
                let a = if low { ramp(j, overlap) } else { 1.0 };
                let b = if high { ramp(n - 1 - j, overlap) } else { 1.0 };
                a * b
            })
            .collect()
    }
}
