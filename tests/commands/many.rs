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

/// The residual model's levels come from each frame's raw type, as its classical solver's do: over
/// a u8 and a u16 frame of low contrast (whose B clears the u16 floor of 3 counts, not the u8
/// one's 3/255 of full scale) a many-frame run gives the bytes of one call per frame.
#[test]
fn a_residual_model_is_made_per_input_type() {
    let d = TempPath::dir("many-residual");
    std::fs::create_dir(d.join("in")).unwrap();
    let low = ["--low-contrast", "0,0,20,56:0.02"];
    for (name, dtype, extra) in [("a", "u8", &[][..]), ("b", "u16", &low[..])] {
        let out = format!("in/{name}.npy");
        let o = run(&d, &[&["generate", &out, "--height", "40", "--width", "56", "--dtype", dtype], extra].concat());
        assert!(o.status.success(), "{:?}", stderr(&o));
    }
    let weights = fixture_str("residual_b8.safetensors");
    for name in ["a", "b"] {
        let (input, out) = (format!("in/{name}.npy"), format!("{name}.h.npy"));
        let o = run(&d, &["infer", &input, "-o", &out, "--weights", weights, "--precision", "f32"]);
        assert!(o.status.success(), "{:?}", stderr(&o));
    }
    let o = run(&d, &["infer", "in", "-o", "out", "--weights", weights, "--precision", "f32"]);
    assert!(o.status.success(), "{:?}", stderr(&o));
    for name in ["a", "b"] {
        let read = |p: String| std::fs::read(d.join(p)).unwrap();
        assert_eq!(read(format!("{name}.h.npy")), read(format!("out/{name}.height.npy")), "{name}: heights");
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
        (vec!["in", "-o", "out", "--mask", "masks", "--quality", "q", "--batch", "0"], "--batch 0"),
        (vec!["in/a.npy", "other/a.npy", "-o", "out", "--mask", "masks"], "out/a.height.npy"),
        (vec!["in", "-o", "out", "--mask", "masks", "--weights", fixture_str("unet_b8.safetensors")], "--mask"),
        (vec!["in", "-o", "out", "--format", "bmp"], "--format 'bmp'"),
        (vec!["in/a.npy", "-o", "a.tif", "--format", "tiff"], "one frame's is -o's extension"),
    ] {
        let before = entries(&d);
        let o = run(&d, &[&["infer"], &args[..]].concat());
        let lines = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
        assert!(lines.len() == 1 && lines[0].contains(needle), "{args:?}: {lines:?}");
        assert!(!d.join("out").join("a.height.npy").exists() && !d.join("in/a.height.npy").exists(), "{args:?}");
        assert_eq!(entries(&d), before, "{args:?}: no folder (nor file) made for a refused run");
    }
}

fn fixture_str(name: &str) -> &'static str {
    fixture(name).to_str().unwrap().to_string().leak()
}

/// Everything under `dir`, as relative paths, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            found.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    found.sort();
    found
}

/// `--format tiff` and `--format x3p` write each frame's maps as one `infer -o` of that
/// extension does, byte for byte (TIFF quality maps and masks too; with X3P they stay .npy).
#[test]
fn format_writes_the_maps_a_single_infer_writes() {
    let d = TempPath::dir("many-format");
    frames(&d);
    let read = |p: &str| std::fs::read(d.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let ok = |args: &[&str]| {
        let o = run(&d, args);
        assert!(o.status.success(), "{args:?}: {:?}", stderr(&o));
    };
    ok(&["infer", "in", "-o", "tifs", "--format", "tiff", "--quality", "tq", "--mask", "tm"]);
    ok(&["infer", "in", "-o", "x3ps", "--format", "x3p", "--pixel-size", "0.5", "--mask", "xm"]);
    for name in ["a", "b", "c"] {
        let input = format!("in/{name}.npy");
        let (h, q, m) = (format!("{name}.tif"), format!("{name}.q.tif"), format!("{name}.m.tif"));
        ok(&["infer", &input, "-o", &h, "--quality", &q, "--mask", &m]);
        assert_eq!(read(&h), read(&format!("tifs/{name}.height.tif")), "{name}: TIFF heights");
        assert_eq!(read(&q), read(&format!("tq/{name}.quality.tif")), "{name}: TIFF quality");
        assert_eq!(read(&m), read(&format!("tm/{name}.mask.tif")), "{name}: TIFF mask");
        let (x, xm) = (format!("{name}.x3p"), format!("{name}.m.npy"));
        ok(&["infer", &input, "-o", &x, "--pixel-size", "0.5", "--mask", &xm]);
        assert_eq!(read(&x), read(&format!("x3ps/{name}.height.x3p")), "{name}: X3P heights");
        assert_eq!(read(&xm), read(&format!("xm/{name}.mask.npy")), "{name}: the mask beside an X3P");
    }
    assert!(read("tifs/a.height.tif").starts_with(b"II*\0"), "a TIFF");
    assert!(read("x3ps/a.height.x3p").starts_with(b"PK"), "an X3P is a zip");
    let mut written = entries(&d.join("x3ps"));
    written.retain(|f| !f.ends_with(".x3p"));
    assert!(written.is_empty(), "only .x3p files: {written:?}");
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
