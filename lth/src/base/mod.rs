//! The base layer: errors, seeds, file helpers (atomic writes, digests, tensor files), the
//! experiment specs, the allocator the binaries choose, and shell quoting. Imports no other layer.

pub mod allocator;
pub mod error;
pub mod files;
pub mod seeds;
pub mod shell;
pub mod spec;
