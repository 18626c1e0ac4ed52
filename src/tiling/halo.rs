//! The tiles a run uses, from the model's reach ([`Reach`]) and what the user asked for.
//!
//! An exactly local model (the classical solver) reads `halo` pixels around each one. Its tiles
//! overlap by `2 · halo` (or more if asked), are cut at the middle of the overlap, and are
//! `--tile` plus the overlap wide, so each gives a core of about `--tile` pixels and a frame
//! that `--tile` divides runs in as many tiles as with no halo. Tiled then equals whole bit for
//! bit; the per-pixel solver (halo 0) computes each pixel once. The residual model is cut the
//! same way: its classical part is exact, its bounded correction gets the halo as context. A wide model (the U-Net) gets
//! `--tile` tiles overlapping by its default unless told otherwise, and its seams are feathered.

use crate::nn::Reach;
use crate::ops::blend::Window;

/// Tile size, overlap and window of a run, and a line saying why when the user's overlap was
/// changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Tile size (0: the whole frame as one tile).
    pub tile: usize,
    pub overlap: usize,
    pub window: Window,
    /// Set when the requested overlap was below what the model needs.
    pub raised: Option<String>,
}

/// The tiles for `reach` given `--tile` (0 = whole frame) and the user's `--overlap`.
pub fn tiles_for(reach: Reach, tile: usize, requested: Option<usize>) -> Tiles {
    match reach {
        Reach::Wide { overlap } => {
            Tiles { tile, overlap: requested.unwrap_or(overlap), window: Window::Feather, raised: None }
        }
        Reach::Local { halo } => {
            let need = 2 * halo;
            let raised = requested.filter(|&r| r < need).map(|r| {
                format!("overlap raised from {r} to {need} pixels: the model reads {halo} pixels around each one")
            });
            let overlap = requested.map_or(need, |r| r.max(need));
            let tile = if tile == 0 { 0 } else { tile + overlap };
            Tiles { tile, overlap, window: Window::Cut, raised }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling::TileGrid;

    #[test]
    fn local_models_get_twice_their_halo_and_a_cut() {
        let t = tiles_for(Reach::Local { halo: 0 }, 512, None);
        assert_eq!((t.tile, t.overlap, t.window, t.raised), (512, 0, Window::Cut, None));
        let t = tiles_for(Reach::Local { halo: 6 }, 512, Some(4));
        assert_eq!((t.tile, t.overlap, t.window), (524, 12, Window::Cut));
        assert!(t.raised.unwrap().contains("from 4 to 12"));
        // More than needed is kept (the cut is still exact), and says nothing.
        let t = tiles_for(Reach::Local { halo: 6 }, 512, Some(40));
        assert_eq!((t.tile, t.overlap, t.raised), (552, 40, None));
        assert_eq!(tiles_for(Reach::Local { halo: 6 }, 0, None).tile, 0);
        assert_eq!(tiles_for(Reach::Local { halo: 6 }, 8, None).tile, 20);
    }

    /// A frame that `--tile` divides runs in as many tiles with a halo as without.
    #[test]
    fn a_halo_adds_no_tiles() {
        for halo in [0, 1, 6, 30] {
            let t = tiles_for(Reach::Local { halo }, 512, None);
            let g = TileGrid::new(1024, 2048, t.tile, t.overlap).unwrap();
            assert_eq!((g.ys.len(), g.xs.len()), (2, 4), "halo {halo}");
        }
    }

    #[test]
    fn wide_models_keep_the_users_overlap_and_feather() {
        let t = tiles_for(Reach::Wide { overlap: 128 }, 512, None);
        assert_eq!((t.tile, t.overlap, t.window, t.raised), (512, 128, Window::Feather, None));
        assert_eq!(tiles_for(Reach::Wide { overlap: 128 }, 64, Some(16)).overlap, 16);
    }
}
