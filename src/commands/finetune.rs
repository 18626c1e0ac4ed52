//! `psi-gpu finetune`: adapt a trained U-Net to frames without truth by minimising the physics
//! loss with L-BFGS (CPU, f32) over a chosen subset of its parameters.
//!
//! The model runs in eval mode (BatchNorm with its running statistics, left unchanged), so the
//! loss minimised is exactly the one `infer` sees. The objective is deterministic: a fixed set of
//! crops (or whole frames) chosen once from `seed`, evaluated in micro-batches whose gradients
//! accumulate on the GPU; each L-BFGS closure writes the selected parameters, runs forward and
//! backward over every micro-batch and reads their gradients back (only the selected tensors
//! travel between host and GPU).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use crate::commands::Device;
use crate::commands::outputs::Files;
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::io::checkpoint::{self, Checkpoint};
use crate::io::frames::{Frame, load_frames};
use crate::io::weights::Weights;
use crate::nn::unet::UNet;
use crate::nn::unet::train::{TrainConfig, UNetTrainer};
use crate::ops::loss::{LossKind, PhysicsConfig};
use crate::optim::lbfgs::{Lbfgs, LbfgsConfig, LineSearch};
use crate::optim::{AdamConfig, ParamEntry};
use crate::rng::Rng;
use crate::tiling::region;

/// Which parameters L-BFGS changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layers {
    /// The last decoder block and the output convolution (`up4.*`, `outc.*`).
    Head,
    /// Every parameter.
    All,
    /// Parameters whose state_dict names start with one of these prefixes.
    Prefixes(Vec<String>),
}

impl Layers {
    fn selects(&self, name: &str) -> bool {
        match self {
            Layers::Head => name.starts_with("up4.") || name.starts_with("outc."),
            Layers::All => true,
            Layers::Prefixes(p) => p.iter().any(|p| name.starts_with(p.as_str())),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The pretrained U-Net (safetensors state_dict or psi-gpu checkpoint).
    pub weights: PathBuf,
    /// Frames to adapt to: `(C, H, W)` npy files or folders of them.
    pub frames: Vec<PathBuf>,
    /// Frames only reported on (the loss before and after), never optimised on.
    pub holdout: Vec<PathBuf>,
    pub output: PathBuf,
    pub layers: Layers,
    /// `patch` x `patch` crops, `crops` per frame at positions drawn once from `seed`; 0 = whole
    /// frames (which must then share one size).
    pub patch: usize,
    pub crops: usize,
    /// Crops per GPU micro-batch (reduced to a divisor of the crop count).
    pub batch: usize,
    /// L-BFGS iterations (closure evaluations are limited to 5/4 of that).
    pub iterations: usize,
    /// Curvature pairs; `None`: 100, or fewer if `memory_mib` cannot hold them.
    pub history: Option<usize>,
    /// Host memory for the L-BFGS history (each pair holds two vectors of the selected parameters).
    pub memory_mib: usize,
    pub smoothness: f32,
    /// Estimate A and B per pixel and laser from the frame instead of A = 128, B = 100.
    pub per_pixel_ab: bool,
    /// Model input = frame × this; default: the weights' `input_scale` metadata, else the dtype's.
    pub input_scale: Option<f32>,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            weights: PathBuf::new(),
            frames: vec![],
            holdout: vec![],
            output: PathBuf::from("finetuned.safetensors"),
            layers: Layers::Head,
            patch: 64,
            crops: 4,
            batch: 4,
            iterations: 50,
            history: None,
            memory_mib: 1024,
            smoothness: 1e-4,
            per_pixel_ab: false,
            input_scale: None,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub device: Device,
    /// The fine-tuned weights.
    pub output: PathBuf,
    /// Parameters L-BFGS changed, of all the model has.
    pub selected: usize,
    pub total: usize,
    pub history: usize,
    /// Physics loss (mean over the crops) before and after, on the fine-tuning crops.
    pub loss_before: f32,
    pub loss_after: f32,
    /// The same on the held-out crops, if any.
    pub holdout: Option<(f32, f32)>,
    pub crops: usize,
    pub patch: [usize; 2],
    pub iterations: usize,
    pub evaluations: usize,
    pub seconds: f64,
    /// Bytes of every GPU buffer the trainer allocated.
    pub gpu_bytes: u64,
}

/// The fixed crop set: (frame, y0, x0) per crop.
fn crop_set(frames: &[Frame], patch: [usize; 2], crops: usize, seed: u64) -> Vec<(usize, usize, usize)> {
    let mut rng = Rng::new(seed ^ 0xF1_4E7E);
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if (f.h, f.w) == (patch[0], patch[1]) {
            out.push((i, 0, 0));
            continue;
        }
        for _ in 0..crops {
            out.push((i, rng.below(f.h - patch[0] + 1), rng.below(f.w - patch[1] + 1)));
        }
    }
    out
}

/// A fixed crop set cut into micro-batches once: the raw bytes of each, ready to upload.
struct Batches {
    ty: HostType,
    bytes: Vec<Vec<u8>>,
}

impl Batches {
    fn new(frames: &[Frame], set: &[(usize, usize, usize)], batch: usize, [ph, pw]: [usize; 2]) -> Batches {
        let ty = frames.first().map_or(HostType::U8, |f| f.ty);
        let bytes = set
            .chunks(batch)
            .map(|chunk| {
                let mut b = Vec::new();
                for &(i, y0, x0) in chunk {
                    frames[i].crop(y0, x0, ph, pw, &mut b);
                }
                b
            })
            .collect();
        Batches { ty, bytes }
    }
}

/// Physics loss (and accumulated gradients) of the trainer's current parameters over `batches`.
/// `resident` says which batch the trainer holds (set id, index): a one-batch set is uploaded once.
fn evaluate(
    gpu: &Gpu,
    trainer: &mut UNetTrainer,
    batches: &Batches,
    id: usize,
    resident: &mut Option<(usize, usize)>,
) -> Result<f32> {
    let micro = batches.bytes.len();
    trainer.zero_grad(gpu);
    let mut total = 0.0;
    for (k, bytes) in batches.bytes.iter().enumerate() {
        if *resident != Some((id, k)) {
            trainer.set_frames(gpu, batches.ty, bytes)?;
            *resident = Some((id, k));
        }
        total += trainer.accumulate(gpu, 1.0 / micro as f32)?.total;
    }
    Ok(total / micro as f32)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The largest divisor of `n` that is at most `batch`.
fn micro_batch(n: usize, batch: usize) -> usize {
    (1..=batch.min(n)).rev().find(|b| n.is_multiple_of(*b)).unwrap_or(1)
}

fn check_frames(frames: &[Frame], channels: usize, ty: HostType, patch: [usize; 2], what: &str) -> Result<()> {
    for f in frames {
        if f.c != channels || f.ty != ty {
            return Err(Error::Invalid(format!(
                "{what} must be {} frames with {channels} channels (the model's input); got {} with {}",
                ty.name(),
                f.ty.name(),
                f.c
            )));
        }
        if f.h < patch[0] || f.w < patch[1] {
            return Err(Error::Invalid(format!(
                "{what}: a {} x {} frame is smaller than the {} x {} patch",
                f.h, f.w, patch[0], patch[1]
            )));
        }
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [ph, pw] = self.patch;
        writeln!(
            f,
            "finetuned {} of {} parameters on {} ({} crops of {ph} x {pw}, eval-mode BatchNorm, f32): physics loss {:.4} -> {:.4}",
            self.selected, self.total, self.device, self.crops, self.loss_before, self.loss_after
        )?;
        if let Some((before, after)) = self.holdout {
            writeln!(f, "held-out frames: physics loss {before:.4} -> {after:.4}")?;
        }
        let gpu_mib = self.gpu_bytes as f64 / 1048576.0;
        writeln!(
            f,
            "L-BFGS: {} iterations, {} evaluations, history {}, {:.1} s; GPU {gpu_mib:.1} MiB",
            self.iterations, self.evaluations, self.history, self.seconds
        )?;
        write!(f, "wrote {}", self.output.display())
    }
}

/// The crop size: `patch` x `patch`, or with `patch` 0 the one size of every frame.
fn patch_size(patch: usize, frames: &[Frame], holdout: &[Frame]) -> Result<[usize; 2]> {
    if patch > 0 {
        return Ok([patch, patch]);
    }
    let (h, w) = (frames[0].h, frames[0].w);
    if frames.iter().chain(holdout).any(|f| (f.h, f.w) != (h, w)) {
        return Err(Error::Invalid("--patch 0 (whole frames) needs frames of one size".into()));
    }
    Ok([h, w])
}

/// The parameters `layers` selects, and the model's parameter count.
fn select(trainer: &UNetTrainer, layers: &Layers) -> Result<(Vec<ParamEntry>, usize)> {
    let all = trainer.layout().entries();
    let entries: Vec<ParamEntry> = all.iter().filter(|e| layers.selects(&e.name)).cloned().collect();
    if entries.is_empty() {
        return Err(Error::Invalid(format!("--layers {layers:?} selects no parameter of the model")));
    }
    Ok((entries, all.iter().map(|e| e.len).sum()))
}

/// Curvature pairs kept: the requested number (default 100), at most what `memory_mib` holds.
fn history_size(opts: &Options, selected: usize) -> Result<usize> {
    let fits = (opts.memory_mib << 20) / (8 * selected).max(1);
    let history = opts.history.unwrap_or(100).min(fits);
    if history == 0 {
        return Err(Error::Invalid(format!(
            "--lbfgs-memory {} MiB holds no L-BFGS pair for {selected} parameters (needs {:.1} MiB each)",
            opts.memory_mib,
            (8 * selected) as f64 / 1048576.0
        )));
    }
    Ok(history)
}

/// The frames and their fixed crop sets, cut into micro-batches.
struct Data {
    train: Batches,
    holdout: Option<Batches>,
    crops: usize,
    patch: [usize; 2],
    batch: usize,
}

impl Data {
    fn load(opts: &Options, channels: usize) -> Result<Data> {
        let frames = load_frames(&opts.frames, &[])?;
        let holdout = if opts.holdout.is_empty() { vec![] } else { load_frames(&opts.holdout, &[])? };
        let ty = frames[0].ty;
        let patch = patch_size(opts.patch, &frames, &holdout)?;
        check_frames(&frames, channels, ty, patch, "fine-tuning frames")?;
        check_frames(&holdout, channels, ty, patch, "held-out frames")?;
        let set = crop_set(&frames, patch, opts.crops, opts.seed);
        let hold_set = crop_set(&holdout, patch, opts.crops, opts.seed ^ 0x4015);
        // One micro-batch size (the trainer's) that divides both crop sets.
        let batch = micro_batch(gcd(set.len(), hold_set.len()), opts.batch);
        let train = Batches::new(&frames, &set, batch, patch);
        let holdout = (!hold_set.is_empty()).then(|| Batches::new(&holdout, &hold_set, batch, patch));
        Ok(Data { train, holdout, crops: set.len(), patch, batch })
    }
}

/// The trainer in eval mode on the physics loss, at the data's micro-batch and patch size.
fn eval_mode_trainer(
    gpu: &Gpu,
    weights: &Weights,
    opts: &Options,
    data: &Data,
    input_scale: f32,
) -> Result<UNetTrainer> {
    let physics = PhysicsConfig { smoothness: opts.smoothness, per_pixel_ab: opts.per_pixel_ab, ..Default::default() };
    let tcfg = TrainConfig {
        loss: LossKind::Physics(physics),
        adam: AdamConfig::default(),
        input_scale,
        precision: Precision::F32,
        loss_scaling: false,
        frozen_bn: true,
    };
    UNetTrainer::new(gpu, weights, data.batch, data.patch[0], data.patch[1], tcfg)
}

/// The physics loss on the held-out crops, if there are any.
fn holdout_loss(
    gpu: &Gpu,
    trainer: &mut UNetTrainer,
    data: &Data,
    resident: &mut Option<(usize, usize)>,
) -> Result<Option<f32>> {
    data.holdout.as_ref().map(|h| evaluate(gpu, trainer, h, 1, resident)).transpose()
}

/// Fine-tune; `progress(evaluations, loss)` is called after every closure evaluation.
pub fn run(gpu: &Gpu, opts: &Options, mut progress: impl FnMut(usize, f32)) -> Result<Report> {
    if opts.batch == 0 || opts.crops == 0 || opts.iterations == 0 {
        return Err(Error::Invalid("--batch, --crops and --iterations must be at least 1".into()));
    }
    Files::new()
        .inputs("--weights", [&opts.weights])
        .inputs_in_folders("--frames", &opts.frames, crate::commands::outputs::FRAME_FILES)
        .inputs_in_folders("--holdout", &opts.holdout, crate::commands::outputs::FRAME_FILES)
        .outputs("the output (-o)", [&opts.output])
        .check()?;
    let (weights, _, nbt) = checkpoint::load(&opts.weights)?;
    let config = UNet::config(&weights)?;
    let data = Data::load(opts, config.n_channels)?;
    let input_scale = region::input_scale(opts.input_scale, weights.metadata_f32("input_scale")?, data.train.ty);
    let mut trainer = eval_mode_trainer(gpu, &weights, opts, &data, input_scale)?;
    let (entries, total) = select(&trainer, &opts.layers)?;
    let selected: usize = entries.iter().map(|e| e.len).sum();
    let history = history_size(opts, selected)?;

    let full = trainer.read_params(gpu)?;
    let mut x: Vec<f32> = entries.iter().flat_map(|e| full[e.offset..e.offset + e.len].iter().copied()).collect();
    drop(full);
    let t0 = Instant::now();
    let mut resident = None;
    let holdout_before = holdout_loss(gpu, &mut trainer, &data, &mut resident)?;
    let loss_before = evaluate(gpu, &mut trainer, &data.train, 0, &mut resident)?;
    if !loss_before.is_finite() {
        return Err(Error::Invalid(format!("the physics loss of the given weights is {loss_before}")));
    }
    let mut lbfgs = Lbfgs::new(
        LbfgsConfig {
            lr: 1.0,
            max_iter: opts.iterations,
            max_eval: Some(opts.iterations * 5 / 4),
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: history,
            line_search: LineSearch::StrongWolfe,
        },
        selected,
    )?;
    let mut best = (loss_before, x.clone());
    let mut evals = 0;
    lbfgs.step(&mut x, &mut |p: &[f32], g: &mut [f32]| -> Result<f32> {
        crate::error::interrupt::check()?;
        trainer.write_param_entries(gpu, &entries, p)?;
        let loss = evaluate(gpu, &mut trainer, &data.train, 0, &mut resident)?;
        g.copy_from_slice(&trainer.read_grad_entries(gpu, &entries)?);
        evals += 1;
        if loss < best.0 {
            best = (loss, p.to_vec());
        }
        progress(evals, loss);
        Ok(loss)
    })?;
    // Keep the best parameters evaluated (L-BFGS's last point can be a rejected trial).
    let (loss_after, x) = best;
    trainer.write_param_entries(gpu, &entries, &x)?;
    let holdout_after = holdout_loss(gpu, &mut trainer, &data, &mut resident)?;

    let mut metadata: BTreeMap<String, String> = weights.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    metadata.insert("input_scale".into(), format!("{input_scale}"));
    metadata.insert("base".into(), config.base.to_string());
    metadata.insert("finetuned".into(), format!("lbfgs {} iterations, layers {:?}", lbfgs.iterations(), opts.layers));
    metadata.insert("finetune_loss".into(), format!("{loss_before} -> {loss_after}"));
    metadata.insert("trained_by".into(), format!("psi-gpu {}", env!("CARGO_PKG_VERSION")));
    let ck = Checkpoint { tensors: trainer.state_dict(gpu)?, num_batches_tracked: nbt, metadata, optimizer: None };
    checkpoint::save(&opts.output, &ck)?;
    Ok(Report {
        device: Device::of(gpu),
        output: opts.output.clone(),
        selected,
        total,
        history,
        loss_before,
        loss_after,
        holdout: holdout_before.zip(holdout_after),
        crops: data.crops,
        patch: data.patch,
        iterations: lbfgs.iterations(),
        evaluations: lbfgs.evaluations(),
        seconds: t0.elapsed().as_secs_f64(),
        gpu_bytes: trainer.bytes(),
    })
}
