//! The sparsity layer: masks (0/1 per prunable weight: invariants, persistence, the compact
//! layers they allow) and pruning rules as pure functions. May import `nn`, `ops` and `base`.

pub mod at_init;
pub mod masks;
pub mod pruning;
