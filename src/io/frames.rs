//! Frame sets held in host memory for training and fine-tuning: `(C, H, W)` frames — `.npy`
//! files, TIFF stacks, folders of single-page TIFF buckets (one frame), other folders expanded
//! to their `*.npy`/`*.tif`/`*.tiff` files, sorted — with optional `(H, W)` truth maps, and crops
//! of them.

use std::path::PathBuf;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::frame_source::FrameSource;
use crate::io::images::{ImageFormat, find_bucket_images};
use crate::io::npy::read_f32;

/// One frame in host memory: raw bytes `(C, H, W)` and, if known, its truth `(H, W)`.
pub struct Frame {
    pub ty: HostType,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub bytes: Vec<u8>,
    pub truth: Option<Vec<f32>>,
}

impl Frame {
    /// Bytes of the `(C, p, q)` crop at (y0, x0).
    pub fn crop(&self, y0: usize, x0: usize, p: usize, q: usize, out: &mut Vec<u8>) {
        let s = self.ty.size();
        for ch in 0..self.c {
            for y in y0..y0 + p {
                let row = (ch * self.h + y) * self.w;
                out.extend_from_slice(&self.bytes[(row + x0) * s..(row + x0 + q) * s]);
            }
        }
    }
}

/// `(C, H, W)` npy frames (folders expanded to their `*.npy`, sorted) with optional truth maps.
pub fn load_frames(files: &[PathBuf], truth_files: &[PathBuf]) -> Result<Vec<Frame>> {
    let mut paths = Vec::new();
    for p in files {
        let bucket_folder = p.is_dir()
            && find_bucket_images(p, None)
                .is_ok_and(|f| f.iter().all(|f| ImageFormat::of_path(f) == Some(ImageFormat::Tiff)));
        if p.is_dir() && !bucket_folder {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "npy" || x == "tif" || x == "tiff"))
                .collect();
            found.sort();
            paths.extend(found);
        } else {
            paths.push(p.clone());
        }
    }
    if !truth_files.is_empty() && truth_files.len() != paths.len() {
        return Err(Error::Invalid(format!("{} truth maps for {} frames", truth_files.len(), paths.len())));
    }
    if paths.is_empty() {
        return Err(Error::Invalid("no frames: the folders given hold no .npy or .tif files".into()));
    }
    let mut frames = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let mut r = FrameSource::open(path)?;
        let [c, h, w] = r.frame_shape()?;
        let truth = match truth_files.get(i) {
            Some(t) => {
                let (shape, v) = read_f32(t)?;
                if shape.iter().product::<usize>() != h * w {
                    return Err(Error::Shape(format!("{}: truth {shape:?} for a {h} x {w} frame", t.display())));
                }
                Some(v)
            }
            None => None,
        };
        let ty = r.ty();
        frames.push(Frame { ty, c, h, w, bytes: r.read_all()?, truth });
    }
    Ok(frames)
}
