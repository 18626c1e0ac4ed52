//! TIFF bucket stacks, read band by band: a multi-page TIFF (one page per bucket, channel =
//! page order; an ImageJ hyperstack is one, its pages in ImageJ's channel-slice-frame order), or
//! a folder of single-page TIFFs (`bucket_00.tif …`, found as [`crate::io::images`] finds BMP/PNG
//! buckets).
//!
//! Pages are gray (one sample per pixel, BlackIsZero) u8, u16, u32 or f32, in strips or tiles,
//! uncompressed, LZW, Deflate or PackBits, classic TIFF or BigTIFF, either byte order. u8 and u16
//! stay as they are; u32 and f32 are handed out as f32 (u32 values above 2²⁴ round).
//!
//! The image-rs `tiff` crate parses the directories (IFDs) and decodes compressed chunks
//! (`read_chunk`); this module checks every page against the first (size, type), every chunk's
//! place against the file length, and the chunk sizes against [`MAX_CHUNK_BYTES`] before
//! anything is decoded, so a hostile header is an error and never a large allocation. Rows of an
//! uncompressed strip are read straight from the file (a 100 MB single-strip page costs only the
//! rows asked for); compressed strips and tiles are decoded one chunk at a time and only the
//! chunks that hold the rows asked for. An ImageJ file with one directory and `images=N` in its
//! description (what ImageJ writes past 4 GB) holds its N uncompressed pages one after another.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use tiff::tags::Tag;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::row_sink::RowSink;

/// The largest chunk (strip or tile) decoded, and the decoder's own buffer limit.
pub const MAX_CHUNK_BYTES: usize = 256 << 20;
/// The largest row of chunks (chunk height x page width) assembled when decoding.
const MAX_BAND_BYTES: usize = 1 << 30;
/// The most bytes reserved up front for rows read; more grows as data is decoded.
const MAX_RESERVE: usize = 256 << 20;
/// The most pages a stack may have.
const MAX_PAGES: usize = 1 << 16;

/// TIFF compression codes this reader decodes.
const NONE: u16 = 1;
const LZW: u16 = 5;
const DEFLATE: u16 = 8;
const OLD_DEFLATE: u16 = 32946;
const PACKBITS: u16 = 32773;

fn tiff_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Invalid(format!("{}: {}", path.display(), message.into()))
}

/// A page's sample type on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sample {
    U8,
    U16,
    U32,
    F32,
}

impl Sample {
    fn size(self) -> usize {
        match self {
            Sample::U8 => 1,
            Sample::U16 => 2,
            Sample::U32 | Sample::F32 => 4,
        }
    }

    /// The type the rows are handed out in.
    fn host(self) -> HostType {
        match self {
            Sample::U8 => HostType::U8,
            Sample::U16 => HostType::U16,
            Sample::U32 | Sample::F32 => HostType::F32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sample::U8 => "uint8",
            Sample::U16 => "uint16",
            Sample::U32 => "uint32",
            Sample::F32 => "float32",
        }
    }
}

/// Where one page's pixels are and how they are stored.
#[derive(Clone, Debug)]
struct Page {
    /// Index into [`TiffStack::files`].
    file: usize,
    /// Directory index within that file.
    ifd: usize,
    /// What messages call the page: `page 3` (of the file named before it) or `bucket_03.tif`.
    name: String,
    width: usize,
    height: usize,
    sample: Sample,
    /// Strips are `(width, rows_per_strip)` chunks, tiles `(tile_w, tile_h)`.
    tiles: bool,
    chunk_w: usize,
    chunk_h: usize,
    offsets: Vec<u64>,
    /// Added to every offset: the place of an ImageJ page past the first directory's.
    shift: u64,
    big_endian: bool,
    /// Uncompressed strips without a predictor: rows are read straight from the file.
    raw: bool,
}

impl Page {
    fn chunks_across(&self) -> usize {
        if self.tiles { self.width.div_ceil(self.chunk_w) } else { 1 }
    }
}

/// One open TIFF file of a stack.
struct TiffFile {
    path: PathBuf,
    decoder: Decoder<BufReader<File>>,
}

/// A stack of gray TIFF pages `(C, H, W)`, read on demand.
pub struct TiffStack {
    path: PathBuf,
    files: Vec<TiffFile>,
    pages: Vec<Page>,
    ty: HostType,
    shape: [usize; 3],
}

impl std::fmt::Debug for TiffStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffStack").field("path", &self.path).field("shape", &self.shape).finish()
    }
}

/// Whether `bytes` (a file's first bytes) start a TIFF or BigTIFF.
pub fn is_tiff(bytes: &[u8]) -> bool {
    matches!(bytes.get(..4), Some(b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+"))
}

/// The one-line message of a `tiff` crate error about `path`.
fn decode_err(path: &Path, what: &str, e: tiff::TiffError) -> Error {
    match e {
        tiff::TiffError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tiff_err(path, format!("truncated: the file ends inside {what}"))
        }
        tiff::TiffError::IoError(e) => Error::io(path, e),
        tiff::TiffError::LimitsExceeded => {
            tiff_err(path, format!("{what} is larger than the {} MiB a chunk may decode to", MAX_CHUNK_BYTES >> 20))
        }
        other => tiff_err(path, format!("cannot read {what}: {}", one_line(&other.to_string()))),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn open_decoder(path: &Path) -> Result<Decoder<BufReader<File>>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let limits = {
        let mut l = Limits::default();
        l.decoding_buffer_size = MAX_CHUNK_BYTES;
        l.intermediate_buffer_size = MAX_CHUNK_BYTES;
        l
    };
    Decoder::new(BufReader::new(file)).map(|d| d.with_limits(limits)).map_err(|e| decode_err(path, "the header", e))
}

fn compression_name(code: u16) -> String {
    match code {
        2 => "CCITT Group 3 (1-D)".into(),
        3 | 4 => "CCITT fax".into(),
        6 | 7 => "JPEG".into(),
        34712 => "JPEG 2000".into(),
        34887 => "LERC".into(),
        34925 => "LZMA".into(),
        50000 | 34926 => "Zstandard".into(),
        50001 | 34927 => "WebP".into(),
        other => format!("code {other}"),
    }
}

/// The sample type of a page with these tags, or why it is not a gray bucket page.
fn gray_sample(samples: u64, photometric: u64, bits: u64, format: u64) -> std::result::Result<Sample, String> {
    if samples != 1 || !matches!(photometric, 0 | 1) {
        let kind = match photometric {
            2 => "RGB".to_string(),
            3 => "palette".to_string(),
            6 => "YCbCr".to_string(),
            _ => format!("{samples} samples per pixel"),
        };
        return Err(format!(
            "the page is {kind}: bucket pages must be gray (one sample per pixel), one page per bucket; \
             save each bucket as its own gray page (tifffile.imwrite(f, stack) with stack (C, H, W))"
        ));
    }
    if photometric == 0 {
        return Err("the page is WhiteIsZero gray: psi-gpu reads BlackIsZero (MinIsBlack) pages".into());
    }
    match (format, bits) {
        (1, 8) => Ok(Sample::U8),
        (1, 16) => Ok(Sample::U16),
        (1, 32) => Ok(Sample::U32),
        (3, 32) => Ok(Sample::F32),
        _ => {
            let kind = match format {
                1 => "unsigned",
                2 => "signed",
                3 => "float",
                _ => "untyped",
            };
            Err(format!("{bits}-bit {kind} samples are not supported: pages must be uint8, uint16, uint32 or float32"))
        }
    }
}

/// The directory the decoder is at, as a [`Page`] (its offsets checked against `file_len`).
fn read_page(dec: &mut Decoder<BufReader<File>>, path: &Path, name: String, file_len: u64) -> Result<Page> {
    let what = |s: &str| format!("{s} of {name}");
    let tag = |dec: &mut Decoder<BufReader<File>>, t: Tag| {
        dec.find_tag_unsigned::<u64>(t).map_err(|e| decode_err(path, &what("a tag"), e))
    };
    let bad = |m: String| tiff_err(path, format!("{name}: {m}"));
    let width = tag(dec, Tag::ImageWidth)?.unwrap_or(0) as usize;
    let height = tag(dec, Tag::ImageLength)?.unwrap_or(0) as usize;
    if width == 0 || height == 0 {
        return Err(bad(format!("empty page ({width} x {height} pixels)")));
    }
    let samples = tag(dec, Tag::SamplesPerPixel)?.unwrap_or(1);
    let photometric = tag(dec, Tag::PhotometricInterpretation)?.unwrap_or(1);
    // One value per sample (an RGB page has three): the first decides, gray pages have one.
    let first = |dec: &mut Decoder<BufReader<File>>, t: Tag, default: u64| {
        dec.find_tag_unsigned_vec::<u64>(t)
            .map(|v| v.and_then(|v| v.first().copied()).unwrap_or(default))
            .map_err(|e| decode_err(path, &what("a tag"), e))
    };
    let bits = first(dec, Tag::BitsPerSample, 1)?;
    let format = first(dec, Tag::SampleFormat, 1)?;
    let sample = gray_sample(samples, photometric, bits, format).map_err(bad)?;
    let compression = tag(dec, Tag::Compression)?.unwrap_or(1) as u16;
    if !matches!(compression, NONE | LZW | DEFLATE | OLD_DEFLATE | PACKBITS) {
        return Err(bad(format!(
            "{} compression is not supported: psi-gpu reads uncompressed, LZW, Deflate and PackBits TIFFs \
             (rewrite with e.g. tifffile.imwrite(f, stack, compression='zlib'))",
            compression_name(compression)
        )));
    }
    let predictor = tag(dec, Tag::Predictor)?.unwrap_or(1);
    let tiles = dec.get_chunk_type() == ChunkType::Tile;
    let (chunk_w, chunk_h, offsets_tag, counts_tag) = if tiles {
        let tw = tag(dec, Tag::TileWidth)?.unwrap_or(0) as usize;
        let th = tag(dec, Tag::TileLength)?.unwrap_or(0) as usize;
        (tw, th, Tag::TileOffsets, Tag::TileByteCounts)
    } else {
        let rps = tag(dec, Tag::RowsPerStrip)?.unwrap_or(height as u64);
        (width, (rps as usize).min(height), Tag::StripOffsets, Tag::StripByteCounts)
    };
    if chunk_w == 0 || chunk_h == 0 {
        return Err(bad(format!("{} of 0 pixels", if tiles { "tiles" } else { "strips" })));
    }
    let chunk_bytes = chunk_w.checked_mul(chunk_h).and_then(|n| n.checked_mul(sample.size()));
    if chunk_bytes.is_none_or(|b| b > MAX_CHUNK_BYTES) && (compression != NONE || tiles || predictor != 1) {
        return Err(bad(format!(
            "{} x {} pixel chunks are larger than the {} MiB a chunk may decode to",
            chunk_w,
            chunk_h,
            MAX_CHUNK_BYTES >> 20
        )));
    }
    // A band of chunks (chunk rows x the page width) is assembled in memory when decoded.
    if !(compression == NONE && !tiles && predictor == 1)
        && width.checked_mul(chunk_h * sample.size()).is_none_or(|b| b > MAX_BAND_BYTES)
    {
        return Err(bad(format!(
            "{width}-pixel rows in {chunk_h}-row chunks: a row of chunks would decode to more than {} MiB",
            MAX_BAND_BYTES >> 20
        )));
    }
    let list = |dec: &mut Decoder<BufReader<File>>, t: Tag| {
        dec.find_tag_unsigned_vec::<u64>(t).map_err(|e| decode_err(path, &what("the chunk table"), e))
    };
    let offsets = list(dec, offsets_tag)?.unwrap_or_default();
    let counts = list(dec, counts_tag)?.unwrap_or_default();
    let across = if tiles { width.div_ceil(chunk_w) } else { 1 };
    let expected = across.saturating_mul(height.div_ceil(chunk_h));
    if offsets.len() != expected || counts.len() != expected {
        return Err(bad(format!(
            "the chunk table lists {} offsets and {} byte counts for the {expected} {} of the page",
            offsets.len(),
            counts.len(),
            if tiles { "tiles" } else { "strips" }
        )));
    }
    let raw = compression == NONE && !tiles && predictor == 1;
    for (k, (&o, &n)) in offsets.iter().zip(&counts).enumerate() {
        // Uncompressed strips must hold all their rows; any chunk must lie inside the file.
        let rows = chunk_h.min(height - (k * chunk_h).min(height)) as u64;
        let need = if raw { rows.saturating_mul((width * sample.size()) as u64) } else { n };
        if o.checked_add(need).is_none_or(|end| end > file_len) || (raw && n < need) {
            return Err(tiff_err(
                path,
                format!(
                    "truncated: {} {k} of {name} ends past the end of the {file_len}-byte file",
                    if tiles { "tile" } else { "strip" }
                ),
            ));
        }
    }
    let big_endian = dec.byte_order() == tiff::tags::ByteOrder::BigEndian;
    Ok(Page {
        file: 0,
        ifd: 0,
        name,
        width,
        height,
        sample,
        tiles,
        chunk_w,
        chunk_h,
        offsets,
        shift: 0,
        big_endian,
        raw,
    })
}

/// `images=N` from an ImageJ description, if the file has one.
fn imagej_images(dec: &mut Decoder<BufReader<File>>) -> Option<usize> {
    let text = dec.get_tag_ascii_string(Tag::ImageDescription).ok()?;
    if !text.starts_with("ImageJ=") {
        return None;
    }
    text.lines().find_map(|l| l.strip_prefix("images=")).and_then(|n| n.trim().parse().ok())
}

/// Every page of the TIFF at `path` (file index `file` of a stack); `single` names it as a
/// folder's page.
fn read_pages(path: &Path, file: usize, single: bool) -> Result<(TiffFile, Vec<Page>)> {
    let file_len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let mut dec = open_decoder(path)?;
    let shown = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = |i: usize| if single { shown.clone() } else { format!("page {i}") };
    let mut pages = vec![read_page(&mut dec, path, name(0), file_len)?];
    let imagej = imagej_images(&mut dec);
    while dec.more_images() {
        if pages.len() >= MAX_PAGES {
            return Err(tiff_err(path, format!("more than {MAX_PAGES} pages")));
        }
        dec.next_image().map_err(|e| decode_err(path, &format!("the directory of {}", name(pages.len())), e))?;
        let mut page = read_page(&mut dec, path, name(pages.len()), file_len)?;
        page.ifd = pages.len();
        pages.push(page);
    }
    if let (Some(n), 1) = (imagej, pages.len())
        && n > 1
    {
        pages = imagej_pages(path, &pages[0], n.min(MAX_PAGES), file_len)?;
    }
    for p in &mut pages {
        p.file = file;
    }
    Ok((TiffFile { path: path.to_path_buf(), decoder: dec }, pages))
}

/// The `n` pages of an ImageJ file with one directory: uncompressed, one after another.
fn imagej_pages(path: &Path, first: &Page, n: usize, file_len: u64) -> Result<Vec<Page>> {
    let page_bytes = (first.width * first.height * first.sample.size()) as u64;
    let contiguous = first.raw
        && first.offsets.windows(2).all(|w| w[1] == w[0] + (first.chunk_h * first.width * first.sample.size()) as u64);
    if !contiguous {
        return Err(tiff_err(
            path,
            format!("the ImageJ file says images={n} but has one directory and its data is not contiguous"),
        ));
    }
    let end = page_bytes.checked_mul(n as u64).and_then(|b| b.checked_add(first.offsets[0]));
    if end.is_none_or(|end| end > file_len) {
        return Err(tiff_err(
            path,
            format!("truncated: the ImageJ file says images={n}, which ends past the end of the {file_len}-byte file"),
        ));
    }
    Ok((0..n).map(|k| Page { shift: page_bytes * k as u64, name: format!("page {k}"), ..first.clone() }).collect())
}

impl TiffStack {
    /// Open a multi-page TIFF (or an ImageJ hyperstack): one page per channel.
    pub fn open(path: &Path) -> Result<TiffStack> {
        let (file, pages) = read_pages(path, 0, false)?;
        Self::new(path, vec![file], pages)
    }

    /// Open a folder's single-page TIFFs `files` (in channel order) as one stack.
    pub fn open_pages(folder: &Path, files: &[PathBuf]) -> Result<TiffStack> {
        let mut opened = Vec::new();
        let mut pages = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let (file, p) = read_pages(f, i, true)?;
            if p.len() != 1 {
                return Err(tiff_err(
                    f,
                    format!("{} pages: each TIFF of a bucket folder holds one page (one bucket)", p.len()),
                ));
            }
            opened.push(file);
            pages.extend(p);
        }
        Self::new(folder, opened, pages)
    }

    fn new(path: &Path, files: Vec<TiffFile>, pages: Vec<Page>) -> Result<TiffStack> {
        let first = &pages[0];
        for p in &pages[1..] {
            if (p.width, p.height) != (first.width, first.height) {
                return Err(tiff_err(
                    path,
                    format!(
                        "{} is {} x {} pixels (width x height) but {} is {} x {}: all pages must have the same size",
                        p.name, p.width, p.height, first.name, first.width, first.height
                    ),
                ));
            }
            if p.sample != first.sample {
                return Err(tiff_err(
                    path,
                    format!(
                        "{} is {} but {} is {}: all pages must have the same sample type",
                        p.name,
                        p.sample.name(),
                        first.name,
                        first.sample.name()
                    ),
                ));
            }
        }
        let shape = [pages.len(), first.height, first.width];
        let ty = first.sample.host();
        Ok(TiffStack { path: path.to_path_buf(), files, pages, ty, shape })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The type of the rows handed out (u8, u16, or f32 for uint32 and float32 pages).
    pub fn ty(&self) -> HostType {
        self.ty
    }

    /// `(C, H, W)`: pages, rows, columns.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Every row of page `p` alone, as the little-endian bytes of an `(H, W)` array.
    pub fn read_page(&mut self, p: usize) -> Result<Vec<u8>> {
        let [c, h, w] = self.shape;
        if p >= c {
            return Err(tiff_err(&self.path, format!("page {p} of {c} does not exist")));
        }
        let page = self.pages[p].clone();
        let mut out = Vec::with_capacity(h.saturating_mul(w * self.ty.size()).min(MAX_RESERVE));
        let file = &mut self.files[page.file];
        if page.raw {
            read_raw_rows(file, &page, 0..h, &mut out)?
        } else {
            read_chunked_rows(file, &page, 0..h, &mut out)?
        }
        Ok(out)
    }

    /// Rows `rows` of every page, as the little-endian bytes of a `(C, rows.len(), W)` array of
    /// [`ty`](Self::ty). Decodes only the chunks those rows are in.
    pub fn read_rows(&mut self, rows: Range<usize>) -> Result<Vec<u8>> {
        let [c, _, w] = self.shape;
        // Sizes come from the header: reserve a bounded amount, the rest grows with the data.
        let mut out = Vec::with_capacity((c * rows.len()).saturating_mul(w * self.ty.size()).min(MAX_RESERVE));
        self.read_rows_to(rows, &mut out)?;
        Ok(out)
    }

    /// [`read_rows`](Self::read_rows) into `out`, a strip or a row of chunks at a time.
    pub fn read_rows_to(&mut self, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
        let [c, h, _] = self.shape;
        if rows.start > rows.end || rows.end > h {
            return Err(tiff_err(
                &self.path,
                format!("rows {}..{} are out of bounds for {h} rows", rows.start, rows.end),
            ));
        }
        for p in 0..c {
            crate::error::interrupt::check()?;
            let page = self.pages[p].clone();
            let file = &mut self.files[page.file];
            if page.raw {
                read_raw_rows(file, &page, rows.clone(), out)?;
            } else {
                read_chunked_rows(file, &page, rows.clone(), out)?;
            }
        }
        Ok(())
    }
}

/// Append samples of `sample` type stored in `bytes` (`big_endian` or little-endian) to `out`
/// as the little-endian bytes of its host type.
fn append_samples(sample: Sample, big_endian: bool, bytes: &[u8], out: &mut dyn RowSink) {
    let converted: Vec<u8> = match (sample, big_endian) {
        (Sample::U8, _) | (Sample::U16 | Sample::F32, false) => return out.put(bytes),
        (Sample::U16, true) => bytes.chunks_exact(2).flat_map(|s| [s[1], s[0]]).collect(),
        (Sample::F32, true) => bytes.chunks_exact(4).flat_map(|s| [s[3], s[2], s[1], s[0]]).collect(),
        (Sample::U32, be) => bytes
            .chunks_exact(4)
            .flat_map(|s| {
                let v = if be {
                    u32::from_be_bytes([s[0], s[1], s[2], s[3]])
                } else {
                    u32::from_le_bytes([s[0], s[1], s[2], s[3]])
                };
                (v as f32).to_le_bytes()
            })
            .collect(),
    };
    out.put(&converted);
}

/// Rows of an uncompressed striped page, read straight from the file, strip by strip.
fn read_raw_rows(file: &mut TiffFile, page: &Page, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
    let row_bytes = page.width * page.sample.size();
    let reader = file.decoder.inner();
    let mut y = rows.start;
    let mut buf = Vec::new();
    while y < rows.end {
        let strip = y / page.chunk_h;
        let last = ((strip + 1) * page.chunk_h).min(rows.end);
        let offset = page.offsets[strip] + page.shift + ((y - strip * page.chunk_h) * row_bytes) as u64;
        buf.resize((last - y) * row_bytes, 0);
        reader.seek(SeekFrom::Start(offset)).and_then(|_| reader.read_exact(&mut buf)).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                tiff_err(&file.path, format!("truncated: strip {strip} of {} ends past the end of the file", page.name))
            }
            _ => Error::io(&file.path, e),
        })?;
        append_samples(page.sample, page.big_endian, &buf, out);
        y = last;
    }
    Ok(())
}

/// The decoded samples of a chunk as little-endian bytes of the page's on-disk type (`None`
/// when the decoder gave another type than the page's tags said).
fn chunk_bytes(result: DecodingResult, sample: Sample) -> Option<Vec<u8>> {
    Some(match (result, sample) {
        (DecodingResult::U8(v), Sample::U8) => v,
        (DecodingResult::U16(v), Sample::U16) => v.iter().flat_map(|s| s.to_le_bytes()).collect(),
        (DecodingResult::U32(v), Sample::U32) => v.iter().flat_map(|s| s.to_le_bytes()).collect(),
        (DecodingResult::F32(v), Sample::F32) => v.iter().flat_map(|s| s.to_le_bytes()).collect(),
        _ => return None,
    })
}

/// Rows of a compressed (or tiled) page: each row of chunks that holds some of them is decoded
/// chunk by chunk and the rows asked for are copied out.
fn read_chunked_rows(file: &mut TiffFile, page: &Page, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
    let path = file.path.clone();
    let dec = &mut file.decoder;
    dec.seek_to_image(page.ifd).map_err(|e| decode_err(&path, &format!("the directory of {}", page.name), e))?;
    let s = page.sample.size();
    let kind = if page.tiles { "tile" } else { "strip" };
    let across = page.chunks_across();
    let first_band = rows.start / page.chunk_h;
    let last_band = rows.end.saturating_sub(1) / page.chunk_h;
    for band in first_band..=last_band {
        if rows.is_empty() {
            break;
        }
        let y0 = band * page.chunk_h;
        let band_h = page.chunk_h.min(page.height - y0);
        let (ya, yb) = (rows.start.max(y0), rows.end.min(y0 + band_h));
        // The band's rows [ya, yb), assembled from its chunks (little-endian, on-disk type).
        let mut block = vec![0u8; (yb - ya) * page.width * s];
        for tx in 0..across {
            let index = band * across + tx;
            let what = format!("{kind} {index} of {}", page.name);
            let result = dec.read_chunk(index as u32).map_err(|e| decode_err(&path, &what, e))?;
            let x0 = tx * page.chunk_w;
            let cw = page.chunk_w.min(page.width - x0);
            let bytes = chunk_bytes(result, page.sample)
                .ok_or_else(|| tiff_err(&path, format!("{what} decoded to another sample type than its tags say")))?;
            // The decoder hands out the chunk's data rows (band_h of them), at least `cw` wide.
            let stride = (bytes.len() / band_h).max(cw * s);
            for y in ya..yb {
                let src = (y - y0) * stride;
                let Some(row) = bytes.get(src..src + cw * s) else {
                    return Err(tiff_err(&path, format!("truncated: {what} holds fewer rows than the page needs")));
                };
                let dst = ((y - ya) * page.width + x0) * s;
                block[dst..dst + cw * s].copy_from_slice(row);
            }
        }
        append_samples(page.sample, false, &block, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::tiff_write::encode_ifd;

    /// A classic TIFF of one directory with `entries` (tag, type, values) and `tail` bytes after it.
    fn tiff_with(entries: &[(u16, u16, Vec<u64>)]) -> Vec<u8> {
        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend(encode_ifd(entries, 8, false, false));
        out.resize(out.len() + 64, 7);
        out
    }

    /// Headers that claim huge pages: an error each, before anything that size is allocated.
    #[test]
    fn hostile_headers_are_errors() {
        let (short, long) = (3u16, 4u16);
        let base = |w: u64, h: u64, compression: u64, rps: u64, count: u64| {
            vec![
                (256, long, vec![w]),
                (257, long, vec![h]),
                (258, short, vec![16]),
                (259, short, vec![compression]),
                (262, short, vec![1]),
                (273, long, vec![200]),
                (277, short, vec![1]),
                (278, long, vec![rps]),
                (279, long, vec![count]),
            ]
        };
        let dir = std::env::temp_dir().join(format!("psi-gpu-tiff-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (base(u32::MAX as u64, u32::MAX as u64, 8, 1, 10), "inconsistent sizes"),
            (base(1 << 31, 1, 8, 1, 10), "larger than"),
            (base(1 << 20, 1, 1, 1, u32::MAX as u64), "truncated"),
            (base(1 << 16, 1 << 16, 8, 1 << 16, 10), "larger than"),
            (base(64, 64, 8, 1, 10), "inconsistent sizes"),
            (base(64, 1, 34925, 1, 10), "LZMA compression is not supported"),
        ];
        for (i, (entries, expect)) in cases.into_iter().enumerate() {
            let path = dir.join(format!("{i}.tif"));
            std::fs::write(&path, tiff_with(&entries)).unwrap();
            let e = TiffStack::open(&path).and_then(|mut s| s.read_rows(0..1)).unwrap_err().to_string();
            assert!(e.contains(expect) && e.lines().count() == 1, "case {i}: expected '{expect}' in {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
