//! The lottery layer: ticket runs and their controls (one-shot, reinit, random pruning),
//! rewinding, and a plan's trainings as a queue for worker threads. May import `store` and below.

pub mod procedure;
pub mod rewind;
pub mod work;
