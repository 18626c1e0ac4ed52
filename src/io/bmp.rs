//! A small reader and writer for uncompressed BMP images, read as 8-bit grayscale.
//!
//! # Format
//!
//! A BMP file is, in order:
//!
//! 1. a 14-byte file header: the magic `BM`, the file size, two reserved words and the byte
//!    offset of the pixel data (all little-endian);
//! 2. an info header starting with its own size: 40 bytes for `BITMAPINFOHEADER`, 52/56 for the
//!    V2/V3 variants, 108 for `BITMAPV4HEADER`, 124 for `BITMAPV5HEADER`; all start with the 40
//!    bytes of `BITMAPINFOHEADER` (width, height, planes, bits per pixel, compression, ...);
//! 3. for `BI_BITFIELDS` with a 40-byte header, three colour masks (in the longer headers the
//!    masks are header fields at the same file offset, 54);
//! 4. for 8-bit images, a palette of 4-byte `B, G, R, 0` entries;
//! 5. the pixel rows, each padded to a multiple of 4 bytes, bottom row first, or top row first
//!    when the height is negative.
//!
//! [`read_bmp`] accepts 8-bit palettized images (each index becomes the luma of its palette
//! entry, which for the usual gray palette is the index itself), and 24-bit `B, G, R` and 32-bit
//! `B, G, R, X` images (plain, or `BI_BITFIELDS` with the standard masks), converted to gray with
//! [`luma8`]. Everything else (RLE/JPEG/PNG compression, other masks, 1-, 4- and 16-bit images,
//! OS/2 headers) is rejected with an [`Error::Invalid`] naming the file, never a panic; sizes are
//! checked against the file length before anything is allocated.
//!
//! [`write_bmp_to`] writes what PIL, OpenCV and every viewer read: an 8-bit image with a
//! 256-entry gray palette, `BITMAPINFOHEADER`, bottom-up rows.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// File header (14) + `BITMAPINFOHEADER` (40) + the 12 bytes of colour masks that follow it.
pub const PROBE_LEN: usize = 66;
/// Size of the file header.
const FILE_HEADER: usize = 14;
/// Size of `BITMAPINFOHEADER`, the smallest info header accepted.
const INFO_HEADER: usize = 40;
/// Pixels per metre written to the resolution fields (72 dpi, what most tools write).
const PIXELS_PER_METRE: i32 = 2835;

const BI_RGB: u32 = 0;
const BI_RLE8: u32 = 1;
const BI_RLE4: u32 = 2;
const BI_BITFIELDS: u32 = 3;
const BI_JPEG: u32 = 4;
const BI_PNG: u32 = 5;
const BI_ALPHABITFIELDS: u32 = 6;

/// Gray value of an 8-bit colour: `0.299 R + 0.587 G + 0.114 B`, rounded (half up). Exact for
/// gray (`R = G = B`).
pub fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
}

/// [`luma8`] for 16-bit samples.
pub fn luma16(r: u16, g: u16, b: u16) -> u16 {
    ((299 * u64::from(r) + 587 * u64::from(g) + 114 * u64::from(b) + 500) / 1000) as u16
}

/// An 8-bit grayscale image, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    /// `width * height` values, row-major, top row first.
    pub pixels: Vec<u8>,
}

/// Where the pixels of a BMP file are and how to read them, from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmpLayout {
    pub width: usize,
    pub height: usize,
    /// 8, 24 or 32.
    pub bits_per_pixel: u16,
    /// Rows are stored top row first (negative height in the header).
    pub top_down: bool,
    /// Byte offset of the first pixel row in the file.
    pub data_offset: usize,
    /// Bytes per stored row, padding included.
    pub stride: usize,
    /// Byte offset and number of entries of the palette (8-bit images only).
    pub palette: Option<(usize, usize)>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse and check the headers of a BMP file of `file_len` bytes whose first bytes are `head`
/// (at least [`PROBE_LEN`] of them unless the file is shorter). The message of the error says
/// what is wrong, without the file name.
pub fn parse_layout(head: &[u8], file_len: usize) -> Result<BmpLayout, String> {
    if head.len() < 2 || &head[..2] != b"BM" {
        return Err("not a BMP file (it does not start with 'BM')".into());
    }
    if head.len() < FILE_HEADER + 4 {
        return Err("truncated: the file ends inside the BMP header".into());
    }
    let data_offset = u32_at(head, 10) as usize;
    let header_size = u32_at(head, FILE_HEADER) as usize;
    if header_size == 12 || header_size == 64 {
        return Err(format!("OS/2 BMP files ({header_size}-byte header) are not supported; save as a Windows BMP"));
    }
    if header_size < INFO_HEADER {
        return Err(format!("unsupported BMP header of {header_size} bytes (expected 40 or more)"));
    }
    if head.len() < FILE_HEADER + INFO_HEADER || FILE_HEADER.saturating_add(header_size) > file_len {
        return Err("truncated: the file ends inside the BMP header".into());
    }
    let info = &head[FILE_HEADER..];
    let width = u32_at(info, 4) as i32;
    let height = u32_at(info, 8) as i32;
    let bits_per_pixel = u16_at(info, 14);
    let compression = u32_at(info, 16);
    let colors_used = u32_at(info, 32) as usize;

    match compression {
        BI_RGB | BI_BITFIELDS | BI_ALPHABITFIELDS => {}
        BI_RLE8 | BI_RLE4 => return Err("RLE-compressed BMP is not supported; save it uncompressed".into()),
        BI_JPEG => return Err("JPEG-compressed BMP is not supported; save it uncompressed".into()),
        BI_PNG => return Err("PNG-compressed BMP is not supported; save it uncompressed".into()),
        other => return Err(format!("unsupported BMP compression type {other}; save it uncompressed")),
    }
    match bits_per_pixel {
        8 | 24 | 32 => {}
        1 | 2 | 4 => {
            return Err(format!("{bits_per_pixel}-bit BMP is not supported; save as 8-bit grayscale"));
        }
        16 => return Err("16-bit (RGB555/565) BMP is not supported; save as 8-bit grayscale".into()),
        other => return Err(format!("invalid BMP bit count {other}")),
    }
    let bitfields = compression != BI_RGB;
    let mut masks_end = FILE_HEADER + header_size;
    if bitfields {
        if bits_per_pixel != 32 {
            return Err(format!("{bits_per_pixel}-bit BMP with colour masks (BI_BITFIELDS) is not supported"));
        }
        if head.len() < PROBE_LEN {
            return Err("truncated: the file ends inside the BMP colour masks".into());
        }
        let masks = [u32_at(head, 54), u32_at(head, 58), u32_at(head, 62)];
        if masks != [0x00ff_0000, 0x0000_ff00, 0x0000_00ff] {
            return Err(format!(
                "BMP colour masks R={:#010x} G={:#010x} B={:#010x} are not supported (expected the \
                 standard 0x00ff0000, 0x0000ff00, 0x000000ff)",
                masks[0], masks[1], masks[2]
            ));
        }
        // Headers shorter than V2's 52 bytes do not hold the masks: they follow the header.
        if header_size < 52 {
            masks_end = FILE_HEADER + INFO_HEADER + if compression == BI_ALPHABITFIELDS { 16 } else { 12 };
        }
    }

    if width <= 0 || height == 0 {
        return Err(format!("invalid BMP size {width} x {height}"));
    }
    let top_down = height < 0;
    let (width, height) = (width as usize, height.unsigned_abs() as usize);

    let palette = if bits_per_pixel == 8 {
        let start = masks_end;
        let mut entries = if colors_used == 0 { 256 } else { colors_used };
        if entries > 256 {
            return Err(format!("the BMP palette claims {entries} colours, more than the 256 an 8-bit image can use"));
        }
        // Some writers claim more entries than fit before the pixels: keep those that fit.
        if start + 4 * entries > data_offset {
            entries = data_offset.saturating_sub(start) / 4;
        }
        if entries == 0 {
            return Err("8-bit BMP without a palette".into());
        }
        if start + 4 * entries > file_len {
            return Err("truncated: the file ends inside the BMP palette".into());
        }
        Some((start, entries))
    } else {
        None
    };

    if data_offset < masks_end {
        return Err(format!("the pixel data offset {data_offset} lies inside the BMP header"));
    }
    let bits = width as u64 * u64::from(bits_per_pixel);
    let stride = bits.div_ceil(32) * 4;
    let row_bytes = bits.div_ceil(8);
    // The last row's padding may be missing.
    let needed = stride.saturating_mul(height as u64 - 1).saturating_add(row_bytes);
    let available = (file_len as u64).saturating_sub(data_offset as u64);
    if needed > available {
        return Err(format!(
            "truncated: {width} x {height} pixels at {bits_per_pixel} bits need {needed} bytes of pixel data, \
             the file has {available}"
        ));
    }
    Ok(BmpLayout { width, height, bits_per_pixel, top_down, data_offset, stride: stride as usize, palette })
}

/// Decode a whole BMP file held in memory to gray.
pub fn decode_bmp(bytes: &[u8]) -> Result<GrayImage, String> {
    let layout = parse_layout(bytes, bytes.len())?;
    let BmpLayout { width, height, bits_per_pixel, top_down, data_offset, stride, palette } = layout;
    let gray_palette: Vec<u8> = match palette {
        Some((start, entries)) => {
            bytes[start..start + 4 * entries].chunks_exact(4).map(|e| luma8(e[2], e[1], e[0])).collect()
        }
        None => Vec::new(),
    };
    let bytes_per_pixel = usize::from(bits_per_pixel / 8);
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        let stored = if top_down { y } else { height - 1 - y };
        let start = data_offset + stored * stride;
        let row = &bytes[start..start + width * bytes_per_pixel];
        match bits_per_pixel {
            8 => {
                for &index in row {
                    let gray = gray_palette.get(usize::from(index)).ok_or_else(|| {
                        format!("pixel value {index} is beyond the {}-entry palette", gray_palette.len())
                    })?;
                    pixels.push(*gray);
                }
            }
            _ => pixels.extend(row.chunks_exact(bytes_per_pixel).map(|p| luma8(p[2], p[1], p[0]))),
        }
    }
    Ok(GrayImage { width, height, pixels })
}

fn bmp_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {message}", path.display()))
}

/// Read the headers of the BMP file at `path` (not its pixels) and check that it can be read.
pub fn read_bmp_layout(path: &Path) -> Result<BmpLayout> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(PROBE_LEN);
    file.take(PROBE_LEN as u64).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    parse_layout(&head, usize::try_from(file_len).unwrap_or(usize::MAX)).map_err(|m| bmp_err(path, m))
}

/// Read the BMP file at `path` as an 8-bit gray image.
pub fn read_bmp(path: &Path) -> Result<GrayImage> {
    // Checked first, so that a huge or broken file is rejected before it is read into memory.
    read_bmp_layout(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bmp(&bytes).map_err(|m| bmp_err(path, m))
}

/// Offset of the pixel data in the files [`write_bmp_to`] writes.
const WRITTEN_DATA_OFFSET: usize = FILE_HEADER + INFO_HEADER + 4 * 256;

/// Check the arguments of [`write_bmp_to`]; the size of its pixel data.
fn written_image_size(width: usize, height: usize, pixels: usize) -> Result<usize, String> {
    if width == 0 || height == 0 || width.checked_mul(height) != Some(pixels) {
        return Err(format!("{pixels} pixels for a {width} x {height} BMP"));
    }
    let image_size = (width.div_ceil(4) * 4).checked_mul(height);
    let file_size = image_size.and_then(|n| n.checked_add(WRITTEN_DATA_OFFSET));
    let fits = file_size.is_some_and(|n| u32::try_from(n).is_ok())
        && i32::try_from(width).is_ok()
        && i32::try_from(height).is_ok();
    match image_size {
        Some(n) if fits => Ok(n),
        _ => Err(format!("a {width} x {height} image is too large for a BMP file (4 GiB at most)")),
    }
}

/// Write an 8-bit grayscale BMP (gray palette, `BITMAPINFOHEADER`, bottom-up rows) of
/// `width * height` `pixels` given row-major, top row first. Bad arguments (a pixel count that
/// does not fill the size, an image over the format's 4 GiB) are an `InvalidInput` error.
pub fn write_bmp_to(out: &mut impl Write, width: usize, height: usize, pixels: &[u8]) -> std::io::Result<()> {
    let image_size = written_image_size(width, height, pixels.len())
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    let stride = width.div_ceil(4) * 4;
    let data_offset = WRITTEN_DATA_OFFSET;

    let mut header = Vec::with_capacity(data_offset);
    header.extend_from_slice(b"BM");
    header.extend_from_slice(&((data_offset + image_size) as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // reserved
    header.extend_from_slice(&(data_offset as u32).to_le_bytes());
    header.extend_from_slice(&(INFO_HEADER as u32).to_le_bytes());
    header.extend_from_slice(&(width as i32).to_le_bytes());
    header.extend_from_slice(&(height as i32).to_le_bytes()); // positive: bottom-up
    header.extend_from_slice(&1u16.to_le_bytes()); // planes
    header.extend_from_slice(&8u16.to_le_bytes()); // bits per pixel
    header.extend_from_slice(&BI_RGB.to_le_bytes());
    header.extend_from_slice(&(image_size as u32).to_le_bytes());
    header.extend_from_slice(&PIXELS_PER_METRE.to_le_bytes());
    header.extend_from_slice(&PIXELS_PER_METRE.to_le_bytes());
    header.extend_from_slice(&256u32.to_le_bytes()); // colours used
    header.extend_from_slice(&0u32.to_le_bytes()); // colours important: all
    for v in 0..=255u8 {
        header.extend_from_slice(&[v, v, v, 0]);
    }
    out.write_all(&header)?;
    let mut row = vec![0u8; stride];
    for line in pixels.chunks_exact(width).rev() {
        row[..width].copy_from_slice(line);
        out.write_all(&row)?;
    }
    Ok(())
}

/// [`write_bmp_to`] a file at `path` (created or replaced, through the atomic writer).
pub fn write_bmp(path: &Path, width: usize, height: usize, pixels: &[u8]) -> Result<()> {
    written_image_size(width, height, pixels.len()).map_err(|m| bmp_err(path, m))?;
    crate::io::atomic::write_with(path, |out| write_bmp_to(out, width, height, pixels).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_bmp_to(&mut out, width, height, pixels).unwrap();
        out
    }

    /// A hand-made BMP: `rows` as stored (bottom-up unless `height` < 0), unpadded; `extra` goes
    /// between the info header and the palette (colour masks).
    struct Bmp {
        header_size: usize,
        width: i32,
        height: i32,
        bpp: u16,
        compression: u32,
        colors_used: u32,
        extra: Vec<u8>,
        palette: Vec<[u8; 4]>,
        rows: Vec<Vec<u8>>,
    }

    impl Bmp {
        fn new(width: i32, height: i32, bpp: u16, rows: Vec<Vec<u8>>) -> Self {
            Bmp {
                header_size: 40,
                width,
                height,
                bpp,
                compression: 0,
                colors_used: 0,
                extra: Vec::new(),
                palette: Vec::new(),
                rows,
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let offset = 14 + self.header_size + self.extra.len() + 4 * self.palette.len();
            let mut out = b"BM".to_vec();
            out.extend_from_slice(&0u32.to_le_bytes()); // file size: often wrong, never checked
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(offset as u32).to_le_bytes());
            let mut info = Vec::new();
            info.extend_from_slice(&(self.header_size as u32).to_le_bytes());
            info.extend_from_slice(&self.width.to_le_bytes());
            info.extend_from_slice(&self.height.to_le_bytes());
            info.extend_from_slice(&1u16.to_le_bytes());
            info.extend_from_slice(&self.bpp.to_le_bytes());
            info.extend_from_slice(&self.compression.to_le_bytes());
            info.extend_from_slice(&[0; 12]); // image size, resolution
            info.extend_from_slice(&self.colors_used.to_le_bytes());
            info.extend_from_slice(&0u32.to_le_bytes());
            info.resize(self.header_size, 0);
            out.extend_from_slice(&info);
            out.extend_from_slice(&self.extra);
            for entry in &self.palette {
                out.extend_from_slice(entry);
            }
            for row in &self.rows {
                out.extend_from_slice(row);
                out.resize(out.len() + (4 - row.len() % 4) % 4, 0);
            }
            out
        }
    }

    fn gray_palette() -> Vec<[u8; 4]> {
        (0..=255).map(|v| [v, v, v, 0]).collect()
    }

    fn error(bytes: &[u8]) -> String {
        match decode_bmp(bytes) {
            Err(message) => message,
            Ok(image) => panic!("expected an error, decoded {image:?}"),
        }
    }

    #[test]
    fn round_trip_with_every_padding() {
        for (width, height) in [(1, 1), (1, 4), (3, 2), (4, 3), (5, 7), (6, 1), (7, 5), (64, 3)] {
            let pixels: Vec<u8> = (0..width * height).map(|i| (i * 37 + 11) as u8).collect();
            let bytes = encode(width, height, &pixels);
            let stride = width.div_ceil(4) * 4;
            assert_eq!(bytes.len(), 1078 + stride * height, "{width} x {height}");
            assert_eq!(u32_at(&bytes, 2) as usize, bytes.len());
            let layout = parse_layout(&bytes, bytes.len()).unwrap();
            assert_eq!((layout.width, layout.height, layout.stride, layout.top_down), (width, height, stride, false));
            assert_eq!(decode_bmp(&bytes).unwrap(), GrayImage { width, height, pixels });
        }
    }

    #[test]
    fn writes_bottom_up_rows() {
        // 3 x 2: bottom row first, each row padded with one zero byte.
        let bytes = encode(3, 2, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(&bytes[1078..], &[4, 5, 6, 0, 1, 2, 3, 0]);
        assert_eq!(&bytes[54..62], &[0, 0, 0, 0, 1, 1, 1, 0]);
    }

    #[test]
    fn round_trip_through_a_file() {
        let path = std::env::temp_dir().join(format!("psi_gpu_bmp_{}.bmp", std::process::id()));
        let pixels: Vec<u8> = (0..5 * 3).map(|i| i as u8 * 17).collect();
        write_bmp(&path, 5, 3, &pixels).unwrap();
        let image = read_bmp(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(image.unwrap(), GrayImage { width: 5, height: 3, pixels });
    }

    #[test]
    fn reads_top_down() {
        let mut bmp = Bmp::new(3, -2, 8, vec![vec![1, 2, 3], vec![4, 5, 6]]);
        bmp.palette = gray_palette();
        let image = decode_bmp(&bmp.bytes()).unwrap();
        assert_eq!(image, GrayImage { width: 3, height: 2, pixels: vec![1, 2, 3, 4, 5, 6] });
        bmp.height = 2;
        assert_eq!(decode_bmp(&bmp.bytes()).unwrap().pixels, [4, 5, 6, 1, 2, 3]);
    }

    #[test]
    fn reads_24_and_32_bit_as_luma() {
        // Bottom-up: the stored first row is the image's last.
        let bgr = |b: u8, g: u8, r: u8| [b, g, r];
        let row0: Vec<u8> = [bgr(0, 0, 255), bgr(0, 255, 0), bgr(255, 0, 0)].concat();
        let row1: Vec<u8> = [bgr(7, 7, 7), bgr(200, 100, 50), bgr(255, 255, 255)].concat();
        let bytes = Bmp::new(3, 2, 24, vec![row0.clone(), row1.clone()]).bytes();
        let expected = vec![7, luma8(50, 100, 200), 255, 76, 150, 29];
        assert_eq!(decode_bmp(&bytes).unwrap(), GrayImage { width: 3, height: 2, pixels: expected.clone() });

        let with_alpha = |row: &[u8]| row.chunks(3).flat_map(|p| [p[0], p[1], p[2], 0x80]).collect::<Vec<u8>>();
        let mut bmp = Bmp::new(3, 2, 32, vec![with_alpha(&row0), with_alpha(&row1)]);
        assert_eq!(decode_bmp(&bmp.bytes()).unwrap().pixels, expected);
        // The standard masks, after a 40-byte header and inside a V5 header.
        bmp.compression = BI_BITFIELDS;
        bmp.extra = [0x00ff_0000u32, 0x0000_ff00, 0x0000_00ff].iter().flat_map(|m| m.to_le_bytes()).collect();
        assert_eq!(decode_bmp(&bmp.bytes()).unwrap().pixels, expected);
        bmp.header_size = 124;
        let mut bytes = bmp.bytes();
        let masks = bytes.drain(14 + 124..14 + 124 + 12).collect::<Vec<u8>>();
        bytes[54..66].copy_from_slice(&masks);
        let offset = u32_at(&bytes, 10) - 12;
        bytes[10..14].copy_from_slice(&offset.to_le_bytes());
        assert_eq!(decode_bmp(&bytes).unwrap().pixels, expected);
    }

    #[test]
    fn luma_is_exact_for_gray() {
        for v in 0..=255 {
            assert_eq!(luma8(v, v, v), v);
        }
        for v in [0, 1, 255, 256, 40000, 65535] {
            assert_eq!(luma16(v, v, v), v);
        }
        assert_eq!((luma8(255, 0, 0), luma8(0, 255, 0), luma8(0, 0, 255)), (76, 150, 29));
    }

    #[test]
    fn reads_palettes_and_long_headers() {
        // V4 header, a short inverted palette.
        let mut bmp = Bmp::new(2, 2, 8, vec![vec![0, 1], vec![2, 3]]);
        bmp.header_size = 108;
        bmp.colors_used = 4;
        bmp.palette = (0..4).map(|i| [255 - i, 255 - i, 255 - i, 0]).collect();
        assert_eq!(decode_bmp(&bmp.bytes()).unwrap().pixels, [253, 252, 255, 254]);
        // A colour palette gives the luma of each entry.
        bmp.palette = vec![[0, 0, 255, 0], [0, 255, 0, 0], [255, 0, 0, 0], [10, 20, 30, 0]];
        assert_eq!(decode_bmp(&bmp.bytes()).unwrap().pixels, [29, luma8(30, 20, 10), 76, 150]);
        // An index beyond the palette.
        bmp.rows[0][1] = 4;
        assert!(error(&bmp.bytes()).contains("beyond the 4-entry palette"));
    }

    #[test]
    fn rejects_unsupported_files() {
        let gray = |bmp: &mut Bmp| bmp.palette = gray_palette();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PNG not a bmp".to_vec(), "not a BMP file"),
            (Vec::new(), "not a BMP file"),
            (b"BM\0\0".to_vec(), "truncated"),
        ];
        let mut rle = Bmp::new(2, 2, 8, vec![vec![0; 2]; 2]);
        gray(&mut rle);
        rle.compression = BI_RLE8;
        cases.push((rle.bytes(), "RLE-compressed BMP is not supported"));
        rle.compression = BI_RLE4;
        rle.bpp = 4;
        cases.push((rle.bytes(), "RLE-compressed BMP is not supported"));
        rle.compression = BI_JPEG;
        cases.push((rle.bytes(), "JPEG-compressed"));
        for bpp in [1, 4] {
            let bmp = Bmp::new(8, 2, bpp, vec![vec![0; 4]; 2]);
            cases.push((bmp.bytes(), "-bit BMP is not supported; save as 8-bit grayscale"));
        }
        cases.push((Bmp::new(2, 2, 16, vec![vec![0; 4]; 2]).bytes(), "16-bit (RGB555/565) BMP is not supported"));
        let mut masks = Bmp::new(2, 2, 32, vec![vec![0; 8]; 2]);
        masks.compression = BI_BITFIELDS;
        masks.extra = [0x0000_00ffu32, 0x0000_ff00, 0x00ff_0000].iter().flat_map(|m| m.to_le_bytes()).collect();
        cases.push((masks.bytes(), "colour masks R=0x000000ff"));
        let mut masks16 = Bmp::new(2, 2, 16, vec![vec![0; 4]; 2]);
        masks16.compression = BI_BITFIELDS;
        cases.push((masks16.bytes(), "16-bit"));
        let mut os2 = Bmp::new(2, 2, 24, vec![vec![0; 6]; 2]);
        os2.header_size = 12;
        cases.push((os2.bytes(), "OS/2"));
        cases.push((Bmp::new(0, 2, 24, vec![]).bytes(), "invalid BMP size 0 x 2"));
        cases.push((Bmp::new(-3, 2, 24, vec![]).bytes(), "invalid BMP size -3 x 2"));
        let mut no_palette = Bmp::new(2, 2, 8, vec![vec![0; 2]; 2]);
        no_palette.colors_used = 300;
        cases.push((no_palette.bytes(), "claims 300 colours"));
        // Truncated pixels, palette and header; a huge claimed size.
        let mut bmp = Bmp::new(5, 3, 8, vec![vec![9; 5]; 3]);
        gray(&mut bmp);
        let full = bmp.bytes();
        cases.push((
            full[..full.len() - 4].to_vec(),
            "truncated: 5 x 3 pixels at 8 bits need 21 bytes of pixel data, the file has 20",
        ));
        cases.push((full[..600].to_vec(), "truncated: the file ends inside the BMP palette"));
        cases.push((full[..40].to_vec(), "truncated: the file ends inside the BMP header"));
        bmp.height = i32::MIN;
        cases.push((bmp.bytes(), "truncated"));
        bmp.width = i32::MAX;
        bmp.height = i32::MAX;
        cases.push((bmp.bytes(), "truncated"));

        for (bytes, expected) in cases {
            let message = error(&bytes);
            assert!(message.contains(expected), "expected {expected:?}, got {message:?}");
        }
        // Every prefix of a good file fails cleanly.
        let unpadded = full.len() - 3;
        for len in 0..unpadded {
            assert!(decode_bmp(&full[..len]).is_err(), "{len}");
        }
        assert!(decode_bmp(&full[..unpadded]).is_ok(), "the last row's padding may be missing");
    }

    #[test]
    fn file_errors_name_the_file() {
        let path = std::env::temp_dir().join(format!("psi_gpu_bmp_bad_{}.bmp", std::process::id()));
        std::fs::write(&path, b"GIF89a").unwrap();
        let result = read_bmp(&path);
        let _ = std::fs::remove_file(&path);
        match result {
            Err(Error::Invalid(message)) => {
                assert!(message.contains(&*path.to_string_lossy()) && message.contains("not a BMP"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_bmp(&path), Err(Error::Io { .. })));
        assert!(write_bmp(&path, 2, 2, &[0; 3]).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
