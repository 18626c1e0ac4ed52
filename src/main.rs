//! psi-gpu command line: parse, call the library, print.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use psi_gpu::HostType;
use psi_gpu::commands::bench::BenchOptions;
use psi_gpu::commands::eval::{EvalOptions, error_map, eval};
use psi_gpu::commands::generate::generate;
use psi_gpu::commands::infer::{InferOptions, infer};
use psi_gpu::commands::train::{LossChoice, TrainOptions, train};
use psi_gpu::gpu::{Gpu, GpuOptions, Precision, list_adapters};
use psi_gpu::io::images::{ImageFormat, images_to_npy, npy_to_images};
use psi_gpu::io::preview::{PreviewOptions, write_preview};
use psi_gpu::io::weights::parse_scale;
use psi_gpu::optim::LrSchedule;
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::surface::Shape;
use psi_gpu::psi::synthetic::GenerateOptions;

#[derive(Parser)]
#[command(name = "psi-gpu", version, about = "Phase-shifting-interferometry bucket images to height maps on any GPU")]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GpuArgs {
    /// Graphics backend: auto, vulkan, dx12, metal or gl.
    #[arg(long, global = true, env = "PSI_GPU_BACKEND", default_value = "auto")]
    backend: String,
    /// Adapter index among those of the backend (see `psi-gpu info`).
    #[arg(long, global = true, env = "PSI_GPU_ADAPTER")]
    adapter: Option<usize>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
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

#[derive(Args)]
struct FinetuneArgs {
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
    layers: String,
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
    input_scale: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand)]
enum PinnCommand {
    /// Evaluate a Scaled-cPIKAN at every integer pixel (x = column, y = row) -> (H, W) npy.
    Eval {
        /// Network weights (safetensors with the seed's names: domain_min, network.0.cheby_coeffs, ...).
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        height: usize,
        #[arg(long)]
        width: usize,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Fit a Scaled-cPIKAN h(x, y) to a region of a frame with the PINN reconstruction loss
    /// (bucket consistency + smoothness from the analytic second derivatives): first to an initial
    /// height (supervised), then Adam, then L-BFGS. Writes the region's heights (h, w).
    Fit {
        /// Bucket frame (C, H, W) npy (raw intensities).
        frame: PathBuf,
        /// Region as y,x,h,w (pixels).
        #[arg(long, value_delimiter = ',')]
        region: Vec<usize>,
        #[arg(short, long)]
        output: PathBuf,
        /// Also save the fitted network (safetensors, the seed's names).
        #[arg(long)]
        save_model: Option<PathBuf>,
        /// Initial height: classical (the multi-wavelength solver) or unet:W.safetensors.
        #[arg(long, default_value = "classical")]
        init: String,
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
    },
    /// A PDE benchmark from the Scaled-cPIKAN paper: `helmholtz` (u'' + k²u = 0, k = 4π, u(-1) = 0,
    /// u'(1) = k; Adam then L-BFGS; relative L2 against sin(kx) on 1000 points). Every setting left
    /// out keeps the benchmark's default ([1,16,16,1], K = 3, 256 points, 1000 Adam steps at 1e-2,
    /// up to 1000 L-BFGS iterations, seed 0).
    Bench {
        problem: String,
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
    },
}

#[derive(Args)]
struct TrainArgs {
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
    #[arg(long, default_value = "0.1,2.4")]
    height_range: String,
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
    schedule: String,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the gradient's global L2 norm to this.
    #[arg(long)]
    clip: Option<f64>,
    /// physics (bucket consistency + smoothness, no truth needed), supervised (MSE to truth), or
    /// auto: supervised when every frame has a truth map (synthetic frames do), else physics.
    #[arg(long, default_value = "auto")]
    loss: String,
    /// Weight of the Laplacian smoothness term.
    #[arg(long, default_value_t = 1e-4)]
    smoothness: f32,
    /// Input scale (saved in the weights' metadata, used by infer); default 1/255 for u8.
    #[arg(long)]
    input_scale: Option<String>,
    /// f32, f16 (activations in f16 with dynamic loss scaling) or auto.
    #[arg(long, default_value = "f32")]
    precision: String,
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
}

#[derive(Args)]
struct ConvertArgs {
    /// A folder of bucket images (to npy) or a (C, H, W) u8/u16 npy (to images).
    input: PathBuf,
    /// The npy to write, or the folder for the images.
    output: PathBuf,
    /// Image format when writing images: bmp (8-bit) or png (8- or 16-bit).
    #[arg(long, default_value = "bmp")]
    format: ImageFormat,
    /// File name pattern of the images, `{}` standing for the index (default bucket_{}).
    #[arg(long)]
    pattern: Option<String>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Output bucket stack (L·N, H, W) npy.
    output: PathBuf,
    #[arg(long, default_value_t = 512)]
    height: usize,
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Element type: f32, u8, u16 or f16 (integers are rounded and clipped).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Also write the true heights (H, W) f32 here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Surface: seed (the seed's peak + plane + cone) or random (smooth caps, tilts, steps, ripples).
    #[arg(long, default_value = "seed")]
    shape: String,
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
    #[arg(long, value_delimiter = ',', default_value = "128,100")]
    ab: Vec<f32>,
    /// Relative smooth per-pixel variation of A and B.
    #[arg(long, default_value_t = 0.0)]
    ab_variation: f32,
    #[arg(long, value_delimiter = ',', default_value = "5.0,5.5,6.05,6.655")]
    wavelengths: Vec<f32>,
    #[arg(long, default_value_t = 4)]
    buckets: usize,
    /// Write a colour-mapped PNG of the true heights here.
    #[arg(long)]
    preview: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    /// Frame size (square).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Folder for the files.
    #[arg(long, default_value = "psi-demo")]
    dir: PathBuf,
    #[arg(long, default_value_t = 512)]
    tile: usize,
    #[arg(long, default_value_t = 128)]
    overlap: usize,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value_t = 2048)]
    height: usize,
    #[arg(long, default_value_t = 2048)]
    width: usize,
    /// U-Net weights; without them the classical solver is timed.
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 512)]
    tile: usize,
    #[arg(long, default_value_t = 128)]
    overlap: usize,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Predicted height map, (H, W) npy.
    pred: PathBuf,
    /// True height map, (H, W) npy.
    truth: PathBuf,
    /// Write the metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a colour-mapped PNG of |pred - truth| here.
    #[arg(long)]
    error_map: Option<PathBuf>,
    /// Evaluate only pixels where this (H, W) npy is non-zero.
    #[arg(long)]
    mask: Option<PathBuf>,
}

#[derive(Args)]
struct InferArgs {
    /// Input frame: (channels, height, width) npy of u8, u16, f16 or f32.
    input: PathBuf,
    /// Output npy (default: INPUT.height.npy next to the input).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// U-Net weights (safetensors with PyTorch state_dict names); without them the classical
    /// multi-wavelength solver runs.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Tile size in pixels; 0 runs the whole frame as one tile.
    #[arg(long, default_value_t = 512)]
    tile: usize,
    /// Overlap between neighbouring tiles, blended with sin² ramps.
    #[arg(long, default_value_t = 128)]
    overlap: usize,
    /// Tiles per GPU batch (default: from the adapter's limits and --gpu-memory).
    #[arg(long)]
    batch: Option<usize>,
    /// GPU memory (MiB) the automatic batch may give to model activations.
    #[arg(long, default_value_t = 2048)]
    gpu_memory: u64,
    /// Storage precision of the U-Net: auto (f16 where the GPU has it), f32 or f16.
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Factor applied to the input before the model (e.g. 1/255); default from the weights'
    /// metadata, else 1/255 for u8, 1/65535 for u16, 1 for floats.
    #[arg(long)]
    input_scale: Option<String>,
    /// Classical solver: laser wavelengths in µm.
    #[arg(long, value_delimiter = ',', default_value = "5.0,5.5,6.05,6.655")]
    wavelengths: Vec<f32>,
    /// Classical solver: phase steps per laser (channel = laser * buckets + bucket).
    #[arg(long, default_value_t = 4)]
    buckets: usize,
    /// Classical solver: height search range in µm, as MIN,MAX.
    #[arg(long, value_delimiter = ',', default_value = "-100,100", allow_hyphen_values = true)]
    height_range: Vec<f32>,
    /// Classical solver: also write the fringe-contrast (quality) map here.
    #[arg(long)]
    quality: Option<PathBuf>,
    /// Write run statistics (time, tiles, throughput, device, memory) as JSON here.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Write a colour-mapped PNG of the height map here.
    #[arg(long)]
    preview: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let gpu_opts = GpuOptions { backend: cli.gpu.backend.clone(), adapter: cli.gpu.adapter, ..GpuOptions::from_env() };
    match cli.command {
        Command::Info => info(&cli.gpu.backend),
        Command::Infer(a) => infer_command(a, &gpu_opts),
        Command::Eval(a) => eval_command(a),
        Command::Generate(a) => generate_command(a, &gpu_opts),
        Command::Demo(a) => demo_command(a, &gpu_opts),
        Command::Bench(a) => bench_command(a, &gpu_opts),
        Command::Train(a) => train_command(a, &gpu_opts),
        Command::Finetune(a) => finetune_command(a, &gpu_opts),
        Command::Pinn(PinnCommand::Eval { weights, height, width, output }) => {
            if height == 0 || width == 0 {
                return Err(anyhow!("--height and --width must be positive"));
            }
            let gpu = Gpu::new(&gpu_opts)?;
            let net = psi_gpu::nn::cpikan::Cpikan::load(&gpu, &weights)?;
            let values = net.eval_grid(&gpu, height, width)?;
            psi_gpu::io::npy::write_f32(&output, &[height, width], &values)?;
            println!("wrote {} [{height}, {width}] f32 on {}", output.display(), gpu.describe());
            Ok(())
        }
        Command::Pinn(PinnCommand::Fit {
            frame,
            region,
            output,
            save_model,
            init,
            smoothness,
            supervised_steps,
            adam_steps,
            lbfgs_iters,
            seed,
        }) => {
            let [y, x, h, w] = region[..] else {
                return Err(anyhow!("--region: expected y,x,h,w"));
            };
            let gpu = Gpu::new(&gpu_opts)?;
            let init = match init.split_once(':') {
                None if init == "classical" => psi_gpu::nn::cpikan::fit::Init::Classical,
                Some(("unet", weights)) => {
                    psi_gpu::nn::cpikan::fit::Init::Heights(unet_region(&gpu, &frame, [y, x, h, w], weights)?)
                }
                _ => return Err(anyhow!("--init '{init}': expected classical or unet:W.safetensors")),
            };
            let opts = psi_gpu::nn::cpikan::fit::PinnFitOptions {
                region: [y, x, h, w],
                smoothness,
                supervised_steps,
                adam_steps,
                lbfgs_iters,
                init,
                seed,
                ..Default::default()
            };
            let r = psi_gpu::nn::cpikan::fit::pinn_fit(&gpu, &frame, &opts)?;
            psi_gpu::io::npy::write_f32(&output, &[h, w], &r.heights)?;
            if let Some(m) = &save_model {
                psi_gpu::nn::cpikan::fit::save_model(m, &r.weights)?;
            }
            println!(
                "pinn fit {h}x{w} at ({y}, {x}) on {}: physics loss {:.4} -> {:.4} (initial height's data term {:.4}); \
                 {} supervised, {} Adam, {} L-BFGS iterations; {:.1} s; wrote {}",
                gpu.describe(),
                r.initial_loss,
                r.final_loss,
                r.h0_data_loss,
                r.supervised_steps,
                r.adam_steps,
                r.lbfgs_iterations,
                r.wall_s,
                output.display()
            );
            Ok(())
        }
        Command::Pinn(PinnCommand::Bench {
            problem,
            json,
            layers,
            degree,
            collocation,
            adam_steps,
            adam_lr,
            lbfgs_iters,
            seed,
        }) => {
            if problem != "helmholtz" {
                return Err(anyhow!("pinn bench '{problem}': the available problem is helmholtz"));
            }
            let gpu = Gpu::new(&gpu_opts)?;
            let d = psi_gpu::nn::cpikan::helmholtz::HelmholtzConfig::default();
            let cfg = psi_gpu::nn::cpikan::helmholtz::HelmholtzConfig {
                layers: layers.unwrap_or(d.layers),
                degree: degree.unwrap_or(d.degree),
                n_collocation: collocation.unwrap_or(d.n_collocation),
                adam_steps: adam_steps.unwrap_or(d.adam_steps),
                adam_lr: adam_lr.unwrap_or(d.adam_lr),
                lbfgs_iterations: lbfgs_iters.unwrap_or(d.lbfgs_iterations),
                seed: seed.unwrap_or(d.seed),
                ..d
            };
            let r = psi_gpu::nn::cpikan::helmholtz::helmholtz(&gpu, &cfg)?;
            println!(
                "helmholtz on {}: network {:?}, Chebyshev order {}, {} collocation points, Adam lr {:e}, seed {}",
                gpu.describe(),
                cfg.layers,
                cfg.degree,
                cfg.n_collocation,
                cfg.adam_lr,
                cfg.seed
            );
            println!(
                "loss {:.3e} -> {:.3e} after {} Adam steps -> {:.3e} after {} L-BFGS iterations ({} evaluations), {:.1} s",
                r.initial_loss,
                r.loss_after_adam,
                r.adam_steps,
                r.final_loss,
                r.lbfgs_iterations,
                r.lbfgs_evaluations,
                r.wall_s
            );
            println!(
                "relative L2 vs sin(kx) on 1000 points: {:.3e} (initial network {:.3e})",
                r.rel_l2, r.initial_rel_l2
            );
            if let Some(path) = json {
                let v = serde_json::json!({
                    "device": gpu.info.name, "backend": gpu.info.backend, "layers": cfg.layers,
                    "degree": cfg.degree, "collocation": cfg.n_collocation, "adam_lr": cfg.adam_lr, "seed": cfg.seed,
                    "rel_l2": r.rel_l2, "loss_after_adam": r.loss_after_adam, "initial_loss": r.initial_loss,
                    "initial_rel_l2": r.initial_rel_l2, "final_loss": r.final_loss, "adam_steps": r.adam_steps,
                    "lbfgs_iterations": r.lbfgs_iterations, "lbfgs_evaluations": r.lbfgs_evaluations, "seconds": r.wall_s,
                });
                std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Command::Convert(a) => {
            let info = if a.input.is_dir() {
                images_to_npy(&a.input, &a.output, a.pattern.as_deref())?
            } else {
                npy_to_images(&a.input, &a.output, a.format)?
            };
            println!(
                "{} -> {}: {} channels of {} x {} {}",
                a.input.display(),
                a.output.display(),
                info.channels,
                info.height,
                info.width,
                info.dtype.name()
            );
            Ok(())
        }
    }
}

fn finetune_command(a: FinetuneArgs, gpu_opts: &GpuOptions) -> Result<()> {
    use psi_gpu::commands::finetune::{FinetuneOptions, Layers, finetune};
    let layers = Layers::parse(&a.layers)
        .ok_or_else(|| anyhow!("--layers '{}': expected head, all or name prefixes like up4,outc", a.layers))?;
    let input_scale = match &a.input_scale {
        None => None,
        Some(s) => {
            Some(parse_scale(s).ok_or_else(|| anyhow!("--input-scale '{s}': expected a positive number like 1/255"))?)
        }
    };
    let opts = FinetuneOptions {
        weights: a.weights,
        frames: a.frames,
        holdout: a.holdout,
        output: a.output.clone(),
        layers,
        patch: a.patch,
        crops: a.crops,
        batch: a.batch,
        iterations: a.iterations,
        history: a.history,
        memory_mib: a.lbfgs_memory,
        smoothness: a.smoothness,
        per_pixel_ab: a.per_pixel_ab,
        input_scale,
        seed: a.seed,
    };
    let gpu = Gpu::new(gpu_opts)?;
    let bar = progress_bar("evaluations");
    bar.set_length((opts.iterations * 5 / 4) as u64);
    let r = finetune(&gpu, &opts, |evals, loss| {
        bar.set_position(evals as u64);
        bar.set_message(format!("physics loss {loss:.4}"));
    })?;
    bar.finish_and_clear();
    println!(
        "finetuned {} of {} parameters on {} ({} crops of {} x {}, eval-mode BatchNorm, f32): physics loss {:.4} -> {:.4}",
        r.selected,
        r.total,
        gpu.describe(),
        r.crops,
        r.patch[0],
        r.patch[1],
        r.loss_before,
        r.loss_after
    );
    if let Some((before, after)) = r.holdout {
        println!("held-out frames: physics loss {before:.4} -> {after:.4}");
    }
    println!(
        "L-BFGS: {} iterations, {} evaluations, history {}, {:.1} s; GPU {:.1} MiB",
        r.iterations,
        r.evaluations,
        r.history,
        r.seconds,
        r.gpu_bytes as f64 / 1048576.0
    );
    println!("wrote {}", a.output.display());
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn train_command(a: TrainArgs, gpu_opts: &GpuOptions) -> Result<()> {
    let schedule = match a.schedule.split(':').collect::<Vec<_>>()[..] {
        ["constant"] => LrSchedule::Constant,
        ["step", size, gamma] => LrSchedule::Step { step_size: size.parse()?, gamma: gamma.parse()? },
        ["exp", gamma] => LrSchedule::Exponential { gamma: gamma.parse()? },
        _ => return Err(anyhow!("--schedule '{}': expected constant, step:SIZE:GAMMA or exp:GAMMA", a.schedule)),
    };
    let loss = match a.loss.as_str() {
        "physics" => LossChoice::Physics,
        "supervised" => LossChoice::Supervised,
        "auto" => LossChoice::Auto,
        other => return Err(anyhow!("--loss '{other}': expected auto, physics or supervised")),
    };
    let input_scale = match &a.input_scale {
        None => None,
        Some(s) => {
            Some(parse_scale(s).ok_or_else(|| anyhow!("--input-scale '{s}': expected a positive number like 1/255"))?)
        }
    };
    let height_range = match a.height_range.as_str() {
        "full" => None,
        s => Some(
            s.split_once(',')
                .and_then(|(l, h)| Some((l.trim().parse::<f32>().ok()?, h.trim().parse::<f32>().ok()?)))
                .ok_or_else(|| anyhow!("--height-range '{s}': expected LO,HI in µm (like 0.1,2.4) or full"))?,
        ),
    };
    let opts = TrainOptions {
        init: a.init,
        base: a.base,
        frames: a.frames,
        truth: a.truth,
        synthetic: a.synthetic,
        synthetic_size: a.synthetic_size,
        noise: a.noise,
        height_range,
        steps: a.steps,
        epochs: a.epochs,
        batch: a.batch,
        patch: a.patch,
        lr: a.lr,
        schedule,
        weight_decay: a.weight_decay,
        clip: a.clip,
        loss,
        smoothness: a.smoothness,
        input_scale,
        precision: parse_precision(&a.precision)?,
        grad_accum: a.grad_accum,
        seed: a.seed,
        output: a.output.clone(),
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        history: a.history,
        validate_every: a.validate_every,
        validation: a.validation,
    };
    let gpu = Gpu::new(gpu_opts)?;
    let bar = progress_bar("steps");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = train(&gpu, &opts, |step, steps, (loss, data, smooth), lr| {
        bar.set_length(steps as u64);
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.4} (data {data:.4}, smoothness {smooth:.2e}) lr {lr:.2e}"));
    })?;
    bar.finish_and_clear();
    println!(
        "trained {} steps on {} ({}, {} loss): {:.3} s/step, loss {:.4} -> {:.4}, {} skipped (overflow), \
         GPU {:.1} MiB per step (activations {:.1}, their gradients {:.1}, parameters + Adam {:.1}, scratch {:.1})",
        r.steps,
        gpu.describe(),
        r.precision,
        format!("{:?}", r.loss).to_lowercase(),
        r.seconds_per_step,
        r.first_loss,
        r.last_loss,
        r.skipped_steps,
        mib(r.memory.total()),
        mib(r.memory.activations),
        mib(r.memory.gradients),
        mib(r.memory.parameters),
        mib(r.memory.scratch)
    );
    for v in &r.validations {
        let restricted = match v.classical_range_rmse {
            Some(c) => format!("; searching only the training height range: {c:.4} µm"),
            None => String::new(),
        };
        println!(
            "validation at step {}: height RMSE {:.4} µm (classical solver on the same frames: {:.4} µm{restricted})",
            v.step, v.rmse, v.classical_rmse
        );
    }
    println!("wrote {}", a.output.display());
    Ok(())
}

/// The U-Net's heights on a region of a frame (the region run as one tile).
fn unet_region(gpu: &Gpu, frame: &std::path::Path, region: [usize; 4], weights: &str) -> Result<Vec<f32>> {
    let [y, x, h, w] = region;
    let mut reader = psi_gpu::io::npy::NpyReader::open(frame)?;
    let header = reader.header().clone();
    let [c, fh, fw] = header.shape[..] else {
        return Err(anyhow!("{}: expected a (C, H, W) frame", frame.display()));
    };
    if y + h > fh || x + w > fw || h == 0 || w == 0 {
        return Err(anyhow!("--region {y},{x},{h},{w} is outside the {fh} x {fw} frame"));
    }
    let rows = reader.read_rows(y..y + h)?;
    let s = header.ty.size();
    let mut bytes = Vec::with_capacity(c * h * w * s);
    for row in rows.chunks_exact(fw * s) {
        bytes.extend_from_slice(&row[x * s..(x + w) * s]);
    }
    let dir = std::env::temp_dir().join(format!("psi-gpu-pinn-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("region.npy");
    let mut wr = psi_gpu::io::npy::NpyWriter::new(&tmp, header.ty, &[c, h, w])?;
    wr.write(&bytes)?;
    wr.finish()?;
    let mut opts = InferOptions::new(tmp.clone(), dir.join("heights.npy"));
    opts.weights = Some(PathBuf::from(weights));
    opts.tile = 0;
    let result = infer(gpu, &opts, |_, _| {}).and_then(|_| psi_gpu::io::npy::read_f32(&opts.output));
    let _ = std::fs::remove_dir_all(&dir);
    let (_, heights) = result?;
    Ok(heights[..h * w].to_vec())
}

fn parse_precision(s: &str) -> Result<Option<Precision>> {
    Precision::parse(s).ok_or_else(|| anyhow!("--precision '{s}': expected auto, f32 or f16"))
}

fn generate_command(a: GenerateArgs, gpu_opts: &GpuOptions) -> Result<()> {
    let dtype = match a.dtype.to_ascii_lowercase().as_str() {
        "f32" | "float32" => HostType::F32,
        "f16" | "float16" => HostType::F16,
        "u8" | "uint8" => HostType::U8,
        "u16" | "uint16" => HostType::U16,
        other => return Err(anyhow!("--dtype '{other}': expected f32, f16, u8 or u16")),
    };
    let shape = Shape::parse(&a.shape).ok_or_else(|| anyhow!("--shape '{}': expected seed or random", a.shape))?;
    let [av, bv] = a.ab[..] else {
        return Err(anyhow!("--ab: expected A,B"));
    };
    let opts = GenerateOptions {
        height: a.height,
        width: a.width,
        dtype,
        psi: PsiConfig { wavelengths: a.wavelengths, buckets: a.buckets, a: av, b: bv },
        ab_variation: a.ab_variation,
        noise: a.noise,
        seed: a.seed,
        shape,
        height_scale: a.height_scale,
        height_offset: a.height_offset,
        ..Default::default()
    };
    let gpu = Gpu::new(gpu_opts)?;
    // A preview needs the heights on disk: beside the output when --truth is not given.
    let truth = a.truth.clone().or_else(|| a.preview.as_ref().map(|_| a.output.with_extension("truth.tmp.npy")));
    let bar = progress_bar("rows");
    let s = generate(&gpu, &opts, &a.output, truth.as_deref(), |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!(
        "wrote {} {:?} {} | {} surface, heights {:.3}..{:.3} µm | {:.2} s on {}",
        a.output.display(),
        s.shape,
        s.dtype.name(),
        shape.name(),
        s.height_range.0,
        s.height_range.1,
        s.seconds,
        gpu.describe()
    );
    if let Some(t) = &a.truth {
        println!("truth: {}", t.display());
    }
    if let (Some(png), Some(t)) = (&a.preview, &truth) {
        let info = write_preview(t, png, &PreviewOptions::default());
        if a.truth.is_none() {
            let _ = std::fs::remove_file(t);
        }
        let info = info?;
        println!("preview: {} ({}x{})", png.display(), info.width, info.height);
    }
    Ok(())
}

fn demo_command(a: DemoArgs, gpu_opts: &GpuOptions) -> Result<()> {
    let gpu = Gpu::new(gpu_opts)?;
    println!(
        "psi-gpu demo on {}: {} x {} frame, 16 buckets (4 lasers), u8 with noise σ = 2 counts",
        gpu.describe(),
        a.size,
        a.size
    );
    let r = psi_gpu::commands::demo::demo(&gpu, &a.dir, a.size, a.tile, a.overlap)?;
    println!("generate  {:.2} s", r.generate.seconds);
    println!(
        "infer     {:.2} s, {:.2} MP/s, {} tiles of {}x{} (classical, {})",
        r.infer.stream.seconds,
        r.infer.megapixels_per_s(),
        r.infer.stream.tiles,
        r.infer.stream.tile_h,
        r.infer.stream.tile_w,
        r.infer.precision
    );
    println!(
        "accuracy  RMSE {:.3e} µm, max |error| {:.3e} µm, detrended RMSE {:.3e} µm, bias {:.2e} µm",
        r.metrics.rmse, r.metrics.max_abs, r.metrics.rmse_detrended, r.metrics.bias
    );
    println!("files:");
    for (what, path) in &r.files {
        println!("  {:<28} {}", what, path.display());
    }
    Ok(())
}

fn bench_command(a: BenchArgs, gpu_opts: &GpuOptions) -> Result<()> {
    let gpu = Gpu::new(gpu_opts)?;
    let dir = std::env::temp_dir().join(format!("psi-gpu-bench-{}", std::process::id()));
    let opts = BenchOptions {
        height: a.height,
        width: a.width,
        weights: a.weights,
        tile: a.tile,
        overlap: a.overlap,
        batch: a.batch,
        precision: parse_precision(&a.precision)?,
        dir,
    };
    let r = psi_gpu::commands::bench::bench(&gpu, &opts)?;
    let m = &r.model;
    println!("device    {} | driver {}", gpu.describe(), gpu.info.driver);
    println!(
        "frame     16 x {} x {} u8 | model {} | precision {} | {} tiles of {}x{}, overlap {}, batch {}",
        a.height,
        a.width,
        m.model,
        m.precision,
        m.stream.tiles,
        m.stream.tile_h,
        m.stream.tile_w,
        m.overlap,
        m.stream.batch
    );
    println!(
        "infer     {:.3} s, {:.3} MP/s (GPU {:.1} MiB)",
        m.stream.seconds,
        m.megapixels_per_s(),
        m.stream.peak_gpu_bytes as f64 / 1048576.0
    );
    println!(
        "pipeline  {:.3} s with a copy-first-channel model: {:.1} % of the infer time is outside the model",
        r.pipeline.stream.seconds,
        100.0 * r.share_outside_model()
    );
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.info.name, "backend": gpu.info.backend, "device_type": gpu.info.device_type,
            "frame": m.shape, "model": m.model, "precision": m.precision.to_string(),
            "tile": [m.stream.tile_h, m.stream.tile_w], "overlap": m.overlap, "batch": m.stream.batch,
            "tiles": m.stream.tiles, "seconds": m.stream.seconds, "megapixels_per_s": m.megapixels_per_s(),
            "pipeline_seconds": r.pipeline.stream.seconds, "share_outside_model": r.share_outside_model(),
            "peak_gpu_bytes": m.stream.peak_gpu_bytes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn eval_command(a: EvalArgs) -> Result<()> {
    let opts = EvalOptions { mask: a.mask.clone() };
    let m = eval(&a.pred, &a.truth, &opts)?;
    println!("{m}");
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&m.to_json())? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(png) = &a.error_map {
        let info = error_map(
            &a.pred,
            &a.truth,
            png,
            &opts,
            &PreviewOptions { label: "|error| µm".into(), ..Default::default() },
        )?;
        println!(
            "error map: {} ({}x{}, |error| {:.3e}..{:.3e} µm)",
            png.display(),
            info.width,
            info.height,
            info.min,
            info.max
        );
    }
    Ok(())
}

fn infer_command(a: InferArgs, gpu_opts: &GpuOptions) -> Result<()> {
    let precision = Precision::parse(&a.precision)
        .ok_or_else(|| anyhow!("--precision '{}': expected auto, f32 or f16", a.precision))?;
    let input_scale = match &a.input_scale {
        None => None,
        Some(s) => {
            Some(parse_scale(s).ok_or_else(|| anyhow!("--input-scale '{s}': expected a positive number like 1/255"))?)
        }
    };
    let [lo, hi] = a.height_range[..] else {
        return Err(anyhow!("--height-range: expected MIN,MAX in µm"));
    };
    let output = a.output.clone().unwrap_or_else(|| default_output(&a.input));
    let mut opts = InferOptions::new(a.input.clone(), output.clone());
    opts.weights = a.weights;
    opts.classical.psi.wavelengths = a.wavelengths;
    opts.classical.psi.buckets = a.buckets;
    opts.classical.height_range = (lo, hi);
    opts.quality = a.quality;
    opts.tile = a.tile;
    opts.overlap = a.overlap;
    opts.batch = a.batch;
    opts.precision = precision;
    opts.input_scale = input_scale;
    opts.memory_budget = a.gpu_memory << 20;
    let gpu = Gpu::new(gpu_opts)?;
    let bar = progress_bar("tiles");
    let s = infer(&gpu, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!(
        "wrote {} {:?} f32 | {} | frame {:?} {} x{} | {} tiles of {}x{} (batch {}) | {} on {} | {:.3} s, {:.2} MP/s | GPU {:.1} MiB",
        output.display(),
        s.output_shape,
        s.model,
        s.shape,
        s.input_type.name(),
        s.input_scale,
        s.stream.tiles,
        s.stream.tile_h,
        s.stream.tile_w,
        s.stream.batch,
        s.precision,
        gpu.describe(),
        s.stream.seconds,
        s.megapixels_per_s(),
        s.stream.peak_gpu_bytes as f64 / 1048576.0
    );
    if let Some(png) = &a.preview {
        let info = write_preview(&output, png, &PreviewOptions::default())?;
        println!("preview: {} ({}x{}, {:.3}..{:.3} µm)", png.display(), info.width, info.height, info.min, info.max);
    }
    if let Some(path) = &a.stats_json {
        let json = serde_json::json!({
            "seconds": s.stream.seconds,
            "tiles": s.stream.tiles,
            "megapixels_per_s": s.megapixels_per_s(),
            "device": gpu.info.name,
            "backend": gpu.info.backend,
            "device_type": gpu.info.device_type,
            "precision": s.precision.to_string(),
            "model": s.model,
            "frame": s.shape,
            "input_dtype": s.input_type.name(),
            "input_scale": s.input_scale,
            "tile": [s.stream.tile_h, s.stream.tile_w],
            "overlap": s.overlap,
            "batch": s.stream.batch,
            "peak_gpu_bytes": s.stream.peak_gpu_bytes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Done/total, rate and ETA on a terminal; hidden when stderr is not one.
fn progress_bar(unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn default_output(input: &std::path::Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "frame".into());
    input.with_file_name(format!("{stem}.height.npy"))
}

fn info(backend: &str) -> Result<()> {
    let adapters = list_adapters(backend)?;
    if adapters.is_empty() {
        return Err(psi_gpu::Error::NoAdapter { backend: backend.into() }.into());
    }
    for a in adapters {
        println!("[{}] {} ({}, {})", a.index, a.name, a.backend, a.device_type);
        println!("    driver: {}", if a.driver.is_empty() { "-" } else { &a.driver });
        println!(
            "    shader-f16: {}  float32-atomics: {}  subgroups: {}",
            yes(a.shader_f16),
            yes(a.float32_atomics),
            yes(a.subgroups)
        );
        println!(
            "    max storage binding: {} MiB  max buffer: {} MiB  workgroup storage: {} KiB  invocations/workgroup: {}",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroup_storage >> 10,
            a.max_invocations_per_workgroup
        );
        let coop = if a.cooperative_matrix.is_empty() { "none".to_string() } else { a.cooperative_matrix.join(", ") };
        println!("    cooperative matrix: {coop}");
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
