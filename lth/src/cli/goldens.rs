//! `lth goldens`: the golden smoke runs trained, then their files' digests written or checked
//! against the goldens file.

use super::data::load_data;
use super::experiment::run_experiment;
use super::options::{check_experiments, JobArgs, SourceArgs};
use crate::base::spec::ExperimentSpec;
use crate::report::goldens;
use crate::store::runs::Store;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct Goldens {
    /// The goldens file.
    #[arg(long, default_value = "tests/goldens.txt")]
    pub file: PathBuf,
    /// Write the file from this machine's runs instead of checking it.
    #[arg(long)]
    pub write: bool,
    /// Results folder for the runs (default: a new temporary folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder of experiment specs.
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

impl Goldens {
    pub fn run(self) -> Result<()> {
        let Goldens { file, write, out, experiments, source } = self;
        let out = match out {
            Some(out) => out,
            None => {
                let dir = std::env::temp_dir().join(format!("lth-goldens-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                dir
            }
        };
        check_experiments(&experiments)?;
        let job = JobArgs { scale: goldens::SCALE, trials: None, device: "cpu".into(), jobs: None, out: out.clone() };
        for (name, data) in goldens::EXPERIMENTS {
            let spec = ExperimentSpec::load(&experiments.join(format!("{name}.toml")))?;
            let (raw, images) = load_data(spec.method.dataset, &source.with_images(data))?;
            run_experiment(&spec, &job, None, &raw, images)?;
        }
        let actual = goldens::digests(&Store::new(&out))?;
        if write {
            crate::base::files::write_atomic(&file, goldens::render(&actual).as_bytes())?;
            eprintln!("wrote {} digests to {} (kernels: {})", actual.len(), file.display(), crate::ops::gemm::Path::chosen().name());
            return Ok(());
        }
        let differences = goldens::differences(&goldens::parse(&file)?, &actual);
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
        eprintln!("goldens: all {} digests match {} (kernels: {})", actual.len(), file.display(), crate::ops::gemm::Path::chosen().name());
        Ok(())
    }
}
