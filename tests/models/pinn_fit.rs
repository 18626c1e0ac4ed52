//! `pinn fit` (`psi_gpu::psi::pinn_fit`): a Scaled-cPIKAN fitted to the physics of a frame region,
//! starting from the classical heights.

use std::path::PathBuf;

use crate::common::gpus;
use psi_gpu::HostType;
use psi_gpu::io::npy::NpyWriter;
use psi_gpu::nn::cpikan::Cpikan;
use psi_gpu::nn::cpikan::fit::{Init, PinnFitOptions, pinn_fit, read_region, save_model};
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::buckets::{SynthConfig, buckets, quantize_u8};
use psi_gpu::psi::surface::seed_heights;

/// A unique path in the temp directory, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("psi-gpu-pinn-fit-{}-{name}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const FH: usize = 64;
const FW: usize = 64;

/// The seed surface on a 64 x 64 frame, its u8 buckets (noise σ = 2) written to `path`.
fn write_frame(path: &std::path::Path) -> Vec<f32> {
    let truth = seed_heights(FH, FW);
    let cfg = SynthConfig { noise: 2.0, seed: 7, ..Default::default() };
    let frame = quantize_u8(&buckets(&truth, FH, FW, &cfg));
    let mut w = NpyWriter::new(path, HostType::U8, &[16, FH, FW]).unwrap();
    w.write(&frame).unwrap();
    w.finish().unwrap();
    truth
}

fn crop(v: &[f32], [y, x, h, w]: [usize; 4]) -> Vec<f32> {
    (0..h).flat_map(|r| v[(y + r) * FW + x..(y + r) * FW + x + w].to_vec()).collect()
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

#[test]
fn read_region_crops_rows_and_columns() {
    let f = TempPath::new("crop.npy");
    write_frame(&f.0);
    let (_, all) = read_region(&f.0, [0, 0, FH, FW]).unwrap();
    let region = [5, 9, 7, 11];
    let (c, part) = read_region(&f.0, region).unwrap();
    assert_eq!(c, 16);
    for ch in 0..16 {
        let want = crop(&all[ch * FH * FW..(ch + 1) * FH * FW], region);
        assert_eq!(&part[ch * 77..(ch + 1) * 77], want.as_slice(), "channel {ch}");
    }
    assert!(read_region(&f.0, [60, 0, 8, 8]).is_err());
}

#[test]
fn pinn_fit_refines_a_region() {
    let gpu = &gpus()[0];
    let f = TempPath::new("frame.npy");
    let truth = write_frame(&f.0);
    // A 24 x 24 region (the bump's flank, away from the cone's tip) and a [2, 16, 16, 1] network:
    // a 48 x 48 region with [2, 32, 32, 1] costs ~0.3 s per evaluation on llvmpipe.
    let rs = 24;
    let region = [20, 20, rs, rs];
    let opts = PinnFitOptions {
        region,
        smoothness: 1e-3,
        layers: vec![2, 16, 16, 1],
        supervised_steps: 150,
        adam_steps: 20,
        lbfgs_iters: 250,
        ..Default::default()
    };
    let r = pinn_fit(gpu, &f.0, &opts).unwrap();
    let want = crop(&truth, region);
    let (rmse0, rmse1) = (rmse(&r.initial_heights, &want), rmse(&r.heights, &want));
    eprintln!(
        "pinn fit on {}: RMSE classical {rmse0:.4} -> fitted {rmse1:.4} µm; supervised MSE {:.3e}; physics loss \
         {:.4} -> {:.4} (after Adam {:.4}; h0 data loss {:.4}); L-BFGS {} it / {} ev; {:.1} s",
        gpu.describe(),
        r.supervised_mse,
        r.initial_loss,
        r.final_loss,
        r.loss_after_adam,
        r.h0_data_loss,
        r.lbfgs_iterations,
        r.lbfgs_evaluations,
        r.wall_s
    );
    let np = rs * rs;
    assert_eq!(r.heights.len(), np);
    assert!(rmse1 <= 1.5 * rmse0, "fitted RMSE {rmse1} vs classical {rmse0}");
    assert!(r.final_loss < r.initial_loss, "physics loss {} -> {}", r.initial_loss, r.final_loss);

    // The saved model reproduces the heights.
    let m = TempPath::new("model.safetensors");
    save_model(&m.0, &r.weights).unwrap();
    let model = Cpikan::load(gpu, &m.0).unwrap();
    let coords: Vec<f32> = (0..np).flat_map(|p| [(region[1] + p % rs) as f32, (region[0] + p / rs) as f32]).collect();
    let u = model.forward(gpu, &coords).unwrap();
    let worst = u.iter().zip(&r.heights).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "reloaded model differs by {worst}");
}

#[test]
fn pinn_fit_rejects_bad_inputs() {
    let gpu = &gpus()[0];
    let f = TempPath::new("bad.npy");
    write_frame(&f.0);
    let small = PinnFitOptions { supervised_steps: 0, adam_steps: 0, lbfgs_iters: 0, ..Default::default() };
    let outside = PinnFitOptions { region: [40, 40, 32, 32], ..small.clone() };
    assert!(pinn_fit(gpu, &f.0, &outside).is_err());
    let wrong_init = PinnFitOptions { region: [0, 0, 8, 8], init: Init::Heights(vec![0.0; 10]), ..small.clone() };
    assert!(pinn_fit(gpu, &f.0, &wrong_init).is_err());
    let wrong_lasers = PinnFitOptions { region: [0, 0, 8, 8], psi: PsiConfig::with(vec![5.0, 5.5], 4), ..small };
    assert!(pinn_fit(gpu, &f.0, &wrong_lasers).is_err());
}
