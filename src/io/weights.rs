//! Weights from safetensors files that use PyTorch's state_dict names.
//!
//! Floating tensors (F32, F16, BF16, F64) are read as f32 on the host and must be finite (a NaN
//! or ±Inf weight is refused by name, never turned into plausible heights); integer tensors such
//! as BatchNorm's `num_batches_tracked` are kept only as names and dtypes. String metadata
//! (`input_scale`, ...) is kept as is. A file that is not safetensors but a PyTorch pickle
//! (`.pt` / `.pth`) is named as such, with the one-line conversion.
//!
//! [`to_safetensors`] is the one writer of safetensors bytes (weights, checkpoints, saved cPIKAN
//! models), saved through the atomic writer by their owners: it refuses non-finite values and
//! writes the header with sorted keys, so the same tensors and metadata give the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
pub use safetensors::Dtype;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

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
#[derive(Clone, Debug)]
pub struct Weights {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
    /// Non-floating tensors (e.g. `num_batches_tracked`) by name, with their dtype.
    pub other: BTreeMap<String, Dtype>,
    pub metadata: HashMap<String, String>,
}

impl Weights {
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &bytes)
    }

    /// Read safetensors `bytes` (named `path` in messages); every floating tensor must be finite.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Weights> {
        let err = |message: String| Error::Weights { path: path.to_path_buf(), message: one_line(&message) };
        let st = SafeTensors::deserialize(bytes).map_err(|e| err(not_safetensors(path, bytes, &e.to_string())))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| err(format!("bad header: {e}")))?;
        let mut tensors = BTreeMap::new();
        let mut other = BTreeMap::new();
        for (name, view) in st.tensors() {
            let Some(data) = decode(view.dtype(), view.data()) else {
                other.insert(name, view.dtype());
                continue;
            };
            check_finite(&name, &data).map_err(|m| err(format!("{m}: the file is damaged or from a diverged run")))?;
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), data });
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Weights { path: path.to_path_buf(), tensors, other, metadata })
    }

    /// Every floating tensor is finite (weights built in memory; [`Weights::parse`] checks files).
    pub fn check_finite(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            check_finite(name, &t.data).map_err(|message| Error::Weights { path: self.path.clone(), message })?;
        }
        Ok(())
    }

    /// Why tensor `name` (wanted as a floating tensor of `shape`, if given) is not there: an
    /// integer tensor of that name, PyTorch DataParallel's `module.` prefix, or plainly missing.
    fn missing(&self, name: &str, shape: Option<&[usize]>) -> Error {
        let want = shape.map(|s| format!(" of shape {s:?}")).unwrap_or_default();
        let message = if let Some(dtype) = self.other.get(name) {
            let kind = if is_integer(*dtype) { "an integer" } else { "a non-floating" };
            format!("tensor '{name}' is {kind} tensor ({dtype:?}); expected a floating-point tensor{want}")
        } else if self.tensors.contains_key(&format!("module.{name}")) {
            format!(
                "missing tensor '{name}', but the file has 'module.{name}': its names carry the 'module.' prefix \
                 of nn.DataParallel; strip it before saving, e.g. \
                 `{{k.removeprefix(\"module.\"): v for k, v in model.state_dict().items()}}`"
            )
        } else if shape.is_some() {
            format!("missing tensor '{name}' (expected shape{want})")
        } else {
            format!("missing tensor '{name}': is this a psi-gpu U-Net state_dict?")
        };
        Error::Weights { path: self.path.clone(), message }
    }

    /// The tensor `name`, which must exist and have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let t = self.tensors.get(name).ok_or_else(|| self.missing(name, Some(shape)))?;
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
        self.tensors.get(name).map(|t| t.shape.as_slice()).ok_or_else(|| self.missing(name, None))
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

/// The values of a floating tensor's little-endian `bytes` as f32; `None` for other dtypes.
fn decode(dtype: Dtype, d: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        _ => return None,
    })
}

fn is_integer(dtype: Dtype) -> bool {
    use Dtype::*;
    matches!(dtype, I8 | U8 | I16 | U16 | I32 | U32 | I64 | U64)
}

/// `Err` naming tensor `name` when `data` holds NaN or ±Inf: how many, and the first.
pub fn check_finite(name: &str, data: &[f32]) -> std::result::Result<(), String> {
    let Some(first) = data.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let count = data.iter().filter(|v| !v.is_finite()).count();
    let (v, n) = (data[first], data.len());
    Err(format!("tensor '{name}' has {count} non-finite of {n} values (the first, {v}, at index {first})"))
}

/// The message for `bytes` that safetensors rejected (`why`): a PyTorch pickle is named as one.
fn not_safetensors(path: &Path, bytes: &[u8], why: &str) -> String {
    // torch.save writes a zip whose first entry is `<name>/data.pkl`; before PyTorch 1.6 a bare
    // pickle (protocol 2: 0x80 0x02). The name length is at offset 26, the name at 30.
    let zip_entry = bytes.starts_with(b"PK\x03\x04").then(|| {
        let n = bytes.get(26..28).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        bytes.get(30..30 + n).unwrap_or_default()
    });
    let kind = match zip_entry {
        Some(name) if name.ends_with(b".pkl") => "a PyTorch pickle (torch.save's zip format)",
        Some(_) => return format!("a zip archive, not a safetensors file ({why})"),
        None if bytes.len() > 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) => {
            "a PyTorch pickle (a Python pickle: torch.save's legacy format)"
        }
        None => return format!("not a valid safetensors file: {why}"),
    };
    let file = path.file_name().map_or("w.pt".into(), |f| f.to_string_lossy());
    format!(
        "{kind}, not safetensors: convert it in Python with \
         `safetensors.torch.save_file(model.state_dict(), \"w.safetensors\")` (a file that holds a \
         state_dict: `safetensors.torch.save_file(torch.load(\"{file}\", map_location=\"cpu\"), \"w.safetensors\")`)"
    )
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

/// The safetensors bytes of `tensors` — (name, dtype, shape, little-endian data) — with
/// `metadata` (none when empty). Floating tensors must be finite. The data is laid out as the
/// safetensors crate does (by dtype alignment, then name); the header JSON has its keys sorted
/// (tensor names and the `__metadata__` map alike), so equal inputs give equal bytes. `invalid`
/// turns a message into the caller's error (naming its file).
pub fn to_safetensors(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: HashMap<String, String>,
    invalid: impl Fn(String) -> Error,
) -> Result<Vec<u8>> {
    for (name, dtype, _, bytes) in tensors {
        if let Some(values) = decode(*dtype, bytes) {
            check_finite(name, &values).map_err(|m| invalid(format!("{m}; refusing to save")))?;
        }
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| invalid(format!("tensor '{name}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = (!metadata.is_empty()).then_some(metadata);
    let bytes = safetensors::serialize(views, info).map_err(|e| invalid(format!("could not serialize: {e}")))?;
    sorted_header(&bytes).map_err(|e| invalid(format!("could not re-write the header: {e}")))
}

/// `bytes` (a safetensors file) with its header JSON re-written with sorted keys, padded with
/// spaces to a multiple of 8 bytes as the format asks; the data and its offsets (relative to the
/// data's start) are unchanged.
fn sorted_header(bytes: &[u8]) -> serde_json::Result<Vec<u8>> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let m: BTreeMap<String, serde_json::Value> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(m.into_iter().collect())
            }
            v => v,
        }
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = sorted(serde_json::from_slice(&bytes[8..8 + n])?);
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
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
