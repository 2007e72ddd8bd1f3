//! The whole `cargo xtask` surface, as clap derives it: the one source of `cargo xtask --help`,
//! of each command's flags and defaults, and of README's command table ([`command_table`],
//! checked by the tests and written by `cargo xtask readme`).

use clap::{Args, CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true,
    about = "The project's workflow commands: build `lth` and call it, check the outputs.",
    after_help = "Environment: LTH_DATA_MIRROR (mirror), LTH_DATA_DIR (dataset cache)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Subcommand)]
pub enum Task {
    /// Fetch data, run the missing runs, aggregate and draw into figures/ (default: every figure).
    Reproduce(Reproduce),
    /// Download and verify the datasets only (default: both).
    Data {
        #[arg(value_name = "mnist|cifar10", value_parser = ["mnist", "cifar10"])]
        datasets: Vec<String>,
        /// Mirror of the dataset files.
        #[arg(long, value_name = "URL|DIR")]
        mirror: Option<String>,
    },
    /// Training and evaluation throughput beside the alternatives (CPU), optionally beside PyTorch.
    Bench {
        /// Also time the same workloads in PyTorch (python3 with torch).
        #[arg(long)]
        vs_pytorch: bool,
        /// Only the rows whose workload contains TEXT, e.g. evaluation.
        #[arg(long, value_name = "TEXT")]
        only: Option<String>,
        /// Timed repeats per side of each row.
        #[arg(long, value_name = "N")]
        repeats: Option<String>,
        /// Also write the rows to FILE.
        #[arg(long, value_name = "FILE")]
        csv: Option<String>,
        /// Time nothing: print the Markdown table of CSVs written by --csv (several: side by side).
        #[arg(long, value_name = "FILE", num_args = 1..)]
        table: Vec<String>,
        /// With --table: only the lth / PyTorch ratios, one line per workload.
        #[arg(long, requires = "table")]
        ratios: bool,
    },
    /// Build the CUDA `lth` (nvcc from PyPI when none is installed) → target/lth-cuda.xz.
    CudaBuild {
        /// The GPU's compute capability [default: $CUDA_COMPUTE_CAP, else 90: H100/H200].
        #[arg(long, value_name = "N")]
        compute_cap: Option<String>,
    },
    /// CPU-vs-GPU parity and GPU throughput, on a GPU machine (xtask/gpu-check.sh needs no Rust).
    GpuCheck,
    /// Redraw figures/*.svg|png and CLAIMS.md from figures/*.csv (and figures/paper/).
    Figures {
        /// Fail if a drawing or claims report is stale instead of rewriting it (CI).
        #[arg(long)]
        check: bool,
    },
    /// Rewrite figures/CLAIMS.md (and figures/paper/CLAIMS.md): the paper's claims against the tables.
    Claims,
    /// Markdown for a PR: summary, paper patterns, per-cell changes judged against both tables' noise.
    Compare {
        #[arg(value_name = "OLD.csv")]
        old: String,
        #[arg(value_name = "NEW.csv")]
        new: String,
    },
    /// Rerun the golden smoke runs and rewrite tests/goldens.txt; only after an intended change to the arithmetic.
    Goldens {
        /// Compare with tests/goldens.txt instead of rewriting it.
        #[arg(long)]
        check: bool,
        /// Mirror of the dataset files.
        #[arg(long, value_name = "URL|DIR")]
        mirror: Option<String>,
    },
    /// One `lth run … --trial N` line per (experiment, trial), for GNU parallel; with --slurm, a Slurm job array plus a figures job.
    Plan(Plan),
    /// The whole CI, as .ci/run and the GitHub workflow run it; ends `ci: N passed, M failed`.
    Ci {
        /// Keep the regenerated smoke figures in DIR/figures.
        #[arg(long, value_name = "DIR")]
        out: Option<String>,
    },
    /// The pull-request results comment against git ref BASE (DIR/comment.md and DIR/png/).
    PrComment {
        /// The base branch's git ref, e.g. origin/main.
        base: String,
        #[arg(long, value_name = "DIR", default_value = "target/pr-results")]
        out: String,
    },
    /// Rewrite README's command table from these commands' help (--check: fail if it differs).
    Readme {
        /// Fail if README's table differs instead of rewriting it.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Args, Clone)]
pub struct Reproduce {
    /// Figures (default: every implemented one).
    #[arg(value_name = "FIG")]
    pub figures: Vec<String>,
    /// How much training: seconds, minutes on a laptop, or the paper's.
    #[arg(long, value_name = "smoke|quick|paper", default_value = "quick")]
    pub scale: String,
    /// Override the scale's number of trials.
    #[arg(long, value_name = "N")]
    pub trials: Option<String>,
    /// Trainings run in parallel (default: one per CPU core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<String>,
    /// Where to train.
    #[arg(long, value_name = "cpu|cuda[:N]|auto", default_value = "cpu")]
    pub device: String,
    /// Results folder.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: String,
    /// Mirror of the dataset files.
    #[arg(long, value_name = "URL|DIR")]
    pub mirror: Option<String>,
    /// CIFAR-10 images.
    #[arg(long, value_name = "real|synthetic|folder:PATH|URL")]
    pub data: Option<String>,
    /// Where figures, tables and provenance go.
    #[arg(long, value_name = "DIR", default_value = "figures")]
    pub figures_dir: String,
}

#[derive(Args, Clone)]
pub struct Plan {
    #[command(flatten)]
    pub job: Reproduce,
    /// Write a Slurm script (default target/slurm/lth-FIGS-SCALE.sh) that `bash FILE` submits.
    #[arg(long)]
    pub slurm: bool,
    /// Where --slurm writes its script.
    #[arg(long, value_name = "FILE", requires = "slurm")]
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

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Task, clap::Error> {
    Cli::try_parse_from(std::iter::once("cargo xtask".to_string()).chain(args.iter().cloned())).map(|cli| cli.task)
}

/// README's command table: for each command, its usage with every flag (as clap knows them:
/// names, value names, positionals) and, indented below, its one-line help.
pub fn command_table() -> String {
    let mut cli = Cli::command();
    cli.build();
    let mut text = String::new();
    for command in cli.get_subcommands().filter(|c| c.get_name() != "help") {
        let mut usage = format!("cargo xtask {}", command.get_name());
        for arg in command.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
            let value = arg.get_value_names().and_then(|v| v.first()).map_or_else(|| arg.get_id().to_string().to_uppercase(), |v| v.to_string());
            let repeated = matches!(arg.get_action(), clap::ArgAction::Append);
            let word = match arg.get_long() {
                Some(long) if !arg.get_action().takes_values() => format!("--{long}"),
                Some(long) => format!("--{long} {value}"),
                None => format!("{value}{}", if repeated { "..." } else { "" }),
            };
            usage += &if arg.is_required_set() { format!(" {word}") } else { format!(" [{word}]") };
        }
        let about = command.get_about().map(|a| a.to_string()).unwrap_or_default();
        text.push_str(&format!(
            "{usage}
    {about}
"
        ));
    }
    text
}

/// README's table between its markers replaced by `table`; None if the markers are missing.
pub fn with_table(readme: &str, table: &str) -> Option<String> {
    let (start, end) = (README_START, README_END);
    let from = readme.find(start)? + start.len();
    let to = from + readme[from..].find(end)?;
    Some(format!("{}\n```\n{table}```\n{}", &readme[..from], &readme[to..]))
}

pub const README_START: &str = "<!-- cargo xtask readme: generated from xtask/src/flags.rs -->";
pub const README_END: &str = "<!-- end of cargo xtask readme -->";

/// A generated table's first line: `<!-- generated by `lth bench --table FILE...`: ... -->` or
/// `<!-- generated by `lth beside-paper DIR`: ... -->`.
pub const GENERATED_START: &str = "<!-- generated by `lth ";
/// Its last line.
pub const GENERATED_END: &str = "<!-- end of generated table -->";

/// `text` with every generated table's body replaced by what `run` gives for the command its
/// first line names (`lth`'s arguments). Only `lth bench --table` and `lth beside-paper` may be
/// named: they read committed tables, and the block must not run anything slow or with effects.
pub fn with_generated_tables(text: &str, mut run: impl FnMut(&[String]) -> anyhow::Result<String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut lines = text.split_inclusive('\n').enumerate();
    while let Some((i, line)) = lines.next() {
        out += line;
        let Some(rest) = line.strip_prefix(GENERATED_START) else {
            continue;
        };
        let command = rest.split('`').next().unwrap_or("");
        let args: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        let reads_tables = match args.first().map(String::as_str) {
            Some("bench") => args.iter().any(|a| a == "--table"),
            Some("beside-paper") => args.len() == 2,
            _ => false,
        };
        if !reads_tables {
            anyhow::bail!("line {}: a generated table may only name `lth bench --table FILE...` or `lth beside-paper DIR`, not `lth {command}`", i + 1);
        }
        out += &run(&args)?;
        loop {
            match lines.next() {
                Some((_, end)) if end.trim_end() == GENERATED_END => {
                    out += end;
                    break;
                }
                Some(_) => {}
                None => anyhow::bail!("line {}: the generated table has no `{GENERATED_END}` line after it", i + 1),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_parse_as_before() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let Ok(Task::Reproduce(r)) = parse(&args("reproduce fig3 fig4 --scale smoke --out /tmp/r")) else { panic!("reproduce") };
        assert_eq!(
            (r.figures, r.scale.as_str(), r.device.as_str(), r.out.as_str(), r.figures_dir.as_str()),
            (vec!["fig3".into(), "fig4".into()], "smoke", "cpu", "/tmp/r", "figures")
        );
        let Ok(Task::Plan(p)) = parse(&args("plan fig8 --scale paper --device cuda --slurm")) else { panic!("plan") };
        assert!(p.slurm && p.job.device == "cuda" && p.slurm_script.is_none());
        assert!(matches!(parse(&args("figures --check")), Ok(Task::Figures { check: true })));
        assert!(matches!(parse(&args("pr-comment origin/main")), Ok(Task::PrComment { out, .. }) if out == "target/pr-results"));
        assert!(parse(&args("figures --nope")).is_err(), "an unknown flag is refused");
        assert!(parse(&args("compare one.csv")).is_err(), "compare needs two tables");
    }

    #[test]
    fn readme_command_table_is_generated_from_the_flags() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let current = with_table(&readme, &command_table()).expect("README.md has the command table's markers");
        assert!(current == readme, "README.md's command table differs from `cargo xtask --help`; run `cargo xtask readme`");
    }

    #[test]
    fn a_generated_table_is_replaced_by_its_commands_output_and_nothing_else_is() {
        let text = "intro\n<!-- generated by `lth bench --table a.csv b.csv`: edit the CSVs -->\n| old |\n| rows |\n<!-- end of generated table -->\noutro\n";
        let mut seen = Vec::new();
        let fresh = with_generated_tables(text, |args| {
            seen.push(args.join(" "));
            Ok("| new |\n".into())
        })
        .unwrap();
        assert_eq!(fresh, "intro\n<!-- generated by `lth bench --table a.csv b.csv`: edit the CSVs -->\n| new |\n<!-- end of generated table -->\noutro\n");
        assert_eq!(seen, ["bench --table a.csv b.csv"]);
        let unchanged = "no tables here\n";
        assert_eq!(with_generated_tables(unchanged, |_| unreachable!()).unwrap(), unchanged);
        let open = "<!-- generated by `lth bench --table a.csv` -->\n| old |\n";
        assert!(with_generated_tables(open, |_| Ok(String::new())).unwrap_err().to_string().contains("no `<!-- end of generated table -->`"));
        let other = "<!-- generated by `lth run x.toml` -->\n<!-- end of generated table -->\n";
        assert!(with_generated_tables(other, |_| Ok(String::new())).unwrap_err().to_string().contains("may only name `lth bench --table"));
        let beside = "<!-- generated by `lth beside-paper figures/x` -->\n<!-- end of generated table -->\n";
        assert_eq!(
            with_generated_tables(beside, |_| Ok("| t |\n".into())).unwrap(),
            "<!-- generated by `lth beside-paper figures/x` -->\n| t |\n<!-- end of generated table -->\n"
        );
    }
}
