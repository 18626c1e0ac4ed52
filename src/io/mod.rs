//! File formats (and [`bands`]: a frame read in bands, from a file or an [`array_frame`] in memory): npy frames and height maps, safetensors weights and checkpoints, PNG previews,
//! BMP/PNG bucket images, training frame sets — and the one atomic writer every output goes
//! through ([`atomic`]).

pub mod array_convert;
pub mod array_frame;
pub mod atomic;
pub mod bands;
pub mod bmp;
pub mod checkpoint;
pub mod conv_cache;
pub mod frame_source;
pub mod frames;
pub mod height_map;
pub mod images;
pub mod npy;
pub mod preview;
pub mod row_sink;
pub mod tiff;
pub mod tiff_write;
pub mod weights;
pub mod x3p;
