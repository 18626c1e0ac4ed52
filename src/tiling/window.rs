//! The blending window (CPU version of `ramp`/`axis_weight` in `shaders/blend.wgsl`, used by
//! tests and documentation): separable sin² ramps of length `overlap` on sides with a neighbour.

/// Weight at distance `j` from a side that has a neighbouring tile.
pub fn ramp(j: usize, overlap: usize) -> f64 {
    if j >= overlap {
        return 1.0;
    }
    let s = (std::f64::consts::PI * (j as f64 + 0.5) / (2.0 * overlap as f64)).sin();
    s * s
}

/// Weights along one tile axis of `n` pixels with neighbours below (`low`) and above (`high`).
pub fn axis(n: usize, overlap: usize, low: bool, high: bool) -> Vec<f64> {
    (0..n)
        .map(|j| {
            let a = if low { ramp(j, overlap) } else { 1.0 };
            let b = if high { ramp(n - 1 - j, overlap) } else { 1.0 };
            a * b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling::plan::TileGrid;

    /// Summed weights over a frame: positive everywhere, 1 where at most two tiles meet at a
    /// regular stride, and exactly 1 on borders without neighbours.
    #[test]
    fn weights_are_positive_and_complementary() {
        for (n, tile, ov) in [(300, 128, 32), (97, 40, 13), (64, 64, 8), (1000, 512, 128)] {
            let g = TileGrid::new(n, n, tile, ov).unwrap();
            let mut sum = vec![0f64; n];
            for (i, &y0) in g.ys.iter().enumerate() {
                let w = axis(g.th, g.overlap, i > 0, i + 1 < g.ys.len());
                for (j, v) in w.iter().enumerate() {
                    sum[y0 + j] += v;
                }
            }
            assert!(sum.iter().all(|&s| s > 0.0), "{n} {tile} {ov}");
            assert!((sum[0] - 1.0).abs() < 1e-12 && (sum[n - 1] - 1.0).abs() < 1e-12);
            // Between the first two tiles the ramps are exactly complementary.
            if g.ys.len() > 2 {
                for s in &sum[..g.ys[2]] {
                    assert!((s - 1.0).abs() < 1e-12, "{n} {tile} {ov}: {s}");
                }
            }
        }
    }
}
