//! `psi-gpu infer`: a bucket frame in, a height map (or the model's output channels) out.
//!
//! read bands → tiles → model → blend → write rows (see `tiling::stream`). The model is the
//! U-Net when weights are given — the residual model (robust classical + bounded U-Net
//! correction) when their metadata says `psi_gpu_model = residual` — else the classical
//! multi-wavelength solver. [`infer`] is the engine (benchmarks and the demo call it); [`run`] is
//! the command: infer, then the optional preview PNG and statistics JSON.
//!
//! The classical solver learns the frame's raw type here: its clip levels (0 and the type's
//! maximum for u8/u16, `--saturation` otherwise) and modulation floor are in raw counts, which
//! reach it multiplied by the input scale ([`Levels::for_input`]). Its optional quality and
//! reason channels go to their own files (`--quality` f32, `--mask` u8 [`Reason`] codes).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::commands::outputs::Files;
use crate::commands::{Device, write_json};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::io::frame_source::FrameSource;
use crate::io::height_map::{MapFormat, MapWriter};
use crate::io::preview::{PreviewInfo, PreviewOptions, write_preview};
use crate::io::weights::Weights;
use crate::io::x3p::{X3pMeta, file_date};
use crate::nn::Model;
use crate::nn::classical::Classical;
use crate::nn::residual::{Residual, is_residual};
use crate::nn::unet::UNet;
use crate::ops::classical::{ClassicalConfig, Levels, MinModulation};
use crate::ops::conv::select::Conv;
use crate::psi::reason::Reason;
pub use crate::tiling::region::input_scale;
use crate::tiling::{StreamOptions, StreamStats, stream, tiles_for};

#[derive(Clone, Debug)]
pub struct InferOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    /// U-Net weights; `None` runs the classical solver.
    pub weights: Option<PathBuf>,
    /// Classical solver settings (used when `weights` is `None`).
    pub classical: ClassicalConfig,
    /// Where to write the classical solver's fringe-contrast map, if wanted.
    pub quality: Option<PathBuf>,
    /// Where to write the classical solver's reason per pixel (u8 [`Reason`] codes), if wanted.
    pub mask: Option<PathBuf>,
    /// The classical solver's modulation floor (`None`: [`Levels::for_input`]'s default).
    pub min_modulation: Option<MinModulation>,
    /// Raw level at and above which a bucket is saturated (`None`: the type's maximum for
    /// u8/u16, none for floats).
    pub saturation: Option<f32>,
    pub tile: usize,
    /// Overlap between tiles; `None`: what the model needs (the classical solver: twice its halo,
    /// 0 per pixel) or its default (the U-Net: 128). Raised when below the model's need.
    pub overlap: Option<usize>,
    pub batch: Option<usize>,
    /// Requested precision; `None` = auto (f16 where the device has it).
    pub precision: Option<Precision>,
    /// The U-Net's 3x3 convolution kernel.
    pub conv: Conv,
    /// Overrides the input scale (metadata `input_scale`, else 1/255 for u8, 1/65535 for u16, 1).
    pub input_scale: Option<f32>,
    /// GPU memory the automatic batch may use for activations.
    pub memory_budget: u64,
    /// Lateral pitch (µm) written into X3P outputs.
    pub pixel_size_um: f64,
}

impl InferOptions {
    pub fn new(input: PathBuf, output: PathBuf) -> InferOptions {
        InferOptions {
            input,
            output,
            weights: None,
            classical: ClassicalConfig::default(),
            quality: None,
            mask: None,
            min_modulation: None,
            saturation: None,
            tile: 512,
            overlap: None,
            batch: None,
            precision: None,
            conv: Conv::Direct,
            input_scale: None,
            memory_budget: 2 << 30,
            pixel_size_um: 1.0,
        }
    }
}

/// What a run did, for logs and `--stats-json`.
#[derive(Clone, Debug)]
pub struct InferStats {
    pub model: String,
    pub shape: [usize; 3],
    pub input_type: HostType,
    pub input_scale: f32,
    pub precision: Precision,
    pub output_shape: Vec<usize>,
    pub overlap: usize,
    /// Why the overlap is not the one asked for, if it is not.
    pub overlap_raised: Option<String>,
    pub stream: StreamStats,
    /// NaN pixels of the height map, and per [`Reason`] code when a mask was written.
    pub invalid: usize,
    pub reasons: Option<[usize; 5]>,
}

impl InferStats {
    pub fn megapixels_per_s(&self) -> f64 {
        (self.shape[1] * self.shape[2]) as f64 / 1e6 / self.stream.seconds.max(1e-9)
    }
}

/// Where infer writes without `-o`: `INPUT.height.npy` beside the input.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "frame".into());
    input.with_file_name(format!("{stem}.height.npy"))
}

/// The U-Net of the weights at `path` in `precision` (`None`: f16 where the device has it).
pub fn load_unet(gpu: &Gpu, path: &Path, precision: Option<Precision>) -> Result<Model> {
    load_unet_with(gpu, path, precision, Conv::Direct)
}

/// [`load_unet`] with the 3x3 kernel `conv` ([`Conv::Auto`]: choices cached as the environment
/// says, [`Tuner::from_env`](crate::ops::conv::select::Tuner::from_env)).
pub fn load_unet_with(gpu: &Gpu, path: &Path, precision: Option<Precision>, conv: Conv) -> Result<Model> {
    let weights = Weights::load(path)?;
    if is_residual(&weights) {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            message: "a residual model (robust classical + U-Net correction), not a plain U-Net: run it with infer"
                .into(),
        });
    }
    unet_model(gpu, &weights, precision, conv)
}

fn unet_model(gpu: &Gpu, weights: &Weights, precision: Option<Precision>, conv: Conv) -> Result<Model> {
    UNet::config(weights)?;
    let precision = gpu.resolve_precision(precision)?;
    Ok(Model::UNet(UNet::with_conv(gpu, weights, precision, conv, None)?))
}

/// What the classical solver is made from besides the frame's raw type: its configuration, the
/// input scale, the modulation floor and clip level in raw counts, and its optional channels.
#[derive(Clone, Debug, Default)]
pub struct ClassicalOptions {
    pub config: ClassicalConfig,
    pub input_scale: Option<f32>,
    pub min_modulation: Option<MinModulation>,
    pub saturation: Option<f32>,
    /// Also output the fringe contrast, and the reason code of each pixel.
    pub quality: bool,
    pub reason: bool,
}

/// The classical solver for frames of raw type `ty` (its levels from the type, see
/// [`Levels::for_input`]).
pub fn classical_model(gpu: &Gpu, ty: HostType, o: &ClassicalOptions) -> Result<Model> {
    let scale = input_scale(o.input_scale, None, ty);
    let mut config = o.config.clone();
    config.levels = Levels::for_input(ty, scale, o.min_modulation, o.saturation)?;
    (config.quality, config.reason) = (o.quality, o.reason);
    Ok(Model::Classical(Classical::new(gpu, config)?))
}

/// The residual model of `weights` for frames of raw type `ty`: its classical part from `o`
/// (made robust; levels from the type and the input scale, which the weights' `input_scale`
/// gives unless `o` does), its U-Net in `precision` (`None`: f16 where the device has it).
pub fn residual_model(
    gpu: &Gpu,
    weights: &Weights,
    ty: HostType,
    precision: Option<Precision>,
    o: &ClassicalOptions,
) -> Result<Model> {
    let scale = input_scale(o.input_scale, weights.metadata_f32("input_scale")?, ty);
    let mut config = o.config.clone();
    config.levels = Levels::for_input(ty, scale, o.min_modulation, o.saturation)?;
    let precision = gpu.resolve_precision(precision)?;
    Ok(Model::Residual(Residual::new(gpu, weights, precision, config)?))
}

/// Load the model the options ask for (the classical solver's levels from the input's type).
pub fn load_model(gpu: &Gpu, opts: &InferOptions) -> Result<Model> {
    let o = ClassicalOptions {
        config: opts.classical.clone(),
        input_scale: opts.input_scale,
        min_modulation: opts.min_modulation,
        saturation: opts.saturation,
        quality: opts.quality.is_some(),
        reason: opts.mask.is_some(),
    };
    match &opts.weights {
        Some(_) if opts.mask.is_some() => {
            Err(Error::Invalid("--mask is the classical solver's; it cannot be used with --weights".into()))
        }
        Some(path) => {
            let weights = Weights::load(path)?;
            if !is_residual(&weights) {
                return unet_model(gpu, &weights, opts.precision, opts.conv);
            }
            let ty = FrameSource::open(&opts.input)?.ty();
            residual_model(gpu, &weights, ty, opts.precision, &o)
        }
        None => classical_model(gpu, FrameSource::open(&opts.input)?.ty(), &o),
    }
}

/// The files of a model's extra output channels: the classical solver's quality (f32) and reason
/// (u8) maps, each `(H, W)`, and the NaN and reason counts.
struct Extras {
    quality: Option<MapWriter>,
    mask: Option<MapWriter>,
    invalid: usize,
    reasons: [usize; 5],
}

impl Extras {
    fn new(model: &Model, opts: &InferOptions, [h, w]: [usize; 2], meta: &X3pMeta) -> Result<Extras> {
        let (q, r) = match model {
            Model::Classical(c) => (c.config.quality, c.config.reason),
            _ => (false, false),
        };
        let open = |path: &Option<PathBuf>, on: bool, ty| match path {
            Some(path) if on => MapWriter::new(path, ty, &[h, w], meta).map(Some),
            _ => Ok(None),
        };
        let quality = open(&opts.quality, q, HostType::F32)?;
        let mask = open(&opts.mask, r, HostType::U8)?;
        Ok(Extras { quality, mask, invalid: 0, reasons: [0; 5] })
    }

    /// Output channels of the model that are not the main output's.
    fn channels(&self) -> usize {
        self.quality.is_some() as usize + self.mask.is_some() as usize
    }

    /// Write a finished block: `heights` then the extra channels, `block` values each.
    fn write(&mut self, heights: &[f32], extra: &[f32], block: usize) -> Result<()> {
        self.invalid += heights.iter().filter(|v| v.is_nan()).count();
        let mut channels = extra.chunks_exact(block);
        if let Some(q) = self.quality.as_mut() {
            q.write(bytemuck::cast_slice(channels.next().unwrap_or_default()))?;
        }
        if let (Some(m), Some(values)) = (self.mask.as_mut(), channels.next()) {
            let codes: Vec<u8> = values.iter().map(|&v| v.round() as u8).collect();
            for &c in &codes {
                self.reasons[(c as usize).min(4)] += 1;
            }
            m.write(&codes)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Option<[usize; 5]>> {
        if let Some(q) = self.quality {
            q.finish()?;
        }
        match self.mask {
            Some(m) => m.finish().map(|_| Some(self.reasons)),
            None => Ok(None),
        }
    }
}

/// What an X3P output says about its heights: the input's time, the model, the wavelengths.
fn x3p_meta(model: &Model, opts: &InferOptions) -> X3pMeta {
    let input = opts.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let psi = &opts.classical.psi;
    let lasers: Vec<String> = psi.wavelengths.iter().map(|l| l.to_string()).collect();
    let probing = match model {
        Model::Classical(_) => format!(
            "phase-shifting interferometry, {} lasers ({} µm), {} buckets each",
            lasers.len(),
            lasers.join(", "),
            psi.buckets
        ),
        _ => "phase-shifting interferometry".to_string(),
    };
    X3pMeta {
        pixel_size_um: opts.pixel_size_um,
        date: file_date(&opts.input),
        model: format!("psi-gpu {}", model.name()),
        probing: probing.clone(),
        comment: format!(
            "heights in µm (stored in m) made by psi-gpu {} ({}) from {input}; {probing}",
            env!("CARGO_PKG_VERSION"),
            model.name()
        ),
        ..X3pMeta::default()
    }
}

pub fn infer(gpu: &Gpu, opts: &InferOptions, on_tiles: impl FnMut(usize, usize)) -> Result<InferStats> {
    FrameSource::open(&opts.input)?;
    let model = load_model(gpu, opts)?;
    infer_with(gpu, &model, opts, on_tiles)
}

/// `infer` with a model already loaded (benchmarks run several over one frame).
pub fn infer_with(
    gpu: &Gpu,
    model: &Model,
    opts: &InferOptions,
    on_tiles: impl FnMut(usize, usize),
) -> Result<InferStats> {
    let mut reader = FrameSource::open(&opts.input)?;
    let ty = reader.ty();
    let [c, h, w] = reader.frame_shape()?;
    // Channels of the main output; the classical solver's quality and reason maps go to their own
    // files.
    let meta = x3p_meta(model, opts);
    let mut extras = Extras::new(model, opts, [h, w], &meta)?;
    let main_c = model.out_channels() - extras.channels();
    let output_shape = if main_c == 1 { vec![h, w] } else { vec![main_c, h, w] };
    let mut out = MapWriter::new(&opts.output, HostType::F32, &output_shape, &meta)?;
    let scale = input_scale(opts.input_scale, model.input_scale(), ty);
    let o = tiles_for(model.reach(), opts.tile, opts.overlap);
    let sopts = StreamOptions {
        tile: opts.tile,
        overlap: o.overlap,
        batch: opts.batch,
        input_scale: scale,
        memory_budget: opts.memory_budget,
        band_limit: None,
    };
    let plane = (h * w * 4) as u64;
    let stats = stream(
        gpu,
        model,
        &mut reader,
        &sopts,
        |row0, rows, data| {
            let block = rows * w;
            for ch in 0..main_c {
                let bytes = bytemuck::cast_slice(&data[ch * block..(ch + 1) * block]);
                out.write_at(ch as u64 * plane + (row0 * w * 4) as u64, bytes)?;
            }
            extras.write(&data[..main_c * block], &data[main_c * block..], block)
        },
        on_tiles,
    )?;
    out.finish()?;
    let invalid = extras.invalid;
    let reasons = extras.finish()?;
    Ok(InferStats {
        model: model.name(),
        shape: [c, h, w],
        input_type: ty,
        input_scale: scale,
        precision: model.precision(),
        output_shape,
        overlap: stats.overlap,
        overlap_raised: o.raised,
        stream: stats,
        invalid,
        reasons,
    })
}

/// `psi-gpu infer`: the run and the extra files it writes.
#[derive(Clone, Debug)]
pub struct Options {
    pub infer: InferOptions,
    /// Write a colour-mapped PNG of the height map here.
    pub preview: Option<PathBuf>,
    /// Write the run statistics ([`Report::to_json`]) here.
    pub stats_json: Option<PathBuf>,
}

/// What `psi-gpu infer` did.
#[derive(Clone, Debug)]
pub struct Report {
    pub output: PathBuf,
    pub stats: InferStats,
    pub device: Device,
    pub preview: Option<(PathBuf, PreviewInfo)>,
}

impl Report {
    /// The statistics `--stats-json` writes.
    pub fn to_json(&self) -> serde_json::Value {
        let (s, d) = (&self.stats, &self.device);
        serde_json::json!({
            "seconds": s.stream.seconds,
            "read_seconds": s.stream.read_seconds,
            "device_wait_seconds": s.stream.device_seconds,
            "write_seconds": s.stream.write_seconds,
            "tiles": s.stream.tiles,
            "megapixels_per_s": s.megapixels_per_s(),
            "device": d.name,
            "backend": d.backend,
            "device_type": d.device_type,
            "precision": s.precision.to_string(),
            "model": s.model,
            "frame": s.shape,
            "input_dtype": s.input_type.name(),
            "input_scale": s.input_scale,
            "tile": [s.stream.tile_h, s.stream.tile_w],
            "overlap": s.overlap,
            "batch": s.stream.batch,
            "peak_gpu_bytes": s.stream.peak_gpu_bytes,
            "invalid_pixels": s.invalid,
            "invalid_by_reason": s.reasons.map(reason_counts),
        })
    }
}

/// `{"low_modulation": n, ...}` of the non-zero reason codes.
fn reason_counts(counts: [usize; 5]) -> serde_json::Value {
    let names = ["ok", "low_modulation", "saturated", "non_finite", "unresolved"];
    (1..5).map(|c| (names[c].to_string(), serde_json::json!(counts[c]))).collect::<serde_json::Map<_, _>>().into()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "wrote {} {:?} f32 | {} | frame {:?} {} x{} | {} tiles of {}x{}, overlap {} (batch {}) | {} on {} | {:.3} s, {:.2} MP/s | GPU {:.1} MiB",
            self.output.display(),
            s.output_shape,
            s.model,
            s.shape,
            s.input_type.name(),
            s.input_scale,
            s.stream.tiles,
            s.stream.tile_h,
            s.stream.tile_w,
            s.overlap,
            s.stream.batch,
            s.precision,
            self.device,
            s.stream.seconds,
            s.megapixels_per_s(),
            s.stream.peak_gpu_bytes as f64 / 1048576.0
        )?;
        if let Some(why) = &s.overlap_raised {
            write!(f, "\n{why}")?;
        }
        if s.invalid > 0 {
            write!(f, "\n{} of {} pixels are NaN (not solvable", s.invalid, s.shape[1] * s.shape[2])?;
            match s.reasons {
                Some(r) => write!(
                    f,
                    ": {} low modulation, {} saturated, {} non-finite input, {} unresolved)",
                    r[Reason::LowModulation as usize],
                    r[Reason::Saturated as usize],
                    r[Reason::NonFiniteInput as usize],
                    r[Reason::OrderUnresolved as usize]
                )?,
                None => write!(f, "; --mask tells why)")?,
            }
        }
        if let Some((png, info)) = &self.preview {
            write!(
                f,
                "\npreview: {} ({}x{}, {:.3}..{:.3} µm)",
                png.display(),
                info.width,
                info.height,
                info.min,
                info.max
            )?;
        }
        Ok(())
    }
}

/// Options that would be ignored, refused before any work (one frame or many).
pub fn check_options(o: &InferOptions) -> Result<()> {
    if o.batch == Some(0) {
        return Err(Error::Invalid("--batch 0: a batch holds at least one tile".into()));
    }
    if o.weights.is_some() && o.mask.is_some() {
        return Err(Error::Invalid("--mask is the classical solver's; it cannot be used with --weights".into()));
    }
    if o.weights.is_some() && o.quality.is_some() {
        return Err(Error::Invalid(
            "--quality is the classical solver's fringe-contrast map; the U-Net (--weights) makes none".into(),
        ));
    }
    if !(o.pixel_size_um.is_finite() && o.pixel_size_um > 0.0) {
        return Err(Error::Invalid(format!("--pixel-size {}: the pixel pitch must be positive (µm)", o.pixel_size_um)));
    }
    MapFormat::check(&o.output, "the output (-o)", "the output", HostType::F32, 1)?;
    if o.quality.as_deref().is_some_and(|q| MapFormat::of(q) == MapFormat::X3p) {
        return Err(Error::Invalid(
            "--quality: an X3P file holds heights; the quality map is a contrast ratio: write it as .npy or .tif"
                .into(),
        ));
    }
    MapFormat::check(&o.mask.clone().unwrap_or_default(), "--mask", "the reason mask (u8 codes)", HostType::U8, 1)?;
    if o.weights.is_none() && o.precision == Some(Precision::F16) {
        return Err(Error::Invalid(
            "--precision f16 applies to the U-Net (--weights); the classical solver runs in f32".into(),
        ));
    }
    Ok(())
}

/// Options that would be ignored, and the files (see [`Files`]), refused before any work.
fn check(opts: &Options) -> Result<()> {
    let o = &opts.infer;
    check_options(o)?;
    Files::new()
        .inputs("the input", [&o.input])
        .inputs("--weights", &o.weights)
        .outputs("the output (-o)", [&o.output])
        .outputs("--quality", &o.quality)
        .outputs("--mask", &o.mask)
        .outputs("--stats-json", &opts.stats_json)
        .outputs("--preview", &opts.preview)
        .check()
}

/// Infer, then write the preview and the statistics if asked; `on_tiles(done, total)` reports
/// progress.
pub fn run(gpu: &Gpu, opts: &Options, on_tiles: impl FnMut(usize, usize)) -> Result<Report> {
    check(opts)?;
    let stats = infer(gpu, &opts.infer, on_tiles)?;
    let output = opts.infer.output.clone();
    let preview = match &opts.preview {
        Some(png) => Some((png.clone(), write_preview(&output, png, &PreviewOptions::default())?)),
        None => None,
    };
    let report = Report { output, stats, device: Device::of(gpu), preview };
    if let Some(path) = &opts.stats_json {
        write_json(path, &report.to_json())?;
    }
    Ok(report)
}
