//! The lottery-ticket procedure (docs/paper.md §1, Strategy 1) and its controls, one level at a
//! time, resumable. A ticket run: theta0 → train → prune the smallest surviving weights → reset
//! the survivors to theta0 → train → … Its branches read the ticket run of the same trial:
//! one-shot prunes its trained dense network once per target level; reinit keeps its masks with
//! fresh weights; random pruning draws masks with its per-layer counts and starts from theta0.
//! With a rewind point (`rewind`, beyond the paper) θk takes theta0's place after level 0.

use crate::base::error::{Error, IoContext, Result};
use crate::base::files::{damaged_tensors, write_atomic};
use crate::base::seeds::{self, Purpose};
use crate::base::spec::{PlannedRun, Procedure, PruningSpec, RunSpec};
use crate::data::augment::Augment;
use crate::data::batches::Batches;
use crate::data::Dataset;
use crate::lottery::checkpoint::{self, Checkpointing, Saved};
use crate::lottery::rewind;
use crate::nn::{self, Architecture, Weights};
use crate::sparsity::masks::Mask;
use crate::sparsity::{at_init, pruning};
use crate::store::record::{write_csv, CurveKey, CurveRecord};
use crate::store::runs::{save_weights, RunDir, Store};
use crate::train::progress::Progress;
use crate::train::training::{self, Observer, Start, Streams, TrainConfig};
use candle_core::Device;

/// Where levels train: the run store, the images, the device and the progress display.
#[derive(Clone, Copy)]
pub struct Resources<'a> {
    pub store: &'a Store,
    pub data: &'a Dataset,
    pub dev: &'a Device,
    pub progress: &'a Progress,
}

/// Trains `level` of the run `spec` unless it is finished; `redo`: train it again if it kept
/// only its curve (see `work`). The level it reads must have its weights (`work` schedules it
/// so); `units` is the training's weight in the overall progress.
pub fn run_level(spec: &RunSpec, level: usize, redo: bool, units: u64, on: Resources) -> Result<()> {
    let Resources { store, data, dev, progress } = on;
    let arch = Architecture::of(spec.method.model);
    let run = store.open(spec)?;
    // One process trains a level at a time: a second `lth run` on the same folder waits here for
    // the first, then finds the level finished (or, if the first died, resumes its checkpoint).
    let lock = run.lock_level(level, |path| {
        progress.line(format!("{} level {level}: another process is training it (it holds {}); waiting for it", run.id, path.display()))
    })?;
    if lock.is_none() && !NO_LOCKS_TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
        progress.line(format!(
            "warning: the file system of {} has no file locks, so two `lth run`s on this folder at once would both train the same levels (to the same bits)",
            run.dir.display()
        ));
    }
    // A level kept only as its curve trains again for the weights later trainings read. Its
    // curve and marker stay until the new files are written, so figures keep drawing it
    // meanwhile; the new curve is then checked against the recorded one.
    let retrain = redo && run.is_done(level) && !run.has_weights(level);
    if run.is_done(level) && !retrain {
        if lock.as_ref().is_some_and(|held| held.waited) {
            report_finished(progress, format!("{} level {level}, finished by the other process", run.id), units, &run, level)?;
        }
        return Ok(());
    }
    let recorded = if retrain { Some(run.read_level_file(level, &run.curve_path(level))?) } else { None };
    let trunk = match spec.procedure {
        Procedure::Ticket => run.clone(),
        _ => store.existing(&spec.trunk()),
    };
    let theta0 = initial_weights(spec, &arch, &trunk)?;
    if let Some(twin) = twin_with_level(store, spec, level)? {
        match run.copy_level_from(&twin, level, &spec.experiment) {
            Ok(()) => {
                let label = format!("{} level {level} copied from {} (the same training under another experiment's name)", run.id, twin.id);
                return report_finished(progress, label, units, &run, level);
            }
            Err(e) => progress.line(format!("warning: {} level {level} could not be copied from {} ({e}); training it", run.id, twin.id)),
        }
    }
    // Pruning at initialization scores data (SNIP), which the reset rules of `level_start` never read.
    let (mask, start) = if spec.procedure.at_init() {
        (at_init_mask(spec, &arch, &theta0, level, data)?, theta0.clone())
    } else {
        level_start(spec, &arch, &run, &trunk, &theta0, level)?
    };
    let resume = checkpoint_to_resume(spec, &run, level, &arch, progress)?;
    let mut label = format!("{} level {level} (Pm {:.1}%)", run.id, 100.0 * mask.remaining());
    // A rewound level trains from its rewind point, a resumed one from its checkpoint: its
    // progress spreads over the steps it takes.
    let mut first = rewind::start_iteration(spec, level);
    if let Some(saved) = &resume {
        first = saved.state.iteration;
        progress.line(format!("{label}: resuming from its checkpoint at iteration {first} of {}", spec.iterations));
        label.push_str(&format!(", resumed at iteration {first}"));
    }
    let mut level_progress = progress.level(label, units, spec.iterations - first);
    let mut snapshot = rewind::Snapshot::new(spec, level, &mut level_progress);
    let mut observer = Checkpointing::new(&mut snapshot, run.checkpoint_path(level), &arch, progress);
    let curve = train_level(spec, (&run, level), (&mask, &start), resume, data, dev, &mut observer)?;
    drop(observer);
    drop(snapshot);
    drop(level_progress);
    // Levels are deterministic: a retrained level that differs from its record is a bug.
    if let Some(recorded) = recorded {
        if recorded != run.read_level_file(level, &run.curve_path(level))? {
            progress.line(format!(
                "warning: {} level {level}, trained again for its weights, gave a curve other than the one recorded: same seed, other bits; the new one replaces it (please report this)",
                run.id
            ));
        }
    }
    // Recorded as trained (the curve says what happened), but never drawn as a result.
    if let Some(iteration) = crate::store::record::diverged_at(&curve) {
        progress.line(format!(
            "warning: {} level {level} diverged (NaN or infinite loss from iteration {iteration}); figures and claims leave it out and say so",
            run.id
        ));
    }
    Ok(())
}

/// Whether the warning that a results folder has no file locks was printed (once a process).
static NO_LOCKS_TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Counts and reports a level finished without training it here (copied from a twin, or
/// trained by another process meanwhile) like a finished training, with its final accuracy.
fn report_finished(progress: &Progress, label: String, units: u64, run: &RunDir, level: usize) -> Result<()> {
    let mut done = progress.level(label, units, 1);
    if let Some(last) = run.load_curve(level)?.last() {
        done.on_eval(&last.point);
    }
    Ok(())
}

/// The other runs in `store` whose training is this one's: their spec differs at most in the
/// experiment's name. Nothing a training computes reads the name (seeds come from the spec's
/// seed and the trial), so their finished levels are the files this run's would be, bit for
/// bit, except the curve's `experiment` column: specs that share a ticket (`conv2_at_init` and
/// `conv2_lmc` train `conv2`'s) train it once per results folder.
pub fn twins(store: &Store, spec: &RunSpec) -> Result<Vec<RunDir>> {
    let id = spec.id();
    let mut twins = Vec::new();
    for other in store.run_dirs()? {
        // A folder whose spec cannot be read is not this run's twin; `lth runs` names it.
        let Some(theirs) = (other.id != id).then(|| other.spec().ok()).flatten() else { continue };
        if theirs.experiment != spec.experiment && (RunSpec { experiment: spec.experiment.clone(), ..theirs }) == *spec {
            twins.push(other);
        }
    }
    Ok(twins)
}

/// A twin (see [`twins`]) that finished `level` with its weights.
fn twin_with_level(store: &Store, spec: &RunSpec, level: usize) -> Result<Option<RunDir>> {
    Ok(twins(store, spec)?.into_iter().find(|twin| twin.has_weights(level)))
}

/// Trains every unfinished level of `planned` in order, on this thread (tests and single runs;
/// `work` schedules a whole plan).
pub fn run(planned: &PlannedRun, store: &Store, data: &Dataset, dev: &Device, progress: &Progress) -> Result<()> {
    let on = Resources { store, data, dev, progress };
    // theta0 first, as before the work queue: a ticket run whose levels are finished still
    // redraws a removed theta0 (`lth redo …/init.safetensors`).
    if planned.spec.procedure == Procedure::Ticket {
        initial_weights(&planned.spec, &Architecture::of(planned.spec.method.model), &store.open(&planned.spec)?)?;
    }
    planned.levels.iter().try_for_each(|&level| run_level(&planned.spec, level, false, 1, on))
}

/// Draws and saves theta0 of the ticket run `spec` if it is not on this machine (a fresh clone
/// keeps only curves): before any worker starts, so that a branch never looks for it while the
/// ticket's worker is still writing it.
pub fn draw_theta0(spec: &RunSpec, store: &Store) -> Result<()> {
    initial_weights(spec, &Architecture::of(spec.method.model), &store.open(spec)?).map(drop)
}

/// theta0 of the trial: drawn and saved by the ticket run, read by its branches.
fn initial_weights(spec: &RunSpec, arch: &Architecture, trunk: &RunDir) -> Result<Weights> {
    if trunk.has_init() {
        return trunk.load_init(arch);
    }
    if spec.procedure != Procedure::Ticket {
        return Err(missing_trunk(spec, trunk, "init.safetensors"));
    }
    let mut rng = seeds::stream(trial_seed(spec), Purpose::Init);
    let theta0 = nn::initial_weights(arch, &mut rng);
    save_weights(&theta0, arch, &trunk.init_path())?;
    trunk.mark_init()?;
    Ok(theta0)
}

/// The mask of `level` and the weights training starts from (before masking). Public so that
/// tests can check the reset rule.
pub fn level_start(spec: &RunSpec, arch: &Architecture, run: &RunDir, trunk: &RunDir, theta0: &Weights, level: usize) -> Result<(Mask, Weights)> {
    let pruning = &spec.method.pruning;
    let trunk_finished = |l: usize| if trunk.is_done(l) { Ok(()) } else { Err(missing_trunk(spec, trunk, &format!("level-{l:02}"))) };
    // What pruned levels reset their survivors to: theta0 (the paper), or θk when rewinding.
    let reset = || -> Result<Weights> {
        if spec.rewind_iteration == 0 {
            return Ok(theta0.clone());
        }
        if !trunk.is_done(0) {
            return Err(missing_trunk(spec, trunk, "level-00/rewind.safetensors"));
        }
        trunk.load_rewind(arch)
    };
    Ok(match spec.procedure {
        Procedure::Ticket if level == 0 => (Mask::dense(arch), theta0.clone()),
        Procedure::Ticket => (ticket_mask(run, level, arch, pruning)?, reset()?),
        Procedure::Oneshot => {
            trunk_finished(0)?;
            let (dense, trained) = (trained_mask(trunk, 0, arch, pruning)?, trunk.load_final(0, arch)?);
            (pruning::prune_oneshot(arch, pruning, &trained, &dense, level), reset()?)
        }
        Procedure::Reinit => {
            trunk_finished(level)?;
            let mask = trained_mask(trunk, level, arch, pruning)?;
            let mut rng = seeds::stream(trial_seed(spec), Purpose::Reinit { copy: spec.copy, level });
            (mask, nn::initial_weights(arch, &mut rng))
        }
        Procedure::RandomPrune => {
            trunk_finished(level)?;
            let mask = trained_mask(trunk, level, arch, pruning)?;
            let mut rng = seeds::stream(trial_seed(spec), Purpose::RandomPrune { copy: spec.copy, level });
            (pruning::random_like(&mask, &mut rng), reset()?)
        }
        Procedure::InitRandom | Procedure::InitMagnitude | Procedure::Snip | Procedure::Synflow => {
            return Err(Error::Invalid(format!("{}: pruning at initialization chooses its mask from data; see `at_init_mask`", spec.id())));
        }
    })
}

/// SynFlow's rounds of rescoring (Tanaka et al., 2020, use 100).
const SYNFLOW_ROUNDS: usize = 100;

/// The mask a pruning-at-initialization run (`sparsity::at_init`) chooses at theta0 for
/// `level`: as many weights as the ticket keeps at that level, trained from theta0. SNIP
/// scores one unaugmented batch, the first of the trial's data order.
fn at_init_mask(spec: &RunSpec, arch: &Architecture, theta0: &Weights, level: usize, data: &Dataset) -> Result<Mask> {
    let keep = pruning::level_counts(arch, &spec.method.pruning, level).iter().map(|(_, n)| n).sum();
    let model = spec.method.model;
    Ok(match spec.procedure {
        Procedure::InitRandom => at_init::random(arch, keep, &mut seeds::stream(trial_seed(spec), Purpose::AtInit { level })),
        Procedure::InitMagnitude => at_init::magnitude(arch, theta0, keep),
        Procedure::Snip => {
            let mut order = Batches::new(&data.train, spec.method.batch_size, seeds::stream(trial_seed(spec), Purpose::DataOrder));
            let (xs, labels) = order.next_batch()?;
            at_init::snip(model, arch, theta0, keep, (&xs, &labels))?
        }
        Procedure::Synflow => at_init::synflow(model, arch, theta0, keep, &data.train.images.dims()[1..], SYNFLOW_ROUNDS)?,
        other => return Err(Error::Invalid(format!("`{}` does not prune at initialization", other.as_str()))),
    })
}

/// The mask ticket level `level` trains under: dense at level 0; after that, pruned from the
/// previous level's trained weights, or, where those are not on this machine (a clone keeps only
/// curves), read from the copy of the same mask the previous level recorded (`next-mask.bits.gz`).
pub fn ticket_mask(ticket: &RunDir, level: usize, arch: &Architecture, pruning: &PruningSpec) -> Result<Mask> {
    if level == 0 {
        return Ok(Mask::dense(arch));
    }
    if ticket.has_weights(level - 1) {
        let previous = trained_mask(ticket, level - 1, arch, pruning)?;
        return Ok(pruning::prune_round(arch, pruning, &ticket.load_final(level - 1, arch)?, &previous));
    }
    let mask = ticket.load_next_mask(level - 1, arch)?;
    check_counts(&mask, level, &ticket.next_mask_path(level - 1), arch, pruning)?;
    Ok(mask)
}

/// The mask finished ticket level `level` trained under: its own file, or [`ticket_mask`]
/// where it kept only its curve.
pub fn trained_mask(ticket: &RunDir, level: usize, arch: &Architecture, pruning: &PruningSpec) -> Result<Mask> {
    if !ticket.mask_path(level).exists() {
        return ticket_mask(ticket, level, arch, pruning);
    }
    let mask = ticket.load_mask(level, arch)?;
    check_counts(&mask, level, &ticket.mask_path(level), arch, pruning)?;
    Ok(mask)
}

/// Whether [`trained_mask`] can read finished level `level` of `ticket` on this machine.
pub fn has_trained_mask(ticket: &RunDir, level: usize) -> bool {
    ticket.is_done(level) && (level == 0 || ticket.mask_path(level).exists() || ticket.has_weights(level - 1) || ticket.has_next_mask(level - 1))
}

/// Refuses a mask (read from `path`) that does not keep the per-layer counts `level` rounds of
/// pruning leave: a planted or damaged mask is never trained from.
fn check_counts(mask: &Mask, level: usize, path: &std::path::Path, arch: &Architecture, pruning: &PruningSpec) -> Result<()> {
    for (layers, expected) in pruning::level_counts(arch, pruning, level) {
        let kept: usize = layers.iter().map(|name| mask.layers[name].remaining()).sum();
        if kept != expected {
            let reason = format!("`{}` keep {kept} weights, but level {level} of a ticket keeps {expected}", layers.join("`, `"));
            return Err(damaged_tensors(path, reason));
        }
    }
    Ok(())
}

/// The checkpoint of `level`'s training to go on from, if there is one that fits it; one that
/// does not (unreadable, or of another training) is reported and removed.
fn checkpoint_to_resume(spec: &RunSpec, run: &RunDir, level: usize, arch: &Architecture, progress: &Progress) -> Result<Option<Saved>> {
    let path = run.checkpoint_path(level);
    if !path.exists() {
        return Ok(None);
    }
    let config = train_config(spec, rewind::start_iteration(spec, level));
    let fits =
        checkpoint::load(&path, arch).and_then(|saved| training::check_resumable(&saved.state, &config, &streams(spec, trial_seed(spec))).map(|_| saved));
    match fits {
        Ok(saved) => Ok(Some(saved)),
        Err(e) => {
            progress.line(format!(
                "warning: {} level {level}: the checkpoint {} cannot be resumed from ({e}); it is removed and the level trains from its start",
                run.id,
                path.display()
            ));
            std::fs::remove_file(&path).at(&path)?;
            Ok(None)
        }
    }
}

/// Trains `level` of `run` from its mask and start weights, or from `resume`, and saves it;
/// returns its curve.
fn train_level(
    spec: &RunSpec,
    (run, level): (&RunDir, usize),
    (mask, start): (&Mask, &Weights),
    resume: Option<Saved>,
    data: &Dataset,
    dev: &Device,
    observer: &mut Checkpointing,
) -> Result<Vec<CurveRecord>> {
    let arch = &Architecture::of(spec.method.model);
    let config = train_config(spec, rewind::start_iteration(spec, level));
    let streams = streams(spec, trial_seed(spec));
    // `training::train` zeroes the pruned weights before the first step.
    let curve = match resume {
        None => {
            let params = nn::to_params(arch, start, dev)?;
            let curve = training::train(Start { model: spec.method.model, params: &params, mask }, data, &config, streams, observer)?;
            (curve, params)
        }
        Some(Saved { state, weights, rewind }) => {
            observer.snapshot.weights = rewind;
            let params = nn::to_params(arch, &weights, dev)?;
            let curve = training::train_resumed(Start { model: spec.method.model, params: &params, mask }, state, data, &config, streams, observer)?;
            (curve, params)
        }
    };
    let (curve, params) = curve;
    let key = CurveKey {
        experiment: spec.experiment.clone(),
        scale: spec.scale.as_str().into(),
        data: spec.data,
        procedure: spec.procedure.as_str().into(),
        trial: spec.trial,
        copy: spec.copy,
        level,
        remaining: mask.remaining(),
    };
    let records: Vec<CurveRecord> = curve.iter().map(|p| key.record(p)).collect();
    let trained = nn::weights_of(&params)?;
    run.unmark_done(level)?;
    mask.save(&run.mask_path(level))?;
    save_weights(&trained, arch, &run.final_path(level))?;
    if spec.procedure == Procedure::Ticket {
        // The next level's mask, the same bits `ticket_mask` prunes from the files just written,
        // recorded small enough to commit: a clone without the weights resumes from it.
        let next = pruning::prune_round(arch, &spec.method.pruning, &trained, mask);
        write_atomic(&run.next_mask_path(level), &next.to_bits_gz()?)?;
    }
    write_csv(&records, &run.curve_path(level))?;
    observer.snapshot.save(run, arch)?;
    run.mark_done(level)?;
    let checkpoint = run.checkpoint_path(level);
    if checkpoint.exists() {
        std::fs::remove_file(&checkpoint).at(&checkpoint)?;
    }
    Ok(records)
}

/// How every level of `spec` trains (its iterations, batch, optimizer and rate schedule), from
/// `start_iteration` on.
pub fn train_config(spec: &RunSpec, start_iteration: usize) -> TrainConfig {
    TrainConfig {
        iterations: spec.iterations,
        eval_every: spec.eval_every,
        batch_size: spec.method.batch_size,
        optimizer: (&spec.method.optimizer).into(),
        sparse_kernels: true,
        lr_schedule: spec.method.lr_schedule.clone(),
        start_iteration,
    }
}

/// The random streams of a training drawn from `seed`: the trial's seed for every level of a
/// run (so levels differ only by their mask), another for a copy of `instability`.
pub fn streams(spec: &RunSpec, seed: u64) -> Streams {
    Streams {
        data_order: seeds::stream(seed, Purpose::DataOrder),
        dropout: spec.method.dropout.map(|p| nn::Dropout::new(p, seeds::stream(seed, Purpose::Dropout))),
        augment: spec.method.augmentation.as_ref().map(|a| Augment::new(a, &spec.method.normalisation, seeds::stream(seed, Purpose::Augmentation))),
    }
}

pub fn trial_seed(spec: &RunSpec) -> u64 {
    seeds::trial_seed(spec.seed, spec.trial)
}

/// The error for a branch started before its ticket run: it names the command to run first.
fn missing_trunk(spec: &RunSpec, trunk: &RunDir, what: &str) -> Error {
    let data = if spec.data.is_real() { String::new() } else { format!(" --data {}", spec.data) };
    Error::Invalid(format!(
        "{}: {what} is missing or unfinished; the ticket run of trial {trial} must finish first: run `lth run experiments/{experiment}.toml --scale {scale} --trial {trial}{data}`, which trains the ticket before its controls",
        trunk.dir.display(),
        trial = spec.trial,
        experiment = spec.experiment,
        scale = spec.scale.as_str(),
    ))
}
