//! One module per subcommand: what the CLI (and, later, the Python package) runs. Each takes its
//! options, does the job through the layers below, and returns what it did.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod infer;
pub mod train;
