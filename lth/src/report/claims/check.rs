//! Each claim checked against its figure's table: the tables of a folder read with the scale
//! and data their provenance names, the levels a claim needs found, and the verdict judged.

use super::model::*;
use crate::base::error::{Error, Result};
use crate::report::catalog;
use crate::report::compare::{self, data_entries, provenance_value, Cell};
use std::collections::BTreeMap;
use std::path::Path;

/// The figure tables in `dir` (`figN.csv` of a known figure, with its `figN.md`).
pub(super) fn load(dir: &Path) -> Result<Tables> {
    let mut tables = Tables::new();
    for figure in &catalog::FIGURES {
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

/// Per experiment, the "F of P planned trainings finished" of the provenance's `data` row.
pub(super) fn trainings(provenance: &str) -> BTreeMap<String, (usize, usize)> {
    data_entries(provenance).into_iter().filter_map(|e| Some((e.experiment, e.trainings?))).collect()
}

/// A table row from its key columns. Figure 3's table has no `experiment` or `data` column: its
/// figure draws one experiment, and the provenance's `data` row says what it trained on.
pub(super) fn row(csv: &Path, keys: &[String], key: &[String], metrics: BTreeMap<String, Cell>, figure: &catalog::Figure, provenance: &str) -> Result<Row> {
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
        rewind: get("rewind").and_then(|v| v.parse().ok()),
        experiment,
        data,
        metrics,
    })
}

/// What the provenance's `data` row says an experiment trained on: "real", "synthetic" or a copy.
pub(super) fn provenance_data(provenance: &str, experiment: &str) -> String {
    let entries = data_entries(provenance);
    let entry = entries.iter().find(|e| e.experiment == experiment).map_or("real", |e| e.what.as_str());
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
pub(super) fn levels(table: &Table, series: Series) -> Vec<(usize, f64)> {
    let mut found: Vec<(usize, f64)> =
        table.rows.iter().filter(|r| r.experiment == series.experiment && r.procedure == series.procedure).map(|r| (r.level, r.remaining)).collect();
    found.sort_by_key(|&(level, _)| level);
    found.dedup_by_key(|&mut (level, _)| level);
    found
}

/// The level of a series nearest `target`, if within [`AT_TOLERANCE`].
pub(super) fn nearest(table: &Table, series: Series, target: f64) -> Result<(usize, f64), String> {
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
pub(super) fn cell(table: &Table, series: Series, level: usize, metric: Metric) -> Result<Cell, String> {
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
        Metric::Barrier(which) => {
            let rows: Vec<&Row> = rows.filter(|r| r.rewind.is_some()).collect();
            let k = match which {
                Rewind::Zero => Some(0),
                Rewind::Latest => rows.iter().filter_map(|r| r.rewind).max(),
            };
            rows.iter().find(|r| r.rewind == k).and_then(|r| r.metrics.get("barrier").copied()).ok_or_else(missing)
        }
        _ => rows.find_map(|r| r.metrics.get(metric.column()).copied()).ok_or_else(missing),
    }
}
