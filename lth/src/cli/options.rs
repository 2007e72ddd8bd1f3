//! The flags several commands share (a job, its data, its figures' outputs), the checks of their
//! values, and how an error reaches the user: one line, naming the flag that fixes it.

use crate::base::spec::Scale;
use crate::data::copies::DataChoice;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Clone)]
pub struct JobArgs {
    /// smoke (seconds), quick (minutes on a laptop) or paper (docs/paper.md exactly).
    #[arg(long, value_enum, default_value = "quick")]
    pub scale: Scale,
    /// Override the scale's number of trials.
    #[arg(long, value_parser = trials_in_range)]
    pub trials: Option<usize>,
    /// cpu, cuda, cuda:N, auto, or cpu-generic (the code a GPU runs, on the CPU: docs/gpu.md).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Trainings run in parallel, one per worker thread (default: one per CPU core).
    #[arg(long, value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// Results folder (run folders are content-addressed and reused).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

#[derive(Args, Clone)]
pub struct DataArgs {
    /// Mirror of the dataset files: a base URL or a folder laid out as <dataset>/<file> [env: LTH_DATA_MIRROR].
    #[arg(long)]
    pub mirror: Option<String>,
    /// Dataset cache folder [env: LTH_DATA_DIR; default: the user cache folder].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// CIFAR-10 images: `real`; `synthetic`, a generated set in the same format for machines
    /// without CIFAR-10; or `folder:<path-or-url>`, a copy you have: an image folder or archive
    /// of one (train/<class>/*.png|jpg, test/<class>/*), or an extracted cifar-10-batches-bin/
    /// (checked against the published MD5s). A relative path not found here is looked up under
    /// the mirror. Anything but `real` is marked as such everywhere. MNIST is always real.
    #[arg(long, default_value = "real")]
    pub data: DataChoice,
}

/// Where the datasets come from, for a command that reads the data a run was made on.
#[derive(Args, Clone)]
pub struct SourceArgs {
    /// Mirror of the dataset files [env: LTH_DATA_MIRROR].
    #[arg(long)]
    pub mirror: Option<String>,
    /// Dataset cache folder [env: LTH_DATA_DIR].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl SourceArgs {
    /// The data flags for the images a run was made on.
    pub fn with_images(&self, images: crate::base::spec::DataSource) -> DataArgs {
        DataArgs { mirror: self.mirror.clone(), data_dir: self.data_dir.clone(), data: DataChoice::Known(images) }
    }
}

#[derive(Args, Clone)]
pub struct FigureArgs {
    /// Where figures, tables and provenance go.
    #[arg(long, default_value = "figures")]
    pub figures_dir: PathBuf,
    /// Folder of experiment specs.
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    /// The command recorded in provenance (xtask passes its own).
    #[arg(long)]
    pub command: Option<String>,
    /// The machine and wall time behind the runs, for the provenance record (default for
    /// `reproduce`: this machine's CPU and cores, and how long the reproduce took).
    #[arg(long)]
    pub machine: Option<String>,
}

/// The error and its causes on one line, each cause once: a library error that already
/// quotes its cause (an I/O error after the path it failed on) is not followed by it again.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// Thread counts above this machine's cores only add threads that wait for a core (100,000
/// made a smoke run crawl for many minutes): each such setting is capped, with a notice.
pub fn cap_thread_counts() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for name in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        let Some(value) = std::env::var(name).ok() else { continue };
        if value.trim().parse::<usize>().is_ok_and(|n| n > cores) {
            eprintln!("note: {name}={value} is above this machine's {cores} cores; using {cores}");
            std::env::set_var(name, cores.to_string());
        }
    }
}

/// Worker threads for `tasks` independent trainings: `--jobs` (default: one per core), at most
/// one per core and per task. Parallel workers use one core each: candle's matrix products
/// would otherwise also spread over every core and oversubscribe them (candle reads
/// `RAYON_NUM_THREADS` at every product, and no other thread runs candle work yet).
pub fn workers(jobs: Option<usize>, tasks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(jobs) = jobs.filter(|&jobs| jobs > cores) {
        eprintln!("note: --jobs {jobs} is above this machine's {cores} cores; using {cores}");
    }
    let workers = jobs.unwrap_or(cores).clamp(1, cores).clamp(1, tasks.max(1));
    if workers > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    workers
}

/// `--trials`: at least 1, at most the largest plan this lth makes.
pub fn trials_in_range(value: &str) -> std::result::Result<usize, String> {
    match at_least_one(value)? {
        n if n > crate::base::spec::MAX_TRIALS => Err(format!("must be at most {} (each trial is a full set of trainings)", crate::base::spec::MAX_TRIALS)),
        n => Ok(n),
    }
}

pub fn at_least_one(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub fn at_least_five(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n < crate::tools::bench::MIN_REPEATS => {
            Err(format!("must be at least {} (a median and a range mean little below that)", crate::tools::bench::MIN_REPEATS))
        }
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Fails unless `path` is a folder this process can write into, or can be created as one;
/// nothing is created.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    let mut existing = path;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        anyhow::bail!("{flag} {}: {} is a file, not a folder; pass a folder", path.display(), existing.display());
    }
    let probe = crate::base::files::unique_temp(&existing.join(".lth-write-check"));
    std::fs::write(&probe, b"")
        .map_err(|e| anyhow::anyhow!("{flag} {}: cannot write into {} ({e}); pass a writable folder", path.display(), existing.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Fails unless `dir`, the value of `--experiments`, is a folder: a command started outside the
/// project's root would otherwise say only `experiments: No such file or directory`.
pub fn check_experiments(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "--experiments {}: no such folder of experiment specs here ({}); run lth from the project's root or pass --experiments <folder>",
            dir.display(),
            std::env::current_dir().map_or_else(|_| "an unknown folder".into(), |d| d.display().to_string())
        );
    }
    Ok(())
}
