//! The lottery layer: ticket runs and their controls (one-shot, reinit, random pruning),
//! checkpoints within a level, rewinding, a plan's trainings as a queue for worker threads,
//! and the instability analysis of a ticket run's levels (beyond the paper). May import
//! `store` and below.

pub mod checkpoint;
pub mod instability;
pub mod procedure;
pub mod rewind;
pub mod work;
