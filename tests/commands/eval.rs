//! `psi_gpu::eval` against numpy's figures for a committed fixture
//! (tests/fixtures/make_eval_fixture.py) — NaN predictions left out and counted, per reason with
//! a reason mask — and its errors for mismatched inputs.

use crate::common::{TempPath, fixture};

use psi_gpu::Error;
use psi_gpu::HostType;
use psi_gpu::commands::eval::{EvalOptions, Metrics, error_map, eval};
use psi_gpu::io::npy::{NpyWriter, read_f32, write_f32};
use psi_gpu::io::preview::{PreviewOptions, PreviewRange};

fn expected(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("eval_expected.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[case].clone()
}

fn assert_matches(got: &Metrics, want: &serde_json::Value, what: &str) {
    let json = got.to_json();
    for key in ["rmse", "mae", "max_abs", "mape", "bias", "rmse_detrended"] {
        let (g, w) = (json[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        let rel = (g - w).abs() / w.abs();
        assert!(rel <= 1e-9, "{what}: {key} = {g}, numpy {w} (relative difference {rel:e})");
    }
    for key in ["pixels", "mape_pixels"] {
        assert_eq!(json[key].as_u64(), want[key].as_u64(), "{what}: {key}");
    }
    assert_eq!(json["invalid"].as_u64(), Some(want["invalid"].as_u64().unwrap_or(0)), "{what}: invalid");
    assert_eq!(json.get("reasons"), want.get("reasons"), "{what}: reasons");
}

fn with_mask(mask: &str) -> EvalOptions {
    EvalOptions { mask: Some(fixture(mask)), ..Default::default() }
}

#[test]
fn matches_numpy_without_mask() {
    let m = eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &EvalOptions::default()).unwrap();
    assert_matches(&m, &expected("unmasked"), "unmasked");
    // The fixture's error is mostly piston and tilt: detrending removes most of it.
    assert!(m.rmse_detrended < m.rmse / 5.0, "{m:?}");
    assert!(m.mape_pixels < m.pixels);
}

#[test]
fn matches_numpy_with_mask() {
    let opts = with_mask("eval_mask.npy");
    let m = eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts).unwrap();
    assert_matches(&m, &expected("masked"), "masked");
}

/// NaN predictions are left out of every metric and counted; the reason mask adds per-code
/// counts (a code without a name included) and changes no metric.
#[test]
fn nan_pixels_are_left_out_and_counted_per_reason() {
    let (pred, truth) = (fixture("eval_pred_nan.npy"), fixture("eval_truth.npy"));
    let reasons = Some(fixture("eval_reasons.npy"));
    for (case, mask) in [("nan", None), ("nan_masked", Some(fixture("eval_mask.npy")))] {
        let m = eval(&pred, &truth, &EvalOptions { mask: mask.clone(), reasons: reasons.clone() }).unwrap();
        assert_matches(&m, &expected(case), case);
        assert!(m.rmse.is_finite() && m.invalid > 0, "{case}: {m:?}");
        let text = m.to_string();
        assert!(text.contains(&format!("invalid         {}", m.invalid)) && text.contains("code_7"), "{text}");
        let plain = eval(&pred, &truth, &EvalOptions { mask, reasons: None }).unwrap();
        assert_eq!((plain.rmse, plain.pixels, plain.invalid), (m.rmse, m.pixels, m.invalid), "{case}");
        assert!(plain.reasons.is_none() && plain.to_json().get("reasons").is_none());
    }
    // Without NaN, nothing is invalid.
    let m = eval(&fixture("eval_pred.npy"), &truth, &EvalOptions::default()).unwrap();
    assert_eq!(m.invalid, 0);
}

/// A prediction that is NaN everywhere has no metrics (NaN, null in JSON) but is no error: its
/// pixels are all counted as invalid.
#[test]
fn all_nan_prediction_reports_counts() {
    let (nan, zeros) = (TempPath::new("allnan.npy"), TempPath::new("zeros2.npy"));
    write_f32(&nan.0, &[2, 3], &[f32::NAN; 6]).unwrap();
    write_f32(&zeros.0, &[2, 3], &[0.5; 6]).unwrap();
    let m = eval(&nan.0, &zeros.0, &EvalOptions::default()).unwrap();
    assert_eq!((m.pixels, m.invalid), (0, 6));
    assert!([m.rmse, m.mae, m.max_abs, m.bias, m.rmse_detrended, m.mape].iter().all(|v| v.is_nan()), "{m:?}");
    assert!(m.to_json()["rmse"].is_null());
}

/// A reason mask of the wrong shape or with values that are not codes 0..=255 is an error.
#[test]
fn bad_reason_masks_are_errors() {
    let (pred, truth) = (fixture("eval_pred_nan.npy"), fixture("eval_truth.npy"));
    let wrong = TempPath::new("reasons_t.npy");
    write_f32(&wrong.0, &[53, 37], &vec![0.0; 53 * 37]).unwrap();
    let opts = EvalOptions { reasons: Some(wrong.0.clone()), ..Default::default() };
    match eval(&pred, &truth, &opts) {
        Err(Error::Shape(message)) => assert!(message.contains("reason mask"), "{message}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    for bad in [1.5, -1.0, 256.0, f32::NAN] {
        let mut codes = vec![0.0; 37 * 53];
        codes[2 * 53 + 5] = bad;
        write_f32(&wrong.0, &[37, 53], &codes).unwrap();
        match eval(&pred, &truth, &opts) {
            Err(Error::Invalid(message)) => {
                assert!(message.contains("row 2, column 5") && message.contains("0..255"), "{message}")
            }
            other => panic!("{bad}: expected an invalid-input error, got {other:?}"),
        }
    }
}

#[test]
fn accepts_a_leading_unit_axis_and_other_dtypes() {
    let (shape, pred) = read_f32(&fixture("eval_pred.npy")).unwrap();
    let pred3 = TempPath::new("pred3.npy");
    write_f32(&pred3.0, &[1, shape[0], shape[1]], &pred).unwrap();
    let opts = with_mask("eval_mask.npy");
    let m = eval(&pred3.0, &fixture("eval_truth.npy"), &opts).unwrap();
    assert_matches(&m, &expected("masked"), "(1, H, W) prediction");

    // The mask as float32 instead of uint8 selects the same pixels.
    let (mshape, mask) = read_f32(&fixture("eval_mask.npy")).unwrap();
    let maskf = TempPath::new("maskf.npy");
    write_f32(&maskf.0, &mshape, &mask).unwrap();
    let m = eval(
        &fixture("eval_pred.npy"),
        &fixture("eval_truth.npy"),
        &EvalOptions { mask: Some(maskf.0.clone()), ..Default::default() },
    )
    .unwrap();
    assert_matches(&m, &expected("masked"), "float32 mask");
}

#[test]
fn exact_prediction_and_json() {
    let truth = fixture("eval_truth.npy");
    let m = eval(&truth, &truth, &EvalOptions::default()).unwrap();
    assert_eq!((m.rmse, m.mae, m.max_abs, m.mape, m.bias, m.rmse_detrended), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
    assert_eq!(m.pixels, 37 * 53);

    // An all-zero truth has no MAPE pixels: NaN, written as null.
    let zeros = TempPath::new("zeros.npy");
    write_f32(&zeros.0, &[2, 3], &[0.0; 6]).unwrap();
    let ones = TempPath::new("ones.npy");
    write_f32(&ones.0, &[2, 3], &[1.0; 6]).unwrap();
    let m = eval(&ones.0, &zeros.0, &EvalOptions::default()).unwrap();
    assert!(m.mape.is_nan() && m.mape_pixels == 0);
    assert_eq!((m.rmse, m.bias, m.max_abs, m.rmse_detrended), (1.0, 1.0, 1.0, 0.0));
    let json = m.to_json();
    assert!(json["mape"].is_null());
    assert_eq!(json["pixels"], 6);
    assert!(!m.to_string().is_empty());
}

#[test]
fn shape_mismatch_is_an_error() {
    let other = TempPath::new("37x52.npy");
    write_f32(&other.0, &[37, 52], &vec![0.0; 37 * 52]).unwrap();
    match eval(&other.0, &fixture("eval_truth.npy"), &EvalOptions::default()) {
        Err(Error::Shape(message)) => {
            assert!(message.contains("shape mismatch") && message.contains("37 x 52"), "{message}")
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    // Not a map at all.
    let stack = TempPath::new("stack.npy");
    write_f32(&stack.0, &[2, 37, 53], &vec![0.0; 2 * 37 * 53]).unwrap();
    match eval(&stack.0, &fixture("eval_truth.npy"), &EvalOptions::default()) {
        Err(Error::Shape(message)) => assert!(message.contains("(H, W) or (1, H, W)"), "{message}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn mask_shape_mismatch_is_an_error() {
    let mask = TempPath::new("mask_t.npy");
    let mut w = NpyWriter::new(&mask.0, HostType::U8, &[53, 37]).unwrap();
    w.write(&[1; 53 * 37]).unwrap();
    w.finish().unwrap();
    let opts = EvalOptions { mask: Some(mask.0.clone()), ..Default::default() };
    match eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts) {
        Err(Error::Shape(message)) => assert!(message.contains("mask"), "{message}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn empty_selection_and_missing_files_are_errors() {
    let mask = TempPath::new("mask0.npy");
    write_f32(&mask.0, &[37, 53], &vec![0.0; 37 * 53]).unwrap();
    let opts = EvalOptions { mask: Some(mask.0.clone()), ..Default::default() };
    match eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts) {
        Err(Error::Invalid(message)) => assert!(message.contains("no pixels"), "{message}"),
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
    let missing = TempPath::new("missing.npy");
    assert!(matches!(eval(&missing.0, &fixture("eval_truth.npy"), &EvalOptions::default()), Err(Error::Io { .. })));
}

#[test]
fn error_map_png() {
    let out = TempPath::new("err.png");
    let opts = with_mask("eval_mask.npy");
    let full = PreviewOptions { max_size: 1600, label: "|error| µm".into(), range: PreviewRange::Full };
    let info = error_map(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &out.0, &opts, &full).unwrap();
    let m = eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts).unwrap();
    // No averaging at this size: the full scale's top is the largest masked |error| (in f32).
    assert_eq!(info.max, m.max_abs as f32);
    assert!(info.min >= 0.0 && info.min < info.max && info.full_range);
    assert_eq!((info.grid_height, info.grid_width), (37, 53));
    assert!(std::fs::metadata(&out.0).unwrap().len() > 0);
    // The default scale: the 1st to 99th percentile, inside the data's range.
    let robust = PreviewOptions { range: PreviewRange::default(), ..full };
    let r = error_map(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &out.0, &opts, &robust).unwrap();
    assert!(!r.full_range && r.data_max == info.max && r.max < info.max && r.min > info.min, "{r:?}");
    // NaN predictions are no data: as many cells as the selected NaN pixels (no averaging here).
    let nan = error_map(&fixture("eval_pred_nan.npy"), &fixture("eval_truth.npy"), &out.0, &opts, &robust).unwrap();
    let selected = m.pixels as usize;
    let counted = eval(&fixture("eval_pred_nan.npy"), &fixture("eval_truth.npy"), &opts).unwrap();
    assert_eq!(nan.no_data, 37 * 53 - selected + counted.invalid as usize);
}
