//! How long a plan's trainings will take, before they start: a few training steps and one
//! evaluation are timed on the real data at a handful of pruning levels (masks of the
//! experiment's own per-layer counts, so the same layers run sparse as in training), and every
//! pending training is costed from them. Its only use is the estimate printed before a long
//! run and the weights of the progress bar's overall ETA; nothing it measures reaches a result.

use crate::base::error::Result;
use crate::base::seeds::{stream, Purpose};
use crate::base::spec::RunSpec;
use crate::data::batches::Batches;
use crate::data::Dataset;
use crate::lottery::rewind::start_iteration;
use crate::nn::{self, Architecture};
use crate::sparsity::masks::Mask;
use crate::sparsity::pruning;
use crate::train::optim::MaskedOptimizer;
use crate::train::training::{self, MaskedNetwork, MaskedTrainer};
use candle_core::Device;
use std::time::{Duration, Instant};

/// At most this many levels are timed; the cost of the others is interpolated between them
/// (it falls smoothly with the level: the sparse layers' work is proportional to what they keep).
const TIMED_LEVELS: usize = 5;
/// Steps are timed for about this long per level (at least two).
const STEP_BUDGET: Duration = Duration::from_millis(150);
/// Evaluation is timed on at most this many input values of the validation split.
const EVAL_SAMPLE_VALUES: usize = 2_000_000;

/// Measured seconds per training step and per evaluated image, by level.
pub struct Costs {
    points: Vec<(usize, f64, f64)>,
}

impl Costs {
    /// Times `spec`'s network (its trial's θ0 stands in for trained weights) at up to
    /// [`TIMED_LEVELS`] of `levels`, on `data`, under the caller's thread settings.
    pub fn measure(spec: &RunSpec, levels: &[usize], data: &Dataset, dev: &Device) -> Result<Costs> {
        let arch = Architecture::of(spec.method.model);
        let weights = nn::initial_weights(&arch, &mut stream(0, Purpose::Init));
        let mut distinct: Vec<usize> = levels.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let timed: Vec<usize> = if distinct.len() <= TIMED_LEVELS {
            distinct
        } else {
            let last = distinct.len() - 1;
            let mut picks: Vec<usize> = (0..TIMED_LEVELS).map(|i| distinct[i * last / (TIMED_LEVELS - 1)]).collect();
            picks.dedup();
            picks
        };
        let mut points = Vec::new();
        for level in timed {
            let mask = pruning::prune_oneshot(&arch, &spec.method.pruning, &weights, &Mask::dense(&arch), level);
            let dense = nn::to_params(&arch, &weights, dev)?;
            let masked = MaskedNetwork::new(spec.method.model, &dense, &mask, dev, true)?;
            let mut trainer = MaskedTrainer::new(masked, MaskedOptimizer::for_device((&spec.method.optimizer).into(), dev));
            let step = seconds_per_step(spec, &mut trainer, data)?;
            let image = seconds_per_image(&trainer.masked, data)?;
            points.push((level, step, image));
        }
        Ok(Costs { points })
    }

    /// Estimated seconds of one training of `spec` at `level` (steps and evaluations). A rewound
    /// level trains only from its rewind point on, so it counts those steps and evaluations.
    pub fn training(&self, spec: &RunSpec, level: usize, data: &Dataset) -> f64 {
        let (step, image) = self.at(level);
        let (steps, evaluations) = steps_and_evaluations(spec.iterations, spec.eval_every, start_iteration(spec, level));
        steps as f64 * step + (evaluations * (data.validation.len() + data.test.len())) as f64 * image
    }

    /// Piecewise-linear in the level between timed levels, flat beyond them.
    fn at(&self, level: usize) -> (f64, f64) {
        let Some(&(first, s0, i0)) = self.points.first() else {
            return (0.0, 0.0);
        };
        if level <= first {
            return (s0, i0);
        }
        for pair in self.points.windows(2) {
            let ((l0, s0, i0), (l1, s1, i1)) = (pair[0], pair[1]);
            if level <= l1 {
                let t = (level - l0) as f64 / (l1 - l0).max(1) as f64;
                return (s0 + t * (s1 - s0), i0 + t * (i1 - i0));
            }
        }
        self.points.last().map_or((s0, i0), |&(_, s, i)| (s, i))
    }
}

/// The steps and evaluations of a training that runs iterations `start + 1..=iterations`: one
/// evaluation at `start`, one at each multiple of `every` after it, and one at the end.
fn steps_and_evaluations(iterations: usize, every: usize, start: usize) -> (usize, usize) {
    let (every, start) = (every.max(1), start.min(iterations));
    let end = usize::from(iterations % every != 0);
    (iterations - start, 1 + iterations / every - start / every + end)
}

fn seconds_per_step(spec: &RunSpec, trainer: &mut MaskedTrainer, data: &Dataset) -> Result<f64> {
    let mut batches = Batches::new(&data.train, spec.method.batch_size.min(data.train.len()).max(1), stream(0, Purpose::DataOrder));
    let mut step = || -> Result<()> {
        let (xs, ys) = batches.next_batch()?;
        let step = trainer.step(&xs, &ys, None)?;
        step.loss.to_scalar::<f32>()?;
        Ok(())
    };
    step()?;
    let (start, mut steps) = (Instant::now(), 0);
    while steps < 2 || start.elapsed() < STEP_BUDGET {
        step()?;
        steps += 1;
    }
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

fn seconds_per_image(masked: &MaskedNetwork, data: &Dataset) -> Result<f64> {
    let split = &data.validation;
    let per_image = (split.images.elem_count() / split.len().max(1)).max(1);
    let n = (EVAL_SAMPLE_VALUES / per_image).clamp(1, split.len().max(1));
    let sample = crate::data::Split { images: split.images.narrow(0, 0, n)?, labels: split.labels.narrow(0, 0, n)? };
    let eval = training::EvalSplit::new(masked.net.as_ref(), &sample)?;
    let start = Instant::now();
    training::evaluate(masked.net.as_ref(), &eval)?;
    Ok(start.elapsed().as_secs_f64() / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::progress::human;

    #[test]
    fn costs_interpolate_between_timed_levels_and_stay_flat_beyond() {
        let costs = Costs { points: vec![(0, 2.0, 10.0), (10, 1.0, 5.0), (20, 0.5, 1.0)] };
        assert_eq!(costs.at(0), (2.0, 10.0));
        assert_eq!(costs.at(5), (1.5, 7.5));
        assert_eq!(costs.at(15), (0.75, 3.0));
        assert_eq!(costs.at(30), (0.5, 1.0));
    }

    #[test]
    fn a_rewound_training_counts_only_the_steps_and_evaluations_after_its_rewind_point() {
        assert_eq!(steps_and_evaluations(1000, 100, 0), (1000, 11), "evaluations at 0, 100, ..., 1000");
        assert_eq!(steps_and_evaluations(1000, 300, 0), (1000, 5), "at 0, 300, 600, 900 and the end");
        assert_eq!(steps_and_evaluations(1000, 100, 250), (750, 9), "at 250, 300, ..., 1000");
        assert_eq!(steps_and_evaluations(1000, 100, 300), (700, 8), "at 300 (once), 400, ..., 1000");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(40.4), "40 s");
        assert_eq!(human(750.0), "12 min 30 s");
        assert_eq!(human(3.0 * 3600.0 + 5.0 * 60.0 + 20.0), "3 h 05 min");
    }
}
