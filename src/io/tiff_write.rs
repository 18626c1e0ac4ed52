//! A streaming writer of gray TIFF stacks: a `(C, H, W)` (or `(H, W)`) u8, u16 or f32 array as
//! C uncompressed pages, little-endian, BigTIFF when the file would pass 4 GiB. Data is laid out
//! as a C-order array right after the header, so it is written like an `.npy` ([`TiffWriter`]
//! has [`NpyWriter`](crate::io::npy::NpyWriter)'s `write`/`write_at`/`finish`); the directories
//! (one per page, strips of about 64 KiB) follow the data and are written by `finish`. Everything
//! goes through the atomic writer; the same array gives the same bytes. What tifffile, ImageJ and
//! Gwyddion read: BlackIsZero, SampleFormat 1 (unsigned) or 3 (IEEE float).

use std::io::{Seek, SeekFrom};
use std::path::Path;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;

/// Bytes a strip holds at most (at least one row).
const STRIP_BYTES: usize = 64 << 10;
/// Files whose data passes this are written as BigTIFF (room left for the directories).
const CLASSIC_LIMIT: u64 = (4 << 30) - (256 << 20);

/// TIFF field types.
const SHORT: u16 = 3;
const LONG: u16 = 4;
const LONG8: u16 = 16;

fn tiff_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Invalid(format!("{}: {}", path.display(), message.into()))
}

/// A stack being written; see the module docs.
#[derive(Debug)]
pub struct TiffWriter {
    file: AtomicFile,
    ty: HostType,
    pages: usize,
    height: usize,
    width: usize,
    big: bool,
    expected: u64,
    written: u64,
}

impl TiffWriter {
    /// Start a stack of `shape` `(H, W)` (one page) or `(C, H, W)` of `ty` (u8, u16 or f32).
    pub fn new(path: &Path, ty: HostType, shape: &[usize]) -> Result<TiffWriter> {
        Self::create(path, ty, shape, false)
    }

    /// [`TiffWriter::new`], BigTIFF also when the data is small if `big`.
    fn create(path: &Path, ty: HostType, shape: &[usize], big: bool) -> Result<TiffWriter> {
        let (pages, height, width) = match *shape {
            [h, w] => (1, h, w),
            [c, h, w] => (c, h, w),
            _ => return Err(tiff_err(path, format!("a TIFF holds (H, W) or (C, H, W) arrays, not shape {shape:?}"))),
        };
        if ty == HostType::F16 {
            return Err(tiff_err(path, "float16 data is written as .npy; TIFF pages here are u8, u16 or f32"));
        }
        if pages == 0 || height == 0 || width == 0 || u32::try_from(height.max(width)).is_err() {
            return Err(tiff_err(
                path,
                format!("shape {shape:?} cannot be a TIFF stack (empty or over 2³² pixels a side)"),
            ));
        }
        let expected = (pages as u64) * (height as u64) * (width as u64) * ty.size() as u64;
        let big = big || expected > CLASSIC_LIMIT;
        let file = AtomicFile::with_capacity(path, 1 << 20)?;
        let mut w = TiffWriter { file, ty, pages, height, width, big, expected, written: 0 };
        let first_ifd = w.data_start() + expected;
        let first_ifd = first_ifd.div_ceil(8) * 8;
        let header: Vec<u8> = if big {
            [&b"II+\0"[..], &8u16.to_le_bytes(), &0u16.to_le_bytes(), &first_ifd.to_le_bytes()].concat()
        } else {
            [&b"II*\0"[..], &(first_ifd as u32).to_le_bytes()].concat()
        };
        w.file.write_all(&header)?;
        Ok(w)
    }

    fn data_start(&self) -> u64 {
        if self.big { 16 } else { 8 }
    }

    /// Append data bytes (little-endian, C order).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let total = self.written + bytes.len() as u64;
        if total > self.expected {
            let path = self.file.path().to_path_buf();
            return Err(tiff_err(
                &path,
                format!("too much data: the stack holds {} bytes, got {total}", self.expected),
            ));
        }
        self.file.write_all(bytes)?;
        self.written = total;
        Ok(())
    }

    /// Write data bytes at byte `offset` of the C-order data; each byte exactly once overall.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let path = self.file.path().to_path_buf();
        if offset + bytes.len() as u64 > self.expected || self.written + bytes.len() as u64 > self.expected {
            return Err(tiff_err(&path, format!("write past the end of a {}-byte stack", self.expected)));
        }
        let pos = self.data_start() + offset;
        self.file.writer()?.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(&path, e))?;
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Check that all data was written, write the directories and commit the file.
    pub fn finish(mut self) -> Result<()> {
        let path = self.file.path().to_path_buf();
        if self.written != self.expected {
            return Err(tiff_err(
                &path,
                format!("incomplete data: expected {} bytes, got {}", self.expected, self.written),
            ));
        }
        let end = self.data_start() + self.expected;
        let mut at = end.div_ceil(8) * 8;
        let mut tail = vec![0u8; (at - end) as usize];
        for page in 0..self.pages {
            let ifd = self.directory(page, at, page + 1 < self.pages);
            at += ifd.len() as u64;
            tail.extend_from_slice(&ifd);
        }
        self.file.writer()?.seek(SeekFrom::Start(end)).map_err(|e| Error::io(&path, e))?;
        self.file.write_all(&tail)?;
        self.file.commit()
    }

    /// The directory of `page` placed at file offset `at` (its arrays right after it, the next
    /// directory right after those when `more`).
    fn directory(&self, page: usize, at: u64, more: bool) -> Vec<u8> {
        let s = self.ty.size();
        let row_bytes = self.width * s;
        let rps = (STRIP_BYTES / row_bytes).clamp(1, self.height);
        let strips = self.height.div_ceil(rps);
        let page_start = self.data_start() + (page * self.height * row_bytes) as u64;
        let offsets: Vec<u64> = (0..strips).map(|k| page_start + (k * rps * row_bytes) as u64).collect();
        let counts: Vec<u64> = (0..strips).map(|k| (rps.min(self.height - k * rps) * row_bytes) as u64).collect();
        let (bits, format) = match self.ty {
            HostType::U8 => (8, 1),
            HostType::U16 => (16, 1),
            _ => (32, 3),
        };
        let long = if self.big { LONG8 } else { LONG };
        let entries: [(u16, u16, Vec<u64>); 11] = [
            (256, LONG, vec![self.width as u64]),
            (257, LONG, vec![self.height as u64]),
            (258, SHORT, vec![bits]),
            (259, SHORT, vec![1]),
            (262, SHORT, vec![1]),
            (273, long, offsets),
            (277, SHORT, vec![1]),
            (278, LONG, vec![rps as u64]),
            (279, long, counts),
            (284, SHORT, vec![1]),
            (339, SHORT, vec![format]),
        ];
        encode_ifd(&entries, at, self.big, more)
    }
}

/// The bytes of one directory at file offset `at` (8-aligned) followed by its out-of-line
/// values (each 8-aligned); its next-directory pointer is the offset right after them when
/// `more`, else 0. Classic: 2-byte entry count, 12-byte entries, 4-byte values and pointer;
/// BigTIFF: 8, 20 and 8.
pub(crate) fn encode_ifd(entries: &[(u16, u16, Vec<u64>)], at: u64, big: bool, more: bool) -> Vec<u8> {
    let (n_len, entry_len, inline) = if big { (8, 20, 8) } else { (2, 12, 4) };
    let ifd_len = (n_len + entries.len() * entry_len + inline).div_ceil(8) * 8;
    let value = |ty: u16, v: u64| -> Vec<u8> {
        match ty {
            SHORT => (v as u16).to_le_bytes().to_vec(),
            LONG => (v as u32).to_le_bytes().to_vec(),
            _ => v.to_le_bytes().to_vec(),
        }
    };
    let push_uint = |out: &mut Vec<u8>, v: u64, len: usize| out.extend_from_slice(&v.to_le_bytes()[..len]);
    let mut head = Vec::with_capacity(ifd_len);
    let mut extra: Vec<u8> = Vec::new();
    push_uint(&mut head, entries.len() as u64, n_len);
    for (tag, ty, values) in entries {
        head.extend_from_slice(&tag.to_le_bytes());
        head.extend_from_slice(&ty.to_le_bytes());
        push_uint(&mut head, values.len() as u64, inline);
        let bytes: Vec<u8> = values.iter().flat_map(|&v| value(*ty, v)).collect();
        if bytes.len() <= inline {
            let mut field = bytes;
            field.resize(inline, 0);
            head.extend_from_slice(&field);
        } else {
            push_uint(&mut head, at + (ifd_len + extra.len()) as u64, inline);
            extra.extend_from_slice(&bytes);
            extra.resize(extra.len().div_ceil(8) * 8, 0);
        }
    }
    let next = if more { at + (ifd_len + extra.len()) as u64 } else { 0 };
    push_uint(&mut head, next, inline);
    head.resize(ifd_len, 0);
    head.extend_from_slice(&extra);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::tiff::TiffStack;

    /// Classic and BigTIFF, one and several pages, each type, strips of several rows and of one:
    /// the `tiff` crate's parser (through [`TiffStack`]) reads back what was written.
    #[test]
    fn stacks_read_back() {
        let dir = std::env::temp_dir().join(format!("psi-gpu-tiffw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (ty, shape) in [
            (HostType::U8, vec![3, 5, 7]),
            (HostType::U16, vec![2, 300, 200]),
            (HostType::F32, vec![9, 11]),
            (HostType::F32, vec![2, 3, 20000]),
        ] {
            for big in [false, true] {
                let path = dir.join(format!("{}-{big}.tif", ty.name()));
                let n: usize = shape.iter().product::<usize>() * ty.size();
                let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
                let mut w = TiffWriter::create(&path, ty, &shape, big).unwrap();
                let half = n / 2;
                w.write_at(half as u64, &data[half..]).unwrap();
                w.write_at(0, &data[..half]).unwrap();
                w.finish().unwrap();
                let mut r = TiffStack::open(&path).unwrap();
                let c = if shape.len() == 3 { shape[0] } else { 1 };
                assert_eq!(r.shape(), [c, shape[shape.len() - 2], shape[shape.len() - 1]]);
                assert_eq!(r.ty(), ty);
                assert!(r.read_rows(0..r.shape()[1]).unwrap() == data, "{ty:?} {shape:?} big {big}");
                assert_eq!(&std::fs::read(&path).unwrap()[..4], if big { b"II+\0" } else { b"II*\0" });
            }
        }
        let path = dir.join("short.tif");
        let mut w = TiffWriter::new(&path, HostType::U8, &[2, 2]).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        assert!(w.finish().is_err() && !path.exists(), "incomplete data leaves no file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
