//! TIFF bucket stacks in (tifffile-written fixtures, `tests/fixtures/make_tiff_fixtures.py`):
//! every layout reads as its `.npy`, `infer` on a stack gives the bytes `infer` gives on the npy,
//! bad stacks are one error line with exit 2 and no output, and damaged files never panic.

use crate::common::{TempPath, fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use psi_gpu::io::frame_source::FrameSource;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
}

fn tiff(name: &str) -> PathBuf {
    fixture(&format!("tiff/{name}"))
}

fn read(path: &Path) -> (Vec<usize>, psi_gpu::HostType, Vec<u8>) {
    let mut s = FrameSource::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (s.shape(), s.ty(), s.read_all().unwrap())
}

/// Every fixture stack against the npy of its type, whole and in bands that cross strips/tiles.
#[test]
fn every_layout_reads_as_its_npy() {
    let cases = [
        ("u8_plain.tif", "u8"),
        ("u16_deflate.tif", "u16"),
        ("u16_lzw_predictor.tif", "u16"),
        ("u16_packbits_strips.tif", "u16"),
        ("u16_tiled_deflate.tif", "u16"),
        ("u16_bigtiff.tif", "u16"),
        ("u16_bigendian.tif", "u16"),
        ("u16_imagej.tif", "u16"),
        ("u16_imagej_onedir.tif", "u16"),
        ("folder_u16", "u16"),
        ("f32_deflate.tif", "f32"),
        ("f32_tiled.tif", "f32"),
        ("u32_plain.tif", "u32"),
    ];
    for (name, ty) in cases {
        let want = read(&tiff(&format!("stack_{ty}.npy")));
        let got = read(&tiff(name));
        assert_eq!((&got.0, got.1), (&want.0, want.1), "{name}: shape and type");
        assert!(got.2 == want.2, "{name}: the values differ from stack_{ty}.npy");
        let mut s = FrameSource::open(&tiff(name)).unwrap();
        let mut n = FrameSource::open(&tiff(&format!("stack_{ty}.npy"))).unwrap();
        for rows in [3..17, 0..1, 23..24, 15..16] {
            assert!(s.read_rows(rows.clone()).unwrap() == n.read_rows(rows.clone()).unwrap(), "{name}: rows {rows:?}");
        }
        assert!(s.read_region([5, 7, 11, 13]).unwrap() == n.read_region([5, 7, 11, 13]).unwrap(), "{name}: region");
    }
}

fn infer(input: &Path, out: &Path) -> Output {
    bin().arg("infer").arg(input).arg("-o").arg(out).args(["--tile", "16", "--overlap", "4"]).output().unwrap()
}

#[test]
fn infer_on_a_stack_gives_the_bytes_of_infer_on_the_npy() {
    let dir = TempPath::dir("tiff-infer");
    let want = dir.join("npy.height.npy");
    let o = infer(&tiff("stack_u16.npy"), &want);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = std::fs::read(&want).unwrap();
    for name in ["u16_deflate.tif", "u16_tiled_deflate.tif", "u16_imagej.tif", "folder_u16"] {
        let got = dir.join(format!("{name}.height.npy"));
        let o = infer(&tiff(name), &got);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(std::fs::read(&got).unwrap() == want, "{name}: heights differ from the npy's");
    }
}

/// Each bad stack: exit 2, one line naming the problem, and no output file.
#[test]
fn bad_stacks_are_one_line_and_no_output() {
    let dir = TempPath::dir("tiff-bad");
    let cases = [
        ("bad_sizes.tif", "all pages must have the same size"),
        ("bad_types.tif", "all pages must have the same sample type"),
        ("bad_rgb.tif", "must be gray"),
        ("bad_jpeg.tif", "JPEG compression is not supported"),
        ("bad_truncated.tif", "truncated"),
        ("bad_12pages.tif", "has 12 channels (pages) but the model"),
    ];
    for (name, expect) in cases {
        let out = dir.join(format!("{name}.npy"));
        let o = infer(&tiff(name), &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line, got {err}");
        assert!(err.contains(expect), "{name}: expected '{expect}' in {err}");
        assert!(!out.exists(), "{name}: no output");
    }
}

/// Every truncation and a sweep of single-byte changes of two stacks: an error or a frame,
/// never a panic (the reader guards sizes before the decoder sees them).
#[test]
fn damaged_stacks_never_panic() {
    let dir = TempPath::dir("tiff-damaged");
    for name in ["u16_deflate.tif", "f32_tiled.tif", "u16_bigendian.tif"] {
        let bytes = std::fs::read(tiff(name)).unwrap();
        let path = dir.join(name);
        let mut variants: Vec<Vec<u8>> = (0..bytes.len()).step_by(97).map(|n| bytes[..n].to_vec()).collect();
        for at in (0..bytes.len().min(600)).step_by(3).chain((600..bytes.len()).step_by(211)) {
            for v in [0x00, 0xff, bytes[at] ^ 0x10] {
                let mut b = bytes.clone();
                b[at] = v;
                variants.push(b);
            }
        }
        let mut errors = 0;
        for b in &variants {
            std::fs::write(&path, b).unwrap();
            let result =
                std::panic::catch_unwind(|| FrameSource::open(&path).and_then(|mut s| s.read_all().map(|_| ())));
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    errors += 1;
                    assert_eq!(e.to_string().lines().count(), 1, "{name}: {e}");
                }
                Err(_) => panic!("{name}: the reader panicked on a damaged file (variant of {} bytes)", b.len()),
            }
        }
        assert!(errors > variants.len() / 4, "{name}: most damaged files are errors ({errors} of {})", variants.len());
    }
}

fn convert(args: &[&Path]) -> Output {
    let o = bin().arg("convert").args(args).output().unwrap();
    assert!(o.status.success(), "convert {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// npy ↔ TIFF stack ↔ folder of TIFF pages keep the bytes; tifffile's folder and stack agree.
#[test]
fn convert_goes_between_stacks_and_folders() {
    let dir = TempPath::dir("tiff-convert");
    let npy = tiff("stack_u16.npy");
    let (stack, back, pages, again) =
        (dir.join("s.tif"), dir.join("back.npy"), dir.join("pages"), dir.join("again.npy"));
    convert(&[&npy, &stack]);
    convert(&[&stack, &back]);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&npy).unwrap(), "npy -> tif -> npy");
    let o = bin().arg("convert").arg(&stack).arg(&pages).args(["--format", "tif"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    convert(&[&pages, &again]);
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&npy).unwrap(), "tif -> pages -> npy");
    let from_folder = dir.join("folder.tif");
    convert(&[&tiff("folder_u16"), &from_folder]);
    assert_eq!(read(&from_folder), read(&npy), "tifffile's folder -> our stack");
    for f32_stack in ["f32_tiled.tif", "u32_plain.tif"] {
        let out = dir.join(format!("{f32_stack}.npy"));
        convert(&[&tiff(f32_stack), &out]);
        assert_eq!(read(&out).1, psi_gpu::HostType::F32);
    }
}

/// Height maps npy -> X3P -> TIFF -> npy: the same heights (f32 metres on the way), NaN kept.
#[test]
fn convert_goes_between_height_map_formats() {
    let dir = TempPath::dir("tiff-convert-maps");
    let h = dir.join("h.npy");
    assert!(infer(&tiff("dark_u16_deflate.tif"), &h).status.success());
    let (x, t, n) = (dir.join("h.x3p"), dir.join("h.tif"), dir.join("h2.npy"));
    let o = bin().arg("convert").arg(&h).arg(&x).args(["--pixel-size", "2.5"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!((psi_gpu::io::x3p::read_x3p(&x).unwrap().step_x_um - 2.5).abs() < 1e-9);
    convert(&[&x, &t]);
    convert(&[&t, &n]);
    let (_, a) = psi_gpu::io::npy::read_f32(&h).unwrap();
    let (shape, b) = psi_gpu::io::npy::read_f32(&n).unwrap();
    assert_eq!(shape, [24, 32]);
    assert!(a.iter().any(|v| v.is_nan()));
    for (a, b) in a.iter().zip(&b) {
        assert!(a.is_nan() == b.is_nan() && (a.is_nan() || (a - b).abs() <= 1e-6 * a.abs().max(1.0)), "{a} {b}");
    }
    // A frame is no X3P: refused, nothing written.
    let o = bin().arg("convert").arg(tiff("stack_u16.npy")).arg(dir.join("f.x3p")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.join("f.x3p").exists());
}

/// train and finetune take TIFF stacks and folders as frames: the same losses as from the npy.
#[test]
fn train_and_finetune_read_tiff_frames_as_npy() {
    let dir = TempPath::dir("tiff-train");
    let losses = |frames: &Path, name: &str| -> String {
        let w = dir.join(format!("{name}.safetensors"));
        let o = bin()
            .arg("train")
            .arg("--frames")
            .arg(frames)
            .args(["--steps", "2", "--batch", "2", "--patch", "16", "--base", "4", "--seed", "5", "-o"])
            .arg(&w)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with("trained")).unwrap_or_default();
        let loss = line.split("loss ").nth(1).and_then(|l| l.split(',').next()).unwrap_or_default().to_string();
        let o = bin()
            .arg("finetune")
            .arg("--weights")
            .arg(&w)
            .arg("--frames")
            .arg(frames)
            .args(["--iterations", "1", "--patch", "16", "--crops", "2", "-o"])
            .arg(dir.join(format!("{name}.ft.safetensors")))
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let ft = String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .split(": ")
            .last()
            .unwrap_or_default()
            .to_string();
        format!("{loss} | {ft}")
    };
    let want = losses(&tiff("stack_u16.npy"), "npy");
    assert!(want.contains("->"), "{want}");
    assert_eq!(losses(&tiff("u16_deflate.tif"), "tif"), want);
    assert_eq!(losses(&tiff("folder_u16"), "folder"), want);
}
