//! The tools layer: bench, estimate, gpu-check, export of a ticket as a sparse model, adopt.
//! May import `report` and every layer below.

pub mod adopt;
pub mod bench;
pub mod bench_tables;
pub mod estimate;
pub mod export;
pub mod gpu_check;
