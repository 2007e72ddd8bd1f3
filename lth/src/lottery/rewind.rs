//! Rewinding (late resetting), BEYOND THE ICLR PAPER: Frankle et al. (2019), "Stabilizing the
//! Lottery Ticket Hypothesis", and the authors' later code (open_lth). With
//! `method.rewind_iteration = k > 0` a ticket run saves the dense network's full state θk
//! (weights, biases and BatchNorm's running statistics) after step k of level 0, and every
//! later level, one-shot and random-pruning branch resets its survivors to θk instead of θ0.
//!
//! Decisions, as open_lth makes them:
//! - A rewound level trains from k to the end of the same schedule (iterations k+1..=T), so
//!   its curve starts with an evaluation at k and its iterations are those of the full run.
//! - The learning-rate schedule resumes at k (warmup and drops stay at the same iterations).
//! - The data order resumes at batch k: the batches are the ones the dense network saw after k.
//!   Augmentation and dropout draw from their seeded streams afresh (noise, not order).
//! - The optimizer state (momentum, Adam moments) restarts at zero.
//! - Reinit branches draw fresh weights and train k..T too, so a control differs from its
//!   ticket in the weights only.
//!
//! With k = 0 nothing here runs and every run is bit-identical to the paper's procedure.

use crate::base::error::Result;
use crate::base::spec::{Procedure, RunSpec};
use crate::nn::{Architecture, Weights};
use crate::store::runs::{save_weights, RunDir};
use crate::train::training::{CurvePoint, Observer};

/// The iteration a level's training starts after: the rewind point for every pruned level
/// (and every branch), 0 for the dense level of the ticket run.
pub fn start_iteration(spec: &RunSpec, level: usize) -> usize {
    match spec.procedure {
        Procedure::Ticket if level == 0 => 0,
        _ => spec.rewind_iteration,
    }
}

/// Wraps a level's observer and keeps θk when the dense level of a rewinding ticket run passes
/// its rewind point.
pub struct Snapshot<'a> {
    inner: &'a mut dyn Observer,
    at: Option<usize>,
    pub weights: Option<Weights>,
}

impl<'a> Snapshot<'a> {
    /// Takes θk only where one is needed: level 0 of a ticket run with a rewind point.
    pub fn new(spec: &RunSpec, level: usize, inner: &'a mut dyn Observer) -> Self {
        let wanted = spec.procedure == Procedure::Ticket && level == 0 && spec.rewind_iteration > 0;
        Snapshot { inner, at: wanted.then_some(spec.rewind_iteration), weights: None }
    }

    /// Writes θk into the level's folder (before its marker, which then vouches for it);
    /// fails if training never reached the rewind point.
    pub fn save(&self, run: &RunDir, arch: &Architecture) -> Result<()> {
        match (self.at, &self.weights) {
            (None, _) => Ok(()),
            (Some(_), Some(weights)) => save_weights(weights, arch, &run.rewind_path()),
            (Some(k), None) => Err(crate::Error::Invalid(format!("{}: training never reached the rewind point (iteration {k})", run.dir.display()))),
        }
    }
}

impl Observer for Snapshot<'_> {
    fn on_step(&mut self, iteration: usize) {
        self.inner.on_step(iteration)
    }
    fn on_eval(&mut self, point: &CurvePoint) {
        self.inner.on_eval(point)
    }
    fn snapshot_at(&self) -> Option<usize> {
        self.at
    }
    fn on_snapshot(&mut self, _iteration: usize, weights: Weights) {
        self.weights = Some(weights);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::spec::{DataSource, ExperimentSpec, Scale};

    #[derive(Default)]
    struct Steps(Vec<usize>);

    impl Observer for Steps {
        fn on_step(&mut self, iteration: usize) {
            self.0.push(iteration)
        }
    }

    #[test]
    fn only_the_dense_ticket_level_snapshots_and_the_others_start_at_the_rewind_point() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet_rewind1000.toml");
        let plan = ExperimentSpec::load(&path).unwrap().plan(Scale::Quick, None, DataSource::Real).unwrap();
        // 1,000 of 50,000 iterations is 160 of quick's 8,000.
        let (ticket, reinit) = (&plan[0].spec, plan.iter().find(|r| r.spec.procedure == Procedure::Reinit).unwrap().spec.clone());
        let mut steps = Steps::default();
        assert_eq!(Snapshot::new(ticket, 0, &mut steps).snapshot_at(), Some(160));
        assert_eq!(Snapshot::new(ticket, 3, &mut steps).snapshot_at(), None);
        assert!(steps.0.is_empty(), "wrapping reports nothing by itself");
        assert_eq!((start_iteration(ticket, 0), start_iteration(ticket, 1), start_iteration(&reinit, 3)), (0, 160, 160));
    }
}
