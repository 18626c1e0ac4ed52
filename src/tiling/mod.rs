//! Tiled, streaming inference: the tile grid, the gather of tiles from row bands, the blending
//! window and atomic accumulation, and the band-by-band driver.

pub mod blend;
pub mod gather;
pub mod plan;
pub mod stream;
pub mod window;

pub use plan::TileGrid;
pub use stream::{StreamOptions, StreamStats, stream};
