//! The streaming driver: for each row of tiles, read that band of rows (every channel) from the
//! frame ([`Bands`]: an npy or TIFF file, or an array in memory), run the tiles in batches — upload the batch's block in its raw dtype, gather and
//! convert on the GPU, model, windowed accumulation in tile order — then normalise the rows no later
//! tile touches, read them back and hand them to the caller. Host and GPU memory depend on the
//! tile size, batch and frame width, never on the frame's height. The overlap is at least what
//! the model's reach needs ([`tiles_for`]), and an exactly local model's tiles are cut, not
//! feathered.
//!
//! Staging is made once per run: one [`Upload`] and one [`Download`] (a band of finished rows,
//! handed to the caller in place). Where a band of input rows fits one storage binding (as a
//! 16 × 512 × 6144 u16 band does in the WebGPU minimum of 128 MiB), the reader writes it straight
//! into the upload, the GPU copies it once per tile row and every batch gathers its tiles from it;
//! else the band is held on the host and each batch uploads its columns. Either way the host
//! bytes held do not grow with the number of tiles, batches or rows ([`StreamStats::host_bytes`]).

use std::ops::Range;
use std::time::Instant;

use wgpu::util::DeviceExt;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Download, Gpu, Plan, Upload, UploadSink, check_binding};
use crate::io::bands::Bands;
use crate::nn::Model;
use crate::ops::blend::{Blender, Window};
use crate::ops::gather::{GatherParams, gather};
use crate::ops::host_type_code;
use crate::tiling::grid::TileGrid;
use crate::tiling::halo::tiles_for;

#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Tile size (0 = the whole frame as one tile), as [`tiles_for`] takes it.
    pub tile: usize,
    /// Overlap between neighbouring tiles; raised to what the model needs.
    pub overlap: usize,
    /// Tiles per batch; `None` = chosen from the adapter's limits and `memory_budget`.
    pub batch: Option<usize>,
    /// Factor applied to the raw input values before the model.
    pub input_scale: f32,
    /// GPU bytes the model activations of one batch may take when the batch is automatic.
    pub memory_budget: u64,
    /// The largest band of input rows (bytes) uploaded whole, straight from the reader, and
    /// gathered from on the GPU; `None`: the adapter's storage-binding limit. A larger band is
    /// held on the host and each batch uploads its columns.
    pub band_limit: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct StreamStats {
    pub tiles: usize,
    pub batch: usize,
    pub tile_h: usize,
    pub tile_w: usize,
    /// The overlap the tiles had (0 when one tile covers the frame).
    pub overlap: usize,
    pub seconds: f64,
    /// Where the time went, as the host saw it: reading bands of the input, waiting for the
    /// device to finish a band's rows (its compute, then the copy back), and handing rows to the
    /// caller (writing the outputs). The rest is recording and submitting work.
    pub read_seconds: f64,
    pub device_seconds: f64,
    pub write_seconds: f64,
    /// Bytes the engine allocated on the GPU (weights, activations, blocks, accumulators).
    pub peak_gpu_bytes: u64,
    /// Bytes of host memory the stream held for data at once: the largest band of input rows
    /// (its allocation) and the upload and download staging buffers (host-visible memory on
    /// every device). On a device whose memory is the host's (a software driver) the GPU bytes
    /// come on top.
    pub host_bytes: u64,
}

/// Seconds spent per stage of [`stream`].
#[derive(Default)]
struct Stages {
    read: f64,
    device: f64,
    write: f64,
}

impl Stages {
    /// `f`, its time added to `total`.
    fn time<R>(total: &mut f64, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        *total += t.elapsed().as_secs_f64();
        r
    }

    fn read<R>(&mut self, f: impl FnOnce() -> R) -> R {
        Stages::time(&mut self.read, f)
    }
}

/// Tile descriptor as the shaders read it: (y0, x0, block column, neighbour flags).
fn descriptor(g: &TileGrid, i: usize, j: usize, block_col: usize) -> [u32; 4] {
    let flags = (i > 0) as u32
        | ((i + 1 < g.ys.len()) as u32) << 1
        | ((j > 0) as u32) << 2
        | ((j + 1 < g.xs.len()) as u32) << 3;
    [g.ys[i] as u32, g.xs[j] as u32, block_col as u32, flags]
}

/// Choose the batch: what the budget allows, within the binding limit, at most a tile row.
/// The most device memory (bytes) the automatic batch plans for on a CPU adapter (a software driver:
/// lavapipe, llvmpipe, WARP), whatever the budget says: there the device's buffers are host memory,
/// and the process's memory must stay bounded like its host side. With the band the GPU keeps, a
/// 16 × 8192 × 6144 u16 frame then peaks well under 512 MiB.
pub const CPU_ADAPTER_BUDGET: u64 = 64 << 20;

fn choose_batch(gpu: &Gpu, model: &Model, g: &TileGrid, opts: &StreamOptions, itemsize: usize) -> Result<usize> {
    let probe = model.plan(gpu, 1, g.th, g.tw)?;
    let by_binding = (gpu.max_binding() / probe.largest_buffer().max(1)) as usize;
    let block_per_tile = (model.in_channels() * g.th * g.tw * itemsize) as u64;
    let by_block = (gpu.max_binding() / block_per_tile.max(1)) as usize;
    let wanted = match opts.batch {
        Some(b) => b.max(1),
        None => {
            let cpu = gpu.info.device_type == format!("{:?}", wgpu::DeviceType::Cpu);
            let budget = if cpu { opts.memory_budget.min(CPU_ADAPTER_BUDGET) } else { opts.memory_budget };
            ((budget / probe.bytes.max(1)) as usize).max(1)
        }
    };
    let batch = wanted.min(g.xs.len()).min(by_binding).min(by_block);
    if batch == 0 {
        return Err(Error::Shape(format!(
            "a {} x {} tile does not fit this adapter's {} MiB storage-binding limit; use a smaller --tile",
            g.th,
            g.tw,
            gpu.max_binding() >> 20
        )));
    }
    Ok(batch)
}

/// The frame's `(C, H, W)`, checked against the model.
fn frame_shape(reader: &impl Bands, model: &Model) -> Result<[usize; 3]> {
    let [c, h, w] = reader.frame_shape()?;
    if c != model.in_channels() {
        return Err(Error::Shape(format!(
            "{} has {c} {} but the model ({}) expects {}",
            reader.name(),
            reader.channel_unit(),
            model.name(),
            model.in_channels()
        )));
    }
    Ok([c, h, w])
}

/// Everything one run keeps on the GPU: the model's plan for a batch of tiles, the raw input
/// block of a batch, the tile descriptors, the gather and the blender.
struct Pipeline {
    grid: TileGrid,
    batch: usize,
    plan: Plan,
    block: wgpu::Buffer,
    tiles: wgpu::Buffer,
    gather: Dispatch,
    gp: GatherParams,
    blender: Blender,
    itemsize: usize,
    peak_gpu_bytes: u64,
    /// `block` holds whole bands (read straight into `upload`, once per tile row), not one
    /// batch's columns of a band held on the host.
    whole_band: bool,
    /// Input on its way to `block`, and finished rows on their way back.
    upload: Upload,
    download: Download,
}

impl Pipeline {
    fn new(gpu: &Gpu, model: &Model, grid: TileGrid, opts: &StreamOptions, ty: HostType, w: usize) -> Result<Self> {
        let (c, itemsize) = (model.in_channels(), ty.size());
        let g = &grid;
        let batch = choose_batch(gpu, model, g, opts, itemsize)?;
        let plan = model.plan(gpu, batch, g.th, g.tw)?;
        // The band whole when it fits, else the widest block a batch reads: columns of `batch`
        // consecutive tiles.
        let limit = opts.band_limit.unwrap_or(u64::MAX).min(gpu.max_binding());
        let whole_band = ((c * g.th * w * itemsize) as u64).div_ceil(4) * 4 <= limit;
        let max_bw = if whole_band {
            w
        } else {
            (0..g.xs.len())
                .map(|j| {
                    let last = (j + batch - 1).min(g.xs.len() - 1);
                    g.xs[last] + g.tw - g.xs[j]
                })
                .max()
                .unwrap_or(g.tw)
        };
        let block_bytes = ((c * g.th * max_bw * itemsize) as u64).div_ceil(4) * 4;
        check_binding(gpu, block_bytes, "the input block of one batch")?;
        let block = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("input block"),
            size: block_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let tiles = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("tile descriptors"),
            contents: bytemuck::cast_slice(&vec![[0u32; 4]; batch]),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        });
        let gp = GatherParams {
            c: c as u32,
            th: g.th as u32,
            tw: g.tw as u32,
            bw: max_bw as u32,
            count: batch as u32,
            scale: opts.input_scale,
            kind: host_type_code(ty),
            _pad: 0,
        };
        let gather = gather(gpu, &block, &tiles, &gp, &plan.input)?;
        let blender = Blender::new(gpu, &plan.output, &tiles, w, g.th, g.overlap, g.window)?;
        let peak_gpu_bytes = model.weight_bytes() + plan.bytes + block_bytes + tiles.size() + blender.bytes;
        let upload = Upload::new(gpu, "input block upload", block_bytes);
        let download = Download::new(gpu, "finished rows", blender.rows_out.buffer.size());
        Ok(Pipeline {
            grid,
            batch,
            plan,
            block,
            tiles,
            gather,
            gp,
            blender,
            itemsize,
            peak_gpu_bytes,
            whole_band,
            upload,
            download,
        })
    }

    /// Rows `rows` of every channel, read from `reader` straight into the upload and copied to
    /// the block (whole-band mode); `read` accumulates the time spent reading.
    fn load_band(&mut self, gpu: &Gpu, reader: &mut impl Bands, rows: Range<usize>, read: &mut f64) -> Result<()> {
        let len = self.gp.c as usize * rows.len() * self.grid.w * self.itemsize;
        self.upload.write(gpu, &self.block, len, |dst| {
            Stages::time(read, || {
                let mut sink = UploadSink::new(dst);
                reader.read_rows_to(rows, &mut sink)?;
                sink.finish("a band of input rows")
            })
        })
    }

    /// Tiles `j0..j1` of tile row `i`: upload their block from `band` (rows `[ys[i], ys[i] + th)`
    /// of every channel of a `w`-wide frame, raw bytes; none in whole-band mode, where the block
    /// holds the band already), gather, model, accumulate; submitted.
    fn run_batch(&mut self, gpu: &Gpu, band: &[u8], w: usize, i: usize, j0: usize, j1: usize) -> Result<()> {
        let (g, s) = (&self.grid, self.itemsize);
        let (xa, xb) = if self.whole_band { (0, w) } else { (g.xs[j0], g.xs[j1 - 1] + g.tw) };
        let bw = xb - xa;
        if !self.whole_band {
            // The batch's block: columns [xa, xb) of the band, every channel, raw bytes, written
            // straight into the upload buffer.
            let rows = band.chunks_exact(w * s);
            let len = rows.len() * bw * s;
            self.upload.write(gpu, &self.block, len, |mut dst| {
                for (k, row) in rows.enumerate() {
                    dst.slice(k * bw * s..(k + 1) * bw * s).copy_from_slice(&row[xa * s..xb * s]);
                }
                Ok(())
            })?;
        }
        let desc: Vec<[u32; 4]> = (j0..j1).map(|j| descriptor(g, i, j, g.xs[j] - xa)).collect();
        gpu.queue.write_buffer(&self.tiles, 0, bytemuck::cast_slice(&desc));
        if g.window == Window::Cut {
            self.blender.set_cores(gpu, &(j0..j1).map(|j| g.core(i, j)).collect::<Vec<_>>());
        }
        self.gp.bw = bw as u32;
        self.gp.count = (j1 - j0) as u32;
        self.gather.update(gpu, &self.gp);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.gather.record(&mut pass);
            self.plan.record(&mut pass);
            for d in self.blender.accumulate(j1 - j0) {
                d.record(&mut pass);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.device.poll(wgpu::PollType::Poll).map_err(|e| Error::Gpu(e.to_string()))?;
        Ok(())
    }

    /// Submit the normalisation of the rows no tile after tile row `i` touches; returns them.
    fn normalize_finished(&mut self, gpu: &Gpu, i: usize) -> std::ops::Range<usize> {
        let rows = self.grid.finished_rows(i);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.blender.normalize(gpu, rows.start, rows.len()).record(&mut pass);
        }
        gpu.queue.submit([enc.finish()]);
        rows
    }
}

/// Run `model` over the `(C, H, W)` frame of `reader`. `on_rows(row0, rows, data)` receives each
/// finished band of rows as `(out_channels, rows, W)` f32 values, top to bottom; `on_tiles(done,
/// total)` reports progress.
pub fn stream(
    gpu: &Gpu,
    model: &Model,
    reader: &mut impl Bands,
    opts: &StreamOptions,
    mut on_rows: impl FnMut(usize, usize, &[f32]) -> Result<()>,
    mut on_tiles: impl FnMut(usize, usize),
) -> Result<StreamStats> {
    let t0 = Instant::now();
    let [_, h, w] = frame_shape(reader, model)?;
    let t = tiles_for(model.reach(), opts.tile, Some(opts.overlap));
    let grid = TileGrid::new(h, w, t.tile, t.overlap)?.with_window(t.window);
    let mut p = Pipeline::new(gpu, model, grid.clone(), opts, reader.ty(), w)?;
    let g = &grid;
    let out_c = model.out_channels();
    let total = g.len();
    let mut done = 0;
    let mut clock = Stages::default();
    // The band of tile row i: in the block (whole-band mode) or here.
    let band_rows = |i: usize| g.ys[i]..g.ys[i] + g.th;
    let mut band = Vec::new();
    let mut band_bytes = 0;
    // Read tile row i's band (the old one is dropped first: one band in memory; in whole-band
    // mode its copy is queued after the batches already submitted).
    let mut load = |p: &mut Pipeline, band: &mut Vec<u8>, clock: &mut Stages, i: usize| -> Result<()> {
        drop(std::mem::take(band));
        if p.whole_band {
            p.load_band(gpu, reader, band_rows(i), &mut clock.read)
        } else {
            *band = clock.read(|| reader.read_rows(band_rows(i)))?;
            band_bytes = band_bytes.max(band.capacity());
            Ok(())
        }
    };
    // Submit tile row i's batches.
    let mut run_row = |p: &mut Pipeline, band: &[u8], i: usize| -> Result<()> {
        for j0 in (0..g.xs.len()).step_by(p.batch) {
            let j1 = (j0 + p.batch).min(g.xs.len());
            crate::error::interrupt::check()?;
            p.run_batch(gpu, band, w, i, j0, j1)?;
            done += j1 - j0;
            on_tiles(done, total);
        }
        Ok(())
    };
    // A software pipeline over tile rows: row i + 1's band is read while the device computes
    // row i, and row i + 1's batches are submitted before row i's rows are waited for and
    // written, so the device computes while the host writes.
    let rows_count = g.ys.len();
    load(&mut p, &mut band, &mut clock, 0)?;
    run_row(&mut p, &band, 0)?;
    let mut rows = p.normalize_finished(gpu, 0);
    if rows_count > 1 {
        load(&mut p, &mut band, &mut clock, 1)?;
    }
    for i in 0..rows_count {
        if i + 1 < rows_count {
            run_row(&mut p, &band, i + 1)?;
        }
        // Wait for row i's rows and hand them over from the download buffer (the time spent in
        // `on_rows` is the caller's).
        let (t, mut wrote) = (Instant::now(), 0.0);
        p.download.f32(gpu, &p.blender.rows_out.buffer, out_c * rows.len() * w, |data| {
            Stages::time(&mut wrote, || on_rows(rows.start, rows.len(), data))
        })?;
        clock.device += t.elapsed().as_secs_f64() - wrote;
        clock.write += wrote;
        if i + 1 < rows_count {
            rows = p.normalize_finished(gpu, i + 1);
            if i + 2 < rows_count {
                load(&mut p, &mut band, &mut clock, i + 2)?;
            }
        }
    }
    Ok(StreamStats {
        tiles: total,
        batch: p.batch,
        tile_h: g.th,
        tile_w: g.tw,
        overlap: if total > 1 { g.overlap } else { 0 },
        seconds: t0.elapsed().as_secs_f64(),
        read_seconds: clock.read,
        device_seconds: clock.device,
        write_seconds: clock.write,
        peak_gpu_bytes: p.peak_gpu_bytes,
        host_bytes: band_bytes as u64 + p.upload.size() + p.download.size(),
    })
}
