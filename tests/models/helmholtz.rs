//! The Helmholtz benchmark (`psi_gpu::nn::cpikan::helmholtz`, BENCHMARKS.md): a Scaled-cPIKAN
//! trained through the GPU derivative pass and its backward with Adam then L-BFGS.

use crate::common::gpus;
use psi_gpu::nn::cpikan::helmholtz::{HelmholtzConfig, HelmholtzReport, helmholtz};

/// Train with `cfg` on the first adapter and print the figures.
fn run(what: &str, cfg: &HelmholtzConfig) -> HelmholtzReport {
    let gpu = &gpus()[0];
    let r = helmholtz(gpu, cfg).unwrap();
    eprintln!(
        "{what} on {}: loss {:.3e} -> {:.3e} (after Adam {:.3e}), rel L2 {:.3e} -> {:.3e}, \
         Adam {}, L-BFGS {} iterations / {} evaluations, {:.1} s; curve {:?}",
        gpu.describe(),
        r.initial_loss,
        r.final_loss,
        r.loss_after_adam,
        r.initial_rel_l2,
        r.rel_l2,
        r.adam_steps,
        r.lbfgs_iterations,
        r.lbfgs_evaluations,
        r.wall_s,
        r.loss_curve
    );
    r
}

#[test]
fn helmholtz_reduced_run_learns() {
    let cfg = HelmholtzConfig { adam_steps: 300, lbfgs_iterations: 100, n_collocation: 128, ..Default::default() };
    let r = run("reduced Helmholtz", &cfg);
    assert!(r.final_loss < 1e-3 * r.initial_loss, "loss {} -> {}", r.initial_loss, r.final_loss);
    assert!(r.rel_l2 < 0.1 * r.initial_rel_l2, "relative L2 {} -> {}", r.initial_rel_l2, r.rel_l2);
}

/// The full benchmark with the default settings ([1, 16, 16, 1], K = 3, 256 points, 1000 Adam steps
/// then up to 1000 L-BFGS iterations): measured 7.2e-5 in ~40 s on llvmpipe (Vulkan).
#[test]
fn helmholtz_full_benchmark() {
    let r = run("Helmholtz", &HelmholtzConfig::default());
    assert!(r.rel_l2 < 1e-4, "relative L2 {:e} over the 1e-4 target", r.rel_l2);
}
