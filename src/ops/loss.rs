//! Training losses on the GPU (`shaders/loss.wgsl`): the seed's physics-consistency loss and a
//! supervised MSE, each with its value (for the progress bar) and its gradient w.r.t. the model's
//! output (for the autograd tape).
//!
//! **Physics loss** of a height map `h` `[n, 1, H, W]` (the model output, storage T) against the raw
//! frame `I` `[n, L·N, H, W]` (f32, channel `laser * N + bucket`):
//!
//! ```text
//! L = mean_{img,l,k,y,x} (A + B·cos(4π·h/λ_l + δ_k) − I)²  +  w_s · mean_{img,y,x} (∇²h)²
//! ```
//!
//! with δ_k = 2πk/N and ∇² the 5-point Laplacian with zero padding (the seed's `conv2d(h, [[0,1,0],
//! [1,−4,1],[0,1,0]], padding=1)`). A and B are constants (128, 100 by default) or, with
//! [`PhysicsConfig::per_pixel_ab`], estimated per pixel and laser from the frame
//! (`A = mean_k I_k`, `B = (2/N)·sqrt(S² + C²)`, S, C the sine and cosine sums) by a kernel that
//! runs once per frame ([`Loss::estimate`]); they are constants of the loss (no gradient). The
//! model sees `I × input_scale`, the loss compares raw intensities: pass the raw frame, or a
//! scaled f32 frame with [`PhysicsConfig::frame_scale`] = 1 / input_scale.
//!
//! The gradient, written in T with the loss scaler's current scale (a GPU f32 buffer, so no
//! host round trip) and a host weight (1/N for N accumulated micro-batches):
//!
//! ```text
//! dL/dh · scale · weight,  dL/dh = (2/M)·Σ_{l,k} r·(−B·sin θ)·(4π/λ_l) + w_s·(2/P)·∇²(∇²h)
//! ```
//!
//! (M = n·L·N·H·W, P = n·H·W, r the residual; the zero-padded Laplacian is self-adjoint).
//! **Supervised MSE**: `mean((h − truth)²)` (truth f32), gradient `2(h − truth)/P · scale · weight`.
//! **Residual** (the residual model's, `nn::residual`): the prediction is the U-Net's output `u`,
//! the height `hc + bound·tanh(u)` with `hc` the classical height (f32, no gradient), and
//! `L = (1/P)·Σ ω·(hc + bound·tanh(u) − truth)²` over the pixels where `hc` and the truth are
//! finite and `|hc − truth|` is under a cutoff (the others add 0 and get a zero gradient), `ω`
//! each pixel's weight (f32; the trainer's make a crop's errors relative to the solver's),
//! `dL/du = (2/P)·ω·r·bound·(1 − tanh²u)`. The cutoff leaves out the pixels the solver put on a
//! wrong fringe order: no correction within the bound reaches them, and their errors of
//! microns would outweigh every other pixel's.
//!
//! Values: each workgroup writes its partial sums (a fixed tree, so the result is deterministic),
//! a second one-workgroup pass reduces them into a small f32 buffer `[total, data, w_s·mean(∇²h)²,
//! mean(∇²h)²]` ([`LossValue`]) that the host reads only when it wants to print.
//!
//! Precision: f32 arithmetic; the phase is formed in turns with host-split constants, so heights
//! of ±100 µm keep about 1e-7 turns of phase error (see the shader's header).
//! [`reference`](mod@reference) is the f64 CPU version the tests check against finite differences
//! and the GPU against.

use bytemuck::Zeroable;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Precision, Readback, Shader, Tensor, grid_1d, storage, zeroed};
use crate::psi::PsiConfig;
use crate::psi::phase::split12;

pub static SHADER: Shader = wgsl!("loss": "lib/grid.wgsl", "lib/phase.wgsl", "lib/reduce.wgsl", "loss.wgsl");

const WG: usize = 256;

/// The physics loss's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PhysicsConfig {
    /// Lasers, buckets, and the constant offset A and modulation B (counts) used unless
    /// `per_pixel_ab`.
    pub psi: PsiConfig,
    /// Estimate A and B per pixel and laser from the frame instead (needs N ≥ 3).
    pub per_pixel_ab: bool,
    /// Weight w_s of the Laplacian smoothness term (0 = off).
    pub smoothness: f32,
    /// Raw intensity = frame value × `frame_scale` (1 when the frame buffer holds raw counts).
    pub frame_scale: f32,
}

impl Default for PhysicsConfig {
    fn default() -> Self {
        PhysicsConfig { psi: PsiConfig::default(), per_pixel_ab: false, smoothness: 0.0, frame_scale: 1.0 }
    }
}

impl PhysicsConfig {
    pub fn lasers(&self) -> usize {
        self.psi.lasers()
    }

    /// Frame channels: lasers × buckets.
    pub fn channels(&self) -> usize {
        self.psi.channels()
    }

    pub fn validate(&self) -> Result<()> {
        self.psi.validate_wavelengths("the physics loss")?;
        self.psi.require_nominal_steps("the physics loss")?;
        if self.psi.buckets == 0 {
            return Err(Error::Invalid("the physics loss needs at least one bucket per laser; got 0".into()));
        }
        if self.per_pixel_ab && self.psi.buckets < 3 {
            return Err(Error::Invalid(format!(
                "estimating A and B per pixel needs at least 3 buckets per laser; got {}",
                self.psi.buckets
            )));
        }
        self.psi.validate_ab()?;
        if !(self.smoothness.is_finite() && self.smoothness >= 0.0) {
            return Err(Error::Invalid(format!("smoothness weight {} must be finite and at least 0", self.smoothness)));
        }
        if !(self.frame_scale.is_finite() && self.frame_scale != 0.0) {
            return Err(Error::Invalid(format!("frame scale {} must be finite and non-zero", self.frame_scale)));
        }
        Ok(())
    }
}

/// Which loss a [`Loss`] computes.
#[derive(Clone, Debug, PartialEq)]
pub enum LossKind {
    Physics(PhysicsConfig),
    /// Supervised mean squared error against a truth map.
    Mse,
    /// Supervised error of the residual model's height `hc + bound·tanh(u)` (µm) against a truth
    /// map, over the pixels where the classical height `hc` and the truth are finite and within
    /// the cutoff of each other.
    Residual(ResidualLoss),
}

/// The residual loss's constants (µm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResidualLoss {
    /// The correction's bound.
    pub bound: f32,
    /// Pixels whose classical height is this far from the truth or farther are left out.
    pub cutoff: f32,
}

/// A loss value as read back: `total = data + smoothness`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossValue {
    pub total: f32,
    /// The data term (physics: mean squared bucket residual; MSE: the MSE).
    pub data: f32,
    /// `w_s · mean((∇²h)²)` (0 for MSE).
    pub smoothness: f32,
    /// `mean((∇²h)²)` without the weight (0 for MSE).
    pub laplacian: f32,
}

impl LossValue {
    /// Read the `[total, data, smoothness, laplacian]` buffer of a [`Loss`] (waits for queued work).
    pub fn read(gpu: &Gpu, value: &wgpu::Buffer) -> Result<LossValue> {
        let v = Readback::f32(gpu, value, 4)?;
        Ok(LossValue { total: v[0], data: v[1], smoothness: v[2], laplacian: v[3] })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct LossParams {
    n: u32,
    h: u32,
    w: u32,
    lasers: u32,
    buckets: u32,
    per_pixel: u32,
    grad: u32,
    count: u32,
    a: f32,
    b: f32,
    w_smooth: f32,
    frame_scale: f32,
    inv_m: f32,
    inv_p: f32,
    weight: f32,
    bound: f32,
    cutoff: f32,
    _pad: [u32; 3],
}

impl LossParams {
    /// The fields every loss sets for a prediction of `[n, 1, h, w]`; the rest zero.
    fn of([n, h, w]: [usize; 3]) -> LossParams {
        let [n, h, w] = [n, h, w].map(|d| d as u32);
        LossParams { n, h, w, count: n * h * w, frame_scale: 1.0, weight: 1.0, ..Zeroable::zeroed() }
    }
}

/// The shader's constant table (computed in f64): per laser `[2/λ hi, 2/λ lo, 4π/λ, 0]` (hi with
/// 12 significant bits, hi + lo = 2/λ), then per bucket `[k/N, cos δ_k, sin δ_k, 0]`.
fn constants(config: &PhysicsConfig) -> Vec<[f32; 4]> {
    let tau = 2.0 * std::f64::consts::PI;
    let psi = &config.psi;
    let mut c = Vec::with_capacity(psi.lasers() + psi.buckets);
    for &wl in &psi.wavelengths {
        let [hi, lo] = split12(2.0 / wl as f64);
        c.push([hi, lo, (2.0 * tau / wl as f64) as f32, 0.0]);
    }
    for k in 0..psi.buckets {
        let t = k as f64 / psi.buckets as f64;
        c.push([t as f32, (tau * t).cos() as f32, (tau * t).sin() as f32, 0.0]);
    }
    c
}

/// A loss bound to its buffers, with its recorded dispatches: [`Loss::estimate`] (per-pixel A/B
/// only, once per frame), then [`Loss::forward`] (value only) or [`Loss::backward`] (gradient
/// and value in one pass over the frame). All of them can go into the tape's encoder.
pub struct Loss {
    pub kind: LossKind,
    /// Storage precision of the prediction and its gradient.
    pub precision: Precision,
    /// `[n, h, w]` of the prediction (`[n, 1, h, w]`).
    pub shape: [usize; 3],
    params: LossParams,
    /// Workgroups of the passes over the pixels.
    grid: [u32; 3],
    estimate: Option<Dispatch>,
    forward: Dispatch,
    backward: Option<Dispatch>,
    reduce: Dispatch,
    value: wgpu::Buffer,
    ab: Option<wgpu::Buffer>,
    /// Constants, partial sums and placeholders the bind groups use.
    _buffers: Vec<wgpu::Buffer>,
}

fn check_prediction(pred: &Tensor, grad: Option<&Tensor>, scale: &wgpu::Buffer) -> Result<[usize; 3]> {
    let [n, c, h, w] = pred.shape;
    if c != 1 || n * h * w == 0 {
        return Err(Error::Shape(format!("a loss needs a non-empty [n, 1, h, w] prediction; got {:?}", pred.shape)));
    }
    if let Some(g) = grad
        && (g.shape != pred.shape || g.precision != pred.precision)
    {
        return Err(Error::Shape(format!(
            "the loss gradient {:?} ({}) must match the prediction {:?} ({})",
            g.shape, g.precision, pred.shape, pred.precision
        )));
    }
    if scale.size() < 4 {
        return Err(Error::Shape("the loss-scale buffer must hold one f32".into()));
    }
    Ok([n, h, w])
}

impl Loss {
    /// The physics loss of `height` `[n, 1, h, w]` (any precision) against `frame`
    /// `[n, L·N, h, w]` (f32). `grad` (shape and precision of `height`) receives
    /// `dL/dh · scale[0] · weight` when [`Loss::backward`] runs; `None` makes a value-only loss.
    /// `scale` is the loss scaler's f32 buffer.
    pub fn physics(
        gpu: &Gpu,
        config: &PhysicsConfig,
        height: &Tensor,
        frame: &Tensor,
        grad: Option<&Tensor>,
        scale: &wgpu::Buffer,
    ) -> Result<Loss> {
        config.validate()?;
        let [n, h, w] = check_prediction(height, grad, scale)?;
        let want = [n, config.channels(), h, w];
        if frame.shape != want || frame.precision != Precision::F32 {
            return Err(Error::Shape(format!(
                "the physics loss needs an f32 frame {want:?} for a {:?} height map; got {:?} ({})",
                height.shape, frame.shape, frame.precision
            )));
        }
        let (nl, nb) = (config.lasers(), config.psi.buckets);
        let (m, pix) = ((n * nl * nb * h * w) as f64, (n * h * w) as f64);
        let params = LossParams {
            lasers: nl as u32,
            buckets: nb as u32,
            per_pixel: config.per_pixel_ab as u32,
            a: config.psi.a,
            b: config.psi.b,
            w_smooth: config.smoothness,
            frame_scale: config.frame_scale,
            inv_m: (1.0 / m) as f32,
            inv_p: (1.0 / pix) as f32,
            ..LossParams::of([n, h, w])
        };
        let consts = storage(gpu, "loss constants", bytemuck::cast_slice(&constants(config)))?;
        let ab = zeroed(gpu, "loss A/B", if config.per_pixel_ab { (n * nl * 2 * h * w * 4) as u64 } else { 4 })?;
        let pass = |p: &LossParams, g: &wgpu::Buffer, partials: &wgpu::Buffer, grid| {
            let b =
                [(1, &height.buffer), (2, &frame.buffer), (3, &consts), (4, &ab), (5, scale), (6, g), (7, partials)];
            Dispatch::new(gpu, &SHADER.kernel("physics"), height.precision, p, &b, grid)
        };
        let mut loss = Loss::assemble(gpu, LossKind::Physics(config.clone()), height, grad, params, pass)?;
        if config.per_pixel_ab {
            let b = [(2, &frame.buffer), (3, &consts), (8, &ab)];
            loss.estimate =
                Some(Dispatch::new(gpu, &SHADER.kernel("loss_ab"), Precision::F32, &params, &b, loss.grid)?);
            loss.ab = Some(ab);
        }
        loss._buffers.push(consts);
        Ok(loss)
    }

    /// Supervised `mean((pred − truth)²)` of `pred` `[n, 1, h, w]` (any precision) against `truth`
    /// (f32, same shape). `grad` and `scale` as for [`Loss::physics`].
    pub fn mse(gpu: &Gpu, pred: &Tensor, truth: &Tensor, grad: Option<&Tensor>, scale: &wgpu::Buffer) -> Result<Loss> {
        let [n, h, w] = check_prediction(pred, grad, scale)?;
        if truth.shape != pred.shape || truth.precision != Precision::F32 {
            return Err(Error::Shape(format!(
                "the MSE needs an f32 truth map {:?}; got {:?} ({})",
                pred.shape, truth.shape, truth.precision
            )));
        }
        let params = LossParams { inv_m: (1.0 / (n * h * w) as f64) as f32, ..LossParams::of([n, h, w]) };
        let pass = |p: &LossParams, g: &wgpu::Buffer, partials: &wgpu::Buffer, grid| {
            let b = [(1, &pred.buffer), (9, &truth.buffer), (5, scale), (6, g), (7, partials)];
            Dispatch::new(gpu, &SHADER.kernel("mse"), pred.precision, p, &b, grid)
        };
        Loss::assemble(gpu, LossKind::Mse, pred, grad, params, pass)
    }

    /// The residual model's loss of the U-Net output `u` `[n, 1, h, w]` (any precision): the
    /// classical height `classical`, `truth` and each pixel's weight `weight` are f32 of the same
    /// shape; `grad` and `scale` as for [`Loss::physics`].
    #[allow(clippy::too_many_arguments)] // the loss's tensors, its constants and the gradient's
    pub fn residual(
        gpu: &Gpu,
        u: &Tensor,
        classical: &Tensor,
        truth: &Tensor,
        weight: &Tensor,
        constants: &ResidualLoss,
        grad: Option<&Tensor>,
        scale: &wgpu::Buffer,
    ) -> Result<Loss> {
        let [n, h, w] = check_prediction(u, grad, scale)?;
        if [truth, classical, weight].iter().any(|t| t.shape != u.shape || t.precision != Precision::F32) {
            return Err(Error::Shape(format!(
                "the residual loss needs f32 classical heights, truth and weights {:?}; got {:?} ({}), {:?} ({}) \
                 and {:?} ({})",
                u.shape,
                classical.shape,
                classical.precision,
                truth.shape,
                truth.precision,
                weight.shape,
                weight.precision
            )));
        }
        let ResidualLoss { bound, cutoff } = *constants;
        if !(bound.is_finite() && bound > 0.0 && cutoff > 0.0) {
            return Err(Error::Invalid(format!(
                "residual bound {bound} µm must be finite and positive, and the cutoff {cutoff} µm positive"
            )));
        }
        let inv_m = (1.0 / (n * h * w) as f64) as f32;
        let params = LossParams { inv_m, bound, cutoff, ..LossParams::of([n, h, w]) };
        let pass = |p: &LossParams, g: &wgpu::Buffer, partials: &wgpu::Buffer, grid| {
            let b = [
                (1, &u.buffer),
                (2, &classical.buffer),
                (9, &truth.buffer),
                (11, &weight.buffer),
                (5, scale),
                (6, g),
                (7, partials),
            ];
            Dispatch::new(gpu, &SHADER.kernel("residual"), u.precision, p, &b, grid)
        };
        Loss::assemble(gpu, LossKind::Residual(*constants), u, grad, params, pass)
    }

    /// What every loss has: its pass over the prediction `pred` (`pass(params, gradient buffer,
    /// partial sums, workgroups)`), recorded without a gradient (forward, into a placeholder) and
    /// with one (backward, into `grad`), and the reduction of its partial sums into the value.
    fn assemble(
        gpu: &Gpu,
        kind: LossKind,
        pred: &Tensor,
        grad: Option<&Tensor>,
        params: LossParams,
        pass: impl Fn(&LossParams, &wgpu::Buffer, &wgpu::Buffer, [u32; 3]) -> Result<Dispatch>,
    ) -> Result<Loss> {
        let [n, _, h, w] = pred.shape;
        let [gx, gy] = grid_1d(gpu, n * h * w, WG);
        let (grid, groups) = ([gx, gy, 1], gx as usize * gy as usize);
        let partials = zeroed(gpu, "loss partials", (2 * groups * 4) as u64)?;
        let value = zeroed(gpu, "loss value", 16)?;
        let dummy_grad = zeroed(gpu, "loss gradient placeholder", 4)?;
        let forward = pass(&params, &dummy_grad, &partials, grid)?;
        let backward = grad.map(|g| pass(&LossParams { grad: 1, ..params }, &g.buffer, &partials, grid)).transpose()?;
        let rp = LossParams { count: groups as u32, ..params };
        let bufs = [(7, &partials), (10, &value)];
        let reduce = Dispatch::new(gpu, &SHADER.kernel("reduce"), Precision::F32, &rp, &bufs, [1, 1, 1])?;
        Ok(Loss {
            kind,
            precision: pred.precision,
            shape: [n, h, w],
            params,
            grid,
            estimate: None,
            forward,
            backward,
            reduce,
            value,
            ab: None,
            _buffers: vec![partials, dummy_grad],
        })
    }

    /// The per-pixel A/B estimate: record it once after each new frame is in the frame buffer,
    /// before [`Loss::forward`] / [`Loss::backward`]. `None` when A and B are constants.
    pub fn estimate(&self) -> Option<&Dispatch> {
        self.estimate.as_ref()
    }

    /// Value only: the partial sums and their reduction into [`Loss::value`].
    pub fn forward(&self) -> [&Dispatch; 2] {
        [&self.forward, &self.reduce]
    }

    /// Gradient and value in one pass (no need to record [`Loss::forward`] as well). Fails for a
    /// loss made without a gradient tensor.
    pub fn backward(&self) -> Result<[&Dispatch; 2]> {
        match &self.backward {
            Some(b) => Ok([b, &self.reduce]),
            None => Err(Error::Invalid("this loss was made without a gradient tensor; pass one to backward".into())),
        }
    }

    /// Set the host multiplier of the gradient (e.g. 1/N for N accumulated micro-batches; 1 by
    /// default). Takes effect at the next submission.
    pub fn set_grad_weight(&mut self, gpu: &Gpu, weight: f32) {
        self.params.weight = weight;
        if let Some(b) = &self.backward {
            b.update(gpu, &LossParams { grad: 1, ..self.params });
        }
    }

    /// The f32 `[total, data, smoothness, laplacian]` buffer the reduction writes.
    pub fn value(&self) -> &wgpu::Buffer {
        &self.value
    }

    /// Read the last computed value (waits for queued work).
    pub fn read(&self, gpu: &Gpu) -> Result<LossValue> {
        LossValue::read(gpu, &self.value)
    }

    /// The per-pixel A/B estimate, f32 `[n, L, 2, h, w]` (A then B per laser); `None` with
    /// constant A/B.
    pub fn read_ab(&self, gpu: &Gpu) -> Result<Option<Vec<f32>>> {
        match (&self.ab, &self.kind) {
            (Some(ab), LossKind::Physics(c)) => {
                let [n, h, w] = self.shape;
                Ok(Some(Readback::f32(gpu, ab, n * c.lasers() * 2 * h * w)?))
            }
            _ => Ok(None),
        }
    }

    /// Run (estimate, then backward if `with_grad` else forward) in one submission and read the
    /// value: for tests and small jobs; training records the dispatches into its own encoder.
    pub fn evaluate(&self, gpu: &Gpu, with_grad: bool) -> Result<LossValue> {
        let mut d: Vec<&Dispatch> = self.estimate.iter().collect();
        if with_grad {
            d.extend(self.backward()?);
        } else {
            d.extend(self.forward());
        }
        gpu.run(&d)?;
        self.read(gpu)
    }
}

/// The losses and their gradients on the CPU in f64 (conventions in [`crate::ops`]).
pub mod reference {
    use super::PhysicsConfig;
    use crate::psi::{buckets, phase};

    /// A loss value in f64 (fields as [`super::LossValue`]).
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Value {
        pub total: f64,
        pub data: f64,
        pub smoothness: f64,
        pub laplacian: f64,
    }

    /// Per pixel and laser of `frame` `[n, L·N, h, w]`, `[n, L, 2, h, w]`: `A = mean_k I_k`,
    /// `B = (2/N)·sqrt(S² + C²)` of the raw intensities (`frame × frame_scale`); the shader's
    /// `loss_ab`.
    pub fn loss_ab(frame: &[f64], [n, c, h, w]: [usize; 4], config: &PhysicsConfig) -> Vec<f64> {
        let (nl, nb, hw) = (config.lasers(), config.psi.buckets, h * w);
        assert_eq!((c, frame.len()), (nl * nb, n * c * hw), "frame size");
        let fs = config.frame_scale as f64;
        let mut out = vec![0f64; n * nl * 2 * hw];
        for img in 0..n {
            for l in 0..nl {
                for px in 0..hw {
                    let values = (0..nb).map(|k| frame[((img * nl + l) * nb + k) * hw + px] * fs);
                    let o = (img * nl + l) * 2 * hw + px;
                    (out[o], out[o + hw]) = phase::estimate_ab(values);
                }
            }
        }
        out
    }

    /// The zero-padded 5-point Laplacian of each plane of `field` `[n, c, h, w]`.
    pub fn laplacian(field: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
        assert_eq!(field.len(), n * c * h * w, "field size");
        let at = |p: usize, y: isize, x: isize| {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                0.0
            } else {
                field[(p * h + y as usize) * w + x as usize]
            }
        };
        let mut out = vec![0f64; field.len()];
        for p in 0..n * c {
            for y in 0..h as isize {
                for x in 0..w as isize {
                    out[(p * h + y as usize) * w + x as usize] =
                        at(p, y - 1, x) + at(p, y + 1, x) + at(p, y, x - 1) + at(p, y, x + 1) - 4.0 * at(p, y, x);
                }
            }
        }
        out
    }

    /// The physics loss of `height` `[n, 1, h, w]` against `frame` `[n, L·N, h, w]` and its
    /// gradient dL/dh (unscaled).
    pub fn physics(height: &[f64], frame: &[f64], shape: [usize; 4], config: &PhysicsConfig) -> (Value, Vec<f64>) {
        let [n, one, h, w] = shape;
        let (nl, nb, hw) = (config.lasers(), config.psi.buckets, h * w);
        assert_eq!((one, height.len()), (1, n * hw), "height size");
        let tau = 2.0 * std::f64::consts::PI;
        let fs = config.frame_scale as f64;
        assert_eq!(frame.len(), n * nl * nb * hw, "frame size");
        let ab = config.per_pixel_ab.then(|| loss_ab(frame, [n, nl * nb, h, w], config));
        let m = (n * nl * nb * hw) as f64;
        let pix = (n * hw) as f64;
        let mut data = 0.0;
        let mut grad = vec![0f64; n * hw];
        for img in 0..n {
            for l in 0..nl {
                let wl = config.psi.wavelengths[l] as f64;
                for px in 0..hw {
                    let (a, b) = match &ab {
                        Some(ab) => {
                            let o = (img * nl + l) * 2 * hw + px;
                            (ab[o], ab[o + hw])
                        }
                        None => (config.psi.a as f64, config.psi.b as f64),
                    };
                    let hv = height[img * hw + px];
                    for k in 0..nb {
                        let theta = 2.0 * tau * hv / wl + config.psi.phase_step(l, k);
                        let r = buckets::intensity(a, b, hv, wl, config.psi.phase_step(l, k))
                            - frame[((img * nl + l) * nb + k) * hw + px] * fs;
                        data += r * r;
                        grad[img * hw + px] += 2.0 / m * r * (-b * theta.sin()) * (2.0 * tau / wl);
                    }
                }
            }
        }
        let lap = laplacian(height, shape);
        let lap2 = lap.iter().map(|v| v * v).sum::<f64>() / pix;
        let ws = config.smoothness as f64;
        if ws != 0.0 {
            for (g, bl) in grad.iter_mut().zip(laplacian(&lap, shape)) {
                *g += ws * 2.0 / pix * bl;
            }
        }
        let data = data / m;
        (Value { total: data + ws * lap2, data, smoothness: ws * lap2, laplacian: lap2 }, grad)
    }

    /// `mean((pred − truth)²)` and its gradient.
    pub fn mse(pred: &[f64], truth: &[f64]) -> (f64, Vec<f64>) {
        assert_eq!(pred.len(), truth.len(), "prediction and truth sizes");
        let n = pred.len() as f64;
        let value = pred.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / n;
        (value, pred.iter().zip(truth).map(|(p, t)| 2.0 / n * (p - t)).collect())
    }

    /// The residual loss of the U-Net output `u` over classical heights `hc` and `truth`, each
    /// pixel's squared error times its `weight` (pixels where `hc` or the truth is non-finite, or
    /// `|hc − truth| ≥ cutoff`, add 0 and get a zero gradient), and its gradient dL/du.
    pub fn residual(u: &[f64], hc: &[f64], truth: &[f64], weight: &[f64], bound: f64, cutoff: f64) -> (f64, Vec<f64>) {
        assert!(
            u.len() == hc.len() && u.len() == truth.len() && u.len() == weight.len(),
            "output, classical, truth and weight sizes"
        );
        let n = u.len() as f64;
        let (mut value, mut grad) = (0.0, vec![0.0; u.len()]);
        for i in 0..u.len() {
            if hc[i].is_finite() && truth[i].is_finite() && (hc[i] - truth[i]).abs() < cutoff {
                let t = u[i].tanh();
                let r = hc[i] + bound * t - truth[i];
                value += weight[i] * r * r / n;
                grad[i] = 2.0 / n * weight[i] * r * bound * (1.0 - t * t);
            }
        }
        (value, grad)
    }
}
