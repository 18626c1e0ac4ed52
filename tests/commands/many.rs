//! Many frames in one `infer` call (`commands::infer_many`): the same bytes as one call per
//! frame, outputs named after the inputs, a damaged frame skipped with its own error line and no
//! file while the others are written, and the run's files checked before any work.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{TempPath, fixture};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().unwrap()
}

fn stderr(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().map(str::to_string).collect()
}

/// Frames `a.npy` (u8), `b.npy` (u16) and `c.npy` (u8, another seed) in `dir/in`.
fn frames(dir: &Path) {
    std::fs::create_dir(dir.join("in")).unwrap();
    for (name, dtype, seed) in [("a", "u8", "1"), ("b", "u16", "2"), ("c", "u8", "3")] {
        let out = format!("in/{name}.npy");
        let o = run(dir, &["generate", &out, "--height", "40", "--width", "56", "--dtype", dtype, "--seed", seed]);
        assert!(o.status.success(), "{:?}", stderr(&o));
    }
}

#[test]
fn a_folder_of_frames_gives_the_bytes_of_one_call_per_frame() {
    let d = TempPath::dir("many-same");
    frames(&d);
    // One frame at a time, each with its mask.
    for name in ["a", "b", "c"] {
        let (input, out, mask) = (format!("in/{name}.npy"), format!("{name}.h.npy"), format!("{name}.m.npy"));
        let o = run(&d, &["infer", &input, "-o", &out, "--mask", &mask, "--tile", "32", "--overlap", "4"]);
        assert!(o.status.success(), "{:?}", stderr(&o));
    }
    let o = run(&d, &["infer", "in", "-o", "out", "--mask", "masks", "--tile", "32", "--overlap", "4"]);
    assert!(o.status.success(), "{:?}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("3 of 3 frames written"), "{stdout}");
    for name in ["a", "b", "c"] {
        let read = |p: String| std::fs::read(d.join(p)).unwrap();
        assert_eq!(read(format!("{name}.h.npy")), read(format!("out/{name}.height.npy")), "{name}: heights");
        assert_eq!(read(format!("{name}.m.npy")), read(format!("masks/{name}.mask.npy")), "{name}: mask");
    }
}

#[test]
fn a_damaged_frame_is_skipped_and_the_others_written() {
    let d = TempPath::dir("many-bad");
    frames(&d);
    let good = std::fs::read(d.join("in/b.npy")).unwrap();
    std::fs::write(d.join("in/b.npy"), &good[..good.len() / 2]).unwrap();
    let json = d.join("run.json");
    let o =
        run(&d, &["infer", "in/a.npy", "in/b.npy", "in/c.npy", "-o", "out", "--stats-json", json.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{:?}", stderr(&o));
    let lines = stderr(&o);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("error: in/b.npy: truncated"), "{lines:?}");
    assert!(lines[1].starts_with("error: 1 of 3 frames were skipped"), "{lines:?}");
    let mut written: Vec<_> = std::fs::read_dir(d.join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    written.sort();
    assert_eq!(written, ["a.height.npy", "c.height.npy"], "no file, not even a temporary one, for b");
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((stats["frames"].as_u64(), stats["failed"].as_u64()), (Some(3), Some(1)), "{stats}");
    assert!(stats["results"][1]["error"].as_str().unwrap().contains("truncated"), "{stats}");
    assert!(stats["results"][2]["stats"]["tiles"].as_u64().is_some(), "{stats}");
}

#[test]
fn files_are_checked_before_any_work() {
    let d = TempPath::dir("many-check");
    frames(&d);
    std::fs::create_dir(d.join("other")).unwrap();
    std::fs::copy(d.join("in/a.npy"), d.join("other/a.npy")).unwrap();
    std::fs::write(d.join("a-file"), b"x").unwrap();
    // A folder whose frame a's height map would be its other frame.
    std::fs::create_dir(d.join("in2")).unwrap();
    std::fs::copy(d.join("in/a.npy"), d.join("in2/a.npy")).unwrap();
    std::fs::copy(d.join("in/c.npy"), d.join("in2/a.height.npy")).unwrap();
    for (args, needle) in [
        (vec!["in/a.npy", "other/a.npy", "-o", "out"], "the height map of other/a.npy out/a.height.npy"),
        (vec!["in/a.npy", "in/c.npy"], "-o OUTDIR"),
        (vec!["in/a.npy", "in/c.npy", "-o", "a-file"], "name folders"),
        (vec!["in2", "-o", "in2"], "in2/a.height.npy"),
        (vec!["in", "-o", "out", "--weights", "none.safetensors"], "none.safetensors"),
    ] {
        let o = run(&d, &[&["infer"], &args[..]].concat());
        let lines = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
        assert!(lines.len() == 1 && lines[0].contains(needle), "{args:?}: {lines:?}");
        assert!(!d.join("out").join("a.height.npy").exists() && !d.join("in/a.height.npy").exists(), "{args:?}");
    }
}

/// `--adapters all` spreads the frames over every adapter (here lavapipe's Vulkan and
/// llvmpipe's GL, one worker thread each); the classical solver gives the same bytes on both.
#[test]
fn frames_spread_over_every_adapter_give_the_same_bytes() {
    let d = TempPath::dir("many-adapters");
    frames(&d);
    let one = run(&d, &["infer", "in", "-o", "one"]);
    assert!(one.status.success(), "{:?}", stderr(&one));
    let all = run(&d, &["infer", "in", "-o", "all", "--adapters", "all", "--stats-json", "all.json"]);
    assert!(all.status.success(), "{:?}", stderr(&all));
    for name in ["a", "b", "c"] {
        let read = |dir: &str| std::fs::read(d.join(dir).join(format!("{name}.height.npy"))).unwrap();
        assert_eq!(read("one"), read("all"), "{name}");
    }
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("all.json")).unwrap()).unwrap();
    let backends: Vec<_> = (0..3).map(|k| stats["results"][k]["stats"]["backend"].clone()).collect();
    eprintln!("frames ran on {backends:?}");
    for (args, needle) in [
        (vec!["infer", "in", "-o", "x", "--adapters", "0,0"], "distinct"),
        (vec!["infer", "in/a.npy", "-o", "x.npy", "--adapters", "all"], "several frames"),
        (vec!["infer", "in", "-o", "x", "--adapters", "9"], "adapter"),
    ] {
        let o = run(&d, &args);
        let lines = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
        assert!(lines.len() == 1 && lines[0].contains(needle), "{args:?}: {lines:?}");
    }
}

/// TIFF stacks in a folder of frames, and a folder of single-page TIFF buckets given beside it
/// (one frame, not a folder of frames), run like one call each.
#[test]
fn tiff_stacks_and_page_folders_are_frames_too() {
    let d = TempPath::dir("many-tiff");
    frames(&d);
    std::fs::copy(fixture("tiff/u16_deflate.tif"), d.join("in/t.tif")).unwrap();
    let pages = fixture("tiff/folder_u16");
    let pages = pages.to_str().unwrap();
    let all = run(&d, &["infer", "in", pages, "-o", "out"]);
    assert!(all.status.success(), "{:?}", stderr(&all));
    let one = |input: &str, out: &str| {
        let o = run(&d, &["infer", input, "-o", out]);
        assert!(o.status.success(), "{input}: {:?}", stderr(&o));
        std::fs::read(d.join(out)).unwrap()
    };
    let read = |p: &str| std::fs::read(d.join(p)).unwrap();
    assert_eq!(one("in/t.tif", "t.npy"), read("out/t.height.npy"));
    assert_eq!(one(pages, "pages.npy"), read("out/folder_u16.height.npy"));
    let mut written: Vec<_> = std::fs::read_dir(d.join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    written.sort();
    assert_eq!(written, ["a.height.npy", "b.height.npy", "c.height.npy", "folder_u16.height.npy", "t.height.npy"]);
}
