//! `psi-gpu train`: the training loop around [`UNetTrainer`] — data (npy frames or synthetic
//! frames made on the fly), random crops, gradient accumulation, learning-rate schedules,
//! validation on held-out synthetic frames, loss history, checkpoints and resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::io::checkpoint::{self, Checkpoint};
use crate::io::frames::{Frame, load_frames};
use crate::io::weights::Weights;
use crate::nn::classical::Classical;
use crate::nn::unet::UNet;
use crate::nn::unet::init::{he_init, to_weights};
use crate::nn::unet::train::{MemoryUse, TrainConfig, UNetTrainer};
use crate::ops::classical::ClassicalConfig;
use crate::ops::convert::{RawBuffer, from_raw};
use crate::ops::loss::{LossKind, PhysicsConfig};
use crate::optim::{AdamConfig, LrSchedule};
use crate::psi::buckets::{self, SynthConfig};
use crate::psi::surface::random_heights_cpu;
use crate::rng::Rng;

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
pub struct TrainOptions {
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
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
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
}

pub struct TrainReport {
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

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64).sqrt()
}

/// Height RMSE of `weights` (eval mode) and of the classical solver (with each configuration in
/// `classical`) on `frames`.
fn validate(
    gpu: &Gpu,
    weights: &Weights,
    frames: &[Frame],
    scale: f32,
    classical: &[ClassicalConfig],
) -> Result<(f64, Vec<f64>)> {
    let model = UNet::new(gpu, weights, Precision::F32)?;
    let solvers = classical.iter().map(|c| Classical::new(gpu, c.clone())).collect::<Result<Vec<_>>>()?;
    let (mut se, mut se_c, mut n) = (0.0, vec![0.0; solvers.len()], 0usize);
    for f in frames {
        let truth = f.truth.as_ref().expect("validation frames are synthetic");
        let raw = RawBuffer::upload(gpu, f.ty, &f.bytes)?;
        let plan = model.plan(gpu, 1, f.h, f.w)?;
        let d1 = from_raw(gpu, &raw, scale, &plan.input)?;
        let mut all = vec![&d1];
        all.extend(&plan.dispatches);
        gpu.run(&all)?;
        let out = plan.output.to_f32(gpu)?;
        se += rmse(&out[..f.h * f.w], truth).powi(2) * (f.h * f.w) as f64;
        for (solver, acc) in solvers.iter().zip(&mut se_c) {
            let cplan = solver.plan(gpu, 1, f.h, f.w)?;
            let d2 = from_raw(gpu, &raw, 1.0, &cplan.input)?;
            let mut all = vec![&d2];
            all.extend(&cplan.dispatches);
            gpu.run(&all)?;
            let cout = cplan.output.to_f32(gpu)?;
            *acc += rmse(&cout[..f.h * f.w], truth).powi(2) * (f.h * f.w) as f64;
        }
        n += f.h * f.w;
    }
    Ok(((se / n as f64).sqrt(), se_c.iter().map(|s| (s / n as f64).sqrt()).collect()))
}

/// Train; `progress(step, steps, (loss, data, smoothness), lr)` is called after every step.
pub fn train(
    gpu: &Gpu,
    opts: &TrainOptions,
    mut progress: impl FnMut(usize, usize, (f32, f32, f32), f32),
) -> Result<TrainReport> {
    if opts.batch == 0 || opts.grad_accum == 0 {
        return Err(Error::Invalid("--batch and --grad-accum must be at least 1".into()));
    }
    if let Some((lo, hi)) = opts.height_range
        && !(lo.is_finite() && hi.is_finite() && lo < hi)
    {
        return Err(Error::Invalid(format!("--height-range {lo},{hi}: expected LO,HI with LO < HI")));
    }
    // Weights: resume > init > fresh.
    let (weights, optim, nbt) = match (&opts.resume, &opts.init) {
        (Some(p), _) | (None, Some(p)) => checkpoint::load(p)?,
        (None, None) => (to_weights(&he_init(16, 1, opts.base, opts.seed), NO_METADATA), None, 0),
    };
    let config = UNet::config(&weights)?;
    let precision = gpu.resolve_precision(opts.precision)?;

    let frames = if opts.frames.is_empty() {
        (0..opts.synthetic.max(1))
            .map(|i| {
                synthetic_frame(opts.seed * 1_000_003 + i as u64, opts.synthetic_size, opts.noise, opts.height_range)
            })
            .collect()
    } else {
        load_frames(&opts.frames, &opts.truth)?
    };
    let val: Vec<Frame> = (0..opts.validation)
        .map(|i| {
            synthetic_frame(u64::MAX - opts.seed * 7919 - i as u64, opts.synthetic_size, opts.noise, opts.height_range)
        })
        .collect();
    let steps = match opts.epochs {
        Some(e) => e * frames.len().div_ceil(opts.batch * opts.grad_accum),
        None => opts.steps,
    };
    let ty = frames[0].ty;
    if frames.iter().any(|f| f.ty != ty || f.c != config.n_channels) {
        return Err(Error::Invalid(format!(
            "training frames must all be {} with {} channels (the model's input)",
            ty.name(),
            config.n_channels
        )));
    }
    let all_truth = frames.iter().all(|f| f.truth.is_some());
    let loss_choice = match opts.loss {
        LossChoice::Auto if all_truth => LossChoice::Supervised,
        LossChoice::Auto => LossChoice::Physics,
        ref l => l.clone(),
    };
    if loss_choice == LossChoice::Supervised && !all_truth {
        return Err(Error::Invalid("--loss supervised needs --truth for every frame (or synthetic frames)".into()));
    }
    let (ph, pw) = if opts.patch == 0 {
        let (h, w) = (frames[0].h, frames[0].w);
        if frames.iter().any(|f| (f.h, f.w) != (h, w)) {
            return Err(Error::Invalid("--patch 0 (whole frames) needs frames of one size".into()));
        }
        (h, w)
    } else {
        if frames.iter().any(|f| f.h < opts.patch || f.w < opts.patch) {
            return Err(Error::Invalid(format!("--patch {} is larger than a training frame", opts.patch)));
        }
        (opts.patch, opts.patch)
    };
    let input_scale = opts.input_scale.or(weights.metadata_f32("input_scale")?).unwrap_or(ty.default_scale());
    let loss = match loss_choice {
        LossChoice::Supervised => LossKind::Mse,
        _ => LossKind::Physics(PhysicsConfig { smoothness: opts.smoothness, ..Default::default() }),
    };
    let tcfg = TrainConfig {
        loss,
        adam: AdamConfig {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            max_grad_norm: opts.clip,
            ..Default::default()
        },
        input_scale,
        precision,
        loss_scaling: precision == Precision::F16,
        frozen_bn: false,
    };
    let mut trainer = UNetTrainer::new(gpu, &weights, opts.batch, ph, pw, tcfg)?;
    if let Some(o) = &optim {
        trainer.restore_optimizer(gpu, o)?;
    }
    // Steps taken so far: the checkpoint's loop count (skipped f16 steps included), not Adam's.
    let start_step = match (&optim, weights.metadata.get("steps")) {
        (Some(_), Some(s)) => s.parse().unwrap_or(0),
        (Some(o), None) => o.step as usize,
        (None, _) => 0,
    };
    let mut history = match &opts.history {
        Some(p) => {
            let mut f = std::fs::File::create(p).map_err(|e| Error::io(p, e))?;
            writeln!(f, "step,lr,loss,data,smoothness,scale,applied").map_err(|e| Error::io(p, e))?;
            Some((p.clone(), f))
        }
        None => None,
    };
    let metadata = |step: usize| {
        let mut m = std::collections::BTreeMap::new();
        m.insert("input_scale".to_string(), format!("{input_scale}"));
        m.insert("base".into(), config.base.to_string());
        m.insert("loss".into(), format!("{loss_choice:?}").to_lowercase());
        m.insert("smoothness".into(), opts.smoothness.to_string());
        m.insert("lr".into(), opts.lr.to_string());
        m.insert("steps".into(), step.to_string());
        m.insert("batch".into(), opts.batch.to_string());
        m.insert("patch".into(), opts.patch.to_string());
        m.insert("precision".into(), precision.to_string());
        if let Some((lo, hi)) = opts.height_range {
            m.insert("height_range".into(), format!("{lo},{hi}"));
        }
        m.insert("trained_by".into(), format!("psi-gpu {}", env!("CARGO_PKG_VERSION")));
        m
    };
    let save = |trainer: &UNetTrainer, path: &Path, step: usize, with_optimizer: bool| -> Result<()> {
        let optimizer = if with_optimizer { Some(trainer.optimizer_state(gpu)?) } else { None };
        let ck = Checkpoint {
            tensors: trainer.state_dict(gpu)?,
            num_batches_tracked: nbt + trainer.batches() as i64,
            metadata: metadata(step),
            optimizer,
        };
        checkpoint::save(path, &ck)
    };
    // The classical solver as it is, and searching only the synthetic height range (the network's
    // prior; 0.1 µm margins so that noise at the range's ends still finds its fringe order).
    let mut classical = vec![ClassicalConfig::default()];
    if let (Some((lo, hi)), true) = (opts.height_range, opts.frames.is_empty()) {
        classical.push(ClassicalConfig { height_range: (lo - 0.1, hi + 0.1), ..Default::default() });
    }
    let validate_now = |trainer: &UNetTrainer, step: usize| -> Result<Validation> {
        let w = to_weights(&trainer.state_dict(gpu)?, NO_METADATA);
        let (rmse, c) = validate(gpu, &w, &val, input_scale, &classical)?;
        Ok(Validation { step, rmse, classical_rmse: c[0], classical_range_rmse: c.get(1).copied() })
    };

    let mut validations = Vec::new();
    let (mut first_loss, mut last_loss, mut skipped) = (f32::NAN, f32::NAN, 0);
    let t0 = Instant::now();
    let mut bytes = Vec::new();
    let mut truth = Vec::new();
    for step in start_step..steps {
        // Crops depend only on (seed, step): a resumed run sees the batches it would have seen.
        let mut rng = Rng::new(opts.seed ^ 0xC0FFEE ^ (step as u64 + 1).wrapping_mul(0x9E3779B97F4A7C15));
        trainer.zero_grad(gpu);
        let mut loss_sum = (0f32, 0f32, 0f32);
        for _ in 0..opts.grad_accum {
            bytes.clear();
            truth.clear();
            for _ in 0..opts.batch {
                let f = &frames[rng.below(frames.len())];
                let (y0, x0) = (rng.below(f.h - ph + 1), rng.below(f.w - pw + 1));
                f.crop(y0, x0, ph, pw, &mut bytes);
                if let Some(t) = &f.truth {
                    for y in y0..y0 + ph {
                        truth.extend_from_slice(&t[y * f.w + x0..y * f.w + x0 + pw]);
                    }
                }
            }
            trainer.set_frames(gpu, ty, &bytes)?;
            if loss_choice == LossChoice::Supervised {
                trainer.set_truth(gpu, &truth)?;
            }
            let l = trainer.accumulate(gpu, 1.0 / opts.grad_accum as f32)?;
            loss_sum = (loss_sum.0 + l.total, loss_sum.1 + l.data, loss_sum.2 + l.smoothness);
        }
        let k = opts.grad_accum as f32;
        let loss = (loss_sum.0 / k, loss_sum.1 / k, loss_sum.2 / k);
        let lr = opts.schedule.lr(opts.lr, step);
        let report = trainer.apply(gpu, lr)?;
        if !report.applied {
            skipped += 1;
        }
        if first_loss.is_nan() {
            first_loss = loss.0;
        }
        last_loss = loss.0;
        if let Some((p, f)) = history.as_mut() {
            writeln!(f, "{},{lr},{},{},{},{},{}", step + 1, loss.0, loss.1, loss.2, report.scale, report.applied)
                .map_err(|e| Error::io(&*p, e))?;
        }
        progress(step + 1, steps, loss, lr as f32);
        if opts.checkpoint_every > 0 && (step + 1) % opts.checkpoint_every == 0 {
            save(&trainer, &opts.output.with_extension("ckpt.safetensors"), step + 1, true)?;
        }
        if opts.validate_every > 0 && (step + 1) % opts.validate_every == 0 && step + 1 < steps {
            validations.push(validate_now(&trainer, step + 1)?);
        }
    }
    let trained = steps.saturating_sub(start_step);
    let seconds_per_step = t0.elapsed().as_secs_f64() / trained.max(1) as f64;
    if opts.validation > 0 {
        validations.push(validate_now(&trainer, steps)?);
    }
    save(&trainer, &opts.output, steps, false)?;
    Ok(TrainReport {
        steps: trained,
        seconds_per_step,
        first_loss,
        last_loss,
        validations,
        memory: trainer.memory(),
        precision,
        skipped_steps: skipped,
        loss: loss_choice,
    })
}
