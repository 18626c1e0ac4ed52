//! Scaled-cPIKAN (`psi_gpu::nn::cpikan`, `shaders/chebykan.wgsl`): every kernel against the f64
//! CPU reference on random shapes (degrees 0, 1, 3, 5; widths that are not multiples of 4), the
//! reference backward against finite differences, the whole GPU network against the reference,
//! and parity with PyTorch (tests/fixtures/cpikan_*, made by make_cpikan_fixtures.py), on every
//! adapter. The same for the forward-mode input derivatives (u, u_x, u_y, u_xx, u_yy): kernels and
//! network against the reference, the reference against finite differences of the forward, and
//! PyTorch autograd. And the backward of the derivative pass: the reference against finite
//! differences of a scalar loss on the derivative channels, kernels and network against the reference,
//! and the network against PyTorch (second-order autograd through an explicit LayerNorm).

use std::path::{Path, PathBuf};

use crate::common::{Rng, gpus, rel_l2};
use psi_gpu::Gpu;
use psi_gpu::gpu::Readback;
use psi_gpu::gpu::{storage_f32 as storage, zeroed_f32 as storage_zeroed};
use psi_gpu::io::npy;
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::cpikan::{Cpikan, CpikanConfig, CpikanWeights, Derivatives, reference};
use psi_gpu::ops::chebykan::{self as cpikan, ChebyShape, Coords, reference as kref};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Relative L2 of `got` against `want` under `bound`, and every element within
/// `bound · max|want|` (a scale-aware absolute check); returns the relative L2.
fn check(got: &[f32], want: &[f64], bound: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let e = rel_l2(got, &f32s(want));
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (*g as f64 - w).abs();
        assert!(d <= 10.0 * bound * scale, "{what}: element {i}: got {g}, want {w} (max |want| {scale:e})");
    }
    assert!(e < bound, "{what}: relative L2 {e:e} over {bound:e}");
    e
}

fn read(gpu: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    Readback::f32(gpu, b, n).unwrap()
}

#[test]
fn cheby_kernels_match_reference() {
    // (batch, n_in, n_out, degree)
    let shapes = [(1, 1, 1, 0), (7, 3, 5, 1), (33, 6, 7, 3), (65, 13, 9, 5), (130, 2, 16, 3), (3, 17, 2, 0)];
    let mut rng = Rng::new(11);
    for gpu in gpus() {
        for &(batch, n_in, n_out, degree) in &shapes {
            let s = ChebyShape { batch, n_in, n_out, degree };
            let what = format!("{} b{batch} {n_in}->{n_out} K{degree}", gpu.describe());
            let x = rng.vec(batch * n_in, -1.0, 1.0);
            let c = rng.vec(s.coeffs(), -0.5, 0.5);
            let dy = rng.vec(batch * n_out, -1.0, 1.0);
            let (xb, cb, dyb) =
                (storage(gpu, "x", &x).unwrap(), storage(gpu, "c", &c).unwrap(), storage(gpu, "dy", &dy).unwrap());
            let y = storage_zeroed(gpu, "y", batch * n_out).unwrap();
            let dx = storage_zeroed(gpu, "dx", batch * n_in).unwrap();
            let dc = storage_zeroed(gpu, "dc", s.coeffs()).unwrap();
            let d1 = cpikan::cheby_forward(gpu, s, &xb, &cb, &y).unwrap();
            let d2 = cpikan::cheby_backward_input(gpu, s, &xb, &cb, &dyb, &dx).unwrap();
            let [d3, d4] = cpikan::cheby_backward_coeffs(gpu, s, &xb, &dyb, &dc).unwrap();
            gpu.run(&[&d1, &d2, &d3, &d4]).unwrap();
            let (x, c, dy) = (f64s(&x), f64s(&c), f64s(&dy));
            check(&read(gpu, &y, batch * n_out), &kref::cheby_forward(s, &x, &c), 1e-5, &format!("{what} forward"));
            let want = kref::cheby_backward_input(s, &x, &c, &dy);
            if degree == 0 {
                assert!(read(gpu, &dx, batch * n_in).iter().all(|&v| v == 0.0), "{what}: dx of degree 0");
            } else {
                check(&read(gpu, &dx, batch * n_in), &want, 1e-5, &format!("{what} dx"));
            }
            let want = kref::cheby_backward_coeffs(s, &x, &dy);
            check(&read(gpu, &dc, s.coeffs()), &want, 1e-5, &format!("{what} dc"));
        }
    }
}

#[test]
fn layernorm_tanh_kernels_match_reference() {
    // (batch, features)
    let shapes = [(1, 1), (5, 3), (70, 16), (3, 7), (66, 13)];
    let mut rng = Rng::new(12);
    for gpu in gpus() {
        for &(batch, n) in &shapes {
            let what = format!("{} layernorm b{batch} n{n}", gpu.describe());
            let offset = rng.uniform(-3.0, 3.0);
            let z: Vec<f32> = rng.vec(batch * n, -2.0, 2.0).iter().map(|v| v + offset).collect();
            let gamma = rng.vec(n, 0.5, 1.5);
            let beta = rng.vec(n, -0.5, 0.5);
            let da = rng.vec(batch * n, -1.0, 1.0);
            let zb = storage(gpu, "z", &z).unwrap();
            let (gb, bb, dab) = (
                storage(gpu, "g", &gamma).unwrap(),
                storage(gpu, "b", &beta).unwrap(),
                storage(gpu, "da", &da).unwrap(),
            );
            let a = storage_zeroed(gpu, "a", batch * n).unwrap();
            let dz = storage_zeroed(gpu, "dz", batch * n).unwrap();
            let scratch =
                [storage_zeroed(gpu, "du", batch * n).unwrap(), storage_zeroed(gpu, "dux", batch * n).unwrap()];
            let (dg, db) = (storage_zeroed(gpu, "dg", n).unwrap(), storage_zeroed(gpu, "db", n).unwrap());
            let sc = [&scratch[0], &scratch[1]];
            let d1 = cpikan::layernorm_tanh_forward(gpu, batch, n, &zb, &gb, &bb, &a).unwrap();
            let d2 = cpikan::layernorm_tanh_backward(gpu, batch, n, &zb, &gb, &bb, &dab, &dz, sc).unwrap();
            let [d3, d4] = cpikan::layernorm_params_backward(gpu, batch, n, sc, &dg, &db).unwrap();
            gpu.run(&[&d1, &d2, &d3, &d4]).unwrap();
            let (z, gamma, beta, da) = (f64s(&z), f64s(&gamma), f64s(&beta), f64s(&da));
            let want = kref::layernorm_tanh_forward(&z, n, &gamma, &beta);
            check(&read(gpu, &a, batch * n), &want, 1e-5, &format!("{what} forward"));
            let (wdz, wdg, wdb) = kref::layernorm_tanh_backward(&z, n, &gamma, &beta, &da);
            if n == 1 {
                // One feature: x̂ = 0 and dz = 0 exactly.
                assert!(read(gpu, &dz, batch).iter().all(|v| v.abs() < 1e-6), "{what}: dz");
            } else {
                check(&read(gpu, &dz, batch * n), &wdz, 1e-4, &format!("{what} dz"));
                check(&read(gpu, &dg, n), &wdg, 1e-4, &format!("{what} dgamma"));
            }
            check(&read(gpu, &db, n), &wdb, 1e-5, &format!("{what} dbeta"));
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
        let out = storage_zeroed(gpu, "out", batch * d).unwrap();
        gpu.run(&[&cpikan::affine_scale(gpu, Coords::Buffer(&cb), &dom, &out, batch, d).unwrap()]).unwrap();
        let want = kref::affine_scale(&f64s(&coords), d, &f64s(&min), &f64s(&max));
        check(&read(gpu, &out, batch * d), &want, 1e-6, "affine_scale buffer");
        // A 7 x 5 pixel grid: (x = column, y = row).
        let (h, w) = (7, 5);
        let dom = storage(gpu, "dom", &[0.0, 0.0, (w - 1) as f32, (h - 1) as f32]).unwrap();
        let out = storage_zeroed(gpu, "out", h * w * 2).unwrap();
        gpu.run(&[&cpikan::affine_scale(gpu, Coords::Grid { w }, &dom, &out, h * w, 2).unwrap()]).unwrap();
        let grid: Vec<f64> = (0..h * w).flat_map(|i| [(i % w) as f64, (i / w) as f64]).collect();
        let want = kref::affine_scale(&grid, 2, &[0.0, 0.0], &[(w - 1) as f64, (h - 1) as f64]);
        check(&read(gpu, &out, h * w * 2), &want, 1e-7, "affine_scale grid");
        let got = read(gpu, &out, h * w * 2);
        assert_eq!((got[0], got[1], got[2 * (h * w) - 2], got[2 * (h * w) - 1]), (-1.0, -1.0, 1.0, 1.0));
    }
}

/// A random network: coefficients of O(1) activations, non-trivial LayerNorm affine parameters.
fn random_weights(rng: &mut Rng, layers: &[usize], degree: usize) -> CpikanWeights {
    let d = layers[0];
    let domain_min = rng.vec(d, -3.0, 1.0);
    let domain_max = domain_min.iter().map(|m| m + rng.uniform(0.5, 4.0)).collect();
    let config = CpikanConfig { layers: layers.to_vec(), degree, domain_min, domain_max };
    let coeffs = (0..layers.len() - 1)
        .map(|l| {
            let a = 1.5 / ((layers[l] * (degree + 1)) as f32).sqrt();
            rng.vec(layers[l] * layers[l + 1] * (degree + 1), -a, a)
        })
        .collect();
    let hidden = &layers[1..layers.len() - 1];
    let ln_weight = hidden.iter().map(|&n| rng.vec(n, 0.6, 1.4)).collect();
    let ln_bias = hidden.iter().map(|&n| rng.vec(n, -0.3, 0.3)).collect();
    CpikanWeights { config, coeffs, ln_weight, ln_bias }
}

fn coords_in_domain(rng: &mut Rng, c: &CpikanConfig, batch: usize) -> Vec<f32> {
    let d = c.d_in();
    (0..batch * d).map(|i| rng.uniform(c.domain_min[i % d], c.domain_max[i % d])).collect()
}

fn loss(net: &reference::Net, coords: &[f64], g: &[f64]) -> f64 {
    let (_, outputs) = reference::network_forward(net, coords);
    outputs.last().unwrap().iter().zip(g).map(|(a, b)| a * b).sum()
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(14);
    for (layers, degree) in [(vec![2, 5, 3, 2], 3), (vec![1, 4, 1], 5), (vec![3, 6, 1], 1), (vec![2, 3, 2], 0)] {
        let w = random_weights(&mut rng, &layers, degree);
        let batch = 6;
        let coords = f64s(&coords_in_domain(&mut rng, &w.config, batch));
        let g = f64s(&rng.vec(batch * w.config.d_out(), -1.0, 1.0));
        let net = reference::Net::from(&w);
        let grads = reference::network_backward(&net, &coords, &g);
        let h = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let what = format!("layers {layers:?} K{degree}");
        // Every parameter of every tensor.
        let mut got = Vec::new();
        let mut want = Vec::new();
        for l in 0..net.coeffs.len() {
            for i in 0..net.coeffs[l].len() {
                got.push(grads.coeffs[l][i]);
                want.push(fd(&|e| {
                    let mut n = net.clone();
                    n.coeffs[l][i] += e;
                    loss(&n, &coords, &g)
                }));
            }
        }
        for l in 0..net.ln_weight.len() {
            for i in 0..net.ln_weight[l].len() {
                got.push(grads.ln_weight[l][i]);
                want.push(fd(&|e| {
                    let mut n = net.clone();
                    n.ln_weight[l][i] += e;
                    loss(&n, &coords, &g)
                }));
                got.push(grads.ln_bias[l][i]);
                want.push(fd(&|e| {
                    let mut n = net.clone();
                    n.ln_bias[l][i] += e;
                    loss(&n, &coords, &g)
                }));
            }
        }
        for i in 0..coords.len() {
            got.push(grads.coords[i]);
            want.push(fd(&|e| {
                let mut c = coords.clone();
                c[i] += e;
                loss(&net, &c, &g)
            }));
        }
        let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = want.iter().map(|b| b * b).sum();
        let e = (num / den).sqrt();
        assert!(e < 1e-6, "{what}: reference backward vs finite differences: relative L2 {e:e}");
    }
}

#[test]
fn gpu_network_matches_reference() {
    let mut rng = Rng::new(15);
    for gpu in gpus() {
        for (layers, degree) in [(vec![2, 5, 3, 2], 3), (vec![1, 7, 1], 5), (vec![3, 6, 9, 1], 1), (vec![2, 3], 0)] {
            let w = random_weights(&mut rng, &layers, degree);
            let batch = 37;
            let coords = coords_in_domain(&mut rng, &w.config, batch);
            let dy = rng.vec(batch * w.config.d_out(), -1.0, 1.0);
            let model = Cpikan::new(gpu, &w).unwrap();
            let what = format!("{} layers {layers:?} K{degree}", gpu.describe());
            let cb = storage(gpu, "coords", &coords).unwrap();
            let acts = model.forward_pass(gpu, Coords::Buffer(&cb), batch).unwrap();
            let got = acts.output(gpu, w.config.d_out()).unwrap();
            assert_eq!(got, model.forward(gpu, &coords).unwrap(), "{what}: forward vs forward_pass");
            let net = reference::Net::from(&w);
            let (c64, dy64) = (f64s(&coords), f64s(&dy));
            let (_, outputs) = reference::network_forward(&net, &c64);
            check(&got, outputs.last().unwrap(), 1e-5, &format!("{what} output"));
            let g = model.backward(gpu, &acts, &dy).unwrap();
            let r = reference::network_backward(&net, &c64, &dy64);
            for l in 0..layers.len() - 1 {
                check(&g.coeffs[l], &r.coeffs[l], 1e-4, &format!("{what} dcoeffs {l}"));
            }
            for l in 0..layers.len() - 2 {
                check(&g.ln_weight[l], &r.ln_weight[l], 1e-4, &format!("{what} dgamma {l}"));
                check(&g.ln_bias[l], &r.ln_bias[l], 1e-4, &format!("{what} dbeta {l}"));
            }
            if degree > 0 {
                check(&g.coords, &r.coords, 1e-4, &format!("{what} dcoords"));
            }
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn loads_the_seed_state_dict() {
    let w = CpikanWeights::load(&fixture("cpikan_2_16_16_1.safetensors")).unwrap();
    assert_eq!(w.config.layers, [2, 16, 16, 1]);
    assert_eq!(w.config.degree, 3);
    assert_eq!(
        (w.config.domain_min.as_slice(), w.config.domain_max.as_slice()),
        ([0.0, 0.0].as_slice(), [19.0, 29.0].as_slice())
    );
    assert_eq!((w.coeffs.len(), w.ln_weight.len(), w.ln_bias.len()), (3, 2, 2));
    // A file that is not a cPIKAN state_dict is a clear error.
    let e = CpikanWeights::load(&fixture("grad_layers_pool.safetensors")).unwrap_err().to_string();
    assert!(e.contains("domain_min"), "{e}");
}

#[test]
fn matches_pytorch() {
    let w = CpikanWeights::load(&fixture("cpikan_2_16_16_1.safetensors")).unwrap();
    let (shape, want) = npy::read_f32(&fixture("cpikan_2_16_16_1_out.npy")).unwrap();
    assert_eq!(shape, [30, 20]);
    let (h, wd) = (30, 20);
    let ref_grads = Weights::load(&fixture("cpikan_2_16_16_1_grads.safetensors")).unwrap();
    let g = &ref_grads.get("g", &[h, wd]).unwrap().data;
    let grad = |name: &str| f64s(&ref_grads.tensors[&format!("grad.{name}")].data);
    for gpu in gpus() {
        let model = Cpikan::new(gpu, &w).unwrap();
        let out = model.eval_grid(gpu, h, wd).unwrap();
        let e = check(&out, &f64s(&want), 1e-5, &format!("{} eval_grid vs PyTorch", gpu.describe()));
        eprintln!("{}: eval_grid vs PyTorch relative L2 {e:e}", gpu.describe());
        // The same through explicit coordinates.
        let coords: Vec<f32> = (0..h * wd).flat_map(|i| [(i % wd) as f32, (i / wd) as f32]).collect();
        check(&model.forward(gpu, &coords).unwrap(), &f64s(&want), 1e-5, "forward vs PyTorch");
        let acts = model.forward_pass(gpu, Coords::Grid { w: wd }, h * wd).unwrap();
        let gr = model.backward(gpu, &acts, g).unwrap();
        let mut worst: f64 = 0.0;
        for (l, m) in [0, 3, 6].into_iter().enumerate() {
            let e = check(&gr.coeffs[l], &grad(&format!("network.{m}.cheby_coeffs")), 1e-4, &format!("coeffs {m}"));
            worst = worst.max(e);
        }
        for (l, m) in [1, 4].into_iter().enumerate() {
            worst = worst.max(check(&gr.ln_weight[l], &grad(&format!("network.{m}.weight")), 1e-4, "ln weight"));
            worst = worst.max(check(&gr.ln_bias[l], &grad(&format!("network.{m}.bias")), 1e-4, "ln bias"));
        }
        eprintln!("{}: gradients vs PyTorch worst relative L2 {worst:e}", gpu.describe());
    }
}

/// Random derivative activations `(batch, n, 1 + 2 dirs)`: values in [-1, 1], tangents O(1).
fn random_channels(rng: &mut Rng, batch: usize, n: usize, dirs: usize, offset: f32) -> Vec<f32> {
    let ch = cpikan::channels(dirs);
    (0..batch * n * ch)
        .map(|i| if i % ch == 0 { rng.uniform(-1.0, 1.0) + offset } else { rng.uniform(-2.0, 2.0) })
        .collect()
}

#[test]
fn derivative_kernels_match_reference() {
    // (batch, n_in, n_out, degree, dirs)
    let shapes = [(7, 3, 5, 1, 1), (33, 6, 7, 3, 2), (65, 13, 9, 5, 2), (3, 2, 1, 3, 1), (5, 1, 3, 0, 2)];
    let mut rng = Rng::new(21);
    for gpu in gpus() {
        for &(batch, n_in, n_out, degree, dirs) in &shapes {
            let s = ChebyShape { batch, n_in, n_out, degree };
            let ch = cpikan::channels(dirs);
            let what = format!("{} b{batch} {n_in}->{n_out} K{degree} D{dirs}", gpu.describe());
            let x = random_channels(&mut rng, batch, n_in, dirs, 0.0);
            let c = rng.vec(s.coeffs(), -0.5, 0.5);
            let (xb, cb) = (storage(gpu, "x", &x).unwrap(), storage(gpu, "c", &c).unwrap());
            let y = storage_zeroed(gpu, "y", batch * n_out * ch).unwrap();
            gpu.run(&[&cpikan::cheby_forward_derivatives(gpu, s, dirs, &xb, &cb, &y).unwrap()]).unwrap();
            let want = kref::cheby_forward_derivatives(s, dirs, &f64s(&x), &f64s(&c));
            check(&read(gpu, &y, batch * n_out * ch), &want, 1e-5, &format!("{what} cheby"));
            // LayerNorm + tanh on n_out features (n = 1 has zero tangents after the norm).
            let n = n_out;
            let offset = rng.uniform(-2.0, 2.0);
            let z = random_channels(&mut rng, batch, n, dirs, offset);
            let (gamma, beta) = (rng.vec(n, 0.5, 1.5), rng.vec(n, -0.5, 0.5));
            let (zb, gb, bb) =
                (storage(gpu, "z", &z).unwrap(), storage(gpu, "g", &gamma).unwrap(), storage(gpu, "b", &beta).unwrap());
            let a = storage_zeroed(gpu, "a", batch * n * ch).unwrap();
            gpu.run(&[&cpikan::layernorm_tanh_derivatives(gpu, batch, n, dirs, &zb, &gb, &bb, &a).unwrap()]).unwrap();
            let want = kref::layernorm_tanh_derivatives(&f64s(&z), n, dirs, &f64s(&gamma), &f64s(&beta));
            check(&read(gpu, &a, batch * n * ch), &want, 1e-4, &format!("{what} layernorm"));
        }
        // affine_scale with tangents, from a buffer and from a grid.
        let (batch, d) = (9, 2);
        let (min, max) = ([-2.0f32, 0.5], [3.0f32, 0.75]);
        let coords = rng.vec(batch * d, -2.0, 3.0);
        let dom = storage(gpu, "dom", &[min, max].concat()).unwrap();
        let cb = storage(gpu, "coords", &coords).unwrap();
        let out = storage_zeroed(gpu, "out", batch * d * 5).unwrap();
        let k = cpikan::affine_scale_derivatives(gpu, Coords::Buffer(&cb), &dom, &out, batch, d).unwrap();
        gpu.run(&[&k]).unwrap();
        let want = kref::affine_scale_derivatives(&f64s(&coords), d, &f64s(&min), &f64s(&max));
        check(&read(gpu, &out, batch * d * 5), &want, 1e-6, "affine_scale_derivatives");
    }
}

fn derivative_configs() -> Vec<(Vec<usize>, usize)> {
    vec![(vec![2, 5, 3, 1], 3), (vec![1, 7, 1], 5), (vec![2, 6, 9, 2], 1), (vec![1, 3, 5, 1], 3), (vec![2, 7, 1], 5)]
}

#[test]
fn reference_derivatives_match_finite_differences() {
    let mut rng = Rng::new(22);
    for (layers, degree) in derivative_configs() {
        let w = random_weights(&mut rng, &layers, degree);
        let net = reference::Net::from(&w);
        let d = w.config.d_in();
        let coords = f64s(&coords_in_domain(&mut rng, &w.config, 6));
        let r = reference::network_derivatives(&net, &coords);
        let u = |c: &[f64]| reference::network_forward(&net, c).1.last().unwrap().clone();
        assert_eq!(r.u, u(&coords), "layers {layers:?}: value");
        let rel = |g: &[f64], w: &[f64]| {
            let num: f64 = g.iter().zip(w).map(|(a, b)| (a - b).powi(2)).sum();
            (num / w.iter().map(|b| b * b).sum::<f64>()).sqrt()
        };
        for a in 0..d {
            // Central 3-point stencils at step h, Richardson-extrapolated from h and h / 2 (the
            // O(h²) truncation alone is ~1e-5 here: the scaled domains are narrow).
            let stencils = |h: f64| {
                let shift = |e: f64| {
                    let mut c = coords.clone();
                    c.iter_mut().skip(a).step_by(d).for_each(|v| *v += e);
                    u(&c)
                };
                let (up, u0, um) = (shift(h), u(&coords), shift(-h));
                let d1: Vec<f64> = up.iter().zip(&um).map(|(p, m)| (p - m) / (2.0 * h)).collect();
                let d2: Vec<f64> = (0..u0.len()).map(|i| (up[i] - 2.0 * u0[i] + um[i]) / (h * h)).collect();
                (d1, d2)
            };
            let h = 2e-4;
            let ((d1, d2), (d1h, d2h)) = (stencils(h), stencils(h / 2.0));
            let rich = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (4.0 * y - x) / 3.0).collect::<Vec<f64>>();
            let (g1, g2) = if a == 0 { (&r.ux, &r.uxx) } else { (&r.uy, &r.uyy) };
            let what = format!("layers {layers:?} K{degree} axis {a}");
            let (p1, p2) = (rel(g1, &d1h), rel(g2, &d2h));
            let (e1, e2) = (rel(g1, &rich(&d1, &d1h)), rel(g2, &rich(&d2, &d2h)));
            eprintln!(
                "{what} vs finite differences: h = 1e-4: first {p1:.2e}, second {p2:.2e}; extrapolated: {e1:.2e}, {e2:.2e}"
            );
            assert!(p1 < 1e-4 && p2 < 1e-4, "{what}: plain stencils {p1:e} / {p2:e}");
            assert!(e1 < 1e-7, "{what}: first derivative vs extrapolated FD {e1:e}");
            assert!(e2 < 1e-6, "{what}: second derivative vs extrapolated FD {e2:e}");
        }
    }
}

#[test]
fn gpu_derivatives_match_reference() {
    let mut rng = Rng::new(23);
    for gpu in gpus() {
        for (layers, degree) in derivative_configs() {
            let w = random_weights(&mut rng, &layers, degree);
            let batch = 37;
            let coords = coords_in_domain(&mut rng, &w.config, batch);
            let model = Cpikan::new(gpu, &w).unwrap();
            let what = format!("{} layers {layers:?} K{degree}", gpu.describe());
            let got = model.forward_derivatives(gpu, &coords).unwrap();
            let r = reference::network_derivatives(&reference::Net::from(&w), &f64s(&coords));
            check(&got.u, &r.u, 1e-5, &format!("{what} u"));
            check(&got.u, &f64s(&model.forward(gpu, &coords).unwrap()), 1e-6, &format!("{what} u vs forward"));
            let mut worst: f64 = 0.0;
            worst = worst.max(check(&got.ux, &r.ux, 1e-4, &format!("{what} ux")));
            worst = worst.max(check(&got.uxx, &r.uxx, 1e-4, &format!("{what} uxx")));
            if layers[0] == 2 {
                worst = worst.max(check(&got.uy, &r.uy, 1e-4, &format!("{what} uy")));
                worst = worst.max(check(&got.uyy, &r.uyy, 1e-4, &format!("{what} uyy")));
            } else {
                assert!(got.uy.is_empty() && got.uyy.is_empty(), "{what}: uy for d_in = 1");
            }
            eprintln!("{what}: derivatives vs reference worst relative L2 {worst:e}");
        }
        // A pixel grid gives the same as its explicit coordinates.
        let w = random_weights(&mut rng, &[2, 5, 1], 3);
        let model = Cpikan::new(gpu, &w).unwrap();
        let (h, wd) = (4, 6);
        let coords: Vec<f32> = (0..h * wd).flat_map(|i| [(i % wd) as f32, (i / wd) as f32]).collect();
        let grid = model.forward_derivatives_pass(gpu, Coords::Grid { w: wd }, h * wd).unwrap();
        assert_eq!(grid, model.forward_derivatives(gpu, &coords).unwrap(), "grid vs coordinates");
        // Three inputs are refused.
        let w3 = random_weights(&mut rng, &[3, 2, 1], 1);
        assert!(Cpikan::new(gpu, &w3).unwrap().forward_derivatives(gpu, &[0.0; 3]).is_err());
    }
}

#[test]
fn derivatives_match_pytorch() {
    let w = CpikanWeights::load(&fixture("cpikan_2_16_16_1.safetensors")).unwrap();
    let (shape, table) = npy::read_f32(&fixture("cpikan_deriv_2_16_16_1.npy")).unwrap();
    assert_eq!(shape, [64, 7]);
    let col = |q: usize| table.chunks(7).map(|r| r[q] as f64).collect::<Vec<f64>>();
    let coords: Vec<f32> = table.chunks(7).flat_map(|r| [r[0], r[1]]).collect();
    // The f64 reference agrees with autograd to f32 storage precision.
    let r = reference::network_derivatives(&reference::Net::from(&w), &f64s(&coords));
    for (q, got) in [(2, &r.u), (3, &r.ux), (4, &r.uy), (5, &r.uxx), (6, &r.uyy)] {
        check(&f32s(got), &col(q), 1e-6, &format!("reference column {q} vs PyTorch"));
    }
    for gpu in gpus() {
        let model = Cpikan::new(gpu, &w).unwrap();
        let got = model.forward_derivatives(gpu, &coords).unwrap();
        let mut figures = Vec::new();
        for (q, name, g) in
            [(2, "u", &got.u), (3, "u_x", &got.ux), (4, "u_y", &got.uy), (5, "u_xx", &got.uxx), (6, "u_yy", &got.uyy)]
        {
            let e = check(g, &col(q), 1e-4, &format!("{} {name} vs PyTorch", gpu.describe()));
            figures.push(format!("{name} {e:.2e}"));
        }
        eprintln!("{}: derivatives vs PyTorch relative L2: {}", gpu.describe(), figures.join(", "));
    }
}

/// The derivative pass's channels `(batch, d_out, 1 + 2 d_in)` from the f64 reference.
fn reference_channels(net: &reference::Net, coords: &[f64]) -> Vec<f64> {
    let d = net.config.d_in();
    let r = reference::network_derivatives(net, coords);
    let mut cols = vec![&r.u, &r.ux];
    if d == 2 {
        cols.push(&r.uy);
    }
    cols.push(&r.uxx);
    if d == 2 {
        cols.push(&r.uyy);
    }
    (0..r.u.len()).flat_map(|i| cols.iter().map(move |c| c[i]).collect::<Vec<f64>>()).collect()
}

fn derivative_loss(net: &reference::Net, coords: &[f64], g: &[f64]) -> f64 {
    reference_channels(net, coords).iter().zip(g).map(|(a, b)| a * b).sum()
}

#[test]
fn reference_derivative_backward_matches_finite_differences() {
    let mut rng = Rng::new(31);
    for (layers, degree) in [(vec![1, 5, 4, 1], 3), (vec![2, 4, 3, 1], 3), (vec![1, 6, 2], 5), (vec![2, 3, 2], 1)] {
        let w = random_weights(&mut rng, &layers, degree);
        let batch = 5;
        let ch = cpikan::channels(w.config.d_in());
        let coords = f64s(&coords_in_domain(&mut rng, &w.config, batch));
        let g = f64s(&rng.vec(batch * w.config.d_out() * ch, -1.0, 1.0));
        let net = reference::Net::from(&w);
        let grads = reference::network_derivatives_backward(&net, &coords, &g);
        let h = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for l in 0..net.coeffs.len() {
            for i in 0..net.coeffs[l].len() {
                got.push(grads.coeffs[l][i]);
                want.push(fd(&|e| {
                    let mut n = net.clone();
                    n.coeffs[l][i] += e;
                    derivative_loss(&n, &coords, &g)
                }));
            }
        }
        for l in 0..net.ln_weight.len() {
            for i in 0..net.ln_weight[l].len() {
                got.push(grads.ln_weight[l][i]);
                want.push(fd(&|e| {
                    let mut n = net.clone();
                    n.ln_weight[l][i] += e;
                    derivative_loss(&n, &coords, &g)
                }));
                got.push(grads.ln_bias[l][i]);
                want.push(fd(&|e| {
                    let mut n = net.clone();
                    n.ln_bias[l][i] += e;
                    derivative_loss(&n, &coords, &g)
                }));
            }
        }
        for i in 0..coords.len() {
            got.push(grads.coords[i]);
            want.push(fd(&|e| {
                let mut c = coords.clone();
                c[i] += e;
                derivative_loss(&net, &c, &g)
            }));
        }
        let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = want.iter().map(|b| b * b).sum();
        let e = (num / den).sqrt();
        eprintln!("layers {layers:?} K{degree}: derivative backward vs finite differences {e:.2e}");
        assert!(e < 1e-6, "layers {layers:?} K{degree}: derivative backward vs finite differences: {e:e}");
    }
}

#[test]
fn derivative_backward_kernels_match_reference() {
    // (batch, n_in, n_out, degree, dirs)
    let shapes = [(7, 3, 5, 1, 1), (33, 6, 7, 3, 2), (65, 13, 9, 5, 1), (3, 2, 1, 3, 1), (5, 1, 3, 0, 2)];
    let mut rng = Rng::new(32);
    for gpu in gpus() {
        for &(batch, n_in, n_out, degree, dirs) in &shapes {
            let s = ChebyShape { batch, n_in, n_out, degree };
            let ch = cpikan::channels(dirs);
            let what = format!("{} b{batch} {n_in}->{n_out} K{degree} D{dirs}", gpu.describe());
            let x = random_channels(&mut rng, batch, n_in, dirs, 0.0);
            let c = rng.vec(s.coeffs(), -0.5, 0.5);
            let dy = rng.vec(batch * n_out * ch, -1.0, 1.0);
            let (xb, cb, dyb) =
                (storage(gpu, "x", &x).unwrap(), storage(gpu, "c", &c).unwrap(), storage(gpu, "dy", &dy).unwrap());
            let dx = storage_zeroed(gpu, "dx", batch * n_in * ch).unwrap();
            let dc = storage_zeroed(gpu, "dc", s.coeffs()).unwrap();
            let k1 = cpikan::cheby_backward_derivatives_input(gpu, s, dirs, &xb, &cb, &dyb, &dx).unwrap();
            let [k2, k3] = cpikan::cheby_backward_derivatives_coeffs(gpu, s, dirs, &xb, &dyb, &dc).unwrap();
            gpu.run(&[&k1, &k2, &k3]).unwrap();
            let (wdx, wdc) = kref::cheby_backward_derivatives(s, dirs, &f64s(&x), &f64s(&c), &f64s(&dy));
            check(&read(gpu, &dx, batch * n_in * ch), &wdx, 1e-5, &format!("{what} cheby dx"));
            check(&read(gpu, &dc, s.coeffs()), &wdc, 1e-5, &format!("{what} cheby dc"));
            // At least 4 features: with 2, x̂ = ±1 and every tangent is pure f32 cancellation.
            let n = n_out.max(4);
            let offset = rng.uniform(-2.0, 2.0);
            let z = random_channels(&mut rng, batch, n, dirs, offset);
            let da = rng.vec(batch * n * ch, -1.0, 1.0);
            let (gamma, beta) = (rng.vec(n, 0.5, 1.5), rng.vec(n, -0.5, 0.5));
            let bufs: Vec<_> = [&z, &gamma, &beta, &da].iter().map(|v| storage(gpu, "in", v).unwrap()).collect();
            let dz = storage_zeroed(gpu, "dz", batch * n * ch).unwrap();
            let sc = [storage_zeroed(gpu, "du", batch * n).unwrap(), storage_zeroed(gpu, "dux", batch * n).unwrap()];
            let (dg, db) = (storage_zeroed(gpu, "dg", n).unwrap(), storage_zeroed(gpu, "db", n).unwrap());
            let scr = [&sc[0], &sc[1]];
            let (zb, gb, bb, dab) = (&bufs[0], &bufs[1], &bufs[2], &bufs[3]);
            let k1 =
                cpikan::layernorm_tanh_derivatives_backward(gpu, batch, n, dirs, zb, gb, bb, dab, &dz, scr).unwrap();
            let [k2, k3] = cpikan::layernorm_params_backward(gpu, batch, n, scr, &dg, &db).unwrap();
            gpu.run(&[&k1, &k2, &k3]).unwrap();
            let (wdz, wdg, wdb) =
                kref::layernorm_tanh_derivatives_backward(&f64s(&z), n, dirs, &f64s(&gamma), &f64s(&beta), &f64s(&da));
            check(&read(gpu, &dz, batch * n * ch), &wdz, 1e-4, &format!("{what} layernorm dz"));
            check(&read(gpu, &dg, n), &wdg, 1e-4, &format!("{what} layernorm dgamma"));
            check(&read(gpu, &db, n), &wdb, 1e-4, &format!("{what} layernorm dbeta"));
        }
    }
}

#[test]
fn gpu_derivative_backward_matches_reference() {
    let mut rng = Rng::new(33);
    for gpu in gpus() {
        for (layers, degree) in [(vec![1, 16, 16, 1], 3), (vec![2, 5, 3, 1], 3), (vec![1, 7, 2], 5), (vec![2, 6, 1], 1)]
        {
            let w = random_weights(&mut rng, &layers, degree);
            let batch = 41;
            let d = w.config.d_in();
            let n = batch * w.config.d_out();
            let coords = coords_in_domain(&mut rng, &w.config, batch);
            let model = Cpikan::new(gpu, &w).unwrap();
            let what = format!("{} layers {layers:?} K{degree}", gpu.describe());
            let (got, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
            assert_eq!(got, model.forward_derivatives(gpu, &coords).unwrap(), "{what}: train pass vs plain pass");
            let mut col = || rng.vec(n, -1.0, 1.0);
            let g = if d == 2 {
                Derivatives { u: col(), ux: col(), uy: col(), uxx: col(), uyy: col() }
            } else {
                Derivatives { u: col(), ux: col(), uy: Vec::new(), uxx: col(), uyy: Vec::new() }
            };
            let grads = model.backward_derivatives(gpu, &acts, &g).unwrap();
            let mut cols = vec![&g.u, &g.ux];
            if d == 2 {
                cols.push(&g.uy);
            }
            cols.push(&g.uxx);
            if d == 2 {
                cols.push(&g.uyy);
            }
            let gch: Vec<f64> = (0..n).flat_map(|i| cols.iter().map(move |v| v[i] as f64)).collect();
            let want = reference::network_derivatives_backward(&reference::Net::from(&w), &f64s(&coords), &gch);
            let mut worst: f64 = 0.0;
            for l in 0..want.coeffs.len() {
                worst = worst.max(check(&grads.coeffs[l], &want.coeffs[l], 1e-4, &format!("{what} dc{l}")));
            }
            for l in 0..want.ln_weight.len() {
                worst = worst.max(check(&grads.ln_weight[l], &want.ln_weight[l], 1e-4, &format!("{what} dg{l}")));
                worst = worst.max(check(&grads.ln_bias[l], &want.ln_bias[l], 1e-4, &format!("{what} db{l}")));
            }
            worst = worst.max(check(&grads.coords, &want.coords, 1e-4, &format!("{what} dcoords")));
            eprintln!("{what}: derivative backward vs reference worst relative L2 {worst:.2e}");
        }
    }
}

#[test]
fn chunked_batch_reductions_match_reference() {
    // Batches of several chunks (a whole number of them, and a partial last one): the two-stage
    // parameter-gradient sums against the reference, kernels and network, and bitwise repeatable.
    let mut rng = Rng::new(34);
    for gpu in gpus() {
        for batch in [2 * cpikan::CHUNK, 3000] {
            assert!(cpikan::n_chunks(batch) >= 2);
            let (n_in, n_out, degree, dirs) = (3, 5, 3, 2);
            let s = ChebyShape { batch, n_in, n_out, degree };
            let ch = cpikan::channels(dirs);
            let what = format!("{} b{batch} ({} chunks)", gpu.describe(), cpikan::n_chunks(batch));
            let x = random_channels(&mut rng, batch, n_in, dirs, 0.0);
            let x0: Vec<f32> = x.iter().step_by(ch).copied().collect();
            let dy = rng.vec(batch * n_out * ch, -1.0, 1.0);
            let dy0 = rng.vec(batch * n_out, -1.0, 1.0);
            let bufs: Vec<_> = [&x, &x0, &dy, &dy0].iter().map(|v| storage(gpu, "in", v).unwrap()).collect();
            let (dc, dcd) =
                (storage_zeroed(gpu, "dc", s.coeffs()).unwrap(), storage_zeroed(gpu, "dcd", s.coeffs()).unwrap());
            let [k1, k2] = cpikan::cheby_backward_coeffs(gpu, s, &bufs[1], &bufs[3], &dc).unwrap();
            let [k3, k4] = cpikan::cheby_backward_derivatives_coeffs(gpu, s, dirs, &bufs[0], &bufs[2], &dcd).unwrap();
            // LayerNorm parameter sums straight from random scratch (du, dux).
            let n = 7;
            let (du, dux) = (rng.vec(batch * n, -1.0, 1.0), rng.vec(batch * n, -1.0, 1.0));
            let sc = [storage(gpu, "du", &du).unwrap(), storage(gpu, "dux", &dux).unwrap()];
            let (dg, db) = (storage_zeroed(gpu, "dg", n).unwrap(), storage_zeroed(gpu, "db", n).unwrap());
            let [k5, k6] = cpikan::layernorm_params_backward(gpu, batch, n, [&sc[0], &sc[1]], &dg, &db).unwrap();
            gpu.run(&[&k1, &k2, &k3, &k4, &k5, &k6]).unwrap();
            let want = kref::cheby_backward_coeffs(s, &f64s(&x0), &f64s(&dy0));
            check(&read(gpu, &dc, s.coeffs()), &want, 1e-5, &format!("{what} cheby dc"));
            let c = vec![0.0; s.coeffs()];
            let (_, want) = kref::cheby_backward_derivatives(s, dirs, &f64s(&x), &c, &f64s(&dy));
            check(&read(gpu, &dcd, s.coeffs()), &want, 1e-5, &format!("{what} derivative dc"));
            let col_sum = |v: &[f32]| (0..n).map(|j| v.iter().skip(j).step_by(n).map(|&a| a as f64).sum()).collect();
            let (wdg, wdb): (Vec<f64>, Vec<f64>) = (col_sum(&dux), col_sum(&du));
            check(&read(gpu, &dg, n), &wdg, 1e-5, &format!("{what} dgamma"));
            check(&read(gpu, &db, n), &wdb, 1e-5, &format!("{what} dbeta"));
        }
        // The whole derivative backward and the plain backward at 3000 points.
        let w = random_weights(&mut rng, &[2, 5, 3, 1], 3);
        let batch = 3000;
        let coords = coords_in_domain(&mut rng, &w.config, batch);
        let model = Cpikan::new(gpu, &w).unwrap();
        let net = reference::Net::from(&w);
        let what = format!("{} layers [2, 5, 3, 1] at {batch} points", gpu.describe());
        let (_, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
        let mut col = || rng.vec(batch, -1.0, 1.0);
        let g = Derivatives { u: col(), ux: col(), uy: col(), uxx: col(), uyy: col() };
        let grads = model.backward_derivatives(gpu, &acts, &g).unwrap();
        let again = model.backward_derivatives(gpu, &acts, &g).unwrap();
        assert_eq!(
            (&grads.coeffs, &grads.ln_weight, &grads.ln_bias),
            (&again.coeffs, &again.ln_weight, &again.ln_bias),
            "{what}: not deterministic"
        );
        let gch: Vec<f64> =
            (0..batch).flat_map(|i| [g.u[i], g.ux[i], g.uy[i], g.uxx[i], g.uyy[i]].map(|v| v as f64)).collect();
        let want = reference::network_derivatives_backward(&net, &f64s(&coords), &gch);
        let dy = rng.vec(batch, -1.0, 1.0);
        let cb = storage(gpu, "coords", &coords).unwrap();
        let plain = model.backward(gpu, &model.forward_pass(gpu, Coords::Buffer(&cb), batch).unwrap(), &dy).unwrap();
        let want_plain = reference::network_backward(&net, &f64s(&coords), &f64s(&dy));
        // The reductions themselves are checked at 1e-5 above; here the bound is that of the f32
        // derivative channels (per-sample relative error ~1e-4 whatever the batch; GL is the worse).
        let (mut worst, mut worst_plain): (f64, f64) = (0.0, 0.0);
        let bound = 3e-4;
        for l in 0..3 {
            worst = worst.max(check(&grads.coeffs[l], &want.coeffs[l], bound, &format!("{what} derivative dc{l}")));
            worst_plain =
                worst_plain.max(check(&plain.coeffs[l], &want_plain.coeffs[l], 1e-4, &format!("{what} dc{l}")));
        }
        for l in 0..2 {
            worst =
                worst.max(check(&grads.ln_weight[l], &want.ln_weight[l], bound, &format!("{what} derivative dg{l}")));
            worst = worst.max(check(&grads.ln_bias[l], &want.ln_bias[l], bound, &format!("{what} derivative db{l}")));
            worst_plain =
                worst_plain.max(check(&plain.ln_weight[l], &want_plain.ln_weight[l], 1e-4, &format!("{what} dg{l}")));
            worst_plain =
                worst_plain.max(check(&plain.ln_bias[l], &want_plain.ln_bias[l], 1e-4, &format!("{what} db{l}")));
        }
        eprintln!(
            "{what}: chunked parameter gradients vs reference worst relative L2: derivative pass {worst:.2e}, \
             plain backward {worst_plain:.2e}"
        );
    }
}

/// All parameter gradients in the fixture's order (coefficients, then LayerNorm weight and bias).
fn flat_grads(coeffs: &[Vec<f32>], ln_weight: &[Vec<f32>], ln_bias: &[Vec<f32>]) -> Vec<f32> {
    let mut v = coeffs.concat();
    for (g, b) in ln_weight.iter().zip(ln_bias) {
        v.extend_from_slice(g);
        v.extend_from_slice(b);
    }
    v
}

#[test]
fn derivative_backward_matches_pytorch() {
    // L = Σ g0 u + g1 u_x + g2 u_y + g3 u_xx + g4 u_yy at the points of cpikan_deriv_2_16_16_1.npy;
    // PyTorch differentiates its autograd derivatives (create_graph=True) once more.
    let w = CpikanWeights::load(&fixture("cpikan_2_16_16_1.safetensors")).unwrap();
    let (_, table) = npy::read_f32(&fixture("cpikan_deriv_2_16_16_1.npy")).unwrap();
    let coords: Vec<f32> = table.chunks(7).flat_map(|r| [r[0], r[1]]).collect();
    let fx = Weights::load(&fixture("cpikan_deriv_grads_2_16_16_1.safetensors")).unwrap();
    let batch = 64;
    let g = fx.get("g", &[batch, 5]).unwrap().data.clone();
    let want_t = |name: &str| f64s(&fx.tensors[&format!("grad.network.{name}")].data);
    let want: Vec<(String, Vec<f64>)> = ["0.cheby_coeffs", "3.cheby_coeffs", "6.cheby_coeffs"]
        .iter()
        .chain(&["1.weight", "1.bias", "4.weight", "4.bias"])
        .map(|n| (n.to_string(), want_t(n)))
        .collect();
    let want_flat: Vec<f32> = want.iter().flat_map(|(_, v)| f32s(v)).collect();
    let col = |g: &[f32], q: usize| g.chunks(5).map(|r| r[q]).collect::<Vec<f32>>();
    let channels =
        |g: &[f32]| Derivatives { u: col(g, 0), ux: col(g, 1), uy: col(g, 2), uxx: col(g, 3), uyy: col(g, 4) };
    // The f64 reference agrees with autograd to f32 storage precision.
    let r = reference::network_derivatives_backward(&reference::Net::from(&w), &f64s(&coords), &f64s(&g));
    let down = |v: &[Vec<f64>]| v.iter().map(|t| f32s(t)).collect::<Vec<_>>();
    let e = rel_l2(&flat_grads(&down(&r.coeffs), &down(&r.ln_weight), &down(&r.ln_bias)), &want_flat);
    eprintln!("reference derivative backward vs PyTorch relative L2 {e:.2e}");
    assert!(e < 1e-6, "reference derivative backward vs PyTorch: relative L2 {e:e}");
    for gpu in gpus() {
        let model = Cpikan::new(gpu, &w).unwrap();
        let (_, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
        let grads = model.backward_derivatives(gpu, &acts, &channels(&g)).unwrap();
        let got: Vec<&[f32]> = vec![
            &grads.coeffs[0],
            &grads.coeffs[1],
            &grads.coeffs[2],
            &grads.ln_weight[0],
            &grads.ln_bias[0],
            &grads.ln_weight[1],
            &grads.ln_bias[1],
        ];
        let mut figures = Vec::new();
        for (got, (name, want)) in got.iter().zip(&want) {
            let e = check(got, want, 1e-4, &format!("{} grad.network.{name} vs PyTorch", gpu.describe()));
            figures.push(format!("{name} {e:.2e}"));
        }
        let e = rel_l2(&flat_grads(&grads.coeffs, &grads.ln_weight, &grads.ln_bias), &want_flat);
        eprintln!("{}: derivative backward vs PyTorch relative L2 {e:.2e} ({})", gpu.describe(), figures.join(", "));
        // Every channel's adjoint matters at this tolerance: without it the gradients are far off.
        let mut offs = Vec::new();
        for q in 0..5 {
            let mut gq = g.clone();
            gq.iter_mut().skip(q).step_by(5).for_each(|v| *v = 0.0);
            let gr = model.backward_derivatives(gpu, &acts, &channels(&gq)).unwrap();
            let off = rel_l2(&flat_grads(&gr.coeffs, &[], &[]), &flat_grads(&grads.coeffs, &[], &[]));
            assert!(off > 1e-2, "{}: channel {q} changes the coefficient gradients by only {off:e}", gpu.describe());
            offs.push(format!("{off:.2}"));
        }
        eprintln!("{}: dropping channel u, u_x, u_y, u_xx, u_yy changes them by {}", gpu.describe(), offs.join(", "));
    }
}

/// Wall time of one derivative backward of a [2, 16, 16, 1] network at 65536 points (or
/// `CPIKAN_TIMING_BATCH`) on the first adapter, median of 5 after a warm-up. Not a check: run with
/// `cargo test --release --test cpikan derivative_backward_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn derivative_backward_timing() {
    let batch = std::env::var("CPIKAN_TIMING_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(65536);
    let gpu = &gpus()[0];
    let mut rng = Rng::new(41);
    let w = random_weights(&mut rng, &[2, 16, 16, 1], 3);
    let coords = coords_in_domain(&mut rng, &w.config, batch);
    let model = Cpikan::new(gpu, &w).unwrap();
    let (_, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
    let mut col = || rng.vec(batch, -1.0, 1.0);
    let g = Derivatives { u: col(), ux: col(), uy: col(), uxx: col(), uyy: col() };
    let first = model.backward_derivatives(gpu, &acts, &g).unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let grads = model.backward_derivatives(gpu, &acts, &g).unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(grads.coeffs, first.coeffs, "derivative backward is not deterministic");
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "{}: derivative backward of [2, 16, 16, 1] at {batch} points: median {:.3} s (min {:.3} s)",
        gpu.describe(),
        times[2],
        times[0]
    );
    // The coefficient-gradient reductions alone, for each layer's shape.
    let dirs = 2;
    let ch = cpikan::channels(dirs);
    let mut kernels = Vec::new();
    let mut keep = Vec::new();
    for l in 0..3 {
        let s = w.config.shape(l, batch);
        let x = storage(gpu, "x", &random_channels(&mut rng, batch, s.n_in, dirs, 0.0)).unwrap();
        let dy = storage(gpu, "dy", &rng.vec(batch * s.n_out * ch, -1.0, 1.0)).unwrap();
        let dc = storage_zeroed(gpu, "dc", s.coeffs()).unwrap();
        kernels.extend(cpikan::cheby_backward_derivatives_coeffs(gpu, s, dirs, &x, &dy, &dc).unwrap());
        keep.push((x, dy, dc));
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
        "{}: cheby_backward_derivatives_coeffs of the 3 layers at {batch} points: median {:.3} s (min {:.3} s)",
        gpu.describe(),
        times[2],
        times[0]
    );
}
