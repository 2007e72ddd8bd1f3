//! The use cases behind each `lth` command, one file per group, each command's flags beside the
//! code that runs it (`main.rs` only parses and dispatches). The top layer: it may import every
//! layer below; nothing in the library imports it.

pub mod bench;
pub mod data;
pub mod experiment;
pub mod figures;
pub mod goldens;
pub mod instability;
pub mod options;
pub mod runs;
pub mod tickets;
