//! One reader for every bucket-frame file: a `(C, H, W)` `.npy`, a multi-page TIFF (or ImageJ
//! hyperstack), or a folder of single-page TIFFs (`bucket_00.tif …`). Commands open a
//! [`FrameSource`] and read bands of rows or regions from it, whatever the format; memory is
//! bounded by what is asked for. The format is told by the file's first bytes, not its name.

use std::io::Read;
use std::ops::Range;
use std::path::Path;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::bands::Bands;
use crate::io::images::{ImageFormat, find_bucket_images};
use crate::io::npy::NpyReader;
use crate::io::row_sink::RowSink;
use crate::io::tiff::{TiffStack, is_tiff};

/// An open bucket frame.
#[derive(Debug)]
pub enum FrameSource {
    Npy(NpyReader),
    Tiff(TiffStack),
}

/// Whether the file at `path` starts like a TIFF (false when it cannot be read).
pub fn looks_like_tiff(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && is_tiff(&head)
}

impl FrameSource {
    /// Open `path`: a folder of single-page TIFF buckets, a TIFF stack, or a `.npy`.
    pub fn open(path: &Path) -> Result<FrameSource> {
        if path.is_dir() {
            let files = find_bucket_images(path, None)?;
            if let Some(other) = files.iter().find(|f| ImageFormat::of_path(f) != Some(ImageFormat::Tiff)) {
                return Err(Error::Invalid(format!(
                    "{}: {} is not a TIFF: a folder of BMP/PNG buckets is read by `psi-gpu convert {} frame.npy`; \
                     frames are read from .npy, TIFF stacks or folders of single-page TIFFs",
                    path.display(),
                    other.display(),
                    path.display()
                )));
            }
            return Ok(FrameSource::Tiff(TiffStack::open_pages(path, &files)?));
        }
        if looks_like_tiff(path) {
            return Ok(FrameSource::Tiff(TiffStack::open(path)?));
        }
        Ok(FrameSource::Npy(NpyReader::open(path)?))
    }

    pub fn path(&self) -> &Path {
        match self {
            FrameSource::Npy(r) => r.path(),
            FrameSource::Tiff(t) => t.path(),
        }
    }

    /// Element type of the bytes handed out.
    pub fn ty(&self) -> HostType {
        match self {
            FrameSource::Npy(r) => r.header().ty,
            FrameSource::Tiff(t) => t.ty(),
        }
    }

    /// The array's shape (a TIFF stack's is always `(C, H, W)`).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            FrameSource::Npy(r) => r.header().shape.clone(),
            FrameSource::Tiff(t) => t.shape().to_vec(),
        }
    }

    /// `(C, H, W)`, non-empty, or an error naming the file.
    pub fn frame_shape(&self) -> Result<[usize; 3]> {
        match self.shape()[..] {
            [c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
            ref shape => Err(Error::Npy {
                path: self.path().to_path_buf(),
                message: format!("expected a non-empty (channels, height, width) array, got shape {shape:?}"),
            }),
        }
    }

    /// Rows `rows` of every channel, as the little-endian bytes of a `(C, rows.len(), W)` array.
    pub fn read_rows(&mut self, rows: Range<usize>) -> Result<Vec<u8>> {
        match self {
            FrameSource::Npy(r) => r.read_rows(rows),
            FrameSource::Tiff(t) => t.read_rows(rows),
        }
    }

    /// [`read_rows`](Self::read_rows) into `out` (e.g. straight into a staging buffer).
    pub fn read_rows_to(&mut self, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
        match self {
            FrameSource::Npy(r) => r.read_rows_to(rows, out),
            FrameSource::Tiff(t) => t.read_rows_to(rows, out),
        }
    }

    /// Every channel, `(C, H, W)`.
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        match self {
            FrameSource::Npy(r) => r.read_all(),
            FrameSource::Tiff(t) => t.read_rows(0..t.shape()[1]),
        }
    }

    /// The region `[y, x, h, w]` of every channel, as the bytes of a `(C, h, w)` array.
    pub fn read_region(&mut self, [y, x, h, w]: [usize; 4]) -> Result<Vec<u8>> {
        if let FrameSource::Npy(r) = self {
            return r.read_region([y, x, h, w]);
        }
        let [c, fh, fw] = self.frame_shape()?;
        if h == 0 || w == 0 || y + h > fh || x + w > fw {
            return Err(Error::Shape(format!(
                "region y={y} x={x} h={h} w={w} does not fit in the {fh} x {fw} frame {} (or is empty)",
                self.path().display()
            )));
        }
        let s = self.ty().size();
        let band = self.read_rows(y..y + h)?;
        let mut out = Vec::with_capacity(c * h * w * s);
        for row in band.chunks_exact(fw * s) {
            out.extend_from_slice(&row[x * s..(x + w) * s]);
        }
        Ok(out)
    }
}

impl Bands for FrameSource {
    fn ty(&self) -> HostType {
        FrameSource::ty(self)
    }

    fn frame_shape(&self) -> Result<[usize; 3]> {
        FrameSource::frame_shape(self)
    }

    fn read_rows(&mut self, rows: Range<usize>) -> Result<Vec<u8>> {
        FrameSource::read_rows(self, rows)
    }

    fn read_rows_to(&mut self, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
        FrameSource::read_rows_to(self, rows, out)
    }

    fn name(&self) -> String {
        self.path().display().to_string()
    }

    fn channel_unit(&self) -> &'static str {
        // A TIFF's channels are its pages (one per bucket).
        if matches!(self, FrameSource::Tiff(_)) { "channels (pages)" } else { "channels" }
    }
}
