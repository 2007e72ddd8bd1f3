//! The train layer: masked optimizers, learning-rate schedules, the one training loop with its
//! observers, and progress reporting. May import `sparsity`, `data`, `nn`, `ops` and `base`.

pub mod optim;
pub mod progress;
pub mod schedule;
pub mod training;
