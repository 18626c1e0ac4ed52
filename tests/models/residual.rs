//! The residual model (robust classical height + bounded U-Net correction) against PyTorch
//! (tests/fixtures/make_residual_fixtures.py, which takes our solver's classical solution as its
//! input), on every adapter and precision: the correction within 1e-4 relative L2 in f32 and
//! 3e-2 in f16, NaN pixels where the solver leaves them; tiled equals whole with the classical
//! part and the NaN positions exact and the correction within 5e-3; a file whose U-Net does
//! not read buckets + features is refused in one line.

use crate::common::{fixture, gpus, rel_l2, targets};
use crate::tiling::{run, seed_frame, temp_npy};
use psi_gpu::HostType;
use psi_gpu::commands::infer::{ClassicalOptions, classical_model, residual_model};
use psi_gpu::gpu::{Gpu, Precision};
use psi_gpu::io::npy;
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::{Model, Reach};
use psi_gpu::ops::classical::Unwrap;
use psi_gpu::psi::buckets as synth;
use psi_gpu::tiling::region::run_raw;

const SHAPE: [usize; 3] = [16, 64, 80];

fn model(gpu: &Gpu, p: Precision) -> Model {
    let weights = Weights::load(&fixture("residual_b8.safetensors")).unwrap();
    residual_model(gpu, &weights, HostType::U8, Some(p), &ClassicalOptions::default()).unwrap()
}

/// The fixture's model with its 3x3 convolutions at PyTorch's default scale, as the U-Net's
/// tiling test has them (`tiling::unet_tiled_matches_whole_frame` says why).
fn default_scale_model(gpu: &Gpu) -> Model {
    let mut weights = Weights::load(&fixture("residual_b8.safetensors")).unwrap();
    for (name, t) in weights.tensors.iter_mut() {
        if name.ends_with(".weight") && t.shape.len() == 4 && t.shape[2] == 3 {
            t.data.iter_mut().for_each(|v| *v /= 6f32.sqrt());
        }
    }
    residual_model(gpu, &weights, HostType::U8, Some(Precision::F32), &ClassicalOptions::default()).unwrap()
}

/// The robust classical solver with its contrast channel, as the residual model runs it.
fn robust(gpu: &Gpu) -> Model {
    let mut o = ClassicalOptions { quality: true, ..ClassicalOptions::default() };
    o.config.unwrap = Unwrap::Robust;
    classical_model(gpu, HostType::U8, &o).unwrap()
}

fn frame() -> Vec<u8> {
    npy::NpyReader::open(&fixture("residual_frame_64x80.npy")).unwrap().read_all().unwrap()
}

/// `values` where `keep` holds.
fn kept(values: &[f32], keep: &[bool]) -> Vec<f32> {
    values.iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| *v).collect()
}

#[test]
fn residual_matches_pytorch() {
    let (_, want_cls) = npy::read_f32(&fixture("residual_classical_64x80.npy")).unwrap();
    let (_, want) = npy::read_f32(&fixture("residual_correction_64x80.npy")).unwrap();
    let hw = SHAPE[1] * SHAPE[2];
    let valid: Vec<bool> = want_cls[..hw].iter().map(|v| v.is_finite()).collect();
    assert_eq!(valid.iter().filter(|v| !**v).count(), 80, "the fixture's dark patch");
    let bytes = frame();
    for (gpu, p) in targets() {
        // The classical solution is still the one the reference was made from.
        let cls = run_raw(gpu, &robust(gpu), HostType::U8, SHAPE, &bytes, None)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        assert_eq!(cls[..hw].iter().map(|v| v.is_finite()).collect::<Vec<_>>(), valid);
        let e = rel_l2(&kept(&cls, &valid), &kept(&want_cls, &valid));
        assert!(e < 1e-7, "{} classical heights moved from the fixture's: relative L2 {e:e}", gpu.describe());

        let m = model(gpu, p);
        assert_eq!(m.reach(), Reach::Local { halo: 8 + 64 });
        let out = run_raw(gpu, &m, HostType::U8, SHAPE, &bytes, None).unwrap().iter().copied().collect::<Vec<f32>>();
        assert_eq!(out.iter().map(|v| v.is_finite()).collect::<Vec<_>>(), valid, "{p}: NaN where the solver's");
        let corr: Vec<f32> = out.iter().zip(&cls).map(|(h, c)| h - c).collect();
        let (got, want) = (kept(&corr, &valid), kept(&want, &valid));
        let e = rel_l2(&got, &want);
        let limit = if p == Precision::F32 { 1e-4 } else { 3e-2 };
        eprintln!("{} {p} residual correction vs PyTorch: relative L2 {e:.2e}", gpu.describe());
        assert!(e < limit, "{} {p}: correction relative L2 {e:e} over {limit:e}", gpu.describe());
        assert!(got.iter().all(|v| v.abs() <= 0.1 + 1e-5), "{p}: the correction exceeds its bound");
    }
}

/// Tiles are cut with the classical halo plus 64 pixels: the classical part and the NaN pixels are
/// the whole frame's exactly. The correction differs where the U-Net saw a tile edge 64 pixels
/// away: cut, not feathered, that is 2e-3 of it here (the feathered U-Net's 1e-3 at 128/32), about
/// 1e-4 µm — far under a fringe and under the camera noise's 0.05 µm at σ = 30.
#[test]
fn residual_tiled_matches_whole_frame() {
    let (h, w) = (200, 230);
    let (_, mut f) = seed_frame(h, w, 10.0);
    for c in 0..16 {
        for y in 90..100 {
            f[(c * h + y) * w + 100..(c * h + y) * w + 112].fill(128.0);
        }
    }
    let file = temp_npy("residual-u8", HostType::U8, &[16, h, w], &synth::quantize_u8(&f));
    let gpu = &gpus()[0];
    let (m, cls) = (default_scale_model(gpu), robust(gpu));
    let scale = 1.0 / 255.0;
    let c_whole = run(gpu, &cls, &file, 0, 0, None, scale);
    let whole = run(gpu, &m, &file, 0, 0, None, scale);
    let correction = |out: &[f32]| -> Vec<f32> {
        let d = out.iter().zip(&c_whole).map(|(h, c)| h - c);
        d.filter(|v| v.is_finite()).collect()
    };
    let nan = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
    assert!(nan(&whole).iter().filter(|b| **b).count() >= 120, "the dark patch is NaN");
    assert_eq!(nan(&whole), nan(&c_whole[..h * w]));
    for (tile, batch) in [(32, Some(2)), (48, None)] {
        let tiled = run(gpu, &m, &file, tile, 0, batch, scale);
        assert_eq!(nan(&tiled), nan(&whole), "tile {tile}: NaN positions");
        let e = rel_l2(&correction(&tiled), &correction(&whole));
        eprintln!("residual tiled {tile} (+144 overlap) vs whole, {h} x {w}: correction relative L2 {e:.2e}");
        let worst = tiled.iter().zip(&whole).filter(|(a, _)| a.is_finite()).map(|(a, b)| (a - b).abs());
        let worst = worst.fold(0f32, f32::max);
        eprintln!("  largest difference {worst:.2e} µm");
        assert!(e < 5e-3 && worst < 2e-3, "tile {tile}: relative L2 {e:e}, largest difference {worst} µm");
    }
}

/// A file that says residual but whose U-Net reads other than buckets + features: one line
/// naming both counts.
#[test]
fn residual_with_the_wrong_input_channels_is_refused() {
    let gpu = &gpus()[0];
    let mut weights = Weights::load(&fixture("residual_b8.safetensors")).unwrap();
    weights.metadata.insert("features".into(), "sin_height,cos_height,valid".into());
    let o = ClassicalOptions::default();
    let err = residual_model(gpu, &weights, HostType::U8, Some(Precision::F32), &o).err().unwrap().to_string();
    assert!(err.contains("19 input channels") && err.contains("reads 20") && !err.contains('\n'), "{err}");
    weights.metadata.insert("features".into(), "sin_height,cos_height,colour,valid".into());
    let err = residual_model(gpu, &weights, HostType::U8, Some(Precision::F32), &o).err().unwrap().to_string();
    assert!(err.contains("'colour' is unknown"), "{err}");
    weights.metadata.insert("features".into(), "sin_height,cos_height,contrast,valid".into());
    weights.metadata.insert("bound".into(), "0.7".into());
    let err = residual_model(gpu, &weights, HostType::U8, Some(Precision::F32), &o).err().unwrap().to_string();
    assert!(err.contains("quarter fringe"), "{err}");
}

/// The residual trainer's batch: the loss's classical heights are each image's robust classical
/// heights (the height channel picked out of the solver's height + contrast output).
#[test]
fn residual_trainer_feeds_the_robust_classical_heights() {
    use psi_gpu::commands::train::residual::{classical_config, fresh_weights, generated_frame};
    use psi_gpu::nn::residual::train::{CUTOFF, ResidualTrainer, crop_weights};
    use psi_gpu::nn::unet::train::TrainConfig;
    use psi_gpu::ops::loss::{LossKind, ResidualLoss};
    let gpu = &gpus()[0];
    let scale = 1.0 / 255.0;
    let frames: Vec<_> = (0..2).map(|i| generated_frame(40 + i, 32, 20.0)).collect();
    let weights = fresh_weights(16, 4, 0.1, 1);
    let train = TrainConfig {
        loss: LossKind::Mse,
        adam: Default::default(),
        input_scale: scale,
        precision: Precision::F32,
        loss_scaling: false,
        frozen_bn: false,
    };
    let config = classical_config(HostType::U8, scale).unwrap();
    let mut t = ResidualTrainer::new(gpu, &weights, config, [2, 32, 32], train).unwrap();
    assert_eq!(t.trainer.train.loss, LossKind::Residual(ResidualLoss { bound: 0.1, cutoff: CUTOFF }));
    let bytes: Vec<u8> = frames.iter().flat_map(|f| f.bytes.clone()).collect();
    t.set_frames(gpu, HostType::U8, &bytes).unwrap();
    let got = t.classical_heights(gpu).unwrap();
    let cls = robust(gpu);
    for (i, f) in frames.iter().enumerate() {
        let want = run_raw(gpu, &cls, HostType::U8, [16, 32, 32], &f.bytes, None).unwrap();
        let want: Vec<f32> = want.iter().copied().take(32 * 32).collect();
        let same = got[i * 1024..(i + 1) * 1024].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "image {i}: the trainer's classical heights are not the solver's");
    }
    // The loss weighs each crop by the solver's error on it: with the untrained (zero) head the
    // correction is 0, so the loss is Σ ω (hc − truth)² / P over the pixels it keeps.
    let truth: Vec<f32> = frames.iter().flat_map(|f| f.truth.clone().unwrap()).collect();
    t.trainer.set_truth(gpu, &truth).unwrap();
    t.weigh(gpu, &truth).unwrap();
    let loss = t.trainer.accumulate(gpu, 1.0).unwrap().total as f64;
    let w = crop_weights(&got, &truth, 2, CUTOFF, 1.0);
    let kept = |h: f32, t: f32| h.is_finite() && (h - t).abs() < CUTOFF;
    let want: f64 = (0..got.len())
        .filter(|&i| kept(got[i], truth[i]))
        .map(|i| w[i] as f64 * ((got[i] - truth[i]) as f64).powi(2))
        .sum::<f64>()
        / got.len() as f64;
    assert!(want > 0.1 && (loss - want).abs() < 1e-4 * want, "loss {loss}, want {want}");
}

/// `train --residual` end to end on a tiny model: 3 steps, the residual metadata in the output,
/// the validation columns in the history, and `infer --weights` runs it: finite where the robust
/// classical solver is, NaN where it is NaN, within the bound of it and not equal to it.
#[test]
fn train_residual_then_infer() {
    use psi_gpu::commands::train::residual::generated_frame;
    let d = crate::common::TempPath::dir("train-residual");
    let (w, hist) = (d.join("w.safetensors"), d.join("h.csv"));
    let bin = env!("CARGO_BIN_EXE_psi-gpu");
    let o = std::process::Command::new(bin)
        .args(["train", "--residual", "--base", "4", "--synthetic", "2", "--synthetic-size", "32", "--patch", "32"])
        .args(["--batch", "2", "--steps", "3", "--noise", "20", "--validation", "1", "--lr", "1e-2"])
        .args(["--history", hist.to_str().unwrap(), "-o", w.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("residual model RMSE") && stdout.contains("robust classical solver"), "{stdout}");
    let weights = Weights::load(&w).unwrap();
    assert_eq!(weights.metadata["psi_gpu_model"], "residual");
    assert_eq!(weights.metadata["features"], "sin_height,cos_height,contrast,valid");
    assert_eq!(weights.metadata["bound"], "0.1");
    let history = std::fs::read_to_string(&hist).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].ends_with("val_classical_invalid"), "{}", lines[0]);
    assert!(lines[1].ends_with(",,,,,,") && !lines[3].ends_with(','), "{history}");

    // A frame with a dark patch the solver leaves NaN.
    let f = (0..100).map(|s| generated_frame(9000 + s, 48, 10.0)).find(|f| f.bytes[..48 * 48].contains(&0)).unwrap();
    let frame = d.join("frame.npy");
    let mut wr = npy::NpyWriter::new(&frame, HostType::U8, &[16, 48, 48]).unwrap();
    wr.write(&f.bytes).unwrap();
    wr.finish().unwrap();
    let out = d.join("out.npy");
    let o = std::process::Command::new(bin)
        .args(["infer", frame.to_str().unwrap(), "--weights", w.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, got) = npy::read_f32(&out).unwrap();
    let gpu = &gpus()[0];
    let cls = run_raw(gpu, &robust(gpu), HostType::U8, [16, 48, 48], &f.bytes, None).unwrap();
    let cls: Vec<f32> = cls.iter().copied().take(48 * 48).collect();
    assert!(cls.iter().any(|v| v.is_nan()) && cls.iter().any(|v| v.is_finite()));
    assert_eq!(
        got.iter().map(|v| v.is_finite()).collect::<Vec<_>>(),
        cls.iter().map(|v| v.is_finite()).collect::<Vec<_>>()
    );
    let d: Vec<f32> = got.iter().zip(&cls).filter(|(a, _)| a.is_finite()).map(|(a, b)| a - b).collect();
    assert!(d.iter().all(|v| v.abs() <= 0.1 + 1e-5), "the correction exceeds its bound");
    assert!(d.iter().any(|v| *v != 0.0), "3 steps left the correction at 0");
}
