//! The core's errors as Python exceptions, each carrying the CLI's one-line message. The classes
//! live in `psi_gpu/errors.py` (so they can also derive from `ValueError` / `OSError`):
//!
//! | core variant | class | also a |
//! |---|---|---|
//! | `Shape`, `Invalid` (also the TIFF reader's refusals) | `InvalidInputError` | `ValueError` |
//! | `UnknownBackend`, `AdapterIndex`, `AdapterNotFound` | `AdapterError` | `ValueError` |
//! | `Npy`, `Weights` | `FileFormatError` | `OSError` |
//! | `Io`, `SameFile` | `FileError` | `OSError` |
//! | `NoAdapter`, `Device`, `Shader`, `Gpu` | `GpuError` | `RuntimeError` |
//! | `Interrupted` | `StoppedError` | |
//! | a panic in the engine | `InternalError` | `RuntimeError` |

use std::panic::{AssertUnwindSafe, catch_unwind};

use psi_gpu::Error;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// What a call into the engine can end with: the core's error, or a panic caught at the border.
pub enum Failure {
    Core(Error),
    Panic(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

/// Run `f`, catching a panic (so it never unwinds into, or aborts, the interpreter).
pub fn guarded<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Failure::Panic(text))
        }
    }
}

/// The `psi_gpu.errors` class for `e`.
pub fn class_of(e: &Error) -> &'static str {
    match e {
        Error::Shape(_) | Error::Invalid(_) => "InvalidInputError",
        Error::UnknownBackend(_) | Error::AdapterIndex { .. } | Error::AdapterNotFound { .. } => "AdapterError",
        Error::Npy { .. } | Error::Weights { .. } => "FileFormatError",
        Error::Io { .. } | Error::SameFile { .. } => "FileError",
        Error::NoAdapter { .. } | Error::Device(_) | Error::Shader { .. } | Error::Gpu(_) => "GpuError",
        Error::Interrupted { .. } => "StoppedError",
    }
}

/// A `psi_gpu.errors.<class>` exception with `message`.
pub fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    let cls = py.import("psi_gpu.errors").and_then(|m| m.getattr(class)).and_then(|c| Ok(c.cast_into::<PyType>()?));
    match cls {
        Ok(cls) => PyErr::from_type(cls, message),
        Err(e) => e,
    }
}

impl Failure {
    pub fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Core(e) => raise(py, class_of(&e), e.to_string()),
            Failure::Panic(text) => {
                raise(py, "InternalError", format!("internal error (a bug in psi-gpu, please report it): {text}"))
            }
        }
    }
}

/// The core's result as a Python one.
pub fn to_py<T>(py: Python<'_>, r: Result<T, Failure>) -> PyResult<T> {
    r.map_err(|f| f.into_py(py))
}
