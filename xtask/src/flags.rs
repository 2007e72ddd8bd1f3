//! The whole `cargo xtask` surface. Hand-parsed to keep xtask's dependencies to xshell and
//! anyhow; `HELP` is the reference.

use anyhow::{bail, Context, Result};

pub const HELP: &str = "\
cargo xtask <command>

  reproduce [FIG...] [--scale smoke|quick|paper] [--trials N] [--jobs N] [--device cpu|cuda[:N]|auto]
            [--out DIR] [--mirror URL|DIR] [--figures-dir DIR] [--data real|synthetic|folder:PATH|URL]
        fetch data, run the missing runs, aggregate and draw into figures/ (default: every figure)
  data [mnist|cifar10] [--mirror URL|DIR]
        download and verify the datasets (default: both)
  figures [--check]            redraw figures/*.svg|png from figures/*.csv, and those of its subfolders
                               (figures/paper/), and their CLAIMS.md (--check: fail if stale)
  claims                       check the paper's claims against the tables in figures/ (and its
                               subfolders) and write each folder's CLAIMS.md
  compare OLD.csv NEW.csv      Markdown summary and per-cell changes, judged against both tables' trial spread
  goldens [--check] [--mirror URL|DIR]
                               rerun the golden smoke runs and rewrite tests/goldens.txt (--check: compare
                               instead); only after an intended change to the arithmetic
  bench [--vs-pytorch] [--only TEXT] [--repeats N] [--csv FILE] [--table FILE]
                               training and evaluation throughput beside the alternatives (CPU);
                               --vs-pytorch also times the same workloads in PyTorch (python3 with torch);
                               --only: the rows whose workload contains TEXT, e.g. evaluation
  cuda-build [--compute-cap N] build the CUDA lth binary, fetching nvcc from PyPI when none is
                               installed (default N: $CUDA_COMPUTE_CAP or 90, i.e. H100/H200)
  gpu-check                    CPU-vs-CUDA parity and GPU throughput (on a GPU machine; runs
                               xtask/gpu-check.sh, which needs no Rust toolchain)
  ci [--out DIR]                the whole CI, as .ci/run and .github/workflows/ci.yml run it: actionlint on
                               the workflows, the tests, figures --check, the smoke reproduces compared to
                               the committed tables byte for byte, the Slurm check; ends `ci: N passed, M
                               failed` (--out: keep the regenerated smoke figures in DIR/figures)
  pr-comment BASE [--out DIR]  the pull-request results comment against git ref BASE: the base's tables
                               against this checkout's, the smoke tables rerun first if code or specs
                               changed; writes DIR/comment.md and the changed figures' DIR/png/ (default
                               DIR: target/pr-results)
  plan [FIG...] [--scale S] [--trials N] [--device D] [--out DIR] [--mirror URL|DIR] [--data real|synthetic|folder:PATH|URL]
       [--slurm [--slurm-script FILE] [--figures-dir DIR]]
        one `lth run` command per (experiment, trial), each experiment once, for GNU parallel; with
        --slurm, write them instead as a Slurm script (default target/slurm/lth-FIGS-SCALE.sh) that
        `bash FILE` submits as a job array plus a figures job depending on it (afterok)

Environment: LTH_DATA_MIRROR (mirror), LTH_DATA_DIR (dataset cache).
";

pub enum Task {
    Help,
    Reproduce(Reproduce),
    Data { datasets: Vec<String>, mirror: Option<String> },
    Figures { check: bool },
    Claims,
    Compare { old: String, new: String },
    Goldens { check: bool, mirror: Option<String> },
    Bench { vs_pytorch: bool, only: Option<String>, repeats: Option<String>, csv: Option<String>, table: Option<String> },
    CudaBuild { compute_cap: String },
    GpuCheck,
    Plan(Reproduce),
    Ci { out: Option<String> },
    PrComment { base: String, out: String },
}

pub struct Reproduce {
    pub figures: Vec<String>,
    pub scale: String,
    pub trials: Option<String>,
    pub device: String,
    pub out: String,
    pub mirror: Option<String>,
    pub figures_dir: String,
    pub jobs: Option<String>,
    pub data: Option<String>,
    /// `plan` only: write a Slurm script instead of printing the commands.
    pub slurm: bool,
    pub slurm_script: Option<String>,
}

impl Reproduce {
    /// The flags `lth` takes for its data.
    pub fn data_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(mirror) = &self.mirror {
            args.extend(["--mirror".into(), mirror.clone()]);
        }
        if let Some(data) = &self.data {
            args.extend(["--data".into(), data.clone()]);
        }
        args
    }

    /// The flags `lth` takes for a job.
    pub fn job_args(&self) -> Vec<String> {
        let mut args = vec!["--scale".into(), self.scale.clone(), "--device".into(), self.device.clone(), "--out".into(), self.out.clone()];
        if let Some(trials) = &self.trials {
            args.extend(["--trials".into(), trials.clone()]);
        }
        if let Some(jobs) = &self.jobs {
            args.extend(["--jobs".into(), jobs.clone()]);
        }
        args
    }
}

pub fn parse(args: &[String]) -> Result<Task> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Task::Help);
    };
    let mut positional = Vec::new();
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" | "--vs-pytorch" | "--slurm" => options.push((arg.clone(), None)),
            "-h" | "--help" => return Ok(Task::Help),
            flag if flag.starts_with("--") => {
                let value = it.next().with_context(|| format!("{flag} needs a value; see `cargo xtask --help`"))?;
                options.push((flag.to_string(), Some(value.clone())));
            }
            _ => positional.push(arg.clone()),
        }
    }
    let take = |name: &str| options.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.clone());
    let known: &[&str] = match command.as_str() {
        "reproduce" => &["--scale", "--trials", "--jobs", "--device", "--out", "--mirror", "--figures-dir", "--data"],
        "plan" => &["--scale", "--trials", "--jobs", "--device", "--out", "--mirror", "--figures-dir", "--data", "--slurm", "--slurm-script"],
        "data" => &["--mirror"],
        "figures" => &["--check"],
        "goldens" => &["--check", "--mirror"],
        "bench" => &["--vs-pytorch", "--only", "--repeats", "--csv", "--table"],
        "cuda-build" => &["--compute-cap"],
        "ci" => &["--out"],
        "pr-comment" => &["--out"],
        _ => &[],
    };
    if let Some((bad, _)) = options.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        bail!("`cargo xtask {command}` has no option {bad}; see `cargo xtask --help`");
    }
    let job = || Reproduce {
        figures: positional.clone(),
        scale: take("--scale").unwrap_or_else(|| "quick".into()),
        trials: take("--trials"),
        device: take("--device").unwrap_or_else(|| "cpu".into()),
        out: take("--out").unwrap_or_else(|| "results".into()),
        mirror: take("--mirror"),
        figures_dir: take("--figures-dir").unwrap_or_else(|| "figures".into()),
        jobs: take("--jobs"),
        data: take("--data"),
        slurm: options.iter().any(|(k, _)| k == "--slurm"),
        slurm_script: take("--slurm-script"),
    };
    Ok(match command.as_str() {
        "reproduce" => Task::Reproduce(job()),
        "plan" => Task::Plan(job()),
        "data" => {
            let datasets = if positional.is_empty() { vec!["mnist".into(), "cifar10".into()] } else { positional.clone() };
            Task::Data { datasets, mirror: take("--mirror") }
        }
        "figures" => Task::Figures { check: options.iter().any(|(k, _)| k == "--check") },
        "compare" => match positional.as_slice() {
            [old, new] => Task::Compare { old: old.clone(), new: new.clone() },
            _ => bail!("usage: cargo xtask compare OLD.csv NEW.csv"),
        },
        "goldens" => Task::Goldens { check: options.iter().any(|(k, _)| k == "--check"), mirror: take("--mirror") },
        "bench" => Task::Bench {
            vs_pytorch: options.iter().any(|(k, _)| k == "--vs-pytorch"),
            only: take("--only"),
            repeats: take("--repeats"),
            csv: take("--csv"),
            table: take("--table"),
        },
        "cuda-build" => {
            Task::CudaBuild { compute_cap: take("--compute-cap").or_else(|| std::env::var("CUDA_COMPUTE_CAP").ok()).unwrap_or_else(|| "90".into()) }
        }
        "gpu-check" => Task::GpuCheck,
        "ci" => Task::Ci { out: take("--out") },
        "pr-comment" => match positional.as_slice() {
            [base] => Task::PrComment { base: base.clone(), out: take("--out").unwrap_or_else(|| "target/pr-results".into()) },
            _ => bail!("usage: cargo xtask pr-comment BASE [--out DIR], e.g. `cargo xtask pr-comment origin/main`"),
        },
        "claims" => Task::Claims,
        "help" | "-h" | "--help" => Task::Help,
        other => bail!("unknown command `{other}`; see `cargo xtask --help`"),
    })
}
