//! Results: row types (`record`), the on-disk layout of runs (`store`), aggregation into
//! tables with polars (`table`), figures with plotters (`plot`), and the figure registry with
//! provenance (`figures`), the paper's claims checked against the tables (`claims`), two tables or two figures folders compared for a pull request (`compare`, `pr_comment`), and which run folders the current specs still use (`inventory`). Polars appears only in `table`, plotters only in `plot`.

pub mod adopt;
pub mod claims;
pub mod compare;
pub mod figures;
pub mod goldens;
pub mod inventory;
pub mod marker;
pub mod plot;
pub mod pr_comment;
pub mod record;
pub mod store;
pub mod table;
