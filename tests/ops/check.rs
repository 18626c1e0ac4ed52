//! What the kernel tests share: running dispatch lists, per-channel f32 vectors, channel-view
//! checks, finite differences, and reading the PyTorch fixtures.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::common::{Rng, Tol, assert_close, fixture, round_to, slice_channels, tol};
use psi_gpu::gpu::{ChannelView, Dispatch, Gpu, Precision, Tensor};

/// Record `ds` into one pass, submit and wait.
pub fn run(gpu: &Gpu, ds: &[Dispatch]) {
    gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
}

/// An f32 tensor `[1, 1, 1, len]` holding `v` (per-channel parameters, gradient buffers).
pub fn vector(gpu: &Gpu, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, [1, 1, 1, v.len()], Precision::F32, v).unwrap()
}

/// Uniform random values in `[lo, hi)` of `shape`, rounded to `p`, and a tensor holding them.
pub fn random_tensor(
    gpu: &Gpu,
    p: Precision,
    rng: &mut Rng,
    shape: [usize; 4],
    [lo, hi]: [f32; 2],
) -> (Vec<f32>, Tensor) {
    let v = round_to(p, &rng.vec(shape.iter().product(), lo, hi));
    let t = Tensor::from_f32(gpu, shape, p, &v).unwrap();
    (v, t)
}

/// Element-wise sum.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// The tests take turns on the GPUs where a test compiles many kernels: wgpu's GL backend panics
/// when a thread waits over 6 s for the GL context, and a cold shader compile on llvmpipe GL holds
/// it that long.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Channels of `got` outside `[off, off + c)` still hold `fill`.
pub fn assert_untouched(got: &[f32], shape: [usize; 4], off: usize, c: usize, fill: &[f32], what: &str) {
    for ch in (0..off).chain(off + c..shape[1]) {
        assert_eq!(
            slice_channels(got, shape, ch, 1),
            slice_channels(fill, shape, ch, 1),
            "{what}: wrote outside its view (channel {ch})"
        );
    }
}

/// The common tolerance of `p`, with its absolute floor scaled by the largest expected magnitude
/// (gradients are sums over many pixels): |x − y| ≤ max(r·|y|, a·max|y|).
pub fn scaled_tol(p: Precision, want: &[f32]) -> Tol {
    let t = tol(p);
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs() as f64));
    Tol { rel: t.rel, abs: t.abs * scale, l2: t.l2 }
}

pub fn assert_close_scaled(got: &[f32], want: &[f32], p: Precision, what: &str) {
    assert_close(got, want, &scaled_tol(p, want), what);
}

/// An output tensor of `shape`, prefilled with random values, whose channels `[off, off + c)` a
/// kernel writes (or adds into): the slot a layer's result goes to in a larger tensor.
pub struct Slot {
    pub tensor: Tensor,
    fill: Vec<f32>,
    shape: [usize; 4],
    off: usize,
    c: usize,
}

impl Slot {
    pub fn new(gpu: &Gpu, p: Precision, rng: &mut Rng, shape: [usize; 4], off: usize, c: usize) -> Slot {
        let fill = round_to(p, &rng.vec(shape.iter().product(), -1.0, 1.0));
        Slot { tensor: Tensor::from_f32(gpu, shape, p, &fill).unwrap(), fill, shape, off, c }
    }

    /// Back to the values it was made with.
    pub fn reset(&self, gpu: &Gpu) {
        self.tensor.upload(gpu, &self.fill);
    }

    pub fn view(&self) -> ChannelView<'_> {
        self.tensor.channels(self.off, self.c)
    }

    /// The slot holds `want` (added to what it held before with `accumulate`) within the
    /// [`scaled_tol`] of `p`, and the other channels are untouched.
    pub fn check(&self, gpu: &Gpu, want: &[f32], accumulate: bool, p: Precision, what: &str) {
        let (got, before) =
            (self.tensor.to_f32(gpu).unwrap(), slice_channels(&self.fill, self.shape, self.off, self.c));
        let want = if accumulate { add(want, &before) } else { want.to_vec() };
        assert_close(&slice_channels(&got, self.shape, self.off, self.c), &want, &scaled_tol(p, &want), what);
        assert_untouched(&got, self.shape, self.off, self.c, &self.fill, what);
    }
}

/// Central finite differences of `f` at `x` in every coordinate.
pub fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let a = f(&xp);
            xp[i] = x[i] - h;
            let b = f(&xp);
            xp[i] = x[i];
            (a - b) / (2.0 * h)
        })
        .collect()
}

/// Every element of `got` within `eps · max(1, max|want|)` of `want`.
pub fn assert_near(got: &[f64], want: &[f64], eps: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= eps * scale, "{what}: element {i}: {g} vs finite differences {w}");
    }
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Every tensor of a safetensors fixture as (shape, f32 values).
pub fn tensors(name: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            (k, (v.shape().to_vec(), bytemuck::pod_collect_to_vec(v.data())))
        })
        .collect()
}

pub fn shape4(s: &[usize]) -> [usize; 4] {
    s.try_into().expect("4-d tensor")
}
