//! The Scaled-cPIKAN kernels (`psi_gpu::ops::chebykan`, `shaders/chebykan.wgsl`): every launcher,
//! in both passes (the values, and the forward-mode derivatives along one or two directions),
//! against its f64 CPU reference (`ops::chebykan::reference`) on random shapes (degrees 0, 1, 3,
//! 5; widths that are not multiples of 4; batches of several reduction chunks), on every adapter.
//! The network built from them is tested in tests/models/cpikan.rs.

use crate::common::{Rng, Tol, assert_close, gpus, rel_l2};
use psi_gpu::Gpu;
use psi_gpu::gpu::{Readback, storage_f32 as storage, zeroed_f32 as zeroed};
use psi_gpu::ops::chebykan::{self as cpikan, ChebyLayer, ChebyShape, Coords, LayerNormTanh, Pass, reference};

const VALUES: Pass = Pass::Values;
const D1: Pass = Pass::Derivatives { dirs: 1 };
const D2: Pass = Pass::Derivatives { dirs: 2 };

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Relative L2 of `got` against `want` under `bound`, and every element within
/// `10 · bound · max|want|`; returns the relative L2.
fn check(got: &[f32], want: &[f64], bound: f64, what: &str) -> f64 {
    let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
    let peak = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30) as f64;
    assert_close(got, &want, &Tol { rel: 0.0, abs: 10.0 * bound * peak, l2: bound }, what);
    rel_l2(got, &want)
}

fn read(gpu: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    Readback::f32(gpu, b, n).unwrap()
}

/// Random activations `(batch, n, channels)` of `pass`: values in [-1, 1] + `offset`, tangents in
/// [-2, 2].
fn random_channels(rng: &mut Rng, batch: usize, n: usize, pass: Pass, offset: f32) -> Vec<f32> {
    let ch = pass.channels();
    (0..batch * n * ch)
        .map(|i| if i % ch == 0 { rng.uniform(-1.0, 1.0) + offset } else { rng.uniform(-2.0, 2.0) })
        .collect()
}

#[test]
fn cheby_kernels_match_reference() {
    // (pass, batch, n_in, n_out, degree)
    let cases = [
        (VALUES, 1, 1, 1, 0),
        (VALUES, 7, 3, 5, 1),
        (VALUES, 33, 6, 7, 3),
        (VALUES, 65, 13, 9, 5),
        (VALUES, 130, 2, 16, 3),
        (VALUES, 3, 17, 2, 0),
        (D1, 7, 3, 5, 1),
        (D2, 33, 6, 7, 3),
        (D2, 65, 13, 9, 5),
        (D1, 65, 13, 9, 5),
        (D1, 3, 2, 1, 3),
        (D2, 5, 1, 3, 0),
    ];
    let mut rng = Rng::new(11);
    for gpu in gpus() {
        for &(pass, batch, n_in, n_out, degree) in &cases {
            let s = ChebyShape { batch, n_in, n_out, degree };
            let ch = pass.channels();
            let what = format!("{} {pass:?} b{batch} {n_in}->{n_out} K{degree}", gpu.describe());
            let x = random_channels(&mut rng, batch, n_in, pass, 0.0);
            let c = rng.vec(s.coeffs(), -0.5, 0.5);
            let dy = rng.vec(batch * n_out * ch, -1.0, 1.0);
            let (xb, cb, dyb) =
                (storage(gpu, "x", &x).unwrap(), storage(gpu, "c", &c).unwrap(), storage(gpu, "dy", &dy).unwrap());
            let y = zeroed(gpu, "y", batch * n_out * ch).unwrap();
            let dx = zeroed(gpu, "dx", batch * n_in * ch).unwrap();
            let dc = zeroed(gpu, "dc", s.coeffs()).unwrap();
            let layer = ChebyLayer { shape: s, pass, x: &xb, coeffs: &cb };
            let k1 = cpikan::cheby_forward(gpu, layer, &y).unwrap();
            let [k2, k3, k4] = cpikan::cheby_backward(gpu, layer, &dyb, &dx, &dc).unwrap();
            gpu.run(&[&k1, &k2, &k3, &k4]).unwrap();
            let (x, c, dy) = (f64s(&x), f64s(&c), f64s(&dy));
            let want = reference::cheby_forward(s, pass, &x, &c);
            check(&read(gpu, &y, batch * n_out * ch), &want, 1e-5, &format!("{what} forward"));
            let (want_dx, want_dc) = reference::cheby_backward(s, pass, &x, &c, &dy);
            if degree == 0 {
                assert!(read(gpu, &dx, batch * n_in * ch).iter().all(|&v| v == 0.0), "{what}: dx of degree 0");
            } else {
                check(&read(gpu, &dx, batch * n_in * ch), &want_dx, 1e-5, &format!("{what} dx"));
            }
            check(&read(gpu, &dc, s.coeffs()), &want_dc, 1e-5, &format!("{what} dc"));
        }
    }
}

#[test]
fn layernorm_tanh_kernels_match_reference() {
    // (pass, batch, features)
    let cases = [
        (VALUES, 1, 1),
        (VALUES, 5, 3),
        (VALUES, 70, 16),
        (VALUES, 3, 7),
        (VALUES, 66, 13),
        (D1, 7, 5),
        (D2, 33, 7),
        (D2, 65, 9),
        (D1, 65, 9),
        (D1, 3, 1),
        (D2, 5, 3),
        (D1, 3, 4),
        (D2, 5, 4),
    ];
    let mut rng = Rng::new(12);
    for gpu in gpus() {
        for &(pass, batch, n) in &cases {
            let ch = pass.channels();
            let what = format!("{} {pass:?} layernorm b{batch} n{n}", gpu.describe());
            let offset = rng.uniform(-3.0, 3.0);
            let z = random_channels(&mut rng, batch, n, pass, offset);
            let (gamma, beta) = (rng.vec(n, 0.5, 1.5), rng.vec(n, -0.5, 0.5));
            let da = rng.vec(batch * n * ch, -1.0, 1.0);
            let bufs: Vec<_> = [&z, &gamma, &beta, &da].iter().map(|v| storage(gpu, "in", v).unwrap()).collect();
            let ln = LayerNormTanh { batch, n, pass, z: &bufs[0], gamma: &bufs[1], beta: &bufs[2] };
            let a = zeroed(gpu, "a", batch * n * ch).unwrap();
            let dz = zeroed(gpu, "dz", batch * n * ch).unwrap();
            let (dg, db) = (zeroed(gpu, "dg", n).unwrap(), zeroed(gpu, "db", n).unwrap());
            let k1 = cpikan::layernorm_tanh_forward(gpu, ln, &a).unwrap();
            let [k2, k3, k4] = cpikan::layernorm_tanh_backward(gpu, ln, &bufs[3], &dz, &dg, &db).unwrap();
            gpu.run(&[&k1, &k2, &k3, &k4]).unwrap();
            let (z, gamma, beta, da) = (f64s(&z), f64s(&gamma), f64s(&beta), f64s(&da));
            // The derivative channels are f32 sums of products of O(1) tangents: looser bounds.
            let (bound, dbeta_bound) = if pass == VALUES { (1e-5, 1e-5) } else { (1e-4, 1e-4) };
            let want = reference::layernorm_tanh_forward(pass, &z, n, &gamma, &beta);
            check(&read(gpu, &a, batch * n * ch), &want, bound, &format!("{what} forward"));
            let (wdz, wdg, wdb) = reference::layernorm_tanh_backward(pass, &z, n, &gamma, &beta, &da);
            if pass != VALUES && (2..4).contains(&n) {
                // With 2 or 3 features the tangents of x̂ are mostly f32 cancellation.
                continue;
            }
            if n == 1 {
                // One feature: x̂ = 0 and dz = 0 exactly (up to rounding of the mean).
                assert!(read(gpu, &dz, batch * ch).iter().all(|v| v.abs() < 1e-6), "{what}: dz");
            } else {
                check(&read(gpu, &dz, batch * n * ch), &wdz, 1e-4, &format!("{what} dz"));
                check(&read(gpu, &dg, n), &wdg, 1e-4, &format!("{what} dgamma"));
            }
            check(&read(gpu, &db, n), &wdb, dbeta_bound, &format!("{what} dbeta"));
        }
    }
}

#[test]
fn affine_scale_from_buffer_and_grid() {
    let mut rng = Rng::new(13);
    for gpu in gpus() {
        // Coordinates from a buffer, d = 3.
        let (batch, d) = (41, 3);
        let min = [-2.0f32, 0.5, 10.0];
        let max = [3.0f32, 0.75, 30.0];
        let coords = rng.vec(batch * d, -5.0, 35.0);
        let dom = storage(gpu, "dom", &[min, max].concat()).unwrap();
        let cb = storage(gpu, "coords", &coords).unwrap();
        // A 7 x 5 pixel grid: (x = column, y = row).
        let (h, w) = (7, 5);
        let grid_dom = storage(gpu, "dom", &[0.0, 0.0, (w - 1) as f32, (h - 1) as f32]).unwrap();
        let grid: Vec<f64> = (0..h * w).flat_map(|i| [(i % w) as f64, (i / w) as f64]).collect();
        for pass in [VALUES, Pass::Derivatives { dirs: 3 }] {
            let ch = pass.channels();
            let what = format!("{} affine_scale {pass:?}", gpu.describe());
            let out = zeroed(gpu, "out", batch * d * ch).unwrap();
            gpu.run(&[&cpikan::affine_scale(gpu, pass, Coords::Buffer(&cb), &dom, &out, batch, d).unwrap()]).unwrap();
            let want = reference::affine_scale(pass, &f64s(&coords), d, &f64s(&min), &f64s(&max));
            check(&read(gpu, &out, batch * d * ch), &want, 1e-6, &format!("{what} buffer"));
            let gpass = if pass == VALUES { VALUES } else { D2 };
            let gch = gpass.channels();
            let out = zeroed(gpu, "out", h * w * 2 * gch).unwrap();
            let k = cpikan::affine_scale(gpu, gpass, Coords::Grid { w }, &grid_dom, &out, h * w, 2).unwrap();
            gpu.run(&[&k]).unwrap();
            let want = reference::affine_scale(gpass, &grid, 2, &[0.0, 0.0], &[(w - 1) as f64, (h - 1) as f64]);
            let got = read(gpu, &out, h * w * 2 * gch);
            check(&got, &want, 1e-7, &format!("{what} grid"));
            let value = |i: usize| got[i * gch];
            assert_eq!((value(0), value(1), value(2 * h * w - 2), value(2 * h * w - 1)), (-1.0, -1.0, 1.0, 1.0));
        }
        // A derivative pass needs one direction per coordinate.
        let out = zeroed(gpu, "out", batch * d * 3).unwrap();
        assert!(cpikan::affine_scale(gpu, D1, Coords::Buffer(&cb), &dom, &out, batch, d).is_err());
    }
}

#[test]
fn chunked_batch_reductions_match_reference() {
    // Batches of several chunks (a whole number of them, and a partial last one): the two-stage
    // parameter-gradient sums of both passes against the reference.
    let mut rng = Rng::new(34);
    for gpu in gpus() {
        for batch in [2 * cpikan::CHUNK, 3000] {
            assert!(cpikan::n_chunks(batch) >= 2);
            let what = format!("{} b{batch} ({} chunks)", gpu.describe(), cpikan::n_chunks(batch));
            let s = ChebyShape { batch, n_in: 3, n_out: 5, degree: 3 };
            let mut ks = Vec::new();
            let mut cases = Vec::new();
            let c = zeroed(gpu, "c", s.coeffs()).unwrap();
            for pass in [VALUES, D2] {
                let x = random_channels(&mut rng, batch, s.n_in, pass, 0.0);
                let dy = rng.vec(batch * s.n_out * pass.channels(), -1.0, 1.0);
                let (xb, dyb) = (storage(gpu, "x", &x).unwrap(), storage(gpu, "dy", &dy).unwrap());
                let (dx, dc) = (zeroed(gpu, "dx", x.len()).unwrap(), zeroed(gpu, "dc", s.coeffs()).unwrap());
                let layer = ChebyLayer { shape: s, pass, x: &xb, coeffs: &c };
                ks.extend(cpikan::cheby_backward(gpu, layer, &dyb, &dx, &dc).unwrap());
                cases.push((pass, x, dy, dc, xb, dyb, dx));
            }
            // LayerNorm parameter sums straight from random scratch (du, dux).
            let n = 7;
            let (du, dux) = (rng.vec(batch * n, -1.0, 1.0), rng.vec(batch * n, -1.0, 1.0));
            let sc = [storage(gpu, "du", &du).unwrap(), storage(gpu, "dux", &dux).unwrap()];
            let (dg, db) = (zeroed(gpu, "dg", n).unwrap(), zeroed(gpu, "db", n).unwrap());
            ks.extend(cpikan::layernorm_params_backward(gpu, batch, n, [&sc[0], &sc[1]], &dg, &db).unwrap());
            gpu.run(&ks.iter().collect::<Vec<_>>()).unwrap();
            for (pass, x, dy, dc, ..) in &cases {
                let c = vec![0.0; s.coeffs()];
                let (_, want) = reference::cheby_backward(s, *pass, &f64s(x), &c, &f64s(dy));
                check(&read(gpu, dc, s.coeffs()), &want, 1e-5, &format!("{what} {pass:?} dc"));
            }
            let col_sum = |v: &[f32]| (0..n).map(|j| v.iter().skip(j).step_by(n).map(|&a| a as f64).sum()).collect();
            let (wdg, wdb): (Vec<f64>, Vec<f64>) = (col_sum(&dux), col_sum(&du));
            check(&read(gpu, &dg, n), &wdg, 1e-5, &format!("{what} dgamma"));
            check(&read(gpu, &db, n), &wdb, 1e-5, &format!("{what} dbeta"));
        }
    }
}

/// Wall time of the coefficient-gradient reductions of a [2, 16, 16, 1] network's derivative
/// backward at 65536 points (or `CPIKAN_TIMING_BATCH`) on the first adapter, median of 5 after a
/// warm-up. Not a check: run with
/// `cargo test --release --test ops cheby_backward_coeffs_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn cheby_backward_coeffs_timing() {
    let batch = std::env::var("CPIKAN_TIMING_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(65536);
    let gpu = &gpus()[0];
    let mut rng = Rng::new(41);
    let mut kernels = Vec::new();
    let mut keep = Vec::new();
    for (n_in, n_out) in [(2, 16), (16, 16), (16, 1)] {
        let s = ChebyShape { batch, n_in, n_out, degree: 3 };
        let x = storage(gpu, "x", &random_channels(&mut rng, batch, n_in, D2, 0.0)).unwrap();
        let dy = storage(gpu, "dy", &rng.vec(batch * n_out * D2.channels(), -1.0, 1.0)).unwrap();
        let (c, dx, dc) = (
            zeroed(gpu, "c", s.coeffs()).unwrap(),
            zeroed(gpu, "dx", 1).unwrap(),
            zeroed(gpu, "dc", s.coeffs()).unwrap(),
        );
        let layer = ChebyLayer { shape: s, pass: D2, x: &x, coeffs: &c };
        // The coefficient reduction's two dispatches, not the input gradient.
        let [partials, sum, _] = cpikan::cheby_backward(gpu, layer, &dy, &dx, &dc).unwrap();
        kernels.extend([partials, sum]);
        keep.push((x, dy, c, dx, dc));
    }
    let run = || {
        let t = std::time::Instant::now();
        gpu.run(&kernels.iter().collect::<Vec<_>>()).unwrap();
        t.elapsed().as_secs_f64()
    };
    run();
    let mut times: Vec<f64> = (0..5).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "{}: cheby_backward_coeffs (derivatives) of the 3 layers at {batch} points: median {:.3} s (min {:.3} s)",
        gpu.describe(),
        times[2],
        times[0]
    );
}
