//! Phase helpers shared by the solver, the losses and the generator: the N-step sums of a
//! pixel's buckets, the A/B they imply, and the exact hi/lo split of f32 constants that lets the
//! shaders form large phases in f32 without losing bits.

/// `v` with only its 12 leading significant bits: `hi12(v) * m` is exact in f32 for |m| < 4096.
pub fn hi12(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0xFFFF_F000)
}

/// `[hi, lo]` with `hi = hi12(v)` and `hi + lo = v` (to f32 precision of the remainder).
pub fn split12(v: f64) -> [f32; 2] {
    let hi = hi12(v as f32);
    [hi, (v - hi as f64) as f32]
}

/// The N-step sums of one laser's buckets `values` (δ_k = 2πk/N, N = `values.len()`):
/// `(S, C, Σ) = (Σ I_k sin δ_k, Σ I_k cos δ_k, Σ I_k)`.
pub fn sums(values: impl ExactSizeIterator<Item = f64>) -> (f64, f64, f64) {
    let tau = 2.0 * std::f64::consts::PI;
    let nb = values.len();
    let (mut s, mut c, mut sum) = (0.0, 0.0, 0.0);
    for (k, v) in values.enumerate() {
        let d = tau * k as f64 / nb as f64;
        s += v * d.sin();
        c += v * d.cos();
        sum += v;
    }
    (s, c, sum)
}

/// The offset and modulation the buckets `values` imply: `A = Σ/N`, `B = (2/N)·sqrt(S² + C²)`.
pub fn estimate_ab(values: impl ExactSizeIterator<Item = f64>) -> (f64, f64) {
    let nb = values.len() as f64;
    let (s, c, sum) = sums(values);
    (sum / nb, 2.0 / nb * (c * c + s * s).sqrt())
}
