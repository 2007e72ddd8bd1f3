//! The store layer: run folders (content-addressed by spec), curve records, markers that vouch
//! for files, and the inventory of a results folder. May import `train` and the layers below.

pub mod inventory;
pub mod marker;
pub mod record;
pub mod runs;
