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
use std::path::PathBuf;
use std::time::Instant;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::io::checkpoint::{self, Checkpoint};
use crate::io::frames::{Frame, load_frames};
use crate::nn::unet::UNet;
use crate::nn::unet::train::{TrainConfig, UNetTrainer};
use crate::ops::loss::{LossKind, PhysicsConfig};
use crate::optim::AdamConfig;
use crate::optim::lbfgs::{Lbfgs, LbfgsConfig, LineSearch};
use crate::rng::Rng;

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
    /// `head`, `all`, or comma-separated state_dict name prefixes (`up3,up4,outc`).
    pub fn parse(s: &str) -> Option<Layers> {
        match s {
            "head" => Some(Layers::Head),
            "all" => Some(Layers::All),
            _ => {
                let p: Vec<String> = s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
                (!p.is_empty()).then_some(Layers::Prefixes(p))
            }
        }
    }

    fn selects(&self, name: &str) -> bool {
        match self {
            Layers::Head => name.starts_with("up4.") || name.starts_with("outc."),
            Layers::All => true,
            Layers::Prefixes(p) => p.iter().any(|p| name.starts_with(p.as_str())),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FinetuneOptions {
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

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
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
pub struct FinetuneReport {
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

/// Fine-tune; `progress(iteration, loss)` is called after every closure evaluation.
pub fn finetune(gpu: &Gpu, opts: &FinetuneOptions, mut progress: impl FnMut(usize, f32)) -> Result<FinetuneReport> {
    if opts.batch == 0 || opts.crops == 0 || opts.iterations == 0 {
        return Err(Error::Invalid("--batch, --crops and --iterations must be at least 1".into()));
    }
    let (weights, _, nbt) = checkpoint::load(&opts.weights)?;
    let config = UNet::config(&weights)?;
    let frames = load_frames(&opts.frames, &[])?;
    let holdout = if opts.holdout.is_empty() { vec![] } else { load_frames(&opts.holdout, &[])? };
    let ty = frames[0].ty;
    let patch = if opts.patch == 0 {
        let (h, w) = (frames[0].h, frames[0].w);
        if frames.iter().chain(&holdout).any(|f| (f.h, f.w) != (h, w)) {
            return Err(Error::Invalid("--patch 0 (whole frames) needs frames of one size".into()));
        }
        [h, w]
    } else {
        [opts.patch, opts.patch]
    };
    check_frames(&frames, config.n_channels, ty, patch, "fine-tuning frames")?;
    check_frames(&holdout, config.n_channels, ty, patch, "held-out frames")?;
    let set = crop_set(&frames, patch, opts.crops, opts.seed);
    let hold_set = crop_set(&holdout, patch, opts.crops, opts.seed ^ 0x4015);
    // One micro-batch size (the trainer's) that divides both crop sets.
    let batch = micro_batch(gcd(set.len(), hold_set.len()), opts.batch);

    let input_scale = opts.input_scale.or(weights.metadata_f32("input_scale")?).unwrap_or(ty.default_scale());
    let physics = PhysicsConfig { smoothness: opts.smoothness, per_pixel_ab: opts.per_pixel_ab, ..Default::default() };
    let tcfg = TrainConfig {
        loss: LossKind::Physics(physics),
        adam: AdamConfig::default(),
        input_scale,
        precision: Precision::F32,
        loss_scaling: false,
        frozen_bn: true,
    };
    let mut trainer = UNetTrainer::new(gpu, &weights, batch, patch[0], patch[1], tcfg)?;
    let entries: Vec<_> = trainer.layout().entries().iter().filter(|e| opts.layers.selects(&e.name)).cloned().collect();
    if entries.is_empty() {
        return Err(Error::Invalid(format!("--layers {:?} selects no parameter of the model", opts.layers)));
    }
    let selected: usize = entries.iter().map(|e| e.len).sum();
    let total = trainer.layout().entries().iter().map(|e| e.len).sum();
    let fits = (opts.memory_mib << 20) / (8 * selected).max(1);
    let history = opts.history.unwrap_or(100).min(fits);
    if history == 0 {
        return Err(Error::Invalid(format!(
            "--lbfgs-memory {} MiB holds no L-BFGS pair for {selected} parameters (needs {:.1} MiB each)",
            opts.memory_mib,
            (8 * selected) as f64 / 1048576.0
        )));
    }

    let full = trainer.read_params(gpu)?;
    let mut x: Vec<f32> = entries.iter().flat_map(|e| full[e.offset..e.offset + e.len].iter().copied()).collect();
    drop(full);
    let t0 = Instant::now();
    let (train_batches, hold_batches) =
        (Batches::new(&frames, &set, batch, patch), Batches::new(&holdout, &hold_set, batch, patch));
    let mut resident = None;
    let holdout_before =
        if hold_set.is_empty() { None } else { Some(evaluate(gpu, &mut trainer, &hold_batches, 1, &mut resident)?) };
    let loss_before = evaluate(gpu, &mut trainer, &train_batches, 0, &mut resident)?;
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
    {
        let mut closure = |p: &[f32], g: &mut [f32]| -> Result<f32> {
            trainer.write_param_entries(gpu, &entries, p)?;
            let loss = evaluate(gpu, &mut trainer, &train_batches, 0, &mut resident)?;
            g.copy_from_slice(&trainer.read_grad_entries(gpu, &entries)?);
            evals += 1;
            if loss < best.0 {
                best = (loss, p.to_vec());
            }
            progress(evals, loss);
            Ok(loss)
        };
        lbfgs.step(&mut x, &mut closure)?;
    }
    // Keep the best parameters evaluated (L-BFGS's last point can be a rejected trial).
    let (loss_after, x) = best;
    trainer.write_param_entries(gpu, &entries, &x)?;
    let holdout_after =
        if hold_set.is_empty() { None } else { Some(evaluate(gpu, &mut trainer, &hold_batches, 1, &mut resident)?) };

    let mut metadata: BTreeMap<String, String> = weights.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    metadata.insert("input_scale".into(), format!("{input_scale}"));
    metadata.insert("base".into(), config.base.to_string());
    metadata.insert("finetuned".into(), format!("lbfgs {} iterations, layers {:?}", lbfgs.iterations(), opts.layers));
    metadata.insert("finetune_loss".into(), format!("{loss_before} -> {loss_after}"));
    metadata.insert("trained_by".into(), format!("psi-gpu {}", env!("CARGO_PKG_VERSION")));
    let ck = Checkpoint { tensors: trainer.state_dict(gpu)?, num_batches_tracked: nbt, metadata, optimizer: None };
    checkpoint::save(&opts.output, &ck)?;
    Ok(FinetuneReport {
        selected,
        total,
        history,
        loss_before,
        loss_after,
        holdout: holdout_before.zip(holdout_after),
        crops: set.len(),
        patch,
        iterations: lbfgs.iterations(),
        evaluations: lbfgs.evaluations(),
        seconds: t0.elapsed().as_secs_f64(),
        gpu_bytes: trainer.bytes(),
    })
}
