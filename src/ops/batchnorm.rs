//! BatchNorm2d with a fused ReLU, its backward, and the standalone ReLU backward
//! (`shaders/batchnorm.wgsl`). PyTorch semantics. Training mode: batch statistics over N·H·W
//! with the biased variance for normalising, the unbiased one for the running variance. Eval
//! (frozen) mode, for fine-tuning: the running statistics, constants for the backward.
//!
//! Activations and their gradients are channel views in the storage precision; the per-channel
//! buffers are f32: statistics and running statistics as tensors, γ, β, dγ and dβ as bindings
//! (a tensor's buffer, or a range of a flat parameter buffer). Reductions are
//! deterministic (fixed-order workgroup trees, no atomics). Operations that need more than one
//! launch return their dispatches in order; scratch buffers they allocate are owned by the
//! dispatches' bind groups.
//!
//! What a backward needs kept from the forward: `bn_backward` needs the input `x`, the `stats`
//! tensor of this step's `bn_stats`, γ (and β when the ReLU mask is recomputed), and the output
//! `y` when the ReLU mask is taken from it; `relu_backward` needs `y`.

use crate::error::{Error, Result};
use crate::gpu::{Binding, ChannelView, Dispatch, Gpu, Precision, Shader, Tensor, grid_1d, zeroed};

pub static SHADER: Shader = wgsl!("batchnorm": "lib/grid.wgsl", "lib/reduce.wgsl", "batchnorm.wgsl");

/// PyTorch's BatchNorm2d defaults.
pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

/// Values per reduction chunk (one workgroup of the first reduction pass); matches the shader.
const CHUNK: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct BnParams {
    c: u32,
    hw: u32,
    n: u32,
    count: u32,
    chunks: u32,
    x_ctot: u32,
    x_coff: u32,
    y_ctot: u32,
    y_coff: u32,
    d_ctot: u32,
    d_coff: u32,
    o_ctot: u32,
    o_coff: u32,
    mode: u32,
    accumulate: u32,
    accumulate_params: u32,
    eps: f32,
    momentum: f32,
    unbias: f32,
    frozen: u32,
}

impl BnParams {
    /// Shape fields from the view the layer normalises (`x`).
    fn of(x: &ChannelView) -> BnParams {
        let ([n, c, h, w], [x_ctot, x_coff]) = (super::dims(x), super::slot(x));
        let count = x.n() * x.h() * x.w();
        let chunks = count.div_ceil(CHUNK) as u32;
        BnParams { c, hw: h * w, n, count: count as u32, chunks, x_ctot, x_coff, ..Default::default() }
    }

    /// With the views of the ReLU mask's `y`, of `dy` and of the written output.
    fn with_views(self, y: &ChannelView, dy: &ChannelView, out: &ChannelView) -> BnParams {
        let ([y_ctot, y_coff], [d_ctot, d_coff], [o_ctot, o_coff]) =
            (super::slot(y), super::slot(dy), super::slot(out));
        BnParams { y_ctot, y_coff, d_ctot, d_coff, o_ctot, o_coff, ..self }
    }
}

/// The state of one BatchNorm2d layer during a training step.
#[derive(Clone, Copy)]
pub struct BnLayer<'a> {
    /// γ (`weight`), f32, one value per channel.
    pub gamma: Binding<'a>,
    /// β (`bias`), f32, one value per channel.
    pub beta: Binding<'a>,
    /// This batch's statistics from `bn_stats`: f32, `mean[c]` followed by the biased `variance[c]`;
    /// in eval mode the running statistics, from `bn_stats_from_running`.
    pub stats: &'a Tensor,
    pub eps: f32,
    /// Eval mode: `stats` are constants (running statistics), not functions of the batch.
    pub frozen: bool,
}

/// Where the backward of a fused BatchNorm + ReLU takes the ReLU mask from.
#[derive(Clone, Copy)]
pub enum ReluMask<'a> {
    /// No ReLU followed the normalisation.
    None,
    /// `y > 0` on the forward output (what PyTorch's ReLU backward uses).
    Output(ChannelView<'a>),
    /// `γ·x̂ + β > 0` recomputed from `x` with the same expression as the forward (no `y` needed).
    Recompute,
}

/// dγ and dβ of a layer (f32, one value per channel); `accumulate` adds into them.
#[derive(Clone, Copy)]
pub struct BnParamGrads<'a> {
    pub dgamma: Binding<'a>,
    pub dbeta: Binding<'a>,
    pub accumulate: bool,
}

fn check_f32(t: &Tensor, len: usize, what: &str) -> Result<()> {
    if t.precision != Precision::F32 || t.len() != len {
        return Err(Error::Shape(format!(
            "BatchNorm {what} must be an f32 tensor of {len} values, got {} values in {}",
            t.len(),
            t.precision
        )));
    }
    Ok(())
}

/// A per-channel f32 binding of exactly `len` values.
fn check_f32_binding(b: Binding, len: usize, what: &str) -> Result<()> {
    if b.size() != len as u64 * 4 {
        return Err(Error::Shape(format!(
            "BatchNorm {what} must be {len} f32 values ({} bytes), got {} bytes",
            len * 4,
            b.size()
        )));
    }
    Ok(())
}

/// `a` and `b` cover the same images, channels and pixels.
fn check_like(a: &ChannelView, b: &ChannelView, what: &str) -> Result<()> {
    if (a.n(), a.channels, a.h(), a.w()) != (b.n(), b.channels, b.h(), b.w()) {
        return Err(Error::Shape(format!(
            "{what}: [{}, {}, {}, {}] does not match [{}, {}, {}, {}]",
            b.n(),
            b.channels,
            b.h(),
            b.w(),
            a.n(),
            a.channels,
            a.h(),
            a.w()
        )));
    }
    if a.tensor.precision != b.tensor.precision {
        return Err(Error::Shape(format!(
            "{what}: {} tensor where {} is expected",
            b.tensor.precision, a.tensor.precision
        )));
    }
    Ok(())
}

/// A written view must not share its buffer with a view read by the same launch.
fn check_distinct(out: &ChannelView, inputs: &[&ChannelView], what: &str) -> Result<()> {
    if inputs.iter().any(|v| std::ptr::eq(v.tensor, out.tensor)) {
        return Err(Error::Shape(format!("{what}: the output view must not be in a tensor that is also read")));
    }
    Ok(())
}

fn check_layer(x: &ChannelView, bn: &BnLayer) -> Result<()> {
    let c = x.channels;
    check_f32_binding(bn.gamma, c, "gamma")?;
    check_f32_binding(bn.beta, c, "beta")?;
    check_f32(bn.stats, 2 * c, "statistics")
}

/// Training-mode statistics need 2 ≤ N·H·W < 2^32 values per channel (PyTorch rejects 1).
fn check_count(x: &ChannelView) -> Result<()> {
    let count = x.n() * x.h() * x.w();
    if count < 2 || count > u32::MAX as usize {
        return Err(Error::Shape(format!(
            "BatchNorm in training mode needs more than one value per channel (and fewer than 2^32), got {}x{}x{}",
            x.n(),
            x.h(),
            x.w()
        )));
    }
    Ok(())
}

/// Workgroups of a kernel with one invocation per channel (64 lanes).
fn per_channel(c: usize) -> [u32; 3] {
    [c.div_ceil(64) as u32, 1, 1]
}

/// Workgroups of an elementwise kernel over `view`: (pixels folded into x, y) × (image, channel).
fn planes(gpu: &Gpu, view: &ChannelView) -> [u32; 3] {
    let [gx, gy] = grid_1d(gpu, view.h() * view.w(), 256);
    [gx, gy, (view.n() * view.channels) as u32]
}

/// Batch mean and biased variance of every channel of `x` over N·H·W, into `stats`
/// (f32, `2 * channels` values: means, then variances). Two launches: chunk partials, combine.
pub fn bn_stats(gpu: &Gpu, x: ChannelView, stats: &Tensor) -> Result<Vec<Dispatch>> {
    let c = x.channels;
    check_f32(stats, 2 * c, "statistics")?;
    check_count(&x)?;
    let p = BnParams::of(&x);
    let partials = zeroed(gpu, "batchnorm statistics partials", ((c * p.chunks as usize * 16) as u64).max(16))?;
    let launch = |entry, bufs: &[(u32, &wgpu::Buffer)], groups| {
        Dispatch::new(gpu, &SHADER.kernel(entry), x.tensor.precision, &p, bufs, groups)
    };
    Ok(vec![
        launch("bn_stats_partial", &[(1, &x.tensor.buffer), (9, &partials)], [p.chunks, c as u32, 1])?,
        launch("bn_stats_combine", &[(10, &partials), (6, &stats.buffer)], [c as u32, 1, 1])?,
    ])
}

/// Checks the running statistics and the `stats` tensor of one layer; returns the channel count.
fn check_running(running_mean: &Tensor, running_var: &Tensor, stats: &Tensor) -> Result<usize> {
    let c = running_mean.len();
    check_f32(stats, 2 * c, "statistics")?;
    check_f32(running_var, c, "running variance")?;
    check_f32(running_mean, c, "running mean")?;
    if std::ptr::eq(running_mean, running_var) {
        return Err(Error::Shape("BatchNorm running mean and variance must be different tensors".into()));
    }
    Ok(c)
}

/// Eval mode: copy the running statistics into `stats` (f32, `2 * channels`: means, variances),
/// for `bn_forward_relu` and `bn_backward` of a layer with `frozen` set.
pub fn bn_stats_from_running(
    gpu: &Gpu,
    running_mean: &Tensor,
    running_var: &Tensor,
    stats: &Tensor,
) -> Result<Dispatch> {
    let c = check_running(running_mean, running_var, stats)?;
    let p = BnParams { c: c as u32, ..Default::default() };
    let bufs = [(15, &running_mean.buffer), (16, &running_var.buffer), (6, &stats.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("bn_stats_from_running"), Precision::F32, &p, &bufs, per_channel(c))
}

/// `y = relu?(γ·(x − mean)/sqrt(var + eps) + β)` with the batch statistics `bn.stats`, written
/// into the view `y` (for example a channel slot of a concatenation).
pub fn bn_forward_relu(gpu: &Gpu, x: ChannelView, bn: &BnLayer, relu: bool, y: ChannelView) -> Result<Dispatch> {
    check_layer(&x, bn)?;
    check_like(&x, &y, "BatchNorm output")?;
    check_distinct(&y, &[&x], "BatchNorm forward")?;
    let [o_ctot, o_coff] = super::slot(&y);
    let p = BnParams { o_ctot, o_coff, mode: relu as u32, eps: bn.eps, ..BnParams::of(&x) };
    let bufs = [(1, x.tensor.into()), (5, bn.stats.into()), (7, bn.gamma), (8, bn.beta), (4, y.tensor.into())];
    Dispatch::new(gpu, &SHADER.kernel("bn_forward"), x.tensor.precision, &p, &bufs, planes(gpu, &x))
}

/// `running_mean = (1 − m)·running_mean + m·mean`, `running_var = (1 − m)·running_var +
/// m·var·count/(count − 1)`, from `stats` of a batch of `count` (= N·H·W) values per channel.
/// `num_batches_tracked` is left to the caller.
pub fn bn_update_running(
    gpu: &Gpu,
    stats: &Tensor,
    count: usize,
    momentum: f32,
    running_mean: &Tensor,
    running_var: &Tensor,
) -> Result<Dispatch> {
    let c = check_running(running_mean, running_var, stats)?;
    if count < 2 {
        return Err(Error::Shape(format!(
            "BatchNorm running variance needs more than one value per channel, got {count}"
        )));
    }
    let p =
        BnParams { c: c as u32, momentum, unbias: (count as f64 / (count - 1) as f64) as f32, ..Default::default() };
    let bufs = [(5, &stats.buffer), (15, &running_mean.buffer), (16, &running_var.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("bn_update_running"), Precision::F32, &p, &bufs, per_channel(c))
}

/// Backward of `y = relu?(BatchNorm(x))` in training mode, given `dy`:
/// `dγ (+)= Σ dy'·x̂`, `dβ (+)= Σ dy'` and
/// `dx (+)= γ/σ·(dy' − mean(dy') − x̂·mean(dy'·x̂))`, with `dy' = dy·mask`; with `bn.frozen`
/// (eval mode) `dx (+)= γ/σ·dy'`. `bn.stats` must be the statistics the forward used. Four
/// launches: coefficients, chunk partials, combine, dx.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    gpu: &Gpu,
    dy: ChannelView,
    x: ChannelView,
    relu: ReluMask,
    bn: &BnLayer,
    grads: &BnParamGrads,
    dx: ChannelView,
    accumulate_dx: bool,
) -> Result<Vec<Dispatch>> {
    check_layer(&x, bn)?;
    check_like(&x, &dy, "BatchNorm dy")?;
    check_like(&x, &dx, "BatchNorm dx")?;
    let c = x.channels;
    check_f32_binding(grads.dgamma, c, "dgamma")?;
    check_f32_binding(grads.dbeta, c, "dbeta")?;
    if grads.dgamma.overlaps(&grads.dbeta) {
        return Err(Error::Shape("BatchNorm backward: dgamma and dbeta must not overlap".into()));
    }
    if !bn.frozen {
        check_count(&x)?;
    }
    let (mode, yv) = match relu {
        ReluMask::None => (0, x),
        ReluMask::Output(y) => {
            check_like(&x, &y, "BatchNorm forward output")?;
            (1, y)
        }
        ReluMask::Recompute => (2, x),
    };
    check_distinct(&dx, &[&x, &dy, &yv], "BatchNorm backward")?;
    let p = BnParams {
        mode,
        accumulate: accumulate_dx as u32,
        accumulate_params: grads.accumulate as u32,
        eps: bn.eps,
        frozen: bn.frozen as u32,
        ..BnParams::of(&x).with_views(&yv, &dy, &dx)
    };
    let coef = zeroed(gpu, "batchnorm backward coefficients", ((c * 32) as u64).max(16))?;
    let partials = zeroed(gpu, "batchnorm backward partials", ((c * p.chunks as usize * 16) as u64).max(16))?;
    let launch = |entry, bufs: &[(u32, Binding)], groups| {
        Dispatch::new(gpu, &SHADER.kernel(entry), x.tensor.precision, &p, bufs, groups)
    };
    let (xb, yb, db): (Binding, Binding, Binding) = (x.tensor.into(), yv.tensor.into(), dy.tensor.into());
    let (stats, coef_b, partials_b): (Binding, Binding, Binding) =
        (bn.stats.into(), (&coef).into(), (&partials).into());
    let (gamma, beta, dgamma, dbeta) = (bn.gamma, bn.beta, grads.dgamma, grads.dbeta);
    Ok(vec![
        launch("bn_backward_prep", &[(5, stats), (7, gamma), (8, beta), (11, coef_b)], per_channel(c))?,
        launch(
            "bn_backward_partial",
            &[(1, xb), (2, yb), (3, db), (12, coef_b), (9, partials_b)],
            [p.chunks, c as u32, 1],
        )?,
        launch("bn_backward_combine", &[(10, partials_b), (11, coef_b), (13, dgamma), (14, dbeta)], [c as u32, 1, 1])?,
        launch("bn_backward_dx", &[(1, xb), (2, yb), (3, db), (12, coef_b), (4, dx.tensor.into())], planes(gpu, &x))?,
    ])
}

/// ReLU backward: `dx (+)= dy·[y > 0]`, with `y` the ReLU's output.
pub fn relu_backward(
    gpu: &Gpu,
    dy: ChannelView,
    y: ChannelView,
    dx: ChannelView,
    accumulate: bool,
) -> Result<Dispatch> {
    check_like(&y, &dy, "ReLU dy")?;
    check_like(&y, &dx, "ReLU dx")?;
    check_distinct(&dx, &[&y, &dy], "ReLU backward")?;
    let p = BnParams { accumulate: accumulate as u32, ..BnParams::of(&y).with_views(&y, &dy, &dx) };
    let bufs = [(2, &y.tensor.buffer), (3, &dy.tensor.buffer), (4, &dx.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("relu_backward"), y.tensor.precision, &p, &bufs, planes(gpu, &y))
}

/// BatchNorm2d (batch statistics, forward fused with ReLU, running statistics, backward in training
/// and frozen mode) and ReLU backward on the CPU in f64 (conventions in [`crate::ops`]).
pub mod reference {
    /// Per-channel statistics: what [`bn_stats`] computes and a frozen layer's running statistics.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Stats {
        pub mean: Vec<f64>,
        /// Biased (divide by N·H·W) variance.
        pub var: Vec<f64>,
    }

    /// A layer as the launchers see it ([`super::BnLayer`]): γ, β, the statistics it normalises
    /// with (the batch's own from [`bn_stats`] in training mode, the running statistics when
    /// `frozen`), ε.
    #[derive(Clone, Copy)]
    pub struct Layer<'a> {
        pub gamma: &'a [f64],
        pub beta: &'a [f64],
        pub stats: &'a Stats,
        pub eps: f64,
        pub frozen: bool,
    }

    /// Gradients of a BatchNorm2d (+ ReLU).
    pub struct BnGrads {
        pub dx: Vec<f64>,
        pub dgamma: Vec<f64>,
        pub dbeta: Vec<f64>,
    }

    /// Per-channel mean and biased variance of `x` `[n, c, h, w]` over N·H·W (two passes).
    pub fn bn_stats(x: &[f64], [n, c, h, w]: [usize; 4]) -> Stats {
        let hw = h * w;
        let count = (n * hw) as f64;
        let values = |ch: usize| (0..n).flat_map(move |b| x[(b * c + ch) * hw..(b * c + ch + 1) * hw].iter());
        let mean: Vec<f64> = (0..c).map(|ch| values(ch).sum::<f64>() / count).collect();
        let var = (0..c).map(|ch| values(ch).map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / count).collect();
        Stats { mean, var }
    }

    /// `γ·(x − mean)/sqrt(var + ε) + β` of every element of `x`, before the ReLU.
    fn normalized<'a>(x: &'a [f64], [_, c, h, w]: [usize; 4], bn: &'a Layer) -> impl Iterator<Item = f64> + 'a {
        x.iter().enumerate().map(move |(i, &v)| {
            let ch = (i / (h * w)) % c;
            bn.gamma[ch] * (v - bn.stats.mean[ch]) / (bn.stats.var[ch] + bn.eps).sqrt() + bn.beta[ch]
        })
    }

    /// `y = relu?(γ·(x − mean)/sqrt(var + ε) + β)` of `x` `[n, c, h, w]` with `bn.stats`.
    pub fn bn_forward_relu(x: &[f64], shape: [usize; 4], bn: &Layer, relu: bool) -> Vec<f64> {
        normalized(x, shape, bn).map(|v| if relu { v.max(0.0) } else { v }).collect()
    }

    /// PyTorch's running-statistics update: `(1 − m)·running + m·batch`, with the unbiased variance
    /// `var·count/(count − 1)` (`count` = N·H·W of the batch).
    pub fn bn_update_running(running: &Stats, batch: &Stats, count: usize, momentum: f64) -> Stats {
        let unbias = count as f64 / (count as f64 - 1.0);
        let lerp = |r: &[f64], b: &[f64], f: f64| -> Vec<f64> {
            r.iter().zip(b).map(|(r, b)| (1.0 - momentum) * r + momentum * b * f).collect()
        };
        Stats { mean: lerp(&running.mean, &batch.mean, 1.0), var: lerp(&running.var, &batch.var, unbias) }
    }

    /// Backward of [`bn_forward_relu`] (with the ReLU mask `y > 0` when `relu`), given `dy`:
    /// in training mode the statistics are functions of `x`, frozen they are constants.
    pub fn bn_backward(dy: &[f64], x: &[f64], shape: [usize; 4], bn: &Layer, relu: bool) -> BnGrads {
        let [n, c, h, w] = shape;
        let hw = h * w;
        let count = (n * hw) as f64;
        let inv: Vec<f64> = bn.stats.var.iter().map(|v| 1.0 / (v + bn.eps).sqrt()).collect();
        let ch = |i: usize| (i / hw) % c;
        let xhat = |i: usize| (x[i] - bn.stats.mean[ch(i)]) * inv[ch(i)];
        let g: Vec<f64> =
            normalized(x, shape, bn).zip(dy).map(|(y, &d)| if relu && y <= 0.0 { 0.0 } else { d }).collect();
        let mut dgamma = vec![0.0; c];
        let mut dbeta = vec![0.0; c];
        for i in 0..x.len() {
            dgamma[ch(i)] += g[i] * xhat(i);
            dbeta[ch(i)] += g[i];
        }
        let dx = (0..x.len())
            .map(|i| {
                let k = ch(i);
                if bn.frozen {
                    bn.gamma[k] * inv[k] * g[i]
                } else {
                    bn.gamma[k] * inv[k] * (g[i] - dbeta[k] / count - xhat(i) * dgamma[k] / count)
                }
            })
            .collect();
        BnGrads { dx, dgamma, dbeta }
    }

    /// `dx = dy·[y > 0]`.
    pub fn relu_backward(dy: &[f64], y: &[f64]) -> Vec<f64> {
        dy.iter().zip(y).map(|(&d, &v)| if v > 0.0 { d } else { 0.0 }).collect()
    }
}
