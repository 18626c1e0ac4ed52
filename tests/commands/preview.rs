//! PNG previews: sizes, colours, the colour bar, the robust and the full colour scale, no-data
//! cells and their legend swatch, streaming downsampling and errors, checked by decoding the
//! written PNG.

use crate::common::TempPath;
use std::collections::HashSet;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use psi_gpu::Error;
use psi_gpu::HostType;
use psi_gpu::io::npy::{NpyWriter, write_f32};
use psi_gpu::io::preview::{
    NO_DATA, PreviewInfo, PreviewOptions, PreviewRange, viridis, write_error_preview, write_preview,
};

/// Decoded 8-bit RGB image.
struct Image {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Image {
    fn load(path: &PathBuf) -> Image {
        let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
        rgb.truncate(info.buffer_size());
        Image { w: info.width as usize, h: info.height as usize, rgb }
    }

    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 1)
}

/// The colour bar: a column right of the map with many distinct colours; also checks that the
/// panel holds black text.
fn check_colour_bar(img: &Image, info: &PreviewInfo) {
    let map_w = info.grid_width * info.scale;
    let best = (map_w..img.w).map(|x| (0..img.h).map(|y| img.px(x, y)).collect::<HashSet<_>>().len()).max().unwrap();
    assert!(best >= 100.min(img.h / 2), "no colour bar: at most {best} colours in a column");
    let black = (map_w..img.w).flat_map(|x| (0..img.h).map(move |y| (x, y))).filter(|&(x, y)| img.px(x, y) == [0; 3]);
    assert!(black.count() > 200, "no text");
}

fn full() -> PreviewOptions {
    PreviewOptions { range: PreviewRange::Full, ..Default::default() }
}

/// Pixels right of the map (the legend) in the no-data colour.
fn legend_no_data_pixels(img: &Image, info: &PreviewInfo) -> usize {
    let map_w = info.grid_width * info.scale;
    (map_w..img.w).flat_map(|x| (0..img.h).map(move |y| (x, y))).filter(|&(x, y)| img.px(x, y) == NO_DATA).count()
}

#[test]
fn gradient_preview() {
    let (h, w) = (300, 500);
    let value = |r: usize, c: usize| c as f32 * 0.01 + r as f32 * 0.02 - 1.0;
    let data: Vec<f32> = (0..h * w).map(|i| value(i / w, i % w)).collect();
    let input = TempPath::new("gradient.npy");
    write_f32(&input.0, &[h, w], &data).unwrap();
    let out = TempPath::new("gradient.png");
    let info = write_preview(&input.0, &out.0, &full()).unwrap();

    assert_eq!((info.grid_height, info.grid_width, info.scale), (h, w, 1));
    assert_eq!((info.min, info.max), (-1.0, value(h - 1, w - 1)));
    let img = Image::load(&out.0);
    assert_eq!((img.w, img.h), (info.width, info.height));
    assert_eq!(img.h, h);
    assert!(img.w > w + 24 && img.w < w + 300, "{}", img.w);
    assert_eq!(img.px(0, 0), [68, 1, 84]); // viridis(0): the minimum
    assert_eq!(img.px(0, 0), viridis(0.0));
    assert_eq!(img.px(w - 1, h - 1), [253, 231, 37]); // viridis(1): the maximum
    let (min, max) = (info.min as f64, info.max as f64);
    for (r, c) in [(0, 250), (150, 0), (100, 333), (299, 17)] {
        let t = ((value(r, c) as f64 - min) / (max - min)) as f32;
        assert!(close(img.px(c, r), viridis(t)), "({r}, {c}): {:?} vs {:?}", img.px(c, r), viridis(t));
    }
    check_colour_bar(&img, &info);
    // The temporary file was renamed away.
    let tmp =
        out.0.with_file_name(format!(".{}.tmp-{}", out.0.file_name().unwrap().to_str().unwrap(), std::process::id()));
    assert!(!tmp.exists());
}

#[test]
fn tall_strip_is_block_averaged() {
    // 3000 x 20 at max_size 200: 15 x 20 blocks into a 200 x 1 grid. Value = row, with NaN and
    // inf pixels that must be left out.
    let (h, w) = (3000, 20);
    let mut data: Vec<f32> = (0..h * w).map(|i| (i / w) as f32).collect();
    data[3] = f32::NAN; // row 0
    data[w * 14 + 5] = f32::INFINITY; // row 14
    for v in &mut data[w * 2985..] {
        *v = f32::NAN; // the last block's rows 2985..3000: no data
    }
    let input = TempPath::new("strip.npy");
    write_f32(&input.0, &[1, h, w], &data).unwrap();
    let out = TempPath::new("strip.png");
    let opts = PreviewOptions { max_size: 200, ..full() };
    let info = write_preview(&input.0, &out.0, &opts).unwrap();
    assert_eq!((info.grid_height, info.grid_width, info.scale), (200, 1, 1));
    assert_eq!(info.min, 7.0); // mean of rows 0..15
    assert_eq!(info.max, 15.0 * 198.0 + 7.0); // the last block with data
    let img = Image::load(&out.0);
    assert_eq!((img.w, img.h), (info.width, info.height));
    assert_eq!(img.h, 200);
    assert_eq!(img.px(0, 0), viridis(0.0));
    assert_eq!(img.px(0, 198), viridis(1.0));
    assert_eq!(img.px(0, 199), NO_DATA);
    assert_eq!(info.no_data, 1);
    assert!(legend_no_data_pixels(&img, &info) > 20, "no no-data swatch in the legend");
    check_colour_bar(&img, &info);
}

#[test]
fn small_map_keeps_a_readable_height_and_integer_input() {
    // A 2 x 600 u8 map, downsampled to 1 x 300: the canvas is taller than the map so the scale
    // fits.
    let input = TempPath::new("wide.npy");
    let mut wr = NpyWriter::new(&input.0, HostType::U8, &[2, 600]).unwrap();
    wr.write(&(0..1200).map(|i| (i % 600 / 3) as u8).collect::<Vec<_>>()).unwrap();
    wr.finish().unwrap();
    let out = TempPath::new("wide.png");
    let info = write_preview(
        &input.0,
        &out.0,
        &PreviewOptions { max_size: 300, label: "counts".into(), range: PreviewRange::Full },
    )
    .unwrap();
    assert_eq!((info.grid_height, info.grid_width, info.scale), (1, 300, 1));
    assert_eq!((info.min, info.max), (0.0, 199.0));
    let img = Image::load(&out.0);
    assert!(img.h >= 100);
    assert_eq!(img.px(0, 0), viridis(0.0));
    assert_eq!(img.px(0, 1), [255, 255, 255]); // below the map
    check_colour_bar(&img, &info);
}

#[test]
fn error_preview_shows_absolute_difference() {
    let (h, w) = (40, 60);
    let truth: Vec<f32> = (0..h * w).map(|i| (i % w) as f32 * 0.1).collect();
    let pred: Vec<f32> = truth.iter().enumerate().map(|(i, t)| t + if i % 2 == 0 { 0.5 } else { -0.25 }).collect();
    let (tp, pp) = (TempPath::new("etruth.npy"), TempPath::new("epred.npy"));
    write_f32(&tp.0, &[h, w], &truth).unwrap();
    write_f32(&pp.0, &[h, w], &pred).unwrap();
    let out = TempPath::new("err.png");
    let opts = PreviewOptions { max_size: 1600, label: "|error| µm".into(), ..Default::default() };
    let info = write_error_preview(&pp.0, &tp.0, &out.0, &opts).unwrap();
    assert!((info.min - 0.25).abs() < 1e-5 && (info.max - 0.5).abs() < 1e-5, "{info:?}");
    // 60 wide: enlarged 6 times (to 360 px, under 400).
    assert_eq!(info.scale, 6);
    let img = Image::load(&out.0);
    assert_eq!((img.w, img.h), (info.width, info.height));
    assert_eq!(img.h, 240);
    for (x, y) in [(0, 0), (5, 5), (12, 0)] {
        assert_eq!(img.px(x, y), viridis(1.0), "({x}, {y})");
    }
    for (x, y) in [(6, 0), (11, 5), (18, 239)] {
        assert_eq!(img.px(x, y), viridis(0.0), "({x}, {y})");
    }
    check_colour_bar(&img, &info);

    let other = TempPath::new("eother.npy");
    write_f32(&other.0, &[h, w + 1], &vec![0.0; h * (w + 1)]).unwrap();
    assert!(matches!(write_error_preview(&other.0, &tp.0, &out.0, &opts), Err(Error::Shape(_))));
}

/// One spike flattens a min–max picture; the default scale (1st to 99th percentile) keeps the
/// ramp's colours and draws the spike in the top colour.
#[test]
fn robust_scale_ignores_a_spike() {
    let (h, w) = (40, 100);
    let mut data: Vec<f32> = (0..h * w).map(|i| (i % w) as f32).collect(); // 0..99 per row
    data[5 * w + 50] = 1e6;
    let input = TempPath::new("spike.npy");
    write_f32(&input.0, &[h, w], &data).unwrap();
    let out = TempPath::new("spike.png");
    let info = write_preview(&input.0, &out.0, &PreviewOptions::default()).unwrap();
    // 4000 cells, nearest rank: the 1st percentile is sorted[40] = 1, the 99th sorted[3959] = 99.
    assert_eq!((info.min, info.max, info.data_min, info.data_max), (1.0, 99.0, 0.0, 1e6));
    assert!(!info.full_range && info.no_data == 0);
    let img = Image::load(&out.0);
    let s = info.scale;
    assert_eq!(img.px(0, 0), viridis(0.0)); // below the low end: its colour
    assert_eq!(img.px(50 * s, 5 * s), viridis(1.0)); // the spike
    for c in [20, 50, 75] {
        assert!(close(img.px(c * s, 0), viridis((c as f32 - 1.0) / 98.0)), "column {c}");
    }
    assert_eq!(legend_no_data_pixels(&img, &info), 0, "a no-data swatch without no-data cells");
    // Full range: the ramp is all at the bottom colour.
    let info = write_preview(&input.0, &out.0, &full()).unwrap();
    assert_eq!((info.min, info.max), (0.0, 1e6));
    assert!(info.full_range);
    assert!(close(Image::load(&out.0).px(75 * s, 0), viridis(0.0)));
    // Other percentiles, and percentiles that meet: a map flat but for the spike falls back to
    // min–max.
    let opts = PreviewOptions { range: PreviewRange::Percentiles { lo: 10.0, hi: 90.0 }, ..Default::default() };
    let info = write_preview(&input.0, &out.0, &opts).unwrap();
    assert_eq!((info.min, info.max), (10.0, 90.0));
    let mut flat = vec![3.0f32; h * w];
    flat[7] = 9.0;
    write_f32(&input.0, &[h, w], &flat).unwrap();
    let info = write_preview(&input.0, &out.0, &PreviewOptions::default()).unwrap();
    assert_eq!((info.min, info.max, info.full_range), (3.0, 9.0, true));
    let bad = PreviewOptions { range: PreviewRange::Percentiles { lo: 60.0, hi: 40.0 }, ..Default::default() };
    assert!(matches!(write_preview(&input.0, &out.0, &bad), Err(Error::Invalid(_))));
}

/// Downsampled maps keep a NaN region: a cell more than half of whose pixels are NaN is no data.
#[test]
fn nan_regions_survive_downsampling() {
    let (h, w) = (400, 400);
    let mut data: Vec<f32> = (0..h * w).map(|i| ((i / w) + (i % w)) as f32).collect();
    for r in 100..200 {
        for c in 100..300 {
            data[r * w + c] = f32::NAN;
        }
    }
    // Scattered NaN (one pixel in 16) does not blank its cells.
    for i in (0..h * w).step_by(16) {
        if data[i].is_finite() {
            data[i] = f32::NAN;
        }
    }
    let input = TempPath::new("holes.npy");
    write_f32(&input.0, &[h, w], &data).unwrap();
    let out = TempPath::new("holes.png");
    let info = write_preview(&input.0, &out.0, &PreviewOptions { max_size: 100, ..Default::default() }).unwrap();
    assert_eq!((info.grid_height, info.grid_width, info.scale), (100, 100, 1));
    assert_eq!(info.no_data, 25 * 50, "the 100 x 200 NaN block is 25 x 50 cells of 4 x 4");
    let img = Image::load(&out.0);
    assert_eq!(img.px(40, 30), NO_DATA);
    assert_ne!(img.px(10, 10), NO_DATA);
    assert!(legend_no_data_pixels(&img, &info) > 20);
}

#[test]
fn bad_input_leaves_no_file() {
    let out = TempPath::new("bad.png");
    let stack = TempPath::new("stack.npy");
    write_f32(&stack.0, &[2, 3, 4], &[0.0; 24]).unwrap();
    match write_preview(&stack.0, &out.0, &PreviewOptions::default()) {
        Err(Error::Shape(message)) => assert!(message.contains("(H, W) or (1, H, W)"), "{message}"),
        other => panic!("{other:?}"),
    }
    let nan = TempPath::new("nan.npy");
    write_f32(&nan.0, &[3, 4], &[f32::NAN; 12]).unwrap();
    assert!(matches!(write_preview(&nan.0, &out.0, &PreviewOptions::default()), Err(Error::Invalid(_))));
    let empty = TempPath::new("empty.npy");
    write_f32(&empty.0, &[0, 4], &[]).unwrap();
    assert!(matches!(write_preview(&empty.0, &out.0, &PreviewOptions::default()), Err(Error::Shape(_))));
    let zero = PreviewOptions { max_size: 0, ..Default::default() };
    assert!(matches!(write_preview(&nan.0, &out.0, &zero), Err(Error::Invalid(_))));
    assert!(!out.0.exists());

    let ok = TempPath::new("ok.npy");
    write_f32(&ok.0, &[3, 4], &[1.0; 12]).unwrap();
    let nowhere = std::env::temp_dir().join(format!("psi-gpu-no-such-dir-{}", std::process::id())).join("x.png");
    match write_preview(&ok.0, &nowhere, &PreviewOptions::default()) {
        Err(Error::Io { path, .. }) => assert_eq!(path, nowhere),
        other => panic!("{other:?}"),
    }
    // A flat map draws (mid-scale colour), with equal ends.
    let info = write_preview(&ok.0, &out.0, &PreviewOptions::default()).unwrap();
    assert_eq!((info.min, info.max), (1.0, 1.0));
    assert_eq!(Image::load(&out.0).px(0, 0), viridis(0.5));
}

/// Timing on a real-size map: `PSI_GPU_PREVIEW_MAP=/path/to/map.npy cargo test --release --test
/// preview -- --ignored --nocapture` (writes `<map>.png` next to it).
#[test]
#[ignore]
fn timing_on_a_large_map() {
    let Ok(map) = std::env::var("PSI_GPU_PREVIEW_MAP") else {
        eprintln!("set PSI_GPU_PREVIEW_MAP to an (H, W) .npy map");
        return;
    };
    let map = PathBuf::from(map);
    let out = map.with_extension("png");
    let start = Instant::now();
    let info = write_preview(&map, &out, &PreviewOptions::default()).unwrap();
    eprintln!("write_preview {}: {:.3} s, {info:?}", map.display(), start.elapsed().as_secs_f64());
    let start = Instant::now();
    let m = psi_gpu::commands::eval::eval(&map, &map, &Default::default()).unwrap();
    eprintln!("eval (map against itself): {:.3} s, {} pixels", start.elapsed().as_secs_f64(), m.pixels);
}
