//! Height maps out by the extension of `-o`: `.tif` (f32 gray, NaN kept) and `.x3p` (ISO
//! 25178-72, metres, `--pixel-size`) hold what `.npy` holds, reproducibly; what a format cannot
//! hold is refused before work. (Read back by tifffile and surfalize in `tests/python`.)

use crate::common::{TempPath, fixture};
use std::path::Path;
use std::process::{Command, Output};

use psi_gpu::io::npy;
use psi_gpu::io::preview::MapReader;
use psi_gpu::io::x3p::read_x3p;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
}

fn infer(out: &Path, extra: &[&str]) -> Output {
    let input = fixture("tiff/dark_u16_deflate.tif");
    let o =
        bin().arg("infer").arg(input).arg("-o").arg(out).args(["--tile", "16", "--overlap", "4"]).args(extra).output();
    o.unwrap()
}

fn map(path: &Path) -> Vec<f32> {
    let mut r = MapReader::open(path).unwrap();
    let mut v = Vec::new();
    let rows = r.height();
    r.read_band(rows, &mut v).unwrap();
    v
}

#[test]
fn tif_and_x3p_hold_the_npy_heights() {
    let dir = TempPath::dir("x3p-out");
    let (n, t, x) = (dir.join("h.npy"), dir.join("h.tif"), dir.join("h.x3p"));
    for (out, extra) in [(&n, &[][..]), (&t, &[][..]), (&x, &["--pixel-size", "0.5"][..])] {
        let o = infer(out, extra);
        assert!(o.status.success(), "{}: {}", out.display(), String::from_utf8_lossy(&o.stderr));
    }
    let (shape, want) = npy::read_f32(&n).unwrap();
    assert_eq!(shape, [24, 32]);
    let nan = want.iter().filter(|v| v.is_nan()).count();
    assert!(nan >= 24, "the dark patch is NaN ({nan})");
    let tif = map(&t);
    assert!(tif.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "the TIFF holds the npy's f32 bits");
    let surface = read_x3p(&x).unwrap();
    assert_eq!((surface.height, surface.width), (24, 32));
    assert!((surface.step_x_um - 0.5).abs() < 1e-9 && (surface.step_y_um - 0.5).abs() < 1e-9);
    for (a, b) in surface.values.iter().zip(&want) {
        assert_eq!(a.is_nan(), b.is_nan());
        assert!(a.is_nan() || (a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b} µm");
    }
    assert_eq!(map(&x).len(), want.len(), "eval and previews read the X3P too");
    // Same input, same bytes.
    let again = dir.join("again.x3p");
    assert!(infer(&again, &["--pixel-size", "0.5"]).status.success());
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&x).unwrap(), "the X3P bytes are reproducible");
}

#[test]
fn eval_reads_tif_and_x3p_predictions() {
    let dir = TempPath::dir("x3p-eval");
    let truth = dir.join("truth.npy");
    let (n, x) = (dir.join("h.npy"), dir.join("h.x3p"));
    assert!(infer(&n, &[]).status.success() && infer(&x, &[]).status.success());
    let (_, h) = npy::read_f32(&n).unwrap();
    npy::write_f32(&truth, &[24, 32], &h.iter().map(|v| if v.is_nan() { 0.0 } else { v + 0.25 }).collect::<Vec<_>>())
        .unwrap();
    for pred in [&n, &x] {
        let o = bin().arg("eval").arg(pred).arg(&truth).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rmse: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("rmse "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rmse in {text}"));
        assert!((rmse - 0.25).abs() < 1e-5, "{}: rmse {rmse}", pred.display());
        assert!(text.contains("invalid         24 "), "{}: the NaN pixels are left out: {text}", pred.display());
    }
}

#[test]
fn what_a_format_cannot_hold_is_refused_before_work() {
    let dir = TempPath::dir("x3p-refuse");
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("h.npy", vec!["--mask", "MASK.x3p"], "X3P file holds one height map"),
        ("h.npy", vec!["--quality", "MASK.x3p"], "X3P file holds heights"),
        ("h.npy", vec!["--pixel-size", "0.5"], "no output here is .x3p"),
        ("h.x3p", vec!["--pixel-size=-1"], "must be positive"),
    ];
    for (out, extra, expect) in cases {
        let mask = dir.join("MASK.x3p");
        let extra: Vec<String> = extra.iter().map(|a| a.replace("MASK.x3p", mask.to_str().unwrap())).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let o = infer(&dir.join(out), &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{extra:?}: expected '{expect}' in {err}");
        assert!(!dir.join(out).exists() && !mask.exists(), "{extra:?}: nothing written");
    }
}

#[test]
fn eval_error_map_as_data_and_generate_to_tiff() {
    let dir = TempPath::dir("x3p-errdata");
    let (h, truth) = (dir.join("h.npy"), dir.join("t.npy"));
    assert!(infer(&h, &[]).status.success());
    let (_, v) = npy::read_f32(&h).unwrap();
    npy::write_f32(&truth, &[24, 32], &v.iter().map(|x| if x.is_nan() { 0.0 } else { x - 0.5 }).collect::<Vec<_>>())
        .unwrap();
    for name in ["e.tif", "e.x3p", "e.npy"] {
        let e = dir.join(name);
        let o = bin().arg("eval").arg(&h).arg(&truth).arg("--error-map").arg(&e).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = map(&e);
        assert!(
            got.iter().zip(&v).all(|(g, x)| g.is_nan() == x.is_nan() && (g.is_nan() || (g - 0.5).abs() < 1e-5)),
            "{name}"
        );
    }
    // generate writes a TIFF stack by -o's extension; it reads back as the npy it also writes.
    let (s, n) = (dir.join("g.tif"), dir.join("g.npy"));
    for out in [&s, &n] {
        let o = bin()
            .arg("generate")
            .arg(out)
            .args(["--height", "20", "--width", "18", "--dtype", "u16", "--seed", "3"])
            .output();
        assert!(o.unwrap().status.success());
    }
    let read = |p: &Path| psi_gpu::io::frame_source::FrameSource::open(p).unwrap().read_all().unwrap();
    assert!(read(&s) == read(&n), "generate's TIFF holds its npy's frame");
}
