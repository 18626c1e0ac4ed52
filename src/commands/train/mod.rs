//! `psi-gpu train`: the training loop around [`UNetTrainer`] — data (npy frames or synthetic
//! frames made on the fly), random crops, gradient accumulation, learning-rate schedules,
//! validation on held-out synthetic frames, loss history, checkpoints and resume. With
//! `residual`, the residual model (robust classical + bounded U-Net correction, `nn::residual`)
//! on generated frames over ±15 µm ([`residual`]), supervised on the truth.

pub mod residual;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::commands::Device;
use crate::commands::outputs::{Files, same_file};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::io::atomic::AtomicFile;
use crate::io::checkpoint::{self, Checkpoint, OptimizerState};
use crate::io::frames::{Frame, load_frames};
use crate::io::weights::{Weights, check_finite};
use crate::nn::Model;
use crate::nn::classical::Classical;
use crate::nn::residual::train::ResidualTrainer;
use crate::nn::residual::{DEFAULT_BOUND, MODEL_KEY, MODEL_NAME, is_residual, spec as residual_spec};
use crate::nn::unet::UNet;
use crate::nn::unet::init::{he_init, to_weights};
use crate::nn::unet::train::{MemoryUse, TrainConfig, UNetTrainer};
use crate::ops::classical::ClassicalConfig;
use crate::ops::loss::{LossKind, PhysicsConfig};
use crate::optim::{AdamConfig, LrSchedule, StepReport};
use crate::psi::buckets::{self, SynthConfig};
use crate::psi::surface::random_heights_cpu;
use crate::rng::Rng;
use crate::tiling::region;

const NO_METADATA: [(&str, &str); 0] = [];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossChoice {
    Physics,
    Supervised,
    /// Supervised when every training frame has a truth map (synthetic frames always do),
    /// physics otherwise. The physics loss alone does not train a fresh U-Net well (it settles
    /// in minima where the lasers' fringe orders disagree); it refines a trained one.
    Auto,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Start from these weights (a safetensors state_dict or a psi-gpu checkpoint).
    pub init: Option<PathBuf>,
    /// Base width of fresh He-initialised weights (without `init`).
    pub base: usize,
    /// Training frames: `(C, H, W)` npy files (a folder is expanded to its `*.npy`).
    pub frames: Vec<PathBuf>,
    /// Truth maps `(H, W)` for the frames, same order (supervised loss).
    pub truth: Vec<PathBuf>,
    /// Synthetic training frames made on the fly (random surfaces), used without `frames`.
    pub synthetic: usize,
    /// Size of synthetic training and validation frames.
    pub synthetic_size: usize,
    /// Noise σ (counts) of synthetic frames.
    pub noise: f32,
    /// Map every synthetic surface affinely onto [lo, hi] µm (for example within one fringe of
    /// the first laser, where height is a local function of the buckets); `None` keeps the random
    /// surfaces' own range (up to ±60 µm, which needs multi-wavelength unwrapping).
    pub height_range: Option<(f32, f32)>,
    pub steps: usize,
    /// Passes over the training frames (one crop per frame and pass); replaces `steps` when set.
    pub epochs: Option<usize>,
    pub batch: usize,
    /// Random `patch` x `patch` crops; 0 = whole frames.
    pub patch: usize,
    pub lr: f64,
    pub schedule: LrSchedule,
    pub weight_decay: f64,
    pub clip: Option<f64>,
    pub loss: LossChoice,
    pub smoothness: f32,
    pub input_scale: Option<f32>,
    pub precision: Option<Precision>,
    pub grad_accum: usize,
    pub seed: u64,
    pub output: PathBuf,
    /// Save a resumable checkpoint every this many steps (0 = never).
    pub checkpoint_every: usize,
    pub resume: Option<PathBuf>,
    /// Loss history CSV.
    pub history: Option<PathBuf>,
    /// Validate every this many steps (0 = only at the end) on `validation` held-out frames.
    pub validate_every: usize,
    pub validation: usize,
    /// Train the residual model: fresh weights read buckets + [`residual::FEATURES`]; synthetic
    /// frames are [`residual::generated_frame`]s (their noise σ drawn per frame in
    /// [0, `noise`), `height_range` unused); the loss is supervised on the residual height.
    pub residual: bool,
    /// The correction's bound (µm) of fresh residual weights.
    pub bound: f32,
    /// The residual loss's crop weights' power ([`crop_weights`](crate::nn::residual::train::crop_weights)).
    pub relative_loss: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            init: None,
            base: 8,
            frames: vec![],
            truth: vec![],
            synthetic: 16,
            synthetic_size: 128,
            noise: 2.0,
            height_range: Some((0.1, 2.4)),
            steps: 100,
            epochs: None,
            batch: 4,
            patch: 64,
            lr: 1e-3,
            schedule: LrSchedule::Constant,
            weight_decay: 0.0,
            clip: None,
            loss: LossChoice::Auto,
            smoothness: 1e-4,
            input_scale: None,
            precision: None,
            grad_accum: 1,
            seed: 0,
            output: PathBuf::from("unet.safetensors"),
            checkpoint_every: 0,
            resume: None,
            history: None,
            validate_every: 0,
            validation: 4,
            residual: false,
            bound: DEFAULT_BOUND,
            relative_loss: crate::nn::residual::train::RELATIVE_LOSS,
        }
    }
}

/// A synthetic frame: random smooth surface `seed` (mapped onto `range` if given), u8 buckets
/// with noise.
fn synthetic_frame(seed: u64, size: usize, noise: f32, range: Option<(f32, f32)>) -> Frame {
    let mut heights = random_heights_cpu(seed, size, size);
    if let Some((lo, hi)) = range {
        let (min, max) = heights.iter().fold((f32::MAX, f32::MIN), |(a, b), &h| (a.min(h), b.max(h)));
        let s = if max > min { (hi - lo) / (max - min) } else { 0.0 };
        for h in &mut heights {
            *h = lo + (*h - min) * s;
        }
    }
    let cfg = SynthConfig { noise, seed: seed ^ 0x5eed, ..Default::default() };
    let values = buckets::buckets(&heights, size, size, &cfg);
    Frame { ty: HostType::U8, c: 16, h: size, w: size, bytes: buckets::quantize_u8(&values), truth: Some(heights) }
}

/// Validation: height RMSE of the model (eval-mode BatchNorm) and of the classical solver.
#[derive(Clone, Copy, Debug)]
pub struct Validation {
    pub step: usize,
    pub rmse: f64,
    /// The classical solver with its default search range (±100 µm).
    pub classical_rmse: f64,
    /// The classical solver searching only the synthetic frames' height range (the prior the
    /// network was trained with), when one is set.
    pub classical_range_rmse: Option<f64>,
    /// Residual training: the model's and the robust classical solver's figures (`rmse` and
    /// `classical_rmse` are their RMSEs over the pixels each solved; the same pixels, as the
    /// model is NaN exactly where its classical part is).
    pub residual: Option<(residual::Figures, residual::Figures)>,
}

/// What a training run did.
pub struct Report {
    pub device: Device,
    /// The trained weights.
    pub output: PathBuf,
    pub steps: usize,
    pub seconds_per_step: f64,
    pub first_loss: f32,
    pub last_loss: f32,
    pub validations: Vec<Validation>,
    /// GPU bytes of the training step, by role (fixed for the run).
    pub memory: MemoryUse,
    pub precision: Precision,
    pub skipped_steps: usize,
    /// The loss used (`Auto` resolved).
    pub loss: LossChoice,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.memory;
        write!(
            f,
            "trained {} steps on {} ({}, {} loss): {:.3} s/step, loss {:.4} -> {:.4}, {} skipped (overflow), ",
            self.steps,
            self.device,
            self.precision,
            format!("{:?}", self.loss).to_lowercase(),
            self.seconds_per_step,
            self.first_loss,
            self.last_loss,
            self.skipped_steps,
        )?;
        writeln!(
            f,
            "GPU {:.1} MiB per step (activations {:.1}, their gradients {:.1}, parameters + Adam {:.1}, scratch {:.1})",
            mib(m.total()),
            mib(m.activations),
            mib(m.gradients),
            mib(m.parameters),
            mib(m.scratch)
        )?;
        for v in &self.validations {
            if let Some((m, c)) = v.residual {
                let pct = |x: f64| 100.0 * x;
                writeln!(
                    f,
                    "validation at step {}: residual model RMSE {:.4} µm, {:.2} % off by > 1 µm, {:.2} % NaN \
                     (robust classical solver on the same frames: RMSE {:.4} µm, {:.2} % off by > 1 µm, {:.2} % NaN)",
                    v.step,
                    m.rmse,
                    pct(m.off),
                    pct(m.invalid),
                    c.rmse,
                    pct(c.off),
                    pct(c.invalid)
                )?;
                continue;
            }
            let restricted = match v.classical_range_rmse {
                Some(c) => format!("; searching only the training height range: {c:.4} µm"),
                None => String::new(),
            };
            writeln!(
                f,
                "validation at step {}: height RMSE {:.4} µm (classical solver on the same frames: {:.4} µm{restricted})",
                v.step, v.rmse, v.classical_rmse
            )?;
        }
        write!(f, "wrote {}", self.output.display())
    }
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64).sqrt()
}

/// Height RMSE of `weights` (eval mode) and of the classical solver (with each configuration in
/// `classical`) on `frames`, each frame run in memory as one tile.
fn validate(
    gpu: &Gpu,
    weights: &Weights,
    frames: &[Frame],
    scale: f32,
    classical: &[ClassicalConfig],
) -> Result<(f64, Vec<f64>)> {
    let model = Model::UNet(UNet::new(gpu, weights, Precision::F32)?);
    let solvers =
        classical.iter().map(|c| Ok(Model::Classical(Classical::new(gpu, c.clone())?))).collect::<Result<Vec<_>>>()?;
    // Squared error of the height map (the first output channel) of `model` on `f`.
    let squared_error = |model: &Model, f: &Frame, scale: f32| -> Result<f64> {
        let truth = f.truth.as_ref().expect("validation frames are synthetic");
        let (out, _) =
            region::run_raw(gpu, model, f.ty, [f.c, f.h, f.w], &f.bytes, Some(scale))?.into_raw_vec_and_offset();
        Ok(rmse(&out[..f.h * f.w], truth).powi(2) * (f.h * f.w) as f64)
    };
    let (mut se, mut se_c, mut n) = (0.0, vec![0.0; solvers.len()], 0usize);
    for f in frames {
        se += squared_error(&model, f, scale)?;
        for (solver, acc) in solvers.iter().zip(&mut se_c) {
            *acc += squared_error(solver, f, 1.0)?;
        }
        n += f.h * f.w;
    }
    Ok(((se / n as f64).sqrt(), se_c.iter().map(|s| (s / n as f64).sqrt()).collect()))
}

fn check_options(opts: &Options) -> Result<()> {
    if opts.batch == 0 || opts.grad_accum == 0 {
        return Err(Error::Invalid("--batch and --grad-accum must be at least 1".into()));
    }
    let refuse = |message: &str| Err(Error::Invalid(message.into()));
    match opts.epochs {
        Some(0) => return refuse("--epochs 0 trains nothing: give at least 1"),
        None if opts.steps == 0 => return refuse("--steps 0 trains nothing: give at least 1"),
        _ => {}
    }
    if opts.frames.is_empty() && opts.synthetic == 0 {
        return refuse("--synthetic 0 without --frames leaves no training frame");
    }
    if opts.frames.is_empty() && !opts.truth.is_empty() {
        return refuse("--truth gives the truth of --frames, and there are none");
    }
    if opts.resume.is_some() && opts.init.is_some() {
        return refuse("--resume continues a checkpoint and --init starts from weights: give one of them");
    }
    if opts.validate_every > 0 && opts.validation == 0 {
        return refuse("--validate-every needs validation frames (--validation 0 gives none)");
    }
    if opts.residual && opts.loss == LossChoice::Physics {
        return refuse("--residual trains on the truth: --loss physics cannot be used with it");
    }
    if !(0.0..=1.0).contains(&opts.relative_loss) {
        return Err(Error::Invalid(format!("--relative-loss {}: expected a power in [0, 1]", opts.relative_loss)));
    }
    let quarter = crate::psi::PsiConfig::default().wavelengths[0] / 8.0;
    if opts.residual && !(opts.bound.is_finite() && opts.bound > 0.0 && opts.bound < quarter) {
        return Err(Error::Invalid(format!(
            "--bound {}: expected a positive number of µm under a quarter fringe of the first laser ({quarter} µm)",
            opts.bound
        )));
    }
    if let Some((lo, hi)) = opts.height_range
        && !(lo.is_finite() && hi.is_finite() && lo < hi)
    {
        return Err(Error::Invalid(format!("--height-range {lo},{hi}: expected LO,HI with LO < HI")));
    }
    Ok(())
}

/// The files (see [`Files`]). The checkpoint may be the one resumed: it is read whole before
/// the first save, and its successor replaces it atomically.
fn check_files(opts: &Options) -> Result<()> {
    let checkpoint = (opts.checkpoint_every > 0).then(|| checkpoint_path(&opts.output));
    let resumed = opts.resume.iter().filter(|r| checkpoint.as_ref().is_none_or(|c| !same_file(r, c)));
    Files::new()
        .inputs("--init", &opts.init)
        .inputs("--resume", resumed)
        .inputs_in_folders("--frames", &opts.frames, crate::commands::outputs::FRAME_FILES)
        .inputs("--truth", &opts.truth)
        .outputs("the output (-o)", [&opts.output])
        .outputs("the checkpoint", &checkpoint)
        .outputs("--history", &opts.history)
        .check()
}

/// Where `--checkpoint-every` saves: OUTPUT.ckpt.safetensors.
fn checkpoint_path(output: &Path) -> PathBuf {
    output.with_extension("ckpt.safetensors")
}

/// The weights to start from: `resume` > `init` > fresh He-initialised ones; with the optimizer
/// state and `num_batches_tracked` a checkpoint carries.
fn starting_weights(opts: &Options) -> Result<(Weights, Option<OptimizerState>, i64)> {
    match (&opts.resume, &opts.init) {
        (Some(p), _) | (None, Some(p)) => checkpoint::load(p),
        (None, None) if opts.residual => Ok((residual::fresh_weights(16, opts.base, opts.bound, opts.seed), None, 0)),
        (None, None) => Ok((to_weights(&he_init(16, 1, opts.base, opts.seed), NO_METADATA), None, 0)),
    }
}

/// The training frames (files, or synthetic ones) and the held-out synthetic validation frames.
fn frame_sets(opts: &Options) -> Result<(Vec<Frame>, Vec<Frame>)> {
    let synthetic = |seed: u64| match opts.residual {
        true => residual::generated_frame(seed, opts.synthetic_size, opts.noise),
        false => synthetic_frame(seed, opts.synthetic_size, opts.noise, opts.height_range),
    };
    let frames = if opts.frames.is_empty() {
        (0..opts.synthetic.max(1)).map(|i| synthetic(opts.seed * 1_000_003 + i as u64)).collect()
    } else {
        load_frames(&opts.frames, &opts.truth)?
    };
    let validation = (0..opts.validation).map(|i| synthetic(u64::MAX - opts.seed * 7919 - i as u64)).collect();
    Ok((frames, validation))
}

/// `Auto` resolved: supervised when every frame has a truth map.
fn resolve_loss(choice: &LossChoice, frames: &[Frame]) -> Result<LossChoice> {
    let all_truth = frames.iter().all(|f| f.truth.is_some());
    let loss = match choice {
        LossChoice::Auto if all_truth => LossChoice::Supervised,
        LossChoice::Auto => LossChoice::Physics,
        l => l.clone(),
    };
    if loss == LossChoice::Supervised && !all_truth {
        return Err(Error::Invalid("--loss supervised needs --truth for every frame (or synthetic frames)".into()));
    }
    Ok(loss)
}

/// The crop size: `patch` x `patch`, or the frames' one size with `patch` 0.
fn patch_size(patch: usize, frames: &[Frame]) -> Result<(usize, usize)> {
    if patch == 0 {
        let (h, w) = (frames[0].h, frames[0].w);
        if frames.iter().any(|f| (f.h, f.w) != (h, w)) {
            return Err(Error::Invalid("--patch 0 (whole frames) needs frames of one size".into()));
        }
        return Ok((h, w));
    }
    if frames.iter().any(|f| f.h < patch || f.w < patch) {
        return Err(Error::Invalid(format!("--patch {patch} is larger than a training frame")));
    }
    Ok((patch, patch))
}

/// The loss history CSV, written atomically: complete when the run ends, absent if it fails.
/// Residual training adds the validation figures of the steps that validate (empty elsewhere).
struct History(AtomicFile);

/// The residual history's validation columns.
const RESIDUAL_COLUMNS: &str =
    ",val_rmse,val_off,val_invalid,val_classical_rmse,val_classical_off,val_classical_invalid";

impl History {
    fn create(path: &Path, residual: bool) -> Result<History> {
        let mut h = History(AtomicFile::create(path)?);
        let extra = if residual { RESIDUAL_COLUMNS } else { "" };
        h.line(format_args!("step,lr,loss,data,smoothness,scale,applied{extra}"))?;
        Ok(h)
    }

    /// The residual columns of a step that validated (`v`) or not.
    fn residual_fields(v: Option<&Validation>) -> String {
        match v.and_then(|v| v.residual) {
            Some((m, c)) => format!(",{},{},{},{},{},{}", m.rmse, m.off, m.invalid, c.rmse, c.off, c.invalid),
            None => ",,,,,,".into(),
        }
    }

    fn line(&mut self, text: fmt::Arguments) -> Result<()> {
        let path = self.0.path().to_path_buf();
        writeln!(self.0.writer()?, "{text}").map_err(|e| Error::io(path, e))
    }
}

/// The U-Net's trainer, alone or inside the residual model's.
#[allow(clippy::large_enum_variant)] // one trainer per run
enum Trainer {
    Plain(UNetTrainer),
    Residual(ResidualTrainer),
}

impl Trainer {
    fn unet(&self) -> &UNetTrainer {
        match self {
            Trainer::Plain(t) => t,
            Trainer::Residual(r) => &r.trainer,
        }
    }

    fn unet_mut(&mut self) -> &mut UNetTrainer {
        match self {
            Trainer::Plain(t) => t,
            Trainer::Residual(r) => &mut r.trainer,
        }
    }

    /// Upload a batch of raw frames (and their truth when the loss reads it; the residual loss
    /// weighs its crops by it too).
    fn set_batch(&mut self, gpu: &Gpu, ty: HostType, bytes: &[u8], truth: Option<&[f32]>) -> Result<()> {
        match self {
            Trainer::Plain(t) => t.set_frames(gpu, ty, bytes)?,
            Trainer::Residual(r) => r.set_frames(gpu, ty, bytes)?,
        }
        let Some(truth) = truth else { return Ok(()) };
        self.unet_mut().set_truth(gpu, truth)?;
        match self {
            Trainer::Residual(r) => r.weigh(gpu, truth),
            Trainer::Plain(_) => Ok(()),
        }
    }

    /// The residual metadata (model kind, features, bound), none for a plain U-Net.
    fn metadata(&self) -> Vec<(String, String)> {
        match self {
            Trainer::Plain(_) => Vec::new(),
            Trainer::Residual(r) => residual::metadata(&r.features, r.bound).to_vec(),
        }
    }
}

/// A training run: the data, the trainer and what is fixed for the whole run.
struct Session<'a> {
    gpu: &'a Gpu,
    opts: &'a Options,
    frames: Vec<Frame>,
    validation: Vec<Frame>,
    ty: HostType,
    patch: (usize, usize),
    loss: LossChoice,
    input_scale: f32,
    precision: Precision,
    base: usize,
    /// `num_batches_tracked` of the starting weights.
    nbt: i64,
    /// The classical solvers validation compares with.
    classical: Vec<ClassicalConfig>,
    trainer: Trainer,
    /// Scratch for one micro-batch's crops and their truth.
    bytes: Vec<u8>,
    truth: Vec<f32>,
}

impl<'a> Session<'a> {
    /// Check the options and the data, build the trainer; also returns the step to start from.
    fn new(gpu: &'a Gpu, opts: &'a Options) -> Result<(Session<'a>, usize)> {
        let (weights, optim, nbt) = starting_weights(opts)?;
        let config = UNet::config(&weights)?;
        let precision = gpu.resolve_precision(opts.precision)?;
        let (frames, validation) = frame_sets(opts)?;
        let ty = frames[0].ty;
        if opts.residual && !is_residual(&weights) {
            return Err(Error::Invalid(format!(
                "--residual trains a residual model, and the weights given are a plain U-Net (no {MODEL_KEY} = \
                 {MODEL_NAME} in their metadata)"
            )));
        }
        // The residual model's U-Net reads the buckets and then its features.
        let features = if opts.residual { residual_spec(&weights)?.0.len() } else { 0 };
        let channels = config.n_channels.saturating_sub(features);
        if frames.iter().any(|f| f.ty != ty || f.c != channels) {
            return Err(Error::Invalid(format!(
                "training frames must all be {} with {channels} channels (the model's input)",
                ty.name()
            )));
        }
        let loss = resolve_loss(if opts.residual { &LossChoice::Supervised } else { &opts.loss }, &frames)?;
        let patch = patch_size(opts.patch, &frames)?;
        let input_scale = region::input_scale(opts.input_scale, weights.metadata_f32("input_scale")?, ty);
        let kind = match loss {
            LossChoice::Supervised => LossKind::Mse,
            _ => LossKind::Physics(PhysicsConfig { smoothness: opts.smoothness, ..Default::default() }),
        };
        let adam =
            AdamConfig { lr: opts.lr, weight_decay: opts.weight_decay, max_grad_norm: opts.clip, ..Default::default() };
        let loss_scaling = precision == Precision::F16;
        let tcfg = TrainConfig { loss: kind, adam, input_scale, precision, loss_scaling, frozen_bn: false };
        let mut trainer = if opts.residual {
            let classical = residual::classical_config(ty, input_scale)?;
            let mut r = ResidualTrainer::new(gpu, &weights, classical, [opts.batch, patch.0, patch.1], tcfg)?;
            r.relative_loss = opts.relative_loss;
            Trainer::Residual(r)
        } else {
            Trainer::Plain(UNetTrainer::new(gpu, &weights, opts.batch, patch.0, patch.1, tcfg)?)
        };
        if let Some(o) = &optim {
            trainer.unet_mut().restore_optimizer(gpu, o)?;
        }
        // Steps taken so far: the checkpoint's loop count (skipped f16 steps included), not Adam's.
        let start_step = match (&optim, weights.metadata.get("steps")) {
            (Some(_), Some(s)) => s.parse().unwrap_or(0),
            (Some(o), None) => o.step as usize,
            (None, _) => 0,
        };
        // The classical solver as it is, and searching only the synthetic height range (the
        // network's prior; 0.1 µm margins so that noise at the range's ends still finds its
        // fringe order).
        let mut classical = vec![ClassicalConfig::default()];
        if let (Some((lo, hi)), true, false) = (opts.height_range, opts.frames.is_empty(), opts.residual) {
            classical.push(ClassicalConfig { height_range: (lo - 0.1, hi + 0.1), ..Default::default() });
        }
        let (bytes, truth) = (Vec::new(), Vec::new());
        let base = config.base;
        let s = Session {
            gpu,
            opts,
            frames,
            validation,
            ty,
            patch,
            loss,
            input_scale,
            precision,
            base,
            nbt,
            classical,
            trainer,
            bytes,
            truth,
        };
        Ok((s, start_step))
    }

    /// Total steps: `steps`, or `epochs` passes over the frames.
    fn steps(&self) -> usize {
        let o = self.opts;
        match o.epochs {
            Some(e) => e * self.frames.len().div_ceil(o.batch * o.grad_accum),
            None => o.steps,
        }
    }

    /// One optimizer step over `grad_accum` micro-batches of random crops: the mean (loss, data,
    /// smoothness), the learning rate and Adam's report.
    fn step(&mut self, step: usize) -> Result<((f32, f32, f32), f64, StepReport)> {
        let (gpu, opts, (ph, pw)) = (self.gpu, self.opts, self.patch);
        // Crops depend only on (seed, step): a resumed run sees the batches it would have seen.
        let mut rng = Rng::new(opts.seed ^ 0xC0FFEE ^ (step as u64 + 1).wrapping_mul(0x9E3779B97F4A7C15));
        self.trainer.unet().zero_grad(gpu);
        let mut sum = (0f32, 0f32, 0f32);
        for _ in 0..opts.grad_accum {
            self.bytes.clear();
            self.truth.clear();
            for _ in 0..opts.batch {
                let f = &self.frames[rng.below(self.frames.len())];
                let (y0, x0) = (rng.below(f.h - ph + 1), rng.below(f.w - pw + 1));
                f.crop(y0, x0, ph, pw, &mut self.bytes);
                if let Some(t) = &f.truth {
                    for y in y0..y0 + ph {
                        self.truth.extend_from_slice(&t[y * f.w + x0..y * f.w + x0 + pw]);
                    }
                }
            }
            let truth = (self.loss == LossChoice::Supervised).then_some(self.truth.as_slice());
            self.trainer.set_batch(gpu, self.ty, &self.bytes, truth)?;
            let l = self.trainer.unet_mut().accumulate(gpu, 1.0 / opts.grad_accum as f32)?;
            sum = (sum.0 + l.total, sum.1 + l.data, sum.2 + l.smoothness);
        }
        let k = opts.grad_accum as f32;
        let lr = opts.schedule.lr(opts.lr, step);
        let report = self.trainer.unet_mut().apply(gpu, lr)?;
        Ok(((sum.0 / k, sum.1 / k, sum.2 / k), lr, report))
    }

    /// The weights' metadata after `step` steps.
    fn metadata(&self, step: usize) -> BTreeMap<String, String> {
        let o = self.opts;
        let mut m = BTreeMap::new();
        m.insert("input_scale".to_string(), format!("{}", self.input_scale));
        m.insert("base".into(), self.base.to_string());
        m.insert("loss".into(), format!("{:?}", self.loss).to_lowercase());
        m.insert("smoothness".into(), o.smoothness.to_string());
        m.insert("lr".into(), o.lr.to_string());
        m.insert("steps".into(), step.to_string());
        m.insert("batch".into(), o.batch.to_string());
        m.insert("patch".into(), o.patch.to_string());
        m.insert("precision".into(), self.precision.to_string());
        if let (Some((lo, hi)), false) = (o.height_range, o.residual) {
            m.insert("height_range".into(), format!("{lo},{hi}"));
        }
        m.extend(self.trainer.metadata());
        m.insert("trained_by".into(), format!("psi-gpu {}", env!("CARGO_PKG_VERSION")));
        m
    }

    /// Save the weights after `step` steps (with the optimizer state: a resumable checkpoint);
    /// a non-finite state stops the run ([`Stop::diverged`]) and leaves `path` as it was.
    fn save(&self, path: &Path, step: usize, with_optimizer: bool, stop: &Stop) -> Result<()> {
        let gpu = self.gpu;
        let trainer = self.trainer.unet();
        let optimizer = if with_optimizer { Some(trainer.optimizer_state(gpu)?) } else { None };
        let ck = Checkpoint {
            tensors: trainer.state_dict(gpu)?,
            num_batches_tracked: self.nbt + trainer.batches() as i64,
            metadata: self.metadata(step),
            optimizer,
        };
        ck.check_finite().map_err(|what| stop.diverged(step, &what))?;
        checkpoint::save(path, &ck)
    }

    fn validate(&self, step: usize, stop: &Stop) -> Result<Validation> {
        let state = self.trainer.unet().state_dict(self.gpu)?;
        for (name, _, data) in &state {
            check_finite(name, data).map_err(|what| stop.diverged(step, &what))?;
        }
        if let Trainer::Residual(_) = self.trainer {
            let meta = self.trainer.metadata();
            let (m, c) = residual::validate(self.gpu, &state, &meta, &self.validation, self.input_scale)?;
            let (rmse, classical_rmse) = (m.rmse, c.rmse);
            return Ok(Validation { step, rmse, classical_rmse, classical_range_rmse: None, residual: Some((m, c)) });
        }
        let w = to_weights(&state, NO_METADATA);
        let (rmse, c) = validate(self.gpu, &w, &self.validation, self.input_scale, &self.classical)?;
        Ok(Validation { step, rmse, classical_rmse: c[0], classical_range_rmse: c.get(1).copied(), residual: None })
    }
}

/// What a run that stops early leaves behind: the output is not written, the last checkpoint
/// (the step it holds, when this run wrote it) is kept.
struct Stop<'a> {
    opts: &'a Options,
    checkpoint: PathBuf,
    checkpoint_step: Option<usize>,
}

impl Stop<'_> {
    /// The one-line error for a loss or state that went non-finite (`what`) at `step`.
    fn diverged(&self, step: usize, what: &str) -> Error {
        let kept = match self.checkpoint_step {
            Some(s) => format!("; the last good checkpoint {} (step {s}) is kept", self.checkpoint.display()),
            None => String::new(),
        };
        Error::Invalid(format!(
            "training diverged at step {step}: {what}; stopped without writing {}{kept} — lower --lr (now {:e}) or \
             check the training frames for NaN/Inf",
            self.opts.output.display(),
            self.opts.lr
        ))
    }
}

/// Train; `progress(step, steps, (loss, data, smoothness), lr)` is called after every step. A
/// loss or parameter that goes NaN/±Inf stops the run with an error: nothing non-finite is ever
/// saved, and the last good checkpoint stays as it was.
pub fn run(gpu: &Gpu, opts: &Options, mut progress: impl FnMut(usize, usize, (f32, f32, f32), f32)) -> Result<Report> {
    check_options(opts)?;
    check_files(opts)?;
    let (mut session, start_step) = Session::new(gpu, opts)?;
    let steps = session.steps();
    let mut history = opts.history.as_deref().map(|p| History::create(p, opts.residual)).transpose()?;
    let mut validations = Vec::new();
    let (mut first_loss, mut last_loss, mut skipped) = (f32::NAN, f32::NAN, 0);
    let t0 = Instant::now();
    let mut final_validation = std::time::Duration::ZERO;
    let checkpoint = checkpoint_path(&opts.output);
    let mut stop = Stop { opts, checkpoint: checkpoint.clone(), checkpoint_step: None };
    for step in start_step..steps {
        crate::error::interrupt::check()?;
        let (loss, lr, report) = session.step(step)?;
        if !loss.0.is_finite() {
            return Err(stop.diverged(step + 1, &format!("the loss is {}", loss.0)));
        }
        skipped += !report.applied as usize;
        if first_loss.is_nan() {
            first_loss = loss.0;
        }
        last_loss = loss.0;
        let n = step + 1;
        let last = n == steps && opts.validation > 0;
        let tv = Instant::now();
        let validation = match (opts.validate_every > 0 && n % opts.validate_every == 0) || last {
            true => Some(session.validate(n, &stop)?),
            false => None,
        };
        // The time per step leaves out the final validation.
        if last {
            final_validation = tv.elapsed();
        }
        if let Some(h) = history.as_mut() {
            let (scale, applied) = (report.scale, report.applied);
            let extra = if opts.residual { History::residual_fields(validation.as_ref()) } else { String::new() };
            h.line(format_args!("{n},{lr},{},{},{},{scale},{applied}{extra}", loss.0, loss.1, loss.2))?;
        }
        progress(n, steps, loss, lr as f32);
        if opts.checkpoint_every > 0 && n % opts.checkpoint_every == 0 {
            session.save(&checkpoint, n, true, &stop)?;
            stop.checkpoint_step = Some(n);
        }
        validations.extend(validation);
    }
    let trained = steps.saturating_sub(start_step);
    let seconds_per_step = (t0.elapsed() - final_validation).as_secs_f64() / trained.max(1) as f64;
    if trained == 0 && opts.validation > 0 {
        validations.push(session.validate(steps, &stop)?);
    }
    session.save(&opts.output, steps, false, &stop)?;
    if let Some(h) = history {
        h.0.commit()?;
    }
    Ok(Report {
        device: Device::of(gpu),
        output: opts.output.clone(),
        steps: trained,
        seconds_per_step,
        first_loss,
        last_loss,
        validations,
        memory: session.trainer.unet().memory(),
        precision: session.precision,
        skipped_steps: skipped,
        loss: session.loss,
    })
}
