//! Colour-mapped PNG previews of height maps (and of error maps).
//!
//! A map is an `(H, W)` or `(1, H, W)` `.npy` array of any dtype [`crate::io::npy`] reads, a
//! one-page TIFF or an X3P surface ([`MapReader`]). It is
//! streamed in bands of rows by [`MapReader`] and block-averaged on the fly into a grid of at
//! most [`PreviewOptions::max_size`] pixels on its long side, so a 9344 × 7000 map is read once
//! with memory bounded by the band and the output grid. NaN and infinite pixels are left out of
//! the averages; a grid cell more than half of whose pixels are not finite is no data, drawn in
//! [`NO_DATA`] grey (a colour viridis does not have), and the legend then shows a `no data`
//! swatch.
//!
//! The grid is coloured with viridis from the low end of the scale (dark purple) to its high end
//! (yellow). By default ([`PreviewRange::Percentiles`] 1, 99) the ends are the 1st and 99th
//! percentiles of the grid's finite cells (nearest rank, exact: the grid is in memory), so one
//! spike does not flatten the picture; values beyond the ends take the end colours.
//! [`PreviewRange::Full`] uses the minimum and maximum. A colour bar right of the map shows the
//! scale: the high end at the top, the low end at the bottom, and between them the label (e.g.
//! `height µm`) and how the ends were chosen (`p1-p99`, `min-max`), in a small built-in bitmap
//! font. The PNG (8-bit RGB) is written to a temporary file next to the target and renamed into
//! place, so an error never leaves a half-written image behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::atomic::write_with;
use crate::io::npy::{read_header, to_f32};
use crate::io::tiff::{TiffStack, is_tiff};
use crate::io::x3p::X3pRows;

/// Pixels read per band (about 16 MiB of f32); bands hold at least one row.
const BAND_PIXELS: usize = 1 << 22;

/// Number of rows per band for a map `width` pixels wide.
pub fn band_rows(width: usize) -> usize {
    (BAND_PIXELS / width.max(1)).max(1)
}

/// Where a [`MapReader`]'s values come from.
enum MapData {
    /// An `.npy` file at its next row, and a scratch buffer.
    Npy(File, Vec<u8>),
    /// A one-page TIFF.
    Tiff(Box<TiffStack>),
    /// An X3P surface, its point data streamed (µm).
    X3p(Box<X3pRows>),
}

impl std::fmt::Debug for MapData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MapData::Npy(..) => "Npy",
            MapData::Tiff(_) => "Tiff",
            MapData::X3p(_) => "X3p",
        })
    }
}

/// An `(H, W)` or `(1, H, W)` map — `.npy`, a one-page TIFF or an X3P surface (heights in µm),
/// told apart by their first bytes — read front to back in bands of rows as f32.
#[derive(Debug)]
pub struct MapReader {
    data: MapData,
    path: PathBuf,
    ty: HostType,
    height: usize,
    width: usize,
    next_row: usize,
}

fn map_shape(path: &Path, shape: &[usize]) -> Result<(usize, usize)> {
    match *shape {
        [h, w] | [1, h, w] => Ok((h, w)),
        _ => Err(Error::Shape(format!(
            "{}: expected a map of shape (H, W) or (1, H, W), found shape {shape:?}",
            path.display()
        ))),
    }
}

impl MapReader {
    /// Open `path` and check that it holds a single 2-D map.
    pub fn open(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        let _ = File::open(path).and_then(|mut f| f.read_exact(&mut head));
        let (data, ty, height, width) = if is_tiff(&head) {
            let tiff = TiffStack::open(path)?;
            let (h, w) = map_shape(path, &tiff.shape())?;
            (MapData::Tiff(Box::new(tiff)), HostType::F32, h, w)
        } else if &head == b"PK\x03\x04" {
            let map = X3pRows::open(path)?;
            let (h, w) = (map.height, map.width);
            (MapData::X3p(Box::new(map)), HostType::F32, h, w)
        } else {
            let header = read_header(path)?;
            let (h, w) = map_shape(path, &header.shape)?;
            let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
            file.seek(SeekFrom::Start(header.data_offset)).map_err(|e| Error::io(path, e))?;
            (MapData::Npy(file, Vec::new()), header.ty, h, w)
        };
        let ty = match &data {
            MapData::Tiff(t) => t.ty(),
            _ => ty,
        };
        Ok(MapReader { data, path: path.to_path_buf(), ty, height, width, next_row: 0 })
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

    /// Element type of the values read (on disk for npy and TIFF; f32 for X3P).
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
        let y0 = self.next_row;
        out.clear();
        out.reserve(n);
        match &mut self.data {
            MapData::Npy(file, raw) => {
                raw.resize(n * self.ty.size(), 0);
                file.read_exact(raw).map_err(|e| Error::io(&self.path, e))?;
                out.extend(to_f32(self.ty, raw));
            }
            MapData::Tiff(tiff) => out.extend(to_f32(self.ty, &tiff.read_rows(y0..y0 + rows)?)),
            MapData::X3p(x3p) => x3p.read_rows(rows, out)?,
        }
        self.next_row += rows;
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

/// How the ends of the colour scale are chosen from the grid's finite cells.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PreviewRange {
    /// The `lo`-th and `hi`-th percentiles (0 ≤ lo < hi ≤ 100), nearest rank; when they are
    /// equal (a map flat but for a few cells) the minimum and maximum instead.
    Percentiles { lo: f32, hi: f32 },
    /// The minimum and maximum.
    Full,
}

impl Default for PreviewRange {
    /// The 1st to 99th percentile.
    fn default() -> Self {
        PreviewRange::Percentiles { lo: 1.0, hi: 99.0 }
    }
}

impl PreviewRange {
    fn check(self) -> Result<()> {
        match self {
            PreviewRange::Percentiles { lo, hi } if !(0.0 <= lo && lo < hi && hi <= 100.0) => {
                Err(Error::Invalid(format!("preview percentiles {lo},{hi} must satisfy 0 <= low < high <= 100")))
            }
            _ => Ok(()),
        }
    }

    /// The legend's note: `p1-p99`, `p0.5-p99.5` or `min-max`.
    pub fn note(self) -> String {
        match self {
            PreviewRange::Percentiles { lo, hi } => format!("p{}-p{}", format_value(lo), format_value(hi)),
            PreviewRange::Full => "min-max".into(),
        }
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
    /// The ends of the colour scale (default: 1st to 99th percentile).
    pub range: PreviewRange,
}

impl Default for PreviewOptions {
    fn default() -> Self {
        PreviewOptions { max_size: 1600, label: "height µm".into(), range: PreviewRange::default() }
    }
}

/// What [`write_preview`] drew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreviewInfo {
    /// The ends of the colour scale (values beyond them take the end colours).
    pub min: f32,
    pub max: f32,
    /// Smallest and largest finite value of the (block-averaged) grid.
    pub data_min: f32,
    pub data_max: f32,
    /// The scale's ends were chosen as [`PreviewRange::Full`]: the data's minimum and maximum
    /// (asked for, or percentiles that were equal).
    pub full_range: bool,
    /// Grid cells drawn as no data.
    pub no_data: usize,
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
/// left out of the mean; a cell more than half of whose pixels are not finite is NaN.
#[derive(Debug)]
pub struct Downsampler {
    height: usize,
    gh: usize,
    gw: usize,
    col_cell: Vec<u32>,
    sums: Vec<f64>,
    counts: Vec<u32>,
    /// Non-finite pixels per cell.
    missing: Vec<u32>,
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
            missing: vec![0; gw],
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
                } else {
                    self.missing[cell as usize] += 1;
                }
            }
            self.row += 1;
        }
    }

    fn flush_row(&mut self) {
        for ((sum, count), missing) in self.sums.iter_mut().zip(&mut self.counts).zip(&mut self.missing) {
            self.grid.push(if *count > 0 && *count >= *missing { (*sum / f64::from(*count)) as f32 } else { f32::NAN });
            (*sum, *count, *missing) = (0.0, 0, 0);
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
    /// The colour scale.
    pub scale_ends: ScaleEnds,
    /// Pixels per grid cell along each axis.
    pub scale: usize,
}

/// The ends of a grid's colour scale and what they came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleEnds {
    /// Low and high end of the scale.
    pub lo: f32,
    pub hi: f32,
    /// The grid's finite minimum and maximum.
    pub data_min: f32,
    pub data_max: f32,
    /// The ends are the minimum and maximum.
    pub full: bool,
    /// Cells without data (NaN).
    pub no_data: usize,
}

impl ScaleEnds {
    /// The scale of `grid` under `range`; an error when it has no finite value.
    pub fn of(grid: &[f32], range: PreviewRange) -> Result<ScaleEnds> {
        let mut finite: Vec<f32> = grid.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return Err(Error::Invalid("nothing to draw: the map has no finite values".into()));
        }
        let no_data = grid.len() - finite.len();
        let (data_min, data_max) =
            finite.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let full = ScaleEnds { lo: data_min, hi: data_max, data_min, data_max, full: true, no_data };
        let PreviewRange::Percentiles { lo, hi } = range else { return Ok(full) };
        let last = finite.len() - 1;
        let mut rank = |p: f32| {
            let k = ((f64::from(p) / 100.0 * last as f64).round() as usize).min(last);
            *finite.select_nth_unstable_by(k, f32::total_cmp).1
        };
        let (lo, hi) = (rank(lo), rank(hi));
        if lo >= hi {
            return Ok(full);
        }
        Ok(ScaleEnds { lo, hi, full: lo == data_min && hi == data_max, ..full })
    }

    /// The note under the label: how the ends were chosen.
    fn note(&self, range: PreviewRange) -> String {
        if self.full { PreviewRange::Full.note() } else { range.note() }
    }
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
/// The legend's text for cells without data, beside a [`NO_DATA`] swatch.
const NO_DATA_TEXT: &str = "no data";

/// Draw a `gh × gw` grid (row-major, NaN for no data) with its colour bar. A grid whose long side
/// is under 400 is enlarged by a whole factor (each cell a square of pixels), up to that size
/// and never beyond `opts.max_size`.
pub fn render(grid: &[f32], gh: usize, gw: usize, opts: &PreviewOptions) -> Result<Rendered> {
    if gh.checked_mul(gw) != Some(grid.len()) || grid.is_empty() {
        return Err(Error::Invalid(format!("a {gh} x {gw} grid needs {} values, got {}", gh * gw, grid.len())));
    }
    opts.range.check()?;
    let ends = ScaleEnds::of(grid, opts.range)?;
    let (lo, hi) = (f64::from(ends.lo), f64::from(ends.hi));
    let t_of = |v: f32| if hi > lo { ((f64::from(v) - lo) / (hi - lo)) as f32 } else { 0.5 };

    let long = gh.max(gw);
    let cell = (MIN_LONG_SIDE.min(opts.max_size.max(long)) / long).max(1);
    let (map_h, map_w) = (gh * cell, gw * cell);
    let legend = Legend::new(&ends, opts, map_h);
    let width = map_w + GAP + BAR_WIDTH + TEXT_GAP + legend.text_width() + GAP;
    let height = map_h.max(MIN_HEIGHT);
    let mut canvas = Canvas { rgb: vec![255; width * height * 3], width, height };

    for (y, row) in grid.chunks_exact(gw).enumerate() {
        for (x, &v) in row.iter().enumerate() {
            let c = if v.is_finite() { viridis(t_of(v)) } else { NO_DATA };
            canvas.fill(x * cell, y * cell, cell, cell, c);
        }
    }
    legend.draw(&mut canvas, map_w + GAP);
    Ok(Rendered { rgb: canvas.rgb, width, height, scale_ends: ends, scale: cell })
}

/// The colour bar and its text: the scale's ends, the label, the note on how the ends were
/// chosen, and a no-data swatch when some cells have no data.
struct Legend {
    top: String,
    bottom: String,
    lines: Vec<String>,
    no_data: bool,
    /// Text scale (2, or 3 beside tall maps).
    scale: usize,
}

impl Legend {
    fn new(ends: &ScaleEnds, opts: &PreviewOptions, map_h: usize) -> Legend {
        let lines = [opts.label.trim().to_string(), ends.note(opts.range)].into_iter().filter(|s| !s.is_empty());
        Legend {
            top: format_value(ends.hi),
            bottom: format_value(ends.lo),
            lines: lines.collect(),
            no_data: ends.no_data > 0,
            scale: if map_h >= 900 { 3 } else { 2 },
        }
    }

    /// Pixels from one text line's top to the next.
    fn line_height(&self) -> usize {
        (GLYPH_ROWS + 2) * self.scale
    }

    fn swatch_width(&self) -> usize {
        GLYPH_CAP * self.scale + GLYPH_ADVANCE * self.scale
    }

    fn text_width(&self) -> usize {
        let s = self.scale;
        let texts = [&self.top, &self.bottom].into_iter().chain(&self.lines);
        let widest = texts.map(|t| text_width(t, s)).max().unwrap_or(0);
        let swatch = if self.no_data { self.swatch_width() + text_width(NO_DATA_TEXT, s) } else { 0 };
        widest.max(swatch)
    }

    /// Draw the bar at column `bar_x` (the high end at the top, outlined in black) and the text
    /// right of it: the ends level with the bar's ends, the other lines centred between them.
    fn draw(&self, canvas: &mut Canvas, bar_x: usize) {
        let height = canvas.height;
        for y in 0..height {
            let t = if height > 1 { 1.0 - y as f32 / (height - 1) as f32 } else { 0.5 };
            let colour = if y == 0 || y == height - 1 { BLACK } else { viridis(t) };
            canvas.fill(bar_x, y, BAR_WIDTH, 1, colour);
            canvas.set(bar_x, y, BLACK);
            canvas.set(bar_x + BAR_WIDTH - 1, y, BLACK);
        }
        let (x, s) = (bar_x + BAR_WIDTH + TEXT_GAP, self.scale);
        let cap = GLYPH_CAP * s;
        canvas.text(x, 0, &self.top, s);
        canvas.text(x, height - cap, &self.bottom, s);
        let rows = self.lines.len() + usize::from(self.no_data);
        let mut y = height.saturating_sub((rows * self.line_height()).saturating_sub(2 * s)) / 2;
        for line in &self.lines {
            canvas.text(x, y, line, s);
            y += self.line_height();
        }
        if self.no_data {
            canvas.fill(x, y, cap, cap, BLACK);
            canvas.fill(x + s, y + s, cap - 2 * s, cap - 2 * s, NO_DATA);
            canvas.text(x + self.swatch_width(), y, NO_DATA_TEXT, s);
        }
        // Ticks joining the numbers to the ends of the bar.
        for tx in bar_x + BAR_WIDTH..x - 1 {
            canvas.set(tx, 0, BLACK);
            canvas.set(tx, height - 1, BLACK);
        }
    }
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
    let e = r.scale_ends;
    Ok(PreviewInfo {
        min: e.lo,
        max: e.hi,
        data_min: e.data_min,
        data_max: e.data_max,
        full_range: e.full,
        no_data: e.no_data,
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
    opts.range.check()
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
/// Rows of a glyph cell, descenders included.
const GLYPH_ROWS: usize = 9;

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

    /// A `w × h` rectangle with its top-left corner at (`x`, `y`).
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
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
        // Cell (0, 0) one non-finite pixel, (0, 2) four, (1, 0) two (half: still drawn), (1, 1)
        // three (more than half: no data).
        for i in [0, 4, 5, 10, 11, 12, 13, 14, 15, 20] {
            v[i] = if i == 4 { f32::INFINITY } else { f32::NAN };
        }
        d.push_rows(&v[..6]);
        d.push_rows(&v[6..]);
        let g = d.finish().unwrap();
        assert_eq!(g[0], (1.0 + 6.0 + 7.0) / 3.0);
        assert_eq!(g[1], (2.0 + 3.0 + 8.0 + 9.0) / 4.0);
        assert!(g[2].is_nan());
        assert_eq!(g[3], (18.0 + 19.0) / 2.0);
        assert!(g[4].is_nan());
        assert_eq!(g[5], (16.0 + 17.0 + 22.0 + 23.0) / 4.0);
        assert!(Downsampler::new(4, 6, 5, 3).is_err());
    }

    #[test]
    fn scale_ends_are_nearest_rank_percentiles() {
        // 0..=100 shuffled, with NaN cells: the p-th percentile is p.
        let mut grid: Vec<f32> = (0..=100).map(|i| ((i * 37) % 101) as f32).collect();
        grid.extend([f32::NAN; 7]);
        let e = ScaleEnds::of(&grid, PreviewRange::default()).unwrap();
        assert_eq!((e.lo, e.hi, e.data_min, e.data_max, e.full, e.no_data), (1.0, 99.0, 0.0, 100.0, false, 7));
        let e = ScaleEnds::of(&grid, PreviewRange::Percentiles { lo: 0.0, hi: 100.0 }).unwrap();
        assert_eq!((e.lo, e.hi, e.full), (0.0, 100.0, true));
        let e = ScaleEnds::of(&grid, PreviewRange::Percentiles { lo: 12.5, hi: 50.0 }).unwrap();
        assert_eq!((e.lo, e.hi), (13.0, 50.0)); // rank 12.5 rounds to 13
        assert_eq!(ScaleEnds::of(&grid, PreviewRange::Full).unwrap().hi, 100.0);
        assert!(ScaleEnds::of(&[f32::NAN, f32::INFINITY], PreviewRange::Full).is_err());
        assert_eq!(PreviewRange::default().note(), "p1-p99");
        assert_eq!(PreviewRange::Percentiles { lo: 0.5, hi: 99.5 }.note(), "p0.5-p99.5");
    }
}
