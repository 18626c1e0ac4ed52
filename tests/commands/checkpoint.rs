//! Checkpoints (safetensors with PyTorch names, BatchNorm counters and optional optimizer state)
//! and the fresh He-initialised U-Net state. No GPU needed.

use crate::common::{TempPath, fixture};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use psi_gpu::error::Error;
use psi_gpu::io::checkpoint::{self, Checkpoint, OptimizerState};
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::unet::init::{he_init, to_weights};
use psi_gpu::nn::unet::{UNet, UNetConfig};

/// A fresh, empty directory for one test.
fn entry(name: &str, shape: &[usize], f: impl Fn(usize) -> f32) -> (String, Vec<usize>, Vec<f32>) {
    let n = shape.iter().product();
    (name.to_string(), shape.to_vec(), (0..n).map(f).collect())
}

fn small_checkpoint(optimizer: bool) -> Checkpoint {
    let tensors = vec![
        entry("inc.double_conv.0.weight", &[2, 1, 3, 3], |i| i as f32 * 0.25 - 1.0),
        entry("inc.double_conv.1.weight", &[2], |i| 1.0 + i as f32),
        entry("inc.double_conv.1.bias", &[2], |i| -(i as f32)),
        entry("inc.double_conv.1.running_mean", &[2], |i| 0.1 * i as f32),
        entry("inc.double_conv.1.running_var", &[2], |i| 1.5 + i as f32),
        entry("up1.conv.double_conv.4.running_var", &[3], |_| 2.0),
        entry("outc.conv.weight", &[1, 2, 1, 1], |i| f32::from_bits(0x3f80_0001 + i as u32)),
        entry("outc.conv.bias", &[1], |_| -1e-30),
        entry("scalar", &[], |_| 7.5),
    ];
    let metadata: BTreeMap<String, String> = [("input_scale", "1/255"), ("base", "8"), ("lr", "0.001")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let optimizer = optimizer.then(|| OptimizerState {
        step: 12345,
        m: (0..40).map(|i| (i as f32).sin() * 1e-3).collect(),
        v: (0..40).map(|i| (i as f32).cos().powi(2) * 1e-6).collect(),
        loss_scale: 65536.0 / 3.0,
        growth_tracker: 17,
    });
    Checkpoint { tensors, num_batches_tracked: 4242, metadata, optimizer }
}

fn assert_same_tensors(w: &Weights, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let names: BTreeSet<&str> = w.tensors.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = tensors.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, want);
    for (name, shape, data) in tensors {
        let t = w.get(name, shape).unwrap();
        let (a, b): (Vec<u32>, Vec<u32>) =
            (t.data.iter().map(|x| x.to_bits()).collect(), data.iter().map(|x| x.to_bits()).collect());
        assert_eq!(a, b, "{name}: values differ");
    }
}

#[test]
fn round_trip_with_optimizer() {
    let dir = TempPath::dir("round_trip_with_optimizer");
    let path = dir.join("ck.safetensors");
    let ck = small_checkpoint(true);
    checkpoint::save(&path, &ck).unwrap();
    let (w, opt, nbt) = checkpoint::load(&path).unwrap();
    assert_same_tensors(&w, &ck.tensors);
    assert_eq!(nbt, 4242);
    let other: BTreeSet<&str> = w.other.keys().map(String::as_str).collect();
    assert_eq!(
        other,
        BTreeSet::from(["inc.double_conv.1.num_batches_tracked", "up1.conv.double_conv.4.num_batches_tracked"])
    );
    let meta: BTreeMap<String, String> = w.metadata.clone().into_iter().collect();
    assert_eq!(meta, ck.metadata, "optim.* keys are taken out of the model metadata");
    let opt = opt.expect("optimizer state");
    let want = ck.optimizer.as_ref().unwrap();
    assert_eq!(opt.step, want.step);
    assert_eq!(opt.growth_tracker, want.growth_tracker);
    assert_eq!(opt.loss_scale.to_bits(), want.loss_scale.to_bits());
    assert_eq!(
        opt.m.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.m.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        opt.v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );

    // The raw file: the optimizer under its reserved names, the counters as I64 scalars.
    let raw = Weights::load(&path).unwrap();
    assert_eq!(raw.tensors["__optim__.m"].shape, vec![40]);
    assert_eq!(raw.tensors["__optim__.v"].shape, vec![40]);
    assert_eq!(raw.metadata["optim.step"], "12345");
    assert_eq!(raw.metadata["optim.growth_tracker"], "17");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("up1.conv.double_conv.4.num_batches_tracked").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64);
    assert!(t.shape().is_empty());
    assert_eq!(t.data(), 4242i64.to_le_bytes());
    assert_eq!(st.tensor("outc.conv.weight").unwrap().dtype(), safetensors::Dtype::F32);

    // Nothing else left in the directory (the temporary file was renamed).
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, vec![std::ffi::OsString::from("ck.safetensors")]);
}

#[test]
fn round_trip_without_optimizer() {
    let dir = TempPath::dir("round_trip_without_optimizer");
    let path = dir.join("model.safetensors");
    let mut ck = small_checkpoint(false);
    ck.metadata.clear();
    ck.num_batches_tracked = 0;
    checkpoint::save(&path, &ck).unwrap();
    let (w, opt, nbt) = checkpoint::load(&path).unwrap();
    assert_same_tensors(&w, &ck.tensors);
    assert!(opt.is_none());
    assert_eq!(nbt, 0);
    assert!(w.metadata.is_empty());
    let raw = Weights::load(&path).unwrap();
    assert!(raw.tensors.keys().all(|n| !n.starts_with("__optim__")));
    assert!(raw.metadata.is_empty());
}

#[test]
fn overwrites_an_existing_file() {
    let dir = TempPath::dir("overwrites_an_existing_file");
    let path = dir.join("ck.safetensors");
    std::fs::write(&path, b"old contents").unwrap();
    let ck = small_checkpoint(true);
    checkpoint::save(&path, &ck).unwrap();
    let (w, _, _) = checkpoint::load(&path).unwrap();
    assert_same_tensors(&w, &ck.tensors);
}

#[test]
fn num_batches_tracked_entries_come_from_the_count() {
    let dir = TempPath::dir("num_batches_tracked_entries_come_from_the_count");
    let path = dir.join("ck.safetensors");
    let mut ck = small_checkpoint(false);
    ck.tensors.push(entry("inc.double_conv.1.num_batches_tracked", &[], |_| 3.0));
    checkpoint::save(&path, &ck).unwrap();
    let (w, _, nbt) = checkpoint::load(&path).unwrap();
    assert_eq!(nbt, 4242);
    assert!(!w.tensors.contains_key("inc.double_conv.1.num_batches_tracked"));
    assert_eq!(w.other.get("inc.double_conv.1.num_batches_tracked"), Some(&safetensors::Dtype::I64));
}

#[test]
fn unwritable_path_is_an_io_error_naming_it() {
    let dir = TempPath::dir("unwritable_path_is_an_io_error_naming_it");
    let path = dir.join("no/such/dir/ck.safetensors");
    let e = checkpoint::save(&path, &small_checkpoint(true)).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("no/such/dir/ck.safetensors"), "{e}");

    // A directory in the way: the rename fails, and no temporary file is left behind.
    let blocked = dir.join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("inside"), b"x").unwrap();
    let e = checkpoint::save(&blocked, &small_checkpoint(false)).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("blocked"), "{e}");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert_eq!(files, vec![std::ffi::OsString::from("blocked")]);
}

#[test]
fn bad_checkpoints_are_rejected_and_leave_the_old_file() {
    let dir = TempPath::dir("bad_checkpoints_are_rejected_and_leave_the_old_file");
    let path = dir.join("ck.safetensors");
    let good = small_checkpoint(true);
    checkpoint::save(&path, &good).unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut bad = Vec::new();
    let mut ck = good.clone();
    ck.tensors[0].2.pop();
    bad.push((ck, "shape"));
    let mut ck = good.clone();
    ck.tensors.push(ck.tensors[1].clone());
    bad.push((ck, "twice"));
    let mut ck = good.clone();
    ck.tensors.push(entry("__optim__.m", &[1], |_| 0.0));
    bad.push((ck, "reserved"));
    let mut ck = good.clone();
    ck.metadata.insert("optim.step".into(), "3".into());
    bad.push((ck, "reserved"));
    let mut ck = good.clone();
    ck.optimizer.as_mut().unwrap().v.pop();
    bad.push((ck, "moments"));
    // Non-finite values: refused by name, whatever holds them.
    let mut ck = good.clone();
    ck.tensors[3].2[1] = f32::NAN;
    bad.push((ck, "tensor 'inc.double_conv.1.running_mean' has 1 non-finite of 2 values"));
    let mut ck = good.clone();
    ck.optimizer.as_mut().unwrap().m[7] = f32::INFINITY;
    bad.push((ck, "tensor '__optim__.m' has 1 non-finite of 40 values (the first, inf, at index 7)"));
    let mut ck = good.clone();
    ck.optimizer.as_mut().unwrap().v[0] = f32::NEG_INFINITY;
    bad.push((ck, "tensor '__optim__.v'"));
    let mut ck = good.clone();
    ck.optimizer.as_mut().unwrap().loss_scale = f32::NAN;
    bad.push((ck, "the loss scale is NaN"));
    for (ck, what) in bad {
        let e = checkpoint::save(&path, &ck).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn load_errors_are_clear() {
    let dir = TempPath::dir("load_errors_are_clear");
    let e = checkpoint::load(&dir.join("missing.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let e = checkpoint::load(&garbage).unwrap_err();
    assert!(e.to_string().contains("not a valid safetensors file"), "{e}");

    // Optimizer state with a moment missing: build the file by hand.
    let m = 1.0f32.to_le_bytes();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &m).unwrap();
    let meta = std::collections::HashMap::from([
        ("optim.step".to_string(), "1".to_string()),
        ("optim.loss_scale".to_string(), "1".to_string()),
        ("optim.growth_tracker".to_string(), "0".to_string()),
    ]);
    let bytes = safetensors::serialize([("__optim__.m", view)], Some(meta)).unwrap();
    let partial = dir.join("partial.safetensors");
    std::fs::write(&partial, bytes).unwrap();
    let e = checkpoint::load(&partial).unwrap_err();
    assert!(e.to_string().contains("__optim__.v"), "{e}");
}

#[test]
fn loads_a_pytorch_state_dict() {
    let (w, opt, nbt) = checkpoint::load(&fixture("unet_b8.safetensors")).unwrap();
    assert!(opt.is_none());
    assert_eq!(nbt, 1000);
    assert_eq!(UNet::config(&w).unwrap(), UNetConfig { n_channels: 16, n_classes: 1, base: 8 });
}

#[test]
fn he_init_matches_the_pytorch_state_dict() {
    let fx = Weights::load(&fixture("unet_b8.safetensors")).unwrap();
    let state = he_init(16, 1, 8, 1);
    let got: BTreeMap<&str, &[usize]> = state.iter().map(|(n, s, _)| (n.as_str(), s.as_slice())).collect();
    assert_eq!(got.len(), state.len(), "duplicate names");
    let want: BTreeMap<&str, &[usize]> = fx.tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice())).collect();
    assert_eq!(got, want);
    for (name, shape, data) in &state {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
    }

    // state_dict order: modules in definition order, then the layers inside each.
    let names: Vec<&str> = state.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names[..10],
        [
            "inc.double_conv.0.weight",
            "inc.double_conv.1.weight",
            "inc.double_conv.1.bias",
            "inc.double_conv.1.running_mean",
            "inc.double_conv.1.running_var",
            "inc.double_conv.3.weight",
            "inc.double_conv.4.weight",
            "inc.double_conv.4.bias",
            "inc.double_conv.4.running_mean",
            "inc.double_conv.4.running_var",
        ]
    );
    assert_eq!(names[names.len() - 2..], ["outc.conv.weight", "outc.conv.bias"]);
    let modules = ["inc", "down1", "down2", "down3", "down4", "up1", "up2", "up3", "up4", "outc"];
    let order: Vec<usize> =
        names.iter().map(|n| modules.iter().position(|m| n.split('.').next() == Some(m)).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{names:?}");

    // The integer buffers: one per BatchNorm, as in the PyTorch file.
    let want_other: BTreeSet<&str> = fx.other.keys().map(String::as_str).collect();
    let w = to_weights(&state, [("base", "8")]);
    let got_other: BTreeSet<&str> = w.other.keys().map(String::as_str).collect();
    assert_eq!(got_other, want_other);
    assert!(want_other.iter().all(|n| n.ends_with(".num_batches_tracked")));
    assert_eq!(w.path, PathBuf::from("<memory>"));
    assert_eq!(w.metadata["base"], "8");
    assert_eq!(UNet::config(&w).unwrap(), UNetConfig { n_channels: 16, n_classes: 1, base: 8 });
}

#[test]
fn he_init_values() {
    let state = he_init(16, 1, 8, 7);
    let get = |name: &str| &state.iter().find(|(n, _, _)| n == name).unwrap().2;
    for (name, fan_in) in [
        ("inc.double_conv.0.weight", 16 * 9),
        ("down4.maxpool_conv.1.double_conv.0.weight", 64 * 9),
        ("up1.conv.double_conv.0.weight", 128 * 9),
        ("outc.conv.weight", 8),
    ] {
        let d = get(name);
        let n = d.len() as f64;
        let mean = d.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (d.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (2.0 / fan_in as f64).sqrt();
        if d.len() >= 1000 {
            assert!((std / want - 1.0).abs() < 0.1, "{name}: std {std}, want {want}");
            assert!(mean.abs() < 0.1 * want, "{name}: mean {mean}");
        }
        assert!(d.iter().all(|x| x.is_finite() && x.abs() < 10.0 * want as f32), "{name}");
    }
    for (name, _, data) in &state {
        let want = if name.ends_with(".running_var") || name.ends_with("1.weight") || name.ends_with("4.weight") {
            Some(1.0)
        } else if name.ends_with(".bias") || name.ends_with(".running_mean") {
            Some(0.0)
        } else {
            None
        };
        if let Some(v) = want {
            assert!(data.iter().all(|&x| x == v), "{name}");
        }
    }
    // Deterministic in the seed.
    assert_eq!(he_init(16, 1, 8, 7), state);
    assert_ne!(he_init(16, 1, 8, 8)[0].2, state[0].2);
    // Degenerate sizes do not panic.
    assert!(he_init(0, 0, 0, 0).iter().all(|(_, s, d)| s.iter().product::<usize>() == d.len()));
}

#[test]
fn saved_he_init_loads_as_a_unet() {
    let dir = TempPath::dir("saved_he_init_loads_as_a_unet");
    let path = dir.join("init.safetensors");
    let state = he_init(3, 2, 8, 42);
    let ck = Checkpoint {
        tensors: state.clone(),
        num_batches_tracked: 0,
        metadata: BTreeMap::from([("input_scale".to_string(), "1/255".to_string())]),
        optimizer: None,
    };
    checkpoint::save(&path, &ck).unwrap();
    let (w, opt, nbt) = checkpoint::load(&path).unwrap();
    assert!(opt.is_none());
    assert_eq!(nbt, 0);
    assert_eq!(UNet::config(&w).unwrap(), UNetConfig { n_channels: 3, n_classes: 2, base: 8 });
    assert_eq!(w.metadata_f32("input_scale").unwrap(), Some(1.0 / 255.0));
    assert_same_tensors(&w, &state);
    let mem = to_weights(&state, &ck.metadata);
    assert_eq!(UNet::config(&mem).unwrap(), UNet::config(&w).unwrap());
    assert_eq!(mem.other, w.other);
}

#[test]
fn to_weights_keeps_mismatched_data_visible() {
    let mut state = he_init(16, 1, 8, 0);
    state[0].2.pop();
    let w = to_weights(&state, BTreeMap::<String, String>::new());
    let e = w.get("inc.double_conv.0.weight", &[8, 16, 3, 3]).unwrap_err();
    assert!(e.to_string().contains("has shape"), "{e}");
}

#[test]
fn non_finite_optimizer_state_is_refused_on_load() {
    let dir = TempPath::dir("non_finite_optimizer_on_load");
    // Files written by the safetensors crate directly, past the checks of checkpoint::save.
    let write = |file: &str, v: f32, scale: &str| {
        let (m, vv) = (1.0f32.to_le_bytes(), v.to_le_bytes());
        let view = |b| safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], b).unwrap();
        let meta = std::collections::HashMap::from([
            ("optim.step".to_string(), "1".to_string()),
            ("optim.loss_scale".to_string(), scale.to_string()),
            ("optim.growth_tracker".to_string(), "0".to_string()),
        ]);
        let bytes = safetensors::serialize([("__optim__.m", view(&m)), ("__optim__.v", view(&vv))], Some(meta));
        let path = dir.join(file);
        std::fs::write(&path, bytes.unwrap()).unwrap();
        path
    };
    assert!(checkpoint::load(&write("ok.safetensors", 0.5, "1")).unwrap().1.is_some());
    let e = checkpoint::load(&write("nan.safetensors", f32::NAN, "1")).unwrap_err().to_string();
    assert!(e.contains("tensor '__optim__.v' has 1 non-finite of 1 values"), "{e}");
    for scale in ["NaN", "inf", "0", "-2"] {
        let e = checkpoint::load(&write("scale.safetensors", 0.5, scale)).unwrap_err().to_string();
        assert!(e.contains("'optim.loss_scale'") && e.contains("finite and > 0"), "{scale}: {e}");
    }
}
