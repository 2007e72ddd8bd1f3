//! `lth instability`: the instability analysis of a ticket run's levels (beyond the paper;
//! `lottery::instability`), one line per level and rewind point with its error barrier.

use crate::base::spec::{ExperimentSpec, InstabilitySizes, Procedure};
use crate::cli::data::{load_data, source};
use crate::cli::options::{check_writable, workers, DataArgs, JobArgs};
use crate::lottery::instability;
use crate::lottery::procedure::Resources;
use crate::store::runs::Store;
use crate::train::progress::Progress;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct Instability {
    /// Experiment spec whose ticket run is analysed, e.g. experiments/lenet.toml (run it first).
    pub experiment: PathBuf,
    /// The trial whose ticket run is analysed.
    #[arg(long, default_value_t = 0)]
    pub trial: usize,
    /// Levels of the ticket run (0: the dense network), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub levels: Vec<usize>,
    /// Iterations the copies start from (0: theta0; k: the dense network after k steps), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub rewind: Vec<usize>,
    /// Copies trained from the same start with different SGD noise (every pair is a path).
    #[arg(long, default_value_t = 2)]
    pub copies: usize,
    /// Evenly spaced points on each path, its ends included.
    #[arg(long, default_value_t = 11)]
    pub points: usize,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

impl Instability {
    pub fn run(self) -> Result<()> {
        let Instability { experiment, trial, levels, rewind, copies, points, job, data } = self;
        let spec = ExperimentSpec::load(&experiment)?;
        check_writable("--out", &job.out)?;
        source(&data).check()?;
        let dev = crate::ops::device::named(&job.device)?;
        let (raw, images) = load_data(spec.method.dataset, &data)?;
        let plan = spec.plan(job.scale, job.trials, images)?;
        let Some(ticket) = plan.iter().find(|p| p.spec.procedure == Procedure::Ticket && p.spec.trial == trial) else {
            anyhow::bail!("--trial {trial}: {} has no such trial at scale {}", experiment.display(), job.scale.as_str());
        };
        if let Some(bad) = levels.iter().find(|l| !ticket.levels.contains(l)) {
            anyhow::bail!(
                "--levels {bad}: the ticket run of {} has levels 0..={} at scale {}",
                experiment.display(),
                ticket.levels.len() - 1,
                job.scale.as_str()
            );
        }
        let prepared = raw.prepare(&ticket.spec, &dev)?;
        let store = Store::new(&job.out);
        let sizes = InstabilitySizes { levels, rewind, copies, points };
        let requests = instability::requests(std::slice::from_ref(ticket), &sizes);
        // One analysis per worker (its copies one after another).
        let jobs = workers(job.jobs, requests.len());
        let progress = Progress::new(0, 0);
        let on = Resources { store: &store, data: &prepared, dev: &dev, progress: &progress };
        instability::run_all(std::slice::from_ref(ticket), &sizes, jobs, on)?;
        println!("| level | Pm (%) | from iteration | pairs | error barrier (pp): mean [min, max] | table |\n|---|---|---|---|---|---|");
        for (spec, request) in &requests {
            let rows = instability::analyse(spec, request, &store, &prepared, &dev, &progress)?;
            let barriers: Vec<f64> = instability::barriers(&rows).into_iter().map(|(_, b)| 100.0 * b).collect();
            let mean = barriers.iter().sum::<f64>() / barriers.len().max(1) as f64;
            let (min, max) = barriers.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &b| (lo.min(b), hi.max(b)));
            let remaining = rows.first().map_or(f64::NAN, |r| 100.0 * r.remaining);
            let table = instability::table_path(&store, spec, request);
            println!(
                "| {} | {remaining:.1} | {} | {} | {mean:.2} [{min:.2}, {max:.2}] | `{}` |",
                request.level,
                request.rewind,
                barriers.len(),
                table.display()
            );
        }
        Ok(())
    }
}
