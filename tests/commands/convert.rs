//! Bucket-image folders <-> `.npy` frames: round trips through BMP and PNG, and the errors a
//! user can run into.

use crate::common::TempPath;
use std::path::{Path, PathBuf};

use psi_gpu::io::bmp::{luma8, write_bmp};
use psi_gpu::io::images::{ConvertInfo, ImageFormat, images_to_npy, npy_to_images};
use psi_gpu::io::npy::{NpyReader, NpyWriter};
use psi_gpu::{Error, HostType};

fn write_npy(path: &Path, ty: HostType, shape: &[usize], bytes: &[u8]) {
    let mut writer = NpyWriter::new(path, ty, shape).unwrap();
    writer.write(bytes).unwrap();
    writer.finish().unwrap();
}

fn read_npy(path: &Path) -> (HostType, Vec<usize>, Vec<u8>) {
    let mut reader = NpyReader::open(path).unwrap();
    let header = reader.header().clone();
    (header.ty, header.shape, reader.read_all().unwrap())
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// A grayscale PNG of `samples` (u8 or, with `sixteen`, big-endian u16 bytes).
fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, sixteen: bool, data: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(color);
    encoder.set_depth(if sixteen { png::BitDepth::Sixteen } else { png::BitDepth::Eight });
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
}

/// The message of an error, with a check of its variant.
fn message(result: psi_gpu::Result<ConvertInfo>) -> String {
    match result {
        Err(Error::Invalid(m) | Error::Shape(m)) => m,
        other => panic!("expected an Invalid or Shape error, got {other:?}"),
    }
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn u8_round_trips_through_bmp_and_png() {
    let tmp = TempPath::dir("u8");
    let (c, h, w) = (16, 37, 53);
    let data = noise(c * h * w, 1);
    let frame = tmp.join("frame.npy");
    write_npy(&frame, HostType::U8, &[c, h, w], &data);

    for format in [ImageFormat::Bmp, ImageFormat::Png] {
        let dir = tmp.join(format!("images_{format}"));
        let written = npy_to_images(&frame, &dir, format).unwrap();
        assert_eq!((written.channels, written.height, written.width, written.dtype), (c, h, w, HostType::U8));
        let expected: Vec<String> = (0..c).map(|i| format!("bucket_{i:02}.{format}")).collect();
        assert_eq!(names(&written.files), expected);
        assert!(written.files.iter().all(|f| f.parent() == Some(&*dir)));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), c, "no temporary files left behind");

        let back = tmp.join(format!("back_{format}.npy"));
        let read = images_to_npy(&dir, &back, None).unwrap();
        assert_eq!(read, written);
        assert_eq!(read_npy(&back), (HostType::U8, vec![c, h, w], data.clone()), "{format}");

        // Converting again into the same folder replaces the files.
        npy_to_images(&frame, &dir, format).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), c);
    }
    // The BMP files are what the format says: 8-bit, 256 gray palette entries, bottom-up rows
    // padded to 56 bytes.
    let bytes = std::fs::read(tmp.join("images_bmp/bucket_00.bmp")).unwrap();
    assert_eq!(&bytes[..2], b"BM");
    assert_eq!(bytes.len(), 14 + 40 + 1024 + 56 * h);
    assert_eq!(&bytes[1078..1078 + w], &data[(h - 1) * w..h * w]);
}

#[test]
fn u16_round_trips_through_png() {
    let tmp = TempPath::dir("u16");
    let (c, h, w) = (3, 5, 7);
    let mut values: Vec<u16> = noise(c * h * w * 2, 2).chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    values[..4].copy_from_slice(&[0, 1, 256, 65535]);
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let frame = tmp.join("frame.npy");
    write_npy(&frame, HostType::U16, &[c, h, w], &data);

    let dir = tmp.join("images");
    let info = npy_to_images(&frame, &dir, ImageFormat::Png).unwrap();
    assert_eq!(info.dtype, HostType::U16);
    let back = tmp.join("back.npy");
    let info = images_to_npy(&dir, &back, None).unwrap();
    assert_eq!((info.channels, info.height, info.width, info.dtype), (c, h, w, HostType::U16));
    assert_eq!(read_npy(&back), (HostType::U16, vec![c, h, w], data));

    // The PNGs are 16-bit grayscale, samples big-endian.
    let file = std::fs::File::open(dir.join("bucket_00.png")).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    assert_eq!(reader.output_color_type(), (png::ColorType::Grayscale, png::BitDepth::Sixteen));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    assert_eq!(&buf[..8], &[0, 0, 0, 1, 1, 0, 255, 255]);

    // BMP cannot hold 16 bits.
    let m = message(npy_to_images(&frame, &tmp.join("bmp"), ImageFormat::Bmp));
    assert!(m.contains("--format png"), "{m}");
    assert!(!tmp.join("bmp").exists(), "nothing is created for a refused conversion");
}

#[test]
fn float_frames_and_bad_shapes_are_refused() {
    let tmp = TempPath::dir("float");
    let frame = tmp.join("frame.npy");
    write_npy(&frame, HostType::F32, &[2, 2, 2], &[0; 32]);
    let m = message(npy_to_images(&frame, &tmp.join("out"), ImageFormat::Png));
    assert!(m.contains("convert float frames to integers first"), "{m}");
    write_npy(&frame, HostType::F16, &[2, 2, 2], &[0; 16]);
    let m = message(npy_to_images(&frame, &tmp.join("out"), ImageFormat::Bmp));
    assert!(m.contains("convert float frames to integers first"), "{m}");

    write_npy(&frame, HostType::U8, &[4, 4], &[0; 16]);
    let m = message(npy_to_images(&frame, &tmp.join("out"), ImageFormat::Bmp));
    assert!(m.contains("expected a (C, H, W) frame"), "{m}");
    write_npy(&frame, HostType::U8, &[2, 0, 4], &[]);
    let m = message(npy_to_images(&frame, &tmp.join("out"), ImageFormat::Bmp));
    assert!(m.contains("empty"), "{m}");
    assert!(!tmp.join("out").exists());
    assert!(matches!(
        npy_to_images(&tmp.join("missing.npy"), &tmp.join("out"), ImageFormat::Bmp),
        Err(Error::Io { .. })
    ));
}

#[test]
fn many_channels_get_more_digits() {
    let tmp = TempPath::dir("many");
    let frame = tmp.join("frame.npy");
    let data = noise(101 * 2 * 3, 3);
    write_npy(&frame, HostType::U8, &[101, 2, 3], &data);
    let info = npy_to_images(&frame, &tmp.join("images"), ImageFormat::Bmp).unwrap();
    assert_eq!(names(&info.files[..2]), ["bucket_000.bmp", "bucket_001.bmp"]);
    assert_eq!(names(&info.files[100..]), ["bucket_100.bmp"]);
    let back = tmp.join("back.npy");
    images_to_npy(&tmp.join("images"), &back, None).unwrap();
    assert_eq!(read_npy(&back).2, data);
}

#[test]
fn stale_images_in_the_target_folder_are_an_error() {
    let tmp = TempPath::dir("stale");
    let frame = tmp.join("frame.npy");
    write_npy(&frame, HostType::U8, &[2, 2, 2], &[1; 8]);
    let dir = tmp.join("images");
    std::fs::create_dir(&dir).unwrap();
    write_bmp(&dir.join("bucket_02.bmp"), 2, 2, &[0; 4]).unwrap();
    let m = message(npy_to_images(&frame, &dir, ImageFormat::Bmp));
    assert!(m.contains("bucket_02.bmp") && m.contains("would not"), "{m}");
    std::fs::remove_file(dir.join("bucket_02.bmp")).unwrap();
    npy_to_images(&frame, &dir, ImageFormat::Bmp).unwrap();
    let m = message(npy_to_images(&frame, &dir, ImageFormat::Png));
    assert!(m.contains("bucket_00.bmp"), "{m}");
    // Other files are left alone.
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    npy_to_images(&frame, &dir, ImageFormat::Bmp).unwrap();
}

#[test]
fn folder_errors_are_clear() {
    let tmp = TempPath::dir("errors");
    let out = tmp.join("out.npy");
    let gray = |dir: &Path, name: &str, w: usize, h: usize| write_bmp(&dir.join(name), w, h, &vec![7; w * h]).unwrap();

    // No images at all (other files are ignored).
    let empty = tmp.join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("bucket_00.txt"), "not an image").unwrap();
    std::fs::write(empty.join("readme.bmp"), "not a bucket").unwrap();
    let m = message(images_to_npy(&empty, &out, None));
    assert!(m.contains("no bucket images") && m.contains("bucket_NN.bmp, .png or .tif"), "{m}");
    assert!(matches!(images_to_npy(&tmp.join("missing"), &out, None), Err(Error::Io { .. })));

    // A gap: 00, 01, 03.
    let gap = tmp.join("gap");
    std::fs::create_dir(&gap).unwrap();
    for i in [0, 1, 3] {
        gray(&gap, &format!("bucket_{i:02}.bmp"), 4, 3);
    }
    let m = message(images_to_npy(&gap, &out, None));
    assert!(m.contains("image 2 (bucket_02.") && m.contains("missing"), "{m}");
    // Numbered from 1.
    std::fs::remove_file(gap.join("bucket_00.bmp")).unwrap();
    gray(&gap, "bucket_02.bmp", 4, 3);
    let m = message(images_to_npy(&gap, &out, None));
    assert!(m.contains("image 0 (bucket_00.") && m.contains("missing"), "{m}");

    // Mismatched sizes: the odd file is named.
    let sizes = tmp.join("sizes");
    std::fs::create_dir(&sizes).unwrap();
    gray(&sizes, "bucket_00.bmp", 4, 3);
    gray(&sizes, "bucket_01.bmp", 4, 3);
    gray(&sizes, "bucket_02.bmp", 3, 4);
    match images_to_npy(&sizes, &out, None) {
        Err(Error::Shape(m)) => assert!(m.contains("bucket_02.bmp is 3 x 4") && m.contains("same size"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Mixed bit depths: 8-bit BMP and 16-bit PNG.
    let depths = tmp.join("depths");
    std::fs::create_dir(&depths).unwrap();
    gray(&depths, "bucket_00.bmp", 2, 2);
    write_png(&depths.join("bucket_01.png"), 2, 2, png::ColorType::Grayscale, true, &[0; 8]);
    let m = message(images_to_npy(&depths, &out, None));
    assert!(m.contains("bucket_01.png is a 16-bit image") && m.contains("share a bit depth"), "{m}");

    // Both formats for one index.
    let both = tmp.join("both");
    std::fs::create_dir(&both).unwrap();
    gray(&both, "bucket_00.bmp", 2, 2);
    write_png(&both.join("bucket_00.png"), 2, 2, png::ColorType::Grayscale, false, &[0; 4]);
    let m = message(images_to_npy(&both, &out, None));
    assert!(m.contains("bucket_00.bmp and") && m.contains("bucket_00.png are image 0"), "{m}");

    // A broken image is named.
    let broken = tmp.join("broken");
    std::fs::create_dir(&broken).unwrap();
    gray(&broken, "bucket_00.bmp", 2, 2);
    std::fs::write(broken.join("bucket_01.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let m = message(images_to_npy(&broken, &out, None));
    assert!(m.contains("bucket_01.png"), "{m}");
    std::fs::write(broken.join("bucket_01.png"), b"").unwrap();
    std::fs::write(broken.join("bucket_01.bmp"), b"BM").unwrap();
    std::fs::remove_file(broken.join("bucket_01.png")).unwrap();
    let m = message(images_to_npy(&broken, &out, None));
    assert!(m.contains("bucket_01.bmp") && m.contains("truncated"), "{m}");

    assert!(!out.exists(), "a failed conversion writes nothing");
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 6, "and leaves no temporary file");
}

/// A 24-bit bottom-up BMP made by hand: `pixels` are (R, G, B), rows top first.
fn bmp24(width: usize, height: usize, pixels: &[[u8; 3]]) -> Vec<u8> {
    let stride = (3 * width).div_ceil(4) * 4;
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&((54 + stride * height) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(width as i32).to_le_bytes());
    out.extend_from_slice(&(height as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]); // BI_RGB, image size, resolution, colours
    for row in pixels.chunks(width).rev() {
        let start = out.len();
        for [r, g, b] in row {
            out.extend_from_slice(&[*b, *g, *r]);
        }
        out.resize(start + stride, 0);
    }
    out
}

#[test]
fn colour_images_are_read_as_gray() {
    let tmp = TempPath::dir("colour");
    let dir = tmp.join("images");
    std::fs::create_dir(&dir).unwrap();
    let (w, h) = (3, 2);
    let rgb: Vec<[u8; 3]> = vec![[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9], [200, 100, 50], [255, 255, 255]];
    std::fs::write(dir.join("bucket_00.bmp"), bmp24(w, h, &rgb)).unwrap();
    // The same pixels as an RGB PNG, an RGBA PNG and a palette PNG.
    let flat: Vec<u8> = rgb.concat();
    write_png(&dir.join("bucket_01.png"), 3, 2, png::ColorType::Rgb, false, &flat);
    let rgba: Vec<u8> = rgb.iter().flat_map(|p| [p[0], p[1], p[2], 128]).collect();
    write_png(&dir.join("bucket_02.png"), 3, 2, png::ColorType::Rgba, false, &rgba);
    {
        let file = std::fs::File::create(dir.join("bucket_03.png")).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 3, 2);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(flat.clone());
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0, 1, 2, 3, 4, 5]).unwrap();
        writer.finish().unwrap();
    }
    // And plain gray with alpha.
    let gray: Vec<u8> = [76u8, 150, 29, 9, luma8(200, 100, 50), 255].iter().flat_map(|&v| [v, 0]).collect();
    write_png(&dir.join("bucket_04.png"), 3, 2, png::ColorType::GrayscaleAlpha, false, &gray);

    let out = tmp.join("out.npy");
    let info = images_to_npy(&dir, &out, None).unwrap();
    assert_eq!((info.channels, info.height, info.width, info.dtype), (5, 2, 3, HostType::U8));
    let expected: Vec<u8> = [76, 150, 29, 9, luma8(200, 100, 50), 255].repeat(5);
    assert_eq!(read_npy(&out), (HostType::U8, vec![5, 2, 3], expected));
}

#[test]
fn custom_name_patterns() {
    let tmp = TempPath::dir("pattern");
    let dir = tmp.join("images");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3u8 {
        write_png(&dir.join(format!("cam{i}_raw.png")), 2, 1, png::ColorType::Grayscale, false, &[i, 10 + i]);
    }
    write_bmp(&dir.join("cam3_raw.bmp"), 2, 1, &[3, 13]).unwrap();
    let out = tmp.join("out.npy");

    let info = images_to_npy(&dir, &out, Some("cam{}_raw")).unwrap();
    assert_eq!(names(&info.files), ["cam0_raw.png", "cam1_raw.png", "cam2_raw.png", "cam3_raw.bmp"]);
    assert_eq!(read_npy(&out).2, [0, 10, 1, 11, 2, 12, 3, 13]);
    // An extension in the pattern narrows the match.
    let info = images_to_npy(&dir, &out, Some("cam{}_raw.png")).unwrap();
    assert_eq!(info.channels, 3);
    // The default pattern finds nothing here.
    assert!(message(images_to_npy(&dir, &out, None)).contains("no bucket images"));
    for bad in ["cam_raw", "cam{}{}", "sub/cam{}"] {
        let m = message(images_to_npy(&dir, &out, Some(bad)));
        assert!(m.contains("bad image name pattern"), "{bad}: {m}");
    }
}

/// An interlaced (Adam7) 8-bit grayscale PNG made by hand (the png crate does not write them),
/// its data in stored (uncompressed) deflate blocks.
fn interlaced_png(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    {
        if x0 >= width {
            continue;
        }
        for y in (y0..height).step_by(dy) {
            raw.push(0); // filter: none
            raw.extend((x0..width).step_by(dx).map(|x| pixels[y * width + x]));
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        zlib.extend_from_slice(&(block.len() as u16).to_le_bytes());
        zlib.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 1]); // 8-bit gray, deflate, adaptive filters, Adam7
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn interlaced_png_is_read() {
    let tmp = TempPath::dir("interlaced");
    let dir = tmp.join("images");
    std::fs::create_dir(&dir).unwrap();
    let (w, h) = (11, 9);
    let channels: Vec<Vec<u8>> = (0..2).map(|c| noise(w * h, 10 + c)).collect();
    std::fs::write(dir.join("bucket_00.png"), interlaced_png(w, h, &channels[0])).unwrap();
    write_png(&dir.join("bucket_01.png"), w as u32, h as u32, png::ColorType::Grayscale, false, &channels[1]);
    let out = tmp.join("out.npy");
    images_to_npy(&dir, &out, None).unwrap();
    assert_eq!(read_npy(&out), (HostType::U8, vec![2, h, w], channels.concat()));
}
