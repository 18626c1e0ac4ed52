//! `psi-gpu generate`: a synthetic frame made on the GPU (`ops::synth`) band by band into a
//! `(L·N, H, W)` bucket stack `.npy` (channel `laser * N + bucket`), optionally with the true
//! heights `(H, W)` f32 beside it and the truth mask `(H, W)` u8: what a solver should make of
//! each pixel ([`crate::psi::reason::Reason`] codes, from `psi::synthetic::reason_rows` on the
//! CPU). Two band slots: the GPU computes one while the host writes the other, so memory depends
//! on the band and the width, never on the height.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use crate::commands::Device;
use crate::commands::outputs::Files;
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::height_map::MapWriter;
use crate::io::preview::{PreviewOptions, PreviewRange, band_rows as mask_band_rows, write_preview};
use crate::io::x3p::X3pMeta;
use crate::ops::synth::{BandSlot, SynthInputs, band_rows, words_per_channel};
use crate::psi::reason::Reason;
use crate::psi::synthetic::{GenerateOptions, reason_rows};

/// What [`generate`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateStats {
    /// `(channels, height, width)` of the bucket file.
    pub shape: [usize; 3],
    pub dtype: HostType,
    /// Rows per band and number of bands.
    pub band_rows: usize,
    pub bands: usize,
    /// Bytes of bucket data written (without the header).
    pub bytes: u64,
    /// Least and greatest height, µm.
    pub height_range: (f32, f32),
    pub seconds: f64,
}

/// A band submitted and being mapped for reading.
struct Pending {
    slot: usize,
    row0: usize,
    rows: usize,
    submission: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// Where a finished band goes: the bucket file (each channel's rows at their offset) and the
/// optional truth file, plus the height range seen so far.
struct Sink<'a> {
    opts: &'a GenerateOptions,
    writer: MapWriter,
    truth: Option<MapWriter>,
    range: (f32, f32),
}

impl Sink<'_> {
    /// Wait for the band of `job`, write it, release the staging buffer.
    fn finish(&mut self, gpu: &Gpu, job: Pending, slots: &[BandSlot]) -> Result<()> {
        let (h, w, ty) = (self.opts.height, self.opts.width, self.opts.dtype);
        gpu.device
            .poll(wgpu::PollType::Wait { submission_index: Some(job.submission), timeout: None })
            .map_err(|e| Error::Gpu(e.to_string()))?;
        job.mapped
            .recv()
            .map_err(|e| Error::Gpu(e.to_string()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let slot = &slots[job.slot];
        let band_wpc = words_per_channel(job.rows, w, ty);
        let plane = job.rows * w;
        let itemsize = ty.size();
        {
            let view = slot
                .staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
            let channels = self.opts.channels();
            for c in 0..channels {
                let src = c * band_wpc * 4;
                let offset = ((c * h + job.row0) * w * itemsize) as u64;
                self.writer.write_at(offset, &view[src..src + plane * itemsize])?;
            }
            let hb = channels * band_wpc * 4;
            let heights: &[f32] = bytemuck::cast_slice(&view[hb..hb + plane * 4]);
            for &v in heights {
                self.range = (self.range.0.min(v), self.range.1.max(v));
            }
            if let Some(t) = self.truth.as_mut() {
                t.write(&view[hb..hb + plane * 4])?;
            }
        }
        slot.staging.unmap();
        Ok(())
    }
}

/// Generate the frame of `opts` on the GPU into the `.npy` file `out` (`(L·N, H, W)` of
/// `opts.dtype`) and, if `truth` is given, its heights `(H, W)` f32 (µm). `on_rows(done, total)`
/// reports progress in rows. Files appear under their names only when complete.
pub fn generate(
    gpu: &Gpu,
    opts: &GenerateOptions,
    out: &Path,
    truth: Option<&Path>,
    mut on_rows: impl FnMut(usize, usize),
) -> Result<GenerateStats> {
    opts.validate()?;
    let start = Instant::now();
    let (h, w, channels, ty) = (opts.height, opts.width, opts.channels(), opts.dtype);
    let band = band_rows(gpu, opts)?;
    let inputs = SynthInputs::new(gpu, opts)?;
    let bands = h.div_ceil(band);
    let slots = (0..bands.min(2)).map(|_| BandSlot::new(gpu, &inputs, band)).collect::<Result<Vec<_>>>()?;
    let mut sink = Sink {
        opts,
        writer: MapWriter::new(out, ty, &[channels, h, w], &X3pMeta::default())?,
        truth: truth.map(|p| MapWriter::new(p, HostType::F32, &[h, w], &X3pMeta::default())).transpose()?,
        range: (f32::INFINITY, f32::NEG_INFINITY),
    };
    let mut pending: Option<Pending> = None;
    for b in 0..bands {
        crate::error::interrupt::check()?;
        let (row0, rows) = (b * band, band.min(h - b * band));
        let si = b % slots.len();
        let submission = gpu.queue.submit([slots[si].encode(gpu, &inputs, row0, rows)]);
        let (tx, rx) = mpsc::channel();
        slots[si].staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let job = Pending { slot: si, row0, rows, submission, mapped: rx };
        if let Some(prev) = pending.replace(job) {
            let done = prev.row0 + prev.rows;
            sink.finish(gpu, prev, &slots)?;
            on_rows(done, h);
        }
    }
    if let Some(last) = pending.take() {
        let done = last.row0 + last.rows;
        sink.finish(gpu, last, &slots)?;
        on_rows(done, h);
    }
    sink.writer.finish()?;
    if let Some(t) = sink.truth {
        t.finish()?;
    }
    Ok(GenerateStats {
        shape: [channels, h, w],
        dtype: ty,
        band_rows: band,
        bands,
        bytes: (channels * h * w * ty.size()) as u64,
        height_range: sink.range,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `psi-gpu generate`: the frame to make and where its files go.
#[derive(Clone, Debug)]
pub struct Options {
    pub generate: GenerateOptions,
    /// The bucket stack `(L·N, H, W)` npy.
    pub output: PathBuf,
    /// Also write the true heights `(H, W)` f32 here.
    pub truth: Option<PathBuf>,
    /// Write the truth mask `(H, W)` u8 here: the [`Reason`] code a solver should give each
    /// pixel (0 ok, 1 low modulation, 2 saturated).
    pub truth_mask: Option<PathBuf>,
    /// Write a colour-mapped PNG of the true heights here.
    pub preview: Option<PathBuf>,
    /// The preview's colour scale.
    pub preview_range: PreviewRange,
}

/// Write the truth mask of `opts` through `writer`, in bands of rows; the pixels per reason
/// code (index = code).
fn write_truth_mask(opts: &GenerateOptions, mut writer: MapWriter) -> Result<[u64; 5]> {
    let (h, w) = (opts.height, opts.width);
    let band = mask_band_rows(w);
    let mut counts = [0u64; 5];
    let mut codes = Vec::with_capacity(band.min(h) * w);
    for row0 in (0..h).step_by(band) {
        reason_rows(opts, row0, band.min(h - row0), &mut codes);
        for &c in &codes {
            counts[c as usize] += 1;
        }
        writer.write(&codes)?;
    }
    writer.finish()?;
    Ok(counts)
}

/// What `psi-gpu generate` wrote.
#[derive(Clone, Debug)]
pub struct Report {
    pub options: Options,
    pub stats: GenerateStats,
    pub device: Device,
    /// The preview's width and height.
    pub preview: Option<(usize, usize)>,
    /// Pixels of the truth mask per reason code, when it was written.
    pub truth_mask: Option<[u64; 5]>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, s) = (&self.options, &self.stats);
        let (lo, hi) = s.height_range;
        write!(
            f,
            "wrote {} {:?} {} | {} surface, ",
            o.output.display(),
            s.shape,
            s.dtype.name(),
            o.generate.shape.name()
        )?;
        write!(f, "heights {lo:.3}..{hi:.3} µm | {:.2} s on {}", s.seconds, self.device)?;
        let patches = &o.generate.patches;
        if !patches.is_empty() {
            let names: Vec<&str> = patches.iter().map(|p| p.name()).collect();
            write!(f, "\npatches: {}", names.join(", "))?;
        }
        if let Some(t) = &o.truth {
            write!(f, "\ntruth: {}", t.display())?;
        }
        if let (Some(m), Some(counts)) = (&o.truth_mask, self.truth_mask) {
            let per: Vec<String> = Reason::ALL
                .iter()
                .filter(|r| counts[r.code() as usize] > 0)
                .map(|r| format!("{} {}", counts[r.code() as usize], r.name()))
                .collect();
            write!(f, "\ntruth mask: {} ({})", m.display(), per.join(", "))?;
        }
        if let (Some(png), Some((w, h))) = (&o.preview, self.preview) {
            write!(f, "\npreview: {} ({w}x{h})", png.display())?;
        }
        Ok(())
    }
}

/// Generate the frame, its truth and truth mask if asked, and the preview (drawn from the truth,
/// which is written beside the output for the purpose and removed when `truth` is not asked
/// for). The mask's file is opened first, so a bad path fails before anything is written.
pub fn run(gpu: &Gpu, opts: &Options, on_rows: impl FnMut(usize, usize)) -> Result<Report> {
    let g = &opts.generate;
    let files = Files::new().outputs("the output", [&opts.output]).outputs("--truth", &opts.truth);
    files.outputs("--truth-mask", &opts.truth_mask).outputs("--preview", &opts.preview).check()?;
    g.validate()?;
    let mask = opts
        .truth_mask
        .as_deref()
        .map(|m| MapWriter::new(m, HostType::U8, &[g.height, g.width], &X3pMeta::default()))
        .transpose()?;
    let truth =
        opts.truth.clone().or_else(|| opts.preview.as_ref().map(|_| opts.output.with_extension("truth.tmp.npy")));
    let stats = generate(gpu, g, &opts.output, truth.as_deref(), on_rows)?;
    let truth_mask = mask.map(|m| write_truth_mask(g, m)).transpose()?;
    let preview = match (&opts.preview, &truth) {
        (Some(png), Some(t)) => {
            let style = PreviewOptions { range: opts.preview_range, ..Default::default() };
            let info = write_preview(t, png, &style);
            if opts.truth.is_none() {
                let _ = std::fs::remove_file(t);
            }
            let info = info?;
            Some((info.width, info.height))
        }
        _ => None,
    };
    Ok(Report { options: opts.clone(), stats, device: Device::of(gpu), preview, truth_mask })
}
