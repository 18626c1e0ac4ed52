//! The Chebyshev-KAN kernels of Scaled-cPIKAN (`shaders/chebykan.wgsl`, always f32): the
//! affine input scaling, the Chebyshev layer `y_o = Σ_i Σ_k c[i, o, k] T_k(x_i)` (coefficients laid
//! out `(in, out, K + 1)`) and `tanh(LayerNorm(y))`, each forward and backward, plus the
//! forward-mode derivative versions ([`Pass::Derivatives`]): every activation then carries
//! `1 + 2 D` channels per feature (`D` input directions), laid out `(batch, features, channel)`
//! with channel 0 the value, `1 + a` the derivative along axis `a` and `1 + D + a` the second
//! derivative along axis `a`; their backward is reverse mode through the tangent formulas (T'''
//! enters the Chebyshev input adjoint). Each launcher takes the [`Pass`]: the affine scaling, the
//! LayerNorm forward and the coefficient gradient are one kernel for both (no directions: the
//! values), the others a kernel per pass. The model built from them is `nn::cpikan`;
//! [`reference`](mod@reference) is every kernel on the CPU in f64.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Kernel, Precision, Shader, grid_1d, zeroed_f32};
use wgpu::Buffer;

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
pub static CHEBY_FORWARD_DERIVATIVES: Kernel = Kernel { shader: &SHADER, entry: "cheby_forward_derivatives" };
pub static CHEBY_BACKWARD_DERIVATIVES_INPUT: Kernel =
    Kernel { shader: &SHADER, entry: "cheby_backward_derivatives_input" };
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

/// Channels per feature of a derivative activation with `dirs` input directions.
pub fn channels(dirs: usize) -> usize {
    1 + 2 * dirs
}

/// Which version of a kernel a launcher runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The values only: activations `(batch, features)`.
    Values,
    /// The values with their first and second derivatives along `dirs` input directions:
    /// activations `(batch, features, 1 + 2 dirs)`.
    Derivatives { dirs: usize },
}

impl Pass {
    /// Values per feature of an activation: 1, or `1 + 2 dirs`.
    pub fn channels(self) -> usize {
        match self {
            Pass::Values => 1,
            Pass::Derivatives { dirs } => channels(dirs),
        }
    }

    /// Input directions: 0 for the values.
    pub fn dirs(self) -> usize {
        match self {
            Pass::Values => 0,
            Pass::Derivatives { dirs } => dirs,
        }
    }

    /// `values` or its derivative version `derivatives`.
    fn kernel(self, values: &'static Kernel, derivatives: &'static Kernel) -> &'static Kernel {
        match self {
            Pass::Values => values,
            Pass::Derivatives { .. } => derivatives,
        }
    }
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

impl ChebyParams {
    fn new(pass: Pass, batch: usize, n_in: usize, n_out: usize, degree: usize) -> ChebyParams {
        ChebyParams {
            batch: batch as u32,
            n_in: n_in as u32,
            n_out: n_out as u32,
            degree: degree as u32,
            n_dir: pass.dirs() as u32,
            chunk: CHUNK as u32,
            ..Default::default()
        }
    }
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
    /// Values in the coefficient tensor `(n_in, n_out, degree + 1)`.
    pub fn coeffs(&self) -> usize {
        self.n_in * self.n_out * (self.degree + 1)
    }
}

/// One Chebyshev layer applied to an input: its sizes, the pass, the input `x` (`(batch, n_in)`,
/// or `(batch, n_in, 1 + 2 dirs)` for the derivatives) and the coefficients `(n_in, n_out, degree + 1)`.
#[derive(Clone, Copy)]
pub struct ChebyLayer<'a> {
    pub shape: ChebyShape,
    pub pass: Pass,
    pub x: &'a Buffer,
    pub coeffs: &'a Buffer,
}

impl ChebyLayer<'_> {
    fn params(&self) -> ChebyParams {
        let s = self.shape;
        ChebyParams::new(self.pass, s.batch, s.n_in, s.n_out, s.degree)
    }
}

/// One `tanh(LayerNorm(z) · gamma + beta)` over `n` features of `batch` samples applied to the
/// pre-norm input `z` (`(batch, n)`, or `(batch, n, 1 + 2 dirs)` for the derivatives), with its
/// affine parameters `gamma`, `beta` (`n` each).
#[derive(Clone, Copy)]
pub struct LayerNormTanh<'a> {
    pub batch: usize,
    pub n: usize,
    pub pass: Pass,
    pub z: &'a Buffer,
    pub gamma: &'a Buffer,
    pub beta: &'a Buffer,
}

impl LayerNormTanh<'_> {
    fn params(&self) -> ChebyParams {
        ChebyParams::new(self.pass, self.batch, 0, self.n, 0)
    }
}

fn launch(gpu: &Gpu, k: &Kernel, p: &ChebyParams, bufs: &[(u32, &Buffer)], count: usize) -> Result<Dispatch> {
    let [gx, gy] = grid_1d(gpu, count, WG);
    Dispatch::new(gpu, k, Precision::F32, p, bufs, [gx, gy, 1])
}

/// Where [`affine_scale`] takes its coordinates from.
pub enum Coords<'a> {
    /// `(batch, d)` values in a buffer.
    Buffer(&'a Buffer),
    /// Every integer pixel of a grid `w` columns wide, row-major, as `(x = column, y = row)`
    /// (`d` must be 2); `batch` is `h * w`.
    Grid { w: usize },
}

impl Coords<'_> {
    /// The buffer to bind as coordinates (the domain buffer as a placeholder for a grid), the
    /// grid flag and the grid width.
    fn binding<'b>(&self, domain: &'b Buffer, d: usize) -> Result<(&'b Buffer, u32, u32)>
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
/// the `d` maxima. With [`Pass::Derivatives`] (`dirs` must be `d`) `out` is `(batch, d, 1 + 2 d)`:
/// the first derivative along axis `a` of coordinate `j` is `2 / (max_j − min_j)` if `a == j`
/// else 0, the second derivatives 0.
pub fn affine_scale(
    gpu: &Gpu,
    pass: Pass,
    coords: Coords,
    domain: &Buffer,
    out: &Buffer,
    batch: usize,
    d: usize,
) -> Result<Dispatch> {
    if let Pass::Derivatives { dirs } = pass
        && dirs != d
    {
        return Err(Error::Shape(format!("affine_scale of {d} coordinates: {pass:?} must have {d} directions")));
    }
    let (x, use_grid, grid_w) = coords.binding(domain, d)?;
    let p = ChebyParams { use_grid, grid_w, ..ChebyParams::new(pass, batch, d, 0, 0) };
    launch(gpu, &AFFINE_SCALE, &p, &[(1, x), (2, out), (3, domain)], batch * d)
}

/// `y (batch, n_out) = Σ_i Σ_k c[i, o, k] T_k(x[b, i])`. With [`Pass::Derivatives`],
/// `y (batch, n_out, 1 + 2 dirs)` with `y' = Σ c T'(x) x'`, `y'' = Σ c (T''(x) x'² + T'(x) x'')`
/// per direction.
pub fn cheby_forward(gpu: &Gpu, layer: ChebyLayer, y: &Buffer) -> Result<Dispatch> {
    let k = layer.pass.kernel(&CHEBY_FORWARD, &CHEBY_FORWARD_DERIVATIVES);
    let s = layer.shape;
    launch(gpu, k, &layer.params(), &[(1, layer.x), (2, y), (3, layer.coeffs)], s.batch * s.n_out)
}

/// The second stage of a batch reduction: `out[t] = Σ_chunk partials[chunk, t]` over the
/// [`n_chunks`]`(batch)` partials of `len` values, in chunk order.
fn sum_chunks(gpu: &Gpu, batch: usize, len: usize, partials: &Buffer, out: &Buffer) -> Result<Dispatch> {
    let p = ChebyParams::new(Pass::Values, batch, 0, len, 0);
    launch(gpu, &SUM_CHUNKS, &p, &[(1, partials), (8, out)], len)
}

/// Backward of [`cheby_forward`] for `dy` (shaped like `y`): `dc (n_in, n_out, degree + 1)`
/// (overwritten; for the values `Σ_b dy[b, o] T_k(x[b, i])`, for the derivatives also the tangent
/// terms) as per-chunk partial sums in batch order and then the chunks in order, and `dx` (shaped
/// like `x`; the derivative version needs T''' of the recurrence). Three dispatches, run in this
/// order.
pub fn cheby_backward(gpu: &Gpu, layer: ChebyLayer, dy: &Buffer, dx: &Buffer, dc: &Buffer) -> Result<[Dispatch; 3]> {
    let s = layer.shape;
    let tasks = n_chunks(s.batch) * s.coeffs();
    let partials = zeroed_f32(gpu, "cpikan dc partials", tasks)?;
    let input = layer.pass.kernel(&CHEBY_BACKWARD_INPUT, &CHEBY_BACKWARD_DERIVATIVES_INPUT);
    Ok([
        launch(gpu, &CHEBY_BACKWARD_COEFFS, &layer.params(), &[(1, layer.x), (2, &partials), (6, dy)], tasks)?,
        sum_chunks(gpu, s.batch, s.coeffs(), &partials, dc)?,
        launch(gpu, input, &layer.params(), &[(1, layer.x), (3, layer.coeffs), (6, dy), (7, dx)], s.batch * s.n_in)?,
    ])
}

/// `a = tanh(LayerNorm(z) · gamma + beta)` per sample (eps 1e-5, biased variance), shaped like `z`;
/// with [`Pass::Derivatives`] the mean and variance are differentiated too.
pub fn layernorm_tanh_forward(gpu: &Gpu, ln: LayerNormTanh, a: &Buffer) -> Result<Dispatch> {
    let bufs = [(1, ln.z), (2, a), (4, ln.gamma), (5, ln.beta)];
    launch(gpu, &LAYERNORM_TANH_FORWARD, &ln.params(), &bufs, ln.batch)
}

/// Backward of [`layernorm_tanh_forward`] for `da` (shaped like `z`): `dz` and `dgamma`, `dbeta`
/// (overwritten). A per-sample kernel writes `dz` and a `(batch, n)` scratch pair (d(pre-tanh
/// value) and the per-sample dgamma contribution), which [`layernorm_params_backward`] reduces:
/// three dispatches, run in this order.
pub fn layernorm_tanh_backward(
    gpu: &Gpu,
    ln: LayerNormTanh,
    da: &Buffer,
    dz: &Buffer,
    dgamma: &Buffer,
    dbeta: &Buffer,
) -> Result<[Dispatch; 3]> {
    let k = ln.pass.kernel(&LAYERNORM_TANH_BACKWARD, &LAYERNORM_TANH_DERIVATIVES_BACKWARD);
    let (du, dux) = (zeroed_f32(gpu, "cpikan du", ln.batch * ln.n)?, zeroed_f32(gpu, "cpikan dux", ln.batch * ln.n)?);
    let bufs = [(1, ln.z), (4, ln.gamma), (5, ln.beta), (6, da), (7, dz), (10, &du), (11, &dux)];
    let [params, reduce] = layernorm_params_backward(gpu, ln.batch, ln.n, [&du, &dux], dgamma, dbeta)?;
    Ok([launch(gpu, k, &ln.params(), &bufs, ln.batch)?, params, reduce])
}

/// `dgamma[j] = Σ_b scratch[1][b, j]`, `dbeta[j] = Σ_b scratch[0][b, j]` from the scratch of
/// [`layernorm_tanh_backward`]'s per-sample kernel (either pass): per-chunk partial sums in batch
/// order, then the chunks in order (two dispatches, in this order).
pub fn layernorm_params_backward(
    gpu: &Gpu,
    batch: usize,
    n: usize,
    scratch: [&Buffer; 2],
    dgamma: &Buffer,
    dbeta: &Buffer,
) -> Result<[Dispatch; 2]> {
    let partials = zeroed_f32(gpu, "cpikan dln partials", n_chunks(batch) * 2 * n)?;
    let p = ChebyParams::new(Pass::Values, batch, 0, n, 0);
    let bufs = [(2, &partials), (10, scratch[0]), (11, scratch[1])];
    Ok([
        launch(gpu, &LAYERNORM_PARAMS_BACKWARD, &p, &bufs, n_chunks(batch) * n)?,
        launch(gpu, &LAYERNORM_PARAMS_REDUCE, &p, &[(1, &partials), (8, dgamma), (9, dbeta)], n)?,
    ])
}

/// Plain-Rust f64 versions of every kernel, for the tests. Each takes the [`Pass`] like its
/// launcher: the values pass is the derivative pass with no directions (one channel per feature).
pub mod reference {
    use super::{ChebyShape, Pass};

    /// `(T_k, T_k', T_k'', T_k''')` at `x` for `k = 0..=degree`, by the recurrences
    /// `T_{k+1} = 2 x T_k − T_{k−1}` and `T^(q)_{k+1} = 2 q T^(q−1)_k + 2 x T^(q)_k − T^(q)_{k−1}`.
    pub fn chebyshev(x: f64, degree: usize) -> Vec<[f64; 4]> {
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

    /// See [`super::affine_scale`]: `coords (batch, d)` → `(batch, d, channels)`.
    pub fn affine_scale(pass: Pass, coords: &[f64], d: usize, min: &[f64], max: &[f64]) -> Vec<f64> {
        let ch = pass.channels();
        let mut out = vec![0.0; coords.len() * ch];
        for (i, x) in coords.iter().enumerate() {
            let j = i % d;
            out[i * ch] = 2.0 * (x - min[j]) / (max[j] - min[j]) - 1.0;
            if ch > 1 {
                out[i * ch + 1 + j] = 2.0 / (max[j] - min[j]);
            }
        }
        out
    }

    /// Calls `f(b, i, o, xi, t)` for every sample `b`, input `i` and output `o` of layer `s` on the
    /// `ch`-channel input `x`: `xi` the channels of `x[b, i]`, `t` its [`chebyshev`] table.
    fn edges(s: ChebyShape, ch: usize, x: &[f64], mut f: impl FnMut(usize, usize, usize, &[f64], &[[f64; 4]])) {
        for b in 0..s.batch {
            for i in 0..s.n_in {
                let xi = &x[(b * s.n_in + i) * ch..][..ch];
                let t = chebyshev(xi[0], s.degree);
                for o in 0..s.n_out {
                    f(b, i, o, xi, &t);
                }
            }
        }
    }

    /// See [`super::cheby_forward`].
    pub fn cheby_forward(s: ChebyShape, pass: Pass, x: &[f64], c: &[f64]) -> Vec<f64> {
        let (kk, ch, dirs) = (s.degree + 1, pass.channels(), pass.dirs());
        let mut y = vec![0.0; s.batch * s.n_out * ch];
        edges(s, ch, x, |b, i, o, xi, t| {
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
        });
        y
    }

    /// Backward of [`cheby_forward`] for the output gradient `dy`: `(dx, dc (n_in, n_out, degree + 1))`.
    pub fn cheby_backward(s: ChebyShape, pass: Pass, x: &[f64], c: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (kk, ch, dirs) = (s.degree + 1, pass.channels(), pass.dirs());
        let mut dx = vec![0.0; s.batch * s.n_in * ch];
        let mut dc = vec![0.0; s.coeffs()];
        edges(s, ch, x, |b, i, o, xi, t| {
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
        });
        (dx, dc)
    }

    /// One sample's LayerNorm statistics over `n` features of `ch` channels (`row`, `n · ch` values).
    struct Stats<'a> {
        row: &'a [f64],
        n: usize,
        ch: usize,
        /// Value deviations from their mean, and `r = (var + eps)^(−1/2)`.
        e: Vec<f64>,
        r: f64,
    }

    impl<'a> Stats<'a> {
        fn new(row: &'a [f64], n: usize, ch: usize) -> Stats<'a> {
            let m = (0..n).map(|j| row[j * ch]).sum::<f64>() / n as f64;
            let e: Vec<f64> = (0..n).map(|j| row[j * ch] - m).collect();
            let v = e.iter().map(|x| x * x).sum::<f64>() / n as f64;
            Stats { row, n, ch, e, r: 1.0 / (v + 1e-5).sqrt() }
        }

        /// The deviations of channel `q` from its mean.
        fn deviations(&self, q: usize) -> Vec<f64> {
            let m = (0..self.n).map(|j| self.row[j * self.ch + q]).sum::<f64>() / self.n as f64;
            (0..self.n).map(|j| self.row[j * self.ch + q] - m).collect()
        }

        /// Along the axis with tangent deviations `e1`, `e2`: `(v', v'', r', r'')`.
        fn axis(&self, e1: &[f64], e2: &[f64]) -> (f64, f64, f64, f64) {
            let (e, r, nf) = (&self.e, self.r, self.n as f64);
            let v1 = 2.0 * (0..self.n).map(|j| e[j] * e1[j]).sum::<f64>() / nf;
            let v2 = 2.0 * (0..self.n).map(|j| e1[j] * e1[j] + e[j] * e2[j]).sum::<f64>() / nf;
            (v1, v2, -0.5 * r.powi(3) * v1, 0.75 * r.powi(5) * v1 * v1 - 0.5 * r.powi(3) * v2)
        }

        /// `tanh(x̂ γ + β)` per feature.
        fn tanh(&self, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
            (0..self.n).map(|j| (self.e[j] * self.r * gamma[j] + beta[j]).tanh()).collect()
        }
    }

    /// See [`super::layernorm_tanh_forward`]: `z (batch, n, channels)`.
    pub fn layernorm_tanh_forward(pass: Pass, z: &[f64], n: usize, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
        let (ch, dirs) = (pass.channels(), pass.dirs());
        let mut out = vec![0.0; z.len()];
        for (row, orow) in z.chunks(n * ch).zip(out.chunks_mut(n * ch)) {
            let st = Stats::new(row, n, ch);
            let (e, r) = (&st.e, st.r);
            let t = st.tanh(gamma, beta);
            for j in 0..n {
                orow[j * ch] = t[j];
            }
            for a in 0..dirs {
                let (c1, c2) = (1 + a, 1 + dirs + a);
                let (e1, e2) = (st.deviations(c1), st.deviations(c2));
                let (_, _, r1, r2) = st.axis(&e1, &e2);
                for j in 0..n {
                    let h1 = gamma[j] * (e1[j] * r + e[j] * r1);
                    let h2 = gamma[j] * (e2[j] * r + 2.0 * e1[j] * r1 + e[j] * r2);
                    let s = 1.0 - t[j] * t[j];
                    orow[j * ch + c1] = s * h1;
                    orow[j * ch + c2] = s * h2 - 2.0 * t[j] * s * h1 * h1;
                }
            }
        }
        out
    }

    /// Backward of [`layernorm_tanh_forward`] for the output gradient `da`: `(dz, dgamma, dbeta)`
    /// (the adjoint of the tangent formulas, mean and variance included).
    pub fn layernorm_tanh_backward(
        pass: Pass,
        z: &[f64],
        n: usize,
        gamma: &[f64],
        beta: &[f64],
        da: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (ch, dirs) = (pass.channels(), pass.dirs());
        let nf = n as f64;
        let mut dz = vec![0.0; z.len()];
        let (mut dg, mut db) = (vec![0.0; n], vec![0.0; n]);
        for ((row, go), dzr) in z.chunks(n * ch).zip(da.chunks(n * ch)).zip(dz.chunks_mut(n * ch)) {
            let st = Stats::new(row, n, ch);
            let (e, r) = (&st.e, st.r);
            let t = st.tanh(gamma, beta);
            let s: Vec<f64> = t.iter().map(|t| 1.0 - t * t).collect();
            // Adjoints of t (all channels), e and r.
            let mut tb: Vec<f64> = (0..n).map(|j| go[j * ch]).collect();
            let mut eb = vec![0.0; n];
            let mut rb = 0.0;
            for a in 0..dirs {
                let (c1, c2) = (1 + a, 1 + dirs + a);
                let (e1, e2) = (st.deviations(c1), st.deviations(c2));
                let (v1, v2, r1, r2) = st.axis(&e1, &e2);
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
