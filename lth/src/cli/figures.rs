//! `lth figure`, `lth claims`, `lth beside-paper` and `lth plot`: finished runs aggregated and
//! drawn, the paper's claims checked against the tables; and the pieces `lth reproduce` shares with them.

use super::options::{check_experiments, check_writable, FigureArgs};
use crate::base::spec::{DataSource, ExperimentSpec, Scale};
use crate::data::copies::{self, DataChoice};
use crate::data::fetch::Source;
use crate::report::{claims, figures, plot};
use crate::store::runs::Store;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Figure {
    pub figure: String,
    #[arg(long, value_enum, default_value = "quick")]
    pub scale: Scale,
    /// Results folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Draw the runs made on `real` or `synthetic` CIFAR-10 images, or on a copy
    /// (`folder:<path-or-url>`, or its `data` label such as `jpeg-copy-<sha256>`).
    #[arg(long, default_value = "real")]
    pub data: DataChoice,
    /// The trials the runs were made with (`--trials` of `run` or `reproduce`).
    #[arg(long, value_parser = super::options::trials_in_range)]
    pub trials: Option<usize>,
    /// The device the runs trained on, for the provenance record.
    #[arg(long, default_value = "not recorded")]
    pub device: String,
    #[command(flatten)]
    pub output: FigureArgs,
}

impl Figure {
    pub fn run(self) -> Result<()> {
        let Figure { figure, scale, out, data, trials, device, output } = self;
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
        write_claims(&output.figures_dir, None)
    }
}

#[derive(Args)]
pub struct Claims {
    /// A figures folder (figN.csv with their figN.md).
    pub dir: PathBuf,
    /// Write the report here instead of <dir>/CLAIMS.md.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl Claims {
    pub fn run(self) -> Result<()> {
        write_claims(&self.dir, self.output)
    }
}

#[derive(Args)]
pub struct BesidePaper {
    /// A figures folder holding fig7.csv, fig8.csv or fig8r.csv with their figN.md.
    pub dir: PathBuf,
}

impl BesidePaper {
    pub fn run(self) -> Result<()> {
        print!("{}", claims::beside_paper(&self.dir)?);
        Ok(())
    }
}

#[derive(Args)]
pub struct Plot {
    pub figure: String,
    pub table: PathBuf,
    pub svg: PathBuf,
    #[arg(long)]
    pub png: Option<PathBuf>,
}

impl Plot {
    pub fn run(self) -> Result<()> {
        let figure = figures::find(&self.figure)?;
        plot::draw_from_csv(figure, &self.table, &self.svg, self.png.as_deref()).with_context(|| format!("drawing {}", self.svg.display()))
    }
}

/// The experiments behind some figures, each once, in order.
pub fn experiments_of(figures: &[&figures::Figure]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for &name in figures.iter().flat_map(|f| f.experiments.iter()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The specs of `names` from the experiments folder.
pub fn load_specs(dir: &Path, names: &[&str]) -> Result<Vec<ExperimentSpec>> {
    check_experiments(dir)?;
    Ok(names.iter().map(|name| ExperimentSpec::load(&dir.join(format!("{name}.toml")))).collect::<crate::Result<_>>()?)
}

/// The figures named on the command line; every implemented one when none is.
pub fn resolve_figures(names: &[String]) -> Result<Vec<&'static figures::Figure>> {
    if names.is_empty() {
        return Ok(figures::FIGURES.iter().collect());
    }
    Ok(names.iter().map(|n| figures::find(n)).collect::<crate::Result<_>>()?)
}

pub fn provenance(
    command: &str,
    scale: Scale,
    trials: Option<usize>,
    data: DataSource,
    device: &str,
    machine: &str,
    git_revision: &str,
) -> figures::Provenance {
    let (command, device, machine, git_revision) = (command.to_string(), device.to_string(), machine.to_string(), git_revision.to_string());
    figures::Provenance { command, scale, trials, data, device, machine, git_revision }
}

/// This machine's CPU model and core count (Linux).
pub fn this_machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{}, {cores} cores", crate::tools::bench::cpu_model().unwrap_or_else(|| std::env::consts::ARCH.into()))
}

/// Writes a figures folder's claims report (by default its CLAIMS.md).
pub fn write_claims(dir: &Path, output: Option<PathBuf>) -> Result<()> {
    let output = output.unwrap_or_else(|| claims::report_path(dir));
    claims::write(dir, &output)?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

pub fn draw(figure: &figures::Figure, out: &Path, specs: &[ExperimentSpec], provenance: &figures::Provenance, dir: &Path) -> Result<()> {
    let outputs = figures::make(figure, &Store::new(out), specs, provenance, dir)?;
    eprintln!("wrote {}, {}, {} and {}", outputs.svg.display(), outputs.png.display(), outputs.csv.display(), outputs.md.display());
    Ok(())
}
