//! Accuracy of a predicted height map against the truth.
//!
//! [`eval`] streams the prediction, the truth, an optional selection mask and an optional reason
//! mask in bands of rows (memory does not depend on the map's height) and accumulates, in f64,
//! the error `e = pred - truth` of each evaluated pixel:
//!
//! - `rmse`, `mae`, `max_abs` (max |e|) and `bias` (mean e);
//! - `mape`: mean of `|e| / |truth| * 100` over the pixels with `|truth| > 1e-10` (percent);
//! - `rmse_detrended`: the RMSE left after removing the least-squares plane `a + b·x + c·y` from
//!   `e` (x the column, y the row): piston and tilt, as surfaces are compared in metrology.
//!
//! The plane fit is done in one pass without keeping the pixels: each row's means and centred
//! co-moments of `(x, y, e)` are computed from the row alone and merged into the running totals
//! with Chan et al.'s pairwise update. The residual sum of squares is then
//! `Mee - cᵀ·Mxy⁻¹·c` with `c = (Mxe, Mye)`, from centred sums, which keeps it accurate when the
//! error is dominated by piston (and, within f64, by tilt). A degenerate pixel set (one row,
//! one column, a single pixel) fits only the directions it spans, as a least-squares solver's
//! minimum-norm solution would.
//!
//! A pixel is evaluated when it is selected (no `mask`, or the mask is non-zero there) and its
//! prediction is not NaN. NaN predictions — the solver's "no height here" — are left out of every
//! metric and counted as `invalid`. Other non-finite values are not skipped: an infinite
//! prediction makes the metrics infinite, a NaN truth makes them NaN (mask such pixels out).
//!
//! Two masks, two meanings: `mask` selects (non-zero = evaluate, as a region of interest), while
//! `reasons` is a reason mask as `infer --mask` and `generate --truth-mask` write it (u8, 0 = ok,
//! [`Reason`] codes otherwise) and only adds counts: per code, the selected pixels and how many of
//! them are NaN in the prediction. Passing a reason mask as `mask` would evaluate exactly the
//! pixels that have no height.

use std::path::{Path, PathBuf};

use ndarray::ArrayView2;

use crate::commands::outputs::Files;
use crate::commands::write_json;
use crate::error::{Error, Result};
use crate::io::array_convert::write_difference;
use crate::io::preview::{MapReader, PreviewInfo, PreviewOptions, PreviewRange, band_rows, write_error_preview_masked};
use crate::psi::reason::Reason;

/// `|truth|` at or below this is left out of the MAPE.
pub const MAPE_MIN_TRUTH: f64 = 1e-10;

/// What [`eval`] compares.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// An `(H, W)` (or `(1, H, W)`) array of any supported dtype: only pixels where it is
    /// non-zero are evaluated.
    pub mask: Option<PathBuf>,
    /// A reason mask `(H, W)` of codes 0..=255 (0 ok, [`Reason`] codes): the selected pixels
    /// and their NaN predictions are counted per code.
    pub reasons: Option<PathBuf>,
}

/// The selected pixels of one reason code and how many of them are NaN in the prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReasonCount {
    pub code: u8,
    pub pixels: u64,
    pub invalid: u64,
}

impl ReasonCount {
    /// The reason's name (`ok`, `low_modulation`, …) or `code_N` for a code without one.
    pub fn name(&self) -> String {
        Reason::from_code(self.code).map_or_else(|| format!("code_{}", self.code), |r| r.name().to_string())
    }
}

/// Error metrics of a prediction, in the maps' units (MAPE in percent).
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub rmse: f64,
    pub mae: f64,
    pub max_abs: f64,
    /// Mean |error| / |truth| × 100 over the `mape_pixels` pixels with |truth| > 1e-10; NaN when
    /// there are none.
    pub mape: f64,
    /// Mean error (prediction minus truth).
    pub bias: f64,
    /// RMSE after removing the best-fit plane (piston and tilt) of the error.
    pub rmse_detrended: f64,
    /// Pixels evaluated.
    pub pixels: u64,
    /// Pixels in the MAPE.
    pub mape_pixels: u64,
    /// Selected pixels left out because the prediction is NaN there.
    pub invalid: u64,
    /// With a reason mask: every [`Reason`] code, then any other code present, in code order.
    pub reasons: Option<Vec<ReasonCount>>,
}

impl Metrics {
    /// The metrics as a JSON object (non-finite values, such as the MAPE of an all-zero truth,
    /// become `null`); with a reason mask, `reasons` lists
    /// `{"code", "name", "pixels", "invalid"}` per code.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "rmse": self.rmse,
            "mae": self.mae,
            "max_abs": self.max_abs,
            "mape": self.mape,
            "bias": self.bias,
            "rmse_detrended": self.rmse_detrended,
            "pixels": self.pixels,
            "mape_pixels": self.mape_pixels,
            "invalid": self.invalid,
        });
        if let Some(reasons) = &self.reasons {
            let list: Vec<serde_json::Value> = reasons
                .iter()
                .map(
                    |r| serde_json::json!({"code": r.code, "name": r.name(), "pixels": r.pixels, "invalid": r.invalid}),
                )
                .collect();
            json["reasons"] = list.into();
        }
        json
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pixels          {}", self.pixels)?;
        writeln!(f, "invalid         {} (NaN in the prediction, left out)", self.invalid)?;
        for r in self.reasons.iter().flatten() {
            writeln!(f, "  {:<22}{} pixels, {} NaN", r.name(), r.pixels, r.invalid)?;
        }
        writeln!(f, "rmse            {:.6e}", self.rmse)?;
        writeln!(f, "rmse_detrended  {:.6e}", self.rmse_detrended)?;
        writeln!(f, "mae             {:.6e}", self.mae)?;
        writeln!(f, "max_abs         {:.6e}", self.max_abs)?;
        writeln!(f, "bias            {:.6e}", self.bias)?;
        write!(f, "mape            {:.6} % ({} pixels)", self.mape, self.mape_pixels)
    }
}

/// Compare the `(H, W)` (or `(1, H, W)`) maps `pred` and `truth`, streamed in bands of rows.
pub fn eval(pred: &Path, truth: &Path, opts: &EvalOptions) -> Result<Metrics> {
    eval_in_bands(pred, truth, opts, None)
}

/// [`eval`] on maps in memory: `pred` and `truth` `(H, W)`, the selection `mask` (non-zero =
/// evaluate) and the reason codes as [`EvalOptions`] takes them from files. The same sums in the
/// same order as [`eval`], so the same maps give the same metrics.
pub fn eval_arrays(
    pred: ArrayView2<f32>,
    truth: ArrayView2<f32>,
    mask: Option<ArrayView2<f32>>,
    reasons: Option<ArrayView2<f32>>,
) -> Result<Metrics> {
    let dim = truth.dim();
    for (what, d) in
        [("prediction", Some(pred.dim())), ("mask", mask.map(|m| m.dim())), ("reason mask", reasons.map(|r| r.dim()))]
    {
        if let Some(d) = d.filter(|&d| d != dim) {
            return Err(Error::Shape(format!(
                "the {what} is {} x {} but the truth is {} x {}",
                d.0, d.1, dim.0, dim.1
            )));
        }
    }
    let (h, w) = dim;
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let mut acc = Accumulator { reasons: reasons.map(|_| vec![[0; 2]; 256]), ..Default::default() };
    let mut row_e = Vec::with_capacity(w);
    let row_of = |a: ArrayView2<'_, f32>, y: usize| a.row(y).to_vec();
    for y in 0..h {
        let codes = reasons.map(|r| row_of(r, y));
        if let Some(codes) = &codes {
            check_codes(Path::new("the reason mask"), codes, y, w)?;
        }
        let (p, t, m) = (row_of(pred, y), row_of(truth, y), mask.map(|m| row_of(m, y)));
        let row = Row { y: y as f64 - cy, pred: &p, truth: &t, mask: m.as_deref(), reasons: codes.as_deref() };
        acc.add_row(&row, cx, &mut row_e);
    }
    acc.finish(Path::new("the prediction"))
}

/// The preview style of error maps (labelled `|error| µm`).
pub fn error_preview() -> PreviewOptions {
    PreviewOptions { label: "|error| µm".into(), ..Default::default() }
}

/// Write a colour-mapped PNG of `|pred - truth|` (masked and NaN pixels shown as no data); see
/// [`crate::io::preview::write_error_preview`].
pub fn error_map(
    pred: &Path,
    truth: &Path,
    output: &Path,
    opts: &EvalOptions,
    preview: &PreviewOptions,
) -> Result<PreviewInfo> {
    write_error_preview_masked(pred, truth, opts.mask.as_deref(), output, preview)
}

/// `psi-gpu eval`: the maps to compare and the files to write.
#[derive(Clone, Debug)]
pub struct Options {
    /// Predicted and true height maps, `(H, W)` npy.
    pub pred: PathBuf,
    pub truth: PathBuf,
    pub eval: EvalOptions,
    /// Write the metrics ([`Metrics::to_json`]) here.
    pub json: Option<PathBuf>,
    /// Write a colour-mapped PNG of `|pred - truth|` here — or, when the name ends in `.npy`,
    /// `.tif`/`.tiff` or `.x3p`, the data `pred - truth` (µm, NaN where not evaluated).
    pub error_map: Option<PathBuf>,
    /// The error map's colour scale.
    pub preview_range: PreviewRange,
}

/// What `psi-gpu eval` found and wrote.
#[derive(Clone, Debug)]
pub struct Report {
    pub metrics: Metrics,
    pub error_map: Option<(PathBuf, PreviewInfo)>,
    /// The error map written as data.
    pub error_data: Option<PathBuf>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        self.metrics.to_json()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.metrics)?;
        if let Some((png, info)) = &self.error_map {
            let (w, h, min, max) = (info.width, info.height, info.min, info.max);
            write!(f, "\nerror map: {} ({w}x{h}, colour scale |error| {min:.3e}..{max:.3e} µm)", png.display())?;
        }
        if let Some(data) = &self.error_data {
            write!(f, "\nerror map: {} (pred - truth, µm, NaN where not evaluated)", data.display())?;
        }
        Ok(())
    }
}

/// Evaluate, then write the JSON and the error map if asked.
pub fn run(opts: &Options) -> Result<Report> {
    Files::new()
        .inputs("the prediction", [&opts.pred])
        .inputs("the truth", [&opts.truth])
        .inputs("--mask", &opts.eval.mask)
        .inputs("--reasons", &opts.eval.reasons)
        .outputs("--json", &opts.json)
        .outputs("--error-map", &opts.error_map)
        .check()?;
    let metrics = eval(&opts.pred, &opts.truth, &opts.eval)?;
    if let Some(path) = &opts.json {
        write_json(path, &metrics.to_json())?;
    }
    let data = opts.error_map.as_deref().filter(|p| crate::io::height_map::is_array_file(p));
    if let Some(path) = data {
        write_difference(&opts.pred, &opts.truth, opts.eval.mask.as_deref(), path)?;
    }
    let error_map = match opts.error_map.as_ref().filter(|_| data.is_none()) {
        Some(png) => {
            let style = PreviewOptions { range: opts.preview_range, ..error_preview() };
            Some((png.clone(), error_map(&opts.pred, &opts.truth, png, &opts.eval, &style)?))
        }
        None => None,
    };
    Ok(Report { metrics, error_map, error_data: data.map(Path::to_path_buf) })
}

/// [`eval`] with `band` rows per band (the default sizes bands by [`band_rows`]).
fn eval_in_bands(pred: &Path, truth: &Path, opts: &EvalOptions, band: Option<usize>) -> Result<Metrics> {
    let mut p = MapReader::open(pred)?;
    let mut t = MapReader::open(truth)?;
    p.check_same_shape("prediction", &t, "truth")?;
    let open_like = |path: Option<&Path>, what: &str| -> Result<Option<MapReader>> {
        let m = path.map(MapReader::open).transpose()?;
        m.as_ref().map(|m| m.check_same_shape(what, &t, "truth")).transpose()?;
        Ok(m)
    };
    let mut m = open_like(opts.mask.as_deref(), "mask")?;
    let mut reasons = open_like(opts.reasons.as_deref(), "reason mask")?;
    let (h, w) = (p.height(), p.width());
    let band = band.unwrap_or_else(|| band_rows(w)).max(1);
    let cx = (w as f64 - 1.0) / 2.0;
    let cy = (h as f64 - 1.0) / 2.0;

    let mut acc = Accumulator { reasons: reasons.as_ref().map(|_| vec![[0; 2]; 256]), ..Default::default() };
    let (mut pv, mut tv, mut mv, mut rv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut row_e = Vec::with_capacity(w);
    let mut row0 = 0;
    while p.rows_left() > 0 {
        crate::error::interrupt::check()?;
        let rows = band.min(p.rows_left());
        p.read_band(rows, &mut pv)?;
        t.read_band(rows, &mut tv)?;
        if let Some(m) = &mut m {
            m.read_band(rows, &mut mv)?;
        }
        if let Some(r) = &mut reasons {
            r.read_band(rows, &mut rv)?;
            check_codes(r.path(), &rv, row0, w)?;
        }
        for r in 0..rows.min(pv.len() / w.max(1)) {
            let span = r * w..(r + 1) * w;
            let row = Row {
                y: (row0 + r) as f64 - cy,
                pred: &pv[span.clone()],
                truth: &tv[span.clone()],
                mask: m.as_ref().map(|_| &mv[span.clone()]),
                reasons: reasons.as_ref().map(|_| &rv[span]),
            };
            acc.add_row(&row, cx, &mut row_e);
        }
        row0 += rows;
    }
    acc.finish(pred)
}

/// An error unless every value of a band of the reason mask `path` (from row `row0`, `w` wide)
/// is an integer code 0..=255.
fn check_codes(path: &Path, values: &[f32], row0: usize, w: usize) -> Result<()> {
    match values.iter().position(|&v| !(v.fract() == 0.0 && (0.0..=255.0).contains(&v))) {
        None => Ok(()),
        Some(i) => Err(Error::Invalid(format!(
            "{}: the reason mask holds {} at row {}, column {}; expected codes 0..255 (0 ok, 1 low modulation, \
             2 saturated, 3 non-finite input, 4 order unresolved)",
            path.display(),
            values[i],
            row0 + i / w.max(1),
            i % w.max(1)
        ))),
    }
}

/// One row of the maps, at centred height `y`.
struct Row<'a> {
    y: f64,
    pred: &'a [f32],
    truth: &'a [f32],
    mask: Option<&'a [f32]>,
    reasons: Option<&'a [f32]>,
}

/// Running sums over the evaluated pixels.
#[derive(Default)]
struct Accumulator {
    moments: Moments,
    sum_abs: f64,
    max_abs: f64,
    /// NaN seen in |e| (f64::max would drop it).
    nan: bool,
    sum_ape: f64,
    mape_pixels: u64,
    /// Selected pixels with a NaN prediction.
    invalid: u64,
    /// With a reason mask: per code, [selected pixels, of which NaN].
    reasons: Option<Vec<[u64; 2]>>,
}

impl Accumulator {
    /// Add one row; `row_e` is scratch space for the row's (x, e) pairs.
    fn add_row(&mut self, row: &Row, cx: f64, row_e: &mut Vec<(f64, f64)>) {
        row_e.clear();
        let (mut sum_x, mut sum_e, mut sum_abs) = (0.0f64, 0.0f64, 0.0f64);
        for (col, (&p, &t)) in row.pred.iter().zip(row.truth).enumerate() {
            if row.mask.is_some_and(|m| m[col] == 0.0) {
                continue;
            }
            if let (Some(counts), Some(codes)) = (&mut self.reasons, row.reasons) {
                counts[codes[col] as usize][0] += 1;
                counts[codes[col] as usize][1] += u64::from(p.is_nan());
            }
            if p.is_nan() {
                self.invalid += 1;
                continue;
            }
            let (p, t) = (f64::from(p), f64::from(t));
            let e = p - t;
            let x = col as f64 - cx;
            let abs = e.abs();
            sum_x += x;
            sum_e += e;
            sum_abs += abs;
            if abs > self.max_abs {
                self.max_abs = abs;
            } else if abs.is_nan() {
                self.nan = true;
            }
            if t.abs() > MAPE_MIN_TRUTH {
                self.sum_ape += abs / t.abs();
                self.mape_pixels += 1;
            } else if t.is_nan() {
                self.sum_ape = f64::NAN;
            }
            row_e.push((x, e));
        }
        if row_e.is_empty() {
            return;
        }
        self.sum_abs += sum_abs;
        // The row's own centred co-moments (two passes over the row), then merged.
        let n = row_e.len() as f64;
        let (mx, me) = (sum_x / n, sum_e / n);
        let (mut sxx, mut sxe, mut see) = (0.0f64, 0.0f64, 0.0f64);
        for &(x, e) in row_e.iter() {
            let (dx, de) = (x - mx, e - me);
            sxx += dx * dx;
            sxe += dx * de;
            see += de * de;
        }
        let row = Moments { n, mean: [mx, row.y, me], m: [[sxx, 0.0, sxe], [0.0, 0.0, 0.0], [sxe, 0.0, see]] };
        self.moments.merge(&row);
    }

    fn finish(self, pred: &Path) -> Result<Metrics> {
        let Moments { n, mean, m } = self.moments;
        if n == 0.0 && self.invalid == 0 {
            return Err(Error::Invalid(format!(
                "{}: no pixels to evaluate (the map is empty or the mask selects none)",
                pred.display()
            )));
        }
        let nan_if_empty = |v: f64| if n == 0.0 { f64::NAN } else { v };
        let bias = nan_if_empty(mean[2]);
        let see = m[2][2];
        let rmse = (see / n + bias * bias).sqrt();
        let explained = explained_by_plane([[m[0][0], m[0][1]], [m[1][0], m[1][1]]], [m[0][2], m[1][2]]);
        let residual = (see - explained).max(0.0);
        let rmse_detrended = if see.is_nan() || explained.is_nan() { f64::NAN } else { (residual / n).sqrt() };
        let mape = if self.mape_pixels > 0 { self.sum_ape / self.mape_pixels as f64 * 100.0 } else { f64::NAN };
        let reasons = self.reasons.map(|counts| {
            let listed = |(code, c): (usize, &[u64; 2])| code < Reason::ALL.len() || c[0] > 0;
            let each = |(code, c): (usize, &[u64; 2])| ReasonCount { code: code as u8, pixels: c[0], invalid: c[1] };
            counts.iter().enumerate().filter(|&x| listed(x)).map(each).collect()
        });
        Ok(Metrics {
            rmse,
            mae: self.sum_abs / n,
            max_abs: if self.nan || n == 0.0 { f64::NAN } else { self.max_abs },
            mape,
            bias,
            rmse_detrended,
            pixels: n as u64,
            mape_pixels: self.mape_pixels,
            invalid: self.invalid,
            reasons,
        })
    }
}

/// Count, means and centred co-moments (sums of products of deviations) of `(x, y, e)`.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    n: f64,
    mean: [f64; 3],
    m: [[f64; 3]; 3],
}

impl Moments {
    /// Combine with the moments of disjoint pixels (Chan, Golub & LeVeque's pairwise update).
    fn merge(&mut self, other: &Moments) {
        if other.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = *other;
            return;
        }
        let n = self.n + other.n;
        let d: [f64; 3] = std::array::from_fn(|i| other.mean[i] - self.mean[i]);
        let w = self.n * other.n / n;
        for i in 0..3 {
            for j in 0..3 {
                self.m[i][j] += other.m[i][j] + d[i] * d[j] * w;
            }
            self.mean[i] += d[i] * other.n / n;
        }
        self.n = n;
    }
}

/// `cᵀ·A⁺·c` for the symmetric positive semi-definite 2 × 2 `a` (its pseudo-inverse, so that a
/// direction the pixels do not span is left out of the fit).
fn explained_by_plane(a: [[f64; 2]; 2], c: [f64; 2]) -> f64 {
    let (p, q, r) = (a[0][0], a[0][1], a[1][1]);
    let half_diff = (p - r) / 2.0;
    let disc = half_diff.hypot(q);
    let l1 = (p + r) / 2.0 + disc;
    if l1 <= 0.0 || !l1.is_finite() {
        return 0.0;
    }
    // The small eigenvalue from the determinant, which avoids cancellation in mean - disc.
    let l2 = ((p * r - q * q) / l1).max(0.0);
    // Unit eigenvector of l1: the larger of the two equivalent forms, for accuracy.
    let (u, v) = ((l1 - r, q), (q, l1 - p));
    let (x, y) = if u.0.hypot(u.1) >= v.0.hypot(v.1) { u } else { v };
    let norm = x.hypot(y);
    let v1 = if norm > 0.0 { [x / norm, y / norm] } else { [1.0, 0.0] };
    let v2 = [-v1[1], v1[0]];
    let tol = l1 * 1e-12;
    let proj = |v: [f64; 2]| v[0] * c[0] + v[1] * c[1];
    let mut explained = proj(v1).powi(2) / l1;
    if l2 > tol {
        explained += proj(v2).powi(2) / l2;
    }
    explained
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_inverse_quadratic_form() {
        // Full rank: c^T A^-1 c for A = [[4, 1], [1, 3]], c = (1, 2): A^-1 = [[3, -1], [-1, 4]] / 11.
        let got = explained_by_plane([[4.0, 1.0], [1.0, 3.0]], [1.0, 2.0]);
        assert!((got - (3.0 - 4.0 + 16.0) / 11.0).abs() < 1e-14, "{got}");
        // One row of pixels: only x is fitted.
        assert!((explained_by_plane([[10.0, 0.0], [0.0, 0.0]], [5.0, 0.0]) - 2.5).abs() < 1e-14);
        // A diagonal line: A = [[2, 2], [2, 2]] spans (1, 1) / sqrt 2 with eigenvalue 4.
        assert!((explained_by_plane([[2.0, 2.0], [2.0, 2.0]], [1.0, 1.0]) - 0.5).abs() < 1e-14);
        assert_eq!(explained_by_plane([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]), 0.0);
    }

    #[test]
    fn merged_moments_match_direct() {
        let pts: Vec<[f64; 3]> =
            (0..50).map(|i| [(i % 7) as f64, (i / 7) as f64, ((i * 37) % 11) as f64 * 0.3 - 1.0]).collect();
        let mut total = Moments::default();
        for p in &pts {
            total.merge(&Moments { n: 1.0, mean: *p, m: [[0.0; 3]; 3] });
        }
        let n = pts.len() as f64;
        let mean: [f64; 3] = std::array::from_fn(|i| pts.iter().map(|p| p[i]).sum::<f64>() / n);
        for i in 0..3 {
            assert!((total.mean[i] - mean[i]).abs() < 1e-12);
            for j in 0..3 {
                let direct: f64 = pts.iter().map(|p| (p[i] - mean[i]) * (p[j] - mean[j])).sum();
                assert!((total.m[i][j] - direct).abs() < 1e-9, "{i}{j}: {} vs {direct}", total.m[i][j]);
            }
        }
    }

    #[test]
    fn band_size_does_not_change_the_result() {
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let (h, w) = (23usize, 17usize);
        let truth: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 101) as f32 * 0.01 - 0.3).collect();
        let pred: Vec<f32> =
            truth.iter().enumerate().map(|(i, t)| t + 0.5 + 0.01 * (i % w) as f32 + ((i % 5) as f32) * 1e-3).collect();
        let mask: Vec<f32> = (0..h * w).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let selection = mask.clone();
        let paths = ["pred", "truth", "mask"].map(|n| dir.join(format!("psi-gpu-eval-unit-{id}-{n}.npy")));
        crate::io::npy::write_f32(&paths[0], &[h, w], &pred).unwrap();
        crate::io::npy::write_f32(&paths[1], &[h, w], &truth).unwrap();
        crate::io::npy::write_f32(&paths[2], &[h, w], &mask).unwrap();
        for mask in [None, Some(paths[2].clone())] {
            let opts = EvalOptions { mask, ..Default::default() };
            let whole = eval(&paths[0], &paths[1], &opts).unwrap();
            for band in [1, 2, 5, 22, 23, 100] {
                let banded = eval_in_bands(&paths[0], &paths[1], &opts, Some(band)).unwrap();
                assert_eq!(banded, whole, "band {band}");
            }
            // In memory: the same metrics, bit for bit.
            let view = |v: &[f32]| ndarray::ArrayView2::from_shape((h, w), v).unwrap().to_owned();
            let (p, t, m) = (view(&pred), view(&truth), view(&selection));
            let m = opts.mask.as_ref().map(|_| m.view());
            assert_eq!(eval_arrays(p.view(), t.view(), m, None).unwrap(), whole);
        }
        for p in &paths {
            let _ = std::fs::remove_file(p);
        }
    }
}
