//! Synthetic PSI frames on the GPU (`shaders/synth.wgsl`), one band of rows at a time: the
//! `surface` kernel evaluates the height map (the seed surface or the steep cap from per-column
//! and per-row tables, or the random surface's terms) and the A/B fields with their patches, the
//! `buckets` kernel renders every channel's `I = A + B·cos(4π·h/λ_l + δ_lk)` (δ from a table of
//! the channels' steps, nominal 2πk/N or calibrated; + Gaussian noise), quantises and packs it
//! into u32 words.
//! [`BandSlot`] holds one band's buffers and recorded dispatches; `commands::generate` streams the
//! bands into files.
//!
//! Precision (f32 on the GPU): seed heights come from per-column and per-row tables computed in
//! f64 (within about one f32 ulp of the CPU's values), the steep cap's from integer tables in a
//! form without cancellation (a few 1e-6 µm on small frames); the phase is formed in turns with the large
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
use crate::psi::surface::{Shape, SphericalCap, coord};
use crate::psi::synthetic::{GenerateOptions, PatchKind, ab_fields};

pub static SHADER: Shader = wgsl!("synth": "lib/grid.wgsl", "lib/phase.wgsl", "synth.wgsl");

/// Bytes one band's output buffer may take (the adapter's binding limit applies as well).
const BAND_BUDGET: u64 = 32 << 20;
const WG: usize = 256;

/// Per laser `[2/λ hi, 2/λ lo]` (hi with 12 significant bits; hi + lo = 2/λ).
fn laser_constants(wavelengths: &[f32]) -> Vec<f32> {
    wavelengths.iter().flat_map(|&wl| split12(2.0 / wl as f64)).collect()
}

/// Per channel (laser-major) its phase step in turns, δ/2π in [0, 1]: `k/N` in f32 for the
/// nominal steps, the calibrated step reduced in f64 otherwise.
fn step_turns(opts: &GenerateOptions) -> Vec<f32> {
    let psi = &opts.psi;
    let n = psi.buckets;
    let tau = 2.0 * std::f64::consts::PI;
    (0..psi.lasers())
        .flat_map(|l| (0..n).map(move |k| (l, k)))
        .map(|(l, k)| {
            if psi.nominal_steps() { k as f32 / n as f32 } else { (psi.phase_step(l, k) / tau).rem_euclid(1.0) as f32 }
        })
        .collect()
}

/// The patches as the shader reads them: `[y0, x0, y1, x1]` (ends exclusive), the B factor, the
/// saturate flag and two words of padding; one all-zero patch when there are none.
fn patch_table(opts: &GenerateOptions) -> Vec<u32> {
    let mut table: Vec<u32> = opts
        .patches
        .iter()
        .flat_map(|p| {
            let [y, x, h, w] = p.region.map(|v| v as u32);
            [y, x, y + h, x + w, p.b_factor().to_bits(), (p.kind == PatchKind::Saturate) as u32, 0, 0]
        })
        .collect();
    table.resize(table.len().max(8), 0);
    table
}

/// Per column, then per row, the table `[coordinate, …]` of the surface, computed in f64. Seed:
/// column `[x, 15·exp(−(x−0.2)²/0.2), 5x, 100·(x+0.5)²]`, row
/// `[y, exp(−(y+0.3)²/0.2), 2.5y, 100·(y−0.4)²]`, the surface being
/// `col[1]·row[1] + (col[2] + row[2]) + sqrt(col[3] + row[3])`. Steep: `[x, c·(w−1−c), 0, 0]`
/// and `[y, r·(h−1−r), 0, 0]` ([`SphericalCap`]). Random surfaces read only the coordinates.
fn coordinate_tables(shape: Shape, h: usize, w: usize) -> Vec<[f32; 4]> {
    let steep = shape == Shape::Steep;
    let cols = (0..w).map(|c| {
        let x = coord(c, w);
        if steep {
            return [x, SphericalCap::axis_term(c, w), 0.0, 0.0];
        }
        [x, 15.0 * (-(x - 0.2).powi(2) / 0.2).exp(), 5.0 * x, 100.0 * (x + 0.5).powi(2)]
    });
    let rows = (0..h).map(|r| {
        let y = coord(r, h);
        if steep {
            return [y, SphericalCap::axis_term(r, h), 0.0, 0.0];
        }
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
    cap_q: f32,
    cap_root: f32,
    cap_half_sag: f32,
    patches: u32,
    sat_base: f32,
    _pad1: [u32; 3],
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
/// constants, phase steps, patches and the A/B fields.
pub struct SynthInputs {
    opts: GenerateOptions,
    terms: usize,
    fields: [[f32; 4]; 2],
    cap: SphericalCap,
    coords: wgpu::Buffer,
    term_buf: wgpu::Buffer,
    lasers: wgpu::Buffer,
    steps: wgpu::Buffer,
    patches: wgpu::Buffer,
}

impl SynthInputs {
    pub fn new(gpu: &Gpu, opts: &GenerateOptions) -> Result<SynthInputs> {
        opts.validate()?;
        let tables = coordinate_tables(opts.shape, opts.height, opts.width);
        let coords = storage(gpu, "synth coords", bytemuck::cast_slice(&tables))?;
        let terms = opts.surface_terms();
        let mut term_data: Vec<f32> = terms
            .iter()
            .flat_map(|t| [t.kind as u32 as f32, t.amp, t.center[0], t.center[1], t.p[0], t.p[1], t.p[2], t.p[3]])
            .collect();
        term_data.resize(term_data.len().max(8), 0.0);
        let term_buf = storage(gpu, "synth terms", bytemuck::cast_slice(&term_data))?;
        let lasers = storage(gpu, "synth lasers", bytemuck::cast_slice(&laser_constants(&opts.psi.wavelengths)))?;
        let steps = storage(gpu, "synth steps", bytemuck::cast_slice(&step_turns(opts)))?;
        let patches = storage(gpu, "synth patches", bytemuck::cast_slice(&patch_table(opts)))?;
        Ok(SynthInputs {
            opts: opts.clone(),
            terms: terms.len(),
            fields: ab_fields(opts.seed),
            cap: SphericalCap::new(opts.height, opts.width, opts.slope as f64),
            coords,
            term_buf,
            lasers,
            steps,
            patches,
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
                Shape::Steep => 2,
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
            cap_q: self.cap.q as f32,
            cap_root: self.cap.q.sqrt() as f32,
            cap_half_sag: self.cap.half_sag as f32,
            patches: o.patches.len() as u32,
            sat_base: o.saturated_base(),
            _pad1: [0; 3],
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
        let surface_buffers = [(1, &inputs.coords), (2, &inputs.term_buf), (3, &field), (7, &inputs.patches)];
        let surface =
            Dispatch::new(gpu, &SHADER.kernel("surface"), Precision::F32, &p0, &surface_buffers, [sx, sy, 1])?;
        let [bx, by] = grid_1d(gpu, channels * wpc, WG);
        let bucket_buffers = [(3, &field), (4, &inputs.lasers), (5, &out), (6, &inputs.steps)];
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
