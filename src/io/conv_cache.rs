//! The on-disk cache of measured convolution-kernel choices (`--conv auto`, made in
//! [`crate::ops::conv::select`]): one JSON file, [`FILE`], in the cache folder
//! (`$PSI_GPU_CACHE_DIR`, else `$XDG_CACHE_HOME/psi-gpu`, else `~/.cache/psi-gpu`):
//!
//! ```json
//! {"format": "psi-gpu conv choices", "version": 1, "choices": [
//!   {"adapter": "…", "backend": "Vulkan", "driver": "…", "precision": "f32",
//!    "shape": [n, cin, cout, h, w], "kernel": "winograd", "seconds": {"direct": 1e-3, "winograd": 6e-4}}]}
//! ```
//!
//! Written atomically ([`crate::io::atomic`]), so a reader sees the old or the new file, never
//! half of one; two processes measuring at once keep the last writer's file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The cache file's name in the cache folder.
pub const FILE: &str = "conv_choices.json";
const FORMAT: &str = "psi-gpu conv choices";
const VERSION: u64 = 1;

/// What a choice holds for: the adapter, its driver, the storage precision and the layer shape
/// `[n, cin, cout, h, w]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoiceKey {
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub precision: String,
    pub shape: [usize; 5],
}

/// One measured layer: the kernel that won and each candidate's seconds per run.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub key: ChoiceKey,
    pub kernel: String,
    pub seconds: BTreeMap<String, f64>,
}

/// The cache folder from the environment (`var` reads a variable), `None` without a home.
pub fn cache_dir(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("PSI_GPU_CACHE_DIR")
        .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("psi-gpu")))
        .or_else(|| set("HOME").map(|d| d.join(".cache").join("psi-gpu")))
}

/// The cache file of this process's environment.
pub fn default_path() -> Option<PathBuf> {
    cache_dir(|name| std::env::var(name).ok()).map(|d| d.join(FILE))
}

fn bad(path: &Path, what: &str) -> Error {
    Error::Invalid(format!("{}: not a psi-gpu conv choice cache ({what})", path.display()))
}

fn parse_choice(v: &Value) -> Option<Choice> {
    let s = |k: &str| v.get(k)?.as_str().map(String::from);
    let shape: Vec<usize> =
        v.get("shape")?.as_array()?.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<_>>()?;
    let seconds =
        v.get("seconds")?.as_object()?.iter().map(|(k, t)| Some((k.clone(), t.as_f64()?))).collect::<Option<_>>()?;
    let key = ChoiceKey {
        adapter: s("adapter")?,
        backend: s("backend")?,
        driver: s("driver")?,
        precision: s("precision")?,
        shape: shape.try_into().ok()?,
    };
    Some(Choice { key, kernel: s("kernel")?, seconds })
}

/// The choices in `path`: none when the file does not exist, an error when it cannot be read or
/// is not a cache of this format and version.
pub fn read(path: &Path) -> Result<Vec<Choice>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(path, &e.to_string()))?;
    if v.get("format").and_then(Value::as_str) != Some(FORMAT)
        || v.get("version").and_then(Value::as_u64) != Some(VERSION)
    {
        return Err(bad(path, "format or version"));
    }
    let list = v.get("choices").and_then(Value::as_array).ok_or_else(|| bad(path, "no choices"))?;
    list.iter().map(|c| parse_choice(c).ok_or_else(|| bad(path, "a malformed choice"))).collect()
}

/// Write `choices` to `path` atomically, making its folder if needed.
pub fn write(path: &Path, choices: &[Choice]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let list: Vec<Value> = choices
        .iter()
        .map(|c| {
            let k = &c.key;
            json!({"adapter": k.adapter, "backend": k.backend, "driver": k.driver, "precision": k.precision,
                   "shape": k.shape, "kernel": c.kernel, "seconds": c.seconds})
        })
        .collect();
    let v = json!({"format": FORMAT, "version": VERSION, "choices": list});
    let text = serde_json::to_vec_pretty(&v).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::io::atomic::write_bytes(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_prefers_psi_gpu_then_xdg_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        const ALL: &[(&str, &str)] = &[("PSI_GPU_CACHE_DIR", "/a"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        let all = ALL;
        assert_eq!(cache_dir(env(all)), Some(PathBuf::from("/a")));
        assert_eq!(cache_dir(env(&all[1..])), Some(PathBuf::from("/x/psi-gpu")));
        assert_eq!(cache_dir(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])), Some(PathBuf::from("/h/.cache/psi-gpu")));
        assert_eq!(cache_dir(env(&[])), None);
    }

    #[test]
    fn choices_round_trip_and_bad_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("psi-gpu-conv-cache-{}", std::process::id()));
        let path = dir.join("sub").join(FILE);
        assert_eq!(read(&path).unwrap(), vec![]);
        let key = ChoiceKey {
            adapter: "gpu \"1\"".into(),
            backend: "Vulkan".into(),
            driver: "mesa 24".into(),
            precision: "f16".into(),
            shape: [8, 16, 32, 128, 128],
        };
        let seconds = [("direct".to_string(), 2e-3), ("winograd".to_string(), 1e-3)].into_iter().collect();
        let choices = vec![Choice { key, kernel: "winograd".into(), seconds }];
        write(&path, &choices).unwrap();
        assert_eq!(read(&path).unwrap(), choices);
        for text in ["{", "[]", r#"{"format": "psi-gpu conv choices", "version": 2, "choices": []}"#] {
            std::fs::write(&path, text).unwrap();
            assert!(read(&path).is_err(), "{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
