//! Weights from safetensors files that use PyTorch's state_dict names.
//!
//! Floating tensors (F32, F16, BF16, F64) are read as f32 on the host; integer tensors such as
//! BatchNorm's `num_batches_tracked` are kept only as names. String metadata (`input_scale`, ...)
//! is kept as is. [`to_safetensors`] is the one writer of safetensors bytes (weights,
//! checkpoints, saved cPIKAN models), saved through the atomic writer by their owners.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A named tensor of a state_dict: (name, shape, values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// One floating tensor on the host.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The tensors and metadata of one safetensors file.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
    /// Names of non-floating tensors (e.g. `num_batches_tracked`).
    pub other: Vec<String>,
    pub metadata: HashMap<String, String>,
}

impl Weights {
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Weights> {
        let err = |message: String| Error::Weights { path: path.to_path_buf(), message: one_line(&message) };
        let st = SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| err(format!("bad header: {e}")))?;
        let mut tensors = BTreeMap::new();
        let mut other = Vec::new();
        for (name, view) in st.tensors() {
            let d = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => d.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => d.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                _ => {
                    other.push(name);
                    continue;
                }
            };
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), data });
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Weights { path: path.to_path_buf(), tensors, other, metadata })
    }

    /// The tensor `name`, which must exist and have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            message: format!("missing tensor '{name}' (expected shape {shape:?})"),
        })?;
        if t.shape != shape {
            return Err(Error::Weights {
                path: self.path.clone(),
                message: format!("tensor '{name}' has shape {:?}, expected {shape:?}", t.shape),
            });
        }
        Ok(t)
    }

    /// The shape of `name`, which must exist.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice()).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            message: format!("missing tensor '{name}': is this a psi-gpu U-Net state_dict?"),
        })
    }

    /// A float from the metadata (`1/255` style fractions accepted).
    pub fn metadata_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(s) => parse_scale(s).map(Some).ok_or_else(|| Error::Weights {
                path: self.path.clone(),
                message: one_line(&format!("metadata '{key}' = '{s}' is not a number")),
            }),
        }
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`, ...): an error that quotes what
/// a file holds (a tensor name, a dtype, a metadata value) stays one line.
pub(crate) fn one_line(text: &str) -> String {
    text.chars().fold(String::with_capacity(text.len()), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        out
    })
}

/// Little-endian bytes of f32 values (safetensors' F32 layout).
pub fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The safetensors bytes of `tensors` — (name, dtype, shape, little-endian data), written in
/// that order — with `metadata` (none when empty). `invalid` turns a message into the caller's
/// error (naming its file).
pub fn to_safetensors(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: HashMap<String, String>,
    invalid: impl Fn(String) -> Error,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| invalid(format!("tensor '{name}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, info).map_err(|e| invalid(format!("could not serialize: {e}")))
}

/// Parse `0.5`, `1/255` or `1e-3` as a positive finite scale.
pub fn parse_scale(s: &str) -> Option<f32> {
    let s = s.trim();
    let v = match s.split_once('/') {
        Some((a, b)) => a.trim().parse::<f64>().ok()? / b.trim().parse::<f64>().ok()?,
        None => s.parse::<f64>().ok()?,
    };
    (v.is_finite() && v > 0.0).then_some(v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales() {
        assert_eq!(parse_scale("1/255"), Some(1.0 / 255.0));
        assert_eq!(parse_scale(" 0.5 "), Some(0.5));
        assert_eq!(parse_scale("1e-3"), Some(1e-3));
        assert_eq!(parse_scale("0"), None);
        assert_eq!(parse_scale("1/0"), None);
        assert_eq!(parse_scale("abc"), None);
    }

    #[test]
    fn errors_quoting_the_file_stay_one_line() {
        // An unknown dtype whose name holds a newline: the JSON parser quotes it.
        let header = br#"{"a\nb":{"dtype":"F32\nX","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0; 4]);
        let e = Weights::parse(Path::new("w.safetensors"), &bytes).unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("F32\\nX"), "{e}");
        assert_eq!(one_line("a\nb\tc\u{1b}d é"), "a\\nb\\tc\\u{1b}d é");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = Weights::parse(Path::new("w.safetensors"), b"not safetensors at all").unwrap_err();
        assert!(e.to_string().contains("not a valid safetensors file"), "{e}");
    }
}
