//! psi-gpu command line: parse, call the library, print.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use psi_gpu::gpu::{Gpu, GpuOptions, Precision, list_adapters};
use psi_gpu::infer::{InferOptions, infer};
use psi_gpu::io::weights::parse_scale;

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
enum Command {
    /// List adapters with their features and limits.
    Info,
    /// Run a model over a (C, H, W) npy frame.
    Infer(InferArgs),
}

#[derive(Args)]
struct InferArgs {
    /// Input frame: (channels, height, width) npy of u8, u16, f16 or f32.
    input: PathBuf,
    /// U-Net weights (safetensors with PyTorch state_dict names).
    #[arg(long)]
    weights: PathBuf,
    /// Output npy (default: INPUT with .height.npy).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Tile size; 0 runs the whole frame as one tile.
    #[arg(long, default_value_t = 0)]
    tile: usize,
    /// Storage precision: auto (f16 where the GPU has it), f32 or f16.
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Factor applied to the input before the model (e.g. 1/255); default from the weights'
    /// metadata, else 1/255 for u8, 1/65535 for u16, 1 for floats.
    #[arg(long)]
    input_scale: Option<String>,
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
        Command::Infer(a) => {
            if a.tile != 0 {
                return Err(anyhow!("--tile {}: only whole-frame inference (--tile 0) is available in this build", a.tile));
            }
            let precision = Precision::parse(&a.precision)
                .ok_or_else(|| anyhow!("--precision '{}': expected auto, f32 or f16", a.precision))?;
            let input_scale = match &a.input_scale {
                None => None,
                Some(s) => Some(parse_scale(s).ok_or_else(|| anyhow!("--input-scale '{s}': expected a positive number like 1/255"))?),
            };
            let output = a.output.clone().unwrap_or_else(|| default_output(&a.input));
            let gpu = Gpu::new(&gpu_opts)?;
            let opts = InferOptions { input: a.input, output: output.clone(), weights: a.weights, precision, input_scale };
            let s = infer(&gpu, &opts).with_context(|| format!("infer {}", opts.input.display()))?;
            println!(
                "wrote {} {:?} f32 | frame {:?} {} x{} | {} on {} | {:.3} s | GPU {:.1} MiB",
                output.display(),
                s.output_shape,
                s.shape,
                s.input_type.name(),
                s.input_scale,
                s.precision,
                gpu.describe(),
                s.seconds,
                s.peak_gpu_bytes as f64 / 1048576.0
            );
            Ok(())
        }
    }
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
