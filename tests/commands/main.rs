//! The commands and file formats: the CLI and its errors, image conversion, eval, generate, previews, checkpoints,
//! data safety (aliased outputs, ignored options, signals).
//! One test binary per group (one link, one GPU context per process).

#[path = "../common/mod.rs"]
mod common;

mod checkpoint;
mod cli;
mod convert;
mod corpus;
mod eval;
mod generate;
mod many;
mod preview;
mod region;
mod safety;
mod tiff;
mod weights;
mod x3p;
