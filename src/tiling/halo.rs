//! The overlap a run uses: what the model's reach needs ([`Reach`]), or what the user asked for
//! when it is enough. An exactly local model (the classical solver) needs `2 · halo` and gets its
//! tiles cut at the middle of the overlap, so tiled equals whole; by default it gets just that
//! (0 for the per-pixel solver: no pixel is computed twice). A wide model (the U-Net) gets its
//! default overlap unless told otherwise, and its seams are feathered.

use crate::error::{Error, Result};
use crate::nn::Reach;
use crate::ops::blend::Window;

/// The overlap and window of a run, and a line saying why when the user's overlap was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub overlap: usize,
    pub window: Window,
    /// Set when `requested` was below what the model needs.
    pub raised: Option<String>,
}

/// The overlap for `reach` with `tile` pixels (0 = whole frame) and the user's `requested` one.
pub fn overlap_for(reach: Reach, tile: usize, requested: Option<usize>) -> Result<Overlap> {
    match reach {
        Reach::Wide { overlap } => {
            Ok(Overlap { overlap: requested.unwrap_or(overlap), window: Window::Feather, raised: None })
        }
        Reach::Local { halo } => {
            let need = 2 * halo;
            if tile != 0 && need >= tile {
                return Err(Error::Invalid(format!(
                    "--tile {tile} is too small for this model: its tiles need an overlap of {need} pixels \
                     (twice its {halo}-pixel halo); use --tile {} or more, or 0 for the whole frame",
                    need + 1
                )));
            }
            let raised = requested.filter(|&r| r < need).map(|r| {
                format!("overlap raised from {r} to {need} pixels: the model reads {halo} pixels around each one")
            });
            let overlap = requested.map_or(need, |r| r.max(need));
            Ok(Overlap { overlap, window: Window::Cut, raised })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_models_get_twice_their_halo_and_a_cut() {
        let o = overlap_for(Reach::Local { halo: 0 }, 512, None).unwrap();
        assert_eq!((o.overlap, o.window, o.raised), (0, Window::Cut, None));
        let o = overlap_for(Reach::Local { halo: 6 }, 512, Some(4)).unwrap();
        assert_eq!((o.overlap, o.window), (12, Window::Cut));
        assert!(o.raised.unwrap().contains("from 4 to 12"));
        // More than needed is kept (the cut is still exact), and says nothing.
        assert_eq!(overlap_for(Reach::Local { halo: 6 }, 512, Some(40)).unwrap().overlap, 40);
        assert_eq!(overlap_for(Reach::Local { halo: 6 }, 0, None).unwrap().overlap, 12);
        let e = overlap_for(Reach::Local { halo: 6 }, 12, None).unwrap_err().to_string();
        assert!(e.contains("--tile 13 or more"), "{e}");
    }

    #[test]
    fn wide_models_keep_the_users_overlap_and_feather() {
        let o = overlap_for(Reach::Wide { overlap: 128 }, 512, None).unwrap();
        assert_eq!((o.overlap, o.window, o.raised), (128, Window::Feather, None));
        assert_eq!(overlap_for(Reach::Wide { overlap: 128 }, 64, Some(16)).unwrap().overlap, 16);
    }
}
