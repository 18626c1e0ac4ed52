//! File formats: npy frames and height maps, safetensors weights and checkpoints, PNG previews,
//! BMP bucket images.
pub mod bmp;
pub mod checkpoint;
pub mod npy;
pub mod preview;
pub mod weights;
