//! `lth run`, `lth reproduce` and `lth plan`: an experiment's trainings, run by worker threads
//! with a progress bar and an estimate of the time left, or printed as commands for elsewhere.

use super::data::{load_data, source};
use super::figures::{draw, experiments_of, load_specs, provenance, resolve_figures, this_machine, write_claims};
use super::options::{check_experiments, check_writable, workers, DataArgs, FigureArgs, JobArgs};
use crate::base::shell::quoted;
use crate::base::spec::{DataSource, DatasetKind, ExperimentSpec, Scale};
use crate::data::{self, copies::DataChoice};
use crate::store::inventory;
use crate::store::runs::Store;
use crate::train::progress::Progress;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Run {
    /// Experiment spec, e.g. experiments/lenet.toml.
    pub experiment: PathBuf,
    /// Only this trial (its ticket run and every control branching off it).
    #[arg(long)]
    pub trial: Option<usize>,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

impl Run {
    pub fn run(self) -> Result<()> {
        let Run { experiment, trial, job, data } = self;
        let spec = ExperimentSpec::load(&experiment)?;
        let trials = job.trials.unwrap_or(spec.sizes(job.scale)?.trials);
        if let Some(t) = trial.filter(|&t| t >= trials) {
            anyhow::bail!("--trial {t}: {} has trials 0..{trials} at scale {}; pass --trials {} to run more", experiment.display(), job.scale.as_str(), t + 1);
        }
        check_writable("--out", &job.out)?;
        source(&data).check()?;
        crate::ops::device::named(&job.device)?;
        let (raw, images) = load_data(spec.method.dataset, &data)?;
        // `lth runs` judges these runs by this spec even when it is not in --experiments.
        inventory::record_spec_path(&Store::new(&job.out), &experiment)?;
        run_experiment(&spec, &job, trial, &raw, images)
    }
}

#[derive(Args)]
pub struct Reproduce {
    /// Figures to reproduce (default: every implemented one).
    pub figures: Vec<String>,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub output: FigureArgs,
}

impl Reproduce {
    pub fn run(self) -> Result<()> {
        let Reproduce { figures: names, job, data, output } = self;
        let started = std::time::Instant::now();
        let wanted = resolve_figures(&names)?;
        let revision = crate::report::figures::git_revision();
        let specs = load_specs(&output.experiments, &experiments_of(&wanted))?;
        // Every path and value is checked before hours of training, not after.
        check_writable("--out", &job.out)?;
        check_writable("--figures-dir", &output.figures_dir)?;
        source(&data).check()?;
        crate::ops::device::named(&job.device)?;
        // Fetch and decode every dataset once, first, so a missing one fails before hours of
        // training.
        let mut raws: Vec<(data::RawDataset, DataSource)> = Vec::new();
        for spec in &specs {
            if !raws.iter().any(|(r, _)| r.kind == spec.method.dataset) {
                raws.push(load_data(spec.method.dataset, &data)?);
            }
        }
        let raw_of = |spec: &ExperimentSpec| raws.iter().find(|(r, _)| r.kind == spec.method.dataset).context("every dataset was loaded above");
        // The whole request's cost before any of it trains: each experiment planned and timed
        // (its data prepared, then dropped), as they will run, one after another.
        if specs.len() > 1 && !matches!(job.scale, Scale::Smoke) {
            let (mut trainings, mut seconds) = (0, 0.0);
            for spec in &specs {
                let (raw, images) = raw_of(spec)?;
                let left = pending(spec, &job, None, raw, *images, false)?;
                trainings += left.tasks.len();
                seconds += left.seconds.unwrap_or(0.0);
            }
            eprintln!(
                "{}: {trainings} trainings left in {} experiments, estimated {} in all (each timed on this machine just now; they run one after another)",
                if names.is_empty() { "every figure".to_string() } else { names.join(" ") },
                specs.len(),
                crate::train::progress::human(seconds)
            );
        }
        for spec in &specs {
            let (raw, images) = raw_of(spec)?;
            run_experiment(spec, &job, None, raw, *images)?;
        }
        // What the CIFAR-10 runs trained on (MNIST's are always real).
        let images = raws.iter().find(|(r, _)| r.kind == DatasetKind::Cifar10).map_or(DataSource::Real, |(_, images)| *images);
        let command = output.command.clone().unwrap_or_else(|| format!("lth reproduce {}", names.join(" ")));
        let machine = output
            .machine
            .clone()
            .unwrap_or_else(|| format!("{}; this reproduce: {} wall", this_machine(), crate::train::progress::human(started.elapsed().as_secs_f64())));
        for figure in wanted {
            let provenance = provenance(&command, job.scale, job.trials, images, &job.device, &machine, &revision);
            draw(figure, &job.out, &specs, &provenance, &output.figures_dir)?;
        }
        write_claims(&output.figures_dir, None)
    }
}

#[derive(Args)]
pub struct Plan {
    pub figures: Vec<String>,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
}

impl Plan {
    pub fn run(self) -> Result<()> {
        let Plan { figures: names, job, data, experiments } = self;
        let wanted = experiments_of(&resolve_figures(&names)?);
        check_experiments(&experiments)?;
        for name in wanted {
            let spec_path = experiments.join(format!("{name}.toml"));
            let spec = ExperimentSpec::load(&spec_path)?;
            for line in plan_lines(&spec, &spec_path, &job, &data)? {
                println!("{line}");
            }
        }
        Ok(())
    }
}

/// The `lth run` lines of one experiment: one per trial, carrying every option that changes
/// what runs (scale, trials, data) and where (device, results folder, mirror).
fn plan_lines(spec: &ExperimentSpec, spec_path: &Path, job: &JobArgs, data: &DataArgs) -> Result<Vec<String>> {
    let trials = job.trials.unwrap_or(spec.sizes(job.scale)?.trials);
    let mut options = format!("--scale {}", job.scale.as_str());
    if let Some(n) = job.trials {
        options += &format!(" --trials {n}");
    }
    if data.data != DataChoice::Known(DataSource::Real) && spec.method.dataset == DatasetKind::Cifar10 {
        options += &format!(" --data {}", quoted(&data.data.to_string()));
    }
    options += &format!(" --device {} --out {}", quoted(&job.device), quoted(&job.out.display().to_string()));
    if let Some(mirror) = &data.mirror {
        options += &format!(" --mirror {}", quoted(mirror));
    }
    Ok((0..trials).map(|trial| format!("lth run {} {options} --trial {trial}", quoted(&spec_path.display().to_string()))).collect())
}

/// What one experiment has left to train at a scale: its plan, prepared data, device, the
/// pending trainings (each weighted by its estimated milliseconds where the scale is timed) and
/// the workers that will share them.
struct Pending {
    plan: Vec<crate::base::spec::PlannedRun>,
    data: crate::data::Dataset,
    dev: candle_core::Device,
    tasks: Vec<(crate::lottery::work::Task, Option<(usize, usize)>)>,
    jobs: usize,
    /// Estimated seconds for the pending trainings on `jobs` workers; None at `smoke` scale.
    seconds: Option<f64>,
}

/// Plans `spec` (or one trial of it) at `job`'s scale against its results folder, times its
/// network on the data where the scale is timed, and says so on stderr when `verbose`.
fn pending(spec: &ExperimentSpec, job: &JobArgs, trial: Option<usize>, raw: &data::RawDataset, data: DataSource, verbose: bool) -> Result<Pending> {
    let dev = crate::ops::device::named(&job.device)?;
    let plan: Vec<_> = spec.plan(job.scale, job.trials, data)?.into_iter().filter(|r| trial.is_none_or(|t| r.spec.trial == t)).collect();
    let Some(first) = plan.first() else {
        anyhow::bail!("trial {} does not exist at scale {}", trial.unwrap_or(0), job.scale.as_str());
    };
    let data = raw.prepare(&first.spec, &dev)?;
    let n_levels: usize = plan.iter().map(|r| r.levels.len()).sum();
    let iterations = first.spec.iterations;
    if verbose {
        eprintln!(
            "{} at scale `{}`: {} runs, {n_levels} trainings of {iterations} iterations on {} ({} train / {} validation / {} test examples)",
            spec.name,
            job.scale.as_str(),
            plan.len(),
            job.device,
            data.train.len(),
            data.validation.len(),
            data.test.len()
        );
    }
    // Workers share the trainings (`work`), so even one trial keeps every core busy.
    let jobs = workers(job.jobs, n_levels);
    let store = Store::new(&job.out);
    // Each training weighs its estimated milliseconds in the progress; smoke runs (seconds in
    // all) are not timed first, and weigh their iterations.
    let costs = match job.scale {
        Scale::Smoke => None,
        _ => {
            let levels: Vec<usize> = plan.iter().flat_map(|r| r.levels.iter().copied()).collect();
            Some(crate::tools::estimate::Costs::measure(&first.spec, &levels, &data, &dev)?)
        }
    };
    let units = |run: usize, level: usize| match &costs {
        Some(costs) => (1000.0 * costs.training(&plan[run].spec, level, &data)).round().max(1.0) as u64,
        None => plan[run].spec.iterations as u64,
    };
    let mut tasks = crate::lottery::work::pending(&plan, &store, units)?;
    let redo = tasks.iter().filter(|(t, _)| t.redo).count();
    // Levels another experiment's run of the same training has finished are copied, not trained.
    let twins = plan.iter().map(|p| crate::lottery::procedure::twins(&store, &p.spec)).collect::<crate::Result<Vec<_>>>()?;
    let mut copied = 0;
    for (task, _) in tasks.iter_mut().filter(|(t, _)| !t.redo) {
        if twins[task.run].iter().any(|twin| twin.has_weights(task.level)) {
            (task.units, task.resumes_at) = (1, None);
            copied += 1;
        }
    }
    let finished = n_levels + redo - tasks.len();
    if verbose && finished > 0 {
        eprintln!("{finished} of {n_levels} trainings are already finished in {}", job.out.display());
    }
    if verbose && redo > 0 {
        eprintln!("{redo} of them kept only their curves, and trainings still to run read more (their weights, or a ticket mask recorded before `next-mask.bits.gz` existed): they are trained again (to the same bits)");
    }
    let resumed: Vec<String> = tasks.iter().filter_map(|(t, _)| t.resumes_at).map(|at| at.to_string()).collect();
    if verbose && !resumed.is_empty() {
        eprintln!(
            "{} of the {} trainings left resume from their checkpoints (at iteration {}): they are estimated for the steps they have left",
            resumed.len(),
            tasks.len(),
            resumed.join(", ")
        );
    }
    if verbose && copied > 0 {
        eprintln!(
            "{copied} of the {} trainings left are finished in {} by another experiment's runs of the same training (specs that differ only in their name): they are copied, not trained",
            tasks.len(),
            job.out.display()
        );
    }
    let seconds = costs.map(|_| crate::lottery::work::makespan(&tasks, jobs) as f64 / 1000.0);
    Ok(Pending { plan, data, dev, tasks, jobs, seconds })
}

/// Trains every run of `spec` (or of one trial of it) at `job`'s scale that its results folder
/// does not hold yet, on `raw` as `data` says it is.
pub fn run_experiment(spec: &ExperimentSpec, job: &JobArgs, trial: Option<usize>, raw: &data::RawDataset, data: DataSource) -> Result<()> {
    let Pending { plan, data, dev, tasks, jobs, seconds } = pending(spec, job, trial, raw, data, true)?;
    if let (Some(seconds), false) = (seconds, tasks.is_empty()) {
        eprintln!(
            "estimated time for the {} trainings left: {} on {jobs} worker{} (timed on this machine just now, in the order the workers will take them; the ETA below follows the actual rate)",
            tasks.len(),
            crate::train::progress::human(seconds),
            if jobs == 1 { "" } else { "s" }
        );
    }
    let store = Store::new(&job.out);
    let progress = Progress::new(tasks.iter().map(|(t, _)| t.units).sum(), tasks.len());
    crate::lottery::work::run(&plan, tasks, jobs, crate::lottery::procedure::Resources { store: &store, data: &data, dev: &dev, progress: &progress })?;
    progress.finish();
    // Beyond the paper: the instability analyses of the ticket runs, once those are trained.
    if let Some(sizes) = &spec.sizes(job.scale)?.instability {
        let on = crate::lottery::procedure::Resources { store: &store, data: &data, dev: &dev, progress: &progress };
        crate::lottery::instability::run_all(&plan, sizes, jobs, on)?;
    }
    Ok(())
}
