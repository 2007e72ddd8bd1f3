//! Architectures as candle modules over a parameter store keyed by stable names
//! (`fc1.weight`, …), which masks, checkpoints and pruning share. Initial weights come from
//! seeded Rust RNGs (`init`), never from candle's unseedable CPU RNG.
//! The nn layer: architectures as candle modules, their layers (linear, BatchNorm, dropout) and
//! initialisation. May import `ops` and `base`; knows nothing of masks, data or training.

pub mod batchnorm;
pub mod build;
pub mod conv;
pub mod dropout;
pub mod init;
pub mod lenet;
pub mod linear;
pub mod network;
pub mod params;
pub mod resnet;
pub mod vgg;

pub use build::{build, initial_weights};
pub use dropout::Dropout;
pub use network::{autograd_step, Network, Step};
pub(crate) use params::param;
pub use params::{to_params, weights_of, Architecture, LayerKind, ParamInfo, Params, Weights};
