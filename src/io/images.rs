//! Conversion between `(C, H, W)` `.npy` frames and folders of bucket images.
//!
//! The seed research code stores a frame as a folder of grayscale images `bucket_00.bmp`,
//! `bucket_01.bmp`, ... one per channel (channel = laser × buckets + bucket). [`images_to_npy`]
//! turns such a folder into a `.npy` frame and [`npy_to_images`] does the reverse.
//!
//! Images are 8-bit BMP ([`crate::io::bmp`]) or 8/16-bit PNG. 8-bit images become `uint8` frames
//! and 16-bit PNGs `uint16` frames; colour images are converted to gray with
//! [`luma8`]/[`luma16`] (`0.299 R + 0.587 G + 0.114 B`, exact for gray pixels), and alpha is
//! dropped. Both directions hold one image in memory at a time (PNG input is streamed row by
//! row unless interlaced), and every file is written under a temporary name and renamed into
//! place, so an error never leaves a half-written `.npy` or image behind.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::atomic::write_with;
use crate::io::bmp::{self, luma8, luma16};
use crate::io::frame_source::looks_like_tiff;
use crate::io::height_map::MapWriter;
use crate::io::npy::{NpyHeader, read_header};
use crate::io::tiff::TiffStack;
use crate::io::tiff_write::TiffWriter;
use crate::io::x3p::X3pMeta;

/// The file names [`images_to_npy`] looks for unless told otherwise: `{}` is the index.
pub const DEFAULT_PATTERN: &str = "bucket_{}";
/// What [`npy_to_images`] names its files: `bucket_` then the channel, two digits at least.
const OUTPUT_PREFIX: &str = "bucket_";

/// The image file formats of a bucket folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Uncompressed BMP: 8-bit only.
    Bmp,
    /// PNG: 8- or 16-bit.
    Png,
    /// Single-page gray TIFF (`.tif` or `.tiff`): 8-, 16-bit or float (see [`crate::io::tiff`]).
    Tiff,
}

impl ImageFormat {
    /// The file extension, without the dot: `bmp` or `png`.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Bmp => "bmp",
            ImageFormat::Png => "png",
            ImageFormat::Tiff => "tif",
        }
    }

    /// The format of a file extension (without the dot, any case; `tiff` is also TIFF).
    pub fn from_extension(ext: &str) -> Option<Self> {
        if ext.eq_ignore_ascii_case("tiff") {
            return Some(ImageFormat::Tiff);
        }
        [ImageFormat::Bmp, ImageFormat::Png, ImageFormat::Tiff]
            .into_iter()
            .find(|f| ext.eq_ignore_ascii_case(f.extension()))
    }

    /// The format of a file by its extension.
    pub fn of_path(path: &Path) -> Option<Self> {
        path.extension().and_then(|e| e.to_str()).and_then(Self::from_extension)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for ImageFormat {
    type Err = Error;

    /// `bmp`, `png` or `tif`/`tiff`, any case.
    fn from_str(s: &str) -> Result<Self> {
        ImageFormat::from_extension(s)
            .ok_or_else(|| Error::Invalid(format!("unknown image format '{s}': expected bmp, png or tif")))
    }
}

/// What a conversion read or wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertInfo {
    /// Number of channels: images in the folder, first axis of the frame.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Element type of the frame: `U8` for 8-bit images, `U16` for 16-bit PNGs.
    pub dtype: HostType,
    /// The image files read or written, in channel order.
    pub files: Vec<PathBuf>,
}

/// A file-name pattern: `prefix`, the index in decimal digits, `suffix`, then `.bmp` or `.png`
/// (only `format`'s extension when the pattern names one).
#[derive(Clone, Debug)]
struct Pattern {
    prefix: String,
    suffix: String,
    format: Option<ImageFormat>,
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "bad image name pattern '{pattern}': {why} (example: 'bucket_{{}}' matches bucket_00.bmp, \
                 bucket_01.png, ...)"
            ))
        };
        if pattern.contains(['/', '\\']) {
            return Err(bad("it is a file name, without folders"));
        }
        let Some((prefix, rest)) = pattern.split_once("{}") else {
            return Err(bad("it needs '{}' where the index goes"));
        };
        if rest.contains("{}") {
            return Err(bad("it has more than one '{}'"));
        }
        let (suffix, format) = match rest.rsplit_once('.') {
            Some((stem, ext)) => match ImageFormat::from_extension(ext) {
                Some(format) => (stem, Some(format)),
                None => (rest, None),
            },
            None => (rest, None),
        };
        Ok(Pattern { prefix: prefix.to_string(), suffix: suffix.to_string(), format })
    }

    /// The index and format of a file named `name`, if the name matches.
    fn matches(&self, name: &str) -> Option<(usize, ImageFormat)> {
        let (stem, ext) = name.rsplit_once('.')?;
        let format = ImageFormat::from_extension(ext)?;
        if self.format.is_some_and(|f| f != format) {
            return None;
        }
        let digits = stem.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((digits.parse().ok()?, format))
    }

    /// How a user would write a matching name, for messages: `bucket_NN.bmp, .png or .tif`.
    fn describe(&self) -> String {
        let ext = match self.format {
            Some(f) => format!(".{f}"),
            None => ".bmp, .png or .tif".to_string(),
        };
        format!("{}NN{}{ext}", self.prefix, self.suffix)
    }
}

/// The images in `dir` whose names match `pattern`, by index (files that do not match are
/// ignored). Two files with one index (`bucket_03.bmp` and `bucket_03.png`) are an error.
fn scan(dir: &Path, pattern: &Pattern) -> Result<BTreeMap<usize, PathBuf>> {
    let mut found: BTreeMap<usize, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some((index, _)) = name.to_str().and_then(|n| pattern.matches(n)) else {
            continue;
        };
        let path = entry.path();
        if let Some(other) = found.get(&index) {
            let (a, b) = if *other < path { (other.clone(), path) } else { (path, other.clone()) };
            return Err(Error::Invalid(format!(
                "both {} and {} are image {index}: keep one of them",
                a.display(),
                b.display()
            )));
        }
        found.insert(index, path);
    }
    Ok(found)
}

/// The bucket images in `dir`, in channel order: the files matching `pattern` (default
/// [`DEFAULT_PATTERN`], `{}` standing for the index in decimal digits, any zero padding; with no
/// extension in the pattern both `.bmp` and `.png` match, any case), numbered contiguously
/// from 0. A gap, no image at all, or two files for one index are errors.
pub fn find_bucket_images(dir: &Path, pattern: Option<&str>) -> Result<Vec<PathBuf>> {
    let pattern = Pattern::parse(pattern.unwrap_or(DEFAULT_PATTERN))?;
    let found = scan(dir, &pattern)?;
    if found.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no bucket images: expected files named {} numbered from 00",
            dir.display(),
            pattern.describe()
        )));
    }
    if let Some(missing) = (0..found.len()).find(|i| !found.contains_key(i)) {
        let indices: Vec<String> = found.keys().map(ToString::to_string).collect();
        return Err(Error::Invalid(format!(
            "{}: image {missing} ({}) is missing: images must be numbered contiguously from 00, found \
             numbers {}",
            dir.display(),
            pattern.describe().replace("NN", &format!("{missing:02}")),
            indices.join(", ")
        )));
    }
    Ok(found.into_values().collect())
}

/// Size and sample type of one image, from its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ImageHeader {
    width: usize,
    height: usize,
    /// `U8` or `U16`.
    ty: HostType,
}

fn image_format(path: &Path) -> Result<ImageFormat> {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(ImageFormat::from_extension)
        .ok_or_else(|| Error::Invalid(format!("{}: not a .bmp, .png or .tif file", path.display())))
}

fn png_err(path: &Path, e: png::DecodingError) -> Error {
    match e {
        png::DecodingError::IoError(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => Error::io(path, e),
        png::DecodingError::IoError(_) => {
            Error::Invalid(format!("{}: truncated: the file ends inside the PNG", path.display()))
        }
        other => Error::Invalid(format!("{}: cannot read the PNG: {other}", path.display())),
    }
}

/// A PNG opened to be read as gray, palette and low bit depths expanded (`EXPAND`): its rows
/// are gray, gray + alpha, RGB or RGBA at 8 or 16 bits.
pub struct GrayPng<R: BufRead + Seek> {
    reader: png::Reader<R>,
    path: PathBuf,
    /// Samples per pixel of the expanded rows.
    samples: usize,
    pub width: usize,
    pub height: usize,
    /// `U8` or `U16`.
    pub ty: HostType,
}

impl GrayPng<BufReader<File>> {
    /// Open the PNG file at `path` (see [`GrayPng::new`]).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::new(BufReader::new(file), path)
    }
}

impl<R: BufRead + Seek> GrayPng<R> {
    /// Read the headers of the PNG `input` (named `path` in errors) and check that its pixels
    /// can be read as gray.
    pub fn new(input: R, path: &Path) -> Result<Self> {
        let mut decoder = png::Decoder::new(input);
        decoder.set_transformations(png::Transformations::EXPAND);
        let reader = decoder.read_info().map_err(|e| png_err(path, e))?;
        // png 0.18.1 panics on such a palette when it expands it (image-rs/image-png#694).
        if let Some(palette) = &reader.info().palette
            && palette.len() % 3 != 0
        {
            return Err(Error::Invalid(format!(
                "{}: cannot read the PNG: its palette (PLTE) holds {} bytes, not a multiple of 3",
                path.display(),
                palette.len()
            )));
        }
        let (samples, ty) = png_layout(&reader, path)?;
        let (width, height) = reader.info().size();
        let (width, height) = (width as usize, height as usize);
        Ok(GrayPng { reader, path: path.to_path_buf(), samples, width, height, ty })
    }

    /// Decode the pixels and hand the gray values of each row (little-endian samples of `ty`),
    /// top row first, to `sink`. Holds one row in memory unless the PNG is interlaced; then the
    /// gray image, gathered as the data arrives (never sized from the header alone).
    pub fn for_each_row(self, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let GrayPng { mut reader, path, samples, width, height, ty } = self;
        let path = path.as_path();
        let interlaced = reader.info().interlaced;
        let mut gray = Vec::with_capacity(width * ty.size());
        let mut passes = Vec::new();
        let mut rows = 0;
        while let Some(row) = reader.next_row().map_err(|e| png_err(path, e))? {
            if interlaced {
                gray_row(row.data(), samples, ty, &mut passes);
            } else {
                gray.clear();
                gray_row(row.data(), samples, ty, &mut gray);
                sink(&gray)?;
            }
            rows += 1;
        }
        if interlaced {
            let layout = adam7_layout(width, height, ty.size()).filter(|&(_, len)| len == passes.len());
            let Some((layout, _)) = layout else {
                return Err(Error::Invalid(format!(
                    "{}: truncated: the interlaced PNG holds {rows} pass rows, not all of its {height} rows",
                    path.display()
                )));
            };
            return deinterlace(&passes, &layout, width, height, ty.size(), sink);
        }
        if rows != height {
            return Err(Error::Invalid(format!(
                "{}: truncated: the PNG holds {rows} of its {height} rows",
                path.display()
            )));
        }
        Ok(())
    }
}

/// The Adam7 passes of an interlaced PNG: first column, first row, column step, row step.
const ADAM7: [(usize, usize, usize, usize); 7] =
    [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

/// The pass (index into [`ADAM7`]) of pixel `(x, y)` is `ADAM7_PASS[y % 8][x % 8]`.
const ADAM7_PASS: [[u8; 8]; 8] = {
    let (even, odd) = ([4, 5, 4, 5, 4, 5, 4, 5], [6; 8]);
    [[0, 5, 3, 5, 1, 5, 3, 5], odd, even, odd, [2, 5, 3, 5, 2, 5, 3, 5], odd, even, odd]
};

/// Where each Adam7 pass of a `width` x `height` image of `size`-byte pixels starts when the
/// passes are stored one after another (empty passes absent, as PNG stores them), its bytes per
/// row, and the length of all passes; `None` on overflow.
fn adam7_layout(width: usize, height: usize, size: usize) -> Option<([(usize, usize); 7], usize)> {
    let mut layout = [(0, 0); 7];
    let mut end = 0usize;
    for (slot, &(x0, y0, dx, dy)) in layout.iter_mut().zip(&ADAM7) {
        let columns = width.saturating_sub(x0).div_ceil(dx);
        let rows = if columns == 0 { 0 } else { height.saturating_sub(y0).div_ceil(dy) };
        let stride = columns.checked_mul(size)?;
        *slot = (end, stride);
        end = end.checked_add(rows.checked_mul(stride)?)?;
    }
    Some((layout, end))
}

/// Hand the rows of an interlaced image, top first, to `sink`, from its pass rows `passes`
/// stored as [`adam7_layout`] says (`layout`, whose length `passes` has).
fn deinterlace(
    passes: &[u8],
    layout: &[(usize, usize); 7],
    width: usize,
    height: usize,
    size: usize,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut row = Vec::with_capacity(width * size);
    for y in 0..height {
        row.clear();
        for x in 0..width {
            let pass = usize::from(ADAM7_PASS[y % 8][x % 8]);
            let ((x0, y0, dx, dy), (start, stride)) = (ADAM7[pass], layout[pass]);
            let at = start + (y - y0) / dy * stride + (x - x0) / dx * size;
            row.extend_from_slice(&passes[at..at + size]);
        }
        sink(&row)?;
    }
    Ok(())
}

/// Samples per pixel of a PNG's output colour type (after `EXPAND`) and its sample type.
fn png_layout<R: BufRead + Seek>(reader: &png::Reader<R>, path: &Path) -> Result<(usize, HostType)> {
    use png::{BitDepth, ColorType};
    let (color, depth) = reader.output_color_type();
    let samples = match color {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => {
            return Err(Error::Invalid(format!("{}: palette PNG could not be expanded", path.display())));
        }
    };
    let ty = match depth {
        BitDepth::Eight => HostType::U8,
        BitDepth::Sixteen => HostType::U16,
        other => {
            return Err(Error::Invalid(format!("{}: unsupported PNG bit depth {other:?}", path.display())));
        }
    };
    Ok((samples, ty))
}

/// Read the header of a bucket image and check that it can be converted.
fn probe(path: &Path) -> Result<ImageHeader> {
    match image_format(path)? {
        ImageFormat::Bmp => {
            let layout = bmp::read_bmp_layout(path)?;
            Ok(ImageHeader { width: layout.width, height: layout.height, ty: HostType::U8 })
        }
        ImageFormat::Png => {
            let png = GrayPng::open(path)?;
            Ok(ImageHeader { width: png.width, height: png.height, ty: png.ty })
        }
        ImageFormat::Tiff => {
            let page = TiffStack::open_pages(path, &[path.to_path_buf()])?;
            let ([_, height, width], ty) = (page.shape(), page.ty());
            Ok(ImageHeader { width, height, ty })
        }
    }
}

/// Append the gray value of each pixel of a decoded PNG row (`samples` big-endian samples of
/// `ty` per pixel) to `out`, as the little-endian bytes of `ty`.
fn gray_row(row: &[u8], samples: usize, ty: HostType, out: &mut Vec<u8>) {
    match ty {
        HostType::U16 => {
            let sample = |p: &[u8], i: usize| u16::from_be_bytes([p[2 * i], p[2 * i + 1]]);
            for p in row.chunks_exact(2 * samples) {
                let gray = if samples >= 3 { luma16(sample(p, 0), sample(p, 1), sample(p, 2)) } else { sample(p, 0) };
                out.extend_from_slice(&gray.to_le_bytes());
            }
        }
        _ => {
            for p in row.chunks_exact(samples) {
                out.push(if samples >= 3 { luma8(p[0], p[1], p[2]) } else { p[0] });
            }
        }
    }
}

/// Decode the image at `path`, whose header is `expect`, and append its gray pixels (row-major,
/// top row first, little-endian `expect.ty`) to `writer`.
fn convert_image(path: &Path, expect: ImageHeader, writer: &mut MapWriter) -> Result<()> {
    let changed = || Error::Invalid(format!("{}: the file changed while it was read", path.display()));
    match image_format(path)? {
        ImageFormat::Bmp => {
            let image = bmp::read_bmp(path)?;
            if (image.width, image.height) != (expect.width, expect.height) || expect.ty != HostType::U8 {
                return Err(changed());
            }
            writer.write(&image.pixels)
        }
        ImageFormat::Png => {
            let png = GrayPng::open(path)?;
            if (png.width, png.height, png.ty) != (expect.width, expect.height, expect.ty) {
                return Err(changed());
            }
            png.for_each_row(|gray| writer.write(gray))
        }
        ImageFormat::Tiff => {
            let mut page = TiffStack::open_pages(path, &[path.to_path_buf()])?;
            if page.shape() != [1, expect.height, expect.width] || page.ty() != expect.ty {
                return Err(changed());
            }
            for y0 in (0..expect.height).step_by(256) {
                writer.write(&page.read_rows(y0..(y0 + 256).min(expect.height))?)?;
            }
            Ok(())
        }
    }
}

fn depth_name(ty: HostType) -> &'static str {
    match ty {
        HostType::U8 => "8-bit",
        HostType::U16 => "16-bit",
        HostType::F16 | HostType::F32 => "floating-point",
    }
}

/// Convert the bucket images in `dir` to a `(C, H, W)` `.npy` frame at `output`: `uint8` for
/// 8-bit images, `uint16` for 16-bit PNGs. The images are found by [`find_bucket_images`]
/// (`pattern` as there); they must all have the same size and bit depth. Every header is checked
/// before anything is written, then the images are converted one at a time.
pub fn images_to_npy(dir: &Path, output: &Path, pattern: Option<&str>) -> Result<ConvertInfo> {
    let files = find_bucket_images(dir, pattern)?;
    let headers = files.iter().map(|f| probe(f)).collect::<Result<Vec<_>>>()?;
    let first = headers[0];
    for (file, header) in files.iter().zip(&headers).skip(1) {
        if (header.width, header.height) != (first.width, first.height) {
            return Err(Error::Shape(format!(
                "{} is {} x {} pixels (width x height) but {} is {} x {}: all bucket images must have the same size",
                file.display(),
                header.width,
                header.height,
                files[0].display(),
                first.width,
                first.height
            )));
        }
        if header.ty != first.ty {
            return Err(Error::Invalid(format!(
                "{} is a {} image but {} is {}: all bucket images must share a bit depth",
                file.display(),
                depth_name(header.ty),
                files[0].display(),
                depth_name(first.ty)
            )));
        }
    }
    let shape = [files.len(), first.height, first.width];
    let mut writer = MapWriter::new(output, first.ty, &shape, &X3pMeta::default())?;
    for file in &files {
        convert_image(file, first, &mut writer)?;
    }
    writer.finish()?;
    Ok(ConvertInfo { channels: files.len(), height: first.height, width: first.width, dtype: first.ty, files })
}

/// The bytes of channel `channel` of the `(C, H, W)` array described by `header` (little-endian,
/// `H * W * itemsize` of them), read from `file` (the `.npy` file at `path`, named in errors).
pub fn read_channel(file: &mut File, path: &Path, header: &NpyHeader, channel: usize) -> Result<Vec<u8>> {
    let &[channels, height, width] = header.shape.as_slice() else {
        return Err(Error::Shape(format!(
            "{}: expected a (C, H, W) frame, found shape {:?}",
            path.display(),
            header.shape
        )));
    };
    if channel >= channels {
        return Err(Error::Shape(format!("{}: channel {channel} of {channels} does not exist", path.display())));
    }
    // At most the data length, which read_header checked against the file.
    let len = height * width * header.ty.size();
    let offset = header.data_offset + (channel * len) as u64;
    let mut bytes = vec![0u8; len];
    file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut bytes)).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Write one channel as a grayscale image: `pixels` are little-endian samples of `ty`.
fn write_image(
    path: &Path,
    format: ImageFormat,
    ty: HostType,
    width: usize,
    height: usize,
    pixels: &[u8],
) -> Result<()> {
    if format == ImageFormat::Tiff {
        let mut tiff = TiffWriter::new(path, ty, &[height, width])?;
        tiff.write(pixels)?;
        return tiff.finish();
    }
    write_with(path, |out| match format {
        ImageFormat::Tiff => Err(Error::Invalid(format!("{}: TIFF is written above", path.display()))),
        ImageFormat::Bmp => bmp::write_bmp_to(out, width, height, pixels).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Error::Invalid(format!("{}: {e}", path.display())),
            _ => Error::io(path, e),
        }),
        ImageFormat::Png => {
            let encode_err = |e: png::EncodingError| match e {
                png::EncodingError::IoError(e) => Error::io(path, e),
                other => Error::Invalid(format!("{}: PNG encoding failed: {other}", path.display())),
            };
            // Checked by the caller.
            let (w, h) = (width as u32, height as u32);
            let mut encoder = png::Encoder::new(out, w, h);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_compression(png::Compression::Fast);
            let big_endian: Vec<u8>;
            let data = match ty {
                HostType::U16 => {
                    encoder.set_depth(png::BitDepth::Sixteen);
                    big_endian = pixels.chunks_exact(2).flat_map(|s| [s[1], s[0]]).collect();
                    &big_endian
                }
                _ => {
                    encoder.set_depth(png::BitDepth::Eight);
                    pixels
                }
            };
            let mut writer = encoder.write_header().map_err(encode_err)?;
            writer.write_image_data(data).map_err(encode_err)?;
            writer.finish().map_err(encode_err)?;
            Ok(())
        }
    })
}

/// Write each channel of the `(C, H, W)` `uint8` or `uint16` `.npy` frame at `input` as a
/// grayscale image `bucket_NN.<bmp|png>` in `dir` (created if missing; `NN` is two digits, more
/// from channel 100 on). `uint8` frames become 8-bit images, `uint16` frames 16-bit PNGs (BMP
/// cannot hold them); float frames are refused. Files from an earlier conversion are replaced,
/// but a bucket image this one would not replace (an index beyond the channel count, or the
/// other format) is an error, since the folder would no longer read back as this frame. Reads
/// one channel at a time.
pub fn npy_to_images(input: &Path, dir: &Path, format: ImageFormat) -> Result<ConvertInfo> {
    // A TIFF stack is read page by page, an npy channel by channel.
    let mut stack = if looks_like_tiff(input) { Some(TiffStack::open(input)?) } else { None };
    let header = match &stack {
        Some(s) => NpyHeader { ty: s.ty(), shape: s.shape().to_vec(), data_offset: 0 },
        None => read_header(input)?,
    };
    let &[channels, height, width] = header.shape.as_slice() else {
        return Err(Error::Shape(format!(
            "{}: expected a (C, H, W) frame, found shape {:?}",
            input.display(),
            header.shape
        )));
    };
    if channels == 0 || height == 0 || width == 0 {
        return Err(Error::Shape(format!(
            "{}: the frame of shape {:?} is empty: there is no image to write",
            input.display(),
            header.shape
        )));
    }
    match (header.ty, format) {
        (HostType::U8, _) | (HostType::U16, ImageFormat::Png | ImageFormat::Tiff) => {}
        (HostType::F32, ImageFormat::Tiff) => {}
        (HostType::U16, ImageFormat::Bmp) => {
            return Err(Error::Invalid(format!(
                "{}: a uint16 frame cannot be written as BMP (8-bit only): use --format png for 16-bit PNGs",
                input.display()
            )));
        }
        (HostType::F16 | HostType::F32, _) => {
            return Err(Error::Invalid(format!(
                "{}: the frame is {}: BMP and PNG images hold integers; write float32 pages with \
                 --format tif, or convert float frames to integers first \
                 (e.g. np.clip(np.rint(a), 0, 255).astype(np.uint8), or uint16 with 65535)",
                input.display(),
                if header.ty == HostType::F16 { "float16" } else { "float32" }
            )));
        }
    }
    let too_large = match format {
        ImageFormat::Bmp => i32::try_from(width).is_err() || i32::try_from(height).is_err(),
        ImageFormat::Png | ImageFormat::Tiff => u32::try_from(width).is_err() || u32::try_from(height).is_err(),
    };
    if too_large {
        return Err(Error::Shape(format!(
            "{}: {width} x {height} pixels is too large for a {} image",
            input.display(),
            format.extension().to_uppercase()
        )));
    }

    let digits = (channels - 1).to_string().len().max(2);
    let files: Vec<PathBuf> =
        (0..channels).map(|c| dir.join(format!("{OUTPUT_PREFIX}{c:0digits$}.{}", format.extension()))).collect();

    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let existing = scan(dir, &Pattern::parse(DEFAULT_PATTERN)?)?;
    if let Some(stale) = existing.values().find(|path| !files.contains(path)) {
        return Err(Error::Invalid(format!(
            "{} already holds {}, which this conversion of {channels} channels to .{format} would not \
             replace: remove it or choose another folder",
            dir.display(),
            stale.display()
        )));
    }

    let mut file = File::open(input).map_err(|e| Error::io(input, e))?;
    for (channel, path) in files.iter().enumerate() {
        let pixels = match stack.as_mut() {
            Some(s) => s.read_page(channel)?,
            None => read_channel(&mut file, input, &header, channel)?,
        };
        write_image(path, format, header.ty, width, height, &pixels)?;
    }
    Ok(ConvertInfo { channels, height, width, dtype: header.ty, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_of_a_broken_length_is_an_error() {
        for (palette, ok) in [(vec![9; 3], true), (vec![9; 4], false), (vec![9; 5], false)] {
            // A 1 x 1 indexed PNG; the png crate writes whatever palette it is given.
            let mut file = Vec::new();
            let mut encoder = png::Encoder::new(&mut file, 1, 1);
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_palette(palette);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0]).unwrap();
            writer.finish().unwrap();
            let result = GrayPng::new(std::io::Cursor::new(&file), Path::new("p.png")).and_then(|png| {
                let mut rows = Vec::new();
                png.for_each_row(|row| {
                    rows.push(row.to_vec());
                    Ok(())
                })?;
                Ok(rows)
            });
            match result {
                Ok(rows) => assert!(ok && rows == [[luma8(9, 9, 9)]], "{rows:?}"),
                Err(e) => assert!(!ok && e.to_string().contains("not a multiple of 3"), "{e}"),
            }
        }
    }

    #[test]
    fn adam7_pass_table_matches_the_passes() {
        for (y, row) in ADAM7_PASS.iter().enumerate() {
            for (x, &pass) in row.iter().enumerate() {
                let passes: Vec<usize> = (0..7)
                    .filter(|&p| {
                        let (x0, y0, dx, dy) = ADAM7[p];
                        x % dx == x0 && y % dy == y0
                    })
                    .collect();
                assert_eq!(passes, [usize::from(pass)], "pixel ({x}, {y})");
            }
        }
    }

    /// Against the png crate's own expansion of pass rows, for every small size (empty passes
    /// included) and both sample sizes.
    #[test]
    fn deinterlace_matches_png_expansion() {
        for size in [1, 2] {
            for (width, height) in (1..=17).flat_map(|w| (1..=17).map(move |h| (w, h))) {
                let (layout, len) = adam7_layout(width, height, size).unwrap();
                let passes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut expected = vec![0u8; width * height * size];
                for (pass, &(start, stride)) in layout.iter().enumerate() {
                    let next = layout.get(pass + 1).map_or(len, |&(s, _)| s);
                    for (line, row) in passes[start..next].chunks_exact(stride.max(1)).enumerate() {
                        let info = png::Adam7Info::new(pass as u8 + 1, line as u32, width as u32);
                        png::expand_interlaced_row(&mut expected, width * size, row, &info, 8 * size as u8);
                    }
                }
                let mut rows = Vec::new();
                deinterlace(&passes, &layout, width, height, size, |row| {
                    rows.extend_from_slice(row);
                    Ok(())
                })
                .unwrap();
                assert_eq!(rows, expected, "{width} x {height}, {size}-byte pixels");
            }
        }
    }
}
