//! Phase helpers shared by the solver, the losses and the generator: the N-step sums of a
//! pixel's buckets, the A/B they imply, the least-squares fit for any phase steps, and the exact
//! hi/lo split of f32 constants that lets the shaders form large phases in f32 without losing
//! bits.

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

/// Smallest `det(M) / (n³/4)` of the normal matrix `M` of [`fit_steps`] that still separates
/// A, B·cos φ and B·sin φ (`n³/4` is the determinant of n evenly spaced steps).
pub const MIN_STEP_CONDITION: f64 = 1e-3;

/// The generalised least-squares fit of one laser's buckets: `I_k = A + P·cos δ_k − Q·sin δ_k`
/// (`P = B·cos φ`, `Q = B·sin φ`, so `I_k = A + B·cos(φ + δ_k)`) over the buckets `k` with
/// `usable(k)`, `values[k]` at the phase steps `steps[k]` (radians). Returns `[A, P, Q]`, or `None`
/// when fewer than 3 buckets are usable or their steps cannot separate the three unknowns
/// (normal-matrix condition under [`MIN_STEP_CONDITION`]). Any steps, any N ≥ 3.
pub fn fit_steps(values: &[f64], steps: &[f64], usable: impl Fn(usize) -> bool) -> Option<[f64; 3]> {
    // The normal equations M x = r of the rows x_k = [1, cos δ_k, −sin δ_k].
    let (mut m, mut r, mut n) = ([0f64; 6], [0f64; 3], 0usize);
    for (k, (&v, &d)) in values.iter().zip(steps).enumerate() {
        if !usable(k) {
            continue;
        }
        let row = [1.0, d.cos(), -d.sin()];
        for (i, (a, b)) in [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)].into_iter().enumerate() {
            m[i] += row[a] * row[b];
        }
        for (ri, x) in r.iter_mut().zip(row) {
            *ri += v * x;
        }
        n += 1;
    }
    let [m00, m01, m02, m11, m12, m22] = m;
    let c = [m11 * m22 - m12 * m12, m02 * m12 - m01 * m22, m01 * m12 - m02 * m11];
    let (c11, c12, c22) = (m00 * m22 - m02 * m02, m01 * m02 - m00 * m12, m00 * m11 - m01 * m01);
    let det = m00 * c[0] + m01 * c[1] + m02 * c[2];
    if n < 3 || det < MIN_STEP_CONDITION * (n as f64).powi(3) / 4.0 {
        return None;
    }
    Some([
        (c[0] * r[0] + c[1] * r[1] + c[2] * r[2]) / det,
        (c[1] * r[0] + c11 * r[1] + c12 * r[2]) / det,
        (c[2] * r[0] + c12 * r[1] + c22 * r[2]) / det,
    ])
}
