//! 3x3 (padding 1) and 1x1 convolutions with a fused scale/shift/ReLU epilogue (`shaders/conv.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Shader, grid_1d};
use crate::tensor::{ChannelView, check_binding, encode};

pub static SHADER: Shader = Shader { name: "conv", body: include_str!("../../shaders/conv.wgsl") };
pub static CONV3X3: Kernel = Kernel { shader: &SHADER, entry: "conv3x3" };
pub static CONV1X1: Kernel = Kernel { shader: &SHADER, entry: "conv1x1" };
pub static CONV3X3_NAIVE: Kernel = Kernel { shader: &SHADER, entry: "conv3x3_naive" };

/// Output block of one `conv3x3` workgroup: columns, rows, output channels.
const TILE: [usize; 3] = [32, 8, 16];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
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
    _pad: u32,
}

/// A convolution's weights on the GPU in the kernel's layout, with its epilogue
/// `act(conv * scale[oc] + shift[oc])`.
pub struct ConvWeights {
    pub cin: usize,
    pub cout: usize,
    /// Kernel size: 3 or 1.
    pub k: usize,
    pub relu: bool,
    pub precision: Precision,
    wt: wgpu::Buffer,
    ss: wgpu::Buffer,
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
        if k != 1 && k != 3 {
            return Err(Error::Shape(format!("unsupported kernel size {k}x{k}")));
        }
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
        let mut ss = vec![0f32; quads * 4 * 2];
        for oc in 0..cout {
            ss[2 * oc] = scale[oc];
            ss[2 * oc + 1] = shift[oc];
        }
        let wt = storage(gpu, "conv weights", &encode(&packed, precision))?;
        let ss = storage(gpu, "conv scale/shift", bytemuck::cast_slice(&ss))?;
        Ok(ConvWeights { cin, cout, k, relu, precision, wt, ss })
    }

    /// Bytes the weights occupy on the GPU.
    pub fn bytes(&self) -> u64 {
        self.wt.size() + self.ss.size()
    }
}

fn storage(gpu: &Gpu, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
    use wgpu::util::DeviceExt;
    check_binding(gpu, bytes.len() as u64, label)?;
    Ok(gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: wgpu::BufferUsages::STORAGE,
    }))
}

fn params(w: &ConvWeights, input: &ChannelView, output: &ChannelView, oc_tiles: usize) -> Result<ConvParams> {
    let precision = super::same_precision(input, output)?;
    if precision != w.precision {
        return Err(Error::Shape(format!("{} weights applied to {} activations", w.precision, precision)));
    }
    if input.channels != w.cin || output.channels != w.cout {
        return Err(Error::Shape(format!(
            "convolution {}->{} channels applied to a {}-channel input writing {} channels",
            w.cin, w.cout, input.channels, output.channels
        )));
    }
    if (input.n(), input.h(), input.w()) != (output.n(), output.h(), output.w()) {
        return Err(Error::Shape("convolution input and output sizes differ".into()));
    }
    Ok(ConvParams {
        n: input.n() as u32,
        cin: w.cin as u32,
        h: input.h() as u32,
        w: input.w() as u32,
        cout: w.cout as u32,
        in_ctot: input.total() as u32,
        in_coff: input.offset as u32,
        out_ctot: output.total() as u32,
        out_coff: output.offset as u32,
        relu: w.relu as u32,
        oc_tiles: oc_tiles as u32,
        _pad: 0,
    })
}

/// `output = act(conv(input) * scale + shift)`, same spatial size (3x3 pads by 1).
pub fn conv(gpu: &Gpu, w: &ConvWeights, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let (n, h, wd) = (input.n(), input.h(), input.w());
    let bufs = [(1, &input.tensor.buffer), (2, &w.wt), (3, &w.ss), (4, &output.tensor.buffer)];
    if w.k == 3 {
        let oc_tiles = w.cout.div_ceil(TILE[2]);
        let p = params(w, &input, &output, oc_tiles)?;
        let groups = [wd.div_ceil(TILE[0]) as u32, h.div_ceil(TILE[1]) as u32, (n * oc_tiles) as u32];
        Dispatch::new(gpu, &CONV3X3, w.precision, &p, &bufs, groups)
    } else {
        let oc_tiles = w.cout.div_ceil(4);
        let p = params(w, &input, &output, oc_tiles)?;
        let [gx, gy] = grid_1d(gpu, h * wd, 64);
        Dispatch::new(gpu, &CONV1X1, w.precision, &p, &bufs, [gx, gy, (n * oc_tiles) as u32])
    }
}

/// The one-invocation-per-output 3x3 kernel, for benchmarks only.
pub fn conv3x3_naive(gpu: &Gpu, w: &ConvWeights, input: ChannelView, output: ChannelView) -> Result<Dispatch> {
    let p = params(w, &input, &output, 0)?;
    let [gx, gy] = grid_1d(gpu, input.h() * input.w(), 64);
    let bufs = [(1, &input.tensor.buffer), (2, &w.wt), (3, &w.ss), (4, &output.tensor.buffer)];
    Dispatch::new(gpu, &CONV3X3_NAIVE, w.precision, &p, &bufs, [gx, gy, (input.n() * w.cout) as u32])
}

/// Floating-point operations of a convolution (2 per multiply-add), for benchmark reports.
pub fn flops(n: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize) -> f64 {
    2.0 * (n * cin * cout * h * w * k * k) as f64
}
