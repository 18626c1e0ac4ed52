//! Tiled, streaming inference: the tile grid, and the band-by-band driver that gathers tiles,
//! runs the model on batches of them and blends them back into finished rows.

pub mod grid;
pub mod halo;
pub mod region;
pub mod stream;

pub use grid::TileGrid;
pub use halo::{Tiles, tiles_for};
pub use stream::{StreamOptions, StreamStats, stream};
