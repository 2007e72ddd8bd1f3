//! The ops layer: the CPU kernels the architectures in `nn` call, each a candle custom op or a host
//! routine with a summation order fixed by the code (never by the thread count, the vector
//! width or the cache sizes), so results are the same bits on every machine. On other devices
//! (CUDA) the ops fall back to candle's own, and so does the CPU on the generic path
//! (`device`). Imports only `base`: no model knowledge.

pub mod applied;
pub mod batchnorm;
pub mod bn_relu;
pub mod conv_relu;
pub mod device;
pub mod gemm;
pub(crate) mod host;
pub mod im2col;
pub mod linear;
pub mod loss;
pub mod math;
pub mod pool;
pub mod sparse;
