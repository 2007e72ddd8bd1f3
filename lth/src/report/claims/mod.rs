//! The claims report: each claim of docs/paper.md §3 ([`paper::CLAIMS`]), and each claim beyond
//! the paper ([`beyond::BEYOND`]), checked against the aggregated tables of one figures folder,
//! written as `CLAIMS.md` beside them. It reads only the committed tables and their provenance
//! files (for the scale), never run folders, so CI can regenerate it and byte-compare; nothing
//! in it depends on the date, the machine or the path.
//!
//! A claim compares one metric of a subject (a series at one Pm, or at every or some level in a
//! range of Pm) with a reference, as a ratio or a difference, against a bound. Claims on
//! synthetic data or at `smoke` scale, or whose levels the table lacks, are "not tested", with
//! the reason. The claims themselves are data (`paper.rs`, `beyond.rs`); the report's text is `report.rs`.
//!
//! `model.rs` says what a claim is, `check.rs` judges one against a table, `report.rs` writes
//! `CLAIMS.md`, `beside.rs` the deep networks' results beside the paper's for README. May
//! import the report layer's tables (`compare`, `catalog`) and the layers below.

mod beside;
mod beyond;
mod check;
mod model;
mod paper;
mod report;
#[cfg(test)]
mod tests;

pub use beside::beside_paper;
pub use beyond::BEYOND;
pub use model::{Bound, Claim, Compare, Metric, Pm, Reference, Series, Verdict, AT_TOLERANCE, RANGE_TOLERANCE};
pub use paper::CLAIMS;
pub use report::{report_path, write};
