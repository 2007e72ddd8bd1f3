//! `lth`: the Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) reproduced with candle.
//!
//! Data flow, one module per step:
//!
//! ```text
//! spec      experiments/*.toml → ExperimentSpec (method + sizes per scale) → RunSpec per run
//! datasets  fetch (mirror, checksum, cache) → decode → fixed validation split → seeded batches
//!           (and seeded augmentation)
//! models    architectures over named parameters; seeded Gaussian Glorot init (init); layers
//!           (fully connected, dense or sparse)
//! kernels   the CPU ops the architectures call, in a fixed summation order: matrix products
//!           (gemm), im2col convolution, BatchNorm, pooling, the loss; math: exp/ln/sin
//! masks     Mask: 0/1 per prunable weight, invariants, persistence
//! pruning   layerwise and global magnitude (iterative, one-shot) and random masks, as pure
//!           functions
//! optim     masked Adam and SGD (fused CPU kernel; candle ops elsewhere); schedule: lr per iteration
//! training  the one loop; evaluation every N iterations; observers
//! lottery   ticket runs and their branches (one-shot, reinit, random pruning), resumable;
//!           rewind: late resetting to θk (beyond the paper)
//! work      a plan's trainings as a queue of (run, level) tasks for worker threads;
//!           estimate: their cost, timed before a long run starts
//! export    a trained ticket as a compact sparse model (compressed rows), and its evaluation
//! files     atomic writes, temporary names and digests, below everything that writes files
//! results   record rows → store (run folders) → table (polars) → plot (plotters) → figures
//! ```

pub mod bench;
pub mod datasets;
pub mod error;
pub mod estimate;
pub mod export;
pub mod files;
pub mod gpu_check;
pub mod kernels;
pub mod lottery;
pub mod masks;
pub mod math;
pub mod models;
pub mod optim;
pub mod progress;
pub mod pruning;
pub mod results;
pub mod rewind;
pub mod schedule;
pub mod seeds;
pub mod spec;
pub mod training;
pub mod work;

pub use error::{Error, Result};

/// jemalloc for every binary that links `lth` (the CLI and the tests), configured to keep freed
/// memory and to back it with huge pages. Training allocates and frees the same large buffers
/// every step (a convolution's im2col matrix is 141 MB at batch 60). glibc always maps blocks
/// over 32 MB afresh, and jemalloc by default returns them to the OS; either way every step
/// faults them back in page by page. Measured on the Conv-2 smoke run (synthetic data, one
/// thread, `/usr/bin/time -v`): jemalloc's defaults took 41.1M minor page faults, 71 s of system
/// time and 2 min 27 s wall. This setting took 1.6K faults, 2.7 s and 1 min 12 s.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compile-time options (the prefixed `malloc_conf` symbol of tikv-jemallocator).
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &u8 = &b"thp:always,metadata_thp:always,oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1\0"[0];

/// Parses `--device`: `cpu`, `cuda`, `cuda:N`, `auto` (CUDA when built with it and present),
/// or `cpu-generic`: the CPU running the code a GPU runs (candle's ops, no CPU kernels), for
/// testing that code without a GPU. It chooses that path for the whole process
/// (`kernels::device`), so it is parsed once, before any network is built.
pub fn device(name: &str) -> Result<candle_core::Device> {
    use candle_core::Device;
    match name {
        "cpu" => Ok(Device::Cpu),
        "cpu-generic" => {
            kernels::device::use_generic_path();
            Ok(Device::Cpu)
        }
        "auto" => Ok(Device::cuda_if_available(0)?),
        cuda if cuda.starts_with("cuda") => {
            let ordinal = match cuda.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| Error::Invalid(format!("--device {cuda}: `{n}` is not a GPU number")))?,
                None if cuda == "cuda" => 0,
                None => return Err(Error::Invalid(format!("--device {cuda}: use cpu, cuda, cuda:N, auto or cpu-generic"))),
            };
            Device::new_cuda(ordinal).map_err(|e| {
                Error::Invalid(format!(
                    "--device {cuda}: {e}; use a CUDA build of lth (`cargo xtask cuda-build`, which `cargo xtask reproduce --device cuda` runs) on a machine with a GPU"
                ))
            })
        }
        other => Err(Error::Invalid(format!("--device {other}: use cpu, cuda, cuda:N, auto or cpu-generic"))),
    }
}
