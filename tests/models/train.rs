//! One training step of the U-Net on the GPU against the same step in PyTorch
//! (tests/fixtures/make_train_step_fixture.py): BatchNorm in training mode, the physics loss with
//! smoothness 1e-4, input scale 1/255, Adam lr 1e-3, f32. Every tensor within 2e-4. And the
//! eval-mode (frozen BatchNorm) gradient fine-tuning uses, against PyTorch's
//! (tests/fixtures/make_finetune_fixture.py). Non-finite weights and negative running variances
//! are refused, and a training run whose loss goes non-finite stops without saving it.

use crate::common::{TempPath, fixture, gpus};
use psi_gpu::HostType;
use psi_gpu::commands::train::{self, LossChoice};
use psi_gpu::gpu::Precision;
use psi_gpu::io::checkpoint;
use psi_gpu::io::npy::{NpyReader, NpyWriter};
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::unet::UNet;
use psi_gpu::nn::unet::train::{TrainConfig, UNetTrainer};
use psi_gpu::ops::loss::{LossKind, PhysicsConfig};
use psi_gpu::optim::AdamConfig;

fn config(precision: Precision) -> TrainConfig {
    TrainConfig {
        loss: LossKind::Physics(PhysicsConfig { smoothness: 1e-4, ..Default::default() }),
        adam: AdamConfig { lr: 1e-3, ..Default::default() },
        input_scale: 1.0 / 255.0,
        precision,
        loss_scaling: false,
        frozen_bn: false,
    }
}

#[test]
fn one_step_matches_pytorch() {
    let init = Weights::load(&fixture("train_step_init.safetensors")).unwrap();
    let after = Weights::load(&fixture("train_step_after.safetensors")).unwrap();
    let frame = NpyReader::open(&fixture("train_step_frame.npy")).unwrap().read_all().unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("train_step_loss.json")).unwrap()).unwrap();
    // The step moves weights by ~lr: a trainer that did nothing would fail the 2e-4 bound.
    let moved = init.tensors["inc.double_conv.0.weight"]
        .data
        .iter()
        .zip(&after.tensors["inc.double_conv.0.weight"].data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 5e-4, "the fixture's step moved the first convolution by {moved}");
    for gpu in gpus() {
        let mut t = UNetTrainer::new(gpu, &init, 1, 32, 48, config(Precision::F32)).unwrap();
        t.set_frames(gpu, HostType::U8, &frame).unwrap();
        let (loss, report) = t.step(gpu, 1e-3).unwrap();
        assert!(report.applied);
        let want = expected["total"].as_f64().unwrap();
        let rel = ((loss.total as f64) - want).abs() / want;
        eprintln!("{}: loss {} (PyTorch {want}), relative {rel:.2e}", gpu.describe(), loss.total);
        assert!(rel < 1e-4, "loss {} vs {want}", loss.total);
        let mut worst = (0f32, String::new());
        let state = t.state_dict(gpu).unwrap();
        assert_eq!(state.len(), after.tensors.len(), "every floating tensor of the state_dict");
        for (name, shape, values) in state {
            let want = after.get(&name, &shape).unwrap();
            for (a, b) in values.iter().zip(&want.data) {
                let d = (a - b).abs();
                if d > worst.0 {
                    worst = (d, name.clone());
                }
            }
        }
        eprintln!("{}: largest difference after one step {:.2e} ({})", gpu.describe(), worst.0, worst.1);
        assert!(worst.0 < 2e-4, "{}: {} differs by {}", gpu.describe(), worst.1, worst.0);
    }
}

/// Fine-tuning's objective: BatchNorm in eval mode. Loss and every parameter gradient as
/// PyTorch's `model.eval()` backward; running statistics untouched; read/write of the flat
/// parameters round-trips and changes the output.
#[test]
fn eval_mode_gradients_match_pytorch() {
    let init = Weights::load(&fixture("train_step_init.safetensors")).unwrap();
    let want = Weights::load(&fixture("finetune_eval_grads.safetensors")).unwrap();
    let frame = NpyReader::open(&fixture("train_step_frame.npy")).unwrap().read_all().unwrap();
    for gpu in gpus() {
        let cfg = TrainConfig { frozen_bn: true, ..config(Precision::F32) };
        let mut t = UNetTrainer::new(gpu, &init, 1, 32, 48, cfg).unwrap();
        t.set_frames(gpu, HostType::U8, &frame).unwrap();
        t.zero_grad(gpu);
        let loss = t.accumulate(gpu, 1.0).unwrap();
        let want_loss = want.tensors["loss"].data[0] as f64;
        let rel = (loss.total as f64 - want_loss).abs() / want_loss;
        assert!(rel < 1e-5, "{}: eval-mode loss {} vs PyTorch {want_loss}", gpu.describe(), loss.total);
        let grads = t.read_grads(gpu).unwrap();
        let mut worst = (0f64, String::new());
        let mut norm = 0f64;
        for e in t.layout().entries() {
            let w = want.get(&e.name, &e.shape).unwrap();
            let g = &grads[e.offset..e.offset + e.len];
            let (num, den) = g
                .iter()
                .zip(&w.data)
                .fold((0f64, 0f64), |(n, d), (a, b)| (n + ((a - b) as f64).powi(2), d + (*b as f64).powi(2)));
            let r = (num / den.max(1e-30)).sqrt();
            norm += den;
            if r > worst.0 {
                worst = (r, e.name.clone());
            }
        }
        eprintln!(
            "{}: eval-mode loss rel {rel:.1e}, worst gradient relative L2 {:.2e} ({})",
            gpu.describe(),
            worst.0,
            worst.1
        );
        assert!(norm > 1.0, "the fixture's gradient is not trivial");
        assert!(worst.0 < 1e-3, "{}: gradient of {} off by {:.2e}", gpu.describe(), worst.1, worst.0);
        // Running statistics are not updated in eval mode.
        for (name, shape, values) in t.state_dict(gpu).unwrap() {
            if name.contains("running") {
                assert_eq!(values, init.get(&name, &shape).unwrap().data, "{name} changed in eval mode");
            }
        }
        // A subset: its gradients are the matching slices; writing it changes only those tensors.
        let sub: Vec<_> = t
            .layout()
            .entries()
            .iter()
            .filter(|e| e.name.starts_with("up4.") || e.name.starts_with("outc."))
            .cloned()
            .collect();
        assert!(sub.len() >= 6);
        let want_sub: Vec<f32> = sub.iter().flat_map(|e| grads[e.offset..e.offset + e.len].to_vec()).collect();
        assert_eq!(t.read_grad_entries(gpu, &sub).unwrap(), want_sub);
        let before = t.read_params(gpu).unwrap();
        let new_vals: Vec<f32> = (0..want_sub.len()).map(|i| i as f32 * 1e-3).collect();
        t.write_param_entries(gpu, &sub, &new_vals).unwrap();
        let after = t.read_params(gpu).unwrap();
        let mut k = 0;
        for e in t.layout().entries() {
            let (a, b) = (&after[e.offset..e.offset + e.len], &before[e.offset..e.offset + e.len]);
            if sub.iter().any(|s| s.name == e.name) {
                assert_eq!(a, &new_vals[k..k + e.len], "{} not written", e.name);
                k += e.len;
            } else {
                assert_eq!(a, b, "{} changed", e.name);
            }
        }
        assert!(t.write_param_entries(gpu, &sub, &new_vals[1..]).is_err());
        t.write_params(gpu, &before).unwrap();
        // Parameters written from the host are what the next forward uses.
        let p0 = t.read_params(gpu).unwrap();
        let out0 = t.output(gpu).unwrap();
        let p1: Vec<f32> = p0.iter().map(|v| v * 1.01).collect();
        t.write_params(gpu, &p1).unwrap();
        assert_eq!(t.read_params(gpu).unwrap(), p1);
        t.zero_grad(gpu);
        t.accumulate(gpu, 1.0).unwrap();
        assert_ne!(t.output(gpu).unwrap(), out0, "the forward ignored written parameters");
        assert!(t.write_params(gpu, &p1[1..]).is_err());
    }
}

/// f16 activations with the dynamic loss scaler: a forced overflow skips the step (weights
/// unchanged, scale halved), and the losses of applied steps track the f32 run.
#[test]
fn f16_training_skips_overflow_and_tracks_f32() {
    let init = Weights::load(&fixture("train_step_init.safetensors")).unwrap();
    let frame = NpyReader::open(&fixture("train_step_frame.npy")).unwrap().read_all().unwrap();
    for gpu in gpus().iter().filter(|g| g.f16) {
        let mut half =
            UNetTrainer::new(gpu, &init, 1, 32, 48, TrainConfig { loss_scaling: true, ..config(Precision::F16) })
                .unwrap();
        half.set_frames(gpu, HostType::U8, &frame).unwrap();
        let before = half.state_dict(gpu).unwrap();
        half.scaler_mut().set_scale(gpu, 3.0e38);
        let (_, report) = half.step(gpu, 1e-3).unwrap();
        assert!(!report.applied, "an overflowing step must be skipped");
        assert_eq!(report.next_scale, 1.5e38, "the scale halves");
        let after = half.state_dict(gpu).unwrap();
        for ((name, _, a), (_, _, b)) in before.iter().zip(&after) {
            if !name.contains("running") {
                assert_eq!(a, b, "{name} changed in a skipped step");
            }
        }
        // A scale that keeps dL/dh inside f16's range; then f16 and f32 steps side by side.
        half.scaler_mut().set_scale(gpu, 8.0);
        let mut full = UNetTrainer::new(gpu, &init, 1, 32, 48, config(Precision::F32)).unwrap();
        full.set_frames(gpu, HostType::U8, &frame).unwrap();
        for step in 0..4 {
            let (lh, rh) = half.step(gpu, 1e-3).unwrap();
            let (lf, _) = full.step(gpu, 1e-3).unwrap();
            assert!(rh.applied, "f16 step {step} skipped at scale {}", rh.scale);
            let rel = (lh.total - lf.total).abs() / lf.total;
            eprintln!("step {step}: f16 loss {} f32 loss {} (relative {rel:.1e})", lh.total, lf.total);
            assert!(rel < 2e-2, "f16 loss {} vs f32 {}", lh.total, lf.total);
        }
    }
}

#[test]
fn non_finite_weights_and_negative_running_variances_are_refused() {
    let init = Weights::load(&fixture("train_step_init.safetensors")).unwrap();
    let edit = |name: &str, i: usize, v: f32| {
        let mut w = init.clone();
        w.tensors.get_mut(name).unwrap().data[i] = v;
        w
    };
    let cases = [
        (
            edit("down2.maxpool_conv.1.double_conv.3.weight", 17, f32::NAN),
            "tensor 'down2.maxpool_conv.1.double_conv.3.weight' has 1 non-finite",
        ),
        (edit("outc.conv.bias", 0, f32::INFINITY), "tensor 'outc.conv.bias' has 1 non-finite"),
        (
            edit("up3.conv.double_conv.1.running_var", 2, -0.5),
            "tensor 'up3.conv.double_conv.1.running_var' is -0.5 in channel 2: a variance cannot be negative",
        ),
    ];
    for gpu in gpus() {
        for (w, want) in &cases {
            let e = UNet::new(gpu, w, Precision::F32).err().expect("UNet::new accepted bad weights").to_string();
            assert!(e.contains(want), "{}: {e}", gpu.describe());
            let e = UNetTrainer::new(gpu, w, 1, 32, 32, config(Precision::F32))
                .err()
                .expect("trainer accepted")
                .to_string();
            assert!(e.contains(want), "{}: trainer: {e}", gpu.describe());
        }
        // A running variance of exactly 0 is a variance (a constant channel): accepted.
        assert!(UNet::new(gpu, &edit("inc.double_conv.1.running_var", 0, 0.0), Precision::F32).is_ok());
    }
}

/// A short synthetic training run into `dir` (32 x 32 frames, base 4, a checkpoint every step).
fn short_run(dir: &TempPath, lr: f64) -> train::Options {
    train::Options {
        base: 4,
        synthetic: 2,
        synthetic_size: 32,
        steps: 4,
        batch: 2,
        patch: 0,
        lr,
        output: dir.join("w.safetensors"),
        checkpoint_every: 1,
        history: Some(dir.join("history.csv")),
        validation: 0,
        precision: Some(Precision::F32),
        ..Default::default()
    }
}

#[test]
fn training_stops_when_the_loss_goes_non_finite_and_keeps_the_last_good_checkpoint() {
    for gpu in gpus() {
        // lr 1e30: the first step's update makes the second loss infinite.
        let dir = TempPath::dir("diverge");
        let opts = short_run(&dir, 1e30);
        let e = train::run(gpu, &opts, |_, _, _, _| {}).err().expect("a diverged run succeeded").to_string();
        let ckpt = dir.join("w.ckpt.safetensors");
        assert!(e.contains("training diverged at step 2: the loss is inf"), "{}: {e}", gpu.describe());
        assert!(e.contains(&format!("the last good checkpoint {} (step 1) is kept", ckpt.display())), "{e}");
        assert!(e.contains("--lr (now 1e30)"), "{e}");
        assert!(!opts.output.exists() && !dir.join("history.csv").exists(), "{}", gpu.describe());
        let (w, optim, _) = checkpoint::load(&ckpt).expect("the kept checkpoint loads (every value finite)");
        assert_eq!(w.metadata["steps"], "1");
        assert!(optim.is_some());
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 1, "{}: only the checkpoint is left", gpu.describe());

        // NaN in a training frame: the first loss is NaN, nothing is written.
        let dir = TempPath::dir("nan-frames");
        let frame = dir.join("frame.npy");
        let mut values: Vec<f32> = (0..16 * 32 * 32).map(|i| 100.0 + (i % 97) as f32).collect();
        values[5000] = f32::NAN;
        let mut wr = NpyWriter::new(&frame, HostType::F32, &[16, 32, 32]).unwrap();
        wr.write(bytemuck::cast_slice(&values)).unwrap();
        wr.finish().unwrap();
        let opts = train::Options { frames: vec![frame], batch: 1, loss: LossChoice::Physics, ..short_run(&dir, 1e-3) };
        let e = train::run(gpu, &opts, |_, _, _, _| {}).err().expect("NaN frames trained").to_string();
        assert!(e.contains("training diverged at step 1: the loss is NaN") && e.contains("NaN/Inf"), "{e}");
        assert!(!e.contains("checkpoint"), "no checkpoint was written, none is named: {e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the frame is left");
    }
}

#[test]
fn train_cli_exits_non_zero_with_one_line_when_the_loss_diverges() {
    let dir = TempPath::dir("diverge-cli");
    let out = dir.join("w.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
        .args(["train", "--base", "4", "--synthetic", "2", "--synthetic-size", "32", "--steps", "3", "--batch", "2"])
        .args(["--patch", "0", "--lr", "1e30", "--validation", "0", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: training diverged at step 2"), "{stderr}");
    assert!(!out.exists());
}
