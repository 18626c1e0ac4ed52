//! The GPU frame generator against the CPU models: seed heights and buckets, u8/u16/f16
//! quantisation, banding invariance, noise statistics and random surfaces, on every adapter.

use crate::common::{TempPath, gpus};
use psi_gpu::Gpu;
use psi_gpu::HostType;
use psi_gpu::commands::generate::{GenerateStats, generate};
use psi_gpu::io::npy::{NpyReader, read_f32};
use psi_gpu::psi::PsiConfig;
use psi_gpu::psi::buckets as synth;
use psi_gpu::psi::surface::seed_heights;
use psi_gpu::psi::surface::{Shape, random_heights_cpu};
use psi_gpu::psi::synthetic::{GenerateOptions, heights_cpu, model_cpu};

/// A generated frame: raw bucket bytes, its shape, and the true heights.
struct Frame {
    bytes: Vec<u8>,
    shape: Vec<usize>,
    truth: Vec<f32>,
    stats: GenerateStats,
}

fn run(gpu: &Gpu, opts: &GenerateOptions) -> Frame {
    let (out, truth) = (TempPath::new("buckets"), TempPath::new("truth"));
    let mut last = 0;
    let stats = generate(gpu, opts, &out.0, Some(&truth.0), |done, total| {
        assert!(done > last && done <= total, "progress {done}/{total} after {last}");
        last = done;
    })
    .unwrap_or_else(|e| panic!("{}: {e}", gpu.describe()));
    assert_eq!(last, opts.height, "progress reaches the last row");
    let mut reader = NpyReader::open(&out.0).unwrap();
    assert_eq!(reader.header().ty, opts.dtype);
    let shape = reader.header().shape.clone();
    assert_eq!(shape, [opts.channels(), opts.height, opts.width]);
    let bytes = reader.read_all().unwrap();
    let (tshape, truth) = read_f32(&truth.0).unwrap();
    assert_eq!(tshape, [opts.height, opts.width]);
    Frame { bytes, shape, truth, stats }
}

fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn seed_opts(h: usize, w: usize, dtype: HostType) -> GenerateOptions {
    GenerateOptions { height: h, width: w, dtype, ..Default::default() }
}

#[test]
fn seed_f32_matches_the_cpu_model() {
    let (h, w) = (37, 53);
    let want_h = seed_heights(h, w);
    let want = synth::buckets(&want_h, h, w, &synth::SynthConfig::default());
    for gpu in gpus() {
        let f = run(gpu, &GenerateOptions { band_rows: 16, ..seed_opts(h, w, HostType::F32) });
        let got: &[f32] = bytemuck::cast_slice(&f.bytes);
        let eh = max_abs_diff(f.truth.iter().map(|&v| v as f64), want_h.iter().map(|&v| v as f64));
        let eb = max_abs_diff(got.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
        // The bucket computation alone, on the GPU's own heights.
        let model = model_cpu(&seed_opts(h, w, HostType::F32), &f.truth);
        let em = max_abs_diff(got.iter().map(|&v| v as f64), model.iter().copied());
        eprintln!("{}: heights {eh:e} µm, buckets {eb:e} counts (on its own heights {em:e})", gpu.describe());
        assert!(eh <= 1e-5, "heights off by {eh:e} µm");
        assert!(eb <= 2e-3, "buckets off by {eb:e} counts");
        assert!(em <= 1e-4, "buckets off by {em:e} counts from the model of the written heights");
        let (lo, hi) = f.stats.height_range;
        let want_lo = want_h.iter().copied().fold(f32::INFINITY, f32::min);
        let want_hi = want_h.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!((lo - want_lo).abs() < 1e-4 && (hi - want_hi).abs() < 1e-4, "range {lo}..{hi}");
        assert_eq!(f.stats.bands, 3);
    }
}

/// Integer outputs: within half a count of the f64 model of the written heights, equal to the
/// quantised f32 CPU model except at rounding ties: at most `tie_share` of the values may be off
/// by one (f32 on the GPU is good to about 1e-7 of B, so near-ties round either way).
fn check_integers(gpu: &Gpu, opts: &GenerateOptions, cpu_f32: Option<&[f32]>, tie_share: f64) {
    let f = run(gpu, opts);
    let got: Vec<f64> = match opts.dtype {
        HostType::U8 => f.bytes.iter().map(|&b| b as f64).collect(),
        HostType::U16 => bytemuck::pod_collect_to_vec::<u8, u16>(&f.bytes).iter().map(|&v| v as f64).collect(),
        other => panic!("{other:?}"),
    };
    let model = model_cpu(opts, &f.truth);
    let max = if opts.dtype == HostType::U8 { 255.0 } else { 65535.0 };
    let e = max_abs_diff(got.iter().copied(), model.iter().map(|&v| v.clamp(0.0, max)));
    // f32 rounding of values up to 65535 is 0.004; the phase error scales with B.
    let slack = 1e-3 + 2e-6 * opts.psi.b as f64;
    assert!(e <= 0.5 + slack, "{}: {:?} off the f64 model by {e}", gpu.describe(), opts.dtype);
    let quantize = |v: &[f32]| -> Vec<f64> {
        match opts.dtype {
            HostType::U8 => synth::quantize_u8(v).iter().map(|&q| q as f64).collect(),
            _ => synth::quantize_u16(v).iter().map(|&q| q as f64).collect(),
        }
    };
    let own: Vec<f32> = model.iter().map(|&v| v as f32).collect();
    let mut references = vec![("own heights", quantize(&own))];
    if let Some(v) = cpu_f32 {
        references.push(("CPU synth", quantize(v)));
    }
    for (name, want) in references {
        let off: Vec<f64> = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).filter(|&d| d > 0.0).collect();
        eprintln!("{}: {:?} vs {name}: {} of {} differ", gpu.describe(), opts.dtype, off.len(), got.len());
        assert!(off.iter().all(|&d| d <= 1.0), "{name}: a value is off by more than 1");
        let share = off.len() as f64 / got.len() as f64;
        assert!(share <= tie_share, "{name}: {} of {} values differ", off.len(), got.len());
    }
}

#[test]
fn u8_and_u16_quantise_like_the_cpu() {
    let (h, w) = (37, 53);
    let cpu = synth::buckets(&seed_heights(h, w), h, w, &synth::SynthConfig::default());
    // A 12-bit camera in u16 words, and the full 16-bit range, where f32's 1e-7 of B = 20000 is
    // 2e-3 counts and about 0.2 % of the values sit close enough to a tie to round the other way.
    let u16_opts = GenerateOptions {
        psi: PsiConfig { a: 2000.0, b: 1500.0, ..Default::default() },
        shape: Shape::Random,
        seed: 5,
        ab_variation: 0.3,
        band_rows: 10,
        ..seed_opts(29, 41, HostType::U16)
    };
    let u16_full = GenerateOptions {
        psi: PsiConfig { a: 30000.0, b: 20000.0, ..Default::default() },
        band_rows: 64,
        ..u16_opts.clone()
    };
    // Clipping at both ends of u8.
    let clipped = GenerateOptions {
        psi: PsiConfig { a: 128.0, b: 200.0, ..Default::default() },
        band_rows: 9,
        ..seed_opts(h, w, HostType::U8)
    };
    for gpu in gpus() {
        check_integers(gpu, &GenerateOptions { band_rows: 8, ..seed_opts(h, w, HostType::U8) }, Some(&cpu), 1e-3);
        check_integers(gpu, &u16_opts, None, 1e-3);
        check_integers(gpu, &u16_full, None, 1e-2);
        check_integers(gpu, &clipped, None, 1e-3);
    }
}

#[test]
fn f16_is_the_f32_output_rounded() {
    let opts = GenerateOptions { shape: Shape::Random, seed: 3, noise: 1.5, ..seed_opts(23, 31, HostType::F32) };
    // Large values (to infinity), small and subnormal ones.
    let extremes = GenerateOptions { psi: PsiConfig { a: 0.0, b: 70000.0, ..Default::default() }, ..opts.clone() };
    let tiny = GenerateOptions { psi: PsiConfig { a: 0.0, b: 1e-4, ..Default::default() }, noise: 0.0, ..opts.clone() };
    for gpu in gpus() {
        for o in [&opts, &extremes, &tiny] {
            let f32_frame = run(gpu, o);
            let f16_frame = run(gpu, &GenerateOptions { dtype: HostType::F16, band_rows: 5, ..o.clone() });
            let want: Vec<u16> = bytemuck::cast_slice::<u8, f32>(&f32_frame.bytes)
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect();
            let got: Vec<u16> = bytemuck::pod_collect_to_vec(&f16_frame.bytes);
            assert_eq!(got, want, "{}: a = {}, b = {}", gpu.describe(), o.psi.a, o.psi.b);
        }
    }
}

#[test]
fn bands_do_not_change_the_bytes() {
    for gpu in gpus() {
        for dtype in [HostType::U8, HostType::U16, HostType::F16, HostType::F32] {
            let opts = GenerateOptions {
                shape: Shape::Random,
                seed: 17,
                noise: 3.0,
                ab_variation: 0.2,
                psi: PsiConfig::with(vec![5.0, 6.3, 7.1], 3),
                ..seed_opts(37, 53, dtype)
            };
            let a = run(gpu, &GenerateOptions { band_rows: 7, ..opts.clone() });
            let b = run(gpu, &GenerateOptions { band_rows: 256, ..opts.clone() });
            assert_eq!((a.stats.bands, b.stats.bands), (6, 1));
            assert_eq!(a.shape, [9, 37, 53]);
            assert!(a.bytes == b.bytes, "{}: {dtype:?} buckets depend on the band size", gpu.describe());
            assert!(a.truth == b.truth, "{}: heights depend on the band size", gpu.describe());
        }
    }
}

#[test]
fn tiny_and_thin_frames() {
    for gpu in gpus() {
        for (h, w) in [(1, 1), (1, 7), (9, 1), (3, 5), (2, 2)] {
            let heights = seed_heights(h, w);
            for dtype in [HostType::U8, HostType::U16, HostType::F16, HostType::F32] {
                let opts = GenerateOptions {
                    band_rows: 2,
                    psi: PsiConfig::with(vec![5.0, 5.5, 6.05, 6.655], 3),
                    ..seed_opts(h, w, dtype)
                };
                let f = run(gpu, &opts);
                let e = max_abs_diff(f.truth.iter().map(|&v| v as f64), heights.iter().map(|&v| v as f64));
                assert!(e <= 1e-5, "{h} x {w}: heights off by {e:e}");
                let got = psi_gpu::io::npy::to_f32(dtype, &f.bytes);
                let bound = match dtype {
                    HostType::U8 | HostType::U16 => 0.5 + 1e-3,
                    HostType::F16 => 0.125,
                    HostType::F32 => 2e-3,
                };
                let model = model_cpu(&opts, &heights);
                let e = max_abs_diff(got.iter().map(|&v| v as f64), model);
                assert!(e <= bound, "{}: {h} x {w} {dtype:?}: off by {e}", gpu.describe());
            }
        }
    }
}

#[test]
fn noise_is_gaussian_with_the_requested_sigma() {
    let (h, w, sigma) = (64, 64, 2.0);
    for gpu in gpus() {
        let noisy = GenerateOptions {
            psi: PsiConfig { b: 0.0, ..Default::default() },
            noise: sigma,
            seed: 9,
            ..seed_opts(h, w, HostType::F32)
        };
        let f = run(gpu, &noisy);
        let v: &[f32] = bytemuck::cast_slice(&f.bytes);
        let plane = h * w;
        let mut means = Vec::new();
        for c in 0..noisy.channels() {
            let d: Vec<f64> = v[c * plane..(c + 1) * plane].iter().map(|&x| x as f64 - 128.0).collect();
            let mean = d.iter().sum::<f64>() / plane as f64;
            let std = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (plane - 1) as f64).sqrt();
            assert!(mean.abs() < 0.15, "channel {c}: mean {mean}");
            assert!((std / sigma as f64 - 1.0).abs() < 0.05, "channel {c}: std {std}");
            means.push(mean);
        }
        // Neighbouring channels and pixels are uncorrelated.
        let d: Vec<f64> = v.iter().map(|&x| x as f64 - 128.0).collect();
        let corr = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (a.len() as f64 * 4.0);
        let across = corr(&d[..plane], &d[plane..2 * plane]);
        let along = corr(&d[..plane - 1], &d[1..plane]);
        assert!(across.abs() < 0.06 && along.abs() < 0.06, "correlations {across} {along}");
        // A different seed, different noise; the same seed, the same noise.
        let other = run(gpu, &GenerateOptions { seed: 10, ..noisy.clone() });
        assert!(other.bytes != f.bytes);
        assert!(run(gpu, &noisy).bytes == f.bytes);
        eprintln!("{}: channel means {means:.3?}", gpu.describe());
    }
}

#[test]
fn random_surfaces_match_the_cpu_and_differ_by_seed() {
    let (h, w) = (45, 61);
    for gpu in gpus() {
        let mut surfaces = Vec::new();
        for seed in [1, 2, 3, 1234567890123] {
            let opts = GenerateOptions { shape: Shape::Random, seed, band_rows: 11, ..seed_opts(h, w, HostType::F32) };
            let f = run(gpu, &opts);
            let want = random_heights_cpu(seed, h, w);
            let e = max_abs_diff(f.truth.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
            assert!(e <= 1e-4, "{}: seed {seed}: heights off by {e:e} µm", gpu.describe());
            assert!(f.truth.iter().all(|v| v.abs() <= 100.0), "seed {seed}: heights beyond ±100 µm");
            let mean = f.truth.iter().map(|&v| v as f64).sum::<f64>() / f.truth.len() as f64;
            let spread = f.truth.iter().map(|&v| (v as f64 - mean).abs()).sum::<f64>() / f.truth.len() as f64;
            assert!(spread > 0.5, "seed {seed}: a nearly flat surface (mean deviation {spread} µm)");
            // The buckets follow the written heights.
            let got: &[f32] = bytemuck::cast_slice(&f.bytes);
            let em = max_abs_diff(got.iter().map(|&v| v as f64), model_cpu(&opts, &f.truth));
            assert!(em <= 1e-4, "seed {seed}: buckets off by {em:e} counts");
            surfaces.push(f.truth);
        }
        for i in 0..surfaces.len() {
            for j in i + 1..surfaces.len() {
                let d = max_abs_diff(surfaces[i].iter().map(|&v| v as f64), surfaces[j].iter().map(|&v| v as f64));
                assert!(d > 1.0, "surfaces {i} and {j} are nearly the same");
            }
        }
    }
}

/// `height_scale`/`height_offset` map a random surface affinely, on the GPU as on the CPU.
#[test]
fn scaled_random_surfaces_match_the_cpu() {
    let (h, w) = (23, 37);
    let base = GenerateOptions { shape: Shape::Random, seed: 5, band_rows: 7, ..seed_opts(h, w, HostType::F32) };
    let scaled = GenerateOptions { height_scale: 0.02, height_offset: 1.25, ..base.clone() };
    for gpu in gpus() {
        let (f0, f1) = (run(gpu, &base), run(gpu, &scaled));
        let want = heights_cpu(&scaled);
        let e = max_abs_diff(f1.truth.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
        assert!(e <= 1e-5, "{}: scaled heights off by {e:e} µm", gpu.describe());
        let e = max_abs_diff(f1.truth.iter().map(|&v| v as f64), f0.truth.iter().map(|&v| 1.25 + 0.02 * v as f64));
        assert!(e <= 1e-5, "{}: not 1.25 + 0.02 h ({e:e})", gpu.describe());
        assert!(f1.truth.iter().all(|&v| (0.05..=2.45).contains(&v)), "outside 1.25 ± 1.2 µm");
        let got: &[f32] = bytemuck::cast_slice(&f1.bytes);
        assert!(max_abs_diff(got.iter().map(|&v| v as f64), model_cpu(&scaled, &f1.truth)) <= 1e-4);
    }
    let bad = GenerateOptions { height_scale: 2.0, ..seed_opts(h, w, HostType::F32) };
    assert!(bad.validate().is_err(), "a scale on the seed surface is rejected");
}

#[test]
fn ab_variation_follows_the_model() {
    let opts = GenerateOptions { ab_variation: 0.4, seed: 21, ..seed_opts(33, 47, HostType::F32) };
    for gpu in gpus() {
        let f = run(gpu, &opts);
        let got: &[f32] = bytemuck::cast_slice(&f.bytes);
        let model = model_cpu(&opts, &f.truth);
        let e = max_abs_diff(got.iter().map(|&v| v as f64), model.iter().copied());
        assert!(e <= 5e-4, "{}: off by {e:e} counts", gpu.describe());
        let flat = model_cpu(&GenerateOptions { ab_variation: 0.0, ..opts.clone() }, &f.truth);
        assert!(max_abs_diff(got.iter().map(|&v| v as f64), flat) > 10.0, "no visible A/B variation");
    }
}

#[test]
fn bad_options_are_rejected_without_files() {
    let gpu = &gpus()[0];
    let out = TempPath::new("bad");
    let cases = [
        GenerateOptions { height: 0, ..Default::default() },
        GenerateOptions { psi: PsiConfig::with(vec![], 4), ..Default::default() },
        GenerateOptions { psi: PsiConfig::with(vec![5.0, -1.0], 4), ..Default::default() },
        GenerateOptions { psi: PsiConfig::with(vec![5.0], 0), ..Default::default() },
        GenerateOptions { noise: -1.0, ..Default::default() },
        GenerateOptions { ab_variation: 1.5, ..Default::default() },
    ];
    for opts in cases {
        let err = generate(gpu, &opts, &out.0, None, |_, _| {}).unwrap_err();
        assert!(matches!(err, psi_gpu::Error::Invalid(_)), "{err:?}");
        assert!(!err.to_string().is_empty());
        assert!(!out.0.exists());
    }
}
