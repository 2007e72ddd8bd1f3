//! Instability analysis (linear mode connectivity), BEYOND THE ICLR PAPER: Frankle, Dziugaite,
//! Roy and Carbin (2020), "Linear Mode Connectivity and the Lottery Ticket Hypothesis". Copies
//! of one network (the dense network at level 0, or the ticket's mask at level L) start from the
//! same weights at iteration k and train to the end of the same schedule with different SGD
//! noise. The test error along the straight line between two trained copies, minus the mean of
//! the two ends' errors, is the error barrier: a network is stable to SGD noise where it is ~0,
//! and the paper finds that IMP's tickets match the dense network where they are stable.
//!
//! Decided here (docs/decisions.md, "Instability"):
//! - The weights at k are θ0 for k = 0, else the dense network's after k steps of the trial's
//!   level-0 training (its data order, its rate schedule): rewinding's θk, masked by the level's
//!   mask. Copies train k+1..=T like a rewound level (the schedule resumes at k, the optimizer
//!   state starts afresh).
//! - SGD noise: copy c draws its data order, augmentation and dropout from a seed of its own
//!   (`Purpose::Instability { copy: c }` under the trial's seed). Two copies given one seed train
//!   to the same bits, so their barrier is exactly 0.
//! - Points α = i/(P−1), i = 0..P−1; θ(α) = θA + α·(θB − θA) per weight in f32 (so equal copies
//!   stay themselves along the path), with the ends taken as θA and θB themselves, so α = 0 and
//!   1 reproduce the copies' own test errors.
//! - Networks with BatchNorm (VGG-19, ResNet-18): interpolating two networks' running
//!   statistics gives statistics of neither, so at every point of the path, the ends included,
//!   they are recomputed as training computes them: reset to PyTorch's initial state (mean 0,
//!   variance 1), then updated (momentum 0.1) by forward passes in training mode over the first
//!   [`STATISTICS_BATCHES`] unaugmented training batches in order (fewer if the training set
//!   holds fewer), with no weight changed.
//!   So for these networks the ends are the copies with recomputed statistics, and α = 0 and 1
//!   reproduce those networks' errors exactly (not the copies' errors with their own statistics).

use crate::base::error::{Error, Result};
use crate::base::seeds::{self, Purpose};
use crate::base::spec::{DataSource, InstabilitySizes, ModelKind, PlannedRun, Procedure, RunSpec};
use crate::data::Dataset;
use crate::lottery::procedure::{self, streams, train_config, trial_seed, Resources};
use crate::nn::{self, Architecture, Weights};
use crate::sparsity::masks::Mask;
use crate::store::record::{read_csv, write_csv};
use crate::store::runs::{load_weights, Store};
use crate::train::progress::Progress;
use crate::train::training::{self, evaluate, CurvePoint, EvalSplit, MaskedNetwork, Observer, Start};
use candle_core::Device;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One point of the path between two copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathPoint {
    pub experiment: String,
    pub scale: String,
    pub data: DataSource,
    pub trial: usize,
    pub level: usize,
    /// Fraction of prunable weights remaining (Pm / 100).
    pub remaining: f64,
    /// The iteration the copies start from (k).
    pub rewind: usize,
    /// The two copies, "a-b".
    pub pair: String,
    pub alpha: f64,
    pub test_error: f64,
}

/// What an analysis asks for: which level of the ticket run, from which iteration, how many
/// copies and points.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub level: usize,
    pub rewind: usize,
    pub copies: usize,
    pub points: usize,
}

/// The error barrier of a path's test errors: the largest minus the mean of the two ends.
pub fn barrier(errors: &[f64]) -> f64 {
    match (errors.first(), errors.last()) {
        (Some(first), Some(last)) => errors.iter().copied().fold(f64::NEG_INFINITY, f64::max) - (first + last) / 2.0,
        _ => f64::NAN,
    }
}

/// θ(α) = a + α·(b − a) for every parameter, which is (1−α)·a + α·b written so that two equal
/// networks give themselves at every α; a and b themselves at the ends.
pub fn interpolate(a: &Weights, b: &Weights, alpha: f64) -> Weights {
    if alpha == 0.0 {
        return a.clone();
    }
    if alpha == 1.0 {
        return b.clone();
    }
    let alpha = alpha as f32;
    a.iter().map(|(name, va)| (name.clone(), va.iter().zip(&b[name]).map(|(x, y)| x + alpha * (y - x)).collect())).collect()
}

/// The seed of copy `copy`'s streams in trial `spec.trial`.
pub fn copy_seed(spec: &RunSpec, copy: usize) -> u64 {
    seeds::stream(trial_seed(spec), Purpose::Instability { copy }).next_u64()
}

/// Keeps the network's state after step k and ends the training there.
struct StopAt {
    at: usize,
    weights: Option<Weights>,
}

impl Observer for StopAt {
    fn snapshot_at(&self) -> Option<usize> {
        Some(self.at)
    }
    fn on_snapshot(&mut self, _iteration: usize, weights: Weights) {
        self.weights = Some(weights);
    }
    fn stop_at_snapshot(&self) -> bool {
        true
    }
}

/// The dense network after `k` steps of the trial's level-0 training (θ0 for k = 0).
pub fn dense_at(spec: &RunSpec, theta0: &Weights, k: usize, data: &Dataset, dev: &Device) -> Result<Weights> {
    if k == 0 {
        return Ok(theta0.clone());
    }
    let arch = Architecture::of(spec.method.model);
    let params = nn::to_params(&arch, theta0, dev)?;
    let mut stop = StopAt { at: k, weights: None };
    let dense = Mask::dense(&arch);
    training::train(
        Start { model: spec.method.model, params: &params, mask: &dense },
        data,
        &train_config(spec, 0),
        streams(spec, trial_seed(spec)),
        &mut stop,
    )?;
    stop.weights.ok_or_else(|| Error::Invalid(format!("iteration {k} is past the end of training ({} iterations)", spec.iterations)))
}

/// Trains one copy from `start` (the weights at iteration `k`) under `mask` to the end, with
/// the streams of `seed`; its final weights and curve.
pub fn train_copy(
    spec: &RunSpec,
    (mask, start, k): (&Mask, &Weights, usize),
    seed: u64,
    data: &Dataset,
    dev: &Device,
    observer: &mut dyn Observer,
) -> Result<(Weights, Vec<CurvePoint>)> {
    let arch = Architecture::of(spec.method.model);
    let params = nn::to_params(&arch, start, dev)?;
    let curve = training::train(Start { model: spec.method.model, params: &params, mask }, data, &train_config(spec, k), streams(spec, seed), observer)?;
    Ok((nn::weights_of(&params)?, curve))
}

/// Training batches whose statistics replace a BatchNorm network's running statistics at each
/// point of a path: momentum 0.1 leaves 0.9^50 ≈ 0.5% of the reset state in them. A training
/// set of fewer batches (smoke scales) is passed once: repeating batches adds nothing new.
pub const STATISTICS_BATCHES: usize = 50;

/// Whether `model` has BatchNorm layers, whose running statistics a path recomputes.
pub fn has_batchnorm(model: ModelKind) -> bool {
    matches!(model, ModelKind::Vgg19 | ModelKind::Resnet18)
}

/// The test error at `points` evenly spaced points between `a` and `b` (α from 0 to 1), each
/// evaluated as training evaluates (the masked network, its sparse kernels); a BatchNorm
/// network's running statistics recomputed first at every point (see the module comment).
pub fn path_errors(spec: &RunSpec, mask: &Mask, (a, b): (&Weights, &Weights), points: usize, data: &Dataset, dev: &Device) -> Result<Vec<(f64, f64)>> {
    let model = spec.method.model;
    let arch = Architecture::of(model);
    (0..points)
        .map(|i| {
            let alpha = if points == 1 { 0.0 } else { i as f64 / (points - 1) as f64 };
            let weights = interpolate(a, b, alpha);
            let params = if has_batchnorm(model) { with_recomputed_statistics(spec, mask, weights, data, dev)? } else { nn::to_params(&arch, &weights, dev)? };
            let masked = MaskedNetwork::new(model, &params, mask, dev, true)?;
            let (_, accuracy) = evaluate(masked.net.as_ref(), &EvalSplit::new(masked.net.as_ref(), &data.test)?)?;
            Ok((alpha, 1.0 - accuracy))
        })
        .collect()
}

/// `weights` (of a BatchNorm network) with their running statistics recomputed as a path
/// point's are: reset, then [`STATISTICS_BATCHES`] training-mode passes (see the module comment).
pub fn recompute_statistics(spec: &RunSpec, mask: &Mask, weights: Weights, data: &Dataset, dev: &Device) -> Result<Weights> {
    nn::weights_of(&with_recomputed_statistics(spec, mask, weights, data, dev)?)
}

fn with_recomputed_statistics(spec: &RunSpec, mask: &Mask, mut weights: Weights, data: &Dataset, dev: &Device) -> Result<nn::Params> {
    reset_statistics(&mut weights);
    let params = nn::to_params(&Architecture::of(spec.method.model), &weights, dev)?;
    // The network shares the parameters' storage: its passes write the statistics there.
    let masked = MaskedNetwork::new(spec.method.model, &params, mask, dev, true)?;
    let (train, batch) = (&data.train, spec.method.batch_size);
    let per_pass = train.len() / batch.max(1);
    if per_pass == 0 {
        return Err(Error::Invalid(format!("{} training examples cannot fill a batch of {batch} to recompute BatchNorm statistics", train.len())));
    }
    for b in 0..STATISTICS_BATCHES.min(per_pass) {
        masked.net.forward_t(&train.images.narrow(0, b * batch, batch)?, None)?;
    }
    Ok(params)
}

/// Running means to 0 and variances to 1: PyTorch's initial state, as `nn::batchnorm` starts.
fn reset_statistics(weights: &mut Weights) {
    for (name, values) in weights.iter_mut() {
        if name.ends_with(".running_mean") {
            values.fill(0.0);
        } else if name.ends_with(".running_var") {
            values.fill(1.0);
        }
    }
}

/// Where an analysis of `spec`'s ticket run is kept: one file per (level, k, copies, points).
pub fn table_path(store: &Store, spec: &RunSpec, request: &Request) -> PathBuf {
    let Request { level, rewind, copies, points } = *request;
    store.root.join("instability").join(&spec.id().0).join(format!("level-{level:02}-from-{rewind}-copies-{copies}-points-{points}.csv"))
}

/// Runs (or reads back, if its table exists) one analysis of the ticket run `spec`: the
/// copies trained, every pair's path evaluated. The table is written once all of it is done,
/// so an interrupted analysis starts again from its copies.
pub fn analyse(spec: &RunSpec, request: &Request, store: &Store, data: &Dataset, dev: &Device, progress: &Progress) -> Result<Vec<PathPoint>> {
    let Request { level, rewind, copies, points } = *request;
    if spec.procedure != Procedure::Ticket {
        return Err(Error::Invalid(format!("instability reads a ticket run, not `{}`", spec.procedure.as_str())));
    }
    if copies < 2 || points < 2 {
        return Err(Error::Invalid(format!("instability needs at least 2 copies and 2 points (asked: {copies} copies, {points} points)")));
    }
    if rewind >= spec.iterations {
        return Err(Error::Invalid(format!("--rewind {rewind} is not before the end of training ({} iterations at this scale)", spec.iterations)));
    }
    let path = table_path(store, spec, request);
    if path.exists() {
        return read_table(&path, request);
    }
    let arch = Architecture::of(spec.method.model);
    let run = store.existing(spec);
    let command = format!("lth run experiments/{}.toml --scale {} --trial {}", spec.experiment, spec.scale.as_str(), spec.trial);
    if !run.has_init() || (level > 0 && !procedure::has_trained_mask(&run, level)) {
        return Err(Error::Invalid(format!("{}: theta0 or the mask of level {level} is not on this machine; run `{command}` first", run.dir.display())));
    }
    let theta0 = load_weights(&run.init_path(), &arch)?;
    let mask = if level == 0 { Mask::dense(&arch) } else { procedure::trained_mask(&run, level, &arch, &spec.method.pruning)? };
    let start = dense_at(spec, &theta0, rewind, data, dev)?;
    let mut trained = Vec::new();
    for copy in 0..copies {
        let label = format!("{} level {level} (Pm {:.1}%) from iteration {rewind}, copy {copy}", run.id, 100.0 * mask.remaining());
        let mut observer = progress.level(label, 1, spec.iterations - rewind);
        trained.push(train_copy(spec, (&mask, &start, rewind), copy_seed(spec, copy), data, dev, &mut observer)?.0);
    }
    let mut rows = Vec::new();
    for a in 0..copies {
        for b in a + 1..copies {
            for (alpha, test_error) in path_errors(spec, &mask, (&trained[a], &trained[b]), points, data, dev)? {
                rows.push(PathPoint {
                    experiment: spec.experiment.clone(),
                    scale: spec.scale.as_str().into(),
                    data: spec.data,
                    trial: spec.trial,
                    level,
                    remaining: mask.remaining(),
                    rewind,
                    pair: format!("{a}-{b}"),
                    alpha,
                    test_error,
                });
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
    }
    write_csv(&rows, &path)?;
    Ok(rows)
}

/// The analyses `sizes` asks of the ticket runs in `plan`: each trial's, at every level and
/// rewind point.
pub fn requests<'p>(plan: &'p [PlannedRun], sizes: &InstabilitySizes) -> Vec<(&'p RunSpec, Request)> {
    let mut out = Vec::new();
    for planned in plan.iter().filter(|p| p.spec.procedure == Procedure::Ticket) {
        for &level in &sizes.levels {
            for &rewind in &sizes.rewind {
                out.push((&planned.spec, Request { level, rewind, copies: sizes.copies, points: sizes.points }));
            }
        }
    }
    out
}

/// Runs every analysis of `plan` that is not finished, `jobs` at a time (one thread each, its
/// copies one after another); the ticket runs must be finished first.
pub fn run_all(plan: &[PlannedRun], sizes: &InstabilitySizes, jobs: usize, on: Resources) -> Result<()> {
    let Resources { store, data, dev, .. } = on;
    let pending: Vec<(&RunSpec, Request)> = requests(plan, sizes).into_iter().filter(|(spec, r)| !table_path(store, spec, r).exists()).collect();
    if pending.is_empty() {
        return Ok(());
    }
    // theta0 before any worker reads it: a clone keeps only the ticket's curves.
    for (spec, _) in &pending {
        procedure::draw_theta0(spec, store)?;
    }
    let progress = Progress::new((pending.len() * sizes.copies) as u64, pending.len() * sizes.copies);
    let next = AtomicUsize::new(0);
    let outcome = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.clamp(1, pending.len()))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some((spec, request)) = pending.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return Ok(());
                        };
                        analyse(spec, request, store, data, dev, &progress)?;
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(Error::Invalid("an instability worker panicked".into())))).collect::<Result<Vec<()>>>()
    });
    progress.finish();
    outcome.map(|_| ())
}

/// The finished analyses of `plan` (their path points), and how many of how many planned.
pub fn finished(store: &Store, plan: &[PlannedRun], sizes: &InstabilitySizes) -> Result<(Vec<PathPoint>, usize, usize)> {
    let all = requests(plan, sizes);
    let mut points = Vec::new();
    let mut done = 0;
    for (spec, request) in &all {
        let path = table_path(store, spec, request);
        if path.exists() {
            points.extend(read_table(&path, request)?);
            done += 1;
        }
    }
    Ok((points, done, all.len()))
}

/// A finished analysis's table, refused by name unless it holds every point of every pair of
/// `request` in order (a power cut can leave a file cut short: tables are not fsynced).
fn read_table(path: &std::path::Path, request: &Request) -> Result<Vec<PathPoint>> {
    let rows: Vec<PathPoint> = read_csv(path)?;
    let Request { level, rewind, copies, points } = *request;
    let pairs: Vec<String> = (0..copies).flat_map(|a| (a + 1..copies).map(move |b| format!("{a}-{b}"))).collect();
    let complete = rows.len() == pairs.len() * points
        && rows.iter().enumerate().all(|(i, r)| r.level == level && r.rewind == rewind && r.pair == pairs[i / points] && r.test_error.is_finite());
    if !complete {
        return Err(Error::Invalid(format!(
            "{}: damaged or cut short ({} rows where {} pairs of {points} points belong); remove it, and the next run redoes this analysis",
            path.display(),
            rows.len(),
            pairs.len()
        )));
    }
    Ok(rows)
}

/// Each pair's barrier, in pair order.
pub fn barriers(rows: &[PathPoint]) -> Vec<(String, f64)> {
    let mut pairs: Vec<String> = rows.iter().map(|r| r.pair.clone()).collect();
    pairs.dedup();
    pairs
        .into_iter()
        .map(|pair| {
            let errors: Vec<f64> = rows.iter().filter(|r| r.pair == pair).map(|r| r.test_error).collect();
            let b = barrier(&errors);
            (pair, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_starts_and_ends_at_the_two_networks_and_is_linear_between() {
        let a: Weights = [("w".to_string(), vec![1.0, -2.0, 0.0, 0.1])].into();
        let b: Weights = [("w".to_string(), vec![3.0, 2.0, 0.0, 0.7])].into();
        assert_eq!(interpolate(&a, &b, 0.0), a);
        assert_eq!(interpolate(&a, &b, 1.0), b);
        let mid = &interpolate(&a, &b, 0.5)["w"];
        for (got, want) in mid.iter().zip([2.0f32, 0.0, 0.0, 0.4]) {
            assert!((got - want).abs() <= 1e-6, "{mid:?}");
        }
        // Equal networks stay themselves, bit for bit, at every point.
        for i in 0..=10 {
            assert_eq!(interpolate(&a, &a, i as f64 / 10.0), a);
        }
    }

    #[test]
    fn the_barrier_is_the_peak_over_the_mean_of_the_ends() {
        assert_eq!(barrier(&[0.1, 0.5, 0.3]), 0.5 - 0.2);
        assert_eq!(barrier(&[0.2, 0.2, 0.2]), 0.0);
        assert!(barrier(&[]).is_nan());
    }
}
