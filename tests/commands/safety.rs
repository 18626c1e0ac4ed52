//! Data safety end to end: an output never replaces an input or shares a file with another
//! output, output folders are checked before any work, options the run would not use are
//! refused, a signal stops a run without leaving a file, and a successful Vulkan run prints no
//! `error:` line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{TempPath, fixture};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
}

/// Run the binary in `dir` with `args`.
fn run(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().unwrap()
}

/// The one `error:` line of a run that had to exit with code 2.
fn error_line(args: &[&str], o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
    assert!(lines.len() == 1 && lines[0].starts_with("error: "), "{args:?}: one error line expected: {lines:?}");
    lines[0].to_string()
}

/// Every file under `dir` (relative path) with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_output_never_replaces_an_input_or_another_output() {
    let d = TempPath::dir("aliases");
    for (name, from) in [
        ("in.npy", "psi_frame_96x128.npy"),
        ("frames/a.npy", "frame_64x64.npy"),
        ("w.safetensors", "unet_b8.safetensors"),
        ("k.safetensors", "cpikan_2_16_16_1.safetensors"),
        ("pred.npy", "eval_pred.npy"),
        ("truth.npy", "eval_truth.npy"),
        ("mask.npy", "eval_mask.npy"),
    ] {
        std::fs::create_dir_all(d.join(name).parent().unwrap()).unwrap();
        std::fs::copy(fixture(from), d.join(name)).unwrap();
    }
    std::fs::create_dir(d.join("sub")).unwrap();
    #[cfg(unix)]
    {
        std::fs::hard_link(d.join("in.npy"), d.join("hard.npy")).unwrap();
        std::os::unix::fs::symlink(d.join("in.npy"), d.join("soft.npy")).unwrap();
    }
    let before = snapshot(&d);
    let region = ["--region", "0,0,8,8", "--supervised-steps", "1", "--adam-steps", "1", "--lbfgs-iters", "1"];
    let fit = |extra: &[&'static str]| [&["pinn", "fit", "in.npy"], &region[..], extra].concat();
    let cases: Vec<Vec<&str>> = vec![
        vec!["infer", "in.npy", "-o", "in.npy"],
        vec!["infer", "in.npy", "-o", "sub/../in.npy"],
        vec!["infer", "in.npy", "-o", "hard.npy"],
        vec!["infer", "in.npy", "-o", "soft.npy"],
        vec!["infer", "in.npy", "--quality", "in.npy"],
        vec!["infer", "in.npy", "--stats-json", "in.npy"],
        vec!["infer", "in.npy", "--preview", "in.npy"],
        vec!["infer", "in.npy", "--mask", "in.npy"],
        vec!["infer", "in.npy", "-o", "o.npy", "--mask", "o.npy"],
        vec!["infer", "in.npy", "-o", "o.npy", "--quality", "o.npy"],
        vec!["infer", "in.npy", "-o", "o.npy", "--preview", "./o.npy"],
        vec!["infer", "frames/a.npy", "--weights", "w.safetensors", "-o", "w.safetensors"],
        vec!["eval", "pred.npy", "truth.npy", "--json", "pred.npy"],
        vec!["eval", "pred.npy", "truth.npy", "--error-map", "truth.npy"],
        vec!["eval", "pred.npy", "truth.npy", "--mask", "mask.npy", "--error-map", "mask.npy"],
        vec!["eval", "pred.npy", "truth.npy", "--json", "e.json", "--error-map", "e.json"],
        vec!["eval", "pred.npy", "truth.npy", "--reasons", "mask.npy", "--json", "mask.npy"],
        vec!["generate", "g.npy", "--truth", "g.npy"],
        vec!["generate", "g.npy", "--preview", "g.npy"],
        vec!["convert", "in.npy", "in.npy"],
        vec!["train", "--init", "w.safetensors", "-o", "w.safetensors"],
        vec!["train", "--resume", "w.safetensors", "-o", "w.safetensors"],
        vec!["train", "--frames", "frames", "--history", "frames/a.npy"],
        vec!["train", "-o", "x.safetensors", "--checkpoint-every", "1", "--history", "x.ckpt.safetensors"],
        vec!["finetune", "--weights", "w.safetensors", "--frames", "frames/a.npy", "-o", "w.safetensors"],
        vec!["finetune", "--weights", "w.safetensors", "--frames", "frames", "-o", "frames/a.npy"],
        vec!["pinn", "eval", "--weights", "k.safetensors", "--height", "2", "--width", "2", "-o", "k.safetensors"],
        fit(&["-o", "in.npy"]),
        fit(&["-o", "f.npy", "--init", "unet:w.safetensors", "--save-model", "w.safetensors"]),
        fit(&["-o", "f.npy", "--save-model", "f.npy"]),
        vec!["bench", "--weights", "w.safetensors", "--json", "w.safetensors"],
    ];
    for args in &cases {
        let line = error_line(args, &run(&d, args));
        assert!(line.contains("is the same file as"), "{args:?}: {line}");
        assert_eq!(snapshot(&d), before, "{args:?}: files changed or left behind");
    }
}

#[test]
fn outputs_are_checked_before_any_work() {
    let d = TempPath::dir("locations");
    std::fs::copy(fixture("psi_frame_96x128.npy"), d.join("in.npy")).unwrap();
    std::fs::create_dir(d.join("folder.npy")).unwrap();
    let (w, frame) = (fixture("unet_b8.safetensors"), fixture("frame_64x64.npy"));
    let (w, frame) = (w.to_str().unwrap(), frame.to_str().unwrap());
    // Each would run for long (or write its first output) before reaching the bad location.
    let cases: [&[&str]; 5] = [
        &["train", "--steps", "100000", "-o", "no/such/w.safetensors"],
        &["finetune", "--weights", w, "--frames", frame, "--iterations", "100000", "-o", "no/f.safetensors"],
        &["infer", "in.npy", "--stats-json", "no/such/s.json"],
        &["infer", "in.npy", "--preview", "no/such/p.png"],
        &["infer", "in.npy", "-o", "folder.npy"],
    ];
    for args in cases {
        let started = Instant::now();
        let line = error_line(args, &run(&d, args));
        assert!(line.contains("does not exist") || line.contains("is a folder"), "{args:?}: {line}");
        assert!(started.elapsed() < Duration::from_secs(60), "{args:?}: refused only after working");
        let left: Vec<_> = std::fs::read_dir(&*d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{args:?}: {left:?}");
    }
}

#[test]
fn options_the_run_would_not_use_are_refused() {
    let d = TempPath::dir("unused");
    std::fs::copy(fixture("psi_frame_96x128.npy"), d.join("in.npy")).unwrap();
    std::fs::copy(fixture("frame_64x64.npy"), d.join("u8.npy")).unwrap();
    let w = fixture("unet_b8.safetensors");
    let w = w.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["infer", "u8.npy", "--weights", w, "--wavelengths", "5,6,7,8"], "--wavelengths applies to the classical"),
        (vec!["infer", "u8.npy", "--weights", w, "--buckets", "4"], "--buckets applies to the classical"),
        (vec!["infer", "u8.npy", "--weights", w, "--height-range", "-5,5"], "--height-range applies"),
        (vec!["infer", "u8.npy", "--weights", w, "--quality", "q.npy"], "--quality"),
        (vec!["infer", "in.npy", "--precision", "f16"], "--precision f16 applies to the U-Net"),
        (vec!["infer", "in.npy", "--batch", "0"], "--batch 0"),
        (vec!["infer", "in.npy", "--batch", "2", "--gpu-memory", "64"], "--gpu-memory"),
        (vec!["infer", "in.npy", "--tile", "0", "--overlap", "8"], "--overlap has no effect"),
        (vec!["bench", "--batch", "0"], "--batch 0"),
        (vec!["generate", "g.npy", "--height-offset", "1"], "--height-offset applies to random surfaces"),
        (vec!["convert", "in.npy", "imgs", "--pattern", "img_{}"], "--pattern"),
        (vec!["train", "--steps", "0"], "--steps 0"),
        (vec!["train", "--epochs", "0"], "--epochs 0"),
        (vec!["train", "--epochs", "2", "--steps", "5"], "--steps is replaced by --epochs"),
        (vec!["train", "--synthetic", "0"], "--synthetic 0"),
        (vec!["train", "--truth", "in.npy"], "--truth"),
        (vec!["train", "--init", w, "--resume", w], "--resume"),
        (vec!["train", "--validate-every", "2", "--validation", "0"], "--validate-every"),
        (vec!["train", "--loss", "supervised", "--smoothness", "0.1"], "--smoothness"),
        (
            vec!["finetune", "--weights", w, "--frames", "u8.npy", "--patch", "0", "--crops", "3", "-o", "f.st"],
            "--crops",
        ),
    ];
    for (args, needle) in &cases {
        let line = error_line(args, &run(&d, args));
        assert!(line.contains(needle), "{args:?}: {line} lacks '{needle}'");
        let left: Vec<_> = std::fs::read_dir(&*d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{args:?}: {left:?}");
    }
}

/// Start `args` in `dir`, wait until it has a temporary file open, send `signal` (`INT` or
/// `TERM`); the exit code, the stderr lines and the folder's files afterwards.
#[cfg(unix)]
fn interrupt(dir: &Path, args: &[&str], signal: &str) -> (Option<i32>, Vec<String>, Vec<String>) {
    let mut child = bin().current_dir(dir).args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let names = || -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    while !names().iter().any(|n| n.contains(".tmp-")) {
        assert!(start.elapsed() < Duration::from_secs(120), "{args:?} never started writing");
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended before it was interrupted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).lines().map(String::from).collect();
    (o.status.code(), stderr, names())
}

#[cfg(unix)]
#[test]
fn a_signal_stops_the_run_and_leaves_no_file() {
    let d = TempPath::dir("signal");
    let train = [
        "train",
        "--steps",
        "100000",
        "--synthetic",
        "1",
        "--synthetic-size",
        "32",
        "--patch",
        "32",
        "--batch",
        "1",
        "--base",
        "4",
        "--validation",
        "0",
        "--history",
        "h.csv",
        "-o",
        "w.safetensors",
    ];
    let generate = ["generate", "g.npy", "--height", "16384", "--width", "4096", "--dtype", "u8", "--truth", "t.npy"];
    for (args, signal, code) in [(&train[..], "INT", 130), (&train[..], "TERM", 143), (&generate[..], "INT", 130)] {
        let (status, stderr, left) = interrupt(&d, args, signal);
        assert_eq!(status, Some(code), "{args:?} SIG{signal}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{args:?}: one line expected: {stderr:?}");
        assert!(stderr[0].starts_with(&format!("error: interrupted by SIG{signal}")), "{stderr:?}");
        assert!(left.is_empty(), "{args:?} SIG{signal} left {left:?}");
    }
}

#[test]
fn a_successful_vulkan_run_prints_no_error_line() {
    let d = TempPath::dir("quiet");
    // Where Mesa's device-select layer cannot reach a Wayland display (no XDG_RUNTIME_DIR).
    let o = bin()
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .args(["--backend", "vulkan", "infer", fixture("psi_frame_96x128.npy").to_str().unwrap(), "--tile", "0"])
        .args(["-o", d.join("h.npy").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && stderr.contains("no GPU adapter found") {
        eprintln!("no Vulkan adapter: skipped");
        return;
    }
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("error:")), "a successful run printed: {stderr}");
    // A name as long as file systems allow (its temporary name must fit too), and the error text
    // of a missing input naming the OS error once.
    let long = d.join(format!("{}.npy", "h".repeat(251)));
    let frame = fixture("psi_frame_96x128.npy");
    let o = bin().args(["infer", frame.to_str().unwrap(), "--tile", "0", "-o"]).arg(&long).output().unwrap();
    assert!(o.status.success() && long.exists(), "{}", String::from_utf8_lossy(&o.stderr));
    let args = ["infer", "missing.npy"];
    let line = error_line(&args, &run(&d, &args));
    assert_eq!(line.matches("os error 2").count(), 1, "{line}");
}
