//! Which adapter to open, as `--adapter`, `PSI_GPU_ADAPTER` and the Python `Engine(adapter=…)`
//! spell it: an index in `psi-gpu info`'s order (`1`), a PCI bus id (`0000:65:00.0`, or without
//! the domain, `65:00.0`) or a case-insensitive substring of the adapter's name (`llvmpipe`).
//!
//! The PCI bus id is the way to pin a process to one GPU: Vulkan ignores
//! `CUDA_VISIBLE_DEVICES`, and indices are counted over every adapter the backend shows.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterChoice {
    /// Position in the preference order `psi-gpu info` lists.
    Index(usize),
    /// `DDDD:BB:DD.F` (lowercase hex, as wgpu reports it) or `BB:DD.F`.
    PciBusId(String),
    /// A substring of the adapter's name, lowercase.
    Name(String),
}

/// `BB:DD.F` or `DDDD:BB:DD.F` in hex digits.
fn is_pci_bus_id(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let (rest, function) = match s.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let ok_tail = |b: &str, d: &str| hex(b, 2) && hex(d, 2) && hex(function, 1);
    match parts[..] {
        [b, d] => ok_tail(b, d),
        [dom, b, d] => hex(dom, 4) && ok_tail(b, d),
        _ => false,
    }
}

impl FromStr for AdapterChoice {
    type Err = Error;

    /// Digits are an index, a PCI bus id is one, anything else a name substring; empty is refused.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::Invalid(
                "--adapter '': expected an index (0), a PCI bus id (0000:65:00.0) or part of a name".into(),
            ));
        }
        if t.chars().all(|c| c.is_ascii_digit()) {
            return t
                .parse()
                .map(AdapterChoice::Index)
                .map_err(|_| Error::Invalid(format!("--adapter '{t}': too large")));
        }
        if is_pci_bus_id(t) {
            return Ok(AdapterChoice::PciBusId(t.to_ascii_lowercase()));
        }
        Ok(AdapterChoice::Name(t.to_lowercase()))
    }
}

impl fmt::Display for AdapterChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterChoice::Index(i) => write!(f, "index {i}"),
            AdapterChoice::PciBusId(id) => write!(f, "PCI bus id {id}"),
            AdapterChoice::Name(n) => write!(f, "name containing '{n}'"),
        }
    }
}

impl AdapterChoice {
    /// Whether the adapter at `index` with `name` and `pci_bus_id` (empty when not reported) is
    /// the one chosen.
    pub fn matches(&self, index: usize, name: &str, pci_bus_id: &str) -> bool {
        match self {
            AdapterChoice::Index(i) => *i == index,
            AdapterChoice::PciBusId(id) => {
                let have = pci_bus_id.to_ascii_lowercase();
                !have.is_empty() && (have == *id || have.split_once(':').is_some_and(|(_, rest)| rest == id))
            }
            AdapterChoice::Name(n) => name.to_lowercase().contains(n.as_str()),
        }
    }

    /// The position of the first of `adapters` (index, name, PCI bus id) that is the one chosen.
    pub fn select<'a>(
        &self,
        adapters: impl IntoIterator<Item = (usize, &'a str, &'a str)>,
        backend: &str,
    ) -> Result<usize> {
        let list: Vec<(usize, &str, &str)> = adapters.into_iter().collect();
        if let AdapterChoice::Index(index) = self
            && *index >= list.len()
        {
            return Err(Error::AdapterIndex { index: *index, count: list.len(), backend: backend.into() });
        }
        list.iter().position(|&(i, name, bus)| self.matches(i, name, bus)).ok_or_else(|| {
            let seen: Vec<String> = list
                .iter()
                .map(
                    |(i, name, bus)| {
                        if bus.is_empty() { format!("{i}: {name}") } else { format!("{i}: {name} [{bus}]") }
                    },
                )
                .collect();
            Error::AdapterNotFound { choice: self.to_string(), backend: backend.into(), available: seen.join(", ") }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse() {
        assert_eq!("1".parse::<AdapterChoice>().unwrap(), AdapterChoice::Index(1));
        assert_eq!("0000:65:00.0".parse::<AdapterChoice>().unwrap(), AdapterChoice::PciBusId("0000:65:00.0".into()));
        assert_eq!("65:0A.1".parse::<AdapterChoice>().unwrap(), AdapterChoice::PciBusId("65:0a.1".into()));
        assert_eq!(" LLVMpipe ".parse::<AdapterChoice>().unwrap(), AdapterChoice::Name("llvmpipe".into()));
        // Not a bus id: wrong digit counts fall back to a name.
        assert_eq!("65:0.0".parse::<AdapterChoice>().unwrap(), AdapterChoice::Name("65:0.0".into()));
        assert!("".parse::<AdapterChoice>().is_err());
    }

    #[test]
    fn selection_by_each_form() {
        let list = [(0, "NVIDIA H100", "0000:65:00.0"), (1, "NVIDIA H100", "0000:b3:00.0"), (2, "llvmpipe", "")];
        let pick = |s: &str| s.parse::<AdapterChoice>().unwrap().select(list, "auto");
        assert_eq!(pick("1").unwrap(), 1);
        assert_eq!(pick("0000:B3:00.0").unwrap(), 1);
        assert_eq!(pick("b3:00.0").unwrap(), 1);
        assert_eq!(pick("pipe").unwrap(), 2);
        assert_eq!(pick("h100").unwrap(), 0);
        let e = pick("0000:17:00.0").unwrap_err().to_string();
        assert!(e.contains("PCI bus id 0000:17:00.0") && e.contains("1: NVIDIA H100 [0000:b3:00.0]"), "{e}");
        assert!(matches!(pick("3"), Err(Error::AdapterIndex { index: 3, count: 3, .. })));
        assert!(pick("radeon").is_err());
    }
}
