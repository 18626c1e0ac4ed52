//! `psi-gpu info`: the adapters of a backend with the features and limits the engine uses.

use std::fmt;

use crate::error::{Error, Result};
use crate::gpu::{AdapterReport, list_adapters};

#[derive(Clone, Debug)]
pub struct Options {
    /// auto, vulkan, dx12, metal or gl.
    pub backend: String,
}

pub struct Report {
    pub adapters: Vec<AdapterReport>,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.adapters.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "[{}] {} ({}, {})", a.index, a.name, a.backend, a.device_type)?;
            writeln!(f, "    driver: {}", if a.driver.is_empty() { "-" } else { &a.driver })?;
            if !a.pci_bus_id.is_empty() {
                writeln!(f, "    PCI bus id: {} (--adapter {} pins this adapter)", a.pci_bus_id, a.pci_bus_id)?;
            }
            let (f16, atomics, subgroups) = (yes(a.shader_f16), yes(a.float32_atomics), yes(a.subgroups));
            writeln!(f, "    shader-f16: {f16}  float32-atomics: {atomics}  subgroups: {subgroups}")?;
            writeln!(
                f,
                "    max storage binding: {} MiB  max buffer: {} MiB  workgroup storage: {} KiB  invocations/workgroup: {}",
                a.max_storage_binding >> 20,
                a.max_buffer >> 20,
                a.max_workgroup_storage >> 10,
                a.max_invocations_per_workgroup
            )?;
            let coop =
                if a.cooperative_matrix.is_empty() { "none".to_string() } else { a.cooperative_matrix.join(", ") };
            write!(f, "    cooperative matrix: {coop}")?;
        }
        Ok(())
    }
}

/// List the adapters; none is an error.
pub fn run(opts: &Options) -> Result<Report> {
    let adapters = list_adapters(&opts.backend)?;
    if adapters.is_empty() {
        return Err(Error::NoAdapter { backend: opts.backend.clone() });
    }
    Ok(Report { adapters })
}
