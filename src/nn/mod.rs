//! Models built from the ops, each instantiated per tile size as a [`Plan`].

pub mod cpikan;
pub mod init;
mod model;
mod plan;
pub mod unet;
pub mod unet_train;

pub use model::Model;
pub use plan::Plan;
