//! Seam-free stitching (`ops::blend`): constant-1 tiles accumulated through the `Blender` the way
//! `tiling::stream` drives it (tile descriptors, batches of tiles, one accumulate dispatch per
//! tile in one pass), on grids with overlap and odd sizes; the accumulated weights against the
//! sums of the CPU window's products (`blend::reference::axis`), on every adapter and precision,
//! then normalize reproduces the constant and resets the weights.

use crate::common::{Tol, assert_close, f32s, gpus, targets};
use psi_gpu::gpu::{Precision, Readback, Tensor, storage};
use psi_gpu::ops::blend::reference::axis;
use psi_gpu::ops::blend::{Blender, Window};
use psi_gpu::tiling::grid::TileGrid;

/// Tile (i, j)'s descriptor as the shaders read it: (y0, x0, block column, neighbour flags: bit 0
/// above, 1 below, 2 left, 3 right).
fn descriptor(g: &TileGrid, i: usize, j: usize) -> [u32; 4] {
    let flags = (i > 0) as u32
        | ((i + 1 < g.ys.len()) as u32) << 1
        | ((j > 0) as u32) << 2
        | ((j + 1 < g.xs.len()) as u32) << 3;
    [g.ys[i] as u32, g.xs[j] as u32, 0, flags]
}

/// Σ over tiles of the separable window `axis(th) ⊗ axis(tw)` at every frame pixel `[h, w]`.
fn window_sums(g: &TileGrid) -> Vec<f64> {
    let mut sum = vec![0.0; g.h * g.w];
    for (i, &y0) in g.ys.iter().enumerate() {
        let wy = axis(g.th, g.overlap, i > 0, i + 1 < g.ys.len());
        for (j, &x0) in g.xs.iter().enumerate() {
            let wx = axis(g.tw, g.overlap, j > 0, j + 1 < g.xs.len());
            for (y, a) in wy.iter().enumerate() {
                for (x, b) in wx.iter().enumerate() {
                    sum[(y0 + y) * g.w + x0 + x] += a * b;
                }
            }
        }
    }
    sum
}

#[test]
fn accumulated_weights_match_the_cpu_window() {
    // (h, w, tile, overlap, channels): odd sizes and strides; one tile row lower than the tile
    // (non-square tiles); a last tile flush with the border; a single tile (all weights 1); an
    // overlap of 11 of 16 (every pixel in up to 4 tiles of a batch, added by consecutive
    // dispatches of one pass: a lost barrier would lose sums).
    let cases = [(37, 53, 16, 5, 2), (11, 45, 16, 7, 1), (40, 23, 12, 3, 3), (20, 17, 32, 8, 1), (21, 38, 16, 11, 2)];
    let batch = 3;
    for (gpu, p) in targets() {
        for &(h, w, tile, overlap, c) in &cases {
            let g = TileGrid::new(h, w, tile, overlap).unwrap();
            let what = format!("{} {p} {h}x{w} tile {tile} overlap {overlap}", gpu.describe());
            let ones = vec![1.0; batch * c * g.th * g.tw];
            let tile_out = Tensor::from_f32(gpu, [batch, c, g.th, g.tw], p, &ones).unwrap();
            let tiles = storage(gpu, "tile descriptors", &vec![0u8; 16 * batch]).unwrap();
            // A ring as high as the frame: every row stays in the accumulators until read.
            let mut blender = Blender::new(gpu, &tile_out, &tiles, w, h, g.overlap, Window::Feather).unwrap();
            for i in 0..g.ys.len() {
                // Batches of up to `batch` tiles of a tile row; the last one may be partial.
                for j0 in (0..g.xs.len()).step_by(batch) {
                    let j1 = (j0 + batch).min(g.xs.len());
                    let desc: Vec<[u32; 4]> = (j0..j1).map(|j| descriptor(&g, i, j)).collect();
                    gpu.queue.write_buffer(&tiles, 0, bytemuck::cast_slice(&desc));
                    let dispatches: Vec<_> = blender.accumulate(j1 - j0).iter().collect();
                    gpu.run(&dispatches).unwrap();
                }
            }
            let want = f32s(&window_sums(&g));
            let tol = Tol { rel: 1e-5, abs: 1e-5, l2: 1e-5 };
            assert_close(&blender.read_weights(gpu).unwrap(), &want, &tol, &format!("{what}: weights"));
            gpu.run(&[blender.normalize(gpu, 0, h)]).unwrap();
            let rows = Readback::f32(gpu, &blender.rows_out.buffer, c * h * w).unwrap();
            assert_close(&rows, &vec![1.0; c * h * w], &tol, &format!("{what}: normalized"));
            assert!(blender.read_weights(gpu).unwrap().iter().all(|&v| v == 0.0), "{what}: weights not reset");
        }
    }
}

/// The cut window: every tile's output holds values that name the tile and the pixel, so the
/// normalised rows show which tile each pixel came from — the one whose core
/// (`TileGrid::core`) holds it, stored as it is (NaN too), never a mix.
#[test]
fn cut_window_takes_each_pixel_from_its_core() {
    let batch = 2;
    for gpu in gpus() {
        for (h, w, tile, overlap) in [(37, 53, 16, 6), (21, 38, 16, 11), (20, 17, 32, 8)] {
            let g = TileGrid::new(h, w, tile, overlap).unwrap().with_window(Window::Cut);
            let what = format!("{} {h}x{w} tile {tile} overlap {overlap}", gpu.describe());
            let tiles = storage(gpu, "tile descriptors", &vec![0u8; 16 * batch]).unwrap();
            let tile_out = Tensor::new(gpu, [batch, 1, g.th, g.tw], Precision::F32, "tile out").unwrap();
            let mut blender = Blender::new(gpu, &tile_out, &tiles, w, h, g.overlap, Window::Cut).unwrap();
            let mut want = vec![f32::INFINITY; h * w];
            for i in 0..g.ys.len() {
                for j0 in (0..g.xs.len()).step_by(batch) {
                    let j1 = (j0 + batch).min(g.xs.len());
                    // Tile (i, j)'s value at tile pixel (y, x): 1000 (i * 64 + j) + y * tw + x,
                    // NaN at its own pixel (1, 1) (inside the core only for the first tiles).
                    let mut out = vec![0.0; batch * g.th * g.tw];
                    for (k, j) in (j0..j1).enumerate() {
                        let [ya, yb, xa, xb] = g.core(i, j).map(|v| v as usize);
                        for y in 0..g.th {
                            for x in 0..g.tw {
                                let v = if (y, x) == (1, 1) {
                                    f32::NAN
                                } else {
                                    (1000 * (i * 64 + j) + y * g.tw + x) as f32
                                };
                                out[(k * g.th + y) * g.tw + x] = v;
                                if (ya..yb).contains(&y) && (xa..xb).contains(&x) {
                                    want[(g.ys[i] + y) * w + g.xs[j] + x] = v;
                                }
                            }
                        }
                    }
                    tile_out.upload(gpu, &out);
                    let desc: Vec<[u32; 4]> = (j0..j1).map(|j| descriptor(&g, i, j)).collect();
                    gpu.queue.write_buffer(&tiles, 0, bytemuck::cast_slice(&desc));
                    blender.set_cores(gpu, &(j0..j1).map(|j| g.core(i, j)).collect::<Vec<_>>());
                    let dispatches: Vec<_> = blender.accumulate(j1 - j0).iter().collect();
                    gpu.run(&dispatches).unwrap();
                }
            }
            assert!(want.iter().all(|v| *v != f32::INFINITY), "{what}: the cores cover the frame");
            gpu.run(&[blender.normalize(gpu, 0, h)]).unwrap();
            let rows = Readback::f32(gpu, &blender.rows_out.buffer, h * w).unwrap();
            let differ = rows.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{what}: {differ} pixels not their core's value");
            assert!(want.iter().any(|v| v.is_nan()), "{what}: a NaN went through");
        }
    }
}
