//! `psi-gpu bench`: the whole infer path on a generated frame — megapixels/s, and the share of
//! the time spent outside the model (reading, gathering, blending, writing), measured by running
//! the same tiles through a model that only copies its first channel.

use std::path::{Path, PathBuf};

use crate::commands::generate::generate;
use crate::commands::infer::{InferOptions, InferStats, infer_with, load_model};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::nn::Model;
use crate::psi::synthetic::GenerateOptions;

pub struct BenchOptions {
    pub height: usize,
    pub width: usize,
    pub weights: Option<PathBuf>,
    pub tile: usize,
    pub overlap: usize,
    pub batch: Option<usize>,
    pub precision: Option<Precision>,
    /// Folder for the generated frame and outputs (removed afterwards).
    pub dir: PathBuf,
}

pub struct BenchReport {
    pub model: InferStats,
    /// The same run with the first-channel model: everything but the model.
    pub pipeline: InferStats,
    pub generate_seconds: f64,
}

impl BenchReport {
    /// Fraction of the model run's time that the pipeline alone takes (an upper bound on the
    /// time outside the model: the first-channel model is a tiny 1x1 convolution).
    pub fn share_outside_model(&self) -> f64 {
        self.pipeline.stream.seconds / self.model.stream.seconds.max(1e-12)
    }
}

struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

pub fn bench(gpu: &Gpu, opts: &BenchOptions) -> Result<BenchReport> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| Error::io(&opts.dir, e))?;
    let _cleanup = Cleanup(&opts.dir);
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
    iopts.precision = opts.precision;
    let model = load_model(gpu, &iopts)?;
    // Warm-up: compile pipelines and fault in the file once, on a run that is not timed.
    infer_with(gpu, &model, &iopts, |_, _| {})?;
    let timed = infer_with(gpu, &model, &iopts, |_, _| {})?;
    let copy = Model::first_channel(gpu, model.in_channels(), model.precision())?;
    iopts.batch = Some(timed.stream.batch);
    infer_with(gpu, &copy, &iopts, |_, _| {})?;
    let pipeline = infer_with(gpu, &copy, &iopts, |_, _| {})?;
    Ok(BenchReport { model: timed, pipeline, generate_seconds: generated.seconds })
}
