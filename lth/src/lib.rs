//! `lth`: the Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) reproduced with candle.
//!
//! The library is built in layers, each a folder that imports only the layers below it, with no
//! circle between files (`lth/tests/layers.rs` checks both; docs/architecture.md describes each):
//!
//! ```text
//! base      errors, seeds, file helpers (atomic writes, digests), experiment specs, allocator
//! ops       the CPU kernels and custom ops in a fixed summation order; the device switch
//! nn        architectures over named parameters; layers (linear, BatchNorm); initialisation
//! data      fetch (mirror, checksum, cache), decode, copies, fixed split, augment, batches
//! sparsity  masks (0/1 per prunable weight) and pruning rules
//! train     masked optimizers, learning-rate schedules, the training loop, progress
//! store     run folders, curve records, markers, the inventory of a results folder
//! lottery   ticket runs and their controls, rewinding, the work queue of (run, level) tasks
//! report    tables (polars), figures and plots (plotters), claims, comparisons, goldens
//! tools     bench, estimate, gpu-check, export of sparse tickets, adopt
//! cli       the use case behind each `lth` command (main.rs parses and dispatches)
//! ```

pub mod base;
pub mod cli;
pub mod data;
pub mod lottery;
pub mod nn;
pub mod ops;
pub mod report;
pub mod sparsity;
pub mod store;
pub mod tools;
pub mod train;

pub use base::error::{Error, Result};
