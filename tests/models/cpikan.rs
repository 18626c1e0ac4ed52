//! The Scaled-cPIKAN network (`psi_gpu::nn::cpikan`) in both passes (the values, and the
//! forward-mode input derivatives u, u_x, u_y, u_xx, u_yy): the f64 reference network's
//! gradients and derivatives against finite differences, the GPU network against the reference
//! (batches of several reduction chunks included), and parity with PyTorch (tests/fixtures/cpikan_*,
//! made by make_cpikan_fixtures.py): the output and parameter gradients, the derivatives, and the
//! gradients of a loss on them (second-order autograd through an explicit LayerNorm), on every
//! adapter. The kernels themselves: tests/ops/chebykan.rs.

use crate::common::{Rng, Tol, assert_close, fixture, gpus, rel_l2};
use psi_gpu::gpu::storage_f32 as storage;
use psi_gpu::io::npy;
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::cpikan::{Cpikan, CpikanConfig, CpikanGrads, CpikanWeights, Derivatives, flatten, reference};
use psi_gpu::ops::chebykan::{Coords, Pass};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Relative L2 of `got` against `want` under `bound`, and every element within
/// `10 · bound · max|want|`; returns the relative L2.
fn check(got: &[f32], want: &[f64], bound: f64, what: &str) -> f64 {
    let want = f32s(want);
    let peak = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30) as f64;
    assert_close(got, &want, &Tol { rel: 0.0, abs: 10.0 * bound * peak, l2: bound }, what);
    rel_l2(got, &want)
}

/// [`check`] on every parameter gradient (and the coordinates' if `coords`); the worst relative L2.
fn check_grads(got: &CpikanGrads, want: &reference::Grads, bound: f64, coords: bool, what: &str) -> f64 {
    let mut worst: f64 = 0.0;
    for (name, g, w) in [
        ("dcoeffs", &got.coeffs, &want.coeffs),
        ("dgamma", &got.ln_weight, &want.ln_weight),
        ("dbeta", &got.ln_bias, &want.ln_bias),
    ] {
        for l in 0..w.len() {
            worst = worst.max(check(&g[l], &w[l], bound, &format!("{what} {name} {l}")));
        }
    }
    if coords {
        worst = worst.max(check(&got.coords, &want.coords, bound, &format!("{what} dcoords")));
    }
    worst
}

fn rel_l2_f64(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    (num / want.iter().map(|b| b * b).sum::<f64>()).sqrt()
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

/// The derivative pass of a network with `d_in` inputs.
fn derivatives(d_in: usize) -> Pass {
    Pass::Derivatives { dirs: d_in }
}

/// Random output-channel gradients of a derivative pass, `(batch, d_out)` each.
fn random_channel_grads(rng: &mut Rng, n: usize, d_in: usize) -> Derivatives {
    let mut col = || rng.vec(n, -1.0, 1.0);
    let (u, ux) = (col(), col());
    let uy = if d_in == 2 { col() } else { Vec::new() };
    let uxx = col();
    let uyy = if d_in == 2 { col() } else { Vec::new() };
    Derivatives { u, ux, uy, uxx, uyy }
}

/// `Σ output channel · g` of the reference network's `pass`.
fn loss(net: &reference::Net, pass: Pass, coords: &[f64], g: &[f64]) -> f64 {
    let (_, outputs) = reference::network_forward(net, pass, coords);
    outputs.last().unwrap().iter().zip(g).map(|(a, b)| a * b).sum()
}

#[test]
fn reference_backward_matches_finite_differences() {
    let values = [(vec![2, 5, 3, 2], 3), (vec![1, 4, 1], 5), (vec![3, 6, 1], 1), (vec![2, 3, 2], 0)];
    let derivative = [(vec![1, 5, 4, 1], 3), (vec![2, 4, 3, 1], 3), (vec![1, 6, 2], 5), (vec![2, 3, 2], 1)];
    let cases = values.map(|c| (false, c)).into_iter().chain(derivative.map(|c| (true, c)));
    let mut rng = Rng::new(14);
    for (is_derivative, (layers, degree)) in cases {
        let w = random_weights(&mut rng, &layers, degree);
        let pass = if is_derivative { derivatives(w.config.d_in()) } else { Pass::Values };
        let batch = 5;
        let coords = f64s(&coords_in_domain(&mut rng, &w.config, batch));
        let g = f64s(&rng.vec(batch * w.config.d_out() * pass.channels(), -1.0, 1.0));
        let net = reference::Net::from(&w);
        let grads = reference::network_backward(&net, pass, &coords, &g);
        let h = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        // Central differences of every parameter of the tensors `pick` selects.
        let fd_of = |pick: fn(&mut reference::Net) -> &mut Vec<Vec<f64>>| -> Vec<Vec<f64>> {
            let lens: Vec<usize> = pick(&mut net.clone()).iter().map(Vec::len).collect();
            let at = |l: usize, i: usize| {
                fd(&|e| {
                    let mut n = net.clone();
                    pick(&mut n)[l][i] += e;
                    loss(&n, pass, &coords, &g)
                })
            };
            lens.iter().enumerate().map(|(l, &len)| (0..len).map(|i| at(l, i)).collect()).collect()
        };
        let mut want = flatten(&fd_of(|n| &mut n.coeffs), &fd_of(|n| &mut n.ln_weight), &fd_of(|n| &mut n.ln_bias));
        want.extend((0..coords.len()).map(|i| {
            fd(&|e| {
                let mut c = coords.clone();
                c[i] += e;
                loss(&net, pass, &c, &g)
            })
        }));
        let mut got = grads.flat();
        got.extend(&grads.coords);
        let e = rel_l2_f64(&got, &want);
        eprintln!("{pass:?} layers {layers:?} K{degree}: reference backward vs finite differences {e:.2e}");
        assert!(e < 1e-6, "{pass:?} layers {layers:?} K{degree}: reference backward vs finite differences: {e:e}");
    }
}

#[test]
fn reference_derivatives_match_finite_differences() {
    let configs =
        [(vec![2, 5, 3, 1], 3), (vec![1, 7, 1], 5), (vec![2, 6, 9, 2], 1), (vec![1, 3, 5, 1], 3), (vec![2, 7, 1], 5)];
    let mut rng = Rng::new(22);
    for (layers, degree) in configs {
        let w = random_weights(&mut rng, &layers, degree);
        let net = reference::Net::from(&w);
        let d = w.config.d_in();
        let coords = f64s(&coords_in_domain(&mut rng, &w.config, 6));
        let r = reference::network_derivatives(&net, &coords);
        let u = |c: &[f64]| reference::network_forward(&net, Pass::Values, c).1.last().unwrap().clone();
        assert_eq!(r.u, u(&coords), "layers {layers:?}: value");
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
            let (p1, p2) = (rel_l2_f64(g1, &d1h), rel_l2_f64(g2, &d2h));
            let (e1, e2) = (rel_l2_f64(g1, &rich(&d1, &d1h)), rel_l2_f64(g2, &rich(&d2, &d2h)));
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
            let c64 = f64s(&coords);
            let (_, outputs) = reference::network_forward(&net, Pass::Values, &c64);
            check(&got, outputs.last().unwrap(), 1e-5, &format!("{what} output"));
            let g = model.backward(gpu, &acts, &dy).unwrap();
            let r = reference::network_backward(&net, Pass::Values, &c64, &f64s(&dy));
            // Degree 0: the output does not depend on the coordinates.
            check_grads(&g, &r, 1e-4, degree > 0, &what);
        }
    }
}

#[test]
fn gpu_derivative_pass_matches_reference() {
    let configs = [
        (vec![2, 5, 3, 1], 3),
        (vec![1, 7, 1], 5),
        (vec![2, 6, 9, 2], 1),
        (vec![1, 3, 5, 1], 3),
        (vec![2, 7, 1], 5),
        (vec![1, 16, 16, 1], 3),
        (vec![1, 7, 2], 5),
        (vec![2, 6, 1], 1),
    ];
    let mut rng = Rng::new(23);
    for gpu in gpus() {
        for (layers, degree) in &configs {
            let w = random_weights(&mut rng, layers, *degree);
            let (batch, d) = (41, w.config.d_in());
            let coords = coords_in_domain(&mut rng, &w.config, batch);
            let model = Cpikan::new(gpu, &w).unwrap();
            let net = reference::Net::from(&w);
            let what = format!("{} layers {layers:?} K{degree}", gpu.describe());
            let (got, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
            assert_eq!(got, model.forward_derivatives(gpu, &coords).unwrap(), "{what}: train pass vs plain pass");
            let r = reference::network_derivatives(&net, &f64s(&coords));
            check(&got.u, &r.u, 1e-5, &format!("{what} u"));
            check(&got.u, &f64s(&model.forward(gpu, &coords).unwrap()), 1e-6, &format!("{what} u vs forward"));
            let mut worst: f64 = 0.0;
            for (name, g, want) in
                [("ux", &got.ux, &r.ux), ("uxx", &got.uxx, &r.uxx), ("uy", &got.uy, &r.uy), ("uyy", &got.uyy, &r.uyy)]
            {
                worst = worst.max(check(g, want, 1e-4, &format!("{what} {name}")));
            }
            assert_eq!(got.uy.is_empty(), d == 1, "{what}: uy exactly for d_in = 2");
            // The backward of a random loss on the channels.
            let n = batch * w.config.d_out();
            let g = random_channel_grads(&mut rng, n, d);
            let grads = model.backward_derivatives(gpu, &acts, &g).unwrap();
            let gch = f64s(&g.to_channels(d, n).unwrap());
            let want = reference::network_backward(&net, derivatives(d), &f64s(&coords), &gch);
            let worst_grads = check_grads(&grads, &want, 1e-4, true, &what);
            eprintln!(
                "{what}: derivatives vs reference worst relative L2 {worst:.2e}, their backward {worst_grads:.2e}"
            );
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
fn gpu_gradients_over_several_chunks_match_reference() {
    // 3000 points: the two-stage parameter-gradient sums over 12 chunks, in both passes, against
    // the reference, and bitwise repeatable.
    let mut rng = Rng::new(34);
    for gpu in gpus() {
        let w = random_weights(&mut rng, &[2, 5, 3, 1], 3);
        let batch = 3000;
        let coords = coords_in_domain(&mut rng, &w.config, batch);
        let model = Cpikan::new(gpu, &w).unwrap();
        let net = reference::Net::from(&w);
        let what = format!("{} layers [2, 5, 3, 1] at {batch} points", gpu.describe());
        let (_, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
        let g = random_channel_grads(&mut rng, batch, 2);
        let grads = model.backward_derivatives(gpu, &acts, &g).unwrap();
        let again = model.backward_derivatives(gpu, &acts, &g).unwrap();
        assert_eq!(
            (&grads.coeffs, &grads.ln_weight, &grads.ln_bias),
            (&again.coeffs, &again.ln_weight, &again.ln_bias),
            "{what}: not deterministic"
        );
        let gch = f64s(&g.to_channels(2, batch).unwrap());
        let want = reference::network_backward(&net, derivatives(2), &f64s(&coords), &gch);
        let dy = rng.vec(batch, -1.0, 1.0);
        let cb = storage(gpu, "coords", &coords).unwrap();
        let plain = model.backward(gpu, &model.forward_pass(gpu, Coords::Buffer(&cb), batch).unwrap(), &dy).unwrap();
        let want_plain = reference::network_backward(&net, Pass::Values, &f64s(&coords), &f64s(&dy));
        // The reductions themselves are checked at 1e-5 in tests/ops/chebykan.rs; here the bound
        // is that of the f32 derivative channels (per-sample relative error ~1e-4 whatever the
        // batch; GL is the worse).
        let worst = check_grads(&grads, &want, 3e-4, false, &format!("{what} derivative pass"));
        let worst_plain = check_grads(&plain, &want_plain, 1e-4, false, &what);
        eprintln!(
            "{what}: chunked parameter gradients vs reference worst relative L2: derivative pass {worst:.2e}, \
             plain backward {worst_plain:.2e}"
        );
    }
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
        let want = reference::Grads {
            coeffs: [0, 3, 6].map(|m| grad(&format!("network.{m}.cheby_coeffs"))).to_vec(),
            ln_weight: [1, 4].map(|m| grad(&format!("network.{m}.weight"))).to_vec(),
            ln_bias: [1, 4].map(|m| grad(&format!("network.{m}.bias"))).to_vec(),
            coords: Vec::new(),
        };
        let worst = check_grads(&gr, &want, 1e-4, false, &format!("{} gradients vs PyTorch", gpu.describe()));
        eprintln!("{}: gradients vs PyTorch worst relative L2 {worst:e}", gpu.describe());
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
    // The f64 reference agrees with autograd to f32 storage precision.
    let r = reference::network_backward(&reference::Net::from(&w), derivatives(2), &f64s(&coords), &f64s(&g));
    let e = rel_l2(&f32s(&r.flat()), &want_flat);
    eprintln!("reference derivative backward vs PyTorch relative L2 {e:.2e}");
    assert!(e < 1e-6, "reference derivative backward vs PyTorch: relative L2 {e:e}");
    for gpu in gpus() {
        let model = Cpikan::new(gpu, &w).unwrap();
        let (_, acts) = model.forward_derivatives_train(gpu, &coords).unwrap();
        let grads = model.backward_derivatives(gpu, &acts, &Derivatives::from_channels(&g, 2)).unwrap();
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
        let e = rel_l2(&grads.flat(), &want_flat);
        eprintln!("{}: derivative backward vs PyTorch relative L2 {e:.2e} ({})", gpu.describe(), figures.join(", "));
        // Every channel's adjoint matters at this tolerance: without it the gradients are far off.
        let mut offs = Vec::new();
        for q in 0..5 {
            let mut gq = g.clone();
            gq.iter_mut().skip(q).step_by(5).for_each(|v| *v = 0.0);
            let gr = model.backward_derivatives(gpu, &acts, &Derivatives::from_channels(&gq, 2)).unwrap();
            let off = rel_l2(&gr.coeffs.concat(), &grads.coeffs.concat());
            assert!(off > 1e-2, "{}: channel {q} changes the coefficient gradients by only {off:e}", gpu.describe());
            offs.push(format!("{off:.2}"));
        }
        eprintln!("{}: dropping channel u, u_x, u_y, u_xx, u_yy changes them by {}", gpu.describe(), offs.join(", "));
    }
}

/// Wall time of one derivative backward of a [2, 16, 16, 1] network at 65536 points (or
/// `CPIKAN_TIMING_BATCH`) on the first adapter, median of 5 after a warm-up. Not a check: run with
/// `cargo test --release --test models derivative_backward_timing -- --ignored --nocapture`
/// (its coefficient reductions alone: `cheby_backward_coeffs_timing` in tests/ops/chebykan.rs).
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
    let g = random_channel_grads(&mut rng, batch, 2);
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
}
