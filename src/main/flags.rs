//! The command line's flags: one clap struct per subcommand (its docs are the `--help` text),
//! each followed by its conversion into the command's `Options`. Values spelled as text are
//! parsed by `psi_gpu::commands::args`. [`refuse_unused`] refuses a flag given that the run would
//! not use (checks that need to know whether a flag was given rather than defaulted; the others
//! are in each command's `run`).

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};
use psi_gpu::commands::args::{
    Ab, Adapters, ArgError, DarkPatch, Dtype, HeightRange, InputScale, LowContrastPatch, MapFormatArg, PhaseStepsArg,
    PrecisionArg, PreviewRangeArg, Region, SaturatePatch, Saturation, Schedule, SurfaceShape, SyntheticRange,
    Wavelengths,
};
use psi_gpu::commands::finetune::Layers;
use psi_gpu::commands::pinn::{FitInit, Problem};
use psi_gpu::commands::train::LossChoice;
use psi_gpu::commands::{bench, convert, demo, eval, finetune, generate, infer, infer_many, pinn, train};
use psi_gpu::gpu::AdapterChoice;
use psi_gpu::io::height_map::MapFormat;
use psi_gpu::io::images::ImageFormat;
use psi_gpu::ops::classical::{ClassicalConfig, MinModulation, Search, Unwrap};
use psi_gpu::ops::conv::select::Conv;
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::config::DEFAULT_BUCKETS;
use psi_gpu::psi::surface::Shape;
use psi_gpu::psi::synthetic::{DEFAULT_SLOPE, GenerateOptions};

/// The first flag given on the command line (not defaulted) that `command` would not use, as an
/// error naming it and why.
pub fn refuse_unused(command: &Command, matches: &ArgMatches) -> Result<(), ArgError> {
    let Some((_, m)) = matches.subcommand() else { return Ok(()) };
    let unused = |when: bool, ids: &[&str], why: &str| match ids.iter().find(|id| given(m, id)) {
        Some(id) if when => Err(ArgError(format!("--{} {why}", id.replace('_', "-")))),
        _ => Ok(()),
    };
    let classical_only = "applies to the classical solver only: the U-Net (--weights) does not use it";
    let unet_only = "applies to the U-Net only: give --weights";
    let whole_frame = "has no effect with --tile 0 (the whole frame is one tile)";
    match command {
        Command::Infer(a) => {
            unused(a.weights.is_some(), &["wavelengths", "buckets", "height_range"], classical_only)?;
            unused(a.weights.is_none(), &["conv"], unet_only)?;
            unused(a.tiles.batch.is_some(), &["gpu_memory"], "sizes the automatic batch, and --batch sets it")?;
            unused(a.tiles.tile == 0, &["overlap"], whole_frame)?;
            let x3p = a.format.is_some_and(|f| f.0 == MapFormat::X3p)
                || [&a.output, &a.quality, &a.mask].into_iter().flatten().any(|p| MapFormat::of(p) == MapFormat::X3p);
            unused(!x3p, &["pixel_size"], "sets the lateral step of .x3p outputs, and no output here is .x3p")
        }
        Command::Bench(a) => {
            unused(a.weights.is_some(), &["unwrap"], classical_only)?;
            unused(a.weights.is_none(), &["conv"], unet_only)?;
            unused(a.tiles.tile == 0, &["overlap"], whole_frame)
        }
        Command::Generate(a) => {
            let random = "applies to random surfaces (--shape random) only";
            unused(a.shape.0 != Shape::Random, &["height_scale", "height_offset"], random)?;
            unused(a.shape.0 != Shape::Steep, &["slope"], "applies to the steep surface (--shape steep) only")?;
            unused(a.preview.is_none(), &["preview_range"], "sets the colour scale of --preview, which is not asked")
        }
        Command::Eval(a) => unused(
            a.error_map.is_none(),
            &["preview_range"],
            "sets the colour scale of --error-map, which is not asked",
        ),
        Command::Convert(a) => {
            let images_out = !a.input.is_dir() && !convert::is_array_file(&a.output);
            unused(!images_out, &["format"], "sets the format of images written, and this conversion writes none")?;
            unused(
                MapFormat::of(&a.output) != MapFormat::X3p,
                &["pixel_size"],
                "sets the lateral step of an .x3p output",
            )
        }
        Command::Train(a) => {
            unused(a.epochs.is_some(), &["steps"], "is replaced by --epochs: give one of them")?;
            let supervised = a.loss == LossChoice::Supervised || a.residual;
            unused(
                supervised,
                &["smoothness"],
                "weighs the physics loss's smoothness term: a supervised loss has none",
            )?;
            unused(
                a.residual,
                &["height_range"],
                "maps plain synthetic frames: --residual generates its own (±15 µm)",
            )?;
            unused(!a.residual, &["bound", "relative_loss"], "is the residual model's: give it with --residual")?;
            unused(
                a.init.is_some() || a.resume.is_some(),
                &["bound"],
                "sets fresh residual weights: the weights given carry their own",
            )
        }
        Command::Finetune(a) => {
            unused(a.patch == 0, &["crops"], "has no effect with --patch 0 (each frame is one whole crop)")
        }
        _ => Ok(()),
    }
}

/// Whether the flag `id` was given on the command line (not defaulted, not from the environment).
fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

#[derive(Parser)]
#[command(name = "psi-gpu", version, about = "Phase-shifting-interferometry bucket images to height maps on any GPU")]
pub struct Cli {
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct GpuArgs {
    /// Graphics backend: auto, vulkan, dx12, metal or gl.
    #[arg(long, global = true, env = "PSI_GPU_BACKEND", default_value = "auto")]
    pub backend: String,
    /// Adapter: an index among those of the backend (see `psi-gpu info`), a PCI bus id
    /// (0000:65:00.0: pins one GPU; Vulkan ignores CUDA_VISIBLE_DEVICES) or part of its name.
    #[arg(long, global = true, env = "PSI_GPU_ADAPTER")]
    pub adapter: Option<AdapterChoice>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
    /// List adapters with their features and limits.
    Info,
    /// Run a model over a (C, H, W) npy frame.
    Infer(InferArgs),
    /// Compare a height map with the truth: RMSE, MAE, max, MAPE, bias, detrended RMSE.
    Eval(EvalArgs),
    /// Write a synthetic bucket frame (and its true heights), generated on the GPU in bands.
    Generate(GenerateArgs),
    /// First run in one command: generate a noisy frame, infer it, evaluate it, draw previews.
    Demo(DemoArgs),
    /// Time the whole infer path on a generated frame (megapixels/s, share outside the model).
    Bench(BenchArgs),
    /// Convert a folder of bucket_NN.bmp/png images to a (C, H, W) npy stack, or back.
    Convert(ConvertArgs),
    /// Train the U-Net on the GPU (physics or supervised loss, Adam, f32 or f16 with loss scaling).
    Train(TrainArgs),
    /// Adapt a trained U-Net to frames without truth: L-BFGS on the physics loss (eval-mode
    /// BatchNorm, as infer) over chosen layers.
    Finetune(FinetuneArgs),
    /// Scaled-cPIKAN (Chebyshev KAN) networks.
    #[command(subcommand)]
    Pinn(PinnCommand),
}

/// How infer and bench cut a frame into tiles and batch them.
#[derive(Args)]
pub struct TileArgs {
    /// Tile size in pixels; 0 runs the whole frame as one tile.
    #[arg(long, default_value_t = 512)]
    tile: usize,
    /// Overlap between neighbouring tiles (default: what the model needs — the classical
    /// solver twice its halo, 0 per pixel, its tiles cut at the overlap's middle; the U-Net 128,
    /// blended with sin² ramps). Raised when below the model's need.
    #[arg(long)]
    overlap: Option<usize>,
    /// Tiles per GPU batch (default: from the adapter's limits and the GPU memory budget).
    #[arg(long)]
    batch: Option<usize>,
}

#[derive(Args)]
pub struct InferArgs {
    /// Input frame: a (channels, height, width) npy of u8, u16, f16 or f32, a multi-page gray
    /// TIFF (one page per bucket; u8, u16, u32 or f32) or a folder of bucket_NN.tif pages.
    /// Several frames, or a folder of them (its .npy, .tif and .tiff), run in one process: -o
    /// then names the folder for their OUTDIR/<stem>.height.npy, and --quality, --mask and
    /// --preview name folders too.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output height map: .npy (default: INPUT.height.npy next to the input), .tif (32-bit float
    /// gray, NaN where not solvable) or .x3p (ISO 25178-72, metres); with several frames, a folder.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Several frames: the maps' format, npy, tiff or x3p (OUTDIR/<stem>.height.tif, .x3p: what
    /// one frame's -o of that extension writes; with x3p the quality maps and masks stay .npy)
    /// [default: npy]. One frame's format is its -o extension.
    #[arg(long)]
    format: Option<MapFormatArg>,
    /// Lateral pixel pitch in µm, written into .x3p outputs [default: 1].
    #[arg(long)]
    pixel_size: Option<f64>,
    /// U-Net weights (safetensors with PyTorch state_dict names; metadata psi_gpu_model =
    /// residual: the robust classical height plus the U-Net's bounded correction); without them
    /// the classical multi-wavelength solver runs.
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    tiles: TileArgs,
    /// GPU memory (MiB) the automatic batch may give to model activations.
    #[arg(long, default_value_t = 2048)]
    gpu_memory: u64,
    /// Storage precision of the U-Net: auto (f16 where the GPU has it), f32 or f16.
    #[arg(long, default_value = "auto")]
    precision: PrecisionArg,
    /// U-Net: kernel of the 3x3 convolutions: direct, winograd (F(2x2,3x3), 2.25x fewer
    /// multiplies) or auto (the faster of the two on this GPU, timed per layer shape at first use
    /// and cached in $PSI_GPU_CACHE_DIR, else $XDG_CACHE_HOME/psi-gpu, else ~/.cache/psi-gpu).
    #[arg(long, default_value = "direct")]
    conv: Conv,
    /// Factor applied to the input before the model (e.g. 1/255); default from the weights'
    /// metadata, else 1/255 for u8, 1/65535 for u16, 1 for floats.
    #[arg(long)]
    input_scale: Option<InputScale>,
    /// Classical solver: laser wavelengths in µm.
    #[arg(long, default_value_t)]
    wavelengths: Wavelengths,
    /// Classical solver: phase steps per laser (channel = laser * buckets + bucket).
    #[arg(long, default_value_t = DEFAULT_BUCKETS)]
    buckets: usize,
    /// Classical solver: height search range in µm, as MIN,MAX.
    #[arg(long, default_value_t = HeightRange(ClassicalConfig::default().height_range), allow_hyphen_values = true)]
    height_range: HeightRange,
    /// Classical solver: also write the fringe-contrast (quality) map here.
    #[arg(long)]
    quality: Option<PathBuf>,
    /// Classical solver: how fringe orders are decided: robust (the weighted likelihood plus a
    /// spatial prior where a pixel's own cost does not decide its order, and a noise floor;
    /// NaN where neither decides), weighted (noise-weighted spread of all lasers' heights over
    /// exactly --height-range; the height is their inverse-variance mean) or per-pixel
    /// (residuals against the first laser; the fastest, no neighbourhood).
    #[arg(long, default_value = "robust")]
    unwrap: Unwrap,
    /// Classical solver: phase steps in degrees: nominal (360·k/N), one list for every laser
    /// (0,90,180,270) or one per laser separated by ';' (0,90,180,270;0,91,179,272).
    #[arg(long, default_value_t)]
    phase_steps: PhaseStepsArg,
    /// Classical solver: a laser whose modulation B is below this is dropped for the pixel, in
    /// counts of the raw frame (3) or as a fraction of its offset A (0.05A) [default: 3 for u8/u16
    /// frames, none for floats].
    #[arg(long, allow_hyphen_values = true)]
    min_modulation: Option<MinModulation>,
    /// Classical solver: raw level at and above which a bucket is saturated and left out of its
    /// laser's fit [default: the maximum of u8/u16 frames, none for floats]; buckets at 0 of u8/u16
    /// frames are left out too.
    #[arg(long)]
    saturation: Option<Saturation>,
    /// Classical solver: write why each pixel is NaN here, (H, W) u8: 0 ok, 1 low modulation,
    /// 2 saturated, 3 non-finite input, 4 fringe order unresolved.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Write run statistics (time, tiles, throughput, device, memory) as JSON here.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Write a colour-mapped PNG of the height map here.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Several frames: spread them over these adapters, one worker each, frame k on the
    /// (k mod n)-th: all (the backend's) or indices as `psi-gpu info` lists them (0,1).
    #[arg(long)]
    adapters: Option<Adapters>,
}

/// One frame, or many in one process.
#[allow(clippy::large_enum_variant)] // one per run
pub enum InferRun {
    One(infer::Options),
    /// The frames, and the adapters to spread them over (`None`: the one `--adapter` picks).
    Many(infer_many::Options, Option<Adapters>),
}

impl TryFrom<InferArgs> for InferRun {
    type Error = ArgError;

    fn try_from(a: InferArgs) -> Result<Self, ArgError> {
        let many = a.inputs.len() > 1 || (a.inputs[0].is_dir() && !infer_many::is_frame_folder(&a.inputs[0]));
        let first = a.inputs[0].clone();
        let output = match (&a.output, many) {
            (Some(o), _) => o.clone(),
            (None, false) => infer::default_output(&first),
            (None, true) => {
                return Err(ArgError("several frames need -o OUTDIR, the folder for their height maps".into()));
            }
        };
        let mut o = infer::InferOptions::new(first, output.clone());
        (o.weights, o.tile, o.overlap, o.batch) = (a.weights, a.tiles.tile, a.tiles.overlap, a.tiles.batch);
        (o.precision, o.input_scale, o.memory_budget) = (a.precision.0, a.input_scale.map(|s| s.0), a.gpu_memory << 20);
        o.conv = a.conv;
        o.classical.psi = PsiConfig { phase_steps: a.phase_steps.0, ..PsiConfig::with(a.wavelengths.0, a.buckets) };
        (o.classical.height_range, o.classical.unwrap) = (a.height_range.0, a.unwrap);
        (o.min_modulation, o.saturation) = (a.min_modulation, a.saturation.map(|s| s.0));
        o.pixel_size_um = a.pixel_size.unwrap_or(1.0);
        if !many {
            if a.adapters.is_some() {
                return Err(ArgError("--adapters spreads several frames over adapters; one frame runs on one".into()));
            }
            if a.format.is_some() {
                return Err(ArgError(
                    "--format sets the format of several frames' maps; one frame's is -o's extension (.npy, .tif, .x3p)"
                        .into(),
                ));
            }
            (o.quality, o.mask) = (a.quality, a.mask);
            return Ok(InferRun::One(infer::Options { infer: o, preview: a.preview, stats_json: a.stats_json }));
        }
        let (quality_dir, mask_dir, preview_dir) = (a.quality, a.mask, a.preview);
        let stats_json = a.stats_json;
        let opts = infer_many::Options {
            inputs: a.inputs,
            out_dir: output,
            format: a.format.map_or(MapFormat::Npy, |f| f.0),
            infer: o,
            quality_dir,
            mask_dir,
            preview_dir,
            stats_json,
        };
        Ok(InferRun::Many(opts, a.adapters))
    }
}

#[derive(Args)]
pub struct EvalArgs {
    /// Predicted height map, (H, W): npy, one-page TIFF or X3P.
    pred: PathBuf,
    /// True height map, (H, W): npy, one-page TIFF or X3P.
    truth: PathBuf,
    /// Write the metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a colour-mapped PNG of |pred - truth| here, or the data pred - truth (µm) when the
    /// name ends in .npy, .tif or .x3p.
    #[arg(long)]
    error_map: Option<PathBuf>,
    /// Evaluate only pixels where this (H, W) npy is non-zero (a selection; not a reason mask).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// A reason mask (H, W) u8 as infer --mask or generate --truth-mask write it (0 ok, 1 low
    /// modulation, 2 saturated, 3 non-finite input, 4 order unresolved): count pixels and NaN
    /// predictions per reason.
    #[arg(long)]
    reasons: Option<PathBuf>,
    /// Colour scale of the error map: robust (1st to 99th percentile), full (min to max) or LO,HI
    /// percentiles.
    #[arg(long, default_value_t)]
    preview_range: PreviewRangeArg,
}

impl From<EvalArgs> for eval::Options {
    fn from(a: EvalArgs) -> Self {
        let eval = eval::EvalOptions { mask: a.mask, reasons: a.reasons };
        let (json, error_map, preview_range) = (a.json, a.error_map, a.preview_range.0);
        Self { pred: a.pred, truth: a.truth, eval, json, error_map, preview_range }
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Output bucket stack (L·N, H, W) npy.
    output: PathBuf,
    #[arg(long, default_value_t = 512)]
    height: usize,
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Element type: f32, u8, u16 or f16 (integers are rounded and clipped).
    #[arg(long, default_value = "f32")]
    dtype: Dtype,
    /// Also write the true heights (H, W) f32 here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Surface: seed (the seed's peak + plane + cone), random (smooth caps, tilts, steps, ripples)
    /// or steep (a spherical cap whose slope reaches --slope at the corners: dense fringes).
    #[arg(long, default_value = "seed")]
    shape: SurfaceShape,
    /// Steep surface only: slope at the frame's corners, µm per pixel [default: 0.5].
    #[arg(long)]
    slope: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random surfaces only: heights × this (e.g. 0.02 with --height-offset 1.25 keeps them within
    /// one 2.5 µm fringe of 5 µm light).
    #[arg(long, default_value_t = 1.0)]
    height_scale: f32,
    /// Random surfaces only: added to the heights, µm.
    #[arg(long, default_value_t = 0.0)]
    height_offset: f32,
    /// Gaussian noise σ in counts.
    #[arg(long, default_value_t = 0.0)]
    noise: f32,
    /// Offset and modulation A,B of I = A + B·cos(4π·h/λ + δ).
    #[arg(long, default_value_t)]
    ab: Ab,
    /// Relative smooth per-pixel variation of A and B.
    #[arg(long, default_value_t = 0.0)]
    ab_variation: f32,
    #[arg(long, default_value_t)]
    wavelengths: Wavelengths,
    #[arg(long, default_value_t = DEFAULT_BUCKETS)]
    buckets: usize,
    /// Calibrated phase steps in degrees, e.g. 0,92,178,271 for every laser, or one list per
    /// laser separated by ';' (default: 360·k/buckets).
    #[arg(long)]
    phase_steps: Option<PhaseStepsArg>,
    /// A rectangle y,x,h,w without fringes (B = 0, A unchanged); repeatable.
    #[arg(long)]
    dark: Vec<DarkPatch>,
    /// A rectangle y,x,h,w:F whose modulation B is multiplied by F in [0, 1]; repeatable.
    #[arg(long)]
    low_contrast: Vec<LowContrastPatch>,
    /// A rectangle y,x,h,w where every bucket clips at the type's maximum (u8, u16); repeatable.
    #[arg(long)]
    saturate: Vec<SaturatePatch>,
    /// Also write the truth mask (H, W) u8 here: 0 ok, 1 low modulation (B = 0), 2 saturated.
    #[arg(long)]
    truth_mask: Option<PathBuf>,
    /// Write a colour-mapped PNG of the true heights here.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Colour scale of the preview: robust (1st to 99th percentile), full (min to max) or LO,HI
    /// percentiles.
    #[arg(long, default_value_t)]
    preview_range: PreviewRangeArg,
}

impl From<GenerateArgs> for generate::Options {
    fn from(a: GenerateArgs) -> Self {
        let generate = GenerateOptions {
            height: a.height,
            width: a.width,
            dtype: a.dtype.0,
            psi: PsiConfig {
                wavelengths: a.wavelengths.0,
                buckets: a.buckets,
                phase_steps: a.phase_steps.map(|p| p.0).unwrap_or_default(),
                a: a.ab.0,
                b: a.ab.1,
            },
            ab_variation: a.ab_variation,
            noise: a.noise,
            seed: a.seed,
            shape: a.shape.0,
            height_scale: a.height_scale,
            height_offset: a.height_offset,
            slope: a.slope.unwrap_or(DEFAULT_SLOPE),
            patches: a
                .dark
                .iter()
                .map(|p| p.0)
                .chain(a.low_contrast.iter().map(|p| p.0))
                .chain(a.saturate.iter().map(|p| p.0))
                .collect(),
            ..Default::default()
        };
        let (truth, truth_mask, preview, preview_range) = (a.truth, a.truth_mask, a.preview, a.preview_range.0);
        Self { generate, output: a.output, truth, truth_mask, preview, preview_range }
    }
}

#[derive(Args)]
pub struct DemoArgs {
    /// Frame size (square).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Folder for the files.
    #[arg(long, default_value = "psi-demo")]
    dir: PathBuf,
    #[arg(long, default_value_t = 512)]
    tile: usize,
    /// Overlap between tiles (default: what the classical solver needs).
    #[arg(long)]
    overlap: Option<usize>,
}

impl From<DemoArgs> for demo::Options {
    fn from(a: DemoArgs) -> Self {
        Self { dir: a.dir, size: a.size, tile: a.tile, overlap: a.overlap }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 2048)]
    height: usize,
    #[arg(long, default_value_t = 2048)]
    width: usize,
    /// U-Net weights; without them the classical solver is timed.
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    tiles: TileArgs,
    #[arg(long, default_value = "auto")]
    precision: PrecisionArg,
    /// U-Net: kernel of the 3x3 convolutions: direct, winograd (F(2x2,3x3), 2.25x fewer
    /// multiplies) or auto (the faster of the two on this GPU, timed per layer shape at first use
    /// and cached in $PSI_GPU_CACHE_DIR, else $XDG_CACHE_HOME/psi-gpu, else ~/.cache/psi-gpu).
    #[arg(long, default_value = "direct")]
    conv: Conv,
    /// Classical solver: how fringe orders are decided (as infer's --unwrap).
    #[arg(long, default_value = "robust")]
    unwrap: Unwrap,
    /// Classical solver: skip the fringe-order candidates that cannot win (`pruned`, as infer
    /// does) or score every one (`exhaustive`, to compare).
    #[arg(long, default_value = "pruned")]
    search: Search,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl From<BenchArgs> for bench::Options {
    fn from(a: BenchArgs) -> Self {
        Self {
            height: a.height,
            width: a.width,
            weights: a.weights,
            tile: a.tiles.tile,
            overlap: a.tiles.overlap,
            batch: a.tiles.batch,
            precision: a.precision.0,
            conv: a.conv,
            unwrap: a.unwrap,
            search: a.search,
            dir: bench::Options::scratch_dir(),
            json: a.json,
        }
    }
}

#[derive(Args)]
pub struct ConvertArgs {
    /// A folder of bucket images (BMP, PNG or single-page TIFF), a (C, H, W) npy or TIFF stack,
    /// or a height map (H, W) npy, TIFF or X3P.
    input: PathBuf,
    /// A file — .npy, .tif/.tiff (stack or float map), .x3p (height map) — or the folder for the
    /// images of a stack.
    output: PathBuf,
    /// Image format when writing images: bmp (8-bit), png (8- or 16-bit) or tif (8-, 16-bit or
    /// float32 pages).
    #[arg(long, default_value = "bmp")]
    format: ImageFormat,
    /// Lateral pixel pitch in µm of an .x3p output [default: 1].
    #[arg(long)]
    pixel_size: Option<f64>,
    /// File name pattern of the images, `{}` standing for the index (default bucket_{}).
    #[arg(long)]
    pattern: Option<String>,
}

impl From<ConvertArgs> for convert::Options {
    fn from(a: ConvertArgs) -> Self {
        let pixel_size_um = a.pixel_size.unwrap_or(1.0);
        Self { input: a.input, output: a.output, format: a.format, pattern: a.pattern, pixel_size_um }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Start from these weights (safetensors state_dict or a psi-gpu checkpoint); default: fresh
    /// He-initialised weights of width --base.
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    base: usize,
    /// Training frames: (C, H, W) npy files or folders of them; default: --synthetic frames.
    #[arg(long, num_args = 1..)]
    frames: Vec<PathBuf>,
    /// Truth maps (H, W) npy for the frames, same order (supervised loss).
    #[arg(long, num_args = 1..)]
    truth: Vec<PathBuf>,
    /// Synthetic training frames (random smooth surfaces, u8, noise --noise) made on the fly.
    #[arg(long, default_value_t = 16)]
    synthetic: usize,
    /// Size of synthetic training and validation frames.
    #[arg(long, default_value_t = 128)]
    synthetic_size: usize,
    #[arg(long, default_value_t = 2.0)]
    noise: f32,
    /// Map each synthetic surface onto LO,HI µm; the default stays within one 2.5 µm fringe of
    /// 5 µm light, where a small U-Net learns height. `full`: the random surfaces' own ±60 µm.
    #[arg(long, default_value_t = SyntheticRange(train::Options::default().height_range))]
    height_range: SyntheticRange,
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Passes over the training frames (replaces --steps).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Random PATCH x PATCH crops; 0 = whole frames.
    #[arg(long, default_value_t = 64)]
    patch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate schedule: constant, step:SIZE:GAMMA (StepLR) or exp:GAMMA (ExponentialLR).
    #[arg(long, default_value = "constant")]
    schedule: Schedule,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the gradient's global L2 norm to this.
    #[arg(long)]
    clip: Option<f64>,
    /// physics (bucket consistency + smoothness, no truth needed), supervised (MSE to truth), or
    /// auto: supervised when every frame has a truth map (synthetic frames do), else physics.
    #[arg(long, default_value = "auto")]
    loss: LossChoice,
    /// Weight of the Laplacian smoothness term.
    #[arg(long, default_value_t = 1e-4)]
    smoothness: f32,
    /// Input scale (saved in the weights' metadata, used by infer); default 1/255 for u8.
    #[arg(long)]
    input_scale: Option<InputScale>,
    /// f32, f16 (activations in f16 with dynamic loss scaling) or auto.
    #[arg(long, default_value = "f32")]
    precision: PrecisionArg,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(short, long, default_value = "unet.safetensors")]
    output: PathBuf,
    /// Save a resumable checkpoint (OUTPUT.ckpt.safetensors) every N steps.
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Resume from a checkpoint written by --checkpoint-every.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Write the loss history as CSV here.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Validate every N steps (and at the end) on --validation held-out synthetic frames.
    #[arg(long, default_value_t = 0)]
    validate_every: usize,
    #[arg(long, default_value_t = 4)]
    validation: usize,
    /// Train the residual model (robust classical height + bounded U-Net correction from the
    /// buckets and the solution's features) on generated frames over ±15 µm (steep and smooth
    /// surfaces, B and noise σ drawn per frame, σ below --noise, dark/saturated patches),
    /// supervised on the truth; validation compares it with the robust classical solver.
    #[arg(long)]
    residual: bool,
    /// The correction's bound in µm (fresh --residual weights), under λ1/8.
    #[arg(long, default_value_t = psi_gpu::nn::residual::DEFAULT_BOUND)]
    bound: f32,
    /// --residual: weigh each crop's loss by (the robust solver's mean squared error on it)^-P —
    /// 1: the error relative to the solver's, so quiet crops count as much as noisy ones; 0: the
    /// plain mean squared error, ruled by the noisiest crops.
    #[arg(long, value_name = "P", default_value_t = psi_gpu::nn::residual::train::RELATIVE_LOSS)]
    relative_loss: f32,
}

impl From<TrainArgs> for train::Options {
    fn from(a: TrainArgs) -> Self {
        Self {
            init: a.init,
            base: a.base,
            frames: a.frames,
            truth: a.truth,
            synthetic: a.synthetic,
            synthetic_size: a.synthetic_size,
            noise: a.noise,
            height_range: a.height_range.0,
            steps: a.steps,
            epochs: a.epochs,
            batch: a.batch,
            patch: a.patch,
            lr: a.lr,
            schedule: a.schedule.0,
            weight_decay: a.weight_decay,
            clip: a.clip,
            loss: a.loss,
            smoothness: a.smoothness,
            input_scale: a.input_scale.map(|s| s.0),
            precision: a.precision.0,
            grad_accum: a.grad_accum,
            seed: a.seed,
            output: a.output,
            checkpoint_every: a.checkpoint_every,
            resume: a.resume,
            history: a.history,
            validate_every: a.validate_every,
            validation: a.validation,
            residual: a.residual,
            bound: a.bound,
            relative_loss: a.relative_loss,
        }
    }
}

#[derive(Args)]
pub struct FinetuneArgs {
    /// The pretrained U-Net (safetensors state_dict or psi-gpu checkpoint).
    #[arg(long)]
    weights: PathBuf,
    /// Frames to adapt to: (C, H, W) npy files or folders of them.
    #[arg(long, num_args = 1.., required = true)]
    frames: Vec<PathBuf>,
    /// Frames to report the physics loss on before and after (never optimised on).
    #[arg(long, num_args = 1..)]
    holdout: Vec<PathBuf>,
    #[arg(short, long)]
    output: PathBuf,
    /// Parameters to optimise: head (up4 + outc), all, or comma-separated name prefixes.
    #[arg(long, default_value = "head")]
    layers: Layers,
    /// PATCH x PATCH crops (--crops per frame, positions fixed by --seed); 0 = whole frames.
    #[arg(long, default_value_t = 64)]
    patch: usize,
    #[arg(long, default_value_t = 4)]
    crops: usize,
    /// Crops per GPU micro-batch (gradients accumulate over micro-batches).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// L-BFGS iterations (strong-Wolfe line search; at most 5/4 as many loss evaluations).
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// L-BFGS history (curvature pairs); default 100, fewer if --lbfgs-memory cannot hold them.
    #[arg(long)]
    history: Option<usize>,
    /// Host memory for the L-BFGS history, MiB.
    #[arg(long, default_value_t = 1024)]
    lbfgs_memory: usize,
    #[arg(long, default_value_t = 1e-4)]
    smoothness: f32,
    /// Estimate A and B per pixel from the frame (real frames) instead of A = 128, B = 100.
    #[arg(long)]
    per_pixel_ab: bool,
    /// Input scale; default: the weights' input_scale metadata.
    #[arg(long)]
    input_scale: Option<InputScale>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl From<FinetuneArgs> for finetune::Options {
    fn from(a: FinetuneArgs) -> Self {
        Self {
            weights: a.weights,
            frames: a.frames,
            holdout: a.holdout,
            output: a.output,
            layers: a.layers,
            patch: a.patch,
            crops: a.crops,
            batch: a.batch,
            iterations: a.iterations,
            history: a.history,
            memory_mib: a.lbfgs_memory,
            smoothness: a.smoothness,
            per_pixel_ab: a.per_pixel_ab,
            input_scale: a.input_scale.map(|s| s.0),
            seed: a.seed,
        }
    }
}

#[derive(Subcommand)]
pub enum PinnCommand {
    /// Evaluate a Scaled-cPIKAN at every integer pixel (x = column, y = row) -> (H, W) npy.
    Eval(PinnEvalArgs),
    /// Fit a Scaled-cPIKAN h(x, y) to a region of a frame with the PINN reconstruction loss
    /// (bucket consistency + smoothness from the analytic second derivatives): first to an initial
    /// height (supervised), then Adam, then L-BFGS. Writes the region's heights (h, w).
    Fit(PinnFitArgs),
    /// A PDE benchmark from the Scaled-cPIKAN paper: `helmholtz` (u'' + k²u = 0, k = 4π, u(-1) = 0,
    /// u'(1) = k; Adam then L-BFGS; relative L2 against sin(kx) on 1000 points). Every setting left
    /// out keeps the benchmark's default ([1,16,16,1], K = 3, 256 points, 1000 Adam steps at 1e-2,
    /// up to 1000 L-BFGS iterations, seed 0).
    Bench(PinnBenchArgs),
}

#[derive(Args)]
pub struct PinnEvalArgs {
    /// Network weights (safetensors with the seed's names: domain_min, network.0.cheby_coeffs, ...).
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    height: usize,
    #[arg(long)]
    width: usize,
    #[arg(short, long)]
    output: PathBuf,
}

impl From<PinnEvalArgs> for pinn::EvalOptions {
    fn from(a: PinnEvalArgs) -> Self {
        Self { weights: a.weights, height: a.height, width: a.width, output: a.output }
    }
}

#[derive(Args)]
pub struct PinnFitArgs {
    /// Bucket frame (C, H, W) npy (raw intensities).
    frame: PathBuf,
    /// Region as y,x,h,w (pixels).
    #[arg(long)]
    region: Option<Region>,
    #[arg(short, long)]
    output: PathBuf,
    /// Also save the fitted network (safetensors, the seed's names).
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Initial height: classical (the multi-wavelength solver) or unet:W.safetensors.
    #[arg(long, default_value = "classical")]
    init: FitInit,
    #[arg(long, default_value_t = 1e-3)]
    smoothness: f32,
    #[arg(long, default_value_t = 1000)]
    supervised_steps: usize,
    #[arg(long, default_value_t = 200)]
    adam_steps: usize,
    #[arg(long, default_value_t = 500)]
    lbfgs_iters: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl TryFrom<PinnFitArgs> for pinn::FitOptions {
    type Error = ArgError;
    fn try_from(a: PinnFitArgs) -> Result<Self, ArgError> {
        // A missing --region is the parser's error for an empty one.
        let Region(region) = a.region.map_or_else(|| "".parse(), Ok)?;
        Ok(Self {
            frame: a.frame,
            region,
            output: a.output,
            save_model: a.save_model,
            init: a.init,
            smoothness: a.smoothness,
            supervised_steps: a.supervised_steps,
            adam_steps: a.adam_steps,
            lbfgs_iters: a.lbfgs_iters,
            seed: a.seed,
        })
    }
}

#[derive(Args)]
pub struct PinnBenchArgs {
    problem: Problem,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Network widths, input first, e.g. 1,32,32,32,1.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Chebyshev degree K.
    #[arg(long)]
    degree: Option<usize>,
    /// Collocation points.
    #[arg(long)]
    collocation: Option<usize>,
    #[arg(long)]
    adam_steps: Option<usize>,
    #[arg(long)]
    adam_lr: Option<f32>,
    #[arg(long)]
    lbfgs_iters: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
}

impl From<PinnBenchArgs> for pinn::BenchOptions {
    fn from(a: PinnBenchArgs) -> Self {
        Self {
            problem: a.problem,
            json: a.json,
            layers: a.layers,
            degree: a.degree,
            collocation: a.collocation,
            adam_steps: a.adam_steps,
            adam_lr: a.adam_lr,
            lbfgs_iters: a.lbfgs_iters,
            seed: a.seed,
        }
    }
}
