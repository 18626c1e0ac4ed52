//! `psi-gpu bench`: the whole infer path on a generated frame — megapixels/s, and the share of
//! the time spent outside the model (reading, gathering, blending, writing), measured by running
//! the same tiles through a model that only copies its first channel.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::commands::generate::generate;
use crate::commands::infer::{InferOptions, InferStats, infer_with, load_model};
use crate::commands::outputs::Files;
use crate::commands::{Device, write_json};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::nn::Model;
use crate::ops::classical::{Search, Unwrap};
use crate::ops::conv::select::Conv;
use crate::psi::synthetic::GenerateOptions;

#[derive(Clone, Debug)]
pub struct Options {
    pub height: usize,
    pub width: usize,
    pub weights: Option<PathBuf>,
    pub tile: usize,
    pub overlap: Option<usize>,
    pub batch: Option<usize>,
    pub precision: Option<Precision>,
    /// The U-Net's 3x3 convolution kernel (ignored without weights).
    pub conv: Conv,
    /// How the classical solver decides fringe orders (`--unwrap`; ignored with weights).
    pub unwrap: Unwrap,
    /// Whether the classical search skips candidates that cannot win (ignored with weights).
    pub search: Search,
    /// Folder for the generated frame and outputs (removed afterwards).
    pub dir: PathBuf,
    /// Write the figures ([`Report::to_json`]) here.
    pub json: Option<PathBuf>,
}

impl Options {
    /// A scratch folder for the frame, unique to this process.
    pub fn scratch_dir() -> PathBuf {
        std::env::temp_dir().join(format!("psi-gpu-bench-{}", std::process::id()))
    }
}

pub struct Report {
    pub device: Device,
    pub model: InferStats,
    /// The same run with the first-channel model: everything but the model.
    pub pipeline: InferStats,
    pub generate_seconds: f64,
}

impl Report {
    /// Fraction of the model run's time that the pipeline alone takes (an upper bound on the
    /// time outside the model: the first-channel model is a tiny 1x1 convolution).
    pub fn share_outside_model(&self) -> f64 {
        self.pipeline.stream.seconds / self.model.stream.seconds.max(1e-12)
    }

    /// Pixels the model computed per output pixel: tiles x tile area / frame area (1.0 when the
    /// tiles do not overlap).
    pub fn computed_per_output(&self) -> f64 {
        let (s, [_, h, w]) = (&self.model.stream, self.model.shape);
        (s.tiles * s.tile_h * s.tile_w) as f64 / (h * w) as f64
    }

    /// The figures `--json` writes.
    pub fn to_json(&self) -> serde_json::Value {
        let (m, d) = (&self.model, &self.device);
        serde_json::json!({
            "device": d.name, "backend": d.backend, "device_type": d.device_type,
            "frame": m.shape, "model": m.model, "precision": m.precision.to_string(),
            "tile": [m.stream.tile_h, m.stream.tile_w], "overlap": m.overlap, "batch": m.stream.batch,
            "tiles": m.stream.tiles, "computed_per_output_pixel": self.computed_per_output(), "seconds": m.stream.seconds, "megapixels_per_s": m.megapixels_per_s(),
            "read_seconds": m.stream.read_seconds, "device_wait_seconds": m.stream.device_seconds,
            "write_seconds": m.stream.write_seconds,
            "pipeline_seconds": self.pipeline.stream.seconds, "share_outside_model": self.share_outside_model(),
            "peak_gpu_bytes": m.stream.peak_gpu_bytes,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (m, s) = (&self.model, &self.model.stream);
        writeln!(f, "device    {} | driver {}", self.device, self.device.driver)?;
        let [c, h, w] = m.shape;
        writeln!(
            f,
            "frame     {c} x {h} x {w} u8 | model {} | precision {} | {} tiles of {}x{}, overlap {}, batch {} | \
             {:.2} pixels computed per output pixel",
            m.model,
            m.precision,
            s.tiles,
            s.tile_h,
            s.tile_w,
            m.overlap,
            s.batch,
            self.computed_per_output()
        )?;
        let gpu_mib = s.peak_gpu_bytes as f64 / 1048576.0;
        writeln!(f, "infer     {:.3} s, {:.3} MP/s (GPU {gpu_mib:.1} MiB)", s.seconds, m.megapixels_per_s())?;
        writeln!(
            f,
            "stages    reading the frame {:.3} s, waiting on the device {:.3} s, writing {:.3} s, \
             recording and submitting the work {:.3} s",
            s.read_seconds,
            s.device_seconds,
            s.write_seconds,
            (s.seconds - s.read_seconds - s.device_seconds - s.write_seconds).max(0.0)
        )?;
        write!(
            f,
            "pipeline  {:.3} s with a copy-first-channel model: {:.1} % of the infer time is outside the model",
            self.pipeline.stream.seconds,
            100.0 * self.share_outside_model()
        )
    }
}

struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// Generate a u8 frame (noise σ = 2 counts), time infer on it with the model and with the
/// first-channel model (each after an untimed warm-up run), write the JSON if asked.
pub fn run(gpu: &Gpu, opts: &Options) -> Result<Report> {
    if opts.batch == Some(0) {
        return Err(Error::Invalid("--batch 0: a batch holds at least one tile".into()));
    }
    Files::new().inputs("--weights", &opts.weights).outputs("--json", &opts.json).check()?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| Error::io(&opts.dir, e))?;
    let cleanup = Cleanup(&opts.dir);
    let frame = opts.dir.join("frame.npy");
    let gopts = GenerateOptions {
        height: opts.height,
        width: opts.width,
        dtype: HostType::U8,
        noise: 2.0,
        ..Default::default()
    };
    let generated = generate(gpu, &gopts, &frame, None, |_, _| {})?;
    let mut iopts = InferOptions::new(frame.clone(), opts.dir.join("height.npy"));
    iopts.weights = opts.weights.clone();
    iopts.tile = opts.tile;
    iopts.overlap = opts.overlap;
    iopts.batch = opts.batch;
    (iopts.precision, iopts.conv) = (opts.precision, opts.conv);
    iopts.classical.unwrap = opts.unwrap;
    iopts.classical.search = opts.search;
    let model = load_model(gpu, &iopts)?;
    // Warm-up: compile pipelines and fault in the file once, on a run that is not timed.
    infer_with(gpu, &model, &iopts, |_, _| {})?;
    let timed = infer_with(gpu, &model, &iopts, |_, _| {})?;
    let copy = Model::first_channel(gpu, model.in_channels(), model.precision())?;
    // The same tiles as the model's run.
    (iopts.batch, iopts.overlap) = (Some(timed.stream.batch), Some(timed.overlap));
    infer_with(gpu, &copy, &iopts, |_, _| {})?;
    let pipeline = infer_with(gpu, &copy, &iopts, |_, _| {})?;
    drop(cleanup);
    let report = Report { device: Device::of(gpu), model: timed, pipeline, generate_seconds: generated.seconds };
    if let Some(path) = &opts.json {
        write_json(path, &report.to_json())?;
    }
    Ok(report)
}
