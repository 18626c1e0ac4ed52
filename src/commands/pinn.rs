//! `psi-gpu pinn`: Scaled-cPIKAN networks ([`crate::nn::cpikan`]) — evaluate one on the pixel
//! grid ([`eval`]), fit one to a frame region with the PINN reconstruction loss ([`fit`]), or run
//! a PDE benchmark from the Scaled-cPIKAN paper ([`bench()`]).

use std::fmt;
use std::path::PathBuf;

use crate::commands::infer::load_unet;
use crate::commands::outputs::Files;
use crate::commands::{Device, write_json};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::npy::{NpyReader, to_f32, write_f32};
use crate::nn::cpikan::Cpikan;
use crate::nn::cpikan::fit::{Init, PinnFitOptions, PinnFitReport, pinn_fit_region, save_model};
use crate::nn::cpikan::helmholtz::{HelmholtzConfig, HelmholtzReport, helmholtz};
use crate::tiling::region;

/// `pinn eval`: the network at every integer pixel (x = column, y = row) of a `height` x
/// `width` grid.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub weights: PathBuf,
    pub height: usize,
    pub width: usize,
    pub output: PathBuf,
}

pub struct EvalReport {
    pub options: EvalOptions,
    pub device: Device,
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(f, "wrote {} [{}, {}] f32 on {}", o.output.display(), o.height, o.width, self.device)
    }
}

/// Evaluate the network and write the `(height, width)` map.
pub fn eval(gpu: &Gpu, opts: &EvalOptions) -> Result<EvalReport> {
    let (h, w) = (opts.height, opts.width);
    if h == 0 || w == 0 {
        return Err(Error::Invalid("--height and --width must be positive".into()));
    }
    Files::new().inputs("--weights", [&opts.weights]).outputs("the output (-o)", [&opts.output]).check()?;
    let values = Cpikan::load(gpu, &opts.weights)?.eval_grid(gpu, h, w)?;
    write_f32(&opts.output, &[h, w], &values)?;
    Ok(EvalReport { options: opts.clone(), device: Device::of(gpu) })
}

/// Where `pinn fit` takes its initial height from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FitInit {
    /// The classical multi-wavelength solver on the region.
    Classical,
    /// The U-Net of these weights on the region (run as one tile, as `infer --tile 0`).
    UNet(PathBuf),
}

/// `pinn fit`: see [`crate::nn::cpikan::fit`].
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Bucket frame `(C, H, W)` npy (raw intensities).
    pub frame: PathBuf,
    /// `[y, x, h, w]` in pixels.
    pub region: [usize; 4],
    /// The region's fitted heights `(h, w)` go here.
    pub output: PathBuf,
    /// Also save the fitted network (safetensors, the seed's names).
    pub save_model: Option<PathBuf>,
    pub init: FitInit,
    pub smoothness: f32,
    pub supervised_steps: usize,
    pub adam_steps: usize,
    pub lbfgs_iters: usize,
    pub seed: u64,
}

pub struct FitReport {
    pub options: FitOptions,
    pub fit: PinnFitReport,
    pub device: Device,
}

impl fmt::Display for FitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ([y, x, h, w], r) = (self.options.region, &self.fit);
        write!(
            f,
            "pinn fit {h}x{w} at ({y}, {x}) on {}: physics loss {:.4} -> {:.4} (initial height's data term {:.4}); \
             {} supervised, {} Adam, {} L-BFGS iterations; {:.1} s; wrote {}",
            self.device,
            r.initial_loss,
            r.final_loss,
            r.h0_data_loss,
            r.supervised_steps,
            r.adam_steps,
            r.lbfgs_iterations,
            r.wall_s,
            self.options.output.display()
        )
    }
}

/// The U-Net's heights (its first output channel) on the region `raw` (`(c, h, w)` of `ty`), run
/// in memory as one tile, `h × w` row-major.
fn unet_heights(gpu: &Gpu, weights: &std::path::Path, ty: HostType, shape: [usize; 3], raw: &[u8]) -> Result<Vec<f32>> {
    let model = load_unet(gpu, weights, None)?;
    let out = region::run_raw(gpu, &model, ty, shape, raw, None)?;
    Ok(out.index_axis_move(ndarray::Axis(0), 0).into_iter().collect())
}

/// Fit the network, write the heights (and the network if asked). The region is read once, in
/// its raw type: the U-Net start (if any) runs on it as it is, the fit on its values as f32.
pub fn fit(gpu: &Gpu, opts: &FitOptions) -> Result<FitReport> {
    let unet = match &opts.init {
        FitInit::UNet(weights) => Some(weights),
        FitInit::Classical => None,
    };
    Files::new()
        .inputs("the frame", [&opts.frame])
        .inputs("--init", unet)
        .outputs("the output (-o)", [&opts.output])
        .outputs("--save-model", &opts.save_model)
        .check()?;
    let mut reader = NpyReader::open(&opts.frame)?;
    let raw = reader.read_region(opts.region)?;
    let (ty, c) = (reader.header().ty, reader.header().shape[0]);
    let [_, _, h, w] = opts.region;
    let init = match &opts.init {
        FitInit::Classical => Init::Classical,
        FitInit::UNet(weights) => Init::Heights(unet_heights(gpu, weights, ty, [c, h, w], &raw)?),
    };
    let fopts = PinnFitOptions {
        region: opts.region,
        smoothness: opts.smoothness,
        supervised_steps: opts.supervised_steps,
        adam_steps: opts.adam_steps,
        lbfgs_iters: opts.lbfgs_iters,
        init,
        seed: opts.seed,
        ..Default::default()
    };
    let r = pinn_fit_region(gpu, &opts.frame, c, &to_f32(ty, &raw), &fopts)?;
    write_f32(&opts.output, &[h, w], &r.heights)?;
    if let Some(m) = &opts.save_model {
        save_model(m, &r.weights)?;
    }
    Ok(FitReport { options: opts.clone(), fit: r, device: Device::of(gpu) })
}

/// The PDE benchmarks `pinn bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `u'' + k²u = 0`, k = 4π, u(-1) = 0, u'(1) = k (see [`crate::nn::cpikan::helmholtz`]).
    Helmholtz,
}

/// `pinn bench`: every setting left out keeps the benchmark's default ([`HelmholtzConfig`]).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub problem: Problem,
    /// Write the figures ([`BenchReport::to_json`]) here.
    pub json: Option<PathBuf>,
    pub layers: Option<Vec<usize>>,
    pub degree: Option<usize>,
    pub collocation: Option<usize>,
    pub adam_steps: Option<usize>,
    pub adam_lr: Option<f32>,
    pub lbfgs_iters: Option<usize>,
    pub seed: Option<u64>,
}

impl BenchOptions {
    /// The benchmark's configuration with the settings given.
    pub fn config(&self) -> HelmholtzConfig {
        let d = HelmholtzConfig::default();
        HelmholtzConfig {
            layers: self.layers.clone().unwrap_or(d.layers),
            degree: self.degree.unwrap_or(d.degree),
            n_collocation: self.collocation.unwrap_or(d.n_collocation),
            adam_steps: self.adam_steps.unwrap_or(d.adam_steps),
            adam_lr: self.adam_lr.unwrap_or(d.adam_lr),
            lbfgs_iterations: self.lbfgs_iters.unwrap_or(d.lbfgs_iterations),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        }
    }
}

pub struct BenchReport {
    pub config: HelmholtzConfig,
    pub result: HelmholtzReport,
    pub device: Device,
}

impl BenchReport {
    /// The figures `--json` writes.
    pub fn to_json(&self) -> serde_json::Value {
        let (c, r, d) = (&self.config, &self.result, &self.device);
        serde_json::json!({
            "device": d.name, "backend": d.backend, "layers": c.layers,
            "degree": c.degree, "collocation": c.n_collocation, "adam_lr": c.adam_lr, "seed": c.seed,
            "rel_l2": r.rel_l2, "loss_after_adam": r.loss_after_adam, "initial_loss": r.initial_loss,
            "initial_rel_l2": r.initial_rel_l2, "final_loss": r.final_loss, "adam_steps": r.adam_steps,
            "lbfgs_iterations": r.lbfgs_iterations, "lbfgs_evaluations": r.lbfgs_evaluations, "seconds": r.wall_s,
        })
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, r) = (&self.config, &self.result);
        writeln!(
            f,
            "helmholtz on {}: network {:?}, Chebyshev order {}, {} collocation points, Adam lr {:e}, seed {}",
            self.device, c.layers, c.degree, c.n_collocation, c.adam_lr, c.seed
        )?;
        writeln!(
            f,
            "loss {:.3e} -> {:.3e} after {} Adam steps -> {:.3e} after {} L-BFGS iterations ({} evaluations), {:.1} s",
            r.initial_loss,
            r.loss_after_adam,
            r.adam_steps,
            r.final_loss,
            r.lbfgs_iterations,
            r.lbfgs_evaluations,
            r.wall_s
        )?;
        let points = c.eval_points;
        write!(
            f,
            "relative L2 vs sin(kx) on {points} points: {:.3e} (initial network {:.3e})",
            r.rel_l2, r.initial_rel_l2
        )
    }
}

/// Run the benchmark, write the JSON if asked.
pub fn bench(gpu: &Gpu, opts: &BenchOptions) -> Result<BenchReport> {
    Files::new().outputs("--json", &opts.json).check()?;
    let config = match opts.problem {
        Problem::Helmholtz => opts.config(),
    };
    let result = helmholtz(gpu, &config)?;
    let report = BenchReport { config, result, device: Device::of(gpu) };
    if let Some(path) = &opts.json {
        write_json(path, &report.to_json())?;
    }
    Ok(report)
}
