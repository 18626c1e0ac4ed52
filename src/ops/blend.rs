//! Seam-free stitching on the GPU (`shaders/blend.wgsl`): windowed accumulation of tile outputs
//! into a ring of accumulator rows, and normalisation of finished rows. Two windows
//! ([`Window`]): feathered sin² ramps over the overlap, or a cut that takes each pixel from the
//! one tile whose core holds it.
//!
//! Deterministic on every device: one accumulate dispatch per tile of a batch, recorded in tile
//! order in one compute pass. wgpu puts a barrier between dispatches that use a buffer as
//! read-write storage (a compute pass has one usage scope per dispatch, and read-write storage is
//! not among the usages a backend orders by itself), so each dispatch sees the previous one's
//! sums; within one, every accumulator element has a single writer. No atomics: the same code on
//! Vulkan, GL, DX12 and Metal, and each pixel's tiles are added in tile order whatever the batch
//! size (batch 3 gives the bytes of batch 1).
//! [`reference`](mod@reference) is the window on the CPU.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Readback, Shader, Tensor, check_binding, grid_1d};

pub static SHADER: Shader = wgsl!("blend": "lib/grid.wgsl", "blend.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlendParams {
    /// Tiles in the model's output (the batch).
    pub count: u32,
    pub c: u32,
    pub th: u32,
    pub tw: u32,
    pub w: u32,
    pub ring: u32,
    pub overlap: u32,
    pub row0: u32,
    pub rows: u32,
    /// The tile of the batch an accumulate dispatch adds.
    pub tile: u32,
    /// 1: [`Window::Cut`], 0: [`Window::Feather`].
    pub cut: u32,
    pub _pad: u32,
}

/// How the tiles covering a pixel make its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Separable sin² ramps over the overlap: the tiles' values mixed, seams feathered. For
    /// models whose tiles differ near their edges (the U-Net's receptive field is wider than
    /// any practical overlap).
    Feather,
    /// Each tile gives only its core (`cores`: y_lo, y_hi, x_lo, x_hi in tile pixels, which
    /// partition the frame): every pixel is one tile's value, bit for bit, NaN included. For
    /// models whose output is exactly local: with an overlap of twice their halo the cores equal
    /// the whole frame's result.
    Cut,
}

/// Accumulators for `ring` rows of a `w`-wide frame with `c` output channels, and the dispatches
/// that fill them (one per tile of a batch) and drain them.
pub struct Blender {
    pub params: BlendParams,
    /// Dispatch `k` adds tile `k` of the batch.
    accumulate: Vec<Dispatch>,
    normalize: Dispatch,
    /// `[c, ring, w]` f32: normalised rows land here (the first `rows * w` of each channel block).
    pub rows_out: Tensor,
    /// Bytes of the accumulators and the row buffer.
    pub bytes: u64,
    /// The accumulators: weighted values `[c, ring, w]`, weights `[ring, w]` (at the start of a
    /// buffer of the values' size).
    acc: [wgpu::Buffer; 2],
    /// The batch's tile cores for [`Window::Cut`] (see [`Blender::set_cores`]).
    cores: wgpu::Buffer,
}

impl Blender {
    /// `tile_out` is the model's `[n, c, th, tw]` output; `tiles` the batch's descriptors; with
    /// [`Window::Cut`], [`Blender::set_cores`] gives each batch's cores.
    pub fn new(
        gpu: &Gpu,
        tile_out: &Tensor,
        tiles: &wgpu::Buffer,
        w: usize,
        ring: usize,
        overlap: usize,
        window: Window,
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
        let cores = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tile cores"),
            size: (16 * n.max(1)) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
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
            tile: 0,
            cut: u32::from(window == Window::Cut),
            _pad: 0,
        };
        let launch = |entry, params: &BlendParams, bufs: &[(u32, &wgpu::Buffer)], count: usize| {
            let [gx, gy] = grid_1d(gpu, count, 256);
            Dispatch::new(gpu, &SHADER.kernel(entry), tile_out.precision, params, bufs, [gx, gy, 1])
        };
        let bufs = [(1, tiles), (2, &acc), (3, &wsum), (4, &tile_out.buffer), (6, &cores)];
        let accumulate = (0..n as u32)
            .map(|tile| launch("accumulate", &BlendParams { tile, ..params }, &bufs, th * tw))
            .collect::<Result<Vec<_>>>()?;
        let normalize = launch("normalize", &params, &[(2, &acc), (3, &wsum), (5, &rows_out.buffer)], ring * w)?;
        let bytes = 2 * acc.size() + rows_out.buffer.size() + cores.size();
        Ok(Blender { params, accumulate, normalize, rows_out, bytes, acc: [acc, wsum], cores })
    }

    /// The cores `(y_lo, y_hi, x_lo, x_hi)` of the batch's tiles, in tile pixels, for
    /// [`Window::Cut`] (queued; the next accumulate dispatches read them).
    pub fn set_cores(&self, gpu: &Gpu, cores: &[[u32; 4]]) {
        gpu.queue.write_buffer(&self.cores, 0, bytemuck::cast_slice(cores));
    }

    /// The accumulate dispatches for a batch of `count` real tiles, one per tile: record them in
    /// this order (in one pass or several) for the fixed order of additions.
    pub fn accumulate(&self, count: usize) -> &[Dispatch] {
        &self.accumulate[..count]
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
