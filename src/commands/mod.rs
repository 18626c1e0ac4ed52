//! One module per subcommand: what the CLI (and, later, the Python package) runs. Each has an
//! `Options` struct, a `run` that does the job through the layers below (writing its files
//! through [`crate::io::atomic`]) and a `Report` whose `Display` is what the CLI prints (and
//! `to_json`, where the command writes JSON). [`args`] parses the values the command line spells
//! as text; [`outputs`] checks a command's files before it starts.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

pub mod args;
pub mod bench;
pub mod convert;
pub mod demo;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod infer;
pub mod infer_array;
pub mod infer_many;
pub mod info;
pub mod outputs;
pub mod pinn;
pub mod train;

/// The adapter a command ran on, as reports print it and JSON names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// `name (backend, type)`, as [`Gpu::describe`].
    pub description: String,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl Device {
    pub fn of(gpu: &Gpu) -> Device {
        let i = &gpu.info;
        Device {
            description: gpu.describe(),
            name: i.name.clone(),
            backend: i.backend.clone(),
            device_type: i.device_type.clone(),
            driver: i.driver.clone(),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Write `value` as pretty-printed JSON and a newline, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    crate::io::atomic::write_bytes(path, (text + "\n").as_bytes())
}
