//! Scaled-cPIKAN (Mostajeran & Faroughi): a Chebyshev Kolmogorov–Arnold network on affinely
//! scaled coordinates, built from the kernels of `ops::chebykan` (always f32).
//!
//! The model is the seed's PyTorch `ScaledCPIKAN(layers, K, domain_min, domain_max)`:
//! `x ↦ 2 (x − min) / (max − min) − 1`, then per layer `y_o = Σ_i Σ_k c[i, o, k] T_k(x_i)` with the
//! coefficients laid out `(in, out, K + 1)`, and after every layer but the last
//! `tanh(LayerNorm(y))` (eps 1e-5, affine). State_dict names: `domain_min`, `domain_max`,
//! `network.{3l}.cheby_coeffs`, `network.{3l + 1}.weight` / `.bias`.
//!
//! [`Cpikan`] holds the weights on the GPU; [`Cpikan::forward`] / [`Cpikan::eval_grid`] evaluate it
//! and [`Cpikan::backward`] returns the parameter (and coordinate) gradients for a given output
//! gradient. [`Cpikan::forward_derivatives`] propagates, in forward mode and analytically, the
//! output and its first and second derivatives along each physical input axis (for PDE
//! residuals); [`Cpikan::forward_derivatives_train`] keeps those channel activations and
//! [`Cpikan::backward_derivatives`] returns the parameter gradients of a loss on (u, u_a, u_aa)
//! ([`Cpikan::derivative_loss`] does both for a loss computed on the host). Both passes run the
//! same layer loop with the kernels' [`Pass`]. [`train`] holds the host Adam / L-BFGS loops that
//! [`fit`] (fit one to a frame region, `pinn fit`) and [`helmholtz`] (the PDE benchmark) share;
//! [`reference`](mod@reference) is the whole network on the CPU in f64.

pub mod fit;
pub mod helmholtz;
pub mod train;

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Readback, storage_f32, zeroed_f32};
use crate::io::weights::Weights;
use crate::ops::chebykan::*;
use crate::rng::Rng;

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
/// The parameters of a Scaled-cPIKAN on the host (also the layout of its gradients): f32, or f64
/// in the [`reference`](mod@reference) (so finite differences can perturb them finely).
#[derive(Clone, Debug)]
pub struct CpikanWeights<T = f32> {
    pub config: CpikanConfig,
    /// Per layer, `(n_in, n_out, degree + 1)` C-order.
    pub coeffs: Vec<Vec<T>>,
    /// Per hidden layer (all but the last), LayerNorm weight and bias.
    pub ln_weight: Vec<Vec<T>>,
    pub ln_bias: Vec<Vec<T>>,
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
/// and to the physical input coordinates `(batch, d_in)`; f32 on the GPU, f64 in the
/// [`reference`](mod@reference).
#[derive(Clone, Debug)]
pub struct CpikanGrads<T = f32> {
    pub coeffs: Vec<Vec<T>>,
    pub ln_weight: Vec<Vec<T>>,
    pub ln_bias: Vec<Vec<T>>,
    pub coords: Vec<T>,
}
impl<T: Copy> CpikanGrads<T> {
    /// Empty tensors for a network of `n_layers` Chebyshev layers.
    fn empty(n_layers: usize) -> CpikanGrads<T> {
        CpikanGrads {
            coeffs: vec![Vec::new(); n_layers],
            ln_weight: vec![Vec::new(); n_layers - 1],
            ln_bias: vec![Vec::new(); n_layers - 1],
            coords: Vec::new(),
        }
    }

    /// The parameter gradients as one vector, in the order of [`flatten`].
    pub fn flat(&self) -> Vec<T> {
        flatten(&self.coeffs, &self.ln_weight, &self.ln_bias)
    }
}
/// The network's output and its derivatives along the physical input axes, each `(batch, d_out)`;
/// f32 on the GPU, f64 in the [`reference`](mod@reference). For `d_in = 1`, `uy` and `uyy` are empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Derivatives<T = f32> {
    pub u: Vec<T>,
    pub ux: Vec<T>,
    pub uy: Vec<T>,
    pub uxx: Vec<T>,
    pub uyy: Vec<T>,
}
impl<T: Copy> Derivatives<T> {
    /// Split a `(batch, d_out, 1 + 2 dirs)` channel buffer's contents.
    pub fn from_channels(v: &[T], dirs: usize) -> Derivatives<T> {
        let ch = channels(dirs);
        let take = |q: usize| if q < ch { v.chunks(ch).map(|c| c[q]).collect() } else { Vec::new() };
        let (uy, uyy) = if dirs >= 2 { (take(2), take(2 + dirs)) } else { (Vec::new(), Vec::new()) };
        Derivatives { u: take(0), ux: take(1), uy, uxx: take(1 + dirs), uyy }
    }

    /// The columns of `dirs` (1 or 2) directions in channel order: `u`, `ux`, (`uy`), `uxx`, (`uyy`).
    pub fn columns(&self, dirs: usize) -> Vec<&[T]> {
        if dirs == 2 {
            vec![&self.u, &self.ux, &self.uy, &self.uxx, &self.uyy]
        } else {
            vec![&self.u, &self.ux, &self.uxx]
        }
    }

    /// The inverse of [`Derivatives::from_channels`] (`dirs` 1 or 2): `(batch · d_out, 1 + 2 dirs)`,
    /// or `None` unless every column has `len` values.
    pub fn to_channels(&self, dirs: usize, len: usize) -> Option<Vec<T>> {
        let cols = self.columns(dirs);
        cols.iter().all(|c| c.len() == len).then(|| (0..len).flat_map(|i| cols.iter().map(move |c| c[i])).collect())
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
    /// Values, or the derivative channels (inside [`DerivativeActivations`]).
    pass: Pass,
    /// Input of each Chebyshev layer: the scaled coordinates, then each hidden `tanh` output.
    inputs: Vec<wgpu::Buffer>,
    /// Output of each Chebyshev layer (the last is the network's output).
    outputs: Vec<wgpu::Buffer>,
}
/// The GPU channel activations of one derivative pass, kept for [`Cpikan::backward_derivatives`].
pub struct DerivativeActivations(Activations);
impl Activations {
    /// The network's output `(batch, d_out)` (`(batch, d_out, channels)` for a derivative pass).
    pub fn output(&self, gpu: &Gpu, d_out: usize) -> Result<Vec<f32>> {
        Readback::f32(gpu, self.outputs.last().unwrap(), self.batch * d_out * self.pass.channels())
    }
}
impl DerivativeActivations {
    pub fn batch(&self) -> usize {
        self.0.batch
    }
}
impl Cpikan {
    pub fn new(gpu: &Gpu, w: &CpikanWeights) -> Result<Cpikan> {
        w.validate()?;
        let c = &w.config;
        let domain = storage_f32(gpu, "cpikan domain", &[c.domain_min.as_slice(), &c.domain_max].concat())?;
        let up = |label: &str, v: &[Vec<f32>]| v.iter().map(|t| storage_f32(gpu, label, t)).collect::<Result<Vec<_>>>();
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

    /// Chebyshev layer `l`'s `pass` on `batch` samples of `x`.
    fn layer<'a>(&'a self, l: usize, batch: usize, pass: Pass, x: &'a wgpu::Buffer) -> ChebyLayer<'a> {
        ChebyLayer { shape: self.config.shape(l, batch), pass, x, coeffs: &self.coeffs[l] }
    }

    /// The LayerNorm + tanh after Chebyshev layer `l`, on its output `z`.
    fn layer_norm<'a>(&'a self, l: usize, batch: usize, pass: Pass, z: &'a wgpu::Buffer) -> LayerNormTanh<'a> {
        let (gamma, beta) = (&self.ln_weight[l], &self.ln_bias[l]);
        LayerNormTanh { batch, n: self.config.layers[l + 1], pass, z, gamma, beta }
    }

    /// `coords` `(batch, d_in)` in a GPU buffer, and `batch`.
    fn upload_coords(&self, gpu: &Gpu, coords: &[f32]) -> Result<(wgpu::Buffer, usize)> {
        let d = self.config.d_in();
        if coords.is_empty() || !coords.len().is_multiple_of(d) {
            return Err(Error::Shape(format!("{} coordinate values for {d} inputs", coords.len())));
        }
        Ok((storage_f32(gpu, "cpikan coords", coords)?, coords.len() / d))
    }

    /// Run the network's `pass` on `batch` samples taken from `coords`; keeps every activation.
    fn run_forward(&self, gpu: &Gpu, coords: Coords, batch: usize, pass: Pass) -> Result<Activations> {
        let c = &self.config;
        if batch == 0 {
            return Err(Error::Shape("cPIKAN forward of an empty batch".into()));
        }
        let ch = pass.channels();
        let mut inputs = vec![zeroed_f32(gpu, "cpikan x0", batch * c.d_in() * ch)?];
        let mut outputs = Vec::new();
        let mut ds = vec![affine_scale(gpu, pass, coords, &self.domain, &inputs[0], batch, c.d_in())?];
        for l in 0..c.n_layers() {
            let s = c.shape(l, batch);
            outputs.push(zeroed_f32(gpu, "cpikan z", batch * s.n_out * ch)?);
            ds.push(cheby_forward(gpu, self.layer(l, batch, pass, &inputs[l]), &outputs[l])?);
            if l + 1 < c.n_layers() {
                inputs.push(zeroed_f32(gpu, "cpikan a", batch * s.n_out * ch)?);
                ds.push(layernorm_tanh_forward(gpu, self.layer_norm(l, batch, pass, &outputs[l]), &inputs[l + 1])?);
            }
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        Ok(Activations { batch, pass, inputs, outputs })
    }

    /// Run the network on `batch` samples taken from `coords`; keeps every activation.
    pub fn forward_pass(&self, gpu: &Gpu, coords: Coords, batch: usize) -> Result<Activations> {
        self.run_forward(gpu, coords, batch, Pass::Values)
    }

    /// The network at `coords` `(batch, d_in)` in physical units: `(batch, d_out)`.
    pub fn forward(&self, gpu: &Gpu, coords: &[f32]) -> Result<Vec<f32>> {
        let (x, batch) = self.upload_coords(gpu, coords)?;
        self.forward_pass(gpu, Coords::Buffer(&x), batch)?.output(gpu, self.config.d_out())
    }

    /// The network (d_in = 2, d_out = 1) at every integer pixel (x = column, y = row): `(h, w)`.
    pub fn eval_grid(&self, gpu: &Gpu, h: usize, w: usize) -> Result<Vec<f32>> {
        if self.config.d_in() != 2 || self.config.d_out() != 1 {
            return Err(Error::Shape(format!("eval_grid needs a 2 -> 1 network, not layers {:?}", self.config.layers)));
        }
        self.forward_pass(gpu, Coords::Grid { w }, h * w)?.output(gpu, 1)
    }

    /// The derivative pass on `batch` samples taken from `coords`, keeping its activations.
    fn derivatives_pass(
        &self,
        gpu: &Gpu,
        coords: Coords,
        batch: usize,
    ) -> Result<(Derivatives, DerivativeActivations)> {
        let c = &self.config;
        let d = c.d_in();
        if !(1..=2).contains(&d) {
            return Err(Error::Shape(format!("forward_derivatives needs 1 or 2 inputs, not layers {:?}", c.layers)));
        }
        let acts = self.run_forward(gpu, coords, batch, Pass::Derivatives { dirs: d })?;
        let v = acts.output(gpu, c.d_out())?;
        Ok((Derivatives::from_channels(&v, d), DerivativeActivations(acts)))
    }

    /// The output and its first and second derivatives along each physical input axis
    /// (`d_in` 1 or 2), at `batch` samples taken from `coords`, in one analytic forward-mode pass.
    pub fn forward_derivatives_pass(&self, gpu: &Gpu, coords: Coords, batch: usize) -> Result<Derivatives> {
        Ok(self.derivatives_pass(gpu, coords, batch)?.0)
    }

    /// [`Cpikan::forward_derivatives_pass`] at `coords` `(batch, d_in)` in physical units.
    pub fn forward_derivatives(&self, gpu: &Gpu, coords: &[f32]) -> Result<Derivatives> {
        Ok(self.forward_derivatives_train(gpu, coords)?.0)
    }

    /// [`Cpikan::forward_derivatives`] keeping the activations for
    /// [`Cpikan::backward_derivatives`].
    pub fn forward_derivatives_train(&self, gpu: &Gpu, coords: &[f32]) -> Result<(Derivatives, DerivativeActivations)> {
        let (x, batch) = self.upload_coords(gpu, coords)?;
        self.derivatives_pass(gpu, Coords::Buffer(&x), batch)
    }

    /// A scalar loss of the derivative pass at `coords` `(batch, d_in)` and its parameter gradient
    /// (one vector, the order of [`flatten`]): `loss` gets the pass's output and a gradient of
    /// zeros of the same shapes to fill, and returns the loss.
    pub fn derivative_loss(
        &self,
        gpu: &Gpu,
        coords: &[f32],
        loss: impl FnOnce(&Derivatives, &mut Derivatives) -> f64,
    ) -> Result<(f32, Vec<f32>)> {
        let (d, acts) = self.forward_derivatives_train(gpu, coords)?;
        let zeros = |v: &[f32]| vec![0.0; v.len()];
        let mut g =
            Derivatives { u: zeros(&d.u), ux: zeros(&d.ux), uy: zeros(&d.uy), uxx: zeros(&d.uxx), uyy: zeros(&d.uyy) };
        let value = loss(&d, &mut g);
        Ok((value as f32, self.backward_derivatives(gpu, &acts, &g)?.flat()))
    }

    /// Gradients of a loss whose gradient with respect to the output of `acts` is `dy`
    /// `(batch, d_out)`: parameters, and the physical input coordinates.
    pub fn backward(&self, gpu: &Gpu, acts: &Activations, dy: &[f32]) -> Result<CpikanGrads> {
        let (batch, d_out) = (acts.batch, self.config.d_out());
        if dy.len() != batch * d_out {
            return Err(Error::Shape(format!("dy has {} values for ({batch}, {d_out})", dy.len())));
        }
        self.run_backward(gpu, acts, dy)
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
        let batch = acts.batch();
        let dy = g.to_channels(c.d_in(), batch * c.d_out()).ok_or_else(|| {
            Error::Shape(format!("derivative gradients: every channel needs ({batch}, {})", c.d_out()))
        })?;
        self.run_backward(gpu, &acts.0, &dy)
    }

    /// The backward of `acts`' pass for the output(-channel) gradient `dy`.
    fn run_backward(&self, gpu: &Gpu, acts: &Activations, dy: &[f32]) -> Result<CpikanGrads> {
        let c = &self.config;
        let (batch, pass) = (acts.batch, acts.pass);
        let ch = pass.channels();
        let mut ds = Vec::new();
        // dz: the gradient of the current layer's output; keep: buffers the dispatches use.
        let mut dz = storage_f32(gpu, "cpikan dy", dy)?;
        let (mut keep, mut dc, mut dln) = (Vec::new(), Vec::new(), Vec::new());
        for l in (0..c.n_layers()).rev() {
            let s = c.shape(l, batch);
            let dcl = zeroed_f32(gpu, "cpikan dc", s.coeffs())?;
            let dx = zeroed_f32(gpu, "cpikan dx", batch * s.n_in * ch)?;
            ds.extend(cheby_backward(gpu, self.layer(l, batch, pass, &acts.inputs[l]), &dz, &dx, &dcl)?);
            dc.push((l, dcl));
            let next = if l > 0 {
                let n = s.n_in;
                let dzp = zeroed_f32(gpu, "cpikan dz", batch * n * ch)?;
                let (dg, db) = (zeroed_f32(gpu, "cpikan dgamma", n)?, zeroed_f32(gpu, "cpikan dbeta", n)?);
                let ln = self.layer_norm(l - 1, batch, pass, &acts.outputs[l - 1]);
                ds.extend(layernorm_tanh_backward(gpu, ln, &dx, &dzp, &dg, &db)?);
                dln.push((l - 1, dg, db));
                keep.push(dx);
                dzp
            } else {
                dx
            };
            keep.push(std::mem::replace(&mut dz, next));
        }
        gpu.run(&ds.iter().collect::<Vec<_>>())?;
        let mut grads = read_param_grads(gpu, c, &dc, &dln)?;
        // dz now holds the gradient of the scaled input (channels).
        let d = c.d_in();
        let dx0 = Readback::f32(gpu, &dz, batch * d * ch)?;
        grads.coords =
            (0..batch * d).map(|i| dx0[i * ch] * 2.0 / (c.domain_max[i % d] - c.domain_min[i % d])).collect();
        Ok(grads)
    }
}
/// Read back the coefficient and LayerNorm gradients a backward pass left in `dc` (layer, buffer)
/// and `dln` (layer, dγ, dβ); `coords` is left for the caller.
fn read_param_grads(
    gpu: &Gpu,
    c: &CpikanConfig,
    dc: &[(usize, wgpu::Buffer)],
    dln: &[(usize, wgpu::Buffer, wgpu::Buffer)],
) -> Result<CpikanGrads> {
    let mut grads = CpikanGrads::empty(c.n_layers());
    for (l, buf) in dc {
        grads.coeffs[*l] = Readback::f32(gpu, buf, c.shape(*l, 1).coeffs())?;
    }
    for (l, dg, db) in dln {
        grads.ln_weight[*l] = Readback::f32(gpu, dg, c.layers[l + 1])?;
        grads.ln_bias[*l] = Readback::f32(gpu, db, c.layers[l + 1])?;
    }
    Ok(grads)
}

/// The seed's initialisation: coefficients N(0, 1 / (n_in (K + 1))), LayerNorm γ = 1, β = 0.
pub fn init_weights(config: &CpikanConfig, rng: &mut Rng) -> CpikanWeights {
    let kk = config.degree + 1;
    let coeffs = (0..config.n_layers())
        .map(|l| {
            let std = 1.0 / (config.layers[l] * kk) as f64;
            (0..config.layers[l] * config.layers[l + 1] * kk).map(|_| (rng.normal() * std) as f32).collect()
        })
        .collect();
    let hidden = &config.layers[1..config.layers.len() - 1];
    CpikanWeights {
        config: config.clone(),
        coeffs,
        ln_weight: hidden.iter().map(|&n| vec![1.0; n]).collect(),
        ln_bias: hidden.iter().map(|&n| vec![0.0; n]).collect(),
    }
}

/// Flatten the parameters (coefficients, then γ, β per hidden layer).
pub fn flatten<T: Copy>(coeffs: &[Vec<T>], ln_weight: &[Vec<T>], ln_bias: &[Vec<T>]) -> Vec<T> {
    let mut v: Vec<T> = coeffs.concat();
    for (g, b) in ln_weight.iter().zip(ln_bias) {
        v.extend_from_slice(g);
        v.extend_from_slice(b);
    }
    v
}

/// The inverse of [`flatten`] into `w`'s tensors.
pub fn unflatten(w: &mut CpikanWeights, flat: &[f32]) {
    let mut at = 0;
    let mut take = |t: &mut Vec<f32>| {
        let n = t.len();
        t.copy_from_slice(&flat[at..at + n]);
        at += n;
    };
    w.coeffs.iter_mut().for_each(&mut take);
    for l in 0..w.ln_weight.len() {
        take(&mut w.ln_weight[l]);
        take(&mut w.ln_bias[l]);
    }
}

/// Plain-Rust f64 versions of the whole network, for the tests; like the GPU network, each pass
/// is the derivative pass with no directions for the values.
pub mod reference {
    use super::CpikanWeights;
    use crate::ops::chebykan::Pass;
    use crate::ops::chebykan::reference::*;

    /// The output and its axis derivatives in f64.
    pub type Derivatives = super::Derivatives<f64>;
    /// f64 gradients.
    pub type Grads = super::CpikanGrads<f64>;

    /// The parameters in f64.
    pub type Net = CpikanWeights<f64>;
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
    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }
    /// Every layer's input (scaled coordinates, hidden tanh outputs) and Chebyshev output, in
    /// `pass`'s channels.
    pub fn network_forward(w: &Net, pass: Pass, coords: &[f64]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let c = &w.config;
        let batch = coords.len() / c.d_in();
        let mut inputs = vec![affine_scale(pass, coords, c.d_in(), &f64s(&c.domain_min), &f64s(&c.domain_max))];
        let mut outputs = Vec::new();
        for l in 0..c.n_layers() {
            let z = cheby_forward(c.shape(l, batch), pass, &inputs[l], &w.coeffs[l]);
            if l + 1 < c.n_layers() {
                inputs.push(layernorm_tanh_forward(pass, &z, c.layers[l + 1], &w.ln_weight[l], &w.ln_bias[l]));
            }
            outputs.push(z);
        }
        (inputs, outputs)
    }
    /// The whole network's forward-mode derivative pass (`d_in` any; `uy` / `uyy` only for `d_in ≥ 2`).
    pub fn network_derivatives(w: &Net, coords: &[f64]) -> Derivatives {
        let d = w.config.d_in();
        let (_, outputs) = network_forward(w, Pass::Derivatives { dirs: d }, coords);
        Derivatives::from_channels(outputs.last().unwrap(), d)
    }
    /// Gradients for the gradient `dy` of a loss with respect to `pass`' output channels
    /// (`(batch, d_out)` for the values; `(batch, d_out, 1 + 2 d_in)`, u, u_a, u_aa as in
    /// [`super::Derivatives`], for the derivatives), plus the coordinates' (through the value
    /// channel: the tangents are constants).
    pub fn network_backward(w: &Net, pass: Pass, coords: &[f64], dy: &[f64]) -> Grads {
        let c = &w.config;
        let (d, nl) = (c.d_in(), c.n_layers());
        let batch = coords.len() / d;
        let (inputs, outputs) = network_forward(w, pass, coords);
        let mut g = Grads::empty(nl);
        let mut dz = dy.to_vec();
        for l in (0..nl).rev() {
            let (dx, dc) = cheby_backward(c.shape(l, batch), pass, &inputs[l], &w.coeffs[l], &dz);
            g.coeffs[l] = dc;
            if l > 0 {
                let (gm, bt) = (&w.ln_weight[l - 1], &w.ln_bias[l - 1]);
                let (dzp, dg, db) = layernorm_tanh_backward(pass, &outputs[l - 1], c.layers[l], gm, bt, &dx);
                g.ln_weight[l - 1] = dg;
                g.ln_bias[l - 1] = db;
                dz = dzp;
            } else {
                let ch = pass.channels();
                g.coords = (0..batch * d)
                    .map(|i| dx[i * ch] * 2.0 / (c.domain_max[i % d] as f64 - c.domain_min[i % d] as f64))
                    .collect();
            }
        }
        g
    }
}
