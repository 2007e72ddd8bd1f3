//! The `lth` command: fetch data, run experiments, aggregate and draw figures. `cargo xtask`
//! builds and calls it; on a cluster or GPU machine it runs on its own.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use lth::datasets::copies::{self, DataChoice};
use lth::datasets::{self, fetch::Source};
use lth::progress::Progress;
use lth::results::{claims, compare, figures, inventory, plot, pr_comment, store::Store};
use lth::spec::{DataSource, DatasetKind, ExperimentSpec, Scale};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "lth", version, about = "The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019), reproduced with candle")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download (or copy from a mirror) and verify a dataset.
    Fetch {
        /// Dataset to fetch.
        #[arg(value_parser = ["mnist", "cifar10"])]
        dataset: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Train every run of one experiment (or one trial of it) at a scale; finished levels are skipped.
    Run {
        /// Experiment spec, e.g. experiments/lenet.toml.
        experiment: PathBuf,
        /// Only this trial (its ticket run and every control branching off it).
        #[arg(long)]
        trial: Option<usize>,
        #[command(flatten)]
        job: JobArgs,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Everything for some figures: fetch data, run what is missing, aggregate, draw.
    Reproduce {
        /// Figures to reproduce (default: every implemented one).
        figures: Vec<String>,
        #[command(flatten)]
        job: JobArgs,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        output: FigureArgs,
    },
    /// Aggregate finished runs and draw one figure (no training).
    Figure {
        figure: String,
        #[arg(long, value_enum, default_value = "quick")]
        scale: Scale,
        /// Results folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Draw the runs made on `real` or `synthetic` CIFAR-10 images, or on a copy
        /// (`folder:<path-or-url>`, or its `data` label such as `jpeg-copy-<sha256>`).
        #[arg(long, default_value = "real")]
        data: DataChoice,
        /// The trials the runs were made with (`--trials` of `run` or `reproduce`).
        #[arg(long, value_parser = trials_in_range)]
        trials: Option<usize>,
        /// The device the runs trained on, for the provenance record.
        #[arg(long, default_value = "not recorded")]
        device: String,
        #[command(flatten)]
        output: FigureArgs,
    },
    /// Check the paper's claims against the figure tables of a folder and write its CLAIMS.md
    /// (used by `cargo xtask claims` and `figures [--check]`).
    Claims {
        /// A figures folder (figN.csv with their figN.md).
        dir: PathBuf,
        /// Write the report here instead of <dir>/CLAIMS.md.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Draw a figure from its table CSV (used by `cargo xtask figures [--check]`).
    Plot {
        figure: String,
        table: PathBuf,
        svg: PathBuf,
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Measure training and evaluation throughput, each beside the alternative it replaces.
    Bench {
        /// Multiply the number of timed steps (1: about a minute in all).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Also time the same workloads in PyTorch (`python3`, or $LTH_PYTHON, with torch).
        #[arg(long)]
        vs_pytorch: bool,
        /// Only the rows whose workload contains this text, e.g. `evaluation` (case-insensitive).
        #[arg(long)]
        only: Option<String>,
        /// Timed repeats per side of each row, after one untimed warm-up round.
        #[arg(long, default_value_t = lth::bench::MIN_REPEATS, value_parser = at_least_five)]
        repeats: usize,
        /// Also write the rows to this CSV (the source of the performance tables in docs/).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Time nothing: print the Markdown table of a CSV written by `--csv`.
        #[arg(long, conflicts_with_all = ["vs_pytorch", "only", "csv"])]
        table: Option<PathBuf>,
    },
    /// Check that a device trains like the CPU (a few steps of LeNet, Conv-2, VGG-19 and
    /// ResNet-18 from the same weights) and print its throughput for every network, dense and
    /// sparse, with a verdict line per item; exits 1 if parity fails.
    GpuCheck {
        /// cuda, cuda:N, or cpu / cpu-generic (the generic path on the CPU: a self-test).
        #[arg(long, default_value = "cuda")]
        device: String,
    },
    /// Print a Markdown table of what changed between two results tables; with --comment, the
    /// pull-request comment over two figures folders (every table of both; problems as lines).
    Compare {
        /// The old table (with --comment: the base branch's figures folder).
        old: PathBuf,
        /// The new table (with --comment: the pull request's figures folder).
        new: PathBuf,
        #[arg(long)]
        comment: bool,
        /// The base branch's name, as the comment shows it.
        #[arg(long, default_value = "base", requires = "comment")]
        base_name: String,
        /// Say at the top that the pull request changes tables and no code.
        #[arg(long, requires = "comment")]
        tables_only: bool,
        /// Tables rerun on the runner rather than committed (comma-separated, e.g. fig5.csv,fig7.csv).
        #[arg(long, value_delimiter = ',', requires = "comment")]
        rerun: Vec<String>,
    },
    /// Train the golden smoke runs (LeNet on MNIST, Conv-2 and ResNet-18 on the synthetic set) and check their
    /// files' digests against a goldens file (or write it); exits 1 naming each difference.
    Goldens {
        /// The goldens file.
        #[arg(long, default_value = "tests/goldens.txt")]
        file: PathBuf,
        /// Write the file from this machine's runs instead of checking it.
        #[arg(long)]
        write: bool,
        /// Results folder for the runs (default: a new temporary folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Folder of experiment specs.
        #[arg(long, default_value = "experiments")]
        experiments: PathBuf,
        /// Mirror of the dataset files [env: LTH_DATA_MIRROR].
        #[arg(long)]
        mirror: Option<String>,
        /// Dataset cache folder [env: LTH_DATA_DIR].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print one `lth run` command per (experiment, trial) behind some figures, each experiment
    /// once, with every option that changes what runs.
    Plan {
        figures: Vec<String>,
        #[command(flatten)]
        job: JobArgs,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, default_value = "experiments")]
        experiments: PathBuf,
    },
    /// List the run folders of a results folder: finished levels, and whether the experiment
    /// specs (those of --experiments and those run by path into it) still expand to them.
    /// Stale runs (their spec is known and no longer expands to them) are never read by
    /// figures; runs of unknown specs and runs with a damaged spec.json are kept.
    Runs {
        /// Results folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Folder of experiment specs.
        #[arg(long, default_value = "experiments")]
        experiments: PathBuf,
        /// List only the stale runs.
        #[arg(long)]
        stale: bool,
        /// List the stale runs that would be deleted; with --yes, delete them.
        #[arg(long)]
        prune: bool,
        /// Confirm --prune: delete the stale runs it lists.
        #[arg(long, requires = "prune")]
        yes: bool,
        /// Rewrite each missing or damaged spec.json from the loaded spec that its folder's
        /// name (a digest of the spec) identifies.
        #[arg(long, conflicts_with = "prune")]
        repair: bool,
    },
    /// Write a finished level of a run as a compact sparse model (compressed rows in
    /// safetensors, the architecture in its metadata) and print its size against the dense file.
    Export {
        /// The run folder, `<out>/runs/<run-id>` (`lth runs` lists them).
        run: PathBuf,
        /// The finished level to export.
        #[arg(long)]
        level: usize,
        /// Where to write it (default: `<run-id>-level-NN.sparse.safetensors` here).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluate an exported model on its test set through the sparse kernels: its accuracy
    /// (checked against the run's final test accuracy; exits 1 if it differs), images/s and
    /// memory against the dense masked model.
    Infer {
        /// A file written by `lth export`.
        model: PathBuf,
        /// Timed passes over the test set per model (the best is reported).
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        repeat: usize,
        /// cpu, cuda, cuda:N, auto or cpu-generic.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Mirror of the dataset files [env: LTH_DATA_MIRROR].
        #[arg(long)]
        mirror: Option<String>,
        /// Dataset cache folder [env: LTH_DATA_DIR].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the files of a run folder whose markers are empty (written by an lth older than
    /// recorded digests, or left by a crash) and record them: the curve's schema, rows and
    /// values, the weights' shapes and that they give the curve's final test accuracy. Says
    /// what it could not check; refuses, naming the file, when a check fails.
    Adopt {
        /// The run folder, `<out>/runs/<run-id>`.
        run: PathBuf,
        /// Mirror of the dataset files [env: LTH_DATA_MIRROR].
        #[arg(long)]
        mirror: Option<String>,
        /// Dataset cache folder [env: LTH_DATA_DIR].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Remove a damaged level folder (`<out>/runs/<run-id>/level-NN`) or theta0
    /// (`<out>/runs/<run-id>/init.safetensors`), so that the next run of the same command
    /// retrains just that part.
    Redo { path: PathBuf },
}

#[derive(Args, Clone)]
struct JobArgs {
    /// smoke (seconds), quick (minutes on a laptop) or paper (docs/paper.md exactly).
    #[arg(long, value_enum, default_value = "quick")]
    scale: Scale,
    /// Override the scale's number of trials.
    #[arg(long, value_parser = trials_in_range)]
    trials: Option<usize>,
    /// cpu, cuda, cuda:N, auto, or cpu-generic (the code a GPU runs, on the CPU: docs/gpu.md).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Trainings run in parallel, one per worker thread (default: one per CPU core).
    #[arg(long, value_parser = at_least_one)]
    jobs: Option<usize>,
    /// Results folder (run folders are content-addressed and reused).
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Mirror of the dataset files: a base URL or a folder laid out as <dataset>/<file> [env: LTH_DATA_MIRROR].
    #[arg(long)]
    mirror: Option<String>,
    /// Dataset cache folder [env: LTH_DATA_DIR; default: the user cache folder].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CIFAR-10 images: `real`; `synthetic`, a generated set in the same format for machines
    /// without CIFAR-10; or `folder:<path-or-url>`, a copy you have: an image folder or archive
    /// of one (train/<class>/*.png|jpg, test/<class>/*), or an extracted cifar-10-batches-bin/
    /// (checked against the published MD5s). A relative path not found here is looked up under
    /// the mirror. Anything but `real` is marked as such everywhere. MNIST is always real.
    #[arg(long, default_value = "real")]
    data: DataChoice,
}

#[derive(Args, Clone)]
struct FigureArgs {
    /// Where figures, tables and provenance go.
    #[arg(long, default_value = "figures")]
    figures_dir: PathBuf,
    /// Folder of experiment specs.
    #[arg(long, default_value = "experiments")]
    experiments: PathBuf,
    /// The command recorded in provenance (xtask passes its own).
    #[arg(long)]
    command: Option<String>,
    /// The machine and wall time behind the runs, for the provenance record (default for
    /// `reproduce`: this machine's CPU and cores, and how long the reproduce took).
    #[arg(long)]
    machine: Option<String>,
}

fn main() {
    // candle splits element-wise ops over a pool of its own whose threads spin-wait before
    // sleeping; on a small machine they take the core that the next matrix product (threaded by
    // RAYON_NUM_THREADS) needs. The heavy ops here thread themselves, so candle's pool is kept to
    // the calling thread unless the user sizes it. Measured on 2 cores at 2 threads: LeNet
    // evaluation 150-194K images/s with the pool, 250-254K without.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    cap_thread_counts();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: a library error that already
/// quotes its cause (an I/O error after the path it failed on) is not followed by it again.
fn one_line(e: &anyhow::Error) -> String {
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
fn cap_thread_counts() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for name in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        let Some(value) = std::env::var(name).ok() else { continue };
        if value.trim().parse::<usize>().is_ok_and(|n| n > cores) {
            eprintln!("note: {name}={value} is above this machine's {cores} cores; using {cores}");
            std::env::set_var(name, cores.to_string());
        }
    }
}

/// `--trials`: at least 1, at most the largest plan this lth makes.
fn trials_in_range(value: &str) -> std::result::Result<usize, String> {
    match at_least_one(value)? {
        n if n > lth::spec::MAX_TRIALS => Err(format!("must be at most {} (each trial is a full set of trainings)", lth::spec::MAX_TRIALS)),
        n => Ok(n),
    }
}

fn at_least_one(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn at_least_five(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n < lth::bench::MIN_REPEATS => Err(format!("must be at least {} (a median and a range mean little below that)", lth::bench::MIN_REPEATS)),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fetch { dataset, data } => {
            source(&data).check()?;
            let kind = if dataset == "mnist" { DatasetKind::Mnist } else { DatasetKind::Cifar10 };
            let (raw, _) = load_data(kind, &data)?;
            println!("{dataset}: {} training and {} test images verified", raw.train.n, raw.test.n);
        }
        Command::Run { experiment, trial, job, data } => {
            let spec = ExperimentSpec::load(&experiment)?;
            let trials = job.trials.unwrap_or(spec.sizes(job.scale)?.trials);
            if let Some(t) = trial.filter(|&t| t >= trials) {
                anyhow::bail!(
                    "--trial {t}: {} has trials 0..{trials} at scale {}; pass --trials {} to run more",
                    experiment.display(),
                    job.scale.as_str(),
                    t + 1
                );
            }
            check_writable("--out", &job.out)?;
            source(&data).check()?;
            lth::device(&job.device)?;
            let (raw, images) = load_data(spec.method.dataset, &data)?;
            // `lth runs` judges these runs by this spec even when it is not in --experiments.
            inventory::record_spec_path(&Store::new(&job.out), &experiment)?;
            run_experiment(&spec, &job, trial, &raw, images)?;
        }
        Command::Reproduce { figures: names, job, data, output } => {
            let started = std::time::Instant::now();
            let wanted = resolve_figures(&names)?;
            let revision = figures::git_revision();
            let specs = load_specs(&output.experiments, &experiments_of(&wanted))?;
            // Every path and value is checked before hours of training, not after.
            check_writable("--out", &job.out)?;
            check_writable("--figures-dir", &output.figures_dir)?;
            source(&data).check()?;
            lth::device(&job.device)?;
            // Fetch and decode every dataset once, first, so a missing one fails before hours of
            // training.
            let mut raws: Vec<(datasets::RawDataset, DataSource)> = Vec::new();
            for spec in &specs {
                if !raws.iter().any(|(r, _)| r.kind == spec.method.dataset) {
                    raws.push(load_data(spec.method.dataset, &data)?);
                }
            }
            for spec in &specs {
                let (raw, images) = raws.iter().find(|(r, _)| r.kind == spec.method.dataset).context("every dataset was loaded above")?;
                run_experiment(spec, &job, None, raw, *images)?;
            }
            // What the CIFAR-10 runs trained on (MNIST's are always real).
            let images = raws.iter().find(|(r, _)| r.kind == DatasetKind::Cifar10).map_or(DataSource::Real, |(_, images)| *images);
            let command = output.command.clone().unwrap_or_else(|| format!("lth reproduce {}", names.join(" ")));
            let machine = output
                .machine
                .clone()
                .unwrap_or_else(|| format!("{}; this reproduce: {} wall", this_machine(), lth::estimate::human(started.elapsed().as_secs_f64())));
            for figure in wanted {
                let provenance = provenance(&command, job.scale, job.trials, images, &job.device, &machine, &revision);
                draw(figure, &job.out, &specs, &provenance, &output.figures_dir)?;
            }
            write_claims(&output.figures_dir, None)?;
        }
        Command::Figure { figure, scale, out, data, trials, device, output } => {
            let figure = figures::find(&figure)?;
            let specs = load_specs(&output.experiments, figure.experiments)?;
            check_writable("--figures-dir", &output.figures_dir)?;
            let command = output.command.unwrap_or_else(|| format!("lth figure {} --scale {}", figure.id, scale.as_str()));
            let images = match data {
                DataChoice::Known(images) => images,
                DataChoice::Copy(location) => copies::prepare(&location, &Source::from_env(None, None), &copies::CIFAR10)?,
            };
            let machine = output.machine.unwrap_or_else(|| "not recorded".into());
            let provenance = provenance(&command, scale, trials, images, &device, &machine, &figures::git_revision());
            draw(figure, &out, &specs, &provenance, &output.figures_dir)?;
            write_claims(&output.figures_dir, None)?;
        }
        Command::Claims { dir, output } => write_claims(&dir, output)?,
        Command::Plot { figure, table, svg, png } => {
            let figure = figures::find(&figure)?;
            plot::draw_from_csv(figure, &table, &svg, png.as_deref()).with_context(|| format!("drawing {}", svg.display()))?;
        }
        Command::GpuCheck { device } => {
            let dev = lth::device(&device)?;
            if !lth::gpu_check::run(&dev)? {
                anyhow::bail!("gpu-check: {device} does not train like the CPU (see the parity table)");
            }
        }
        Command::Compare { old, new, comment, base_name, tables_only, rerun } => {
            let text = if comment {
                pr_comment::comment(&old, &new, &pr_comment::Context { base: base_name, tables_only, rerun })
            } else {
                compare::compare(&old, &new)?
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        }
        Command::Goldens { file, write, out, experiments, mirror, data_dir } => goldens(&file, write, out, &experiments, mirror, data_dir)?,
        Command::Bench { scale, vs_pytorch, only, repeats, csv, table } => {
            if let Some(table) = table {
                print!("{}", lth::bench::markdown(&lth::bench::read_csv(&table)?));
                return Ok(());
            }
            let python = std::env::var("LTH_PYTHON").unwrap_or_else(|_| "python3".into());
            let options = lth::bench::Options { scale, repeats, pytorch: vs_pytorch.then_some(python.as_str()), only: only.as_deref() };
            let report = lth::bench::run(&options)?;
            if report.rows.is_empty() {
                anyhow::bail!("--only {:?} matches no benchmark row; run `lth bench` without it to see the workloads", only.unwrap_or_default());
            }
            print!("{}", lth::bench::markdown(&report));
            if let Some(peak) = lth::bench::peak_rss_mb() {
                println!("\nPeak resident memory of the benchmark process (lth rows): {peak:.0} MB");
            }
            if let Some(path) = csv {
                lth::bench::write_csv(&report, &path).with_context(|| format!("--csv {}", path.display()))?;
                eprintln!("bench: rows written to {}", path.display());
            }
        }
        Command::Plan { figures: names, job, data, experiments } => {
            for name in experiments_of(&resolve_figures(&names)?) {
                let spec_path = experiments.join(format!("{name}.toml"));
                let spec = ExperimentSpec::load(&spec_path)?;
                for line in plan_lines(&spec, &spec_path, &job, &data)? {
                    println!("{line}");
                }
            }
        }
        Command::Runs { out, experiments, stale, prune, yes, repair } => runs(&out, &experiments, stale, prune, yes, repair)?,
        Command::Export { run, level, out } => export(&run, level, out)?,
        Command::Infer { model, repeat, device, mirror, data_dir } => infer(&model, repeat, &device, mirror, data_dir)?,
        Command::Adopt { run, mirror, data_dir } => adopt(&run, mirror, data_dir)?,
        Command::Redo { path } => {
            lth::results::store::redo(&path)?;
            eprintln!("removed {}; run the same command again to retrain it", path.display());
        }
    }
    Ok(())
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

/// A word as a POSIX shell reads it back.
fn quoted(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=+,".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The experiments behind some figures, each once, in order.
fn experiments_of(figures: &[&figures::Figure]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for &name in figures.iter().flat_map(|f| f.experiments.iter()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The specs of `names` from the experiments folder.
fn load_specs(dir: &Path, names: &[&str]) -> Result<Vec<ExperimentSpec>> {
    Ok(names.iter().map(|name| ExperimentSpec::load(&dir.join(format!("{name}.toml")))).collect::<lth::Result<_>>()?)
}

/// Fails unless `path` is a folder this process can write into, or can be created as one;
/// nothing is created.
fn check_writable(flag: &str, path: &Path) -> Result<()> {
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
    let probe = lth::files::unique_temp(&existing.join(".lth-write-check"));
    std::fs::write(&probe, b"")
        .map_err(|e| anyhow::anyhow!("{flag} {}: cannot write into {} ({e}); pass a writable folder", path.display(), existing.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn source(data: &DataArgs) -> Source {
    Source::from_env(data.data_dir.clone(), data.mirror.clone())
}

fn resolve_figures(names: &[String]) -> Result<Vec<&'static figures::Figure>> {
    if names.is_empty() {
        return Ok(figures::FIGURES.iter().collect());
    }
    Ok(names.iter().map(|n| figures::find(n)).collect::<lth::Result<_>>()?)
}

/// Fetches and decodes a dataset, saying how to go on without CIFAR-10; returns it with the
/// images it is (a copy of CIFAR-10 is checked and identified first).
fn load_data(kind: DatasetKind, data: &DataArgs) -> Result<(datasets::RawDataset, DataSource)> {
    let source = source(data);
    let images = match (kind, &data.data) {
        (DatasetKind::Mnist, _) => DataSource::Real,
        (_, DataChoice::Known(images)) => *images,
        (_, DataChoice::Copy(location)) => {
            copies::prepare(location, &source, &copies::CIFAR10).with_context(|| format!("reading the copy of CIFAR-10 at {location}"))?
        }
    };
    let raw = datasets::load(kind, images, &source).with_context(|| match (kind, images) {
        (DatasetKind::Cifar10, DataSource::Real) => {
            "fetching CIFAR-10 (without it, `--data folder:<path>` reads a copy you have, and `--data synthetic` runs the pipeline on a generated stand-in)"
                .to_string()
        }
        _ => format!("fetching {kind:?}"),
    })?;
    Ok((raw, images))
}

fn run_experiment(spec: &ExperimentSpec, job: &JobArgs, trial: Option<usize>, raw: &datasets::RawDataset, data: DataSource) -> Result<()> {
    let dev = lth::device(&job.device)?;
    let plan: Vec<_> = spec.plan(job.scale, job.trials, data)?.into_iter().filter(|r| trial.is_none_or(|t| r.spec.trial == t)).collect();
    let Some(first) = plan.first() else {
        anyhow::bail!("trial {} does not exist at scale {}", trial.unwrap_or(0), job.scale.as_str());
    };
    let data = raw.prepare(&first.spec, &dev)?;
    let n_levels: usize = plan.iter().map(|r| r.levels.len()).sum();
    let iterations = first.spec.iterations;
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
    // Workers share the trainings (`work`), so even one trial keeps every core busy.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if job.jobs.is_some_and(|jobs| jobs > cores) {
        eprintln!("note: --jobs {} is above this machine's {cores} cores; using {cores}", job.jobs.unwrap_or(cores));
    }
    let jobs = job.jobs.unwrap_or(cores).clamp(1, cores).clamp(1, n_levels.max(1));
    // Parallel workers use one core each; candle's matrix products would otherwise also spread
    // over every core and oversubscribe them. candle reads this variable at every product, and
    // no other thread is running candle work yet.
    if jobs > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let store = Store::new(&job.out);
    // Each training weighs its estimated milliseconds in the progress; smoke runs (seconds in
    // all) are not timed first, and weigh their iterations.
    let costs = match job.scale {
        Scale::Smoke => None,
        _ => {
            let levels: Vec<usize> = plan.iter().flat_map(|r| r.levels.iter().copied()).collect();
            Some(lth::estimate::Costs::measure(&first.spec, &levels, &data, &dev)?)
        }
    };
    let units = |run: usize, level: usize| match &costs {
        Some(costs) => (1000.0 * costs.training(&plan[run].spec, level, &data)).round().max(1.0) as u64,
        None => plan[run].spec.iterations as u64,
    };
    let tasks = lth::work::pending(&plan, &store, units)?;
    let redo = tasks.iter().filter(|(t, _)| t.redo).count();
    let finished = n_levels + redo - tasks.len();
    if finished > 0 {
        eprintln!("{finished} of {n_levels} trainings are already finished in {}", job.out.display());
    }
    if redo > 0 {
        eprintln!("{redo} of them kept only their curves, and trainings still to run read their weights: they are trained again (to the same bits)");
    }
    if let (Some(_), false) = (&costs, tasks.is_empty()) {
        let seconds = lth::work::makespan(&tasks, jobs) as f64 / 1000.0;
        eprintln!(
            "estimated time for the {} trainings left: {} on {jobs} worker{} (timed on this machine just now, in the order the workers will take them; the ETA below follows the actual rate)",
            tasks.len(),
            lth::estimate::human(seconds),
            if jobs == 1 { "" } else { "s" }
        );
    }
    let progress = Progress::new(tasks.iter().map(|(t, _)| t.units).sum(), tasks.len());
    lth::work::run(&plan, tasks, jobs, &store, &data, &dev, &progress)?;
    progress.finish();
    Ok(())
}

/// `lth runs`: every run folder and where it stands (only the stale ones with `only_stale` or
/// `prune`); stale runs deleted with `prune` and `yes`, damaged spec.json files rewritten with
/// `repair`.
fn runs(out: &Path, experiments: &Path, only_stale: bool, prune: bool, yes: bool, repair: bool) -> Result<()> {
    use inventory::Standing;
    let store = Store::new(out);
    let mut specs = inventory::load_all(experiments)?;
    for recorded in inventory::recorded_specs(&store) {
        match recorded {
            Ok(spec) => specs.push(spec),
            Err(why) => eprintln!("warning: {why}; its runs are kept"),
        }
    }
    let runs = inventory::runs(&store, &specs)?;
    if runs.is_empty() {
        eprintln!("{}: no run folders", store.runs_dir().display());
    }
    let mut stale = 0;
    let (only_stale, delete) = (only_stale || prune, prune && yes);
    for run in runs.iter().filter(|r| !only_stale || matches!(r.standing, Standing::Stale(_))) {
        let levels = run.levels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",");
        println!("{}\tlevels [{levels}]\t{}", run.dir.id, run.describe());
        match &run.standing {
            Standing::Stale(_) if delete => {
                std::fs::remove_dir_all(&run.dir.dir).with_context(|| format!("removing {}", run.dir.dir.display()))?;
                println!("removed {}", run.dir.dir.display());
            }
            Standing::Stale(_) => stale += 1,
            Standing::Damaged { repair: Some(_), .. } if repair => {
                inventory::repair(run)?;
                println!("rewrote {}", run.dir.dir.join("spec.json").display());
            }
            _ => {}
        }
    }
    if prune && !yes && stale > 0 {
        eprintln!("{stale} stale run folder(s) listed above; nothing was deleted: pass --prune --yes to delete them");
    }
    Ok(())
}

/// `lth goldens`: the golden smoke runs, then their digests written or checked.
fn goldens(file: &Path, write: bool, out: Option<PathBuf>, experiments: &Path, mirror: Option<String>, data_dir: Option<PathBuf>) -> Result<()> {
    use lth::results::goldens;
    let out = match out {
        Some(out) => out,
        None => {
            let dir = std::env::temp_dir().join(format!("lth-goldens-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            dir
        }
    };
    let job = JobArgs { scale: goldens::SCALE, trials: None, device: "cpu".into(), jobs: None, out: out.clone() };
    for (name, data) in goldens::EXPERIMENTS {
        let spec = ExperimentSpec::load(&experiments.join(format!("{name}.toml")))?;
        let data_args = DataArgs { mirror: mirror.clone(), data_dir: data_dir.clone(), data: DataChoice::Known(data) };
        let (raw, images) = load_data(spec.method.dataset, &data_args)?;
        run_experiment(&spec, &job, None, &raw, images)?;
    }
    let actual = goldens::digests(&Store::new(&out))?;
    if write {
        lth::files::write_atomic(file, goldens::render(&actual).as_bytes())?;
        eprintln!("wrote {} digests to {} (kernels: {})", actual.len(), file.display(), lth::kernels::gemm::Path::chosen().name());
        return Ok(());
    }
    let differences = goldens::differences(&goldens::parse(file)?, &actual);
    for line in &differences {
        eprintln!("{line}");
    }
    if !differences.is_empty() {
        anyhow::bail!(
            "{} of {} golden digests differ ({}); if the arithmetic changed on purpose, regenerate them with `cargo xtask goldens` and say so in the commit",
            differences.len(),
            actual.len(),
            file.display()
        );
    }
    eprintln!("goldens: all {} digests match {} (kernels: {})", actual.len(), file.display(), lth::kernels::gemm::Path::chosen().name());
    Ok(())
}

fn provenance(command: &str, scale: Scale, trials: Option<usize>, data: DataSource, device: &str, machine: &str, git_revision: &str) -> figures::Provenance {
    let (command, device, machine, git_revision) = (command.to_string(), device.to_string(), machine.to_string(), git_revision.to_string());
    figures::Provenance { command, scale, trials, data, device, machine, git_revision }
}

/// This machine's CPU model and core count, from /proc/cpuinfo (Linux).
fn this_machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()));
    format!("{}, {cores} cores", model.unwrap_or_else(|| std::env::consts::ARCH.into()))
}

/// Writes a figures folder's claims report (by default its CLAIMS.md).
fn write_claims(dir: &Path, output: Option<PathBuf>) -> Result<()> {
    let output = output.unwrap_or_else(|| claims::report_path(dir));
    claims::write(dir, &output)?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

fn draw(figure: &figures::Figure, out: &Path, specs: &[ExperimentSpec], provenance: &figures::Provenance, dir: &Path) -> Result<()> {
    let outputs = figures::make(figure, &Store::new(out), specs, provenance, dir)?;
    eprintln!("wrote {}, {}, {} and {}", outputs.svg.display(), outputs.png.display(), outputs.csv.display(), outputs.md.display());
    Ok(())
}

/// `lth export`: one finished level of a run as a sparse model file.
fn export(run: &Path, level: usize, out: Option<PathBuf>) -> Result<()> {
    use lth::results::store::RunDir;
    if !run.join("spec.json").is_file() {
        anyhow::bail!("{}: not a run folder (`<out>/runs/<run-id>`, holding spec.json); `lth runs --out <out>` lists them", run.display());
    }
    let dir = RunDir { id: lth::spec::RunId(lth::files::file_name(run)), dir: run.to_path_buf() };
    if !dir.is_done(level) {
        let finished: Vec<String> = dir.finished_levels().iter().map(|l| l.to_string()).collect();
        anyhow::bail!("{}: --level {level} is not finished; finished levels: [{}]", run.display(), finished.join(", "));
    }
    let ticket = lth::export::ticket_of(&dir, level)?;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{}-level-{level:02}.sparse.safetensors", dir.id)));
    lth::export::write(&ticket, &out)?;
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).with_context(|| format!("reading {}", path.display()));
    let (sparse, dense) = (size(&out)?, size(&dir.final_path(level))?);
    println!(
        "wrote {}: {sparse} bytes, {:.1}% of the dense {} ({dense} bytes); Pm {:.1}%, final test accuracy {:.2}%",
        out.display(),
        100.0 * sparse as f64 / dense as f64,
        dir.final_path(level).display(),
        100.0 * ticket.mask.remaining(),
        100.0 * ticket.final_test_acc
    );
    Ok(())
}

/// `lth adopt`: every empty marker of a run checked and recorded, saying what was checked.
fn adopt(run: &Path, mirror: Option<String>, data_dir: Option<PathBuf>) -> Result<()> {
    use lth::results::store::RunDir;
    if !run.join("spec.json").is_file() {
        anyhow::bail!("{}: not a run folder (`<out>/runs/<run-id>`, holding spec.json); `lth runs --out <out>` lists them", run.display());
    }
    let dir = RunDir { id: lth::spec::RunId(lth::files::file_name(run)), dir: run.to_path_buf() };
    let dev = lth::device("cpu")?;
    let mut data = |spec: &lth::spec::RunSpec| -> std::result::Result<datasets::Dataset, String> {
        let args = DataArgs { mirror: mirror.clone(), data_dir: data_dir.clone(), data: DataChoice::Known(spec.data) };
        let (raw, _) = load_data(spec.method.dataset, &args).map_err(|e| one_line(&e))?;
        raw.prepare(spec, &dev).map_err(|e| e.to_string())
    };
    let adopted = lth::results::adopt::adopt(&dir, &mut data, &dev)?;
    if adopted.is_empty() {
        println!("{}: no empty markers; nothing to adopt", run.display());
    }
    for a in adopted {
        println!("recorded {}\n  checked: {}\n  not checked: {}", a.marker.display(), a.checked.join("; "), a.not_checked.join("; "));
    }
    Ok(())
}

/// `lth infer`: an exported model's test accuracy, checked against its run's, and its speed and
/// memory against the dense masked model (each timed `repeat` times, best kept).
fn infer(model: &Path, repeat: usize, device: &str, mirror: Option<String>, data_dir: Option<PathBuf>) -> Result<()> {
    let ticket = lth::export::load(model)?;
    let dev = lth::device(device)?;
    let data_args = DataArgs { mirror, data_dir, data: DataChoice::Known(ticket.spec.data) };
    let (raw, _) = load_data(ticket.spec.method.dataset, &data_args)?;
    let data = raw.prepare(&ticket.spec, &dev)?;
    let n = data.test.len();
    let timed = |sparse: bool| -> Result<(f64, f64)> {
        let mut best = f64::INFINITY;
        let mut acc = f64::NAN;
        for _ in 0..repeat {
            let start = std::time::Instant::now();
            acc = lth::export::evaluate(&ticket, &data, &dev, sparse)?.1;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok((acc, n as f64 / best))
    };
    let (acc, sparse_speed) = timed(true)?;
    let (dense_acc, dense_speed) = timed(false)?;
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}: {} level {} (Pm {:.1}%), {n} test images on {device}\n\
         test accuracy {:.2}% (the run's final: {:.2}%; dense masked model: {:.2}%)\n\
         sparse kernels: {sparse_speed:.0} images/s, parameters in memory {:.2} MiB\n\
         dense masked: {dense_speed:.0} images/s, parameters in memory {:.2} MiB\n\
         peak resident memory of this process (data, both models): {}",
        model.display(),
        ticket.run,
        ticket.level,
        100.0 * ticket.mask.remaining(),
        100.0 * acc,
        100.0 * ticket.final_test_acc,
        100.0 * dense_acc,
        mib(lth::export::parameter_bytes(&ticket, &dev, true)),
        mib(lth::export::parameter_bytes(&ticket, &dev, false)),
        peak_rss().unwrap_or_else(|| "not available".into()),
    );
    if acc != ticket.final_test_acc {
        anyhow::bail!(
            "{}: test accuracy {acc} differs from the run's final {}; was the dataset ({:?}, {}) changed since the run?",
            model.display(),
            ticket.final_test_acc,
            ticket.spec.method.dataset,
            ticket.spec.data
        );
    }
    Ok(())
}

/// The process's peak resident memory (Linux `VmHWM`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_string())
}
