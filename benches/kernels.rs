//! Kernel benchmarks, one criterion group per kernel family (`shaders/X.wgsl` ↔ group `X`):
//! `conv` (the tiled 3x3 convolution against the one-thread-per-output one at U-Net-like shapes),
//! `conv_winograd` (the Winograd F(2x2, 3x3) kernel against the tiled direct one at the base-8
//! U-Net's layer widths, with the multiplies of each), `pool`, `upsample` and `batchnorm` (the
//! other layers of a U-Net forward), and `unet`, one whole U-Net forward on a tile with either
//! 3x3 kernel.
//!
//! ```text
//! cargo bench --bench kernels                      # default (smaller) shapes, fit for software drivers
//! PSI_BENCH_FULL=1 cargo bench --bench kernels     # full-size U-Net layers, 256 x 256 tiles
//! PSI_GPU_BACKEND=gl cargo bench --bench kernels   # any GpuOptions::from_env variable applies
//! cargo bench --bench kernels -- --quick conv      # criterion's own arguments after `--`
//! ```
//!
//! Besides criterion's report (conv throughput in elements/s = FLOP/s, layers in output values/s,
//! U-Net in pixels/s), every measurement prints one plain line with GFLOP/s (Gvalues/s, or tiles/s
//! and Mpx/s) and the median time of one launch, and each conv shape prints the tiled kernel's time
//! as a fraction of the naive kernel's. Those numbers come from the samples criterion itself takes (the median of the last
//! samples' per-launch times); a summary of all the lines is printed at the end.
//!
//! One launch is timed as: `iters` copies of the dispatch recorded back to back in compute
//! passes (at most `BATCH` per submit), submitted, and waited for, divided by `iters`. On a slow
//! device criterion asks for one iteration per sample, so that is one submit-and-wait per launch.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use psi_gpu::gpu::Tensor;
use psi_gpu::gpu::{Dispatch, Gpu, GpuOptions, Precision};
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::unet::{UNet, UNetConfig};
use psi_gpu::ops::batchnorm::{self, BnLayer};
use psi_gpu::ops::conv::select::Conv;
use psi_gpu::ops::conv::winograd::{self, WinogradWeights, conv_winograd};
use psi_gpu::ops::conv::{ConvWeights, conv, conv3x3_naive, flops};
use psi_gpu::ops::{pool, upsample};

/// Criterion samples per benchmark (its minimum).
const SAMPLES: usize = 10;
/// Dispatches recorded into one compute pass / submit when criterion asks for many iterations.
const BATCH: u64 = 256;

/// `(cin, cout, h, w)` at n = 1.
type ConvShape = (usize, usize, usize, usize);

const CONV_FULL: [ConvShape; 4] = [(16, 64, 256, 256), (64, 64, 256, 256), (128, 128, 128, 128), (512, 512, 32, 32)];
const CONV_DEFAULT: [ConvShape; 4] = [(16, 32, 128, 128), (32, 32, 128, 128), (64, 64, 64, 64), (128, 128, 32, 32)];

/// `(n, cin, cout, h, w)`: the base-8 U-Net's widths on 128 x 128 tiles (full: batches of 8).
type WinogradShape = (usize, usize, usize, usize, usize);

const WINOGRAD_FULL: [WinogradShape; 5] =
    [(8, 8, 8, 128, 128), (8, 16, 16, 128, 128), (8, 32, 32, 128, 128), (8, 64, 64, 128, 128), (8, 128, 128, 128, 128)];
const WINOGRAD_DEFAULT: [WinogradShape; 5] =
    [(1, 8, 8, 128, 128), (1, 16, 16, 128, 128), (1, 32, 32, 128, 128), (1, 64, 64, 128, 128), (1, 128, 128, 64, 64)];

/// `(c, h, w)` of a layer's input at n = 1.
type LayerShape = (usize, usize, usize);

const LAYER_FULL: [LayerShape; 2] = [(64, 256, 256), (256, 64, 64)];
const LAYER_DEFAULT: [LayerShape; 2] = [(32, 128, 128), (128, 32, 32)];

fn env_flag(name: &str) -> bool {
    std::env::var(name).map(|v| !v.is_empty() && v != "0").unwrap_or(false)
}

/// Deterministic values in [-1, 1) (an LCG; the benchmark only needs non-trivial data).
fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Submit `iters` replays of `dispatches` (each replay is the whole list) and wait; the elapsed time.
fn time_replays(gpu: &Gpu, dispatches: &[&Dispatch], iters: u64) -> Duration {
    let per_submit = (BATCH / dispatches.len().max(1) as u64).max(1);
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let k = left.min(per_submit);
        let list: Vec<&Dispatch> = (0..k).flat_map(|_| dispatches.iter().copied()).collect();
        gpu.run(&list).expect("running the benchmark's dispatches");
        left -= k;
    }
    start.elapsed()
}

/// The `(iters, elapsed)` pairs criterion's routine was called with, in order.
#[derive(Default)]
struct Samples(RefCell<Vec<(u64, Duration)>>);

impl Samples {
    fn push(&self, iters: u64, d: Duration) {
        self.0.borrow_mut().push((iters, d));
    }

    /// Median seconds per iteration over the last `SAMPLES` calls (criterion's measurement samples
    /// follow its warm-up calls); `None` if the benchmark did not run (filtered out, `--list`).
    fn median_s(&self) -> Option<f64> {
        let v = self.0.borrow();
        let mut t: Vec<f64> =
            v[v.len().saturating_sub(SAMPLES)..].iter().map(|(i, d)| d.as_secs_f64() / *i as f64).collect();
        if t.is_empty() {
            return None;
        }
        t.sort_by(f64::total_cmp);
        let m = t.len() / 2;
        Some(if t.len() % 2 == 1 { t[m] } else { 0.5 * (t[m - 1] + t[m]) })
    }
}

/// Benchmark `dispatches` (replayed as a whole per iteration) as `id` in `group`; the median
/// seconds per iteration, if it ran.
fn bench(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    gpu: &Gpu,
    dispatches: &[&Dispatch],
) -> Option<f64> {
    let samples = Samples::default();
    let mut warm = false;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            if !warm {
                // The first launch (driver-side shader compilation, first touch of the buffers)
                // stays out of the numbers; benchmarks filtered out never get here.
                gpu.run(dispatches).expect("warm-up launch");
                warm = true;
            }
            let d = time_replays(gpu, dispatches, iters);
            samples.push(iters, d);
            d
        })
    });
    samples.median_s()
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(SAMPLES);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    // Linear sampling needs 55 iterations for 10 samples: far too many on a software driver.
    group.sampling_mode(SamplingMode::Flat);
}

fn precisions(gpu: &Gpu) -> Vec<Precision> {
    if gpu.f16 { vec![Precision::F32, Precision::F16] } else { vec![Precision::F32] }
}

fn report(summary: &mut Vec<String>, line: String) {
    println!("{line}");
    summary.push(line);
}

fn bench_conv(c: &mut Criterion, gpu: &Gpu, full: bool, summary: &mut Vec<String>) {
    let shapes: &[ConvShape] = if full { &CONV_FULL } else { &CONV_DEFAULT };
    let mut group = c.benchmark_group("conv");
    configure(&mut group);
    for p in precisions(gpu) {
        for (i, &(cin, cout, h, w)) in shapes.iter().enumerate() {
            let n = 1;
            let f = flops(n, cin, cout, h, w, 3);
            let seed = i as u64 * 4;
            let wts = ConvWeights::new(
                gpu,
                p,
                &pseudo_random(cout * cin * 9, seed),
                [cout, cin, 3],
                &vec![1.0 / (cin as f32 * 9.0).sqrt(); cout],
                &pseudo_random(cout, seed + 1),
                true,
            )
            .expect("conv weights");
            let x = Tensor::from_f32(gpu, [n, cin, h, w], p, &pseudo_random(n * cin * h * w, seed + 2))
                .expect("conv input");
            let y = Tensor::new(gpu, [n, cout, h, w], p, "conv output").expect("conv output");
            let tiled = conv(gpu, &wts, x.view(), y.view()).expect("tiled conv dispatch");
            let naive = conv3x3_naive(gpu, &wts, x.view(), y.view()).expect("naive conv dispatch");

            group.throughput(Throughput::Elements(f as u64));
            let label = format!("{cin}->{cout} @ {h}x{w}");
            let param = format!("{cin}-{cout}_{h}x{w}");
            let mut times = [None, None];
            for (k, (name, d)) in [("tiled", &tiled), ("naive", &naive)].into_iter().enumerate() {
                times[k] = bench(&mut group, BenchmarkId::new(format!("3x3_{name}_{p}"), &param), gpu, &[d]);
                if let Some(t) = times[k] {
                    report(
                        summary,
                        format!("conv 3x3 {name} {p} {label}: {:.2} GFLOP/s ({:.3} ms)", f / t / 1e9, t * 1e3),
                    );
                }
            }
            if let [Some(t), Some(nv)] = times {
                report(summary, format!("conv 3x3 {p} {label}: tiled/naive time = {:.3}", t / nv));
            }
        }
    }
    group.finish();
}

fn bench_winograd(c: &mut Criterion, gpu: &Gpu, full: bool, summary: &mut Vec<String>) {
    let shapes: &[WinogradShape] = if full { &WINOGRAD_FULL } else { &WINOGRAD_DEFAULT };
    let mut group = c.benchmark_group("conv_winograd");
    configure(&mut group);
    for p in precisions(gpu) {
        for (i, &(n, cin, cout, h, w)) in shapes.iter().enumerate() {
            let seed = 100 + i as u64 * 4;
            let g = pseudo_random(cout * cin * 9, seed);
            let (scale, shift) = (vec![1.0 / (cin as f32 * 9.0).sqrt(); cout], pseudo_random(cout, seed + 1));
            let direct = ConvWeights::new(gpu, p, &g, [cout, cin, 3], &scale, &shift, true).expect("conv weights");
            let wino = WinogradWeights::new(gpu, p, &g, [cout, cin], &scale, &shift, true).expect("winograd weights");
            let x = Tensor::from_f32(gpu, [n, cin, h, w], p, &pseudo_random(n * cin * h * w, seed + 2))
                .expect("conv input");
            let y = Tensor::new(gpu, [n, cout, h, w], p, "conv output").expect("conv output");
            let d = conv(gpu, &direct, x.view(), y.view()).expect("direct conv dispatch");
            let wd = conv_winograd(gpu, &wino, x.view(), y.view()).expect("winograd conv dispatch");
            let muls = winograd::multiplies(n, cin, cout, h, w);
            group.throughput(Throughput::Elements((n * cout * h * w) as u64));
            let label = format!("n{n} {cin}->{cout} @ {h}x{w}");
            let mut times = [None, None];
            for (k, (name, d)) in [("direct", &d), ("winograd", &wd)].into_iter().enumerate() {
                let id = BenchmarkId::new(format!("{name}_{p}"), format!("{n}x{cin}-{cout}_{h}x{w}"));
                times[k] = bench(&mut group, id, gpu, &[d]);
                if let Some(t) = times[k] {
                    let line = format!(
                        "conv 3x3 {name} {p} {label}: {:.3} ms, {:.3} G multiplies ({:.2} G/s)",
                        t * 1e3,
                        muls[k] / 1e9,
                        muls[k] / t / 1e9
                    );
                    report(summary, line);
                }
            }
            if let [Some(t), Some(tw)] = times {
                let (r, m) = (tw / t, muls[1] / muls[0]);
                report(summary, format!("conv 3x3 {p} {label}: winograd/direct time = {r:.3}, multiplies = {m:.3}"));
            }
        }
    }
    group.finish();
}

/// The dispatches of one layer family on a random input of `[n, c, h, w]` in `p`, and the
/// number of values they write; the tensors they use are kept alive in `keep`.
type LayerCase = fn(&Gpu, Precision, [usize; 4], &mut Vec<Tensor>) -> (Vec<Dispatch>, usize);

/// A random input of `shape` and an output of `out` in `p`, and the one dispatch `launch(x, y)`.
fn one_dispatch(
    gpu: &Gpu,
    p: Precision,
    [shape, out]: [[usize; 4]; 2],
    keep: &mut Vec<Tensor>,
    launch: impl FnOnce(&Tensor, &Tensor) -> psi_gpu::Result<Dispatch>,
) -> (Vec<Dispatch>, usize) {
    let x = Tensor::from_f32(gpu, shape, p, &pseudo_random(shape.iter().product(), 11)).expect("layer input");
    let y = Tensor::new(gpu, out, p, "layer output").expect("layer output");
    let d = launch(&x, &y).expect("layer dispatch");
    let values = y.len();
    keep.extend([x, y]);
    (vec![d], values)
}

/// 2x2 max-pooling of the input.
fn pool_case(gpu: &Gpu, p: Precision, shape: [usize; 4], keep: &mut Vec<Tensor>) -> (Vec<Dispatch>, usize) {
    let [n, c, h, w] = shape;
    one_dispatch(gpu, p, [shape, [n, c, h / 2, w / 2]], keep, |x, y| pool::maxpool2x2(gpu, x.view(), y.view()))
}

/// Bilinear x2 upsampling of the input, padded by one row and column (an odd skip size).
fn upsample_case(gpu: &Gpu, p: Precision, shape: [usize; 4], keep: &mut Vec<Tensor>) -> (Vec<Dispatch>, usize) {
    let [n, c, h, w] = shape;
    let out = [n, c, 2 * h + 1, 2 * w + 1];
    one_dispatch(gpu, p, [shape, out], keep, |x, y| upsample::upsample2x_pad(gpu, x.view(), y.view()))
}

/// Training-mode BatchNorm + ReLU of the input: the batch statistics, then the forward.
fn batchnorm_case(gpu: &Gpu, p: Precision, shape: [usize; 4], keep: &mut Vec<Tensor>) -> (Vec<Dispatch>, usize) {
    let [n, c, h, w] = shape;
    let vector = |v: &[f32]| Tensor::from_f32(gpu, [1, 1, 1, v.len()], Precision::F32, v).expect("batchnorm vector");
    let x = Tensor::from_f32(gpu, shape, p, &pseudo_random(n * c * h * w, 13)).expect("batchnorm input");
    let y = Tensor::new(gpu, shape, p, "batchnorm output").expect("batchnorm output");
    let (gamma, beta, stats) = (vector(&vec![1.0; c]), vector(&vec![0.0; c]), vector(&vec![0.0; 2 * c]));
    let bn =
        BnLayer { gamma: (&gamma).into(), beta: (&beta).into(), stats: &stats, eps: batchnorm::EPS, frozen: false };
    let mut d = batchnorm::bn_stats(gpu, x.view(), &stats).expect("batchnorm statistics");
    d.push(batchnorm::bn_forward_relu(gpu, x.view(), &bn, true, y.view()).expect("batchnorm forward"));
    let values = y.len();
    keep.extend([x, y, gamma, beta, stats]);
    (d, values)
}

/// The benchmark group `family`: `case` on every layer shape and precision.
fn bench_layer(c: &mut Criterion, gpu: &Gpu, full: bool, summary: &mut Vec<String>, family: &str, case: LayerCase) {
    let shapes: &[LayerShape] = if full { &LAYER_FULL } else { &LAYER_DEFAULT };
    let mut group = c.benchmark_group(family);
    configure(&mut group);
    for p in precisions(gpu) {
        for &(ch, h, w) in shapes {
            let mut keep = Vec::new();
            let (dispatches, values) = case(gpu, p, [1, ch, h, w], &mut keep);
            group.throughput(Throughput::Elements(values as u64));
            let id = BenchmarkId::new(format!("{family}_{p}"), format!("{ch}_{h}x{w}"));
            if let Some(t) = bench(&mut group, id, gpu, &dispatches.iter().collect::<Vec<_>>()) {
                let line =
                    format!("{family} {p} {ch}x{h}x{w}: {:.3} Gvalues/s ({:.3} ms)", values as f64 / t / 1e9, t * 1e3);
                report(summary, line);
            }
        }
    }
    group.finish();
}

/// FLOP of every convolution of a U-Net forward on `n` images of `h` x `w` (matches
/// `UNet::plan`: level l works at `(h >> l, w >> l)`).
fn unet_flops(cfg: &UNetConfig, n: usize, h: usize, w: usize) -> f64 {
    let UNetConfig { n_channels, n_classes, base: b } = *cfg;
    let at = |l: usize, cin: usize, mid: usize, cout: usize| {
        let (hl, wl) = (h >> l, w >> l);
        flops(n, cin, mid, hl, wl, 3) + flops(n, mid, cout, hl, wl, 3)
    };
    let widths = [b, 2 * b, 4 * b, 8 * b, 8 * b];
    let mut total = at(0, n_channels, b, b);
    for l in 1..=4 {
        total += at(l, widths[l - 1], widths[l], widths[l]);
    }
    // up1..up4 at levels 3..0: cat of 2 c[l] channels -> mid c[l] -> the next level's width.
    let ups = [(3, 16 * b, 8 * b, 4 * b), (2, 8 * b, 4 * b, 2 * b), (1, 4 * b, 2 * b, b), (0, 2 * b, b, b)];
    for (l, cin, mid, cout) in ups {
        total += at(l, cin, mid, cout);
    }
    total + flops(n, b, n_classes, h, w, 1)
}

fn bench_unet(c: &mut Criterion, gpu: &Gpu, full: bool, summary: &mut Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_b8.safetensors");
    let wts = Weights::load(&path).expect("loading the unet_b8 fixture");
    let side = if full { 256 } else { 128 };
    let (n, h, w) = (1, side, side);
    let mut group = c.benchmark_group("unet");
    configure(&mut group);
    group.throughput(Throughput::Elements((n * h * w) as u64));
    for (p, kernel) in precisions(gpu).into_iter().flat_map(|p| [(p, Conv::Direct), (p, Conv::Winograd)]) {
        let model = UNet::with_conv(gpu, &wts, p, kernel, None).expect("uploading the U-Net");
        let cfg = model.config;
        let f = unet_flops(&cfg, n, h, w);
        let plan = model.plan(gpu, n, h, w).expect("planning the U-Net");
        plan.input.upload(gpu, &pseudo_random(plan.input.len(), 7).iter().map(|v| v.abs()).collect::<Vec<_>>());
        let dispatches: Vec<&Dispatch> = plan.dispatches.iter().collect();
        let label = format!("b{} C{} {n}x{h}x{w} conv {}", cfg.base, cfg.n_channels, kernel.name());
        let id = BenchmarkId::new(format!("unet_b{}_{p}_{}", cfg.base, kernel.name()), format!("{n}x{h}x{w}"));
        if let Some(t) = bench(&mut group, id, gpu, &dispatches) {
            report(
                summary,
                format!(
                    "unet {p} {label}: {:.2} tiles/s, {:.3} Mpx/s, {:.3} GFLOP/tile, {:.2} GFLOP/s ({:.2} ms)",
                    n as f64 / t,
                    (n * h * w) as f64 / t / 1e6,
                    f / n as f64 / 1e9,
                    f / t / 1e9,
                    t * 1e3
                ),
            );
        }
    }
    group.finish();
}

fn main() {
    let started = Instant::now();
    let mut c = Criterion::default().configure_from_args();
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("opening the GPU (see PSI_GPU_BACKEND / PSI_GPU_ADAPTER)");
    let full = env_flag("PSI_BENCH_FULL");
    println!(
        "psi-gpu kernels bench: {} driver '{}', f16 {}, shapes {}",
        gpu.describe(),
        gpu.info.driver,
        if gpu.f16 { "yes" } else { "no" },
        if full { "full (PSI_BENCH_FULL=1)" } else { "default (PSI_BENCH_FULL=1 for full size)" }
    );
    let mut summary = Vec::new();
    bench_conv(&mut c, &gpu, full, &mut summary);
    bench_winograd(&mut c, &gpu, full, &mut summary);
    bench_layer(&mut c, &gpu, full, &mut summary, "pool", pool_case);
    bench_layer(&mut c, &gpu, full, &mut summary, "upsample", upsample_case);
    bench_layer(&mut c, &gpu, full, &mut summary, "batchnorm", batchnorm_case);
    bench_unet(&mut c, &gpu, full, &mut summary);
    c.final_summary();
    if !summary.is_empty() {
        println!("\nsummary ({}):", gpu.describe());
        for line in &summary {
            println!("  {line}");
        }
    }
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}
