//! `psi_gpu::eval` against numpy's figures for a committed fixture
//! (tests/fixtures/make_eval_fixture.py), and its errors for mismatched inputs.

use crate::common::{TempPath, fixture};

use psi_gpu::Error;
use psi_gpu::HostType;
use psi_gpu::commands::eval::{EvalOptions, Metrics, error_map, eval};
use psi_gpu::io::npy::{NpyWriter, read_f32, write_f32};
use psi_gpu::io::preview::PreviewOptions;

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
    let opts = EvalOptions { mask: Some(fixture("eval_mask.npy")) };
    let m = eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts).unwrap();
    assert_matches(&m, &expected("masked"), "masked");
}

#[test]
fn accepts_a_leading_unit_axis_and_other_dtypes() {
    let (shape, pred) = read_f32(&fixture("eval_pred.npy")).unwrap();
    let pred3 = TempPath::new("pred3.npy");
    write_f32(&pred3.0, &[1, shape[0], shape[1]], &pred).unwrap();
    let opts = EvalOptions { mask: Some(fixture("eval_mask.npy")) };
    let m = eval(&pred3.0, &fixture("eval_truth.npy"), &opts).unwrap();
    assert_matches(&m, &expected("masked"), "(1, H, W) prediction");

    // The mask as float32 instead of uint8 selects the same pixels.
    let (mshape, mask) = read_f32(&fixture("eval_mask.npy")).unwrap();
    let maskf = TempPath::new("maskf.npy");
    write_f32(&maskf.0, &mshape, &mask).unwrap();
    let m = eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &EvalOptions { mask: Some(maskf.0.clone()) })
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
    let opts = EvalOptions { mask: Some(mask.0.clone()) };
    match eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts) {
        Err(Error::Shape(message)) => assert!(message.contains("mask"), "{message}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn empty_selection_and_missing_files_are_errors() {
    let mask = TempPath::new("mask0.npy");
    write_f32(&mask.0, &[37, 53], &vec![0.0; 37 * 53]).unwrap();
    let opts = EvalOptions { mask: Some(mask.0.clone()) };
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
    let opts = EvalOptions { mask: Some(fixture("eval_mask.npy")) };
    let preview = PreviewOptions { max_size: 1600, label: "|error| µm".into() };
    let info = error_map(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &out.0, &opts, &preview).unwrap();
    let m = eval(&fixture("eval_pred.npy"), &fixture("eval_truth.npy"), &opts).unwrap();
    // No averaging at this size: the scale's top is the largest masked |error| (in f32).
    assert_eq!(info.max, m.max_abs as f32);
    assert!(info.min >= 0.0 && info.min < info.max);
    assert_eq!((info.grid_height, info.grid_width), (37, 53));
    assert!(std::fs::metadata(&out.0).unwrap().len() > 0);
}
