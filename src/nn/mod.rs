//! Models built from the ops, each instantiated per tile size as a [`Plan`].

mod model;
mod plan;
pub mod unet;

pub use model::Model;
pub use plan::Plan;
