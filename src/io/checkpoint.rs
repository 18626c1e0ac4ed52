//! Training checkpoints as safetensors files that PyTorch loads as is.
//!
//! The file holds the model's float tensors as F32 under their state_dict names, one I64 scalar
//! `<bn>.num_batches_tracked` per BatchNorm (every `<bn>.running_var`), so that
//! `model.load_state_dict(safetensors.torch.load_file(path), strict=True)` accepts it, and the
//! given string metadata (`input_scale`, `base`, training settings, ...).
//!
//! The optimizer state, if any, is stored next to the model under names no module can have:
//! tensors `__optim__.m`, `__optim__.v` (F32, flat) and metadata `optim.step`,
//! `optim.loss_scale`, `optim.growth_tracker`. A file with optimizer state therefore needs those
//! two tensors dropped before a strict PyTorch load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::io::weights::{Weights, check_finite, f32_bytes, one_line, to_safetensors};

/// Prefix of the optimizer tensors: no module or parameter of the U-Net has such a name.
pub const OPTIM_PREFIX: &str = "__optim__.";
/// The Adam first moments, flat, in the trainer's parameter layout.
pub const OPTIM_M: &str = "__optim__.m";
/// The Adam second moments, flat, in the trainer's parameter layout.
pub const OPTIM_V: &str = "__optim__.v";
/// Metadata key of the applied-step count.
pub const META_STEP: &str = "optim.step";
/// Metadata key of the loss scale.
pub const META_LOSS_SCALE: &str = "optim.loss_scale";
/// Metadata key of the loss scaler's growth counter.
pub const META_GROWTH_TRACKER: &str = "optim.growth_tracker";

const RESERVED_META: [&str; 3] = [META_STEP, META_LOSS_SCALE, META_GROWTH_TRACKER];
const NBT_SUFFIX: &str = ".num_batches_tracked";

/// A model state (PyTorch state_dict names) with its metadata and, optionally, optimizer state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Float tensors: (name, shape, values). `num_batches_tracked` entries, if any, are ignored:
    /// those are written from [`Checkpoint::num_batches_tracked`].
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Written as `<bn>.num_batches_tracked` (I64 scalar) for every `<bn>.running_var`.
    pub num_batches_tracked: i64,
    pub metadata: BTreeMap<String, String>,
    pub optimizer: Option<OptimizerState>,
}

/// The optimizer and loss-scaler state needed to resume training.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Applied Adam steps (torch's `state['step']`).
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub loss_scale: f32,
    pub growth_tracker: u32,
}

impl Checkpoint {
    /// `Err` naming the first tensor (optimizer moments included) or loss scale that is NaN or
    /// ±Inf: such a state is never saved.
    pub fn check_finite(&self) -> std::result::Result<(), String> {
        for (name, _, data) in &self.tensors {
            check_finite(name, data)?;
        }
        if let Some(o) = &self.optimizer {
            check_finite(OPTIM_M, &o.m)?;
            check_finite(OPTIM_V, &o.v)?;
            if !o.loss_scale.is_finite() {
                return Err(format!("the loss scale is {}", o.loss_scale));
            }
        }
        Ok(())
    }
}

/// Check `ck` (finite values included) and build the safetensors bytes.
fn serialize(path: &Path, ck: &Checkpoint) -> Result<Vec<u8>> {
    let invalid = |m: String| Error::Invalid(format!("checkpoint {}: {m}", path.display()));
    ck.check_finite().map_err(|m| invalid(format!("{m}; refusing to save")))?;
    let mut names = BTreeSet::new();
    // (name, dtype, shape, bytes)
    let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut bns = Vec::new();
    for (name, shape, data) in &ck.tensors {
        if name.ends_with(NBT_SUFFIX) {
            continue;
        }
        if name.starts_with(OPTIM_PREFIX) {
            return Err(invalid(format!("tensor name '{name}' uses the reserved prefix '{OPTIM_PREFIX}'")));
        }
        if !names.insert(name.as_str()) {
            return Err(invalid(format!("tensor '{name}' appears twice")));
        }
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(invalid(format!("tensor '{name}' has shape {shape:?} but {} values", data.len())));
        }
        if let Some(prefix) = name.strip_suffix(".running_var") {
            bns.push(format!("{prefix}{NBT_SUFFIX}"));
        }
        entries.push((name.clone(), Dtype::F32, shape.clone(), f32_bytes(data)));
    }
    for nbt in bns {
        entries.push((nbt, Dtype::I64, vec![], ck.num_batches_tracked.to_le_bytes().to_vec()));
    }

    let mut metadata: HashMap<String, String> = HashMap::new();
    for (k, v) in &ck.metadata {
        if RESERVED_META.contains(&k.as_str()) {
            return Err(invalid(format!("metadata key '{k}' is reserved for the optimizer state")));
        }
        metadata.insert(k.clone(), v.clone());
    }
    if let Some(o) = &ck.optimizer {
        if o.m.len() != o.v.len() {
            return Err(invalid(format!("optimizer moments have {} and {} values", o.m.len(), o.v.len())));
        }
        entries.push((OPTIM_M.into(), Dtype::F32, vec![o.m.len()], f32_bytes(&o.m)));
        entries.push((OPTIM_V.into(), Dtype::F32, vec![o.v.len()], f32_bytes(&o.v)));
        metadata.insert(META_STEP.into(), o.step.to_string());
        // `Display` of an f32 is the shortest text that parses back to the same value.
        metadata.insert(META_LOSS_SCALE.into(), o.loss_scale.to_string());
        metadata.insert(META_GROWTH_TRACKER.into(), o.growth_tracker.to_string());
    }

    to_safetensors(&entries, metadata, invalid)
}

/// The optimizer metadata value `RESERVED_META[i]`, which must be present and parse.
fn parse_meta<T: FromStr>(meta: &[Option<String>], i: usize, err: &impl Fn(String) -> Error) -> Result<T> {
    let key = RESERVED_META[i];
    let s = meta[i].as_deref().ok_or_else(|| err(format!("incomplete optimizer state: no metadata '{key}'")))?;
    s.trim().parse().map_err(|_| err(format!("metadata '{key}' = '{s}' is not valid")))
}

/// Write `ck` to `path` (safetensors; see the module docs) through the atomic writer, so `path`
/// is never left half-written. A state with a non-finite value is refused and `path` left as it
/// was.
pub fn save(path: &Path, ck: &Checkpoint) -> Result<()> {
    crate::io::atomic::write_bytes(path, &serialize(path, ck)?)
}

/// Read a checkpoint written by [`save`] (or any PyTorch state_dict in safetensors form); every
/// floating tensor, optimizer moments included, must be finite ([`Weights::parse`]).
///
/// Returns the model weights (the `__optim__.*` tensors and `optim.*` metadata removed), the
/// optimizer state if the file has one, and the `num_batches_tracked` of the first BatchNorm
/// (by name; 0 if the file has none).
pub fn load(path: &Path) -> Result<(Weights, Option<OptimizerState>, i64)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// [`load`] a checkpoint held in `bytes` (named `path` in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Weights, Option<OptimizerState>, i64)> {
    let err = |message: String| Error::Weights { path: path.to_path_buf(), message: one_line(&message) };
    let mut weights = Weights::parse(path, bytes)?;

    // num_batches_tracked: the value of the first (by name) BatchNorm counter.
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let first_bn = st.names().into_iter().filter(|n| n.ends_with(NBT_SUFFIX)).min();
    let num_batches_tracked = match first_bn {
        None => 0,
        Some(name) => {
            let view = st.tensor(name).map_err(|e| err(format!("tensor '{name}': {e}")))?;
            let d = view.data();
            match (view.dtype(), d) {
                (Dtype::I64, &[a, b, c, e, f, g, h, i]) => i64::from_le_bytes([a, b, c, e, f, g, h, i]),
                (Dtype::I32, &[a, b, c, e]) => i32::from_le_bytes([a, b, c, e]) as i64,
                (dtype, _) => {
                    return Err(err(format!(
                        "tensor '{name}' should be one integer but is {dtype:?} of shape {:?}",
                        view.shape()
                    )));
                }
            }
        }
    };

    // Optimizer state: both moment tensors and the three metadata keys, or none of them.
    let (mut moments, tensors): (BTreeMap<_, _>, BTreeMap<_, _>) =
        std::mem::take(&mut weights.tensors).into_iter().partition(|(n, _)| n.starts_with(OPTIM_PREFIX));
    weights.tensors = tensors;
    if let Some(name) = weights.other.keys().find(|n| n.starts_with(OPTIM_PREFIX)) {
        return Err(err(format!("optimizer tensor '{name}' is not a float tensor")));
    }
    let meta: Vec<Option<String>> = RESERVED_META.iter().map(|k| weights.metadata.remove(*k)).collect();
    let optimizer = if moments.is_empty() && meta.iter().all(Option::is_none) {
        None
    } else {
        let mut moment = |name: &str| {
            let t =
                moments.remove(name).ok_or_else(|| err(format!("incomplete optimizer state: no tensor '{name}'")))?;
            if t.shape.len() != 1 {
                return Err(err(format!("optimizer tensor '{name}' has shape {:?}, expected 1-D", t.shape)));
            }
            Ok(t.data)
        };
        let (m, v) = (moment(OPTIM_M)?, moment(OPTIM_V)?);
        if let Some(name) = moments.keys().next() {
            return Err(err(format!("unknown optimizer tensor '{name}'")));
        }
        if m.len() != v.len() {
            return Err(err(format!("optimizer moments have {} and {} values", m.len(), v.len())));
        }
        let loss_scale: f32 = parse_meta(&meta, 1, &err)?;
        if !(loss_scale.is_finite() && loss_scale > 0.0) {
            return Err(err(format!("metadata '{META_LOSS_SCALE}' = {loss_scale}: a loss scale is finite and > 0")));
        }
        Some(OptimizerState {
            step: parse_meta(&meta, 0, &err)?,
            m,
            v,
            loss_scale,
            growth_tracker: parse_meta(&meta, 2, &err)?,
        })
    };
    Ok((weights, optimizer, num_batches_tracked))
}
