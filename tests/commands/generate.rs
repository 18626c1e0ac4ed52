//! The GPU frame generator against the CPU models: seed heights and buckets, u8/u16/f16
//! quantisation, banding invariance, noise statistics, random and steep surfaces, calibrated phase
//! steps, dark/low-contrast/saturated patches and the truth mask, on every adapter.

use crate::common::{TempPath, gpus};
use psi_gpu::Gpu;
use psi_gpu::HostType;
use psi_gpu::commands::generate::{self as generate_cmd, GenerateStats, generate};
use psi_gpu::io::npy::{NpyReader, read_f32};
use psi_gpu::psi::buckets as synth;
use psi_gpu::psi::reason::Reason;
use psi_gpu::psi::surface::seed_heights;
use psi_gpu::psi::surface::{Shape, random_heights_cpu};
use psi_gpu::psi::synthetic::{GenerateOptions, Patch, PatchKind, ab_cpu, heights_cpu, model_cpu, reason_rows};
use psi_gpu::psi::{PhaseSteps, PsiConfig};

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

/// Largest |bucket − model_cpu| of an f32 frame, on its own written heights (counts).
fn model_error(opts: &GenerateOptions, f: &Frame) -> f64 {
    let got: &[f32] = bytemuck::cast_slice(&f.bytes);
    max_abs_diff(got.iter().map(|&v| v as f64), model_cpu(opts, &f.truth))
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
        let em = model_error(&seed_opts(h, w, HostType::F32), &f);
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
            let em = model_error(&opts, &f);
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
        assert!(model_error(&scaled, &f1) <= 1e-4);
    }
    let bad = GenerateOptions { height_scale: 2.0, ..seed_opts(h, w, HostType::F32) };
    assert!(bad.validate().is_err(), "a scale on the seed surface is rejected");
}

#[test]
fn ab_variation_follows_the_model() {
    let opts = GenerateOptions { ab_variation: 0.4, seed: 21, ..seed_opts(33, 47, HostType::F32) };
    for gpu in gpus() {
        let f = run(gpu, &opts);
        let e = model_error(&opts, &f);
        assert!(e <= 5e-4, "{}: off by {e:e} counts", gpu.describe());
        let got: &[f32] = bytemuck::cast_slice(&f.bytes);
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

/// Calibrated phase steps, one list for every laser and one per laser: the buckets follow the
/// CPU model with those steps (f32 and u8), and differ visibly from the nominal steps.
#[test]
fn calibrated_phase_steps_follow_the_model() {
    let deg = |d: &[f64]| d.iter().map(|v| v.to_radians()).collect::<Vec<_>>();
    let shared = PhaseSteps::Shared(deg(&[0.0, 93.0, 178.5, 272.0]));
    let per_laser =
        PhaseSteps::PerLaser(vec![deg(&[-3.0, 88.0, 181.0]), deg(&[0.0, 121.0, 239.0]), deg(&[5.0, 95.0, 725.0])]);
    let cases = [
        GenerateOptions {
            psi: PsiConfig { phase_steps: shared, ..Default::default() },
            ..seed_opts(19, 27, HostType::F32)
        },
        GenerateOptions {
            psi: PsiConfig { phase_steps: per_laser, ..PsiConfig::with(vec![5.0, 5.7, 6.3], 3) },
            shape: Shape::Random,
            seed: 4,
            ab_variation: 0.2,
            band_rows: 5,
            ..seed_opts(19, 27, HostType::F32)
        },
    ];
    for gpu in gpus() {
        for opts in &cases {
            let f = run(gpu, opts);
            let e = model_error(opts, &f);
            assert!(e <= 2e-4, "{}: {:?}: off the model by {e:e} counts", gpu.describe(), opts.psi.phase_steps);
            let nominal = GenerateOptions {
                psi: PsiConfig { phase_steps: PhaseSteps::Nominal, ..opts.psi.clone() },
                ..opts.clone()
            };
            assert!(model_error(&nominal, &f) > 3.0, "steps ignored");
            check_integers(gpu, &GenerateOptions { dtype: HostType::U8, ..opts.clone() }, None, 1e-3);
        }
    }
}

/// Dark, low-contrast and saturated patches (overlapping, across band edges): A and B follow the
/// CPU model, every bucket of a saturated patch is the type's maximum even with noise, a dark
/// patch without noise is A in every channel, and the truth mask says what a solver should do.
#[test]
fn patches_follow_the_model_and_the_truth_mask() {
    let (h, w) = (29, 37);
    let patches = vec![
        Patch { kind: PatchKind::Dark, region: [2, 3, 6, 9] },
        Patch { kind: PatchKind::LowContrast(0.3), region: [10, 0, 8, 20] },
        Patch { kind: PatchKind::LowContrast(0.5), region: [14, 15, 10, 10] },
        Patch { kind: PatchKind::Saturate, region: [20, 22, 9, 15] },
        Patch { kind: PatchKind::LowContrast(0.0), region: [0, 30, 3, 7] },
    ];
    let opts = GenerateOptions {
        patches,
        shape: Shape::Random,
        seed: 11,
        ab_variation: 0.2,
        band_rows: 6,
        ..seed_opts(h, w, HostType::U8)
    };
    let f32_opts = GenerateOptions { dtype: HostType::F32, patches: opts.patches[..3].to_vec(), ..opts.clone() };
    let reasons = {
        let mut r = Vec::new();
        reason_rows(&opts, 0, h, &mut r);
        r
    };
    let count = |code: Reason| reasons.iter().filter(|&&c| c == code.code()).count();
    assert_eq!((count(Reason::Saturated), count(Reason::LowModulation)), (9 * 15, 6 * 9 + 3 * 7));
    for gpu in gpus() {
        let f = run(gpu, &f32_opts);
        let got: &[f32] = bytemuck::cast_slice(&f.bytes);
        let e = model_error(&f32_opts, &f);
        assert!(e <= 5e-4, "{}: patches off the model by {e:e} counts", gpu.describe());
        let ab = ab_cpu(&f32_opts);
        // No fringes in a dark patch: every channel the same value, the pixel's A.
        for p in (2..8).flat_map(|r| (3..12).map(move |col| r * w + col)) {
            let first = got[p];
            assert!((first as f64 - ab[p].0).abs() < 1e-4, "dark pixel {p}: {first} is not A = {}", ab[p].0);
            assert!((0..f32_opts.channels()).all(|c| got[c * h * w + p] == first), "dark pixel {p} has fringes");
        }
        check_integers(gpu, &opts, None, 1e-3);
        let noisy = run(gpu, &GenerateOptions { noise: 12.0, ..opts.clone() });
        for (i, &v) in noisy.bytes.iter().enumerate() {
            let p = i % (h * w);
            if reasons[p] == Reason::Saturated.code() {
                assert_eq!(v, 255, "{}: saturated pixel {p} of channel {} is {v}", gpu.describe(), i / (h * w));
            }
        }
    }
    // The truth mask beside the frame, through the command.
    let d = TempPath::dir("truthmask");
    let cmd = generate_cmd::Options {
        generate: opts.clone(),
        output: d.join("f.npy"),
        truth: None,
        truth_mask: Some(d.join("m.npy")),
        preview: None,
        preview_range: Default::default(),
    };
    let report = generate_cmd::run(&gpus()[0], &cmd, |_, _| {}).unwrap();
    let mut m = NpyReader::open(&d.join("m.npy")).unwrap();
    assert_eq!((m.header().ty, m.header().shape.clone()), (HostType::U8, vec![h, w]));
    assert_eq!(m.read_all().unwrap(), reasons);
    assert_eq!(report.truth_mask, Some([(h * w - 9 * 15 - 75) as u64, 75, 9 * 15, 0, 0]));
    let text = report.to_string();
    assert!(text.contains("truth mask") && text.contains("135 saturated") && text.contains("patches: dark"), "{text}");
}

/// The steep surface: the CPU's heights, its buckets, and dense fringes (neighbours up to about
/// `slope` apart near the corners).
#[test]
fn steep_surface_matches_the_cpu() {
    let (h, w) = (31, 45);
    for gpu in gpus() {
        for (slope, dtype) in [(0.5, HostType::F32), (1.1, HostType::F32), (0.8, HostType::U16)] {
            let opts = GenerateOptions { shape: Shape::Steep, slope, band_rows: 8, ..seed_opts(h, w, dtype) };
            let f = run(gpu, &opts);
            let want = heights_cpu(&opts);
            let e = max_abs_diff(f.truth.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
            assert!(e <= 1e-5, "{}: slope {slope}: heights off by {e:e} µm", gpu.describe());
            let steepest = (0..h * w - 1)
                .filter(|i| i % w != w - 1)
                .map(|i| (f.truth[i + 1] - f.truth[i]).abs())
                .fold(0.0f32, f32::max);
            // Along a row the slope's x component at the corners: slope · cos(atan(22/15 ... )).
            let cos = 22.0 / (22.0f32.powi(2) + 15.0f32.powi(2)).sqrt();
            assert!((steepest / (slope * cos) - 1.0).abs() < 0.1, "slope {slope}: steepest step {steepest}");
            if dtype == HostType::F32 {
                let em = model_error(&opts, &f);
                assert!(em <= 1e-4, "slope {slope}: buckets off by {em:e} counts");
            } else {
                check_integers(gpu, &opts, None, 1e-3);
            }
        }
    }
}

/// The new features leave the bytes independent of the band size.
#[test]
fn hard_cases_do_not_depend_on_bands() {
    let deg = |d: &[f64]| d.iter().map(|v| v.to_radians()).collect::<Vec<_>>();
    let opts = GenerateOptions {
        shape: Shape::Steep,
        noise: 4.0,
        seed: 3,
        psi: PsiConfig { phase_steps: PhaseSteps::Shared(deg(&[1.0, 91.0, 179.0, 268.0])), ..Default::default() },
        patches: vec![
            Patch { kind: PatchKind::Saturate, region: [5, 5, 20, 4] },
            Patch { kind: PatchKind::Dark, region: [11, 20, 3, 30] },
        ],
        ..seed_opts(33, 51, HostType::U8)
    };
    for gpu in gpus() {
        let a = run(gpu, &GenerateOptions { band_rows: 4, ..opts.clone() });
        let b = run(gpu, &GenerateOptions { band_rows: 64, ..opts.clone() });
        assert!(a.bytes == b.bytes && a.truth == b.truth, "{}: depends on the band size", gpu.describe());
    }
}

#[test]
fn bad_hard_case_options_are_rejected() {
    let base = seed_opts(20, 30, HostType::U8);
    let patch = |kind, region| GenerateOptions { patches: vec![Patch { kind, region }], ..base.clone() };
    let cases = [
        ("inside the 20 x 30 frame", patch(PatchKind::Dark, [15, 0, 6, 4])),
        ("inside the 20 x 30 frame", patch(PatchKind::Saturate, [0, 0, 0, 4])),
        ("in [0, 1]", patch(PatchKind::LowContrast(1.5), [0, 0, 2, 2])),
        ("integer dtype", GenerateOptions { dtype: HostType::F32, ..patch(PatchKind::Saturate, [0, 0, 2, 2]) }),
        ("needs --shape steep", GenerateOptions { slope: 0.7, ..base.clone() }),
        ("positive and finite", GenerateOptions { shape: Shape::Steep, slope: 0.0, ..base.clone() }),
        ("needs --shape random", GenerateOptions { shape: Shape::Steep, height_offset: 1.0, ..base.clone() }),
        (
            "3 phase steps for 4 buckets",
            GenerateOptions {
                psi: PsiConfig { phase_steps: PhaseSteps::Shared(vec![0.0, 1.0, 2.0]), ..Default::default() },
                ..base.clone()
            },
        ),
    ];
    for (needle, opts) in cases {
        let e = opts.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

/// The flags end to end: a hard-case frame with its truth mask, and bad values giving one
/// `error:` line, exit code 2 and no file.
#[test]
fn hard_case_flags_on_the_command_line() {
    let d = TempPath::dir("genflags");
    let bin = || std::process::Command::new(env!("CARGO_BIN_EXE_psi-gpu"));
    let (out, mask) = (d.join("f.npy"), d.join("m.npy"));
    let o = bin()
        .args(["generate", out.to_str().unwrap(), "--height", "24", "--width", "32", "--dtype", "u8"])
        .args(["--shape", "steep", "--slope", "0.6", "--noise", "3", "--phase-steps", "0,91,179,272"])
        .args(["--dark", "1,1,4,5", "--low-contrast", "10,10,5,5:0.2", "--saturate", "18,20,6,12"])
        .args(["--saturate", "0,28,2,4", "--truth-mask", mask.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("steep surface") && text.contains("20 low_modulation, 80 saturated"), "{text}");
    let codes = NpyReader::open(&mask).unwrap().read_all().unwrap();
    assert_eq!(codes.iter().filter(|&&c| c == 2).count(), 80);
    let frame = NpyReader::open(&out).unwrap().read_all().unwrap();
    assert!((0..16).all(|c| frame[c * 24 * 32 + 20 * 32 + 25] == 255), "a saturated pixel below 255");
    for bad in [
        vec!["--phase-steps", "0,90,x"],
        vec!["--dark", "1,2,3"],
        vec!["--low-contrast", "1,1,2,2:3"],
        vec!["--saturate", "30,0,2,2"],
        vec!["--slope", "0.4"],
        vec!["--preview-range", "full,1"],
        vec!["--preview-range", "full"], // without --preview
    ] {
        let bad_out = d.join("bad.npy");
        let o = bin()
            .args(["generate", bad_out.to_str().unwrap(), "--height", "24", "--width", "32", "--dtype", "u8"])
            .args(&bad)
            .output()
            .unwrap();
        let lines: Vec<String> = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
            .map(String::from)
            .collect();
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {lines:?}");
        assert!(lines.len() == 1 && lines[0].starts_with("error:"), "{bad:?}: {lines:?}");
        assert!(!bad_out.exists(), "{bad:?} left a file");
    }
}
