//! 3x3 (padding 1) and 1x1 convolutions with a fused scale/shift/ReLU epilogue (`shaders/conv.wgsl`),
//! and their backward passes for training. The Winograd forward of the 3x3 one is [`winograd`],
//! the choice between the two per layer [`select`].
//!
//! Training uses the plain convolution `y = conv(x, W) + b` (BatchNorm and ReLU are separate ops):
//! the weights live as f32 master weights `[cout, cin, k, k]` in a GPU buffer (or a range of one)
//! that the optimizer updates; [`ConvWeights::trainable`] holds the kernel-layout copies, refreshed from the master
//! by [`relayout`] (and the bias by [`relayout_bias`]) at the start of each step, on the GPU.
//! Backward: [`conv_grad_input`] (dx, storage precision, may accumulate into a channel view),
//! [`conv_grad_weight_in`] (dW, f32 `[cout, cin, k, k]`), [`conv_grad_bias`] (db, f32 `[cout]`).

use std::sync::OnceLock;

use bytemuck::Zeroable;

use crate::error::{Error, Result};
pub mod reference;
pub mod select;
pub mod winograd;

use crate::gpu::{
    Binding, ChannelView, Dispatch, Gpu, Precision, Shader, buffer_bytes, encode, grid_1d, storage, zeroed,
};

pub static SHADER: Shader = wgsl!("conv": "lib/grid.wgsl", "lib/reduce.wgsl", "lib/conv_io.wgsl", "conv.wgsl");

/// Output block of one `conv3x3` workgroup: columns, rows, output channels.
const TILE: [usize; 3] = [32, 8, 16];
/// Block of one grad_weight workgroup: pixels per strip, input channels, output channels.
const GW_TILE_3X3: [usize; 3] = [32, 16, 32];
const GW_TILE_1X1: [usize; 3] = [64, 16, 16];
/// grad_weight splits the pixels into chunks until about this many workgroups run ...
const GW_TARGET_WORKGROUPS: usize = 1024;
/// ... each with at least this many strips ...
const GW_MIN_STRIPS: usize = 4;
/// ... and the partial sums (chunks x weights x 4 bytes) stay within this.
const GW_SCRATCH_BYTES: u64 = 16 << 20;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ConvParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    in_ctot: u32,
    in_coff: u32,
    out_ctot: u32,
    out_coff: u32,
    relu: u32,
    oc_tiles: u32,
    affine: u32,
    accumulate: u32,
    kk: u32,
    strips: u32,
    chunk: u32,
}

/// A convolution's weights on the GPU in the kernel's layout, with its epilogue
/// `act(conv * scale[oc] + shift[oc])`.
///
/// Two kinds: [`ConvWeights::new`] uploads host weights once (inference; read-only), and
/// [`ConvWeights::trainable`] allocates buffers that [`relayout`] / [`relayout_bias`] fill from
/// f32 master weights on the GPU (training). Both carry, for [`conv_grad_input`], a transposed and
/// spatially flipped copy of the weights: trainable ones from the start (relayout writes it with
/// the forward copy), uploaded ones from their first gradient on.
pub struct ConvWeights {
    pub cin: usize,
    pub cout: usize,
    /// Kernel size: 3 or 1.
    pub k: usize,
    pub relu: bool,
    pub precision: Precision,
    wt: wgpu::Buffer,
    ss: wgpu::Buffer,
    /// `wtt[((ci / 4) * cout + oc) * k*k + t][ci % 4] = W[oc, ci, k*k - 1 - t]`.
    wtt: OnceLock<wgpu::Buffer>,
    trainable: bool,
}

impl ConvWeights {
    /// `w` is PyTorch's `[cout, cin, k, k]` weight; `scale`/`shift` have `cout` entries.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        precision: Precision,
        w: &[f32],
        [cout, cin, k]: [usize; 3],
        scale: &[f32],
        shift: &[f32],
        relu: bool,
    ) -> Result<ConvWeights> {
        check_kernel(k)?;
        if w.len() != cout * cin * k * k || scale.len() != cout || shift.len() != cout {
            return Err(Error::Shape(format!("convolution weights do not match [{cout}, {cin}, {k}, {k}]")));
        }
        let kk = k * k;
        let quads = cout.div_ceil(4);
        // wt[((oc / 4) * cin + ci) * kk + t][oc % 4]
        let mut packed = vec![0f32; quads * cin * kk * 4];
        for oc in 0..cout {
            for ci in 0..cin {
                for t in 0..kk {
                    packed[(((oc / 4) * cin + ci) * kk + t) * 4 + oc % 4] = w[(oc * cin + ci) * kk + t];
                }
            }
        }
        let wt = storage(gpu, "conv weights", &encode(&packed, precision))?;
        let ss = scale_shift(gpu, scale, shift)?;
        Ok(ConvWeights { cin, cout, k, relu, precision, wt, ss, wtt: OnceLock::new(), trainable: false })
    }

    /// Buffers for a trainable `[cout, cin, k, k]` convolution without activation: the weights are
    /// zero until [`relayout`] runs, the epilogue is scale 1, shift 0 until [`relayout_bias`] runs.
    pub fn trainable(gpu: &Gpu, precision: Precision, [cout, cin, k]: [usize; 3]) -> Result<ConvWeights> {
        check_kernel(k)?;
        let kk = k * k;
        let wt = zeroed(gpu, "conv weights", buffer_bytes(cout.div_ceil(4) * 4 * cin * kk, precision))?;
        let wtt = zeroed(gpu, "conv weights (transposed)", buffer_bytes(cin.div_ceil(4) * 4 * cout * kk, precision))?;
        let ss: Vec<f32> = (0..cout.div_ceil(4) * 4).flat_map(|_| [1.0, 0.0]).collect();
        let ss = storage(gpu, "conv scale/shift", bytemuck::cast_slice(&ss))?;
        Ok(ConvWeights { cin, cout, k, relu: false, precision, wt, ss, wtt: OnceLock::from(wtt), trainable: true })
    }

    /// Bytes the weights occupy on the GPU.
    pub fn bytes(&self) -> u64 {
        self.wt.size() + self.ss.size() + self.wtt.get().map_or(0, |b| b.size())
    }

    /// Whether [`relayout`] and [`relayout_bias`] may write these weights.
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    fn shape(&self) -> String {
        format!("[{}, {}, {}, {}]", self.cout, self.cin, self.k, self.k)
    }

    /// The transposed copy, made on the GPU from the forward copy on first use (uploaded weights
    /// never change, so it stays valid).
    fn transposed(&self, gpu: &Gpu) -> Result<&wgpu::Buffer> {
        if let Some(b) = self.wtt.get() {
            return Ok(b);
        }
        let kk = self.k * self.k;
        let count = self.cin.div_ceil(4) * self.cout * kk;
        let b = zeroed(gpu, "conv weights (transposed)", buffer_bytes(count * 4, self.precision))?;
        let p = ConvParams { cin: self.cin as u32, cout: self.cout as u32, kk: kk as u32, ..Zeroable::zeroed() };
        let [gx, gy] = grid_1d(gpu, count, 64);
        let bufs = [(2, &self.wt), (7, &b)];
        let d = Dispatch::new(gpu, &SHADER.kernel("transpose_weights"), self.precision, &p, &bufs, [gx, gy, 1])?;
        gpu.run(&[&d])?;
        let _ = self.wtt.set(b);
        Ok(self.wtt.get().expect("set above"))
    }
}

/// The epilogue `(scale[oc], shift[oc])` pairs, zero-padded to a multiple of four channels.
fn scale_shift(gpu: &Gpu, scale: &[f32], shift: &[f32]) -> Result<wgpu::Buffer> {
    let mut ss = vec![0f32; scale.len().div_ceil(4) * 4 * 2];
    for (oc, (&a, &b)) in scale.iter().zip(shift).enumerate() {
        ss[2 * oc] = a;
        ss[2 * oc + 1] = b;
    }
    storage(gpu, "conv scale/shift", bytemuck::cast_slice(&ss))
}

fn check_kernel(k: usize) -> Result<()> {
    if k != 1 && k != 3 {
        return Err(Error::Shape(format!("unsupported kernel size {k}x{k}")));
    }
    Ok(())
}

/// Parameters of a convolution `input (cin channels) -> output (cout channels)` in `precision`.
fn view_params(
    precision: Precision,
    [cin, cout]: [usize; 2],
    input: &ChannelView,
    output: &ChannelView,
    what: &str,
) -> Result<ConvParams> {
    let p = super::same_precision(input, output)?;
    if p != precision {
        return Err(Error::Shape(format!("{precision} weights applied to {p} activations")));
    }
    if input.channels != cin || output.channels != cout {
        return Err(Error::Shape(format!(
            "{what} {cin}->{cout} channels applied to a {}-channel input writing {} channels",
            input.channels, output.channels
        )));
    }
    if (input.n(), input.h(), input.w()) != (output.n(), output.h(), output.w()) {
        return Err(Error::Shape(format!("{what} input and output sizes differ")));
    }
    let ([n, _, h, w], [in_ctot, in_coff], [out_ctot, out_coff]) =
        (super::dims(input), super::slot(input), super::slot(output));
    let (cin, cout) = (cin as u32, cout as u32);
    Ok(ConvParams { n, cin, h, w, cout, in_ctot, in_coff, out_ctot, out_coff, ..Zeroable::zeroed() })
}

fn params(w: &ConvWeights, input: &ChannelView, output: &ChannelView, oc_tiles: usize) -> Result<ConvParams> {
    let p = view_params(w.precision, [w.cin, w.cout], input, output, "convolution")?;
    Ok(ConvParams { relu: w.relu as u32, oc_tiles: oc_tiles as u32, affine: 1, ..p })
}

/// The tiled 3x3 or the 1x1 kernel over `p` (whose `cout` is the number of channels written).
fn launch(
    gpu: &Gpu,
    k: usize,
    precision: Precision,
    mut p: ConvParams,
    bufs: &[(u32, &wgpu::Buffer)],
) -> Result<Dispatch> {
    let (n, h, wd, cout) = (p.n as usize, p.h as usize, p.w as usize, p.cout as usize);
    if k == 3 {
        let oc_tiles = cout.div_ceil(TILE[2]);
        p.oc_tiles = oc_tiles as u32;
        let groups = [wd.div_ceil(TILE[0]) as u32, h.div_ceil(TILE[1]) as u32, (n * oc_tiles) as u32];
        Dispatch::new(gpu, &SHADER.kernel("conv3x3"), precision, &p, bufs, groups)
    } else {
        let oc_tiles = cout.div_ceil(4);
        p.oc_tiles = oc_tiles as u32;
        let [gx, gy] = grid_1d(gpu, h * wd, 64);
        Dispatch::new(gpu, &SHADER.kernel("conv1x1"), precision, &p, bufs, [gx, gy, (n * oc_tiles) as u32])
    }
}

/// `output = act(conv(input) * scale + shift)`, same spatial size (3x3 pads by 1).
pub fn conv(gpu: &Gpu, w: &ConvWeights, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let p = params(w, &input, &output, 0)?;
    let bufs = [(1, &input.tensor.buffer), (2, &w.wt), (3, &w.ss), (4, &output.tensor.buffer)];
    launch(gpu, w.k, w.precision, p, &bufs)
}

/// The one-invocation-per-output 3x3 kernel, for benchmarks only.
pub fn conv3x3_naive(gpu: &Gpu, w: &ConvWeights, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let p = params(w, &input, &output, 0)?;
    let [gx, gy] = grid_1d(gpu, input.h() * input.w(), 64);
    let bufs = [(1, &input.tensor.buffer), (2, &w.wt), (3, &w.ss), (4, &output.tensor.buffer)];
    Dispatch::new(gpu, &SHADER.kernel("conv3x3_naive"), w.precision, &p, &bufs, [gx, gy, (input.n() * w.cout) as u32])
}

/// Floating-point operations of a convolution (2 per multiply-add), for benchmark reports.
pub fn flops(n: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize) -> f64 {
    2.0 * (n * cin * cout * h * w * k * k) as f64
}

/// Fill trainable weights from f32 master weights `[cout, cin, k, k]` (a GPU buffer, or a range of
/// one, of at least `cout * cin * k * k` floats): the forward copy and the transposed copy for
/// [`conv_grad_input`], converted to the storage precision. Record it after each optimizer step,
/// before the forward.
pub fn relayout<'a>(gpu: &Gpu, master: impl Into<Binding<'a>>, w: &ConvWeights) -> Result<Dispatch> {
    let (master, kk) = (master.into(), w.k * w.k);
    check_trainable(w, "relayout")?;
    check_f32_buffer(master, w.cout * w.cin * kk, &format!("master weights {}", w.shape()))?;
    let p = ConvParams { cin: w.cin as u32, cout: w.cout as u32, kk: kk as u32, ..Zeroable::zeroed() };
    let count = (w.cout.div_ceil(4) * w.cin + w.cin.div_ceil(4) * w.cout) * kk;
    let [gx, gy] = grid_1d(gpu, count, 64);
    let wtt = w.wtt.get().expect("trainable weights have a transposed copy");
    Dispatch::new(
        gpu,
        &SHADER.kernel("relayout"),
        w.precision,
        &p,
        &[(5, master), (6, (&w.wt).into()), (7, wtt.into())],
        [gx, gy, 1],
    )
}

/// Set the epilogue of trainable weights to `conv + bias[oc]` from an f32 GPU buffer (or range)
/// of `cout` floats (scale 1, no activation). Without it a trainable convolution has no bias.
pub fn relayout_bias<'a>(gpu: &Gpu, bias: impl Into<Binding<'a>>, w: &ConvWeights) -> Result<Dispatch> {
    let bias = bias.into();
    check_trainable(w, "relayout_bias")?;
    check_f32_buffer(bias, w.cout, &format!("bias of {}", w.shape()))?;
    let p = ConvParams { cout: w.cout as u32, ..Zeroable::zeroed() };
    let groups = [w.cout.div_ceil(64) as u32, 1, 1];
    Dispatch::new(gpu, &SHADER.kernel("relayout_bias"), w.precision, &p, &[(8, bias), (9, (&w.ss).into())], groups)
}

fn check_trainable(w: &ConvWeights, what: &str) -> Result<()> {
    if !w.trainable {
        return Err(Error::Invalid(format!(
            "{what}: convolution {} was uploaded with ConvWeights::new (read-only); create it with \
             ConvWeights::trainable",
            w.shape()
        )));
    }
    Ok(())
}

fn check_f32_buffer(b: Binding, floats: usize, what: &str) -> Result<()> {
    if b.size() < floats as u64 * 4 {
        return Err(Error::Shape(format!("{what}: needs {floats} f32 values, the buffer holds {} bytes", b.size())));
    }
    Ok(())
}

/// `dx (+)= conv_transpose(dy, W)`: the gradient of the convolution's input, given `dy`, the
/// gradient of its output (`cout` channels). The scale/shift/ReLU epilogue is not differentiated
/// (training uses plain convolutions). With `accumulate`, adds into `dx` instead of overwriting
/// it (a tensor read by two consumers). `dy` and `dx` are channel views in the weights' precision.
pub fn conv_grad_input(
    gpu: &Gpu,
    w: &ConvWeights,
    dy: ChannelView,
    dx: ChannelView,
    accumulate: bool,
) -> Result<Dispatch> {
    let p = view_params(w.precision, [w.cout, w.cin], &dy, &dx, "convolution input gradient")?;
    let p = ConvParams { accumulate: accumulate as u32, ..p };
    let wtt = w.transposed(gpu)?;
    let bufs = [(1, &dy.tensor.buffer), (2, wtt), (3, &w.ss), (4, &dx.tensor.buffer)];
    launch(gpu, w.k, w.precision, p, &bufs)
}

/// How [`conv_grad_weight_in`] splits the pixels: (chunks, strips per chunk, strips).
fn grad_weight_split(gpu: &Gpu, [cout, cin, k]: [usize; 3], [n, h, wd]: [usize; 3]) -> (usize, usize, usize) {
    let total = cout * cin * k * k;
    let (tile, strips) = if k == 3 {
        (GW_TILE_3X3, n * h * wd.div_ceil(GW_TILE_3X3[0]))
    } else {
        (GW_TILE_1X1, n * (h * wd).div_ceil(GW_TILE_1X1[0]))
    };
    let (ci_tiles, oc_tiles) = (cin.div_ceil(tile[1]), cout.div_ceil(tile[2]));
    let by_work = GW_TARGET_WORKGROUPS.div_ceil(ci_tiles * oc_tiles);
    let by_strips = strips.div_ceil(GW_MIN_STRIPS);
    let by_memory = (GW_SCRATCH_BYTES.min(gpu.max_binding()) / (total as u64 * 4)) as usize;
    let chunks = by_work.min(by_strips).min(by_memory).max(1);
    let per = strips.div_ceil(chunks).max(1);
    (strips.div_ceil(per).max(1), per, strips)
}

/// Bytes of the partial-sum scratch the weight gradient of a `[cout, cin, k]` convolution over
/// an `[n, h, w]` input needs (0: none). A trainer can give every layer one shared buffer of the
/// largest size: the layers' backward launches run one after another.
pub fn grad_weight_scratch_bytes(gpu: &Gpu, shape: [usize; 3], input: [usize; 3]) -> u64 {
    let (chunks, _, _) = grad_weight_split(gpu, shape, input);
    let total = shape[0] * shape[1] * shape[2] * shape[2];
    if chunks == 1 { 0 } else { (chunks * total) as u64 * 4 }
}

/// `dW (+)= sum over images and pixels of dy x x-window`: the weight gradient as f32 in PyTorch's
/// layout `[cout, cin, k, k]`, into `dw` (a buffer or range of at least `cout * cin * k * k` floats). `x` is the
/// convolution's input, `dy` the gradient of its output. With `accumulate`, adds into `dw`
/// (gradient accumulation over micro-batches).
///
/// Returns one dispatch, or two when the pixels are split across workgroups: partial sums in
/// `scratch`, a caller-owned buffer of at least [`grad_weight_scratch_bytes`] (may be shared with
/// other launches that do not run concurrently) or, with `None`, one allocated here that the
/// dispatches keep alive; summed in a fixed order (deterministic).
pub fn conv_grad_weight_in<'a>(
    gpu: &Gpu,
    w: &ConvWeights,
    x: ChannelView,
    dy: ChannelView,
    dw: impl Into<Binding<'a>>,
    accumulate: bool,
    scratch: Option<&wgpu::Buffer>,
) -> Result<Vec<Dispatch>> {
    let dw = dw.into();
    let p = view_params(w.precision, [w.cin, w.cout], &x, &dy, "convolution weight gradient")?;
    let kk = w.k * w.k;
    let total = w.cout * w.cin * kk;
    check_f32_buffer(dw, total, &format!("weight gradient {}", w.shape()))?;
    let kernel = if w.k == 3 { &SHADER.kernel("conv3x3_grad_weight") } else { &SHADER.kernel("conv1x1_grad_weight") };
    let tile = if w.k == 3 { GW_TILE_3X3 } else { GW_TILE_1X1 };
    let (chunks, per, strips) = grad_weight_split(gpu, [w.cout, w.cin, w.k], [x.n(), x.h(), x.w()]);
    let p = ConvParams { kk: kk as u32, strips: strips as u32, chunk: per as u32, ..p };
    let groups = [w.cin.div_ceil(tile[1]) as u32, w.cout.div_ceil(tile[2]) as u32, chunks as u32];
    let (xb, dyb) = (Binding::from(x.tensor), Binding::from(dy.tensor));
    if chunks == 1 {
        let p = ConvParams { accumulate: accumulate as u32, ..p };
        return Ok(vec![Dispatch::new(gpu, kernel, w.precision, &p, &[(1, xb), (10, dyb), (11, dw)], groups)?]);
    }
    let need = (chunks * total) as u64 * 4;
    let own;
    let scratch = match scratch {
        Some(b) if b.size() >= need => b,
        Some(_) => {
            return Err(Error::Shape(format!(
                "convolution weight gradient {} needs a scratch buffer of {need} bytes",
                w.shape()
            )));
        }
        None => {
            own = zeroed(gpu, "conv weight gradient partial sums", need)?;
            &own
        }
    };
    let partial = Dispatch::new(gpu, kernel, w.precision, &p, &[(1, xb), (10, dyb), (11, scratch.into())], groups)?;
    let rp = ConvParams { accumulate: accumulate as u32, chunk: chunks as u32, ..p };
    let [gx, gy] = grid_1d(gpu, total, 64);
    let bufs = [(12, scratch.into()), (11, dw)];
    let reduce = Dispatch::new(gpu, &SHADER.kernel("grad_weight_reduce"), w.precision, &rp, &bufs, [gx, gy, 1])?;
    Ok(vec![partial, reduce])
}

/// `db (+)= sum over images and pixels of dy`: the bias gradient, f32 `[channels]`, into `db` (a
/// buffer or range of at least `dy.channels` floats). Deterministic (fixed-order workgroup
/// reduction).
pub fn conv_grad_bias<'a>(
    gpu: &Gpu,
    dy: ChannelView,
    db: impl Into<Binding<'a>>,
    accumulate: bool,
) -> Result<Dispatch> {
    let (c, db) = (dy.channels, db.into());
    check_f32_buffer(db, c, "bias gradient")?;
    let ([n, cout, h, w], [out_ctot, out_coff]) = (super::dims(&dy), super::slot(&dy));
    let p = ConvParams { n, h, w, cout, out_ctot, out_coff, accumulate: accumulate as u32, ..Zeroable::zeroed() };
    let bufs = [(10, dy.tensor.into()), (11, db)];
    Dispatch::new(gpu, &SHADER.kernel("grad_bias"), dy.tensor.precision, &p, &bufs, [c as u32, 1, 1])
}
