//! Models built from the ops: the seed's U-Net.

pub mod unet;
