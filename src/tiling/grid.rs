//! The tile grid: unique tile origins covering an H x W frame with a requested overlap, the last
//! tile of each axis flush with the border. Frames smaller than a tile run as one smaller tile;
//! `tile = 0` runs the whole frame as one tile. Tiles need not be square. With the cut window
//! each tile also has a *core* ([`TileGrid::core`]): the cores partition the frame, each cut at
//! the middle of its overlap with the neighbour.

use crate::error::{Error, Result};
use crate::ops::blend::Window;

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
    /// How the tiles covering a pixel make its value (feather unless set).
    pub window: Window,
}

impl TileGrid {
    pub fn new(h: usize, w: usize, tile: usize, overlap: usize) -> Result<TileGrid> {
        if h == 0 || w == 0 {
            return Err(Error::Shape(format!("empty frame of {h} x {w} pixels")));
        }
        if tile == 0 {
            return Ok(TileGrid { h, w, th: h, tw: w, overlap: 0, ys: vec![0], xs: vec![0], window: Window::Feather });
        }
        if overlap >= tile {
            return Err(Error::Invalid(format!("--overlap {overlap} must be smaller than --tile {tile}")));
        }
        let (th, tw) = (tile.min(h), tile.min(w));
        let (ys, xs) = (starts(h, tile, overlap), starts(w, tile, overlap));
        Ok(TileGrid { h, w, th, tw, overlap, ys, xs, window: Window::Feather })
    }

    /// The same grid, stitched with `window`.
    pub fn with_window(self, window: Window) -> TileGrid {
        TileGrid { window, ..self }
    }

    /// Tile (i, j)'s core `(y_lo, y_hi, x_lo, x_hi)` in tile pixels: between two neighbouring
    /// tiles the frame is cut at the middle of their overlap (`⌊(start₂ + start₁ + tile) / 2⌋`),
    /// so a core keeps at least `⌊overlap / 2⌋` pixels from every side that has a neighbour, and
    /// the cores of all tiles partition the frame.
    pub fn core(&self, i: usize, j: usize) -> [u32; 4] {
        let axis = |s: &[usize], k: usize, t: usize| {
            let lo = if k > 0 { (s[k - 1] + s[k] + t) / 2 - s[k] } else { 0 };
            let hi = if k + 1 < s.len() { (s[k] + s[k + 1] + t) / 2 - s[k] } else { t };
            [lo as u32, hi as u32]
        };
        let ([y_lo, y_hi], [x_lo, x_hi]) = (axis(&self.ys, i, self.th), axis(&self.xs, j, self.tw));
        [y_lo, y_hi, x_lo, x_hi]
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

    /// Every pixel lies in exactly one core, at least ⌊overlap / 2⌋ from its tile's sides that
    /// have a neighbour (a core never starts above its tile, so the rows a tile row finishes
    /// hold no later tile's core).
    #[test]
    fn cores_partition_the_frame() {
        for (h, w, tile, ov) in
            [(300, 250, 128, 32), (97, 40, 13, 12), (64, 64, 64, 8), (250, 33, 128, 32), (9, 5, 4, 2)]
        {
            let g = TileGrid::new(h, w, tile, ov).unwrap();
            let mut owners = vec![0u8; h * w];
            for (i, &y0) in g.ys.iter().enumerate() {
                for (j, &x0) in g.xs.iter().enumerate() {
                    let [ya, yb, xa, xb] = g.core(i, j).map(|v| v as usize);
                    assert!(ya < yb && yb <= g.th && xa < xb && xb <= g.tw, "{h}x{w} {tile}/{ov} ({i},{j})");
                    let margin = ov / 2;
                    assert!(i == 0 || ya >= margin, "{h}x{w} {tile}/{ov}: core starts {ya} rows in");
                    assert!(i + 1 == g.ys.len() || g.th - yb >= margin, "{h}x{w} {tile}/{ov}: {yb} of {}", g.th);
                    assert!(j == 0 || xa >= margin);
                    assert!(j + 1 == g.xs.len() || g.tw - xb >= margin);
                    for y in y0 + ya..y0 + yb {
                        for x in x0 + xa..x0 + xb {
                            owners[y * w + x] += 1;
                        }
                    }
                }
            }
            assert!(owners.iter().all(|&n| n == 1), "{h}x{w} {tile}/{ov}: a pixel in {:?} cores", owners.iter().max());
        }
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
