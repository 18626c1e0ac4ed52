//! Shared test helpers: one GPU context per adapter (Vulkan and GL on the software drivers), a
//! deterministic random source, the tolerance checks, fixtures and temporary paths.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use psi_gpu::{Gpu, Precision};

/// Every adapter present, opened once per test process. `PSI_GPU_BACKEND` narrows the set.
pub fn gpus() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let backend = std::env::var("PSI_GPU_BACKEND").unwrap_or_else(|_| "auto".into());
        let gpus = Gpu::all(&backend).expect("opening adapters");
        assert!(
            !gpus.is_empty(),
            "no GPU adapter: install mesa-vulkan-drivers and libvulkan1 (see .ci/run) to run the tests"
        );
        for g in &gpus {
            eprintln!("test adapter: {} f16={} f32-atomics={}", g.describe(), g.f16, g.float32_atomics);
        }
        gpus
    })
}

/// Each (adapter, precision) pair the adapter supports: f32 everywhere, f16 where enabled.
pub fn targets() -> Vec<(&'static Gpu, Precision)> {
    let mut t = Vec::new();
    for g in gpus() {
        t.push((g, Precision::F32));
        if g.f16 {
            t.push((g, Precision::F16));
        }
    }
    t
}

/// splitmix64: deterministic, dependency-free random numbers for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Relative L2 error ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Tolerances for one precision: per element |x − y| ≤ max(r·|y|, a), and a relative L2 bound.
pub struct Tol {
    pub rel: f64,
    pub abs: f64,
    pub l2: f64,
}

pub fn tol(p: Precision) -> Tol {
    match p {
        Precision::F32 => Tol { rel: 1e-4, abs: 1e-5, l2: 1e-5 },
        Precision::F16 => Tol { rel: 1e-2, abs: 5e-3, l2: 5e-3 },
    }
}

/// Check `got` against `want` element-wise and in relative L2, with a message naming `what`.
pub fn assert_close(got: &[f32], want: &[f32], t: &Tol, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (*g as f64, *w as f64);
        let bound = (t.rel * w.abs()).max(t.abs);
        assert!((g - w).abs() <= bound, "{what}: element {i}: got {g}, want {w} (bound {bound:e})");
    }
    let e = rel_l2(got, want);
    assert!(e < t.l2, "{what}: relative L2 {e:e} over {:e}", t.l2);
}

/// Values rounded to f16 and back, so CPU references see exactly what f16 storage holds.
pub fn round_to(p: Precision, v: &[f32]) -> Vec<f32> {
    match p {
        Precision::F32 => v.to_vec(),
        Precision::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
    }
}

/// Channel concatenation of two NCHW tensors of the same n, h, w.
pub fn concat(a: &[f32], ca: usize, b: &[f32], cb: usize, n: usize, hw: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(a.len() + b.len());
    for i in 0..n {
        y.extend_from_slice(&a[i * ca * hw..(i + 1) * ca * hw]);
        y.extend_from_slice(&b[i * cb * hw..(i + 1) * cb * hw]);
    }
    y
}

/// A committed fixture: `tests/fixtures/NAME` (made by the `make_*.py` scripts beside it).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A unique path in the temporary directory (`psi-gpu-test-PID-N-NAME`), removed with everything
/// under it when dropped. [`TempPath::dir`] creates it as a folder.
pub struct TempPath(pub PathBuf);

impl TempPath {
    /// A path that does not exist yet (a file to write).
    pub fn new(name: &str) -> TempPath {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("psi-gpu-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    /// A fresh, empty folder.
    pub fn dir(name: &str) -> TempPath {
        let t = TempPath::new(name);
        std::fs::create_dir_all(&t.0).unwrap();
        t
    }
}

/// A `TempPath` is used as the path it holds (`join`, `display`, `to_str`, `&temp` as `&Path`).
impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// f32 values as f64 (what the f64 CPU references of `ops` take).
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// f64 values rounded to f32 (a reference's result, to compare with what the GPU read back).
pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Channels `[off, off + c)` of every image of an NCHW host tensor of `shape`.
pub fn slice_channels(v: &[f32], [n, ct, h, w]: [usize; 4], off: usize, c: usize) -> Vec<f32> {
    let hw = h * w;
    (0..n).flat_map(|i| v[(i * ct + off) * hw..(i * ct + off + c) * hw].to_vec()).collect()
}
