//! The library's error type: every failure a user can cause or act on has its own variant.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found for backend '{backend}'. Install a GPU driver with Vulkan, DX12, Metal \
         or OpenGL support; on Linux without a GPU install Mesa's software driver \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`)"
    )]
    NoAdapter { backend: String },
    #[error("adapter index {index} does not exist: {count} adapter(s) for backend '{backend}' (see `psi-gpu info`)")]
    AdapterIndex { index: usize, count: usize, backend: String },
    #[error("unknown backend '{0}': expected auto, vulkan, dx12, metal or gl")]
    UnknownBackend(String),
    #[error("could not open the GPU device: {0}")]
    Device(String),
    #[error("shader '{name}' ({precision}) failed to compile: {message}")]
    Shader { name: String, precision: String, message: String },
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("{path}: {message}")]
    Npy { path: PathBuf, message: String },
    #[error("weights {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Invalid(String),
    /// The OS error is part of the message and not also returned by `source()`, so a report
    /// that prints the whole chain names it once.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// Two of a command's files are one: an output would replace an input, or two outputs would
    /// share a path.
    #[error("{output_role} {} is the same file as {other_role} {}: {consequence}", output.display(), other.display())]
    SameFile { output_role: String, output: PathBuf, other_role: String, other: PathBuf, consequence: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
}
