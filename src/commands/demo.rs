//! `psi-gpu demo`: the first-run path in one call — generate a noisy frame on the GPU, infer it
//! (classical, tiled, streamed), evaluate against the truth, write previews.

use std::fmt;
use std::path::PathBuf;

use crate::commands::eval::{EvalOptions, Metrics, error_map, error_preview, eval};
use crate::commands::generate::{GenerateStats, generate};
use crate::commands::infer::{InferOptions, InferStats, infer};
use crate::commands::outputs::Files;
use crate::commands::{Device, write_json};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::preview::{PreviewOptions, write_preview};
use crate::psi::synthetic::GenerateOptions;

/// A `size` x `size` frame (u8, noise σ = 2 counts) into `dir`, inferred in `tile` x `tile`
/// tiles overlapping by `overlap`.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub size: usize,
    pub tile: usize,
    pub overlap: Option<usize>,
}

pub struct Report {
    pub size: usize,
    pub device: Device,
    pub files: Vec<(&'static str, PathBuf)>,
    pub generate: GenerateStats,
    pub infer: InferStats,
    pub metrics: Metrics,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, i, m) = (self.size, &self.infer, &self.metrics);
        writeln!(
            f,
            "psi-gpu demo on {}: {n} x {n} frame, 16 buckets (4 lasers), u8 with noise σ = 2 counts",
            self.device
        )?;
        writeln!(f, "generate  {:.2} s", self.generate.seconds)?;
        let (s, mps) = (&i.stream, i.megapixels_per_s());
        writeln!(
            f,
            "infer     {:.2} s, {mps:.2} MP/s, {} tiles of {}x{}, overlap {} | {} | {}",
            s.seconds, s.tiles, s.tile_h, s.tile_w, s.overlap, i.model, i.precision
        )?;
        writeln!(
            f,
            "accuracy  RMSE {:.3e} µm, max |error| {:.3e} µm, detrended RMSE {:.3e} µm, bias {:.2e} µm",
            m.rmse, m.max_abs, m.rmse_detrended, m.bias
        )?;
        write!(f, "files:")?;
        for (what, path) in &self.files {
            write!(f, "\n  {:<28} {}", what, path.display())?;
        }
        Ok(())
    }
}

/// Run the demo.
pub fn run(gpu: &Gpu, opts: &Options) -> Result<Report> {
    let (dir, size) = (&opts.dir, opts.size);
    if size == 0 {
        return Err(Error::Invalid("--size must be positive".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let p = |name: &str| dir.join(name);
    let files = vec![
        ("bucket frame (16, H, W) u8", p("frame.npy")),
        ("true heights", p("truth.npy")),
        ("recovered heights", p("height.npy")),
        ("fringe contrast", p("quality.npy")),
        ("metrics", p("eval.json")),
        ("height preview", p("height.png")),
        ("error preview", p("error.png")),
    ];
    Files::new().outputs("--dir", files.iter().map(|(_, f)| f)).check()?;
    let gopts = GenerateOptions { height: size, width: size, dtype: HostType::U8, noise: 2.0, ..Default::default() };
    let generated = generate(gpu, &gopts, &p("frame.npy"), Some(&p("truth.npy")), |_, _| {})?;

    let mut iopts = InferOptions::new(p("frame.npy"), p("height.npy"));
    iopts.tile = opts.tile;
    iopts.overlap = opts.overlap;
    iopts.quality = Some(p("quality.npy"));
    let inferred = infer(gpu, &iopts, |_, _| {})?;

    let metrics = eval(&p("height.npy"), &p("truth.npy"), &EvalOptions::default())?;
    write_json(&p("eval.json"), &metrics.to_json())?;
    write_preview(&p("height.npy"), &p("height.png"), &PreviewOptions::default())?;
    error_map(&p("height.npy"), &p("truth.npy"), &p("error.png"), &EvalOptions::default(), &error_preview())?;
    Ok(Report { size, device: Device::of(gpu), files, generate: generated, infer: inferred, metrics })
}
