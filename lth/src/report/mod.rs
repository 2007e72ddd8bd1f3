//! The report layer: tables (polars), the figure catalogue, figures and plots (plotters), the
//! paper's claims, comparisons for pull requests, goldens. May import `lottery` and below.

pub mod catalog;
pub mod claims;
pub mod compare;
pub mod density;
pub mod figures;
pub mod goldens;
pub mod plot;
pub mod pr_comment;
pub mod table;
