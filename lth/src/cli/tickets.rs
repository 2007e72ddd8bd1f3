//! `lth export`, `lth infer` and `lth adopt`: a finished level of a run written as a compact
//! sparse model, that model evaluated through the sparse kernels, and a run folder's empty
//! markers checked and recorded.

use super::data::load_data;
use super::options::{at_least_one, one_line, SourceArgs};
use crate::data;
use crate::store::runs::RunDir;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Export {
    /// The run folder, `<out>/runs/<run-id>` (`lth runs` lists them).
    pub run: PathBuf,
    /// The finished level to export.
    #[arg(long)]
    pub level: usize,
    /// Where to write it (default: `<run-id>-level-NN.sparse.safetensors` here).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The run folder at `run`, or an error saying what one is and how to find them.
fn run_dir(run: &Path) -> Result<RunDir> {
    if !run.join("spec.json").is_file() {
        anyhow::bail!("{}: not a run folder (`<out>/runs/<run-id>`, holding spec.json); `lth runs --out <out>` lists them", run.display());
    }
    Ok(RunDir { id: crate::base::spec::RunId(crate::base::files::file_name(run)), dir: run.to_path_buf() })
}

impl Export {
    /// One finished level of a run as a sparse model file.
    pub fn run(self) -> Result<()> {
        let Export { run, level, out } = self;
        let dir = run_dir(&run)?;
        if !dir.is_done(level) {
            let finished: Vec<String> = dir.finished_levels().iter().map(|l| l.to_string()).collect();
            anyhow::bail!("{}: --level {level} is not finished; finished levels: [{}]", run.display(), finished.join(", "));
        }
        let ticket = crate::tools::export::ticket_of(&dir, level)?;
        let out = out.unwrap_or_else(|| PathBuf::from(format!("{}-level-{level:02}.sparse.safetensors", dir.id)));
        crate::tools::export::write(&ticket, &out)?;
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
}

#[derive(Args)]
pub struct Adopt {
    /// The run folder, `<out>/runs/<run-id>`.
    pub run: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

impl Adopt {
    /// Every empty marker of a run checked and recorded, saying what was checked.
    pub fn run(self) -> Result<()> {
        let Adopt { run, source } = self;
        let dir = run_dir(&run)?;
        let dev = crate::ops::device::named("cpu")?;
        let mut data = |spec: &crate::base::spec::RunSpec| -> std::result::Result<data::Dataset, String> {
            let (raw, _) = load_data(spec.method.dataset, &source.with_images(spec.data)).map_err(|e| one_line(&e))?;
            raw.prepare(spec, &dev).map_err(|e| e.to_string())
        };
        let adopted = crate::tools::adopt::adopt(&dir, &mut data, &dev)?;
        if adopted.is_empty() {
            println!("{}: no empty markers; nothing to adopt", run.display());
        }
        for a in adopted {
            println!("recorded {}\n  checked: {}\n  not checked: {}", a.marker.display(), a.checked.join("; "), a.not_checked.join("; "));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Infer {
    /// A file written by `lth export`.
    pub model: PathBuf,
    /// Timed passes over the test set per model (the best is reported).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub repeat: usize,
    /// cpu, cuda, cuda:N, auto or cpu-generic.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

impl Infer {
    /// An exported model's test accuracy, checked against its run's, and its speed and memory
    /// against the dense masked model (each timed `repeat` times, best kept).
    pub fn run(self) -> Result<()> {
        let Infer { model, repeat, device, source } = self;
        let ticket = crate::tools::export::load(&model)?;
        let dev = crate::ops::device::named(&device)?;
        let (raw, _) = load_data(ticket.spec.method.dataset, &source.with_images(ticket.spec.data))?;
        let data = raw.prepare(&ticket.spec, &dev)?;
        let n = data.test.len();
        let timed = |sparse: bool| -> Result<(f64, f64)> {
            let mut best = f64::INFINITY;
            let mut acc = f64::NAN;
            for _ in 0..repeat {
                let start = std::time::Instant::now();
                acc = crate::tools::export::evaluate(&ticket, &data, &dev, sparse)?.1;
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
            mib(crate::tools::export::parameter_bytes(&ticket, &dev, true)),
            mib(crate::tools::export::parameter_bytes(&ticket, &dev, false)),
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
}

/// The process's peak resident memory (Linux `VmHWM`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_string())
}
