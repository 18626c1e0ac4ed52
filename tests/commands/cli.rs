//! The command line end to end: `info`, `infer` with both models, and bad input giving one clear
//! error line, exit code 2 and no output file.

use crate::common::{TempPath, fixture};
use std::path::Path;
use std::process::{Command, Output};

use psi_gpu::HostType;
use psi_gpu::io::npy::{self, NpyWriter};
use psi_gpu::psi::buckets as synth;
use psi_gpu::psi::surface::seed_heights;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
}

/// The lines of stderr.
fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().map(String::from).collect()
}

fn write_npy(path: &Path, ty: HostType, shape: &[usize], bytes: &[u8]) {
    let mut w = NpyWriter::new(path, ty, shape).unwrap();
    w.write(bytes).unwrap();
    w.finish().unwrap();
}

#[test]
fn info_lists_adapters() {
    let o = bin().arg("info").output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("shader-f16") && s.contains("max storage binding"), "{s}");
}

#[test]
fn infer_unet_whole_frame_matches_pytorch() {
    let d = TempPath::dir("unet");
    let out = d.join("h.npy");
    let o = bin()
        .args(["infer", fixture("frame_100x75.npy").to_str().unwrap(), "--tile", "0", "--precision", "f32"])
        .args(["--weights", fixture("unet_b8.safetensors").to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let (shape, got) = npy::read_f32(&out).unwrap();
    let (_, want) = npy::read_f32(&fixture("out_b8_100x75.npy")).unwrap();
    assert_eq!(shape, vec![100, 75]);
    assert!(crate::common::rel_l2(&got, &want) < 1e-4);
}

#[test]
fn infer_multi_class_unet_writes_every_class() {
    let d = TempPath::dir("classes");
    let out = d.join("c.npy");
    let o = bin()
        .args(["infer", fixture("frame3_37x50.npy").to_str().unwrap(), "--precision", "f32"])
        .args(["--tile", "24", "--overlap", "8", "--weights", fixture("unet_b8_c3.safetensors").to_str().unwrap()])
        .args(["-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let (shape, got) = npy::read_f32(&out).unwrap();
    assert_eq!(shape, vec![2, 37, 50]);
    // The file holds each class's rows where they belong: the same stream assembled in memory.
    let gpu = crate::common::gpus().iter().find(|g| g.info.backend == "Vulkan").unwrap_or(&crate::common::gpus()[0]);
    let weights = psi_gpu::io::weights::Weights::load(&fixture("unet_b8_c3.safetensors")).unwrap();
    let model = psi_gpu::nn::Model::UNet(psi_gpu::nn::unet::UNet::new(gpu, &weights, psi_gpu::Precision::F32).unwrap());
    let mut reader = psi_gpu::io::frame_source::FrameSource::open(&fixture("frame3_37x50.npy")).unwrap();
    let opts = psi_gpu::tiling::StreamOptions {
        tile: 24,
        overlap: 8,
        batch: None,
        input_scale: 1.0 / 255.0,
        memory_budget: 1 << 30,
        band_limit: None,
    };
    let mut want = vec![f32::NAN; 2 * 37 * 50];
    psi_gpu::tiling::stream(
        gpu,
        &model,
        &mut reader,
        &opts,
        |row0, rows, data| {
            for c in 0..2 {
                want[(c * 37 + row0) * 50..(c * 37 + row0 + rows) * 50]
                    .copy_from_slice(&data[c * rows * 50..(c + 1) * rows * 50]);
            }
            Ok(())
        },
        |_, _| {},
    )
    .unwrap();
    assert!(crate::common::rel_l2(&got, &want) < 1e-6, "relative L2 {}", crate::common::rel_l2(&got, &want));
}

#[test]
fn infer_classical_default_with_quality_and_stats() {
    let d = TempPath::dir("classical");
    let (h, w) = (70, 90);
    let truth = seed_heights(h, w);
    let frame = synth::buckets(&truth, h, w, &synth::SynthConfig::default());
    let input = d.join("frame.npy");
    write_npy(&input, HostType::U16, &[16, h, w], bytemuck::cast_slice(&synth::quantize_u16(&frame)));
    let o = bin()
        .args(["infer", input.to_str().unwrap(), "--tile", "32", "--overlap", "8"])
        .args(["--quality", d.join("q.npy").to_str().unwrap(), "--stats-json", d.join("s.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let (shape, heights) = npy::read_f32(&d.join("frame.height.npy")).unwrap();
    assert_eq!(shape, vec![h, w]);
    let rmse = (heights.iter().zip(&truth).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / (h * w) as f64).sqrt();
    assert!(rmse < 2e-3, "RMSE {rmse}");
    let (_, q) = npy::read_f32(&d.join("q.npy")).unwrap();
    assert!(q.iter().all(|&v| (v - 100.0 / 128.0).abs() < 0.02), "quality ≈ B/A");
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap();
    for key in [
        "seconds",
        "read_seconds",
        "device_wait_seconds",
        "write_seconds",
        "tiles",
        "megapixels_per_s",
        "device",
        "backend",
        "precision",
        "tile",
        "overlap",
        "batch",
        "peak_gpu_bytes",
    ] {
        assert!(stats.get(key).is_some(), "stats lack {key}: {stats}");
    }
    // Tiles of 32 + 8 (the classical solver's are --tile plus the overlap): rows 0, 30 x
    // columns 0, 32, 50.
    assert_eq!(stats["tiles"], 6);
}

/// Run infer with `args`, expect exit code 2, one error line containing `needle`, no output.
fn expect_error(args: &[&str], out: &Path, needle: &str) {
    let o = bin().arg("infer").args(args).args(["-o", out.to_str().unwrap()]).output().unwrap();
    let lines = stderr_lines(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
    assert_eq!(lines.len(), 1, "{args:?}: one line expected: {lines:?}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: {lines:?} lacks '{needle}'");
    assert!(!out.exists(), "{args:?}: no output on error");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{args:?}: temporary files left: {leftovers:?}");
}

#[test]
fn bad_input_is_one_clear_error() {
    let d = TempPath::dir("errors");
    let out = d.join("out.npy");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let weights = fixture("unet_b8.safetensors");
    let wts = weights.to_str().unwrap();

    std::fs::write(d.join("text.npy"), b"hello, not an array").unwrap();
    expect_error(&[&p("text.npy")], &out, "not a .npy file");
    expect_error(&[&p("missing.npy")], &out, "missing.npy");

    let good = std::fs::read(fixture("frame_64x64.npy")).unwrap();
    std::fs::write(d.join("short.npy"), &good[..good.len() - 100]).unwrap();
    expect_error(&[&p("short.npy")], &out, "truncated");

    write_npy(&d.join("rank2.npy"), HostType::U8, &[64, 64], &[0; 64 * 64]);
    expect_error(&[&p("rank2.npy")], &out, "(channels, height, width)");
    write_npy(&d.join("empty.npy"), HostType::U8, &[16, 0, 64], &[]);
    expect_error(&[&p("empty.npy")], &out, "non-empty");

    // Edit the header text in place (same length, so the data offset stays valid).
    let edit = |from: &str, to: &str| {
        let mut header = good[..128].to_vec();
        let at = header.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
        header.splice(at..at + from.len(), to.bytes());
        header
    };
    let mut bytes = edit("False", "True ");
    bytes.extend_from_slice(&good[128..]);
    std::fs::write(d.join("fortran.npy"), bytes).unwrap();
    expect_error(&[&p("fortran.npy")], &out, "Fortran");

    let mut bytes = edit("'|u1'", "'<f8'");
    bytes.extend_from_slice(&vec![0; 8 * 16 * 64 * 64]);
    std::fs::write(d.join("f8.npy"), bytes).unwrap();
    expect_error(&[&p("f8.npy")], &out, "unsupported dtype");

    std::fs::copy(fixture("psi_frame_96x128.npy"), d.join("psi.npy")).unwrap();
    let frame3 = fixture("frame3_37x50.npy");
    expect_error(&[frame3.to_str().unwrap(), "--weights", wts, "--tile", "0"], &out, "channels");
    expect_error(&[frame3.to_str().unwrap()], &out, "expects 16");

    // Weights with a tensor missing, and with a tensor of the wrong shape.
    let w = psi_gpu::io::weights::Weights::load(&weights).unwrap();
    let save = |name: &str, skip: &str, reshape: &str| {
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (k, t) in &w.tensors {
            if k == skip {
                continue;
            }
            let mut data = t.data.clone();
            let mut shape = t.shape.clone();
            if k == reshape {
                data.truncate(data.len() / 2);
                shape[0] /= 2;
            }
            tensors.push((k.clone(), bytemuck::cast_slice(&data).to_vec(), shape));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(k, b, s)| {
                (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            })
            .collect();
        std::fs::write(d.join(name), safetensors::serialize(views, None).unwrap()).unwrap();
    };
    save("missing.safetensors", "up2.conv.double_conv.4.running_var", "");
    save("shape.safetensors", "", "down3.maxpool_conv.1.double_conv.3.weight");
    let frame = fixture("frame_64x64.npy");
    let f = frame.to_str().unwrap();
    expect_error(
        &[f, "--weights", &p("missing.safetensors")],
        &out,
        "missing tensor 'up2.conv.double_conv.4.running_var'",
    );
    expect_error(&[f, "--weights", &p("shape.safetensors")], &out, "down3.maxpool_conv.1.double_conv.3.weight");
    expect_error(&[f, "--weights", &p("text.npy")], &out, "not a valid safetensors file");

    // The U-Net's tiles are --tile wide (the classical solver's grow by the overlap).
    expect_error(&[f, "--weights", wts, "--tile", "32", "--overlap", "32"], &out, "--overlap");
    // Two lasers on one wavelength make the fringe-order search degenerate.
    expect_error(&[&p("psi.npy"), "--wavelengths", "5,5,5,5"], &out, "wavelengths 1 and 2 are both 5 µm");
    let bad_out = d.join("no/such/dir/out.npy");
    let o = bin().args(["infer", f, "-o", bad_out.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_lines(&o)[0].contains("no/such/dir"), "{:?}", stderr_lines(&o));
}

#[test]
fn demo_generate_bench_run_end_to_end() {
    let d = TempPath::dir("demo");
    let o = bin()
        .args(["demo", "--size", "160", "--tile", "64", "--overlap", "16", "--dir", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("RMSE") && text.contains("height.png"), "{text}");
    for f in ["frame.npy", "truth.npy", "height.npy", "quality.npy", "eval.json", "height.png", "error.png"] {
        assert!(d.join(f).exists(), "demo did not write {f}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("eval.json")).unwrap()).unwrap();
    let rmse = metrics["rmse"].as_f64().unwrap();
    assert!(rmse < 1e-2, "demo RMSE {rmse} µm (noise σ = 2 counts on u8)");

    let json = d.join("bench.json");
    let o = bin()
        .args(["bench", "--height", "96", "--width", "128", "--tile", "64", "--overlap", "16"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in
        ["device", "backend", "precision", "frame", "tiles", "megapixels_per_s", "share_outside_model", "read_seconds"]
    {
        assert!(b.get(key).is_some(), "bench JSON lacks {key}: {b}");
    }
    // The classical solver's tiles are --tile plus the overlap: 80² at rows 0, 16 and columns
    // 0, 48, four of them for 96 x 128 pixels.
    let ratio = b["computed_per_output_pixel"].as_f64().unwrap();
    assert_eq!((b["overlap"].as_u64(), b["tiles"].as_u64()), (Some(16), Some(4)), "{b}");
    assert!((ratio - 4.0 * 80.0 * 80.0 / (96.0 * 128.0)).abs() < 1e-12, "{b}");

    let o = bin().args(["generate", d.join("g.npy").to_str().unwrap(), "--dtype", "i32"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_lines(&o)[0].contains("--dtype"), "{:?}", stderr_lines(&o));
    assert!(!d.join("g.npy").exists());
}

#[test]
fn train_checkpoints_and_resumes_exactly() {
    let d = TempPath::dir("train");
    let run = |steps: &str, out: &Path, extra: &[&str]| {
        let o = bin()
            .args(["train", "--base", "4", "--patch", "32", "--batch", "1", "--synthetic", "2"])
            .args(["--synthetic-size", "48", "--validation", "1", "--steps", steps, "-o", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", stderr_lines(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let text = run("4", &d.join("straight.safetensors"), &["--history", d.join("h.csv").to_str().unwrap()]);
    assert!(text.contains("validation at step 4") && text.contains("classical solver"), "{text}");
    assert_eq!(std::fs::read_to_string(d.join("h.csv")).unwrap().lines().count(), 5, "header + 4 steps");
    run("2", &d.join("part.safetensors"), &["--checkpoint-every", "2"]);
    let ckpt = d.join("part.ckpt.safetensors");
    assert!(ckpt.exists());
    run("4", &d.join("resumed.safetensors"), &["--resume", ckpt.to_str().unwrap()]);
    let (a, _, nbt_a) = psi_gpu::io::checkpoint::load(&d.join("straight.safetensors")).unwrap();
    let (b, _, nbt_b) = psi_gpu::io::checkpoint::load(&d.join("resumed.safetensors")).unwrap();
    assert_eq!(nbt_a, 4);
    assert_eq!(nbt_b, 4, "num_batches_tracked continues across a resume");
    for (name, t) in &a.tensors {
        assert_eq!(t.data, b.tensors[name].data, "{name}: resumed training differs from the straight run");
    }
    assert_eq!(a.metadata["input_scale"], b.metadata["input_scale"]);
    // A run that resumes its own checkpoint keeps checkpointing into it (a preemptible job's loop):
    // the checkpoint is an input and an output, and that one alias is allowed.
    run("3", &d.join("part.safetensors"), &["--resume", ckpt.to_str().unwrap(), "--checkpoint-every", "1"]);
    let (_, optim, _) = psi_gpu::io::checkpoint::load(&ckpt).unwrap();
    assert_eq!(optim.map(|o| o.step), Some(3), "the checkpoint moved on to step 3");
}

#[test]
fn pinn_eval_matches_pytorch() {
    let d = TempPath::dir("pinn");
    let out = d.join("p.npy");
    let o = bin()
        .args(["pinn", "eval", "--weights", fixture("cpikan_2_16_16_1.safetensors").to_str().unwrap()])
        .args(["--height", "30", "--width", "20", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let (shape, got) = npy::read_f32(&out).unwrap();
    let (_, want) = npy::read_f32(&fixture("cpikan_2_16_16_1_out.npy")).unwrap();
    assert_eq!(shape, vec![30, 20]);
    assert!(crate::common::rel_l2(&got, &want) < 1e-5);
    let o = bin()
        .args(["pinn", "eval", "--weights", fixture("unet_b8.safetensors").to_str().unwrap()])
        .args(["--height", "3", "--width", "2", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a U-Net is not a cPIKAN: {:?}", stderr_lines(&o));
}

/// A u8 (16, size, size) frame of random surface `seed` with noise σ = 2 counts.
fn random_frame(path: &Path, seed: u64, size: usize) {
    let heights = psi_gpu::psi::surface::random_heights_cpu(seed, size, size);
    let cfg = synth::SynthConfig { noise: 2.0, seed, ..Default::default() };
    let bytes = synth::quantize_u8(&synth::buckets(&heights, size, size, &cfg));
    write_npy(path, HostType::U8, &[16, size, size], &bytes);
}

#[test]
fn finetune_lowers_the_physics_loss_of_the_chosen_layers() {
    let d = TempPath::dir("finetune");
    let (f1, f2, hold) = (d.join("a.npy"), d.join("b.npy"), d.join("held.npy"));
    random_frame(&f1, 1, 48);
    random_frame(&f2, 2, 48);
    random_frame(&hold, 3, 48);
    let init = fixture("train_step_init.safetensors");
    let out = d.join("ft.safetensors");
    let o = bin()
        .args(["finetune", "--weights", init.to_str().unwrap(), "--frames", f1.to_str().unwrap(), f2.to_str().unwrap()])
        .args(["--holdout", hold.to_str().unwrap(), "--patch", "32", "--crops", "2", "--batch", "2"])
        .args(["--iterations", "8", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let losses = |line: &str| -> (f64, f64) {
        let l = text.lines().find(|l| l.contains(line)).unwrap_or_else(|| panic!("no '{line}' in {text}"));
        let mut it = l.rsplit("loss ").next().unwrap().split(" -> ").map(|v| v.trim().parse::<f64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    let (before, after) = losses("finetuned");
    assert!(after < 0.95 * before, "fine-tuning did not lower the loss: {text}");
    assert!(text.contains("held-out frames: physics loss"), "{text}");
    let (a, _, nbt_a) = psi_gpu::io::checkpoint::load(&init).unwrap();
    let (b, _, nbt_b) = psi_gpu::io::checkpoint::load(&out).unwrap();
    assert_eq!(nbt_a, nbt_b);
    assert_eq!(a.metadata_f32("input_scale").unwrap(), None);
    assert_eq!(b.metadata_f32("input_scale").unwrap(), Some(1.0 / 255.0));
    let mut changed = 0;
    for (name, t) in &a.tensors {
        let same = t.data == b.tensors[name].data;
        if name.starts_with("up4.") || name.starts_with("outc.") {
            changed += !same as usize;
        } else {
            assert!(same, "{name} changed although only the head was fine-tuned");
        }
    }
    assert!(changed >= 3, "only {changed} head tensors changed");

    // A prefix that selects nothing is a clear error, and nothing is written.
    let bad = d.join("bad.safetensors");
    let o = bin()
        .args(["finetune", "--weights", init.to_str().unwrap(), "--frames", f1.to_str().unwrap()])
        .args(["--layers", "decoder9", "--patch", "32", "-o", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{:?}", stderr_lines(&o));
    assert!(stderr_lines(&o).iter().any(|l| l.contains("selects no parameter")), "{:?}", stderr_lines(&o));
    assert!(!bad.exists());

    // train: an empty height range is rejected before anything runs.
    for range in ["2,1", "x,1"] {
        let o = bin()
            .args(["train", "--height-range", range, "--steps", "1", "-o", bad.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{range}: {:?}", stderr_lines(&o));
        assert!(stderr_lines(&o).iter().any(|l| l.contains("--height-range")), "{:?}", stderr_lines(&o));
        assert!(!bad.exists());
    }
}

/// `train --residual` refuses, in one line and before writing anything, the flags it cannot use
/// and weights that are not a residual model.
#[test]
fn train_residual_refuses_what_it_cannot_use() {
    let d = TempPath::dir("train-residual-errors");
    let out = d.join("w.safetensors");
    let unet = fixture("unet_b8.safetensors");
    let cases: [(&[&str], &str); 8] = [
        (&["--bound", "0.05"], "--bound is the residual model's"),
        (&["--relative-loss", "0.5"], "--relative-loss is the residual model's"),
        (&["--residual", "--relative-loss", "1.5"], "expected a power in [0, 1]"),
        (&["--residual", "--height-range", "0,1"], "--height-range maps plain synthetic frames"),
        (&["--residual", "--loss", "physics"], "--loss physics cannot be used"),
        (&["--residual", "--bound", "0.7"], "under a quarter fringe"),
        (&["--residual", "--init", unet.to_str().unwrap()], "a plain U-Net"),
        (&["--residual", "--init", unet.to_str().unwrap(), "--bound", "0.05"], "the weights given carry their own"),
    ];
    for (args, needle) in cases {
        let mut cmd = bin();
        cmd.args(["train", "--steps", "1", "--synthetic-size", "32", "--patch", "32"]).args(args);
        let o = cmd.args(["-o", out.to_str().unwrap()]).output().unwrap();
        let lines = stderr_lines(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: {lines:?} lacks '{needle}'");
        assert!(!out.exists(), "{args:?}");
    }
}

/// A u8 frame of the seed surface (σ = 2 counts) with a saturated band (columns 0..8) and a dark
/// one (8..16); its truth.
fn spoiled_frame(path: &Path, h: usize, w: usize) -> Vec<f32> {
    let truth = seed_heights(h, w);
    let mut frame = synth::buckets(&truth, h, w, &synth::SynthConfig { noise: 2.0, seed: 5, ..Default::default() });
    for (i, v) in frame.iter_mut().enumerate() {
        let x = i % w;
        *v = if x < 8 {
            400.0
        } else if x < 16 {
            0.0
        } else {
            *v
        };
    }
    write_npy(path, HostType::U8, &[16, h, w], &synth::quantize_u8(&frame));
    truth
}

#[test]
fn infer_masks_invalid_pixels_tiled_as_whole() {
    let d = TempPath::dir("mask");
    let (h, w) = (40, 56);
    let input = d.join("frame.npy");
    let truth = spoiled_frame(&input, h, w);
    let run = |name: &str, tiles: &[&str]| {
        let (out, mask, stats) =
            (d.join(format!("{name}.npy")), d.join(format!("{name}.mask.npy")), d.join(format!("{name}.json")));
        let o = bin()
            .args(["infer", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--unwrap", "weighted"])
            .args(["--mask", mask.to_str().unwrap(), "--stats-json", stats.to_str().unwrap()])
            .args(tiles)
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", stderr_lines(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("pixels are NaN"), "{o:?}");
        let (shape, heights) = npy::read_f32(&out).unwrap();
        let mut reader = npy::NpyReader::open(&mask).unwrap();
        assert_eq!((reader.header().ty, &reader.header().shape[..], shape), (HostType::U8, &[h, w][..], vec![h, w]));
        let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stats).unwrap()).unwrap();
        (heights, reader.read_all().unwrap(), stats)
    };
    let (heights, mask, stats) = run("tiled", &["--tile", "24", "--overlap", "8", "--batch", "1"]);
    for (i, (&m, &z)) in mask.iter().zip(&heights).enumerate() {
        let want = match i % w {
            0..8 => 2,
            8..16 => 1,
            _ => 0,
        };
        assert_eq!(m, want, "pixel {i}: reason");
        assert_eq!(z.is_nan(), m != 0, "pixel {i}: height {z}");
        assert!(z.is_nan() || (z - truth[i]).abs() < 0.05, "pixel {i}: {z} vs {}", truth[i]);
    }
    assert_eq!(stats["invalid_pixels"], 16 * h);
    assert_eq!(
        (&stats["invalid_by_reason"]["saturated"], &stats["invalid_by_reason"]["low_modulation"]),
        (&(8 * h).into(), &(8 * h).into())
    );
    let (whole, whole_mask, _) = run("whole", &["--tile", "0"]);
    assert_eq!(mask, whole_mask, "tiled and whole masks");
    for (i, (a, b)) in heights.iter().zip(&whole).enumerate() {
        assert!(if a.is_nan() { b.is_nan() } else { (a - b).abs() <= 1e-4 }, "pixel {i}: tiled {a} vs whole {b}");
    }
}

#[test]
fn infer_with_calibrated_phase_steps() {
    let d = TempPath::dir("steps");
    let (h, w) = (24, 32);
    let truth = seed_heights(h, w);
    let steps = [0.0, 95.0, 177.0, 274.0];
    let psi = psi_gpu::psi::PsiConfig {
        phase_steps: psi_gpu::psi::PhaseSteps::from_degrees(vec![steps.to_vec()]),
        ..Default::default()
    };
    let frame: Vec<f32> = synth::render(&truth, &psi, |_| (128.0, 100.0), || 0.0).iter().map(|&v| v as f32).collect();
    let input = d.join("frame.npy");
    write_npy(&input, HostType::F32, &[16, h, w], bytemuck::cast_slice(&frame));
    let rmse = |args: &[&str]| {
        let out = d.join("h.npy");
        let o =
            bin().args(["infer", input.to_str().unwrap(), "-o", out.to_str().unwrap()]).args(args).output().unwrap();
        assert!(o.status.success(), "{:?}", stderr_lines(&o));
        let (_, z) = npy::read_f32(&out).unwrap();
        (z.iter().zip(&truth).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / (h * w) as f64).sqrt()
    };
    let (nominal, calibrated) = (rmse(&[]), rmse(&["--phase-steps", "0,95,177,274"]));
    let per_laser =
        rmse(&["--phase-steps", "0,95,177,274;0,95,177,274;0,95,177,274;0,95,177,274", "--unwrap", "weighted"]);
    assert!(
        calibrated < 1e-4 && per_laser < 1e-4 && nominal > 100.0 * calibrated,
        "{nominal} vs {calibrated}, {per_laser}"
    );
}

#[test]
fn bad_solver_options_are_one_clear_error() {
    let d = TempPath::dir("solver-errors");
    let out = d.join("out.npy");
    let psi = fixture("psi_frame_96x128.npy");
    let f = psi.to_str().unwrap();
    let mask = d.join("m.npy");
    let m = mask.to_str().unwrap();
    let wts = fixture("unet_b8.safetensors");
    for (args, needle) in [
        (vec!["--unwrap", "spatial"], "--unwrap 'spatial'"),
        (vec!["--min-modulation", "-1"], "--min-modulation '-1'"),
        (vec!["--phase-steps", "0,90,x"], "--phase-steps '0,90,x'"),
        (vec!["--phase-steps", "0,90,180"], "3 phase steps for 4 buckets"),
        (vec!["--phase-steps", "0,90,180,270;0,90,180,270"], "2 lists of phase steps for 4 lasers"),
        (vec!["--phase-steps", "0,0,180,180"], "cannot separate offset, amplitude and phase"),
        (vec!["--saturation", "x"], "--saturation 'x'"),
        (vec!["--saturation", "300"], "up to the u8 maximum 255"),
        (vec!["--wavelengths", "5,5.5"], "nearly coincide"),
        (vec!["--mask", m, "--weights", wts.to_str().unwrap()], "--mask is the classical solver's"),
    ] {
        let mut all = vec![f];
        all.extend(args);
        expect_error(&all, &out, needle);
        assert!(!mask.exists(), "{all:?}: no mask on error");
    }
}

/// An overlap below what the model reads around a pixel is raised, and the summary says so; the
/// per-pixel solver's default overlap is 0.
#[test]
fn infer_raises_an_overlap_below_the_models_halo() {
    let d = TempPath::dir("halo");
    let f = fixture("psi_frame_96x128.npy");
    let run = |args: &[&str]| {
        let o = bin().args(["infer", f.to_str().unwrap(), "-o", d.join("h.npy").to_str().unwrap()]).args(args).output();
        let o = o.unwrap();
        assert!(o.status.success(), "{:?}", stderr_lines(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let robust = run(&["--unwrap", "robust", "--tile", "64", "--overlap", "4"]);
    assert!(robust.contains("overlap 16") && robust.contains("overlap raised from 4 to 16 pixels"), "{robust}");
    let default = run(&["--tile", "64"]);
    assert!(default.contains("robust unwrap") && default.contains("overlap 16"), "the default is robust: {default}");
    let per_pixel = run(&["--tile", "64", "--unwrap", "per-pixel"]);
    assert!(per_pixel.contains("4 tiles of 64x64, overlap 0") && !per_pixel.contains("raised"), "{per_pixel}");
}

/// `--conv winograd` matches PyTorch as the direct kernel does and says so in the statistics;
/// `--conv auto` caches its choices under `$PSI_GPU_CACHE_DIR`; `bench` names the kernel; a bad
/// value, or `--conv` without a U-Net, is one clear error.
#[test]
fn infer_and_bench_with_the_winograd_kernel() {
    let d = TempPath::dir("conv");
    let (out, stats, cache) = (d.join("h.npy"), d.join("stats.json"), d.join("cache"));
    let weights = fixture("unet_b8.safetensors");
    let (_, want) = npy::read_f32(&fixture("out_b8_100x75.npy")).unwrap();
    for (conv, name) in [("winograd", "conv winograd"), ("auto", "conv auto: winograd in ")] {
        let o = bin()
            .args(["infer", fixture("frame_100x75.npy").to_str().unwrap(), "--tile", "0", "--precision", "f32"])
            .args(["--weights", weights.to_str().unwrap(), "--conv", conv, "-o", out.to_str().unwrap()])
            .args(["--stats-json", stats.to_str().unwrap()])
            .env("PSI_GPU_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", stderr_lines(&o));
        let (_, got) = npy::read_f32(&out).unwrap();
        let e = crate::common::rel_l2(&got, &want);
        assert!(e < 1e-4, "--conv {conv}: relative L2 {e:e}");
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
        assert!(s["model"].as_str().unwrap().contains(name), "{s}");
        assert_eq!(cache.join("conv_choices.json").exists(), conv == "auto");
    }
    let o = bin()
        .args(["bench", "--height", "64", "--width", "64", "--tile", "0", "--precision", "f32", "--conv", "winograd"])
        .args(["--weights", weights.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("model unet (base 8, conv winograd)"), "{text}");

    let frame = fixture("frame_64x64.npy");
    let w = weights.to_str().unwrap();
    expect_error(&[frame.to_str().unwrap(), "--weights", w, "--conv", "fast"], &out.with_extension("x.npy"), "--conv");
    let classical = d.join("c.npy");
    expect_error(&[frame.to_str().unwrap(), "--conv", "winograd"], &classical, "--conv applies to the U-Net only");
}
