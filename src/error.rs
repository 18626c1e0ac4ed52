//! The library's error type: every failure a user can cause or act on has its own variant.
//! [`interrupt`] is the stop request (Ctrl-C, SIGTERM) that long loops poll, ending the run with
//! [`Error::Interrupted`].

use std::path::PathBuf;

pub mod interrupt;

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
    #[error("no adapter with {choice} for backend '{backend}'; there are: {available} (see `psi-gpu info`)")]
    AdapterNotFound { choice: String, backend: String, available: String },
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
    /// A stop was requested (see [`interrupt`]); the files being written were removed.
    #[error("interrupted by {}: stopped, the unfinished output files were removed", interrupt::signal_name(*signal))]
    Interrupted { signal: i32 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }

    /// The exit status a command line reports for this error: 128 + the signal for
    /// [`Error::Interrupted`] (130 for SIGINT, 143 for SIGTERM), else 2.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted { signal } => u8::try_from(128 + signal).unwrap_or(2),
            _ => 2,
        }
    }
}
