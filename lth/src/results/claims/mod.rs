//! The claims report: each claim of docs/paper.md §3 ([`paper::CLAIMS`]) checked against the
//! aggregated tables of one figures folder, written as `CLAIMS.md` beside them. It reads only
//! the committed tables and their provenance files (for the scale), never run folders, so CI can
//! regenerate it and byte-compare; nothing in it depends on the date, the machine or the path.
//!
//! A claim compares one metric of a subject (a series at one Pm, or at every or some level in a
//! range of Pm) with a reference, as a ratio or a difference, against a bound. Claims on
//! synthetic data or at `smoke` scale, or whose levels the table lacks, are "not tested", with
//! the reason. The claims themselves are data (`paper.rs`); the report's text is `report.rs`.

mod paper;
mod report;

pub use paper::CLAIMS;
use report::render;
use report::{name, percent};

use super::compare::{self, Cell};
use super::figures;
use crate::error::{Error, Result};
use crate::files;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// One claim of the paper and the rule it is checked by.
pub struct Claim {
    pub id: &'static str,
    /// The table it reads (`<figure>.csv`).
    pub figure: &'static str,
    /// The paper's statement, with its number and where it says so.
    pub paper: &'static str,
    pub metric: Metric,
    /// The series the claim is about, and at which Pm.
    pub subject: (Series, Pm),
    pub reference: Reference,
    pub compare: Compare,
    pub bound: Bound,
}

/// The curves of one procedure of one experiment.
#[derive(Clone, Copy, PartialEq)]
pub struct Series {
    pub experiment: &'static str,
    pub procedure: &'static str,
}

/// Which levels of the subject a claim is about (Pm as a fraction).
#[derive(Clone, Copy)]
pub enum Pm {
    /// The level nearest this Pm, within [`AT_TOLERANCE`].
    At(f64),
    /// Every level with Pm in [low, high] (within [`RANGE_TOLERANCE`]) must pass.
    Every(f64, f64),
    /// Some level with Pm in [low, high] must pass ("up to" claims).
    Some(f64, f64),
}

/// What the subject is compared with.
#[derive(Clone, Copy)]
pub enum Reference {
    /// A series at one Pm (1.0: the dense network).
    At(Series, f64),
    /// This procedure of the subject's experiment, at the subject's level.
    SameLevel(&'static str),
}

#[derive(Clone, Copy, PartialEq)]
pub enum Metric {
    EarlyStopIteration,
    EarlyStopTestAcc,
    FinalTestAcc,
    /// The first evaluation at which the test accuracy reaches this fraction (Fig 3's curves).
    IterationsToTestAcc(f64),
    /// Test accuracy at this checkpoint of a checkpoint table (Figs 7, 8; 2 is the last).
    CheckpointTestAcc(usize),
}

/// How the subject's mean is set against the reference's: subject ÷ reference, or subject −
/// reference (in percentage points for accuracies).
#[derive(Clone, Copy)]
pub enum Compare {
    Ratio,
    Difference,
}

/// What the compared value must satisfy.
#[derive(Clone, Copy)]
pub enum Bound {
    MoreThan(f64),
    AtLeast(f64),
    LessThan(f64),
    AtMost(f64),
    /// Inclusive at both ends.
    Between(f64, f64),
}

/// How far the nearest level may lie from a claim's single Pm, relative to it: the LeNet grid
/// steps by 20% per level, so 10% picks one level or none, and Conv-6's 26.6% still answers the
/// paper's 26.4% (docs/paper.md §2).
pub const AT_TOLERANCE: f64 = 0.10;
/// The slack at the ends of a Pm range, relative: enough for the grid's 21.07% to count as the
/// paper's "21.1%", too little to take in the next level.
pub const RANGE_TOLERANCE: f64 = 0.01;

/// A claim's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    NotTested(String),
}

/// One row of a table as the claims read it.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) experiment: String,
    pub(super) data: String,
    pub(super) procedure: String,
    pub(super) level: usize,
    pub(super) remaining: f64,
    /// Set in curve tables (Fig 3): the evaluation this row is.
    pub(super) iteration: Option<f64>,
    /// Set in checkpoint tables (Figs 7, 8).
    pub(super) checkpoint: Option<usize>,
    pub(super) metrics: BTreeMap<String, Cell>,
}

/// A figure's table and the scale its provenance names.
#[derive(Debug, Clone)]
#[derive(Default)]
pub(super) struct Table {
    pub(super) scale: String,
    pub(super) rows: Vec<Row>,
    /// Per experiment, (finished, planned) trainings, as its provenance's `data` row says.
    pub(super) trainings: BTreeMap<String, (usize, usize)>,
}

/// The tables of one figures folder, by figure id.
pub(super) type Tables = BTreeMap<String, Table>;

/// What a claim came to, and the numbers behind it.
pub(super) struct Outcome {
    pub(super) verdict: Verdict,
    /// The measured numbers (empty when not tested).
    pub(super) measured: String,
    /// "scale, data" of the rows read.
    pub(super) source: String,
    /// (finished, planned) trainings of the experiments it read, when some are unfinished: a
    /// verdict that more trainings could still flip.
    pub(super) provisional: Option<(usize, usize)>,
}

/// Reads every figure table in `dir` and writes the report to `output`.
pub fn write(dir: &Path, output: &Path) -> Result<()> {
    files::write_atomic(output, render(&load(dir)?).as_bytes())
}

/// Where a folder's report goes.
pub fn report_path(dir: &Path) -> std::path::PathBuf {
    dir.join("CLAIMS.md")
}

/// The figure tables in `dir` (`figN.csv` of a known figure, with its `figN.md`).
pub(super) fn load(dir: &Path) -> Result<Tables> {
    let mut tables = Tables::new();
    for figure in &figures::FIGURES {
        let csv = dir.join(format!("{}.csv", figure.id));
        if !csv.exists() {
            continue;
        }
        let md = dir.join(format!("{}.md", figure.id));
        let provenance = std::fs::read_to_string(&md)
            .map_err(|e| Error::Provenance { path: md.clone(), reason: format!("cannot be read ({e}); the claims need the scale it names") })?;
        let scale = provenance_value(&provenance, "scale")
            .map(|s| s.trim_matches('`').to_string())
            .ok_or_else(|| Error::Provenance { path: md.clone(), reason: "has no `| scale |` row".into() })?;
        let (keys, table) = compare::read(&csv)?;
        let rows = table.into_iter().map(|(key, metrics)| row(&csv, &keys, &key, metrics, figure, &provenance)).collect::<Result<_>>()?;
        tables.insert(figure.id.to_string(), Table { scale, rows, trainings: trainings(&provenance) });
    }
    if tables.is_empty() {
        return Err(Error::NoTables { dir: dir.to_owned() });
    }
    Ok(tables)
}

/// The second cell of the provenance table's `| name | value |` row.
fn provenance_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.strip_prefix(&format!("| {name} | "))?.strip_suffix(" |"))
}

/// Per experiment, the "F of P planned trainings finished" of the provenance's `data` row.
fn trainings(provenance: &str) -> BTreeMap<String, (usize, usize)> {
    let Some(row) = provenance_value(provenance, "data") else { return BTreeMap::new() };
    row.split("; ")
        .filter_map(|entry| {
            let (experiment, rest) = entry.split_once(": ")?;
            let counts = rest.rsplit_once(", ")?.1.strip_suffix(" planned trainings finished")?;
            let (finished, planned) = counts.split_once(" of ")?;
            Some((experiment.trim_matches('`').to_string(), (finished.parse().ok()?, planned.parse().ok()?)))
        })
        .collect()
}

/// A table row from its key columns. Figure 3's table has no `experiment` or `data` column: its
/// figure draws one experiment, and the provenance's `data` row says what it trained on.
fn row(csv: &Path, keys: &[String], key: &[String], metrics: BTreeMap<String, Cell>, figure: &figures::Figure, provenance: &str) -> Result<Row> {
    let get = |name: &str| keys.iter().position(|k| k == name).map(|i| key[i].as_str());
    let bad = |name: &str| Error::Table { path: csv.to_owned(), reason: format!("column `{name}` is missing or not a number") };
    let number = |name: &str| get(name).and_then(|v| v.parse::<f64>().ok());
    let experiment = get("experiment").or(figure.experiments.first().copied()).unwrap_or_default().to_string();
    let data = match get("data") {
        Some(data) => data.to_string(),
        None => provenance_data(provenance, &experiment),
    };
    Ok(Row {
        procedure: get("procedure").ok_or_else(|| bad("procedure"))?.to_string(),
        level: get("level").and_then(|v| v.parse().ok()).ok_or_else(|| bad("level"))?,
        remaining: number("remaining").ok_or_else(|| bad("remaining"))?,
        iteration: number("iteration"),
        checkpoint: get("checkpoint").and_then(|v| v.parse().ok()),
        experiment,
        data,
        metrics,
    })
}

/// What the provenance's `data` row says an experiment trained on: "real", "synthetic" or a copy.
fn provenance_data(provenance: &str, experiment: &str) -> String {
    let entry = provenance_value(provenance, "data").and_then(|row| row.split(&format!("`{experiment}`: ")).nth(1)).unwrap_or("real");
    if entry.starts_with("real") {
        "real".into()
    } else if entry.contains("synthetic") {
        "synthetic".into()
    } else {
        "copy".into()
    }
}

/// Checks one claim against its figure's table.
pub(super) fn evaluate(claim: &Claim, table: &Table) -> Outcome {
    let series = claim.subject.0;
    let involved: Vec<&Row> = table.rows.iter().filter(|r| r.experiment == series.experiment || claim.reference_experiment() == Some(&r.experiment)).collect();
    let mut data: Vec<&str> = involved.iter().map(|r| r.data.as_str()).collect();
    data.sort_unstable();
    data.dedup();
    let source = format!("{}, {}", table.scale, if data.is_empty() { "no rows".into() } else { data.join(" + ") });
    let not_tested = |why: String| Outcome { verdict: Verdict::NotTested(why), measured: String::new(), source: source.clone(), provisional: None };
    if !table.rows.iter().any(|r| r.experiment == series.experiment) {
        return not_tested(format!("{}.csv has no `{}` rows", claim.figure, series.experiment));
    }
    // A synthetic stand-in says nothing about the paper, whatever the numbers.
    if data.contains(&"synthetic") {
        return not_tested("synthetic data".into());
    }
    if table.scale == "smoke" {
        return not_tested("`smoke` scale checks the pipeline, not the paper".into());
    }
    // A verdict on unfinished tables is kept, and marked with how much of them it saw.
    let experiments: std::collections::BTreeSet<&str> = [Some(series.experiment), claim.reference_experiment()].into_iter().flatten().collect();
    let read: Vec<(usize, usize)> = experiments.into_iter().filter_map(|e| table.trainings.get(e).copied()).collect();
    let provisional = read.iter().any(|&(finished, planned)| finished < planned).then(|| read.iter().fold((0, 0), |(f, p), &(a, b)| (f + a, p + b)));
    match measure(claim, table) {
        Ok(points) => Outcome { provisional, ..judge(claim, &points, source) },
        // Absent: not trained at this scale, or not finished yet (a run in progress).
        Err(why) => not_tested(format!("{why} among the finished runs of these tables")),
    }
}

/// One compared pair: the subject at one level against its reference.
struct Point {
    remaining: f64,
    subject: Cell,
    reference: (Series, f64, Cell),
    value: f64,
}

/// The compared pairs of a claim, or why they cannot be formed.
fn measure(claim: &Claim, table: &Table) -> Result<Vec<Point>, String> {
    let (series, pm) = claim.subject;
    let chosen = match pm {
        Pm::At(target) => vec![nearest(table, series, target)?],
        Pm::Every(low, high) | Pm::Some(low, high) => {
            let inside = |r: f64| r >= low * (1.0 - RANGE_TOLERANCE) && r <= high * (1.0 + RANGE_TOLERANCE);
            // The reference itself (the dense network in a range up to 100%) is no evidence.
            let reference_level = match claim.reference {
                Reference::At(other, target) if other == series => nearest(table, other, target).ok().map(|(level, _)| level),
                _ => None,
            };
            let found: Vec<(usize, f64)> = levels(table, series).into_iter().filter(|&(level, r)| inside(r) && Some(level) != reference_level).collect();
            if found.is_empty() {
                return Err(format!("no `{}` level with Pm in [{}, {}]", series.procedure, percent(low), percent(high)));
            }
            found
        }
    };
    chosen
        .into_iter()
        .map(|(level, remaining)| {
            let subject = cell(table, series, level, claim.metric)?;
            let (reference_series, reference_level) = match claim.reference {
                Reference::At(other, target) => (other, nearest(table, other, target)?),
                Reference::SameLevel(procedure) => {
                    let other = Series { experiment: series.experiment, procedure };
                    let found = levels(table, other).into_iter().find(|&(l, _)| l == level);
                    (other, found.ok_or_else(|| format!("no `{procedure}` run at level {level} (Pm {})", percent(remaining)))?)
                }
            };
            let reference = cell(table, reference_series, reference_level.0, claim.metric)?;
            let value = match claim.compare {
                Compare::Ratio => subject.mean / reference.mean,
                Compare::Difference => claim.metric.unit_scale() * (subject.mean - reference.mean),
            };
            Ok(Point { remaining, subject, reference: (reference_series, reference_level.1, reference), value })
        })
        .collect()
}

/// Every pair must pass (`At`, `Every`) or one must (`Some`); the pair shown is the one that
/// decides: the worst for `Every`, the best for `Some`.
fn judge(claim: &Claim, points: &[Point], source: String) -> Outcome {
    let margin = |p: &&Point| claim.bound.margin(p.value);
    let (holds, shown) = match claim.subject.1 {
        Pm::Some(..) => (points.iter().any(|p| claim.bound.holds(p.value)), points.iter().max_by(|a, b| margin(a).total_cmp(&margin(b)))),
        _ => (points.iter().all(|p| claim.bound.holds(p.value)), points.iter().min_by(|a, b| margin(a).total_cmp(&margin(b)))),
    };
    let Some(p) = shown else {
        return Outcome { verdict: Verdict::NotTested("no levels".into()), measured: String::new(), source, provisional: None };
    };
    let (series, (other, other_remaining, reference)) = (claim.subject.0, p.reference);
    let mut measured = format!(
        "{}: {}; {}: {}; {} {}",
        name(series, p.remaining),
        claim.metric.show(p.subject),
        name(other, other_remaining),
        claim.metric.show(reference),
        claim.compare.word(),
        claim.compare.show(p.value, claim.metric)
    );
    if points.len() > 1 {
        let which = if matches!(claim.subject.1, Pm::Some(..)) { "best" } else { "worst" };
        let all = points.iter().map(|p| format!("{:.1}", 100.0 * p.remaining)).collect::<Vec<_>>().join(", ");
        measured = format!("{which} of {} levels (Pm {all}%): {measured}", points.len());
        let failing: Vec<String> = points.iter().filter(|p| !claim.bound.holds(p.value)).map(|p| percent(p.remaining)).collect();
        if !failing.is_empty() && !matches!(claim.subject.1, Pm::Some(..)) {
            measured += &format!("; fails at Pm {}", failing.join(", "));
        }
    }
    Outcome { verdict: if holds { Verdict::Holds } else { Verdict::DoesNotHold }, measured, source, provisional: None }
}

/// The distinct (level, Pm) of a series, by level.
fn levels(table: &Table, series: Series) -> Vec<(usize, f64)> {
    let mut found: Vec<(usize, f64)> =
        table.rows.iter().filter(|r| r.experiment == series.experiment && r.procedure == series.procedure).map(|r| (r.level, r.remaining)).collect();
    found.sort_by_key(|&(level, _)| level);
    found.dedup_by_key(|&mut (level, _)| level);
    found
}

/// The level of a series nearest `target`, if within [`AT_TOLERANCE`].
fn nearest(table: &Table, series: Series, target: f64) -> Result<(usize, f64), String> {
    let found = levels(table, series);
    let best = found.iter().min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()));
    match best {
        Some(&(level, r)) if (r - target).abs() <= AT_TOLERANCE * target => Ok((level, r)),
        Some(&(_, r)) => Err(format!("no `{}` level within 10% of Pm {} (nearest: {})", series.procedure, percent(target), percent(r))),
        None => Err(format!("no `{}` runs", series.procedure)),
    }
}

/// A metric of one level of a series: its aggregated cell, or for Figure 3's crossing metric
/// the cell of crossing iterations computed from the mean, max and min curves.
fn cell(table: &Table, series: Series, level: usize, metric: Metric) -> Result<Cell, String> {
    let mut rows = table.rows.iter().filter(|r| r.experiment == series.experiment && r.procedure == series.procedure && r.level == level);
    let missing = || format!("no `{}` value for `{}` level {level}", metric.column(), series.procedure);
    match metric {
        Metric::IterationsToTestAcc(threshold) => {
            let mut curve: Vec<(f64, Cell)> = rows.filter_map(|r| Some((r.iteration?, *r.metrics.get("test_acc")?))).collect();
            curve.sort_by(|a, b| a.0.total_cmp(&b.0));
            let first = |value: fn(&Cell) -> f64| curve.iter().find(|(_, c)| value(c) >= threshold).map_or(f64::INFINITY, |(i, _)| *i);
            let n = curve.first().ok_or_else(missing)?.1.n;
            // The max curve crosses first (the earliest trial), the min curve last (all trials).
            Ok(Cell { mean: first(|c| c.mean), min: first(|c| c.max), max: first(|c| c.min), n })
        }
        Metric::CheckpointTestAcc(checkpoint) => {
            rows.find(|r| r.checkpoint == Some(checkpoint)).and_then(|r| r.metrics.get("test_acc").copied()).ok_or_else(missing)
        }
        _ => rows.find_map(|r| r.metrics.get(metric.column()).copied()).ok_or_else(missing),
    }
}

impl Claim {
    fn reference_experiment(&self) -> Option<&'static str> {
        match self.reference {
            Reference::At(series, _) => Some(series.experiment),
            Reference::SameLevel(_) => None,
        }
    }
}

impl Metric {
    fn column(self) -> &'static str {
        match self {
            Metric::EarlyStopIteration => "early_stop_iteration",
            Metric::EarlyStopTestAcc => "early_stop_test_acc",
            Metric::FinalTestAcc => "final_test_acc",
            Metric::IterationsToTestAcc(_) | Metric::CheckpointTestAcc(_) => "test_acc",
        }
    }

    fn is_accuracy(self) -> bool {
        matches!(self, Metric::EarlyStopTestAcc | Metric::FinalTestAcc | Metric::CheckpointTestAcc(_))
    }

    /// Differences of accuracies are compared in percentage points.
    fn unit_scale(self) -> f64 {
        if self.is_accuracy() {
            100.0
        } else {
            1.0
        }
    }
}

impl Bound {
    pub fn holds(self, v: f64) -> bool {
        match self {
            Bound::MoreThan(x) => v > x,
            Bound::AtLeast(x) => v >= x,
            Bound::LessThan(x) => v < x,
            Bound::AtMost(x) => v <= x,
            Bound::Between(low, high) => (low..=high).contains(&v),
        }
    }

    /// How far inside the bound a value is (negative: outside), to pick the deciding level.
    fn margin(self, v: f64) -> f64 {
        match self {
            Bound::MoreThan(x) | Bound::AtLeast(x) => v - x,
            Bound::LessThan(x) | Bound::AtMost(x) => x - v,
            Bound::Between(low, high) => (v - low).min(high - v),
        }
    }
}

#[cfg(test)]
mod tests;
