//! Synthetic PSI frames on the GPU (`shaders/synth.wgsl`), one band of rows at a time: the
//! `surface` kernel evaluates the height map (the seed surface from per-column and per-row tables,
//! or the random surface's terms) and the A/B fields, the `buckets` kernel renders every channel's
//! `I = A + B·cos(4π·h/λ_l + 2πk/N)` (+ Gaussian noise), quantises and packs it into u32 words.
//! [`BandSlot`] holds one band's buffers and recorded dispatches; `commands::generate` streams the
//! bands into files.
//!
//! Precision (f32 on the GPU): seed heights come from per-column and per-row tables computed in
//! f64 (within about one f32 ulp of the CPU's values); the phase is formed in turns with the large
//! integer part dropped exactly, and the cosine is a range-reduced polynomial, so f32 buckets stay
//! within about 1e-3 counts of the f64 model for B = 100 (1e-4 on the written heights). The error
//! scales with B: at full 16-bit scale (B = 20000) it is a few 1e-3 counts, so a few in a
//! thousand u16 values that sit at a .5 tie round the other way than the f64 model would.
//! The CPU reference is `psi::synthetic` ([`heights_cpu`](crate::psi::synthetic::heights_cpu),
//! [`model_cpu`](crate::psi::synthetic::model_cpu)).

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Shader, grid_1d, staging, storage, zeroed};
use crate::psi::phase::split12;
use crate::psi::surface::{Shape, coord};
use crate::psi::synthetic::{GenerateOptions, ab_fields};

pub static SHADER: Shader = wgsl!("synth": "lib/grid.wgsl", "lib/phase.wgsl", "synth.wgsl");

/// Bytes one band's output buffer may take (the adapter's binding limit applies as well).
const BAND_BUDGET: u64 = 32 << 20;
const WG: usize = 256;

/// Per laser `[2/λ hi, 2/λ lo]` (hi with 12 significant bits; hi + lo = 2/λ).
fn laser_constants(wavelengths: &[f32]) -> Vec<f32> {
    wavelengths.iter().flat_map(|&wl| split12(2.0 / wl as f64)).collect()
}

/// Per column `[x, 15·exp(−(x−0.2)²/0.2), 5x, 100·(x+0.5)²]`, then per row
/// `[y, exp(−(y+0.3)²/0.2), 2.5y, 100·(y−0.4)²]`, computed in f64: the seed surface is
/// `col[1]·row[1] + (col[2] + row[2]) + sqrt(col[3] + row[3])`.
fn coordinate_tables(h: usize, w: usize) -> Vec<[f32; 4]> {
    let cols = (0..w).map(|c| {
        let x = coord(c, w);
        [x, 15.0 * (-(x - 0.2).powi(2) / 0.2).exp(), 5.0 * x, 100.0 * (x + 0.5).powi(2)]
    });
    let rows = (0..h).map(|r| {
        let y = coord(r, h);
        [y, (-(y + 0.3).powi(2) / 0.2).exp(), 2.5 * y, 100.0 * (y - 0.4).powi(2)]
    });
    cols.chain(rows).map(|v| v.map(|x| x as f32)).collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct GenParams {
    w: u32,
    rows: u32,
    row0: u32,
    channels: u32,
    buckets: u32,
    shape: u32,
    terms: u32,
    kind: u32,
    wpc: u32,
    seed_lo: u32,
    seed_hi: u32,
    _pad0: u32,
    a: f32,
    b: f32,
    ab_var: f32,
    sigma: f32,
    fa: [f32; 4],
    fb: [f32; 4],
}

/// Output words per channel band of `rows` rows.
pub fn words_per_channel(rows: usize, w: usize, ty: HostType) -> usize {
    (rows * w * ty.size()).div_ceil(4)
}

/// Rows per band for `opts`: as asked, within the 32 MiB band budget (at least one row) and the
/// adapter's binding limit.
pub fn band_rows(gpu: &Gpu, opts: &GenerateOptions) -> Result<usize> {
    let (h, w, channels, ty) = (opts.height, opts.width, opts.channels(), opts.dtype);
    let row_bytes = 4 * (channels as u64 * words_per_channel(1, w, ty) as u64 + 1);
    let by_budget = ((BAND_BUDGET / row_bytes) as usize).max(1);
    let by_binding = (gpu.max_binding() / row_bytes).min(gpu.max_binding() / (12 * w as u64)) as usize;
    let band = opts.band_rows.max(1).min(h).min(by_budget).min(by_binding);
    if band == 0 {
        return Err(Error::Shape(format!(
            "one row of {channels} x {w} {} values does not fit this adapter's {} MiB storage-binding limit",
            ty.name(),
            gpu.max_binding() >> 20
        )));
    }
    Ok(band)
}

/// The constant inputs of one frame's generation: coordinate tables, surface terms, laser
/// constants and the A/B fields.
pub struct SynthInputs {
    opts: GenerateOptions,
    terms: usize,
    fields: [[f32; 4]; 2],
    coords: wgpu::Buffer,
    term_buf: wgpu::Buffer,
    lasers: wgpu::Buffer,
}

impl SynthInputs {
    pub fn new(gpu: &Gpu, opts: &GenerateOptions) -> Result<SynthInputs> {
        opts.validate()?;
        let coords = storage(gpu, "synth coords", bytemuck::cast_slice(&coordinate_tables(opts.height, opts.width)))?;
        let terms = opts.surface_terms();
        let mut term_data: Vec<f32> = terms
            .iter()
            .flat_map(|t| [t.kind as u32 as f32, t.amp, t.center[0], t.center[1], t.p[0], t.p[1], t.p[2], t.p[3]])
            .collect();
        term_data.resize(term_data.len().max(8), 0.0);
        let term_buf = storage(gpu, "synth terms", bytemuck::cast_slice(&term_data))?;
        let lasers = storage(gpu, "synth lasers", bytemuck::cast_slice(&laser_constants(&opts.psi.wavelengths)))?;
        Ok(SynthInputs {
            opts: opts.clone(),
            terms: terms.len(),
            fields: ab_fields(opts.seed),
            coords,
            term_buf,
            lasers,
        })
    }

    fn params(&self, row0: usize, rows: usize) -> GenParams {
        let o = &self.opts;
        let [fa, fb] = self.fields;
        GenParams {
            w: o.width as u32,
            rows: rows as u32,
            row0: row0 as u32,
            channels: o.channels() as u32,
            buckets: o.psi.buckets as u32,
            shape: match o.shape {
                Shape::Seed => 0,
                Shape::Random => 1,
            },
            terms: self.terms as u32,
            kind: super::host_type_code(o.dtype),
            wpc: words_per_channel(rows, o.width, o.dtype) as u32,
            seed_lo: o.seed as u32,
            seed_hi: (o.seed >> 32) as u32,
            _pad0: 0,
            a: o.psi.a,
            b: o.psi.b,
            ab_var: o.ab_variation,
            sigma: o.noise,
            fa,
            fb,
        }
    }
}

/// The buffers and recorded dispatches of one band of up to `rows` rows: the height/A/B field,
/// the packed bucket words, and a staging buffer that receives the words, then the heights.
pub struct BandSlot {
    field: wgpu::Buffer,
    out: wgpu::Buffer,
    pub staging: wgpu::Buffer,
    surface: Dispatch,
    buckets: Dispatch,
}

impl BandSlot {
    pub fn new(gpu: &Gpu, inputs: &SynthInputs, rows: usize) -> Result<BandSlot> {
        let o = &inputs.opts;
        let (w, channels) = (o.width, o.channels());
        let wpc = words_per_channel(rows, w, o.dtype);
        let out_bytes = (channels * wpc * 4) as u64;
        let plane_bytes = (rows * w * 4) as u64;
        let field = zeroed(gpu, "synth field", 3 * plane_bytes)?;
        let out = zeroed(gpu, "synth out", out_bytes)?;
        let staging = staging(gpu, "synth staging", out_bytes + plane_bytes);
        let p0 = inputs.params(0, rows);
        let [sx, sy] = grid_1d(gpu, rows * w, WG);
        let surface_buffers = [(1, &inputs.coords), (2, &inputs.term_buf), (3, &field)];
        let surface =
            Dispatch::new(gpu, &SHADER.kernel("surface"), Precision::F32, &p0, &surface_buffers, [sx, sy, 1])?;
        let [bx, by] = grid_1d(gpu, channels * wpc, WG);
        let bucket_buffers = [(3, &field), (4, &inputs.lasers), (5, &out)];
        let buckets = Dispatch::new(gpu, &SHADER.kernel("buckets"), Precision::F32, &p0, &bucket_buffers, [bx, by, 1])?;
        Ok(BandSlot { field, out, staging, surface, buckets })
    }

    /// Commands that compute rows `row0 .. row0 + rows` and copy them to [`BandSlot::staging`]:
    /// first each channel's `words_per_channel(rows)` words, then the `rows × w` f32 heights.
    pub fn encode(&self, gpu: &Gpu, inputs: &SynthInputs, row0: usize, rows: usize) -> wgpu::CommandBuffer {
        let o = &inputs.opts;
        let p = inputs.params(row0, rows);
        self.surface.update(gpu, &p);
        self.buckets.update(gpu, &p);
        let band_out = (o.channels() * words_per_channel(rows, o.width, o.dtype) * 4) as u64;
        let band_plane = (rows * o.width * 4) as u64;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.surface.record(&mut pass);
            self.buckets.record(&mut pass);
        }
        enc.copy_buffer_to_buffer(&self.out, 0, &self.staging, 0, band_out);
        enc.copy_buffer_to_buffer(&self.field, 0, &self.staging, band_out, band_plane);
        enc.finish()
    }
}
