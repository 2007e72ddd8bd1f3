//! The CPU kernels the architectures in `models` call, each a candle custom op or a host
//! routine with a summation order fixed by the code (never by the thread count, the vector
//! width or the cache sizes), so results are the same bits on every machine. On other devices
//! (CUDA) the ops fall back to candle's own, and so does the CPU on the generic path
//! (`device`).

pub mod applied;
pub mod batchnorm;
pub mod conv_relu;
pub mod device;
pub mod gemm;
pub(crate) mod host;
pub mod im2col;
pub mod loss;
pub mod pool;
pub mod sparse;
