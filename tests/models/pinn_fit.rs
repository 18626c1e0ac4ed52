//! `pinn fit` (`psi_gpu::nn::cpikan::fit`): a Scaled-cPIKAN fitted to the physics of a region of
//! a synthetic frame (the seed surface, u8 buckets with noise σ = 2), starting from the classical
//! heights. One fit, shared by the tests of what each phase achieves; small problems for the
//! input checks and the loss itself.

use std::path::Path;
use std::sync::OnceLock;

use crate::common::{TempPath, gpus};
use psi_gpu::HostType;
use psi_gpu::io::npy::NpyWriter;
use psi_gpu::nn::cpikan::Cpikan;
use psi_gpu::nn::cpikan::fit::{Init, PinnFitOptions, PinnFitReport, pinn_fit, read_region, save_model};
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::buckets::{SynthConfig, buckets, quantize_u8};
use psi_gpu::psi::surface::seed_heights;

const FH: usize = 64;
const FW: usize = 64;
/// The frame's noise: Gaussian σ = 2 counts, then rounding to integers (variance 1/12).
const NOISE_VARIANCE: f64 = 4.0 + 1.0 / 12.0;

/// The seed surface on a 64 x 64 frame, its u8 buckets (noise σ = 2) written to `path`.
fn write_frame(path: &Path) -> Vec<f32> {
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

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64
}

/// The fit every test below reads, with the true heights on its region.
struct Fitted {
    opts: PinnFitOptions,
    truth: Vec<f32>,
    report: PinnFitReport,
}

/// One fit per test process: a 24 x 24 region (the bump's flank, away from the cone's tip) and a
/// [2, 16, 16, 1] network (a 48 x 48 region with [2, 32, 32, 1] costs ~0.3 s per evaluation on
/// llvmpipe).
fn fitted() -> &'static Fitted {
    static FIT: OnceLock<Fitted> = OnceLock::new();
    FIT.get_or_init(|| {
        let gpu = &gpus()[0];
        let f = TempPath::new("pinn-fit-frame.npy");
        let truth = write_frame(&f);
        let opts = PinnFitOptions {
            region: [20, 20, 24, 24],
            smoothness: 1e-3,
            layers: vec![2, 16, 16, 1],
            supervised_steps: 150,
            adam_steps: 20,
            lbfgs_iters: 250,
            ..Default::default()
        };
        let r = pinn_fit(gpu, &f, &opts).unwrap();
        eprintln!(
            "pinn fit on {}: height MSE vs truth classical {:.3e} -> fitted {:.3e} µm²; supervised MSE {:.3e} \
             (h0 variance {:.3e}); physics loss {:.4} -> {:.4} (after Adam {:.4}; h0 data loss {:.4}); \
             L-BFGS {} it / {} ev; {:.1} s",
            gpu.describe(),
            mse(&r.initial_heights, &crop(&truth, opts.region)),
            mse(&r.heights, &crop(&truth, opts.region)),
            r.supervised_mse,
            variance(&r.initial_heights),
            r.initial_loss,
            r.final_loss,
            r.loss_after_adam,
            r.h0_data_loss,
            r.lbfgs_iterations,
            r.lbfgs_evaluations,
            r.wall_s
        );
        Fitted { truth: crop(&truth, opts.region), opts, report: r }
    })
}

fn variance(v: &[f32]) -> f64 {
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64
}

#[test]
fn read_region_crops_rows_and_columns() {
    let f = TempPath::new("crop.npy");
    write_frame(&f);
    let (_, all) = read_region(&f, [0, 0, FH, FW]).unwrap();
    let region = [5, 9, 7, 11];
    let (c, part) = read_region(&f, region).unwrap();
    assert_eq!(c, 16);
    for ch in 0..16 {
        let want = crop(&all[ch * FH * FW..(ch + 1) * FH * FW], region);
        assert_eq!(&part[ch * 77..(ch + 1) * 77], want.as_slice(), "channel {ch}");
    }
    assert!(read_region(&f, [60, 0, 8, 8]).is_err());
}

#[test]
fn supervised_phase_fits_the_initial_heights() {
    // The network starts at the mean of h0 (its MSE to h0 is then about h0's variance): the
    // supervised Adam steps must explain all but 0.1 % of h0's variation.
    let Fitted { report: r, .. } = fitted();
    let var = variance(&r.initial_heights);
    assert!((r.supervised_mse as f64) < 1e-3 * var, "supervised MSE {} vs the variance of h0 {var}", r.supervised_mse);
}

#[test]
fn physics_phases_lower_the_physics_loss() {
    let Fitted { report: r, .. } = fitted();
    assert!(r.loss_after_adam < 0.8 * r.initial_loss, "Adam: physics loss {} -> {}", r.initial_loss, r.loss_after_adam);
    assert!(r.final_loss < 0.1 * r.loss_after_adam, "L-BFGS: physics loss {} -> {}", r.loss_after_adam, r.final_loss);
    // The data term at the end is near that of the classical heights, which fit the noise.
    assert!(r.final_loss < 1.5 * r.h0_data_loss, "physics loss {} vs h0's data loss {}", r.final_loss, r.h0_data_loss);
}

#[test]
fn fit_brings_the_height_closer_to_the_truth_than_the_classical_one() {
    let Fitted { opts, truth, report: r } = fitted();
    assert_eq!(r.heights.len(), opts.region[2] * opts.region[3]);
    let (before, after) = (mse(&r.initial_heights, truth), mse(&r.heights, truth));
    assert!(after < 0.8 * before, "height MSE vs truth: classical {before:e}, fitted {after:e}");
}

#[test]
fn saved_model_reproduces_the_heights() {
    let gpu = &gpus()[0];
    let Fitted { opts, report: r, .. } = fitted();
    let m = TempPath::new("pinn-fit-model.safetensors");
    save_model(&m, &r.weights).unwrap();
    let model = Cpikan::load(gpu, &m).unwrap();
    let [y0, x0, h, w] = opts.region;
    let coords: Vec<f32> = (0..h * w).flat_map(|p| [(x0 + p % w) as f32, (y0 + p / w) as f32]).collect();
    // The same parameters on the same adapter: the same bits.
    assert_eq!(model.forward(gpu, &coords).unwrap(), r.heights, "reloaded model");
}

#[test]
fn data_loss_at_the_truth_is_the_noise_variance() {
    // With the true heights as h0, the data term is the mean squared bucket noise: a wrong
    // wavelength, phase step, A or B would make it thousands (B² / 2 = 5000).
    let gpu = &gpus()[0];
    let f = TempPath::new("truth.npy");
    let truth = write_frame(&f);
    let region = [8, 30, 16, 16];
    let heights = crop(&truth, region);
    let opts = PinnFitOptions {
        region,
        init: Init::Heights(heights.clone()),
        supervised_steps: 0,
        adam_steps: 0,
        lbfgs_iters: 0,
        layers: vec![2, 4, 1],
        ..Default::default()
    };
    let r = pinn_fit(gpu, &f, &opts).unwrap();
    assert_eq!(r.initial_heights, heights, "Init::Heights is h0");
    // 16 x 16 pixels x 16 buckets: the sample variance is within ~0.1 of the noise's.
    let e = r.h0_data_loss as f64;
    eprintln!("data loss at the true heights {e:.4} (noise variance {NOISE_VARIANCE:.4})");
    assert!((e - NOISE_VARIANCE).abs() < 0.5, "data loss at the truth {e}, noise variance {NOISE_VARIANCE}");
}

#[test]
fn pinn_fit_rejects_bad_inputs() {
    let gpu = &gpus()[0];
    let f = TempPath::new("bad.npy");
    write_frame(&f);
    let none = PinnFitOptions {
        supervised_steps: 0,
        adam_steps: 0,
        lbfgs_iters: 0,
        layers: vec![2, 4, 1],
        ..Default::default()
    };
    let small = PinnFitOptions { region: [0, 0, 8, 8], ..none.clone() };
    // The same options with a good input run.
    assert!(pinn_fit(gpu, &f, &small).is_ok());
    let fails = |opts: PinnFitOptions, says: &str| {
        let e = pinn_fit(gpu, &f, &opts).unwrap_err().to_string();
        assert!(e.contains(says), "error {e:?} should say {says:?}");
    };
    fails(PinnFitOptions { region: [40, 40, 32, 32], ..none.clone() }, "does not fit in the 64 x 64 frame");
    fails(
        PinnFitOptions { init: Init::Heights(vec![0.0; 10]), ..small.clone() },
        "10 initial heights for a 8 x 8 region",
    );
    let nan = PinnFitOptions { init: Init::Heights(vec![f32::NAN; 64]), ..small.clone() };
    fails(nan, "not all finite");
    // Three lasers (two cannot decide ±100 µm: the classical solver refuses them first).
    let three_lasers = PinnFitOptions { psi: PsiConfig::with(vec![5.0, 5.5, 6.05], 4), ..small.clone() };
    fails(three_lasers, "16 channels, but 3 wavelengths x 4 buckets = 12 expected");
    fails(PinnFitOptions { layers: vec![2, 4, 2], ..small.clone() }, "needs a 2 -> 1 network");
    fails(PinnFitOptions { smoothness: -1.0, ..small }, "smoothness = -1");
}
