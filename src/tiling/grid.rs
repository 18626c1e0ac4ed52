//! The tile grid: unique tile origins covering an H x W frame with a requested overlap, the last
//! tile of each axis flush with the border. Frames smaller than a tile run as one smaller tile;
//! `tile = 0` runs the whole frame as one tile. Tiles need not be square.

use crate::error::{Error, Result};

/// Unique origins along one axis of `n` pixels: `0, s, 2s, … < n − tile`, then `n − tile`
/// (s = tile − overlap). One origin when the tile covers the axis.
///
/// ```
/// use psi_gpu::tiling::grid::starts;
/// assert_eq!(starts(300, 128, 32), vec![0, 96, 172]);
/// assert_eq!(starts(100, 128, 32), vec![0]);
/// ```
pub fn starts(n: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if tile >= n {
        return vec![0];
    }
    let stride = tile - overlap;
    let mut s: Vec<usize> = (0..n - tile).step_by(stride).collect();
    s.push(n - tile);
    s
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileGrid {
    /// Frame size.
    pub h: usize,
    pub w: usize,
    /// Tile size (every tile has it; at most the frame's).
    pub th: usize,
    pub tw: usize,
    /// Overlap ramp length (0 when one tile covers an axis).
    pub overlap: usize,
    /// Tile origins: rows and columns.
    pub ys: Vec<usize>,
    pub xs: Vec<usize>,
}

impl TileGrid {
    pub fn new(h: usize, w: usize, tile: usize, overlap: usize) -> Result<TileGrid> {
        if h == 0 || w == 0 {
            return Err(Error::Shape(format!("empty frame of {h} x {w} pixels")));
        }
        if tile == 0 {
            return Ok(TileGrid { h, w, th: h, tw: w, overlap: 0, ys: vec![0], xs: vec![0] });
        }
        if overlap >= tile {
            return Err(Error::Invalid(format!("--overlap {overlap} must be smaller than --tile {tile}")));
        }
        let (th, tw) = (tile.min(h), tile.min(w));
        Ok(TileGrid { h, w, th, tw, overlap, ys: starts(h, tile, overlap), xs: starts(w, tile, overlap) })
    }

    pub fn len(&self) -> usize {
        self.ys.len() * self.xs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows that no tile after tile row `i` touches: `[ys[i], ys[i + 1])`, or to the bottom.
    pub fn finished_rows(&self, i: usize) -> std::ops::Range<usize> {
        self.ys[i]..self.ys.get(i + 1).copied().unwrap_or(self.h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::blend::reference::axis;

    #[test]
    fn origins_are_unique_and_cover() {
        for n in 1..300 {
            for (tile, ov) in [(16, 4), (17, 0), (64, 32), (100, 99), (5, 1)] {
                let s = starts(n, tile, ov);
                assert!(s.windows(2).all(|p| p[0] < p[1]), "{n} {tile} {ov}: {s:?}");
                let t = tile.min(n);
                assert_eq!(s[0], 0);
                assert_eq!(s.last().unwrap() + t, n, "last tile flush with the border");
                // Consecutive tiles overlap by at least `ov` (never leave a gap).
                assert!(s.windows(2).all(|p| p[0] + t >= p[1] + ov.min(t)), "{n} {tile} {ov}: {s:?}");
            }
        }
    }

    #[test]
    fn counts_match_the_design_notes() {
        let g = TileGrid::new(9344, 7000, 512, 128).unwrap();
        assert_eq!((g.ys.len(), g.xs.len(), g.len()), (24, 18, 432));
        let g = TileGrid::new(2048, 2048, 512, 128).unwrap();
        assert_eq!(g.len(), 25);
    }

    #[test]
    fn small_frames_and_whole_frame() {
        let g = TileGrid::new(40, 300, 128, 32).unwrap();
        assert_eq!((g.th, g.tw, g.ys.clone()), (40, 128, vec![0]));
        let g = TileGrid::new(40, 300, 0, 32).unwrap();
        assert_eq!((g.th, g.tw, g.len()), (40, 300, 1));
        assert!(TileGrid::new(40, 300, 32, 32).is_err());
        assert!(TileGrid::new(0, 300, 32, 8).is_err());
    }

    #[test]
    fn finished_rows_partition_the_frame() {
        let g = TileGrid::new(300, 50, 128, 32).unwrap();
        let mut next = 0;
        for i in 0..g.ys.len() {
            let r = g.finished_rows(i);
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, 300);
    }

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
