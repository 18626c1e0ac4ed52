//! File-to-file conversions of arrays, streamed in bands of rows: bucket frames `(C, H, W)`
//! between `.npy` and TIFF stacks (the type kept: u8, u16, f32; u32 pages become f32), and height
//! maps `(H, W)` between `.npy`, float TIFF and X3P (a one-page TIFF is a map: it becomes an
//! `(H, W)` npy). The output format is its extension's
//! ([`MapFormat`]); every output goes through the atomic writer.

use std::path::Path;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::frame_source::{FrameSource, looks_like_tiff};
use crate::io::height_map::{MapFormat, MapWriter};
use crate::io::images::ConvertInfo;
use crate::io::preview::{MapReader, band_rows};
use crate::io::tiff::TiffStack;
use crate::io::x3p::{X3pMeta, file_date};

/// Rows of a frame converted per band (times the channels and width: bounded memory).
const FRAME_BAND_ROWS: usize = 64;

/// Whether `path` is a height map rather than a frame: an X3P, a one-page TIFF or a 2-D `.npy`.
fn is_map(path: &Path) -> bool {
    let mut head = [0u8; 4];
    let _ = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    if looks_like_tiff(path) {
        return TiffStack::open(path).is_ok_and(|t| t.shape()[0] == 1);
    }
    &head == b"PK\x03\x04" || crate::io::npy::read_header(path).is_ok_and(|h| h.shape.len() == 2)
}

/// Convert `input` to `output` (see the module docs): a map when the input is a map or the output
/// an X3P, else a frame. `pixel_size_um` is the X3P's lateral step.
pub fn convert_array(input: &Path, output: &Path, pixel_size_um: f64) -> Result<ConvertInfo> {
    if is_map(input) || MapFormat::of(output) == MapFormat::X3p {
        convert_map(input, output, pixel_size_um)
    } else {
        convert_frame(input, output)
    }
}

/// A `(C, H, W)` frame (npy or TIFF) to npy or TIFF.
fn convert_frame(input: &Path, output: &Path) -> Result<ConvertInfo> {
    let mut src = FrameSource::open(input)?;
    let [c, h, w] = src.frame_shape()?;
    let ty = src.ty();
    if ty == HostType::F16 && MapFormat::of(output) == MapFormat::Tiff {
        return Err(Error::Invalid(format!(
            "{}: a float16 frame has no TIFF form here: convert it to float32 first (a.astype(np.float32))",
            input.display()
        )));
    }
    let mut out = MapWriter::new(output, ty, &[c, h, w], &X3pMeta::default())?;
    let s = ty.size();
    for y0 in (0..h).step_by(FRAME_BAND_ROWS) {
        let y1 = (y0 + FRAME_BAND_ROWS).min(h);
        let band = src.read_rows(y0..y1)?;
        for (ch, rows) in band.chunks_exact((y1 - y0) * w * s).enumerate() {
            out.write_at(((ch * h + y0) * w * s) as u64, rows)?;
        }
    }
    out.finish()?;
    Ok(ConvertInfo { channels: c, height: h, width: w, dtype: ty, files: vec![input.to_path_buf()] })
}

/// An `(H, W)` map (npy, one-page TIFF or X3P) to npy, TIFF or X3P: its type kept, except that
/// X3P holds f32 (µm in, metres on disk) and TIFF has no f16 (written as f32).
fn convert_map(input: &Path, output: &Path, pixel_size_um: f64) -> Result<ConvertInfo> {
    let mut src = MapReader::open(input)?;
    let (h, w) = (src.height(), src.width());
    let ty = match (src.dtype(), MapFormat::of(output)) {
        (_, MapFormat::X3p) | (HostType::F16, MapFormat::Tiff) => HostType::F32,
        (ty, _) => ty,
    };
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let meta = X3pMeta {
        pixel_size_um,
        date: file_date(input),
        comment: format!("heights in µm (stored in m) converted by psi-gpu {} from {name}", env!("CARGO_PKG_VERSION")),
        ..X3pMeta::default()
    };
    let mut out = MapWriter::new(output, ty, &[h, w], &meta)?;
    let mut values = Vec::new();
    let mut bytes = Vec::new();
    while src.rows_left() > 0 {
        let rows = band_rows(w).min(src.rows_left());
        src.read_band(rows, &mut values)?;
        bytes.clear();
        match ty {
            HostType::U8 => bytes.extend(values.iter().map(|&v| v as u8)),
            HostType::U16 => bytes.extend(values.iter().flat_map(|&v| (v as u16).to_le_bytes())),
            HostType::F16 => bytes.extend(values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes())),
            HostType::F32 => bytes.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        }
        out.write(&bytes)?;
    }
    out.finish()?;
    Ok(ConvertInfo { channels: 1, height: h, width: w, dtype: ty, files: vec![input.to_path_buf()] })
}

/// Write `pred - truth` (µm; NaN where `pred` is NaN or `mask` is 0) as an `(H, W)` f32 map at
/// `output`, in its extension's format, streamed in bands: the data of an error map.
pub fn write_difference(pred: &Path, truth: &Path, mask: Option<&Path>, output: &Path) -> Result<()> {
    let mut p = MapReader::open(pred)?;
    let mut t = MapReader::open(truth)?;
    p.check_same_shape("prediction", &t, "truth")?;
    let mut m = mask.map(MapReader::open).transpose()?;
    if let Some(m) = &m {
        p.check_same_shape("prediction", m, "mask")?;
    }
    let (h, w) = (p.height(), p.width());
    let meta =
        X3pMeta {
            date: file_date(pred), comment: "prediction - truth, µm (stored in m)".into(), ..X3pMeta::default()
        };
    let mut out = MapWriter::new(output, HostType::F32, &[h, w], &meta)?;
    let (mut a, mut b, mut keep) = (Vec::new(), Vec::new(), Vec::new());
    while p.rows_left() > 0 {
        let rows = band_rows(w).min(p.rows_left());
        p.read_band(rows, &mut a)?;
        t.read_band(rows, &mut b)?;
        if let Some(m) = m.as_mut() {
            m.read_band(rows, &mut keep)?;
        }
        let e: Vec<u8> = (0..a.len())
            .flat_map(|i| {
                let masked = keep.get(i).is_some_and(|&k| k == 0.0);
                (if masked { f32::NAN } else { a[i] - b[i] }).to_le_bytes()
            })
            .collect();
        out.write(&e)?;
    }
    out.finish()
}
