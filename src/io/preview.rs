//! Colour-mapped PNG previews of height maps (and of error maps).
//!
//! A map is an `(H, W)` or `(1, H, W)` `.npy` array of any dtype [`crate::io::npy`] reads. It is
//! streamed in bands of rows by [`MapReader`] and block-averaged on the fly into a grid of at
//! most [`PreviewOptions::max_size`] pixels on its long side, so a 9344 × 7000 map is read once
//! with memory bounded by the band and the output grid. NaN and infinite pixels are left out of
//! the averages; a grid cell with no finite pixel is drawn grey.
//!
//! The grid is coloured with viridis from its minimum (dark purple) to its maximum (yellow), and
//! a colour bar to its right shows the scale: maximum at the top, minimum at the bottom and the
//! label (e.g. `height µm`) in between, in a small built-in bitmap font. The PNG (8-bit RGB) is
//! written to a temporary file next to the target and renamed into place, so an error never
//! leaves a half-written image behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::f16;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::atomic::write_with;
use crate::io::npy::read_header;

/// Pixels read per band (about 16 MiB of f32); bands hold at least one row.
const BAND_PIXELS: usize = 1 << 22;

/// Number of rows per band for a map `width` pixels wide.
pub fn band_rows(width: usize) -> usize {
    (BAND_PIXELS / width.max(1)).max(1)
}

/// An `(H, W)` or `(1, H, W)` `.npy` map, read front to back in bands of rows as f32.
#[derive(Debug)]
pub struct MapReader {
    file: File,
    path: PathBuf,
    ty: HostType,
    height: usize,
    width: usize,
    next_row: usize,
    raw: Vec<u8>,
}

impl MapReader {
    /// Open `path` and check that it holds a single 2-D map.
    pub fn open(path: &Path) -> Result<Self> {
        let header = read_header(path)?;
        let (height, width) = match *header.shape.as_slice() {
            [h, w] | [1, h, w] => (h, w),
            _ => {
                return Err(Error::Shape(format!(
                    "{}: expected a map of shape (H, W) or (1, H, W), found shape {:?}",
                    path.display(),
                    header.shape
                )));
            }
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(header.data_offset)).map_err(|e| Error::io(path, e))?;
        Ok(MapReader { file, path: path.to_path_buf(), ty: header.ty, height, width, next_row: 0, raw: Vec::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Element type on disk.
    pub fn dtype(&self) -> HostType {
        self.ty
    }

    /// Rows not read yet.
    pub fn rows_left(&self) -> usize {
        self.height - self.next_row
    }

    /// Read the next `rows` rows into `out` (resized to `rows * width` values, converted to f32
    /// without scaling, as [`crate::io::npy::to_f32`] does).
    pub fn read_band(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        if rows > self.rows_left() {
            return Err(Error::Invalid(format!(
                "{}: cannot read {rows} more rows, only {} of {} are left",
                self.path.display(),
                self.rows_left(),
                self.height
            )));
        }
        // rows * width <= height * width, whose byte size the header check showed to fit.
        let n = rows * self.width;
        self.raw.resize(n * self.ty.size(), 0);
        self.file.read_exact(&mut self.raw).map_err(|e| Error::io(&self.path, e))?;
        self.next_row += rows;
        out.clear();
        out.reserve(n);
        let raw = &self.raw;
        match self.ty {
            HostType::U8 => out.extend(raw.iter().map(|&b| f32::from(b))),
            HostType::U16 => out.extend(raw.chunks_exact(2).map(|c| f32::from(u16::from_le_bytes([c[0], c[1]])))),
            HostType::F16 => out.extend(raw.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
            HostType::F32 => {
                out.extend(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            }
        }
        Ok(())
    }

    /// An [`Error::Shape`] unless `other` has the same `(H, W)`; `what`/`other_what` name the
    /// two maps in the message (e.g. "prediction", "truth").
    pub fn check_same_shape(&self, what: &str, other: &MapReader, other_what: &str) -> Result<()> {
        if (self.height, self.width) == (other.height, other.width) {
            return Ok(());
        }
        Err(Error::Shape(format!(
            "shape mismatch: {what} {} is {} x {} (H x W) but {other_what} {} is {} x {}",
            self.path.display(),
            self.height,
            self.width,
            other.path.display(),
            other.height,
            other.width
        )))
    }
}

/// How a preview is drawn.
#[derive(Clone, Debug)]
pub struct PreviewOptions {
    /// Largest size of the map image on its long side, in pixels; larger maps are block-averaged
    /// down, smaller ones are drawn one pixel per value. Default 1600.
    pub max_size: usize,
    /// Text under the scale, e.g. `height µm` or `|error| µm`. Letters are drawn lower-case;
    /// characters the built-in font lacks are drawn as `?`.
    pub label: String,
}

impl Default for PreviewOptions {
    fn default() -> Self {
        PreviewOptions { max_size: 1600, label: "height µm".into() }
    }
}

/// What [`write_preview`] drew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreviewInfo {
    /// Smallest and largest value of the (block-averaged) grid: the ends of the colour scale.
    pub min: f32,
    pub max: f32,
    /// Size of the whole PNG (map and colour bar).
    pub width: usize,
    pub height: usize,
    /// Size of the block-averaged grid.
    pub grid_width: usize,
    pub grid_height: usize,
    /// Each grid cell is drawn as `scale` × `scale` pixels at the PNG's top-left corner (small
    /// maps are enlarged, within `max_size`, so that they can be seen).
    pub scale: usize,
}

/// Size of the grid a `height` × `width` map is averaged into: at most `max_size` on the long
/// side, never larger than the map.
pub fn grid_size(height: usize, width: usize, max_size: usize) -> (usize, usize) {
    let long = height.max(width);
    if long <= max_size {
        return (height, width);
    }
    let scale = max_size as f64 / long as f64;
    let fit = |n: usize| ((n as f64 * scale).round() as usize).clamp(1, n);
    (fit(height), fit(width))
}

/// Block-averages rows of a `height` × `width` map, pushed in order, into a smaller grid: input
/// pixel `(r, c)` falls in cell `(r * gh / height, c * gw / width)`. Non-finite values are
/// skipped; a cell without finite values is NaN.
#[derive(Debug)]
pub struct Downsampler {
    height: usize,
    gh: usize,
    gw: usize,
    col_cell: Vec<u32>,
    sums: Vec<f64>,
    counts: Vec<u32>,
    row: usize,
    cell_row: usize,
    grid: Vec<f32>,
}

impl Downsampler {
    pub fn new(height: usize, width: usize, gh: usize, gw: usize) -> Result<Self> {
        if gh == 0 || gw == 0 || gh > height || gw > width || gw > u32::MAX as usize {
            return Err(Error::Invalid(format!("cannot average a {height} x {width} map into {gh} x {gw} cells")));
        }
        let col_cell = (0..width).map(|c| (c as u64 * gw as u64 / width as u64) as u32).collect();
        Ok(Downsampler {
            height,
            gh,
            gw,
            col_cell,
            sums: vec![0.0; gw],
            counts: vec![0; gw],
            row: 0,
            cell_row: 0,
            grid: Vec::with_capacity(gh * gw),
        })
    }

    /// Add the next rows (`values.len()` must be a multiple of the map width).
    pub fn push_rows(&mut self, values: &[f32]) {
        let width = self.col_cell.len();
        for row in values.chunks_exact(width) {
            if self.row >= self.height {
                return;
            }
            let cell_row = (self.row as u64 * self.gh as u64 / self.height as u64) as usize;
            if cell_row != self.cell_row {
                self.flush_row();
                self.cell_row = cell_row;
            }
            for (&v, &cell) in row.iter().zip(&self.col_cell) {
                if v.is_finite() {
                    self.sums[cell as usize] += f64::from(v);
                    self.counts[cell as usize] += 1;
                }
            }
            self.row += 1;
        }
    }

    fn flush_row(&mut self) {
        for (sum, count) in self.sums.iter_mut().zip(&mut self.counts) {
            self.grid.push(if *count > 0 { (*sum / f64::from(*count)) as f32 } else { f32::NAN });
            *sum = 0.0;
            *count = 0;
        }
    }

    /// The grid, row-major `gh × gw`, once every row was pushed.
    pub fn finish(mut self) -> Result<Vec<f32>> {
        if self.row != self.height {
            return Err(Error::Invalid(format!("only {} of {} rows were averaged", self.row, self.height)));
        }
        self.flush_row();
        debug_assert_eq!(self.grid.len(), self.gh * self.gw);
        Ok(self.grid)
    }
}

/// Viridis at 16 evenly spaced points (matplotlib's perceptually uniform colour map, sampled at
/// `i / 15`); [`viridis`] interpolates linearly between them.
const VIRIDIS: [[u8; 3]; 16] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x1a, 0x6c],
    [0x47, 0x2f, 0x7d],
    [0x41, 0x44, 0x87],
    [0x39, 0x56, 0x8c],
    [0x31, 0x68, 0x8e],
    [0x2a, 0x78, 0x8e],
    [0x23, 0x88, 0x8e],
    [0x1f, 0x98, 0x8b],
    [0x22, 0xa8, 0x84],
    [0x35, 0xb7, 0x79],
    [0x54, 0xc5, 0x68],
    [0x7a, 0xd1, 0x51],
    [0xa5, 0xdb, 0x36],
    [0xd2, 0xe2, 0x1b],
    [0xfd, 0xe7, 0x25],
];

/// Colour of cells without a finite value (viridis has no grey).
pub const NO_DATA: [u8; 3] = [150, 150, 150];

/// The viridis colour of `t` in `[0, 1]` (clamped; NaN gives [`NO_DATA`]).
pub fn viridis(t: f32) -> [u8; 3] {
    if t.is_nan() {
        return NO_DATA;
    }
    let x = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f32;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    std::array::from_fn(|k| (f32::from(a[k]) + (f32::from(b[k]) - f32::from(a[k])) * f).round() as u8)
}

/// A rendered preview: 8-bit RGB pixels, row-major.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
    /// Ends of the colour scale (the grid's finite minimum and maximum).
    pub min: f32,
    pub max: f32,
    /// Pixels per grid cell along each axis.
    pub scale: usize,
}

/// Width of the colour bar.
const BAR_WIDTH: usize = 24;
/// Space between the map and the colour bar, and after the text.
const GAP: usize = 12;
/// Space between the colour bar and its text.
const TEXT_GAP: usize = 6;
/// Smallest canvas height, so that the scale's text fits beside even a one-pixel-high map.
const MIN_HEIGHT: usize = 120;
/// Maps smaller than this on their long side are enlarged by a whole factor towards it.
const MIN_LONG_SIDE: usize = 400;
const BLACK: [u8; 3] = [0, 0, 0];

/// Draw a `gh × gw` grid (row-major, NaN for no data) with its colour bar. A grid whose long side
/// is under 400 is enlarged by a whole factor (each cell a square of pixels), up to that size
/// and never beyond `opts.max_size`.
pub fn render(grid: &[f32], gh: usize, gw: usize, opts: &PreviewOptions) -> Result<Rendered> {
    if gh.checked_mul(gw) != Some(grid.len()) || grid.is_empty() {
        return Err(Error::Invalid(format!("a {gh} x {gw} grid needs {} values, got {}", gh * gw, grid.len())));
    }
    let (min, max) = grid
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if min > max {
        return Err(Error::Invalid("nothing to draw: the map has no finite values".into()));
    }
    let range = f64::from(max) - f64::from(min);
    let t_of = |v: f32| if range > 0.0 { ((f64::from(v) - f64::from(min)) / range) as f32 } else { 0.5 };

    let long = gh.max(gw);
    let cell = (MIN_LONG_SIDE.min(opts.max_size.max(long)) / long).max(1);
    let (map_h, map_w) = (gh * cell, gw * cell);
    let scale = if map_h >= 900 { 3 } else { 2 };
    let top_text = format_value(max);
    let bottom_text = format_value(min);
    let label = opts.label.trim();
    let text_width = [&top_text, &bottom_text, label].iter().map(|s| text_width(s, scale)).max().unwrap_or(0);
    let width = map_w + GAP + BAR_WIDTH + TEXT_GAP + text_width + GAP;
    let height = map_h.max(MIN_HEIGHT);
    let mut canvas = Canvas { rgb: vec![255; width * height * 3], width, height };

    for (y, row) in grid.chunks_exact(gw).enumerate() {
        for (x, &v) in row.iter().enumerate() {
            let c = if v.is_finite() { viridis(t_of(v)) } else { NO_DATA };
            for dy in 0..cell {
                for dx in 0..cell {
                    canvas.set(x * cell + dx, y * cell + dy, c);
                }
            }
        }
    }

    // The bar: maximum at the top, minimum at the bottom, outlined in black.
    let bar_x = map_w + GAP;
    for y in 0..height {
        let t = if height > 1 { 1.0 - y as f32 / (height - 1) as f32 } else { 0.5 };
        let colour = if y == 0 || y == height - 1 { BLACK } else { viridis(t) };
        for x in bar_x..bar_x + BAR_WIDTH {
            let edge = x == bar_x || x == bar_x + BAR_WIDTH - 1;
            canvas.set(x, y, if edge { BLACK } else { colour });
        }
    }
    let text_x = bar_x + BAR_WIDTH + TEXT_GAP;
    let cap = GLYPH_CAP * scale;
    canvas.text(text_x, 0, &top_text, scale);
    canvas.text(text_x, height - cap, &bottom_text, scale);
    canvas.text(text_x, (height - cap) / 2, label, scale);
    // Ticks joining the numbers to the ends of the bar.
    for x in bar_x + BAR_WIDTH..text_x - 1 {
        canvas.set(x, 0, BLACK);
        canvas.set(x, height - 1, BLACK);
    }
    Ok(Rendered { rgb: canvas.rgb, width, height, min, max, scale: cell })
}

/// Save 8-bit RGB pixels as a PNG, through the atomic writer.
pub fn save_png(path: &Path, rgb: &[u8], width: usize, height: usize) -> Result<()> {
    let invalid = || Error::Invalid(format!("{}: cannot save a {width} x {height} image", path.display()));
    let (w, h) = (u32::try_from(width).map_err(|_| invalid())?, u32::try_from(height).map_err(|_| invalid())?);
    if width == 0 || height == 0 || width.checked_mul(height).and_then(|n| n.checked_mul(3)) != Some(rgb.len()) {
        return Err(invalid());
    }
    let png_err = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => Error::io(path, e),
        other => Error::Invalid(format!("{}: PNG encoding failed: {other}", path.display())),
    };
    write_with(path, |out| {
        let mut encoder = png::Encoder::new(out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().map_err(png_err)?;
        writer.write_image_data(rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)
    })
}

fn render_and_save(grid: &[f32], gh: usize, gw: usize, output: &Path, opts: &PreviewOptions) -> Result<PreviewInfo> {
    let r = render(grid, gh, gw, opts)?;
    save_png(output, &r.rgb, r.width, r.height)?;
    Ok(PreviewInfo {
        min: r.min,
        max: r.max,
        width: r.width,
        height: r.height,
        grid_width: gw,
        grid_height: gh,
        scale: r.scale,
    })
}

fn check_options(opts: &PreviewOptions) -> Result<()> {
    if opts.max_size == 0 {
        return Err(Error::Invalid("the preview size must be at least 1 pixel".into()));
    }
    Ok(())
}

fn check_not_empty(map: &MapReader) -> Result<()> {
    if map.height() == 0 || map.width() == 0 {
        return Err(Error::Shape(format!(
            "{}: the map is empty ({} x {})",
            map.path().display(),
            map.height(),
            map.width()
        )));
    }
    Ok(())
}

/// Write a colour-mapped PNG of the `(H, W)` or `(1, H, W)` map in `input`, streamed in bands.
pub fn write_preview(input: &Path, output: &Path, opts: &PreviewOptions) -> Result<PreviewInfo> {
    check_options(opts)?;
    let mut map = MapReader::open(input)?;
    check_not_empty(&map)?;
    let (h, w) = (map.height(), map.width());
    let (gh, gw) = grid_size(h, w, opts.max_size);
    let mut down = Downsampler::new(h, w, gh, gw)?;
    let band = band_rows(w);
    let mut values = Vec::new();
    while map.rows_left() > 0 {
        map.read_band(band.min(map.rows_left()), &mut values)?;
        down.push_rows(&values);
    }
    render_and_save(&down.finish()?, gh, gw, output, opts)
}

/// Write a colour-mapped PNG of `|pred - truth|`, both streamed in bands (see [`write_preview`]).
pub fn write_error_preview(pred: &Path, truth: &Path, output: &Path, opts: &PreviewOptions) -> Result<PreviewInfo> {
    write_error_preview_masked(pred, truth, None, output, opts)
}

/// [`write_error_preview`] showing only the pixels where the `(H, W)` `mask` is non-zero (the
/// others count as no data).
pub fn write_error_preview_masked(
    pred: &Path,
    truth: &Path,
    mask: Option<&Path>,
    output: &Path,
    opts: &PreviewOptions,
) -> Result<PreviewInfo> {
    check_options(opts)?;
    let mut p = MapReader::open(pred)?;
    let mut t = MapReader::open(truth)?;
    p.check_same_shape("prediction", &t, "truth")?;
    let mut m = mask.map(MapReader::open).transpose()?;
    if let Some(m) = &m {
        m.check_same_shape("mask", &t, "truth")?;
    }
    check_not_empty(&p)?;
    let (h, w) = (p.height(), p.width());
    let (gh, gw) = grid_size(h, w, opts.max_size);
    let mut down = Downsampler::new(h, w, gh, gw)?;
    let band = band_rows(w);
    let (mut pv, mut tv, mut mv) = (Vec::new(), Vec::new(), Vec::new());
    while p.rows_left() > 0 {
        let rows = band.min(p.rows_left());
        p.read_band(rows, &mut pv)?;
        t.read_band(rows, &mut tv)?;
        for (a, &b) in pv.iter_mut().zip(&tv) {
            *a = (f64::from(*a) - f64::from(b)).abs() as f32;
        }
        if let Some(m) = &mut m {
            m.read_band(rows, &mut mv)?;
            for (a, &keep) in pv.iter_mut().zip(&mv) {
                if keep == 0.0 {
                    *a = f32::NAN;
                }
            }
        }
        down.push_rows(&pv);
    }
    render_and_save(&down.finish()?, gh, gw, output, opts)
}

/// A value for the scale, about four significant digits: `12.34`, `-0.5`, `1.2e-3`, `3.5e6`.
pub fn format_value(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-2..1e5).contains(&a) {
        let digits = a.log10().floor() as i32; // -2..=4
        let decimals = (3 - digits).max(0) as usize;
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        if s == "-0" { "0".into() } else { s }
    } else {
        let s = format!("{v:.3e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa =
            if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
        format!("{mantissa}e{exp}")
    }
}

/// Glyph cell: 5 × 9 pixels (7 above the baseline, 2 for descenders), one column of spacing.
const GLYPH_W: usize = 5;
const GLYPH_ADVANCE: usize = 6;
/// Rows from the top of a glyph to its baseline (digits and capitals fill them).
const GLYPH_CAP: usize = 7;

/// The built-in font: `#` is ink. Rows beyond those listed are blank.
#[rustfmt::skip]
const FONT: &[(char, &[&str])] = &[
    ('0', &[".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('1', &["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('2', &[".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"]),
    ('3', &["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."]),
    ('4', &["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."]),
    ('5', &["#####", "#....", "####.", "....#", "....#", "#...#", ".###."]),
    ('6', &["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."]),
    ('7', &["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."]),
    ('8', &[".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."]),
    ('9', &[".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."]),
    ('.', &[".....", ".....", ".....", ".....", ".....", ".##..", ".##.."]),
    (',', &[".....", ".....", ".....", ".....", ".....", ".##..", ".##..", "..#..", ".#..."]),
    ('-', &[".....", ".....", ".....", "#####", ".....", ".....", "....."]),
    ('+', &[".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."]),
    ('=', &[".....", ".....", "#####", ".....", "#####", ".....", "....."]),
    ('|', &["..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."]),
    ('/', &[".....", "....#", "...#.", "..#..", ".#...", "#....", "....."]),
    ('(', &["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."]),
    (')', &[".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."]),
    (':', &[".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."]),
    ('%', &["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"]),
    ('_', &[".....", ".....", ".....", ".....", ".....", ".....", ".....", "#####"]),
    ('?', &[".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."]),
    ('°', &[".##..", "#..#.", "#..#.", ".##..", ".....", ".....", "....."]),
    ('µ', &[".....", ".....", "#...#", "#...#", "#...#", "#..##", "##.#.", "#....", "#...."]),
    ('a', &[".....", ".....", ".###.", "....#", ".####", "#...#", ".####"]),
    ('b', &["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."]),
    ('c', &[".....", ".....", ".###.", "#....", "#....", "#...#", ".###."]),
    ('d', &["....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"]),
    ('e', &[".....", ".....", ".###.", "#...#", "#####", "#....", ".###."]),
    ('f', &["..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."]),
    ('g', &[".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."]),
    ('h', &["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"]),
    ('i', &["..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."]),
    ('j', &["...#.", ".....", "..##.", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."]),
    ('k', &["#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."]),
    ('l', &[".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('m', &[".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"]),
    ('n', &[".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"]),
    ('o', &[".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."]),
    ('p', &[".....", ".....", "####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."]),
    ('q', &[".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"]),
    ('r', &[".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."]),
    ('s', &[".....", ".....", ".####", "#....", ".###.", "....#", "####."]),
    ('t', &[".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."]),
    ('u', &[".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"]),
    ('v', &[".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."]),
    ('w', &[".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."]),
    ('x', &[".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"]),
    ('y', &[".....", ".....", "#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."]),
    ('z', &[".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"]),
];

/// The rows of `c`'s glyph: upper-case letters use the lower-case glyphs, unknown characters `?`.
fn glyph(c: char) -> Option<&'static [&'static str]> {
    if c == ' ' {
        return None;
    }
    let c = if c == 'μ' { 'µ' } else { c.to_ascii_lowercase() }; // Greek mu, micro sign
    let find = |c| FONT.iter().find(|(g, _)| *g == c).map(|(_, rows)| *rows);
    find(c).or_else(|| find('?'))
}

/// Width in pixels of `text` drawn at `scale`.
fn text_width(text: &str, scale: usize) -> usize {
    let n = text.chars().count();
    if n == 0 { 0 } else { ((n - 1) * GLYPH_ADVANCE + GLYPH_W) * scale }
}

struct Canvas {
    rgb: Vec<u8>,
    width: usize,
    height: usize,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Draw `text` in black with the top of its glyph cells at `y`.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize) {
        for (i, c) in text.chars().enumerate() {
            let Some(rows) = glyph(c) else { continue };
            let x0 = x + i * GLYPH_ADVANCE * scale;
            for (gy, row) in rows.iter().enumerate() {
                for (gx, ink) in row.bytes().enumerate() {
                    if ink != b'#' {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            self.set(x0 + gx * scale + dx, y + gy * scale + dy, BLACK);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_glyphs_are_well_formed() {
        for (c, rows) in FONT {
            assert!((7..=9).contains(&rows.len()), "{c:?}");
            assert!(rows.iter().all(|r| r.len() == GLYPH_W && r.bytes().all(|b| b == b'#' || b == b'.')), "{c:?}");
        }
        for c in "0123456789.-+e |µmheightrro".chars() {
            assert!(c == ' ' || FONT.iter().any(|(g, _)| *g == c), "{c:?}");
        }
        assert_eq!(glyph('Q'), glyph('q'));
        assert_eq!(glyph('@'), glyph('?'));
    }

    #[test]
    fn formats_scale_values() {
        for (v, s) in [
            (0.0, "0"),
            (12.34, "12.34"),
            (-12.345678, "-12.35"),
            (1234.5678, "1235"),
            (0.5, "0.5"),
            (0.012346, "0.01235"),
            (-0.0012, "-1.2e-3"),
            (3.5e6, "3.5e6"),
            (100000.0, "1e5"),
            (7.0, "7"),
        ] {
            assert_eq!(format_value(v), s, "{v}");
        }
    }

    #[test]
    fn viridis_ends_and_middle() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        assert_eq!(viridis(-3.0), [68, 1, 84]);
        assert_eq!(viridis(7.0), [253, 231, 37]);
        // matplotlib's viridis(0.5) is #21918c.
        let mid = viridis(0.5);
        assert!(mid.iter().zip([0x21u8, 0x91, 0x8c]).all(|(a, b)| a.abs_diff(b) <= 2), "{mid:?}");
    }

    #[test]
    fn grid_sizes() {
        assert_eq!(grid_size(300, 500, 1600), (300, 500));
        assert_eq!(grid_size(7000, 9344, 1600), (1199, 1600));
        assert_eq!(grid_size(3000, 20, 200), (200, 1));
        assert_eq!(grid_size(1, 100000, 10), (1, 10));
    }

    #[test]
    fn downsampler_averages_blocks_and_skips_nan() {
        // 4 x 6 averaged into 2 x 3: 2 x 2 blocks.
        let mut d = Downsampler::new(4, 6, 2, 3).unwrap();
        let mut v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        v[0] = f32::NAN;
        v[4] = f32::INFINITY;
        v[5] = f32::NAN;
        v[10] = f32::NAN;
        v[11] = f32::NAN;
        d.push_rows(&v[..6]);
        d.push_rows(&v[6..]);
        let g = d.finish().unwrap();
        assert_eq!(g[0], (1.0 + 6.0 + 7.0) / 3.0);
        assert_eq!(g[1], (2.0 + 3.0 + 8.0 + 9.0) / 4.0);
        assert!(g[2].is_nan());
        assert_eq!(g[3], (12.0 + 13.0 + 18.0 + 19.0) / 4.0);
        assert!(Downsampler::new(4, 6, 5, 3).is_err());
    }
}
