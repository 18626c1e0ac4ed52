//! Optimization: Adam on flat f32 master weights ([`adam`]; its kernels are `ops::adam`), dynamic
//! loss scaling ([`scaler`]), learning-rate schedules ([`schedule`]) and L-BFGS on the host ([`lbfgs`]).
//!
//! One training step with gradient accumulation over `N` micro-batches (PyTorch AMP order):
//! ```text
//! record adam.zero_grad()
//! N times: model forward; loss.backward() (dL/dh · scale · 1/N, see ops::loss); tape backward
//!          accumulating into params.grads
//! adam.step(gpu, &mut scaler, schedule.lr(base_lr, k))   // check → clip → Adam (skipped on inf)
//! ```

pub mod adam;
pub mod lbfgs;
pub mod scaler;
pub mod schedule;

pub use adam::{Adam, AdamConfig, HostAdam, ParamEntry, ParamLayout, Params, StepReport};
pub use scaler::{LossScaler, ScalerConfig};
pub use schedule::LrSchedule;
