//! Which kernel runs a 3x3 inference convolution ([`Conv`]), and [`Tuner`], which picks one per
//! layer shape by timing both on the adapter at first use, as PyTorch's `cudnn.benchmark` does,
//! and remembers the choice on disk ([`crate::io::conv_cache`]) keyed by adapter, backend,
//! driver, precision and shape. The choice depends on timing, so `auto` is not byte-reproducible
//! across machines or runs (the kernels round differently); `direct` is the default.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, Precision};
use crate::io::conv_cache::{self, Choice, ChoiceKey};

/// The 3x3 kernel of an inference convolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conv {
    /// The tiled direct kernel ([`conv`](super::conv)).
    #[default]
    Direct,
    /// Winograd F(2x2, 3x3) ([`conv_winograd`](super::winograd::conv_winograd)).
    Winograd,
    /// The faster of the two on this adapter, measured per layer shape ([`Tuner`]).
    Auto,
}

impl Conv {
    pub const ALL: [Conv; 3] = [Conv::Direct, Conv::Winograd, Conv::Auto];

    /// The name `--conv` spells.
    pub fn name(self) -> &'static str {
        match self {
            Conv::Direct => "direct",
            Conv::Winograd => "winograd",
            Conv::Auto => "auto",
        }
    }
}

/// Timed runs per candidate (after one untimed run); the fastest counts.
const TIMED_RUNS: usize = 3;
/// Dispatches per timed run (one submission, one wait).
const DISPATCHES_PER_RUN: usize = 3;

/// Per-shape kernel choices: those in the cache file, and those measured in this process.
pub struct Tuner {
    /// The cache file; `None`: measure in every process, remember nothing on disk.
    path: Option<PathBuf>,
    choices: Mutex<Vec<Choice>>,
}

impl Tuner {
    /// The choices cached in `path` (a file that cannot be read or parsed is ignored with a
    /// warning and replaced on the next measurement).
    pub fn new(path: Option<PathBuf>) -> Tuner {
        let choices = match &path {
            Some(p) => conv_cache::read(p).unwrap_or_else(|e| {
                eprintln!("warning: ignoring the conv choice cache: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        };
        Tuner { path, choices: Mutex::new(choices) }
    }

    /// The cache file of this process's environment ([`conv_cache::default_path`]).
    pub fn from_env() -> Tuner {
        Tuner::new(conv_cache::default_path())
    }

    /// `Conv::Direct` or `Conv::Winograd` for a layer of `shape` `[n, cin, cout, h, w]`: the cached
    /// choice, else the faster of `direct` and `winograd` (two dispatches computing the same
    /// layer) measured now and cached. A cache that cannot be written costs a warning only.
    pub fn choose(
        &self,
        gpu: &Gpu,
        precision: Precision,
        shape: [usize; 5],
        direct: &Dispatch,
        winograd: &Dispatch,
    ) -> Result<Conv> {
        let key = ChoiceKey {
            adapter: gpu.info.name.clone(),
            backend: gpu.info.backend.clone(),
            driver: gpu.info.driver.clone(),
            precision: precision.to_string(),
            shape,
        };
        if let Some(c) = self.choices.lock().unwrap().iter().find(|c| c.key == key) {
            return Ok(if c.kernel == Conv::Winograd.name() { Conv::Winograd } else { Conv::Direct });
        }
        let (td, tw) = (seconds_per_run(gpu, direct)?, seconds_per_run(gpu, winograd)?);
        let kernel = if tw < td { Conv::Winograd } else { Conv::Direct };
        let seconds: BTreeMap<String, f64> =
            [(Conv::Direct.name().to_string(), td), (Conv::Winograd.name().to_string(), tw)].into_iter().collect();
        let mut choices = self.choices.lock().unwrap();
        choices.push(Choice { key, kernel: kernel.name().into(), seconds });
        if let Some(path) = &self.path
            && let Err(e) = conv_cache::write(path, &choices)
        {
            eprintln!("warning: could not write the conv choice cache: {e}");
        }
        Ok(kernel)
    }
}

/// The fastest of [`TIMED_RUNS`] submissions of `d` (each [`DISPATCHES_PER_RUN`] times, waited
/// for), per dispatch, after one untimed run.
fn seconds_per_run(gpu: &Gpu, d: &Dispatch) -> Result<f64> {
    let batch = [d; DISPATCHES_PER_RUN];
    gpu.run(&[d])?;
    let mut best = f64::INFINITY;
    for _ in 0..TIMED_RUNS {
        let t = Instant::now();
        gpu.run(&batch)?;
        best = best.min(t.elapsed().as_secs_f64() / DISPATCHES_PER_RUN as f64);
    }
    Ok(best)
}
