//! Keyword options as the Python layer hands them over: every value in the text the CLI's flag
//! of the same name takes (`wavelengths="5.0,5.5"`, `phase_steps="0,90,180,270"`), parsed by the
//! CLI's own parsers (`psi_gpu::commands::args`), so a bad value gets the CLI's message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use psi_gpu::commands::args::{
    Ab, Dtype, HeightRange, InputScale, PhaseStepsArg, PrecisionArg, Saturation, SurfaceShape, Wavelengths,
};
use psi_gpu::commands::infer::{ClassicalOptions, InferOptions};
use psi_gpu::commands::infer_array::ArrayOptions;
use psi_gpu::error::{Error, Result};
use psi_gpu::io::height_map::MapFormat;
use psi_gpu::ops::classical::{MinModulation, Unwrap};
use psi_gpu::psi::config::{DEFAULT_BUCKETS, PsiConfig};
use psi_gpu::psi::synthetic::GenerateOptions;

/// The options of one call; each is taken once, and any left over is refused.
pub struct Options {
    map: HashMap<String, String>,
}

impl Options {
    pub fn new(map: HashMap<String, String>) -> Options {
        Options { map }
    }

    /// `key` parsed by `T`'s CLI parser.
    pub fn get<T: FromStr>(&mut self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.map.remove(key) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|e| Error::Invalid(format!("{key}: {e}"))),
        }
    }

    pub fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.map.remove(key).map(PathBuf::from)
    }

    /// Refuse what the CLI refuses as "a flag the run would not use" (`main/flags.rs`'s
    /// `refuse_unused` for infer), with its message: the classical solver's settings with
    /// weights, gpu_memory with batch, overlap with tile 0, pixel_size without an .x3p output
    /// (`x3p`: whether one is written; `None` where no file is).
    pub fn refuse_unused(&self, weights: bool, x3p: Option<bool>) -> Result<()> {
        let unused = |when: bool, keys: &[&str], why: &str| match keys.iter().find(|k| self.map.contains_key(**k)) {
            Some(k) if when => Err(Error::Invalid(format!("--{} {why}", k.replace('_', "-")))),
            _ => Ok(()),
        };
        let classical_only = "applies to the classical solver only: the U-Net (--weights) does not use it";
        unused(weights, &["wavelengths", "buckets", "height_range"], classical_only)?;
        let batch = self.map.contains_key("batch");
        unused(batch, &["gpu_memory"], "sizes the automatic batch, and --batch sets it")?;
        let whole = self.map.get("tile").is_some_and(|t| t.trim() == "0");
        unused(whole, &["overlap"], "has no effect with --tile 0 (the whole frame is one tile)")?;
        let no_x3p = x3p != Some(true);
        unused(no_x3p, &["pixel_size"], "sets the lateral step of .x3p outputs, and no output here is .x3p")
    }

    pub fn flag(&mut self, key: &str) -> Result<bool> {
        Ok(self.get::<bool>(key)?.unwrap_or(false))
    }

    /// An error naming the options no one took (a key the call does not use).
    pub fn finish(self, call: &str) -> Result<()> {
        let mut left: Vec<&String> = self.map.keys().collect();
        left.sort();
        match left.first() {
            None => Ok(()),
            Some(_) => Err(Error::Invalid(format!(
                "{call}: option(s) {} do not apply here",
                left.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The classical solver's settings (wavelengths, buckets, phase_steps, height_range, unwrap,
/// min_modulation, saturation, input_scale).
pub fn classical(o: &mut Options) -> Result<ClassicalOptions> {
    let mut c = ClassicalOptions::default();
    let wavelengths = o.get::<Wavelengths>("wavelengths")?.unwrap_or_default().0;
    let buckets = o.get::<usize>("buckets")?.unwrap_or(DEFAULT_BUCKETS);
    let steps = o.get::<PhaseStepsArg>("phase_steps")?.unwrap_or_default().0;
    c.config.psi = PsiConfig { phase_steps: steps, ..PsiConfig::with(wavelengths, buckets) };
    if let Some(r) = o.get::<HeightRange>("height_range")? {
        c.config.height_range = r.0;
    }
    if let Some(u) = o.get::<Unwrap>("unwrap")? {
        c.config.unwrap = u;
    }
    c.min_modulation = o.get::<MinModulation>("min_modulation")?;
    c.saturation = o.get::<Saturation>("saturation")?.map(|s| s.0);
    c.input_scale = o.get::<InputScale>("input_scale")?.map(|s| s.0);
    Ok(c)
}

/// Tiling and scaling (tile, overlap, batch, gpu_memory in MiB, input_scale).
pub fn tiling(o: &mut Options, input_scale: Option<f32>) -> Result<ArrayOptions> {
    let mut a = ArrayOptions { input_scale, ..ArrayOptions::default() };
    a.tile = o.get("tile")?.unwrap_or(a.tile);
    a.overlap = o.get("overlap")?;
    a.batch = o.get("batch")?;
    if a.batch == Some(0) {
        return Err(Error::Invalid("batch=0: a batch holds at least one tile".into()));
    }
    if let Some(mib) = o.get::<u64>("gpu_memory")? {
        a.memory_budget = mib << 20;
    }
    Ok(a)
}

/// `precision`: auto (None), f32 or f16.
pub fn precision(o: &mut Options) -> Result<Option<psi_gpu::Precision>> {
    Ok(o.get::<PrecisionArg>("precision")?.and_then(|p| p.0))
}

/// The options of `infer INPUT -o OUTPUT` as the CLI builds them.
pub fn infer(o: &mut Options) -> Result<psi_gpu::commands::infer::Options> {
    let x3p = ["output", "quality", "mask"]
        .iter()
        .any(|k| o.map.get(*k).is_some_and(|p| MapFormat::of(Path::new(p)) == MapFormat::X3p));
    o.refuse_unused(o.map.contains_key("weights"), Some(x3p))?;
    let input = o.path("input").ok_or_else(|| Error::Invalid("infer_file: no input".into()))?;
    let output = o.path("output").unwrap_or_else(|| psi_gpu::commands::infer::default_output(&input));
    let mut i = InferOptions::new(input, output);
    i.weights = o.path("weights");
    let c = classical(o)?;
    (i.classical, i.min_modulation, i.saturation) = (c.config, c.min_modulation, c.saturation);
    let t = tiling(o, c.input_scale)?;
    (i.tile, i.overlap, i.batch, i.input_scale, i.memory_budget) =
        (t.tile, t.overlap, t.batch, t.input_scale, t.memory_budget);
    i.precision = precision(o)?;
    (i.quality, i.mask) = (o.path("quality"), o.path("mask"));
    i.pixel_size_um = o.get("pixel_size")?.unwrap_or(1.0);
    let (preview, stats_json) = (o.path("preview"), o.path("stats_json"));
    Ok(psi_gpu::commands::infer::Options { infer: i, preview, stats_json })
}

/// `generate`'s frame (height, width, dtype, seed, noise, shape, wavelengths, buckets,
/// phase_steps, ab, ab_variation, height_scale, height_offset, slope) with the CLI's defaults.
pub fn generate(o: &mut Options) -> Result<GenerateOptions> {
    let mut g = GenerateOptions { height: 512, width: 512, ..GenerateOptions::default() };
    g.height = o.get("height")?.unwrap_or(g.height);
    g.width = o.get("width")?.unwrap_or(g.width);
    g.dtype = o.get::<Dtype>("dtype")?.map_or(g.dtype, |d| d.0);
    g.seed = o.get("seed")?.unwrap_or(0);
    g.noise = o.get("noise")?.unwrap_or(0.0);
    g.shape = o.get::<SurfaceShape>("shape")?.map_or(g.shape, |s| s.0);
    let wavelengths = o.get::<Wavelengths>("wavelengths")?.unwrap_or_default().0;
    let buckets = o.get::<usize>("buckets")?.unwrap_or(DEFAULT_BUCKETS);
    let mut psi = PsiConfig::with(wavelengths, buckets);
    psi.phase_steps = o.get::<PhaseStepsArg>("phase_steps")?.unwrap_or_default().0;
    if let Some(Ab(a, b)) = o.get::<Ab>("ab")? {
        (psi.a, psi.b) = (a, b);
    }
    g.psi = psi;
    g.ab_variation = o.get("ab_variation")?.unwrap_or(0.0);
    g.height_scale = o.get("height_scale")?.unwrap_or(1.0);
    g.height_offset = o.get("height_offset")?.unwrap_or(0.0);
    g.slope = o.get("slope")?.unwrap_or(g.slope);
    Ok(g)
}
