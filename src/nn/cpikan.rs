//! Scaled-cPIKAN (Mostajeran & Faroughi): a Chebyshev Kolmogorov–Arnold network on affinely
//! scaled coordinates (`shaders/chebykan.wgsl`, always f32).
//!
//! The model is the seed's PyTorch `ScaledCPIKAN(layers, K, domain_min, domain_max)`:
//! `x ↦ 2 (x − min) / (max − min) − 1`, then per layer `y_o = Σ_i Σ_k c[i, o, k] T_k(x_i)` with the
//! coefficients laid out `(in, out, K + 1)`, and after every layer but the last
//! `tanh(LayerNorm(y))` (eps 1e-5, affine). State_dict names: `domain_min`, `domain_max`,
//! `network.{3l}.cheby_coeffs`, `network.{3l + 1}.weight` / `.bias`.
//!
//! [`Cpikan`] holds the weights on the GPU; [`Cpikan::forward`] / [`Cpikan::eval_grid`] evaluate it
//! and [`Cpikan::backward`] returns the parameter (and coordinate) gradients for a given output
//! gradient. The kernel builders below are public so each can be tested against [`reference`].
//!
//! [`Cpikan::forward_derivatives`] propagates, in forward mode and analytically, the output and its
//! first and second derivatives along each physical input axis (for PDE residuals): every
//! activation then carries `1 + 2 D` channels per feature (`D = d_in` directions), laid out
//! `(batch, features, channel)` with channel 0 the value, `1 + a` the derivative along axis `a`
//! and `1 + D + a` the second derivative along axis `a`.
//! [`Cpikan::forward_derivatives_train`] keeps those channel activations and
//! [`Cpikan::backward_derivatives`] returns the parameter gradients of a loss on (u, u_a, u_aa)
//! (reverse mode through the tangent formulas; T''' enters the Chebyshev input adjoint).

use std::path::Path;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Readback, Shader, grid_1d};
use crate::io::weights::Weights;
use crate::tensor::check_binding;

pub static SHADER: Shader = Shader { name: "chebykan", body: include_str!("../../shaders/chebykan.wgsl") };
pub static AFFINE_SCALE: Kernel = Kernel { shader: &SHADER, entry: "affine_scale" };
pub static CHEBY_FORWARD: Kernel = Kernel { shader: &SHADER, entry: "cheby_forward" };
pub static CHEBY_BACKWARD_INPUT: Kernel = Kernel { shader: &SHADER, entry: "cheby_backward_input" };
pub static CHEBY_BACKWARD_COEFFS: Kernel = Kernel { shader: &SHADER, entry: "cheby_backward_coeffs" };
pub static SUM_CHUNKS: Kernel = Kernel { shader: &SHADER, entry: "sum_chunks" };
pub static LAYERNORM_TANH_FORWARD: Kernel = Kernel { shader: &SHADER, entry: "layernorm_tanh_forward" };
pub static LAYERNORM_TANH_BACKWARD: Kernel = Kernel { shader: &SHADER, entry: "layernorm_tanh_backward" };
pub static LAYERNORM_PARAMS_BACKWARD: Kernel = Kernel { shader: &SHADER, entry: "layernorm_params_backward" };
pub static LAYERNORM_PARAMS_REDUCE: Kernel = Kernel { shader: &SHADER, entry: "layernorm_params_reduce" };
pub static AFFINE_SCALE_DERIVATIVES: Kernel = Kernel { shader: &SHADER, entry: "affine_scale_derivatives" };
pub static CHEBY_FORWARD_DERIVATIVES: Kernel = Kernel { shader: &SHADER, entry: "cheby_forward_derivatives" };
pub static LAYERNORM_TANH_DERIVATIVES: Kernel = Kernel { shader: &SHADER, entry: "layernorm_tanh_derivatives" };
pub static CHEBY_BACKWARD_DERIVATIVES_INPUT: Kernel =
    Kernel { shader: &SHADER, entry: "cheby_backward_derivatives_input" };
pub static CHEBY_BACKWARD_DERIVATIVES_COEFFS: Kernel =
    Kernel { shader: &SHADER, entry: "cheby_backward_derivatives_coeffs" };
pub static LAYERNORM_TANH_DERIVATIVES_BACKWARD: Kernel =
    Kernel { shader: &SHADER, entry: "layernorm_tanh_derivatives_backward" };

/// Lanes per workgroup of every kernel in `chebykan.wgsl`.
const WG: usize = 64;

/// Samples per chunk of the two-stage batch reductions (the parameter gradients): a first kernel
/// sums each chunk in batch order (one invocation per chunk and parameter), a second adds the
/// chunk partials in chunk order, so the result is deterministic and large batches spread over
/// many invocations.
pub const CHUNK: usize = 256;

/// Chunks of [`CHUNK`] samples covering `batch` (at least one).
pub fn n_chunks(batch: usize) -> usize {
    batch.div_ceil(CHUNK).max(1)
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ChebyParams {
    batch: u32,
    n_in: u32,
    n_out: u32,
    degree: u32,
    use_grid: u32,
    grid_w: u32,
    n_dir: u32,
    chunk: u32,
}

/// Sizes of one Chebyshev layer applied to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChebyShape {
    pub batch: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub degree: usize,
}

impl ChebyShape {
    fn params(&self) -> ChebyParams {
        ChebyParams {
            batch: self.batch as u32,
            n_in: self.n_in as u32,
            n_out: self.n_out as u32,
            degree: self.degree as u32,
            chunk: CHUNK as u32,
            ..Default::default()
        }
    }
    /// Values in the coefficient tensor `(n_in, n_out, degree + 1)`.
    pub fn coeffs(&self) -> usize {
        self.n_in * self.n_out * (self.degree + 1)
    }
}

/// The architecture of a Scaled-cPIKAN.
#[derive(Clone, Debug, PartialEq)]
pub struct CpikanConfig {
    /// Widths, input first: `[2, 16, 16, 1]`.
    pub layers: Vec<usize>,
    /// Chebyshev degree K (K + 1 coefficients per edge).
    pub degree: usize,
    pub domain_min: Vec<f32>,
    pub domain_max: Vec<f32>,
}

impl CpikanConfig {
    /// Number of Chebyshev layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len().saturating_sub(1)
    }
    pub fn d_in(&self) -> usize {
        self.layers[0]
    }
    pub fn d_out(&self) -> usize {
        *self.layers.last().unwrap()
    }
    /// Shape of Chebyshev layer `l` for `batch` samples.
    pub fn shape(&self, l: usize, batch: usize) -> ChebyShape {
        ChebyShape { batch, n_in: self.layers[l], n_out: self.layers[l + 1], degree: self.degree }
    }

    fn validate(&self) -> Result<()> {
        if self.layers.len() < 2 || self.layers.contains(&0) {
            return Err(Error::Invalid(format!("cPIKAN layers {:?}: need at least two non-zero widths", self.layers)));
        }
        let d = self.layers[0];
        if self.domain_min.len() != d || self.domain_max.len() != d {
            return Err(Error::Invalid(format!(
                "cPIKAN domain has {} / {} bounds for {d} inputs",
                self.domain_min.len(),
                self.domain_max.len()
            )));
        }
        if self.domain_min.iter().zip(&self.domain_max).any(|(a, b)| b <= a || !a.is_finite() || !b.is_finite()) {
            return Err(Error::Invalid(format!(
                "cPIKAN domain [{:?}, {:?}]: every max must exceed its min",
                self.domain_min, self.domain_max
            )));
        }
        Ok(())
    }
}

/// The parameters of a Scaled-cPIKAN on the host (also the layout of its gradients).
#[derive(Clone, Debug)]
pub struct CpikanWeights {
    pub config: CpikanConfig,
    /// Per layer, `(n_in, n_out, degree + 1)` C-order.
    pub coeffs: Vec<Vec<f32>>,
    /// Per hidden layer (all but the last), LayerNorm weight and bias.
    pub ln_weight: Vec<Vec<f32>>,
    pub ln_bias: Vec<Vec<f32>>,
}

impl CpikanWeights {
    /// Read a state_dict with the seed's names (see the module docs).
    pub fn from_weights(w: &Weights) -> Result<CpikanWeights> {
        let err = |message: String| Error::Weights { path: w.path.clone(), message };
        let dmin = w.shape("domain_min")?.to_vec();
        if dmin.len() != 1 {
            return Err(err(format!("domain_min has shape {dmin:?}, expected (d_in,)")));
        }
        let domain_min = w.get("domain_min", &dmin)?.data.clone();
        let domain_max = w.get("domain_max", &dmin)?.data.clone();
        let mut layers = vec![dmin[0]];
        let mut coeffs = Vec::new();
        let mut degree = None;
        for l in 0.. {
            let name = format!("network.{}.cheby_coeffs", 3 * l);
            if !w.tensors.contains_key(&name) {
                break;
            }
            let s = w.shape(&name)?.to_vec();
            if s.len() != 3 || s[0] != layers[l] || s[2] == 0 || degree.is_some_and(|k| k + 1 != s[2]) {
                return Err(err(format!(
                    "'{name}' has shape {s:?}, expected ({}, out, degree + 1) with one degree for all layers",
                    layers[l]
                )));
            }
            degree = Some(s[2] - 1);
            layers.push(s[1]);
            coeffs.push(w.get(&name, &s)?.data.clone());
        }
        let degree = degree.ok_or_else(|| err("no 'network.0.cheby_coeffs': not a Scaled-cPIKAN state_dict".into()))?;
        let (mut ln_weight, mut ln_bias) = (Vec::new(), Vec::new());
        for l in 0..layers.len() - 2 {
            let n = layers[l + 1];
            ln_weight.push(w.get(&format!("network.{}.weight", 3 * l + 1), &[n])?.data.clone());
            ln_bias.push(w.get(&format!("network.{}.bias", 3 * l + 1), &[n])?.data.clone());
        }
        let config = CpikanConfig { layers, degree, domain_min, domain_max };
        config.validate().map_err(|e| err(e.to_string()))?;
        Ok(CpikanWeights { config, coeffs, ln_weight, ln_bias })
    }

    pub fn load(path: &Path) -> Result<CpikanWeights> {
        Self::from_weights(&Weights::load(path)?)
    }

    /// Check every tensor's length against the config.
    pub fn validate(&self) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        let hidden = c.n_layers() - 1;
        let ok = self.coeffs.len() == c.n_layers()
            && self.coeffs.iter().enumerate().all(|(l, v)| v.len() == c.shape(l, 1).coeffs())
            && self.ln_weight.len() == hidden
            && self.ln_bias.len() == hidden
            && (0..hidden)
                .all(|l| self.ln_weight[l].len() == c.layers[l + 1] && self.ln_bias[l].len() == c.layers[l + 1]);
        if !ok {
            return Err(Error::Invalid(format!("cPIKAN parameters do not match layers {:?}", c.layers)));
        }
        Ok(())
    }
}

/// Gradients of a scalar loss with respect to the parameters (same layout as [`CpikanWeights`])
/// and to the physical input coordinates `(batch, d_in)`.
#[derive(Clone, Debug)]
pub struct CpikanGrads {
    pub coeffs: Vec<Vec<f32>>,
    pub ln_weight: Vec<Vec<f32>>,
    pub ln_bias: Vec<Vec<f32>>,
    pub coords: Vec<f32>,
}

/// An f32 storage buffer holding `data` (at least 4 bytes).
pub fn storage(gpu: &Gpu, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
    let mut bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
    if bytes.is_empty() {
        bytes.resize(4, 0);
    }
    check_binding(gpu, bytes.len() as u64, label)?;
    Ok(gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    }))
}

/// A zeroed f32 storage buffer of `len` values (at least one).
pub fn storage_zeroed(gpu: &Gpu, label: &str, len: usize) -> Result<wgpu::Buffer> {
    let bytes = len.max(1) as u64 * 4;
    check_binding(gpu, bytes, label)?;
    Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

fn launch(gpu: &Gpu, k: &Kernel, p: &ChebyParams, bufs: &[(u32, &wgpu::Buffer)], count: usize) -> Result<Dispatch> {
    let [gx, gy] = grid_1d(gpu, count, WG);
    Dispatch::new(gpu, k, Precision::F32, p, bufs, [gx, gy, 1])
}

/// Where [`affine_scale`] takes its coordinates from.
pub enum Coords<'a> {
    /// `(batch, d)` values in a buffer.
    Buffer(&'a wgpu::Buffer),
    /// Every integer pixel of a grid `w` columns wide, row-major, as `(x = column, y = row)`
    /// (`d` must be 2); `batch` is `h * w`.
    Grid { w: usize },
}

impl Coords<'_> {
    /// The buffer to bind as coordinates (the domain buffer as a placeholder for a grid), the
    /// grid flag and the grid width.
    fn binding<'b>(&self, domain: &'b wgpu::Buffer, d: usize) -> Result<(&'b wgpu::Buffer, u32, u32)>
    where
        Self: 'b,
    {
        match *self {
            Coords::Buffer(b) => Ok((b, 0, 0)),
            Coords::Grid { w } => {
                if d != 2 || w == 0 {
                    return Err(Error::Shape(format!("a pixel grid needs 2 input coordinates and w > 0, got d = {d}")));
                }
                Ok((domain, 1, w as u32))
            }
        }
    }
}

/// `out[b, j] = 2 (coords[b, j] − min_j) / (max_j − min_j) − 1`; `domain` holds the `d` minima then
/// the `d` maxima.
pub fn affine_scale(
    gpu: &Gpu,
    coords: Coords,
    domain: &wgpu::Buffer,
    out: &wgpu::Buffer,
    batch: usize,
    d: usize,
) -> Result<Dispatch> {
    let (x, use_grid, grid_w) = coords.binding(domain, d)?;
    let p = ChebyParams { batch: batch as u32, n_in: d as u32, use_grid, grid_w, ..Default::default() };
    launch(gpu, &AFFINE_SCALE, &p, &[(1, x), (2, out), (3, domain)], batch * d)
}

/// `y (batch, n_out) = Σ_i Σ_k c[i, o, k] T_k(x[b, i])` for `x (batch, n_in)`.
pub fn cheby_forward(
    gpu: &Gpu,
    s: ChebyShape,
    x: &wgpu::Buffer,
    coeffs: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    launch(gpu, &CHEBY_FORWARD, &s.params(), &[(1, x), (2, y), (3, coeffs)], s.batch * s.n_out)
}

/// `dx (batch, n_in)` of [`cheby_forward`] for `dy (batch, n_out)`.
pub fn cheby_backward_input(
    gpu: &Gpu,
    s: ChebyShape,
    x: &wgpu::Buffer,
    coeffs: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
) -> Result<Dispatch> {
    launch(gpu, &CHEBY_BACKWARD_INPUT, &s.params(), &[(1, x), (3, coeffs), (6, dy), (7, dx)], s.batch * s.n_in)
}

/// The second stage of a batch reduction: `out[t] = Σ_chunk partials[chunk, t]` over the
/// [`n_chunks`]`(batch)` partials of `len` values, in chunk order.
fn sum_chunks(gpu: &Gpu, batch: usize, len: usize, partials: &wgpu::Buffer, out: &wgpu::Buffer) -> Result<Dispatch> {
    let p = ChebyParams { batch: batch as u32, n_out: len as u32, chunk: CHUNK as u32, ..Default::default() };
    launch(gpu, &SUM_CHUNKS, &p, &[(1, partials), (8, out)], len)
}

/// `dc (n_in, n_out, degree + 1) = Σ_b dy[b, o] T_k(x[b, i])` (overwritten): per-chunk partial sums
/// in batch order, then the chunks in order (two dispatches, run in this order).
pub fn cheby_backward_coeffs(
    gpu: &Gpu,
    s: ChebyShape,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dc: &wgpu::Buffer,
) -> Result<[Dispatch; 2]> {
    let partials = storage_zeroed(gpu, "cpikan dc partials", n_chunks(s.batch) * s.coeffs())?;
    let bufs = [(1, x), (2, &partials), (6, dy)];
    Ok([
        launch(gpu, &CHEBY_BACKWARD_COEFFS, &s.params(), &bufs, n_chunks(s.batch) * s.coeffs())?,
        sum_chunks(gpu, s.batch, s.coeffs(), &partials, dc)?,
    ])
}

fn ln_params(batch: usize, n: usize) -> ChebyParams {
    ChebyParams { batch: batch as u32, n_out: n as u32, chunk: CHUNK as u32, ..Default::default() }
}

/// `a (batch, n) = tanh(LayerNorm(z) · gamma + beta)` per sample (eps 1e-5, biased variance).
pub fn layernorm_tanh_forward(
    gpu: &Gpu,
    batch: usize,
    n: usize,
    z: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    a: &wgpu::Buffer,
) -> Result<Dispatch> {
    let bufs = [(1, z), (2, a), (4, gamma), (5, beta)];
    launch(gpu, &LAYERNORM_TANH_FORWARD, &ln_params(batch, n), &bufs, batch)
}

/// Backward of [`layernorm_tanh_forward`] given the pre-norm `z` and `da`: writes `dz` and the
/// scratch `du` = d(pre-tanh), `dux` = du · x̂ (all `(batch, n)`) that
/// [`layernorm_params_backward`] reduces.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_tanh_backward(
    gpu: &Gpu,
    batch: usize,
    n: usize,
    z: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    da: &wgpu::Buffer,
    dz: &wgpu::Buffer,
    scratch: [&wgpu::Buffer; 2],
) -> Result<Dispatch> {
    let bufs = [(1, z), (4, gamma), (5, beta), (6, da), (7, dz), (10, scratch[0]), (11, scratch[1])];
    launch(gpu, &LAYERNORM_TANH_BACKWARD, &ln_params(batch, n), &bufs, batch)
}

/// `dgamma[j] = Σ_b dux[b, j]`, `dbeta[j] = Σ_b du[b, j]` from [`layernorm_tanh_backward`]'s scratch:
/// per-chunk partial sums in batch order, then the chunks in order (two dispatches, in this order).
pub fn layernorm_params_backward(
    gpu: &Gpu,
    batch: usize,
    n: usize,
    scratch: [&wgpu::Buffer; 2],
    dgamma: &wgpu::Buffer,
    dbeta: &wgpu::Buffer,
) -> Result<[Dispatch; 2]> {
    let partials = storage_zeroed(gpu, "cpikan dln partials", n_chunks(batch) * 2 * n)?;
    let p = ln_params(batch, n);
    Ok([
        launch(
            gpu,
            &LAYERNORM_PARAMS_BACKWARD,
            &p,
            &[(2, &partials), (10, scratch[0]), (11, scratch[1])],
            n_chunks(batch) * n,
        )?,
        launch(gpu, &LAYERNORM_PARAMS_REDUCE, &p, &[(1, &partials), (8, dgamma), (9, dbeta)], n)?,
    ])
}

/// Channels per feature of a derivative activation with `dirs` input directions.
pub fn channels(dirs: usize) -> usize {
    1 + 2 * dirs
}

/// [`affine_scale`] with tangents: `out (batch, d, 1 + 2 d)`, first derivative along axis `a` of
/// coordinate `j` is `2 / (max_j − min_j)` if `a == j` else 0, second derivatives 0.
pub fn affine_scale_derivatives(
    gpu: &Gpu,
    coords: Coords,
    domain: &wgpu::Buffer,
    out: &wgpu::Buffer,
    batch: usize,
    d: usize,
) -> Result<Dispatch> {
    let (x, use_grid, grid_w) = coords.binding(domain, d)?;
    let p =
        ChebyParams { batch: batch as u32, n_in: d as u32, use_grid, grid_w, n_dir: d as u32, ..Default::default() };
    launch(gpu, &AFFINE_SCALE_DERIVATIVES, &p, &[(1, x), (2, out), (3, domain)], batch * d)
}

/// [`cheby_forward`] with tangents: `x (batch, n_in, 1 + 2 dirs)` → `y (batch, n_out, 1 + 2 dirs)`;
/// `y' = Σ c T'(x) x'`, `y'' = Σ c (T''(x) x'² + T'(x) x'')` per direction.
pub fn cheby_forward_derivatives(
    gpu: &Gpu,
    s: ChebyShape,
    dirs: usize,
    x: &wgpu::Buffer,
    coeffs: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    let p = ChebyParams { n_dir: dirs as u32, ..s.params() };
    launch(gpu, &CHEBY_FORWARD_DERIVATIVES, &p, &[(1, x), (2, y), (3, coeffs)], s.batch * s.n_out)
}

/// [`layernorm_tanh_forward`] with tangents: `z`, `a` both `(batch, n, 1 + 2 dirs)`; the mean and
/// variance are differentiated too.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_tanh_derivatives(
    gpu: &Gpu,
    batch: usize,
    n: usize,
    dirs: usize,
    z: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    a: &wgpu::Buffer,
) -> Result<Dispatch> {
    let p = ChebyParams { n_dir: dirs as u32, ..ln_params(batch, n) };
    launch(gpu, &LAYERNORM_TANH_DERIVATIVES, &p, &[(1, z), (2, a), (4, gamma), (5, beta)], batch)
}

/// Backward of [`cheby_forward_derivatives`] for the inputs: `dx (batch, n_in, 1 + 2 dirs)` from
/// `dy (batch, n_out, 1 + 2 dirs)` (needs T''' of the recurrence).
pub fn cheby_backward_derivatives_input(
    gpu: &Gpu,
    s: ChebyShape,
    dirs: usize,
    x: &wgpu::Buffer,
    coeffs: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
) -> Result<Dispatch> {
    let p = ChebyParams { n_dir: dirs as u32, ..s.params() };
    let bufs = [(1, x), (3, coeffs), (6, dy), (7, dx)];
    launch(gpu, &CHEBY_BACKWARD_DERIVATIVES_INPUT, &p, &bufs, s.batch * s.n_in)
}

/// Backward of [`cheby_forward_derivatives`] for the coefficients: `dc (n_in, n_out, degree + 1)`
/// (overwritten; per-chunk partial sums in batch order, then the chunks in order: two dispatches).
pub fn cheby_backward_derivatives_coeffs(
    gpu: &Gpu,
    s: ChebyShape,
    dirs: usize,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dc: &wgpu::Buffer,
) -> Result<[Dispatch; 2]> {
    let p = ChebyParams { n_dir: dirs as u32, ..s.params() };
    let partials = storage_zeroed(gpu, "cpikan dc partials", n_chunks(s.batch) * s.coeffs())?;
    let bufs = [(1, x), (2, &partials), (6, dy)];
    Ok([
        launch(gpu, &CHEBY_BACKWARD_DERIVATIVES_COEFFS, &p, &bufs, n_chunks(s.batch) * s.coeffs())?,
        sum_chunks(gpu, s.batch, s.coeffs(), &partials, dc)?,
    ])
}

/// Backward of [`layernorm_tanh_derivatives`]: from the pre-norm channels `z` and `da` (both
/// `(batch, n, 1 + 2 dirs)`) writes `dz` and the `(batch, n)` scratch (d pre-tanh value, per-sample
/// dgamma) that [`layernorm_params_backward`] reduces.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_tanh_derivatives_backward(
    gpu: &Gpu,
    batch: usize,
    n: usize,
    dirs: usize,
    z: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    da: &wgpu::Buffer,
    dz: &wgpu::Buffer,
    scratch: [&wgpu::Buffer; 2],
) -> Result<Dispatch> {
    let p = ChebyParams { n_dir: dirs as u32, ..ln_params(batch, n) };
    let bufs = [(1, z), (4, gamma), (5, beta), (6, da), (7, dz), (10, scratch[0]), (11, scratch[1])];
    launch(gpu, &LAYERNORM_TANH_DERIVATIVES_BACKWARD, &p, &bufs, batch)
}

/// The network's output and its derivatives along the physical input axes, each `(batch, d_out)`.
/// For `d_in = 1`, `uy` and `uyy` are empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Derivatives {
    pub u: Vec<f32>,
    pub ux: Vec<f32>,
    pub uy: Vec<f32>,
    pub uxx: Vec<f32>,
    pub uyy: Vec<f32>,
}

impl Derivatives {
    /// Split a `(batch, d_out, 1 + 2 dirs)` channel buffer's contents.
    fn from_channels(v: &[f32], dirs: usize) -> Derivatives {
        let ch = channels(dirs);
        let take = |q: usize| if q < ch { v.chunks(ch).map(|c| c[q]).collect() } else { Vec::new() };
        let (uy, uyy) = if dirs >= 2 { (take(2), take(2 + dirs)) } else { (Vec::new(), Vec::new()) };
        Derivatives { u: take(0), ux: take(1), uy, uxx: take(1 + dirs), uyy }
    }
}

/// A Scaled-cPIKAN with its parameters on the GPU.
pub struct Cpikan {
    pub config: CpikanConfig,
    domain: wgpu::Buffer,
    coeffs: Vec<wgpu::Buffer>,
    ln_weight: Vec<wgpu::Buffer>,
    ln_bias: Vec<wgpu::Buffer>,
}

/// The GPU activations of one forward pass, kept for [`Cpikan::backward`].
pub struct Activations {
    pub batch: usize,
    /// Input of each Chebyshev layer: the scaled coordinates, then each hidden `tanh` output.
    inputs: Vec<wgpu::Buffer>,
    /// Output of each Chebyshev layer (the last is the network's output).
    outputs: Vec<wgpu::Buffer>,
}

/// The GPU channel activations of one derivative pass, kept for [`Cpikan::backward_derivatives`].
pub struct DerivativeActivations {
    pub batch: usize,
    /// Input channels of each Chebyshev layer.
    inputs: Vec<wgpu::Buffer>,
    /// Output channels of each Chebyshev layer.
    outputs: Vec<wgpu::Buffer>,
}

impl Activations {
    /// The network's output `(batch, d_out)`.
    pub fn output(&self, gpu: &Gpu, d_out: usize) -> Result<Vec<f32>> {
        Readback::f32(gpu, self.outputs.last().unwrap(), self.batch * d_out)
    }
}

impl Cpikan {
    pub fn new(gpu: &Gpu, w: &CpikanWeights) -> Result<Cpikan> {
        w.validate()?;
        let c = &w.config;
        let domain = storage(gpu, "cpikan domain", &[c.domain_min.as_slice(), &c.domain_max].concat())?;
        let up = |label: &str, v: &[Vec<f32>]| v.iter().map(|t| storage(gpu, label, t)).collect::<Result<Vec<_>>>();
        Ok(Cpikan {
            config: c.clone(),
            domain,
            coeffs: up("cpikan coeffs", &w.coeffs)?,
            ln_weight: up("cpikan ln weight", &w.ln_weight)?,
            ln_bias: up("cpikan ln bias", &w.ln_bias)?,
        })
    }

    pub fn load(gpu: &Gpu, path: &Path) -> Result<Cpikan> {
        Self::new(gpu, &CpikanWeights::load(path)?)
    }

    /// Run the network on `batch` samples taken from `coords`; keeps every activation.
    pub fn forward_pass(&self, gpu: &Gpu, coords: Coords, batch: usize) -> Result<Activations> {
        let c = &self.config;
        if batch == 0 {
            return Err(Error::Shape("cPIKAN forward of an empty batch".into()));
        }
        let mut inputs = vec![storage_zeroed(gpu, "cpikan x0", batch * c.d_in())?];
        let mut outputs = Vec::new();
        let mut ds = vec![affine_scale(gpu, coords, &self.domain, &inputs[0], batch, c.d_in())?];
        for l in 0..c.n_layers() {
            let s = c.shape(l, batch);
            outputs.push(storage_zeroed(gpu, "cpikan z", batch * s.n_out)?);
            ds.push(cheby_forward(gpu, s, &inputs[l], &self.coeffs[l], &outputs[l])?);
            if l + 1 < c.n_layers() {
                inputs.push(storage_zeroed(gpu, "cpikan a", batch * s.n_out)?);
                let (g, b) = (&self.ln_weight[l], &self.ln_bias[l]);
                ds.push(layernorm_tanh_forward(gpu, batch, s.n_out, &outputs[l], g, b, &inputs[l + 1])?);
            }
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        Ok(Activations { batch, inputs, outputs })
    }

    /// The network at `coords` `(batch, d_in)` in physical units: `(batch, d_out)`.
    pub fn forward(&self, gpu: &Gpu, coords: &[f32]) -> Result<Vec<f32>> {
        let d = self.config.d_in();
        if coords.is_empty() || !coords.len().is_multiple_of(d) {
            return Err(Error::Shape(format!("{} coordinate values for {d} inputs", coords.len())));
        }
        let batch = coords.len() / d;
        let x = storage(gpu, "cpikan coords", coords)?;
        self.forward_pass(gpu, Coords::Buffer(&x), batch)?.output(gpu, self.config.d_out())
    }

    /// The output and its first and second derivatives along each physical input axis
    /// (`d_in` 1 or 2), at `batch` samples taken from `coords`, in one analytic forward-mode pass.
    pub fn forward_derivatives_pass(&self, gpu: &Gpu, coords: Coords, batch: usize) -> Result<Derivatives> {
        let c = &self.config;
        let d = c.d_in();
        if !(1..=2).contains(&d) {
            return Err(Error::Shape(format!("forward_derivatives needs 1 or 2 inputs, not layers {:?}", c.layers)));
        }
        if batch == 0 {
            return Err(Error::Shape("cPIKAN forward of an empty batch".into()));
        }
        let ch = channels(d);
        let mut x = storage_zeroed(gpu, "cpikan dx0", batch * d * ch)?;
        let mut keep = Vec::new();
        let mut ds = vec![affine_scale_derivatives(gpu, coords, &self.domain, &x, batch, d)?];
        for l in 0..c.n_layers() {
            let s = c.shape(l, batch);
            let z = storage_zeroed(gpu, "cpikan dz", batch * s.n_out * ch)?;
            ds.push(cheby_forward_derivatives(gpu, s, d, &x, &self.coeffs[l], &z)?);
            let next = if l + 1 < c.n_layers() {
                let a = storage_zeroed(gpu, "cpikan da", batch * s.n_out * ch)?;
                let (g, b) = (&self.ln_weight[l], &self.ln_bias[l]);
                ds.push(layernorm_tanh_derivatives(gpu, batch, s.n_out, d, &z, g, b, &a)?);
                keep.push(z);
                a
            } else {
                z
            };
            keep.push(std::mem::replace(&mut x, next));
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        let v = Readback::f32(gpu, &x, batch * c.d_out() * ch)?;
        Ok(Derivatives::from_channels(&v, d))
    }

    /// [`Cpikan::forward_derivatives_pass`] at `coords` `(batch, d_in)` in physical units.
    pub fn forward_derivatives(&self, gpu: &Gpu, coords: &[f32]) -> Result<Derivatives> {
        let d = self.config.d_in();
        if coords.is_empty() || !coords.len().is_multiple_of(d) {
            return Err(Error::Shape(format!("{} coordinate values for {d} inputs", coords.len())));
        }
        let x = storage(gpu, "cpikan coords", coords)?;
        self.forward_derivatives_pass(gpu, Coords::Buffer(&x), coords.len() / d)
    }

    /// Overwrite the parameters with `w` (same config).
    pub fn upload(&self, gpu: &Gpu, w: &CpikanWeights) -> Result<()> {
        w.validate()?;
        if w.config != self.config {
            return Err(Error::Invalid(format!("cPIKAN upload: layers {:?} differ", w.config.layers)));
        }
        let put = |bufs: &[wgpu::Buffer], v: &[Vec<f32>]| {
            for (b, t) in bufs.iter().zip(v) {
                gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(t));
            }
        };
        put(&self.coeffs, &w.coeffs);
        put(&self.ln_weight, &w.ln_weight);
        put(&self.ln_bias, &w.ln_bias);
        Ok(())
    }

    /// [`Cpikan::forward_derivatives`] keeping the activations for
    /// [`Cpikan::backward_derivatives`].
    pub fn forward_derivatives_train(&self, gpu: &Gpu, coords: &[f32]) -> Result<(Derivatives, DerivativeActivations)> {
        let c = &self.config;
        let d = c.d_in();
        if !(1..=2).contains(&d) {
            return Err(Error::Shape(format!("forward_derivatives needs 1 or 2 inputs, not layers {:?}", c.layers)));
        }
        if coords.is_empty() || !coords.len().is_multiple_of(d) {
            return Err(Error::Shape(format!("{} coordinate values for {d} inputs", coords.len())));
        }
        let batch = coords.len() / d;
        let ch = channels(d);
        let xb = storage(gpu, "cpikan coords", coords)?;
        let mut inputs = vec![storage_zeroed(gpu, "cpikan dx0", batch * d * ch)?];
        let mut outputs = Vec::new();
        let mut ds = vec![affine_scale_derivatives(gpu, Coords::Buffer(&xb), &self.domain, &inputs[0], batch, d)?];
        for l in 0..c.n_layers() {
            let s = c.shape(l, batch);
            outputs.push(storage_zeroed(gpu, "cpikan dz", batch * s.n_out * ch)?);
            ds.push(cheby_forward_derivatives(gpu, s, d, &inputs[l], &self.coeffs[l], &outputs[l])?);
            if l + 1 < c.n_layers() {
                inputs.push(storage_zeroed(gpu, "cpikan da", batch * s.n_out * ch)?);
                let (g, b) = (&self.ln_weight[l], &self.ln_bias[l]);
                ds.push(layernorm_tanh_derivatives(gpu, batch, s.n_out, d, &outputs[l], g, b, &inputs[l + 1])?);
            }
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        let v = Readback::f32(gpu, outputs.last().unwrap(), batch * c.d_out() * ch)?;
        Ok((Derivatives::from_channels(&v, d), DerivativeActivations { batch, inputs, outputs }))
    }

    /// Gradients of a loss on the derivative pass of `acts`, given its gradient `g` with respect to
    /// each output channel (same layout as [`Derivatives`]: `u`, `ux`, `uxx` and for `d_in = 2`
    /// `uy`, `uyy`, each `(batch, d_out)`). The coordinate gradient flows through the value only.
    pub fn backward_derivatives(
        &self,
        gpu: &Gpu,
        acts: &DerivativeActivations,
        g: &Derivatives,
    ) -> Result<CpikanGrads> {
        let c = &self.config;
        let (batch, d, nl) = (acts.batch, c.d_in(), c.n_layers());
        let ch = channels(d);
        let n = batch * c.d_out();
        let mut cols = vec![&g.u, &g.ux];
        if d == 2 {
            cols.push(&g.uy);
        }
        cols.push(&g.uxx);
        if d == 2 {
            cols.push(&g.uyy);
        }
        if cols.iter().any(|v| v.len() != n) {
            return Err(Error::Shape(format!("derivative gradients: every channel needs ({batch}, {})", c.d_out())));
        }
        let dy: Vec<f32> = (0..n).flat_map(|i| cols.iter().map(move |v| v[i])).collect();
        let mut ds = Vec::new();
        let mut dz = storage(gpu, "cpikan dy", &dy)?;
        let mut keep = Vec::new();
        let mut dc = Vec::new();
        let mut dln = Vec::new();
        for l in (0..nl).rev() {
            let s = c.shape(l, batch);
            let dcl = storage_zeroed(gpu, "cpikan dc", s.coeffs())?;
            let dx = storage_zeroed(gpu, "cpikan dx", batch * s.n_in * ch)?;
            ds.extend(cheby_backward_derivatives_coeffs(gpu, s, d, &acts.inputs[l], &dz, &dcl)?);
            ds.push(cheby_backward_derivatives_input(gpu, s, d, &acts.inputs[l], &self.coeffs[l], &dz, &dx)?);
            dc.push((l, dcl, s.coeffs()));
            if l > 0 {
                let nf = s.n_in;
                let dzp = storage_zeroed(gpu, "cpikan dz", batch * nf * ch)?;
                let scratch =
                    [storage_zeroed(gpu, "cpikan du", batch * nf)?, storage_zeroed(gpu, "cpikan dux", batch * nf)?];
                let (dg, db) = (storage_zeroed(gpu, "cpikan dgamma", nf)?, storage_zeroed(gpu, "cpikan dbeta", nf)?);
                let (gm, bt) = (&self.ln_weight[l - 1], &self.ln_bias[l - 1]);
                let sc = [&scratch[0], &scratch[1]];
                let z = &acts.outputs[l - 1];
                ds.push(layernorm_tanh_derivatives_backward(gpu, batch, nf, d, z, gm, bt, &dx, &dzp, sc)?);
                ds.extend(layernorm_params_backward(gpu, batch, nf, sc, &dg, &db)?);
                dln.push((l - 1, dg, db, scratch));
                keep.push(std::mem::replace(&mut dz, dzp));
                keep.push(dx);
            } else {
                keep.push(std::mem::replace(&mut dz, dx));
            }
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        let mut grads = read_param_grads(gpu, c, &dc, &dln)?;
        // dz now holds the gradient of the scaled input channels.
        let dx0 = Readback::f32(gpu, &dz, batch * d * ch)?;
        grads.coords =
            (0..batch * d).map(|i| dx0[i * ch] * 2.0 / (c.domain_max[i % d] - c.domain_min[i % d])).collect();
        Ok(grads)
    }

    /// The network (d_in = 2, d_out = 1) at every integer pixel (x = column, y = row): `(h, w)`.
    pub fn eval_grid(&self, gpu: &Gpu, h: usize, w: usize) -> Result<Vec<f32>> {
        if self.config.d_in() != 2 || self.config.d_out() != 1 {
            return Err(Error::Shape(format!("eval_grid needs a 2 -> 1 network, not layers {:?}", self.config.layers)));
        }
        self.forward_pass(gpu, Coords::Grid { w }, h * w)?.output(gpu, 1)
    }

    /// Gradients of a loss whose gradient with respect to the output of `acts` is `dy`
    /// `(batch, d_out)`: parameters, and the physical input coordinates.
    pub fn backward(&self, gpu: &Gpu, acts: &Activations, dy: &[f32]) -> Result<CpikanGrads> {
        let c = &self.config;
        let batch = acts.batch;
        if dy.len() != batch * c.d_out() {
            return Err(Error::Shape(format!("dy has {} values for ({batch}, {})", dy.len(), c.d_out())));
        }
        let nl = c.n_layers();
        let mut ds = Vec::new();
        // dzs[l]: gradient of Chebyshev layer l's output; dxs[l]: of its input.
        let mut dzs: Vec<Option<wgpu::Buffer>> = (0..nl).map(|_| None).collect();
        dzs[nl - 1] = Some(storage(gpu, "cpikan dy", dy)?);
        let mut dc = Vec::new();
        let mut dxs = Vec::new();
        let mut dln = Vec::new();
        for l in (0..nl).rev() {
            let s = c.shape(l, batch);
            let dz = dzs[l].take().unwrap();
            let dcl = storage_zeroed(gpu, "cpikan dc", s.coeffs())?;
            let dx = storage_zeroed(gpu, "cpikan dx", batch * s.n_in)?;
            ds.extend(cheby_backward_coeffs(gpu, s, &acts.inputs[l], &dz, &dcl)?);
            ds.push(cheby_backward_input(gpu, s, &acts.inputs[l], &self.coeffs[l], &dz, &dx)?);
            if l > 0 {
                let n = s.n_in;
                let dzp = storage_zeroed(gpu, "cpikan dz", batch * n)?;
                let scratch =
                    [storage_zeroed(gpu, "cpikan du", batch * n)?, storage_zeroed(gpu, "cpikan dux", batch * n)?];
                let (dg, db) = (storage_zeroed(gpu, "cpikan dgamma", n)?, storage_zeroed(gpu, "cpikan dbeta", n)?);
                let (g, b) = (&self.ln_weight[l - 1], &self.ln_bias[l - 1]);
                let sc = [&scratch[0], &scratch[1]];
                ds.push(layernorm_tanh_backward(gpu, batch, n, &acts.outputs[l - 1], g, b, &dx, &dzp, sc)?);
                ds.extend(layernorm_params_backward(gpu, batch, n, sc, &dg, &db)?);
                dzs[l - 1] = Some(dzp);
                dln.push((l - 1, dg, db, scratch));
            }
            dc.push((l, dcl, s.coeffs()));
            dxs.push((dz, dx));
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        let mut grads = read_param_grads(gpu, c, &dc, &dln)?;
        let d = c.d_in();
        let dx0 = Readback::f32(gpu, &dxs.last().unwrap().1, batch * d)?;
        grads.coords =
            dx0.iter().enumerate().map(|(i, v)| v * 2.0 / (c.domain_max[i % d] - c.domain_min[i % d])).collect();
        Ok(grads)
    }
}

/// Plain-Rust f64 versions of every kernel and of the whole network, for the tests.
pub mod reference {
    use super::{ChebyShape, CpikanConfig, CpikanWeights};

    /// The parameters in f64 (so finite differences can perturb them finely).
    #[derive(Clone, Debug)]
    pub struct Net {
        pub config: CpikanConfig,
        pub coeffs: Vec<Vec<f64>>,
        pub ln_weight: Vec<Vec<f64>>,
        pub ln_bias: Vec<Vec<f64>>,
    }

    impl From<&CpikanWeights> for Net {
        fn from(w: &CpikanWeights) -> Net {
            let up = |v: &[Vec<f32>]| v.iter().map(|t| f64s(t)).collect();
            Net {
                config: w.config.clone(),
                coeffs: up(&w.coeffs),
                ln_weight: up(&w.ln_weight),
                ln_bias: up(&w.ln_bias),
            }
        }
    }

    /// T_0..=T_degree at x.
    pub fn chebyshev(x: f64, degree: usize) -> Vec<f64> {
        let mut t = vec![1.0, x];
        for k in 2..=degree {
            t.push(2.0 * x * t[k - 1] - t[k - 2]);
        }
        t.truncate(degree + 1);
        t
    }

    /// T_0'..=T_degree' at x (k U_{k−1}).
    pub fn chebyshev_derivative(x: f64, degree: usize) -> Vec<f64> {
        let mut u = vec![1.0, 2.0 * x];
        for k in 2..degree {
            u.push(2.0 * x * u[k - 1] - u[k - 2]);
        }
        (0..=degree).map(|k| if k == 0 { 0.0 } else { k as f64 * u[k - 1] }).collect()
    }

    pub fn affine_scale(coords: &[f64], d: usize, min: &[f64], max: &[f64]) -> Vec<f64> {
        coords.iter().enumerate().map(|(i, x)| 2.0 * (x - min[i % d]) / (max[i % d] - min[i % d]) - 1.0).collect()
    }

    pub fn cheby_forward(s: ChebyShape, x: &[f64], c: &[f64]) -> Vec<f64> {
        let kk = s.degree + 1;
        let mut y = vec![0.0; s.batch * s.n_out];
        for b in 0..s.batch {
            for i in 0..s.n_in {
                let t = chebyshev(x[b * s.n_in + i], s.degree);
                for o in 0..s.n_out {
                    let base = (i * s.n_out + o) * kk;
                    y[b * s.n_out + o] += (0..kk).map(|k| c[base + k] * t[k]).sum::<f64>();
                }
            }
        }
        y
    }

    pub fn cheby_backward_input(s: ChebyShape, x: &[f64], c: &[f64], dy: &[f64]) -> Vec<f64> {
        let kk = s.degree + 1;
        let mut dx = vec![0.0; s.batch * s.n_in];
        for b in 0..s.batch {
            for i in 0..s.n_in {
                let dt = chebyshev_derivative(x[b * s.n_in + i], s.degree);
                for o in 0..s.n_out {
                    let base = (i * s.n_out + o) * kk;
                    dx[b * s.n_in + i] += dy[b * s.n_out + o] * (0..kk).map(|k| c[base + k] * dt[k]).sum::<f64>();
                }
            }
        }
        dx
    }

    pub fn cheby_backward_coeffs(s: ChebyShape, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let kk = s.degree + 1;
        let mut dc = vec![0.0; s.coeffs()];
        for b in 0..s.batch {
            for i in 0..s.n_in {
                let t = chebyshev(x[b * s.n_in + i], s.degree);
                for o in 0..s.n_out {
                    for k in 0..kk {
                        dc[(i * s.n_out + o) * kk + k] += dy[b * s.n_out + o] * t[k];
                    }
                }
            }
        }
        dc
    }

    fn stats(z: &[f64]) -> (f64, f64) {
        let n = z.len() as f64;
        let m = z.iter().sum::<f64>() / n;
        let v = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        (m, 1.0 / (v + 1e-5).sqrt())
    }

    pub fn layernorm_tanh_forward(z: &[f64], n: usize, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
        z.chunks(n)
            .flat_map(|row| {
                let (m, r) = stats(row);
                row.iter().enumerate().map(move |(j, x)| ((x - m) * r * gamma[j] + beta[j]).tanh())
            })
            .collect()
    }

    /// (dz, dgamma, dbeta).
    pub fn layernorm_tanh_backward(
        z: &[f64],
        n: usize,
        gamma: &[f64],
        beta: &[f64],
        da: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut dz = vec![0.0; z.len()];
        let (mut dg, mut db) = (vec![0.0; n], vec![0.0; n]);
        for (b, row) in z.chunks(n).enumerate() {
            let (m, r) = stats(row);
            let xh: Vec<f64> = row.iter().map(|x| (x - m) * r).collect();
            let du: Vec<f64> = (0..n)
                .map(|j| {
                    let a = (xh[j] * gamma[j] + beta[j]).tanh();
                    da[b * n + j] * (1.0 - a * a)
                })
                .collect();
            let g: Vec<f64> = (0..n).map(|j| du[j] * gamma[j]).collect();
            let mg = g.iter().sum::<f64>() / n as f64;
            let mgx = (0..n).map(|j| g[j] * xh[j]).sum::<f64>() / n as f64;
            for j in 0..n {
                dz[b * n + j] = r * (g[j] - mg - xh[j] * mgx);
                dg[j] += du[j] * xh[j];
                db[j] += du[j];
            }
        }
        (dz, dg, db)
    }

    /// (T, T', T'') for k = 0..=degree at x.
    pub fn chebyshev_with_derivatives(x: f64, degree: usize) -> Vec<[f64; 3]> {
        let mut t = vec![[1.0, 0.0, 0.0], [x, 1.0, 0.0]];
        for k in 2..=degree {
            let (a, b) = (t[k - 1], t[k - 2]);
            t.push([2.0 * x * a[0] - b[0], 2.0 * a[0] + 2.0 * x * a[1] - b[1], 4.0 * a[1] + 2.0 * x * a[2] - b[2]]);
        }
        t.truncate(degree + 1);
        t
    }

    /// [`affine_scale`] with tangents, `(batch, d, 1 + 2 d)` (see [`super::affine_scale_derivatives`]).
    pub fn affine_scale_derivatives(coords: &[f64], d: usize, min: &[f64], max: &[f64]) -> Vec<f64> {
        let ch = super::channels(d);
        let mut out = vec![0.0; coords.len() * ch];
        for (i, x) in coords.iter().enumerate() {
            let j = i % d;
            out[i * ch] = 2.0 * (x - min[j]) / (max[j] - min[j]) - 1.0;
            out[i * ch + 1 + j] = 2.0 / (max[j] - min[j]);
        }
        out
    }

    /// [`cheby_forward`] with tangents (see [`super::cheby_forward_derivatives`]).
    pub fn cheby_forward_derivatives(s: ChebyShape, dirs: usize, x: &[f64], c: &[f64]) -> Vec<f64> {
        let (kk, ch) = (s.degree + 1, super::channels(dirs));
        let mut y = vec![0.0; s.batch * s.n_out * ch];
        for b in 0..s.batch {
            for i in 0..s.n_in {
                let xi = &x[(b * s.n_in + i) * ch..][..ch];
                let t = chebyshev_with_derivatives(xi[0], s.degree);
                for o in 0..s.n_out {
                    let base = (i * s.n_out + o) * kk;
                    let sum = |q: usize| (0..kk).map(|k| c[base + k] * t[k][q]).sum::<f64>();
                    let (s0, s1, s2) = (sum(0), sum(1), sum(2));
                    let yo = &mut y[(b * s.n_out + o) * ch..][..ch];
                    yo[0] += s0;
                    for a in 0..dirs {
                        let (d1, d2) = (xi[1 + a], xi[1 + dirs + a]);
                        yo[1 + a] += s1 * d1;
                        yo[1 + dirs + a] += s2 * d1 * d1 + s1 * d2;
                    }
                }
            }
        }
        y
    }

    /// [`layernorm_tanh_forward`] with tangents (see [`super::layernorm_tanh_derivatives`]).
    pub fn layernorm_tanh_derivatives(z: &[f64], n: usize, dirs: usize, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
        let ch = super::channels(dirs);
        let nf = n as f64;
        let mut out = vec![0.0; z.len()];
        for (row, orow) in z.chunks(n * ch).zip(out.chunks_mut(n * ch)) {
            let val = |j: usize, q: usize| row[j * ch + q];
            let mean = |q: usize| (0..n).map(|j| val(j, q)).sum::<f64>() / nf;
            let m = mean(0);
            let v = (0..n).map(|j| (val(j, 0) - m).powi(2)).sum::<f64>() / nf;
            let r = 1.0 / (v + 1e-5).sqrt();
            let t: Vec<f64> = (0..n).map(|j| ((val(j, 0) - m) * r * gamma[j] + beta[j]).tanh()).collect();
            for j in 0..n {
                orow[j * ch] = t[j];
            }
            for a in 0..dirs {
                let (c1, c2) = (1 + a, 1 + dirs + a);
                let (m1, m2) = (mean(c1), mean(c2));
                let e = |j: usize| val(j, 0) - m;
                let e1 = |j: usize| val(j, c1) - m1;
                let e2 = |j: usize| val(j, c2) - m2;
                let v1 = 2.0 * (0..n).map(|j| e(j) * e1(j)).sum::<f64>() / nf;
                let v2 = 2.0 * (0..n).map(|j| e1(j) * e1(j) + e(j) * e2(j)).sum::<f64>() / nf;
                let r1 = -0.5 * r.powi(3) * v1;
                let r2 = 0.75 * r.powi(5) * v1 * v1 - 0.5 * r.powi(3) * v2;
                for j in 0..n {
                    let h1 = gamma[j] * (e1(j) * r + e(j) * r1);
                    let h2 = gamma[j] * (e2(j) * r + 2.0 * e1(j) * r1 + e(j) * r2);
                    let s = 1.0 - t[j] * t[j];
                    orow[j * ch + c1] = s * h1;
                    orow[j * ch + c2] = s * h2 - 2.0 * t[j] * s * h1 * h1;
                }
            }
        }
        out
    }

    /// The output and its axis derivatives (f64; see [`super::Derivatives`]).
    #[derive(Clone, Debug)]
    pub struct Derivatives {
        pub u: Vec<f64>,
        pub ux: Vec<f64>,
        pub uy: Vec<f64>,
        pub uxx: Vec<f64>,
        pub uyy: Vec<f64>,
    }

    /// The whole network's forward-mode derivative pass (`d_in` any; `uy` / `uyy` only for `d_in ≥ 2`).
    pub fn network_derivatives(w: &Net, coords: &[f64]) -> Derivatives {
        let c = &w.config;
        let d = c.d_in();
        let batch = coords.len() / d;
        let mut x = affine_scale_derivatives(coords, d, &f64s(&c.domain_min), &f64s(&c.domain_max));
        for l in 0..c.n_layers() {
            x = cheby_forward_derivatives(c.shape(l, batch), d, &x, &w.coeffs[l]);
            if l + 1 < c.n_layers() {
                x = layernorm_tanh_derivatives(&x, c.layers[l + 1], d, &w.ln_weight[l], &w.ln_bias[l]);
            }
        }
        let ch = super::channels(d);
        let take = |q: usize| x.chunks(ch).map(|v| v[q]).collect::<Vec<f64>>();
        let (uy, uyy) = if d >= 2 { (take(2), take(2 + d)) } else { (Vec::new(), Vec::new()) };
        Derivatives { u: take(0), ux: take(1), uy, uxx: take(1 + d), uyy }
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    /// Every layer's input (scaled coordinates, hidden tanh outputs) and Chebyshev output.
    pub fn network_forward(w: &Net, coords: &[f64]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let c = &w.config;
        let batch = coords.len() / c.d_in();
        let mut inputs = vec![affine_scale(coords, c.d_in(), &f64s(&c.domain_min), &f64s(&c.domain_max))];
        let mut outputs = Vec::new();
        for l in 0..c.n_layers() {
            let z = cheby_forward(c.shape(l, batch), &inputs[l], &w.coeffs[l]);
            if l + 1 < c.n_layers() {
                inputs.push(layernorm_tanh_forward(&z, c.layers[l + 1], &w.ln_weight[l], &w.ln_bias[l]));
            }
            outputs.push(z);
        }
        (inputs, outputs)
    }

    /// Gradients for output gradient `dy`, in [`CpikanWeights`] layout (f64), plus the coordinates'.
    pub fn network_backward(w: &Net, coords: &[f64], dy: &[f64]) -> Grads {
        let c = &w.config;
        let batch = coords.len() / c.d_in();
        let (inputs, outputs) = network_forward(w, coords);
        let nl = c.n_layers();
        let mut g = Grads {
            coeffs: vec![Vec::new(); nl],
            ln_weight: vec![Vec::new(); nl - 1],
            ln_bias: vec![Vec::new(); nl - 1],
            coords: Vec::new(),
        };
        let mut dz = dy.to_vec();
        for l in (0..nl).rev() {
            let s = c.shape(l, batch);
            g.coeffs[l] = cheby_backward_coeffs(s, &inputs[l], &dz);
            let dx = cheby_backward_input(s, &inputs[l], &w.coeffs[l], &dz);
            if l > 0 {
                let (gm, bt) = (&w.ln_weight[l - 1], &w.ln_bias[l - 1]);
                let (dzp, dg, db) = layernorm_tanh_backward(&outputs[l - 1], s.n_in, gm, bt, &dx);
                g.ln_weight[l - 1] = dg;
                g.ln_bias[l - 1] = db;
                dz = dzp;
            } else {
                let d = c.d_in();
                g.coords = dx
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * 2.0 / (c.domain_max[i % d] as f64 - c.domain_min[i % d] as f64))
                    .collect();
            }
        }
        g
    }

    /// (T, T', T'', T''') for k = 0..=degree at x (T'''_{k+1} = 6 T''_k + 2 x T'''_k − T'''_{k−1}).
    pub fn chebyshev_with_derivatives3(x: f64, degree: usize) -> Vec<[f64; 4]> {
        let mut t = vec![[1.0, 0.0, 0.0, 0.0], [x, 1.0, 0.0, 0.0]];
        for k in 2..=degree {
            let (a, b) = (t[k - 1], t[k - 2]);
            t.push([
                2.0 * x * a[0] - b[0],
                2.0 * a[0] + 2.0 * x * a[1] - b[1],
                4.0 * a[1] + 2.0 * x * a[2] - b[2],
                6.0 * a[2] + 2.0 * x * a[3] - b[3],
            ]);
        }
        t.truncate(degree + 1);
        t
    }

    /// Backward of [`cheby_forward_derivatives`] for the channel gradient `dy (batch, n_out, 1 + 2 dirs)`:
    /// `(dx (batch, n_in, 1 + 2 dirs), dc (n_in, n_out, degree + 1))`.
    pub fn cheby_backward_derivatives(
        s: ChebyShape,
        dirs: usize,
        x: &[f64],
        c: &[f64],
        dy: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let (kk, ch) = (s.degree + 1, super::channels(dirs));
        let mut dx = vec![0.0; s.batch * s.n_in * ch];
        let mut dc = vec![0.0; s.coeffs()];
        for b in 0..s.batch {
            for i in 0..s.n_in {
                let xi = &x[(b * s.n_in + i) * ch..][..ch];
                let t = chebyshev_with_derivatives3(xi[0], s.degree);
                for o in 0..s.n_out {
                    let base = (i * s.n_out + o) * kk;
                    let g = &dy[(b * s.n_out + o) * ch..][..ch];
                    let sum = |q: usize| (0..kk).map(|k| c[base + k] * t[k][q]).sum::<f64>();
                    let (s1, s2, s3) = (sum(1), sum(2), sum(3));
                    let dxi = &mut dx[(b * s.n_in + i) * ch..][..ch];
                    dxi[0] += g[0] * s1;
                    for k in 0..kk {
                        dc[base + k] += g[0] * t[k][0];
                    }
                    for a in 0..dirs {
                        let (d1, d2) = (xi[1 + a], xi[1 + dirs + a]);
                        let (g1, g2) = (g[1 + a], g[1 + dirs + a]);
                        dxi[0] += g1 * s2 * d1 + g2 * (s3 * d1 * d1 + s2 * d2);
                        dxi[1 + a] += g1 * s1 + 2.0 * g2 * s2 * d1;
                        dxi[1 + dirs + a] += g2 * s1;
                        for k in 0..kk {
                            dc[base + k] += g1 * t[k][1] * d1 + g2 * (t[k][2] * d1 * d1 + t[k][1] * d2);
                        }
                    }
                }
            }
        }
        (dx, dc)
    }

    /// Backward of [`layernorm_tanh_derivatives`] for the channel gradient `da (batch, n, 1 + 2 dirs)`:
    /// `(dz, dgamma, dbeta)` (the adjoint of the tangent formulas, mean and variance included).
    pub fn layernorm_tanh_derivatives_backward(
        z: &[f64],
        n: usize,
        dirs: usize,
        gamma: &[f64],
        beta: &[f64],
        da: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let ch = super::channels(dirs);
        let nf = n as f64;
        let mut dz = vec![0.0; z.len()];
        let (mut dg, mut db) = (vec![0.0; n], vec![0.0; n]);
        for (bi, row) in z.chunks(n * ch).enumerate() {
            let go = &da[bi * n * ch..][..n * ch];
            let dzr = &mut dz[bi * n * ch..][..n * ch];
            let val = |j: usize, q: usize| row[j * ch + q];
            let mean = |q: usize| (0..n).map(|j| val(j, q)).sum::<f64>() / nf;
            let m = mean(0);
            let e: Vec<f64> = (0..n).map(|j| val(j, 0) - m).collect();
            let v = e.iter().map(|x| x * x).sum::<f64>() / nf;
            let r = 1.0 / (v + 1e-5).sqrt();
            let t: Vec<f64> = (0..n).map(|j| (e[j] * r * gamma[j] + beta[j]).tanh()).collect();
            let s: Vec<f64> = t.iter().map(|t| 1.0 - t * t).collect();
            // Adjoints of t (all channels), e and r.
            let mut tb: Vec<f64> = (0..n).map(|j| go[j * ch]).collect();
            let mut eb = vec![0.0; n];
            let mut rb = 0.0;
            for a in 0..dirs {
                let (c1, c2) = (1 + a, 1 + dirs + a);
                let (m1, m2) = (mean(c1), mean(c2));
                let e1: Vec<f64> = (0..n).map(|j| val(j, c1) - m1).collect();
                let e2: Vec<f64> = (0..n).map(|j| val(j, c2) - m2).collect();
                let v1 = 2.0 * (0..n).map(|j| e[j] * e1[j]).sum::<f64>() / nf;
                let v2 = 2.0 * (0..n).map(|j| e1[j] * e1[j] + e[j] * e2[j]).sum::<f64>() / nf;
                let r1 = -0.5 * r.powi(3) * v1;
                let r2 = 0.75 * r.powi(5) * v1 * v1 - 0.5 * r.powi(3) * v2;
                let (mut e1b, mut e2b) = (vec![0.0; n], vec![0.0; n]);
                let (mut r1b, mut r2b) = (0.0, 0.0);
                for j in 0..n {
                    let k1 = e1[j] * r + e[j] * r1;
                    let k2 = e2[j] * r + 2.0 * e1[j] * r1 + e[j] * r2;
                    let (h1, h2) = (gamma[j] * k1, gamma[j] * k2);
                    let (o1, o2) = (go[j * ch + c1], go[j * ch + c2]);
                    let sb = o1 * h1 + o2 * (h2 - 2.0 * t[j] * h1 * h1);
                    tb[j] += -2.0 * s[j] * h1 * h1 * o2 - 2.0 * t[j] * sb;
                    let h1b = o1 * s[j] - 4.0 * t[j] * s[j] * h1 * o2;
                    let h2b = o2 * s[j];
                    dg[j] += h1b * k1 + h2b * k2;
                    let (g1, g2) = (h1b * gamma[j], h2b * gamma[j]);
                    e1b[j] += g1 * r + 2.0 * g2 * r1;
                    e2b[j] += g2 * r;
                    eb[j] += g1 * r1 + g2 * r2;
                    rb += g1 * e1[j] + g2 * e2[j];
                    r1b += g1 * e[j] + 2.0 * g2 * e1[j];
                    r2b += g2 * e[j];
                }
                rb += r2b * (3.75 * r.powi(4) * v1 * v1 - 1.5 * r * r * v2) - 1.5 * r * r * v1 * r1b;
                let v1b = 1.5 * r.powi(5) * v1 * r2b - 0.5 * r.powi(3) * r1b;
                let v2b = -0.5 * r.powi(3) * r2b;
                for j in 0..n {
                    eb[j] += 2.0 / nf * (v1b * e1[j] + v2b * e2[j]);
                    e1b[j] += 2.0 / nf * v1b * e[j] + 4.0 / nf * v2b * e1[j];
                    e2b[j] += 2.0 / nf * v2b * e[j];
                }
                let (mb1, mb2) = (e1b.iter().sum::<f64>() / nf, e2b.iter().sum::<f64>() / nf);
                for j in 0..n {
                    dzr[j * ch + c1] = e1b[j] - mb1;
                    dzr[j * ch + c2] = e2b[j] - mb2;
                }
            }
            for j in 0..n {
                let h0b = tb[j] * s[j];
                dg[j] += h0b * e[j] * r;
                db[j] += h0b;
                eb[j] += h0b * gamma[j] * r;
                rb += h0b * gamma[j] * e[j];
            }
            let vb = -0.5 * r.powi(3) * rb;
            for j in 0..n {
                eb[j] += 2.0 / nf * vb * e[j];
            }
            let mb = eb.iter().sum::<f64>() / nf;
            for j in 0..n {
                dzr[j * ch] = eb[j] - mb;
            }
        }
        (dz, dg, db)
    }

    /// Gradients of a loss on the derivative pass: `g (batch, d_out, 1 + 2 d_in)` is its gradient
    /// with respect to the output channels (u, u_a, u_aa as in [`super::Derivatives`]). The
    /// coordinate gradient is that through the value channel (the tangents are constants).
    pub fn network_derivatives_backward(w: &Net, coords: &[f64], g: &[f64]) -> Grads {
        let c = &w.config;
        let d = c.d_in();
        let batch = coords.len() / d;
        let nl = c.n_layers();
        let mut inputs = vec![affine_scale_derivatives(coords, d, &f64s(&c.domain_min), &f64s(&c.domain_max))];
        let mut outputs = Vec::new();
        for l in 0..nl {
            let z = cheby_forward_derivatives(c.shape(l, batch), d, &inputs[l], &w.coeffs[l]);
            if l + 1 < nl {
                inputs.push(layernorm_tanh_derivatives(&z, c.layers[l + 1], d, &w.ln_weight[l], &w.ln_bias[l]));
            }
            outputs.push(z);
        }
        let mut grads = Grads {
            coeffs: vec![Vec::new(); nl],
            ln_weight: vec![Vec::new(); nl - 1],
            ln_bias: vec![Vec::new(); nl - 1],
            coords: Vec::new(),
        };
        let mut dz = g.to_vec();
        let ch = super::channels(d);
        for l in (0..nl).rev() {
            let (dx, dc) = cheby_backward_derivatives(c.shape(l, batch), d, &inputs[l], &w.coeffs[l], &dz);
            grads.coeffs[l] = dc;
            if l > 0 {
                let (gm, bt) = (&w.ln_weight[l - 1], &w.ln_bias[l - 1]);
                let (dzp, dg, db) = layernorm_tanh_derivatives_backward(&outputs[l - 1], c.layers[l], d, gm, bt, &dx);
                grads.ln_weight[l - 1] = dg;
                grads.ln_bias[l - 1] = db;
                dz = dzp;
            } else {
                grads.coords = (0..batch * d)
                    .map(|i| dx[i * ch] * 2.0 / (c.domain_max[i % d] as f64 - c.domain_min[i % d] as f64))
                    .collect();
            }
        }
        grads
    }

    /// f64 gradients (see [`super::CpikanGrads`]).
    #[derive(Clone, Debug)]
    pub struct Grads {
        pub coeffs: Vec<Vec<f64>>,
        pub ln_weight: Vec<Vec<f64>>,
        pub ln_bias: Vec<Vec<f64>>,
        pub coords: Vec<f64>,
    }
}

/// Read back the coefficient and LayerNorm gradients a backward pass left in `dc` (layer, buffer,
/// length) and `dln` (layer, dγ, dβ, scratch); `coords` is left for the caller.
#[allow(clippy::type_complexity)]
fn read_param_grads<S>(
    gpu: &Gpu,
    c: &CpikanConfig,
    dc: &[(usize, wgpu::Buffer, usize)],
    dln: &[(usize, wgpu::Buffer, wgpu::Buffer, S)],
) -> Result<CpikanGrads> {
    let nl = c.n_layers();
    let mut grads = CpikanGrads {
        coeffs: vec![Vec::new(); nl],
        ln_weight: vec![Vec::new(); nl - 1],
        ln_bias: vec![Vec::new(); nl - 1],
        coords: Vec::new(),
    };
    for (l, buf, len) in dc {
        grads.coeffs[*l] = Readback::f32(gpu, buf, *len)?;
    }
    for (l, dg, db, _) in dln {
        grads.ln_weight[*l] = Readback::f32(gpu, dg, c.layers[l + 1])?;
        grads.ln_bias[*l] = Readback::f32(gpu, db, c.layers[l + 1])?;
    }
    Ok(grads)
}
