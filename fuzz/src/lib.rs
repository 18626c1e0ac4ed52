//! What each fuzz target does with its input: run one of psi-gpu's file readers over the bytes
//! and check what it promises. Bad input must be one clear error (a single line), never a panic,
//! a hang or a huge allocation; good input must come back consistent with its header.
//!
//! Each returns whether the reader accepted the input. The fuzz targets in `fuzz_targets/` call
//! these; the root test suite includes this file too (`tests/commands/corpus.rs`) and runs every
//! corpus file through it.

use std::io::Cursor;
use std::path::Path;

use psi_gpu::io::{bmp, checkpoint, images::GrayPng, npy, tiff::TiffStack, weights::Weights};

/// An error must be one line that a user can read.
fn check_error(error: &impl std::fmt::Display) -> bool {
    let message = error.to_string();
    assert!(!message.is_empty() && !message.contains('\n'), "error is not one line: {message:?}");
    false
}

/// The `.npy` header parser: a header it accepts describes data that the input holds.
pub fn npy(data: &[u8]) -> bool {
    match npy::parse_header_bytes(data, Path::new("fuzz.npy")) {
        Ok(header) => {
            let start = usize::try_from(header.data_offset).expect("data offset fits");
            let end = start.checked_add(header.data_bytes()).expect("data end fits");
            assert!(end <= data.len(), "header promises {end} bytes, input has {}", data.len());
            let values = npy::to_f32(header.ty, &data[start..end]);
            assert_eq!(values.len(), header.len());
            true
        }
        Err(e) => check_error(&e),
    }
}

/// The BMP reader: the layout from the first bytes (what `read_bmp_layout` reads) equals the
/// layout from the whole file, and a decoded image has `width * height` pixels.
pub fn bmp(data: &[u8]) -> bool {
    let head = &data[..data.len().min(66)];
    let from_head = bmp::parse_layout(head, data.len());
    assert_eq!(from_head, bmp::parse_layout(data, data.len()));
    match bmp::decode_bmp(data) {
        Ok(image) => {
            let layout = from_head.expect("a decoded BMP has a valid layout");
            assert_eq!((image.width, image.height), (layout.width, layout.height));
            assert_eq!(image.pixels.len(), image.width * image.height);
            true
        }
        Err(message) => check_error(&message),
    }
}

/// The PNG bucket-image reader: every row has `width` gray samples, and there are `height` rows.
pub fn png(data: &[u8]) -> bool {
    let result = GrayPng::new(Cursor::new(data), Path::new("fuzz.png")).and_then(|png| {
        let (width, height, size) = (png.width, png.height, png.ty.size());
        let mut rows = 0usize;
        png.for_each_row(|row| {
            assert_eq!(row.len(), width * size);
            rows += 1;
            Ok(())
        })?;
        assert_eq!(rows, height);
        Ok(())
    });
    match result {
        Ok(()) => true,
        Err(e) => check_error(&e),
    }
}

/// The TIFF stack reader (it reads files, so the input goes through a file of this process's
/// own): a stack it opens hands out bands of `C x rows x W` samples — all of it when that is at
/// most 16 MiB, else its first rows.
pub fn tiff(data: &[u8]) -> bool {
    let path = std::env::temp_dir().join(format!("psi-gpu-fuzz-{}.tif", std::process::id()));
    std::fs::write(&path, data).expect("write the fuzz input");
    let result = TiffStack::open(&path).and_then(|mut stack| {
        let [c, h, w] = stack.shape();
        let size = stack.ty().size();
        let rows = if c * h * w * size <= 16 << 20 { h } else { h.min(2) };
        let band = stack.read_rows(0..rows)?;
        assert_eq!(band.len(), c * rows * w * size, "a band of {c} x {rows} x {w}");
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(()) => true,
        Err(e) => check_error(&e),
    }
}

/// The safetensors loaders: weights (with their metadata scales) and training checkpoints.
pub fn safetensors(data: &[u8]) -> bool {
    let path = Path::new("fuzz.safetensors");
    let weights = match Weights::parse(path, data) {
        Ok(weights) => {
            for (name, t) in &weights.tensors {
                let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                assert_eq!(n, Some(t.data.len()), "tensor {name}");
            }
            for key in weights.metadata.keys() {
                if let Err(e) = weights.metadata_f32(key) {
                    check_error(&e);
                }
            }
            true
        }
        Err(e) => check_error(&e),
    };
    let checkpoint = match checkpoint::parse(path, data) {
        Ok((_, optimizer, _)) => {
            if let Some(o) = optimizer {
                assert_eq!(o.m.len(), o.v.len());
            }
            true
        }
        Err(e) => check_error(&e),
    };
    weights || checkpoint
}

/// A target's check: whether the reader accepted the input.
pub type Check = fn(&[u8]) -> bool;

/// The targets by name, as the folders of `fuzz/corpus/` are named.
pub const TARGETS: [(&str, Check); 5] =
    [("npy", npy), ("bmp", bmp), ("png", png), ("safetensors", safetensors), ("tiff", tiff)];
