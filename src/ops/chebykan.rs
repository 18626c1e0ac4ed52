//! The Chebyshev-KAN kernels of Scaled-cPIKAN (`shaders/chebykan.wgsl`, always f32): the
//! affine input scaling, the Chebyshev layer `y_o = Σ_i Σ_k c[i, o, k] T_k(x_i)` (coefficients laid
//! out `(in, out, K + 1)`) and `tanh(LayerNorm(y))`, each forward and backward, plus the
//! forward-mode derivative versions: every activation then carries `1 + 2 D` channels per feature
//! (`D` input directions), laid out `(batch, features, channel)` with channel 0 the value, `1 + a`
//! the derivative along axis `a` and `1 + D + a` the second derivative along axis `a`; their
//! backward is reverse mode through the tangent formulas (T''' enters the Chebyshev input adjoint).
//! The model built from them is `nn::cpikan`; [`reference`](mod@reference) is every kernel on the
//! CPU in f64.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Shader, grid_1d, zeroed_f32};

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
pub(super) struct ChebyParams {
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
    let partials = zeroed_f32(gpu, "cpikan dc partials", n_chunks(s.batch) * s.coeffs())?;
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
    let partials = zeroed_f32(gpu, "cpikan dln partials", n_chunks(batch) * 2 * n)?;
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
    let partials = zeroed_f32(gpu, "cpikan dc partials", n_chunks(s.batch) * s.coeffs())?;
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

/// Plain-Rust f64 versions of every kernel, for the tests.
pub mod reference {
    use super::ChebyShape;

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
}
