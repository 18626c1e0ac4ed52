//! File formats: npy frames and height maps, safetensors weights.
pub mod npy;
pub mod weights;
pub mod preview;
