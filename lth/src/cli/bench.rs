//! `lth bench`, `lth gpu-check` and `lth compare`: throughput beside the alternatives, a
//! device's parity with the CPU, and what changed between two results tables.

use super::options::at_least_five;
use crate::report::{compare, pr_comment};
use crate::tools::bench_tables;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct Bench {
    /// Multiply the number of timed steps (at 1, a full `--vs-pytorch` run took 77 minutes on a 2-core AMD EPYC).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Also time the same workloads in PyTorch (`python3`, or $LTH_PYTHON, with torch).
    #[arg(long)]
    pub vs_pytorch: bool,
    /// Only the rows whose workload contains this text, e.g. `evaluation` (case-insensitive).
    #[arg(long)]
    pub only: Option<String>,
    /// Timed repeats per side of each row, after one untimed warm-up round.
    #[arg(long, default_value_t = crate::tools::bench::MIN_REPEATS, value_parser = at_least_five)]
    pub repeats: usize,
    /// Also write the rows to this CSV (the source of the performance tables in docs/), rewritten after each row.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Time nothing: print the Markdown table of CSVs written by `--csv` (several: side by side).
    #[arg(long, num_args = 1.., conflicts_with_all = ["vs_pytorch", "only", "csv"])]
    pub table: Vec<PathBuf>,
    /// With --table: only the lth / PyTorch ratios, one line per workload (README's summary).
    #[arg(long, requires = "table")]
    pub ratios: bool,
}

impl Bench {
    pub fn run(self) -> Result<()> {
        let Bench { scale, vs_pytorch, only, repeats, csv, table, ratios } = self;
        if !table.is_empty() {
            let runs = table.iter().map(|path| bench_tables::read_csv(path)).collect::<Result<Vec<_>, _>>()?;
            print!(
                "{}",
                match &runs[..] {
                    _ if ratios => bench_tables::markdown_ratios(&runs),
                    [one] => bench_tables::markdown(one),
                    _ => bench_tables::markdown_runs(&runs),
                }
            );
            return Ok(());
        }
        let python = std::env::var("LTH_PYTHON").unwrap_or_else(|_| "python3".into());
        let options =
            crate::tools::bench::Options { scale, repeats, pytorch: vs_pytorch.then_some(python.as_str()), only: only.as_deref(), csv: csv.as_deref() };
        let report = crate::tools::bench::run(&options)?;
        if report.rows.is_empty() {
            anyhow::bail!("--only {:?} matches no benchmark row; run `lth bench` without it to see the workloads", only.unwrap_or_default());
        }
        print!("{}", bench_tables::markdown(&report));
        if let Some(peak) = crate::tools::bench::peak_rss_mb() {
            println!("\nPeak resident memory of the benchmark process (lth rows): {peak:.0} MB");
        }
        if let Some(path) = csv {
            // `run` wrote it after each row.
            eprintln!("bench: rows written to {}", path.display());
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct GpuCheck {
    /// cuda, cuda:N, or cpu / cpu-generic (the generic path on the CPU: a self-test).
    #[arg(long, default_value = "cuda")]
    pub device: String,
}

impl GpuCheck {
    pub fn run(self) -> Result<()> {
        let dev = crate::ops::device::named(&self.device)?;
        if !crate::tools::gpu_check::run(&dev)? {
            anyhow::bail!("gpu-check: {} does not train like the CPU (see the parity table)", self.device);
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Compare {
    /// The old table (with --comment: the base branch's figures folder).
    pub old: PathBuf,
    /// The new table (with --comment: the pull request's figures folder).
    pub new: PathBuf,
    #[arg(long)]
    pub comment: bool,
    /// The base branch's name, as the comment shows it.
    #[arg(long, default_value = "base", requires = "comment")]
    pub base_name: String,
    /// Say at the top that the pull request changes tables and no code.
    #[arg(long, requires = "comment")]
    pub tables_only: bool,
    /// Tables rerun on the runner rather than committed (comma-separated, e.g. fig5.csv,fig7.csv).
    #[arg(long, value_delimiter = ',', requires = "comment")]
    pub rerun: Vec<String>,
}

impl Compare {
    pub fn run(self) -> Result<()> {
        let Compare { old, new, comment, base_name, tables_only, rerun } = self;
        let text =
            if comment { pr_comment::comment(&old, &new, &pr_comment::Context { base: base_name, tables_only, rerun }) } else { compare::compare(&old, &new)? };
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        Ok(())
    }
}
