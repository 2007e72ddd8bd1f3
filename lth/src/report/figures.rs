//! A figure made from its runs (the catalogue is `catalog.rs`): its table computed, drawn, and
//! the provenance written beside it (`figN.md`: command, scale, data, git
//! revision, device, date, and the table's headline numbers).

use crate::base::error::{Error, Result};
use crate::base::files;
use crate::base::spec::{Codec, DataSource, ExperimentSpec, Procedure, Scale};
use crate::lottery::instability;
use crate::report::density;
use crate::report::plot::{self, CheckpointRow, Fig3Row, InstabilityRow, SparsityRow};
use crate::report::table;
use crate::store::record::read_csv;
use crate::store::runs::Store;
use std::path::{Path, PathBuf};

pub use crate::report::catalog::{find, Checkpoint, Figure, Kind, FIGURES};

/// Where a figure's files go.
pub struct Outputs {
    pub csv: PathBuf,
    pub svg: PathBuf,
    pub png: PathBuf,
    pub md: PathBuf,
}

impl Outputs {
    pub fn new(dir: &Path, id: &str) -> Self {
        Outputs { csv: dir.join(format!("{id}.csv")), svg: dir.join(format!("{id}.svg")), png: dir.join(format!("{id}.png")), md: dir.join(format!("{id}.md")) }
    }
}

/// What produced a figure, and which runs it draws.
pub struct Provenance {
    pub command: String,
    pub scale: Scale,
    /// The trials asked for (`--trials`); None: the scale's own number.
    pub trials: Option<usize>,
    /// The images requested for CIFAR-10 experiments (MNIST is always real).
    pub data: DataSource,
    pub device: String,
    /// The machine and wall time behind the runs.
    pub machine: String,
    /// The code's revision, read when the runs started (see [`git_revision`]).
    pub git_revision: String,
}

/// Aggregates exactly the runs that `specs` expand to for `figure` (at the provenance's scale,
/// trials and data), writes its table, drawings and provenance into `dir`.
pub fn make(figure: &Figure, store: &Store, specs: &[ExperimentSpec], provenance: &Provenance, dir: &Path) -> Result<Outputs> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
    let mut records = Vec::new();
    let mut sources = Vec::new();
    let mut run_ids = Vec::new();
    // The instability figure's path points (its analyses), instead of curve records.
    let mut paths = Vec::new();
    // Per-layer densities, for figures of pruning at initialization (layer collapse).
    let mut densities = Vec::new();
    // Trainings whose loss went NaN or infinite: named in the provenance, never averaged in.
    let mut diverged = Vec::new();
    let scale = provenance.scale.as_str();
    for experiment in figure.experiments {
        let spec = specs
            .iter()
            .find(|s| s.name == *experiment)
            .ok_or_else(|| Error::Invalid(format!("figure {} draws experiment `{experiment}`, whose spec was not loaded", figure.id)))?;
        // MNIST has no synthetic stand-in: `plan` keeps its experiments on their real runs.
        let plan = spec.plan(provenance.scale, provenance.trials, provenance.data)?;
        if figure.kind == Kind::Instability {
            let analysed = match &spec.sizes(provenance.scale)?.instability {
                Some(sizes) => instability::finished(store, &plan, sizes)?,
                None => (Vec::new(), 0, 0),
            };
            match analysed {
                (found, done, planned) if !found.is_empty() => {
                    sources.push(format!("`{experiment}`: {}, {done} of {planned} planned analyses finished", describe(&found[0].data)));
                    run_ids.extend(plan.iter().filter(|p| p.spec.procedure == Procedure::Ticket).map(|p| p.spec.id()));
                    paths.extend(found);
                }
                _ => sources.push(format!("`{experiment}`: no finished instability analyses at this scale (not drawn)")),
            }
            continue;
        }
        let finished = table::load_records(store, &plan)?;
        if !finished.diverged.is_empty() {
            let list = finished.diverged.join(", ");
            eprintln!("warning: {}: {} `{experiment}` trainings diverged (NaN or infinite loss) and are left out: {list}", figure.id, finished.diverged.len());
            diverged.push(format!("`{experiment}`: {} of {} finished trainings, left out of the table: {list}", finished.diverged.len(), finished.finished));
        }
        if finished.records.is_empty() {
            if !finished.diverged.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: every finished `{experiment}` training at scale `{scale}` diverged (NaN or infinite loss: {}); a diverged training is no result: lower the learning rate in its spec",
                    figure.id,
                    finished.diverged.join(", ")
                )));
            }
            // A figure of several networks (Figure 1) draws those that have runs at this scale:
            // at `paper` scale a CPU finishes LeNet long before the Conv networks.
            sources.push(format!("`{experiment}`: no finished runs at this scale (not drawn)"));
            continue;
        }
        if finished.finished < finished.planned {
            eprintln!(
                "warning: {}: {} of the {} planned `{experiment}` trainings at scale `{scale}` are not finished; the figure shows the finished ones",
                figure.id,
                finished.planned - finished.finished,
                finished.planned
            );
        }
        let data = describe(&finished.records[0].key.data);
        sources.push(format!("`{experiment}`: {data}, {} of {} planned trainings finished", finished.finished, finished.planned));
        records.extend(finished.records);
        run_ids.extend(finished.runs);
        if plan.iter().any(|p| p.spec.procedure.at_init()) {
            densities.push(density::table(store, &plan)?);
        }
    }
    if records.is_empty() && paths.is_empty() {
        return Err(table::nothing_finished(store, &figure.experiments.join("`, `"), scale));
    }
    let data: Vec<DataSource> = records.iter().map(|r| r.key.data).chain(paths.iter().map(|p| p.data)).collect();
    let synthetic = data.contains(&DataSource::Synthetic);
    let copy = data.iter().find_map(|d| match d {
        DataSource::Copy(copy) => Some(*copy),
        _ => None,
    });
    let frame = match figure.kind {
        Kind::Curves => table::fig3(&table::curves_frame(&records)?)?,
        Kind::Sparsity(_) => table::sparsity(&table::curves_frame(&records)?)?,
        Kind::Checkpoints(points) => table::checkpoints(&table::curves_frame(&records)?, &points.iter().map(|c| c.fraction).collect::<Vec<_>>())?,
        Kind::Instability => table::instability(&paths)?,
    };
    let out = Outputs::new(dir, figure.id);
    // The table goes into place only after its drawings, so a kill in between leaves the old
    // table beside the old drawings, never a new table beside drawings of the old one.
    let csv = files::unique_temp(&out.csv);
    table::write_csv(&frame, &csv)?;
    let summary = plot::draw(figure, &csv, Some(provenance.scale.as_str()), &out.svg, Some(&out.png))
        .and_then(|()| summarise(figure, &csv))
        .and_then(|summary| files::rename(&csv, &out.csv).map(|()| summary))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&csv);
        })?;
    let runs = run_ids.iter().map(|id| format!("- `{id}`\n")).collect::<String>();
    let warning = if synthetic {
        "**Synthetic data.** The CIFAR-10 runs behind this figure trained on a generated set in the CIFAR-10 file format \
         (`--data synthetic`), not on CIFAR-10: the numbers show the pipeline works, not the paper's results. \
         See README for reproducing on real CIFAR-10.\n\n"
            .to_string()
    } else if let Some(copy) = copy {
        let lossy = match copy.codec {
            Codec::Jpeg => " Its images are JPEG files: lossy, slightly degraded, so these are CIFAR-10 results on degraded images.",
            Codec::Png => "",
        };
        format!(
            "**A copy of CIFAR-10, not the official files.** The CIFAR-10 runs behind this figure trained on images decoded from an \
             image-folder copy (`--data folder:…`) whose SHA-256 is `{}`.{lossy}\n\n",
            copy.hex()
        )
    } else {
        String::new()
    };
    let text = format!(
        "# {id}: {title}\n\n{warning}\
         Generated by `{command}`; do not edit, rerun that command instead.\n\n\
         | | |\n|---|---|\n\
         | scale | `{scale}` |\n| data | {data} |\n{diverged}| git revision | `{rev}` |\n| device | {device} |\n| machine | {machine} |\n| date (UTC) | {date} |\n\
         | table | [`{id}.csv`]({id}.csv) |\n\n{notes}{summary}\n{densities}\
         Runs aggregated (`<out>/runs/<run-id>`; exactly the runs the experiment specs expand to):\n\n{runs}",
        id = figure.id,
        title = figure.title,
        command = provenance.command,
        data = sources.join("; "),
        diverged = if diverged.is_empty() { String::new() } else { format!("| diverged | {} |\n", diverged.join("; ")) },
        rev = provenance.git_revision,
        device = provenance.device,
        machine = provenance.machine,
        date = today(),
        notes = if figure.notes.is_empty() { String::new() } else { format!("{}\n\n", figure.notes) },
        densities = densities.iter().map(|t| format!("{t}\n")).collect::<String>(),
    );
    files::write_atomic(&out.md, text.as_bytes())?;
    Ok(out)
}

/// The `data` row of a provenance file: which images an experiment's runs trained on.
fn describe(data: &DataSource) -> String {
    match data {
        DataSource::Real => "real".into(),
        DataSource::Synthetic => "**synthetic** (generated stand-in, not CIFAR-10)".into(),
        DataSource::Copy(copy) => {
            let lossy = if copy.codec == Codec::Jpeg { " (lossy)" } else { "" };
            format!("**{} copy of CIFAR-10**{lossy}, not the official files, SHA-256 `{}`", copy.codec.name().to_uppercase(), copy.hex())
        }
    }
}

/// The headline numbers of a figure's table, for its provenance file.
fn summarise(figure: &Figure, table: &Path) -> Result<String> {
    Ok(match figure.kind {
        Kind::Curves => fig3_summary(&read_csv(table)?),
        Kind::Sparsity(procedures) => sparsity_summary(&read_csv(table)?, procedures),
        Kind::Checkpoints(points) => checkpoint_summary(&read_csv(table)?, points),
        Kind::Instability => instability_summary(&read_csv(table)?),
    })
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn fig3_summary(rows: &[Fig3Row]) -> String {
    let mut s = String::from(
        "Test accuracy (%) at the last iteration, mean [min, max] over the `n` curves:\n\n\
         | procedure | level | Pm (%) | n | iteration | test acc |\n|---|---|---|---|---|---|\n",
    );
    let last = rows.iter().map(|r| r.iteration).max().unwrap_or(0);
    for r in rows.iter().filter(|r| r.iteration == last) {
        s += &format!(
            "| {} | {} | {:.1} | {} | {} | {} [{}, {}] |\n",
            r.procedure,
            r.level,
            100.0 * r.remaining,
            r.n,
            r.iteration,
            pct(r.test_acc_mean),
            pct(r.test_acc_min),
            pct(r.test_acc_max)
        );
    }
    s
}

fn checkpoint_summary(rows: &[CheckpointRow], points: &[Checkpoint]) -> String {
    let mut s = String::from(
        "Test accuracy (%) at each checkpoint, mean [min, max] over the `n` curves per point:\n\n\
         | experiment | procedure | level | Pm (%) | checkpoint | iteration | n | test acc |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let label = points.get(r.checkpoint).map_or("?", |c| c.label);
        s += &format!(
            "| {} | {} | {} | {:.1} | {label} | {:.0} | {} | {} [{}, {}] |\n",
            r.experiment,
            r.procedure,
            r.level,
            100.0 * r.remaining,
            r.iteration,
            r.n,
            pct(r.test_acc_mean),
            pct(r.test_acc_min),
            pct(r.test_acc_max)
        );
    }
    s
}

fn instability_summary(rows: &[InstabilityRow]) -> String {
    let mut s = String::from(
        "Error barrier (percentage points of test error), mean [min, max] over the `n` pairs of copies:\n\n\
         | experiment | level | Pm (%) | copies start at iteration | n | error barrier (pp) |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {:.1} | {} | {} | {:.2} [{:.2}, {:.2}] |\n",
            r.experiment,
            r.level,
            100.0 * r.remaining,
            r.rewind,
            r.n,
            100.0 * r.barrier_mean,
            100.0 * r.barrier_min,
            100.0 * r.barrier_max
        );
    }
    s
}

fn sparsity_summary(rows: &[SparsityRow], procedures: &[&str]) -> String {
    let mut s = String::from(
        "Mean [min, max] over the `n` curves per point:\n\n\
         | experiment | procedure | level | Pm (%) | n | early-stop iteration | test acc at early stop (%) | test acc at last iteration (%) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| procedures.contains(&r.procedure.as_str()) || r.level == 0) {
        s += &format!(
            "| {} | {} | {} | {:.1} | {} | {:.0} [{:.0}, {:.0}] | {} [{}, {}] | {} [{}, {}] |\n",
            r.experiment,
            r.procedure,
            r.level,
            100.0 * r.remaining,
            r.n,
            r.early_stop_iteration_mean,
            r.early_stop_iteration_min,
            r.early_stop_iteration_max,
            pct(r.early_stop_test_acc_mean),
            pct(r.early_stop_test_acc_min),
            pct(r.early_stop_test_acc_max),
            pct(r.final_test_acc_mean),
            pct(r.final_test_acc_min),
            pct(r.final_test_acc_max)
        );
    }
    s
}

/// The git revision of the code (`+dirty` if the code, experiment specs or dependencies have
/// uncommitted changes; edits to docs or figures do not change what a run computes).
pub fn git_revision() -> String {
    let git = |args: &[&str]| std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success());
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(out) => {
            let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let code = ["--", "lth", "xtask", "experiments", "Cargo.toml", "Cargo.lock"];
            let dirty = git(&[&["status", "--porcelain", "--untracked-files=no"][..], &code[..]].concat()).is_some_and(|o| !o.stdout.is_empty());
            if dirty {
                format!("{rev}+dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, so no date library is needed).
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
