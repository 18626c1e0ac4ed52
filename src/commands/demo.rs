//! `psi-gpu demo`: the first-run path in one call — generate a noisy frame on the GPU, infer it
//! (classical, tiled, streamed), evaluate against the truth, write previews.

use std::path::{Path, PathBuf};

use crate::commands::eval::{EvalOptions, Metrics, error_map, eval};
use crate::commands::generate::{GenerateStats, generate};
use crate::commands::infer::{InferOptions, InferStats, infer};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::preview::{PreviewOptions, write_preview};
use crate::psi::synthetic::GenerateOptions;

pub struct DemoReport {
    pub files: Vec<(&'static str, PathBuf)>,
    pub generate: GenerateStats,
    pub infer: InferStats,
    pub metrics: Metrics,
}

/// Run the demo on a `size` x `size` frame (u8, noise σ = 2 counts) into `dir`.
pub fn demo(gpu: &Gpu, dir: &Path, size: usize, tile: usize, overlap: usize) -> Result<DemoReport> {
    if size == 0 {
        return Err(Error::Invalid("--size must be positive".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let p = |name: &str| dir.join(name);
    let gopts = GenerateOptions { height: size, width: size, dtype: HostType::U8, noise: 2.0, ..Default::default() };
    let generated = generate(gpu, &gopts, &p("frame.npy"), Some(&p("truth.npy")), |_, _| {})?;

    let mut iopts = InferOptions::new(p("frame.npy"), p("height.npy"));
    iopts.tile = tile;
    iopts.overlap = overlap;
    iopts.quality = Some(p("quality.npy"));
    let inferred = infer(gpu, &iopts, |_, _| {})?;

    let metrics = eval(&p("height.npy"), &p("truth.npy"), &EvalOptions::default())?;
    std::fs::write(p("eval.json"), serde_json::to_string_pretty(&metrics.to_json()).unwrap_or_default() + "\n")
        .map_err(|e| Error::io(p("eval.json"), e))?;
    write_preview(&p("height.npy"), &p("height.png"), &PreviewOptions::default())?;
    let err_opts = PreviewOptions { label: "|error| µm".into(), ..Default::default() };
    error_map(&p("height.npy"), &p("truth.npy"), &p("error.png"), &EvalOptions::default(), &err_opts)?;
    let files = vec![
        ("bucket frame (16, H, W) u8", p("frame.npy")),
        ("true heights", p("truth.npy")),
        ("recovered heights", p("height.npy")),
        ("fringe contrast", p("quality.npy")),
        ("metrics", p("eval.json")),
        ("height preview", p("height.png")),
        ("error preview", p("error.png")),
    ];
    Ok(DemoReport { files, generate: generated, infer: inferred, metrics })
}
