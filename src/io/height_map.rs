//! Data maps out, in the format `-o`'s extension names: `.tif`/`.tiff` a float (or u8) gray TIFF
//! ([`crate::io::tiff_write`]), `.x3p` an ISO 25178-72 surface ([`crate::io::x3p`], heights
//! only), anything else `.npy` (the default, as before). [`MapWriter`] streams like
//! [`NpyWriter`]: `write`, `write_at`, `finish`, through the atomic writer.

use std::path::Path;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::npy::NpyWriter;
use crate::io::tiff_write::TiffWriter;
use crate::io::x3p::{X3pMeta, X3pWriter};

/// A data file's format, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapFormat {
    Npy,
    Tiff,
    X3p,
}

impl MapFormat {
    /// `.tif`/`.tiff` TIFF, `.x3p` X3P (any case), else npy.
    pub fn of(path: &Path) -> MapFormat {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("tif" | "tiff") => MapFormat::Tiff,
            Some("x3p") => MapFormat::X3p,
            _ => MapFormat::Npy,
        }
    }

    /// The format `--format` names: `npy`, `tif`/`tiff` or `x3p` (any case).
    pub fn parse(name: &str) -> Option<MapFormat> {
        match name.to_ascii_lowercase().as_str() {
            "npy" => Some(MapFormat::Npy),
            "tif" | "tiff" => Some(MapFormat::Tiff),
            "x3p" => Some(MapFormat::X3p),
            _ => None,
        }
    }

    /// The extension [`MapFormat::of`] reads as this format (no dot).
    pub fn extension(self) -> &'static str {
        match self {
            MapFormat::Npy => "npy",
            MapFormat::Tiff => "tif",
            MapFormat::X3p => "x3p",
        }
    }

    /// Refuse (before any work) a map of `what` with `channels` channels of `ty` that this
    /// format cannot hold: X3P holds one f32 height map.
    pub fn check(path: &Path, role: &str, what: &str, ty: HostType, channels: usize) -> Result<()> {
        if MapFormat::of(path) == MapFormat::X3p && (ty != HostType::F32 || channels != 1) {
            return Err(Error::Invalid(format!(
                "{role} {}: an X3P file holds one height map; {what} is not one: write it as .npy or .tif",
                path.display()
            )));
        }
        Ok(())
    }
}

/// Whether `path` names an array file (`.npy`, `.tif`, `.tiff`, `.x3p`) rather than a folder of
/// images.
pub fn is_array_file(path: &Path) -> bool {
    !path.is_dir()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["npy", "tif", "tiff", "x3p"].iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A map being written; see the module docs.
#[derive(Debug)]
pub enum MapWriter {
    Npy(NpyWriter),
    Tiff(TiffWriter),
    X3p(Box<X3pWriter>),
}

impl MapWriter {
    /// Start the map of `shape` (`(H, W)` or `(C, H, W)`) of `ty` at `path`, in the format of its
    /// extension; an X3P takes `(H, W)` (or `(1, H, W)`) f32 heights in µm and `meta`.
    pub fn new(path: &Path, ty: HostType, shape: &[usize], meta: &X3pMeta) -> Result<MapWriter> {
        match MapFormat::of(path) {
            MapFormat::Npy => NpyWriter::new(path, ty, shape).map(MapWriter::Npy),
            MapFormat::Tiff => TiffWriter::new(path, ty, shape).map(MapWriter::Tiff),
            MapFormat::X3p => {
                let channels = if shape.len() == 3 { shape[0] } else { 1 };
                MapFormat::check(path, "the output", &format!("a {shape:?} {} array", ty.name()), ty, channels)?;
                let &[h, w] = &shape[shape.len().saturating_sub(2)..] else {
                    return Err(Error::Shape(format!("{}: an X3P map is (H, W), not {shape:?}", path.display())));
                };
                X3pWriter::new(path, [h, w], meta).map(|w| MapWriter::X3p(Box::new(w)))
            }
        }
    }

    /// Append little-endian data bytes, C order.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            MapWriter::Npy(w) => w.write(bytes),
            MapWriter::Tiff(w) => w.write(bytes),
            MapWriter::X3p(w) => w.write(bytes),
        }
    }

    /// Write data bytes at byte `offset` of the C-order data (an X3P only in order).
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        match self {
            MapWriter::Npy(w) => w.write_at(offset, bytes),
            MapWriter::Tiff(w) => w.write_at(offset, bytes),
            MapWriter::X3p(w) => w.write_at(offset, bytes),
        }
    }

    /// Check the data is complete and commit the file.
    pub fn finish(self) -> Result<()> {
        match self {
            MapWriter::Npy(w) => w.finish(),
            MapWriter::Tiff(w) => w.finish(),
            MapWriter::X3p(w) => w.finish(),
        }
    }
}
