//! The figure registry: which experiment each paper figure draws from, how its table is
//! computed, and the provenance written beside it (`figN.md`: command, scale, data, git
//! revision, device, date, and the table's headline numbers).

use super::plot::{self, CheckpointRow, Fig3Row, SparsityRow};
use super::record::read_csv;
use super::store::Store;
use super::table;
use crate::error::{Error, Result};
use crate::files;
use crate::spec::{Codec, DataSource, ExperimentSpec, Scale};
use std::path::{Path, PathBuf};

pub struct Figure {
    pub id: &'static str,
    /// The experiment specs (`experiments/<name>.toml`) whose runs it draws.
    pub experiments: &'static [&'static str],
    pub title: &'static str,
    pub kind: Kind,
    /// Method notes printed in the provenance file.
    pub notes: &'static str,
}

/// What a figure shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Test accuracy against training iterations (Fig 3).
    Curves,
    /// Early stopping and accuracy against the fraction of weights remaining, for these
    /// procedures (Figs 1, 4, 5, 6).
    Sparsity(&'static [&'static str]),
    /// Test accuracy against the fraction of weights remaining at fixed points of training,
    /// tickets against reinit, one series per experiment (Figs 7, 8).
    Checkpoints(&'static [Checkpoint]),
}

/// A point of training a figure reads: a fraction of the run's iterations, and how the paper
/// names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checkpoint {
    pub fraction: f64,
    pub label: &'static str,
}

/// VGG-19's checkpoints: 30K, 60K and 112,480 (the last) of 112,480 iterations (docs/paper.md Fig 7).
const VGG_CHECKPOINTS: [Checkpoint; 3] = [
    Checkpoint { fraction: 30_000.0 / 112_480.0, label: "30K of 112K iterations" },
    Checkpoint { fraction: 60_000.0 / 112_480.0, label: "60K of 112K iterations" },
    Checkpoint { fraction: 1.0, label: "112K of 112K iterations (the last)" },
];

/// ResNet-18's checkpoints: 10K, 20K and 30K of 30K iterations (docs/paper.md Fig 8).
const RESNET_CHECKPOINTS: [Checkpoint; 3] = [
    Checkpoint { fraction: 10_000.0 / 30_000.0, label: "10K of 30K iterations" },
    Checkpoint { fraction: 20_000.0 / 30_000.0, label: "20K of 30K iterations" },
    Checkpoint { fraction: 1.0, label: "30K of 30K iterations (the last)" },
];

/// Said wherever Conv-6 is drawn (a macro, so `concat!` can join it to other notes).
macro_rules! conv6_note {
    () => {
        "Conv-6 is built as docs/paper.md's table describes it: 2,261,184 prunable weights, 49% of them fully connected. Fig 2 of the paper says 1.7M, and the architecture does not give that (docs/paper.md §2), so Conv-6's Pm grid differs slightly from the paper's: 26.6/15.3% where the paper quotes 26.4/15.1%."
    };
}

/// Said wherever rewinding is drawn.
const REWIND_NOTE: &str = "**Beyond the ICLR paper.** Rewinding (late resetting; Frankle et al. 2019, \"Stabilizing the Lottery Ticket Hypothesis\", and the authors' open_lth): the `_rewind<k>` runs reset every pruned level's survivors to the dense network's state at iteration k of the paper-scale training (BatchNorm statistics included), not to theta0, and train from k to the end of the same schedule; the learning-rate schedule and the data order resume at k, the optimizer state restarts. Reinit controls draw fresh weights and also train from k. A smaller scale rewinds to the same fraction of its training (at least iteration 1). The other experiment is the paper's procedure, unchanged.";

pub const FIGURES: [Figure; 10] = [
    Figure {
        id: "fig1",
        experiments: &["lenet", "conv2", "conv4", "conv6"],
        title: "Winning tickets vs. randomly sampled sparse networks (docs/paper.md Fig 1)",
        kind: Kind::Sparsity(&["ticket", "random_prune"]),
        notes: concat!("Random sparse networks keep the ticket's per-layer weight counts at random positions and start from theta0. ", conv6_note!()),
    },
    Figure {
        id: "fig3",
        experiments: &["lenet"],
        title: "LeNet-300-100 on MNIST: test accuracy during training (docs/paper.md Fig 3)",
        kind: Kind::Curves,
        notes: "",
    },
    Figure {
        id: "fig4",
        experiments: &["lenet"],
        title: "LeNet-300-100 on MNIST: early stopping and accuracy vs. weights remaining (docs/paper.md Fig 4)",
        kind: Kind::Sparsity(&["ticket", "reinit", "oneshot"]),
        notes: "",
    },
    Figure {
        id: "fig5",
        experiments: &["conv2", "conv4", "conv6"],
        title: "Conv-2/4/6 on CIFAR-10: early stopping and accuracy vs. weights remaining (docs/paper.md Fig 5)",
        kind: Kind::Sparsity(&["ticket", "reinit"]),
        notes: conv6_note!(),
    },
    Figure {
        id: "fig6",
        experiments: &["conv2_dropout", "conv4_dropout", "conv6_dropout"],
        title: "Conv-2/4/6 with dropout on CIFAR-10 (docs/paper.md Fig 6)",
        kind: Kind::Sparsity(&["ticket", "reinit"]),
        notes: concat!("Dropout p = 0.5 follows each hidden fully connected layer; the paper does not say which layers. ", conv6_note!()),
    },
    Figure {
        id: "fig7",
        experiments: &["vgg19_lr0.1", "vgg19_lr0.01", "vgg19_lr0.1_warmup"],
        title: "VGG-19 on CIFAR-10: test accuracy vs. weights remaining at 30K, 60K and 112K iterations (docs/paper.md Fig 7)",
        kind: Kind::Checkpoints(&VGG_CHECKPOINTS),
        notes: "Global magnitude pruning of the convolutions, 20% per round; the output layer is never pruned. SGD with momentum 0.9 and weight decay 1e-4, batch 64, rate ×0.1 at 50% and 75% of training; the warmup variant rises linearly from 0 to 0.1 over the first 10,000 of 112,480 iterations. Flip and pad-4 crop augmentation. Smaller scales read the checkpoints at the same fractions of training.",
    },
    Figure {
        id: "fig8",
        experiments: &["resnet18_lr0.1", "resnet18_lr0.01", "resnet18_lr0.03_warmup", "resnet18_lr0.03_warmup_late_drops"],
        title: "ResNet-18 on CIFAR-10: test accuracy vs. weights remaining at 10K, 20K and 30K iterations (docs/paper.md Fig 8)",
        kind: Kind::Checkpoints(&RESNET_CHECKPOINTS),
        notes: "The paper's ResNet-18 is He et al.'s 20-layer CIFAR ResNet. Global magnitude pruning of the 3x3 convolutions, 20% per round; the 1x1 shortcuts and the output layer are never pruned. SGD with momentum 0.9 and weight decay 1e-4, batch 128, rate ×0.1 at 20K and 25K of 30K iterations; the warmup variants rise linearly from 0 to 0.03 over the first 20K. The paper's schedule has two readings, and both are drawn: `resnet18_lr0.03_warmup` takes its numbers literally (the first drop fires at 20K, exactly where the warmup peaks, so the peak is never trained at); `resnet18_lr0.03_warmup_late_drops` holds the peak and moves the drops to 25K and 27.5K (see the two specs in `experiments/`). Flip and pad-4 crop augmentation. Smaller scales read the checkpoints at the same fractions of training.",
    },
    // Beyond the ICLR paper: rewinding (late resetting, `lth::rewind`), each beside the paper's
    // reset to theta0 on the same network.
    Figure {
        id: "fig4r",
        experiments: &["lenet", "lenet_rewind1000"],
        title: "BEYOND THE ICLR PAPER: LeNet-300-100 on MNIST, rewinding to iteration 1,000 against the paper's reset to theta0",
        kind: Kind::Sparsity(&["ticket", "reinit"]),
        notes: REWIND_NOTE,
    },
    Figure {
        id: "fig7r",
        experiments: &["vgg19_lr0.1", "vgg19_lr0.1_rewind1000"],
        title: "BEYOND THE ICLR PAPER: VGG-19 lr 0.1 on CIFAR-10, rewinding to iteration 1,000 against the paper's reset to theta0 (Fig 7's checkpoints)",
        kind: Kind::Checkpoints(&VGG_CHECKPOINTS),
        notes: REWIND_NOTE,
    },
    Figure {
        id: "fig8r",
        experiments: &["resnet18_lr0.1", "resnet18_lr0.1_rewind500"],
        title: "BEYOND THE ICLR PAPER: ResNet-18 lr 0.1 on CIFAR-10, rewinding to iteration 500 against the paper's reset to theta0 (Fig 8's checkpoints)",
        kind: Kind::Checkpoints(&RESNET_CHECKPOINTS),
        notes: REWIND_NOTE,
    },
];

pub fn find(name: &str) -> Result<&'static Figure> {
    if let Some(figure) = FIGURES.iter().find(|f| f.id == name) {
        return Ok(figure);
    }
    let valid = FIGURES.iter().map(|f| f.id).collect::<Vec<_>>().join(", ");
    Err(Error::UnknownFigure { name: name.into(), valid })
}

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
    // Trainings whose loss went NaN or infinite: named in the provenance, never averaged in.
    let mut diverged = Vec::new();
    let scale = provenance.scale.as_str();
    for experiment in figure.experiments {
        let spec = specs
            .iter()
            .find(|s| s.name == *experiment)
            .ok_or_else(|| Error::Invalid(format!("figure {} draws experiment `{experiment}`, whose spec was not loaded", figure.id)))?;
        // MNIST has no synthetic stand-in: `plan` keeps its experiments on their real runs.
        let finished = table::load_records(store, &spec.plan(provenance.scale, provenance.trials, provenance.data)?)?;
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
        let data = describe(&finished.records[0].data);
        sources.push(format!("`{experiment}`: {data}, {} of {} planned trainings finished", finished.finished, finished.planned));
        records.extend(finished.records);
        run_ids.extend(finished.runs);
    }
    if records.is_empty() {
        return Err(table::nothing_finished(store, &figure.experiments.join("`, `"), scale));
    }
    let synthetic = records.iter().any(|r| r.data == DataSource::Synthetic);
    let copy = records.iter().find_map(|r| match r.data {
        DataSource::Copy(copy) => Some(copy),
        _ => None,
    });
    let curves = table::curves_frame(&records)?;
    let frame = match figure.kind {
        Kind::Curves => table::fig3(&curves)?,
        Kind::Sparsity(_) => table::sparsity(&curves)?,
        Kind::Checkpoints(points) => table::checkpoints(&curves, &points.iter().map(|c| c.fraction).collect::<Vec<_>>())?,
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
         | table | [`{id}.csv`]({id}.csv) |\n\n{notes}{summary}\n\
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
