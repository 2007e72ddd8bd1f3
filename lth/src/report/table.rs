//! Aggregation with polars (and only here): the curve records of finished levels become one
//! long frame, and one lazy query per figure turns it into mean/min/max over trials. The
//! early-stop iteration is the iteration of minimum validation loss (earliest on ties),
//! read from each finished curve (docs/paper.md §1, App C).

use crate::base::error::{Error, Result};
use crate::base::spec::{PlannedRun, RunId};
use crate::lottery::instability::PathPoint;
use crate::store::record::CurveRecord;
use crate::store::runs::Store;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// The columns that identify one training curve.
const CURVE_KEYS: [&str; 6] = ["experiment", "data", "procedure", "trial", "copy", "level"];

/// The finished curves of exactly the runs a spec expands to.
#[derive(Debug, Default)]
pub struct Finished {
    pub records: Vec<CurveRecord>,
    /// The runs the records came from, in plan order.
    pub runs: Vec<RunId>,
    /// Planned (run, level) trainings, and how many of them are finished (diverged ones included).
    pub planned: usize,
    pub finished: usize,
    /// Finished trainings whose loss went NaN or infinite: `<run> level <L> (iteration <i>)`.
    /// Their curves are not in `records`: a diverged training is no data point.
    pub diverged: Vec<String>,
}

/// The curves of `runs`, and of each only its planned levels, that are finished, each checked
/// against its level's marker. Other folders in the store (other specs, other levels) are
/// never read, so editing a spec never mixes old runs into new tables.
pub fn load_records(store: &Store, runs: &[PlannedRun]) -> Result<Finished> {
    let mut out = Finished::default();
    for planned in runs {
        let run = store.existing(&planned.spec);
        let mut used = false;
        for &level in &planned.levels {
            out.planned += 1;
            if run.is_done(level) {
                let curve = run.load_curve(level)?;
                out.finished += 1;
                match crate::store::record::diverged_at(&curve) {
                    Some(iteration) => out.diverged.push(format!("`{}` level {level} (iteration {iteration})", run.id)),
                    None => {
                        out.records.extend(curve);
                        used = true;
                    }
                }
            }
        }
        if used {
            out.runs.push(run.id);
        }
    }
    Ok(out)
}

/// The error for a figure with nothing to draw.
pub fn nothing_finished(store: &Store, experiment: &str, scale: &str) -> Error {
    Error::Invalid(format!("{}: no finished `{experiment}` runs at scale `{scale}`; run `cargo xtask reproduce` first", store.runs_dir().display()))
}

/// The long frame of curve records.
pub fn curves_frame(rows: &[CurveRecord]) -> Result<DataFrame> {
    let text = |f: fn(&CurveRecord) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&CurveRecord) -> usize| rows.iter().map(|r| f(r) as u64).collect::<Vec<_>>();
    let float = |f: fn(&CurveRecord) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let columns = vec![
        Column::new("experiment".into(), text(|r| &r.key.experiment)),
        Column::new("data".into(), rows.iter().map(|r| r.key.data.to_string()).collect::<Vec<_>>()),
        Column::new("scale".into(), text(|r| &r.key.scale)),
        Column::new("procedure".into(), text(|r| &r.key.procedure)),
        Column::new("trial".into(), int(|r| r.key.trial)),
        Column::new("copy".into(), int(|r| r.key.copy)),
        Column::new("level".into(), int(|r| r.key.level)),
        Column::new("remaining".into(), float(|r| r.key.remaining)),
        Column::new("iteration".into(), int(|r| r.point.iteration)),
        Column::new("val_loss".into(), float(|r| r.point.val_loss)),
        Column::new("val_acc".into(), float(|r| r.point.val_acc)),
        Column::new("test_loss".into(), float(|r| r.point.test_loss)),
        Column::new("test_acc".into(), float(|r| r.point.test_acc)),
        Column::new("train_acc".into(), float(|r| r.point.train_acc)),
    ];
    Ok(DataFrame::new_infer_height(columns)?)
}

/// The instability figure: each pair's error barrier (`lottery::instability`), then mean, min
/// and max over the pairs of every trial, per experiment, level and rewind point, in that order.
pub fn instability(points: &[PathPoint]) -> Result<DataFrame> {
    // (experiment, data, level, rewind) → (remaining, barriers); points of one path are adjacent.
    type Key = (String, String, usize, usize);
    let mut groups: BTreeMap<Key, (f64, Vec<f64>)> = BTreeMap::new();
    for path in points.chunk_by(|a, b| (&a.experiment, a.trial, a.level, a.rewind, &a.pair) == (&b.experiment, b.trial, b.level, b.rewind, &b.pair)) {
        let first = &path[0];
        let errors: Vec<f64> = path.iter().map(|p| p.test_error).collect();
        let group = groups.entry((first.experiment.clone(), first.data.to_string(), first.level, first.rewind)).or_insert((first.remaining, Vec::new()));
        group.1.push(crate::lottery::instability::barrier(&errors));
    }
    let keys: Vec<_> = groups.keys().cloned().collect();
    let values: Vec<_> = groups.values().collect();
    let stat = |f: fn(&[f64]) -> f64| values.iter().map(|(_, b)| f(b)).collect::<Vec<f64>>();
    let columns = vec![
        Column::new("experiment".into(), keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>()),
        Column::new("data".into(), keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>()),
        Column::new("procedure".into(), vec!["ticket"; keys.len()]),
        Column::new("level".into(), keys.iter().map(|k| k.2 as u64).collect::<Vec<_>>()),
        Column::new("remaining".into(), values.iter().map(|(r, _)| *r).collect::<Vec<_>>()),
        Column::new("rewind".into(), keys.iter().map(|k| k.3 as u64).collect::<Vec<_>>()),
        Column::new("n".into(), values.iter().map(|(_, b)| b.len() as u64).collect::<Vec<_>>()),
        Column::new("barrier_mean".into(), stat(|b| b.iter().sum::<f64>() / b.len() as f64)),
        Column::new("barrier_min".into(), stat(|b| b.iter().copied().fold(f64::INFINITY, f64::min))),
        Column::new("barrier_max".into(), stat(|b| b.iter().copied().fold(f64::NEG_INFINITY, f64::max))),
    ];
    Ok(DataFrame::new_infer_height(columns)?)
}

/// Mean, min and max of `name` over trials, as `<name>_mean`, `<name>_min`, `<name>_max`.
fn spread(name: &str) -> [Expr; 3] {
    [col(name).mean().alias(format!("{name}_mean")), col(name).min().alias(format!("{name}_min")), col(name).max().alias(format!("{name}_max"))]
}

/// The number of curves behind each aggregated row.
fn n_curves() -> Expr {
    len().cast(DataType::UInt64).alias("n")
}

fn ascending(columns: &[&str]) -> (Vec<PlSmallStr>, SortMultipleOptions) {
    (columns.iter().map(|c| PlSmallStr::from(*c)).collect(), SortMultipleOptions::default().with_maintain_order(true))
}

/// Figure 3: test accuracy over training, per procedure and level (mean/min/max over trials).
pub fn fig3(curves: &DataFrame) -> Result<DataFrame> {
    let mut aggs = vec![col("remaining").mean().alias("remaining"), n_curves()];
    aggs.extend(spread("test_acc"));
    let (by, order) = ascending(&["procedure", "level", "iteration"]);
    let out = curves.clone().lazy().group_by([col("procedure"), col("level"), col("iteration")]).agg(aggs).sort(by, order).collect()?;
    Ok(out)
}

/// Per curve: the early-stop iteration and the test accuracy there and at the end.
pub fn early_stop(curves: &DataFrame) -> Result<DataFrame> {
    let at_min_val_loss =
        |name: &str, alias: &str| col(name).sort_by([col("val_loss")], SortMultipleOptions::default().with_maintain_order(true)).first().alias(alias);
    let keys: Vec<Expr> = CURVE_KEYS.iter().map(|k| col(*k)).collect();
    let (by, order) = ascending(&["iteration"]);
    let out = curves
        .clone()
        .lazy()
        .sort(by, order)
        .group_by_stable(keys)
        .agg([
            col("remaining").first(),
            at_min_val_loss("iteration", "early_stop_iteration"),
            at_min_val_loss("test_acc", "early_stop_test_acc"),
            at_min_val_loss("train_acc", "early_stop_train_acc"),
            col("test_acc").last().alias("final_test_acc"),
        ])
        .collect()?;
    Ok(out)
}

/// Figures 1, 4, 5 and 6: early-stop iteration and test accuracy at early stop and at the end,
/// per experiment, procedure and level (mean/min/max over trials and copies).
pub fn sparsity(curves: &DataFrame) -> Result<DataFrame> {
    let mut aggs = vec![col("remaining").mean().alias("remaining"), n_curves()];
    for name in ["early_stop_iteration", "early_stop_test_acc", "final_test_acc"] {
        aggs.extend(spread(name));
    }
    let (by, order) = ascending(&["experiment", "procedure", "level"]);
    let out = early_stop(curves)?
        .lazy()
        .with_column(col("early_stop_iteration").cast(DataType::Float64))
        .group_by([col("experiment"), col("data"), col("procedure"), col("level")])
        .agg(aggs)
        .sort(by, order)
        .collect()?;
    Ok(out)
}

/// Figures 7 and 8: test accuracy at fixed fractions of training, per experiment, procedure,
/// level and checkpoint (mean/min/max over trials and copies). A curve's checkpoint `i` is its
/// evaluation nearest to `fractions[i]` of its last iteration (the later one on a tie), so a
/// shorter scale reads its checkpoints at the same fractions of training.
pub fn checkpoints(curves: &DataFrame, fractions: &[f64]) -> Result<DataFrame> {
    let keys: Vec<Expr> = CURVE_KEYS.iter().map(|k| col(*k)).collect();
    // Each row learns its curve's last iteration first, so the distances below are plain
    // column arithmetic.
    let lasts = curves.clone().lazy().group_by(keys.clone()).agg([col("iteration").max().alias("last")]);
    let with_last = curves.clone().lazy().join(lasts, keys.clone(), keys.clone(), JoinArgs::new(JoinType::Inner));
    let mut frames = Vec::new();
    for (i, &fraction) in fractions.iter().enumerate() {
        let offset = || col("iteration").cast(DataType::Float64) - col("last").cast(DataType::Float64) * lit(fraction);
        // Squared, as polars' `abs` is behind a feature this crate leaves out. Nearest first,
        // the later evaluation first on a tie; the stable group-by then keeps each curve's first.
        let order = SortMultipleOptions::default().with_order_descending_multi([false, true]).with_maintain_order(true);
        let frame = with_last
            .clone()
            .with_column((offset() * offset()).alias("distance"))
            .sort(["distance", "iteration"], order)
            .group_by_stable(keys.clone())
            .agg([col("remaining").first(), col("iteration").first(), col("test_acc").first()])
            .with_column(lit(i as u64).alias("checkpoint"));
        frames.push(frame);
    }
    let mut aggs = vec![col("remaining").mean().alias("remaining"), col("iteration").mean().alias("iteration"), n_curves()];
    aggs.extend(spread("test_acc"));
    let (by, order) = ascending(&["experiment", "procedure", "level", "checkpoint"]);
    let out = concat(frames, UnionArgs::default())?
        .group_by([col("experiment"), col("data"), col("procedure"), col("level"), col("checkpoint")])
        .agg(aggs)
        .sort(by, order)
        .collect()?;
    Ok(out)
}

/// Writes a frame as CSV (floats in shortest round-trip form, so files diff cleanly).
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut out = String::new();
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    out.push_str(&names.join(","));
    out.push('\n');
    let columns = df.columns();
    for row in 0..df.height() {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match c.get(row) {
                Ok(AnyValue::String(s)) => s.to_string(),
                Ok(AnyValue::Float64(v)) => format!("{v}"),
                Ok(AnyValue::Float32(v)) => format!("{v}"),
                Ok(AnyValue::Null) | Err(_) => String::new(),
                Ok(v) => v.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    crate::base::files::write_atomic(path, out.as_bytes())
}

/// Reads a table CSV written by [`write_csv`]: integer, float or string columns, inferred.
pub fn read_csv_frame(path: &Path) -> Result<DataFrame> {
    let corrupt = |reason: String| Error::Table { path: path.to_owned(), reason };
    let mut reader = csv::Reader::from_path(path).map_err(|e| corrupt(e.to_string()))?;
    let header: Vec<String> = reader.headers().map_err(|e| corrupt(e.to_string()))?.iter().map(String::from).collect();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for record in reader.records() {
        let record = record.map_err(|e| corrupt(e.to_string()))?;
        for (i, cell) in record.iter().enumerate() {
            cells[i].push(cell.to_string());
        }
    }
    let columns = header
        .iter()
        .zip(cells)
        .map(|(name, values)| {
            let name = PlSmallStr::from(name.as_str());
            if let Ok(ints) = values.iter().map(|v| v.parse::<i64>()).collect::<std::result::Result<Vec<_>, _>>() {
                Column::new(name, ints)
            } else if let Ok(floats) = values.iter().map(|v| v.parse::<f64>()).collect::<std::result::Result<Vec<_>, _>>() {
                Column::new(name, floats)
            } else {
                Column::new(name, values)
            }
        })
        .collect();
    Ok(DataFrame::new_infer_height(columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::spec::DataSource;
    use crate::store::record::{CurveKey, CurveRecord};
    use crate::train::training::CurvePoint;

    fn record(procedure: &str, trial: usize, iteration: usize, test_acc: f64) -> CurveRecord {
        let key = CurveKey {
            experiment: "x".into(),
            scale: "smoke".into(),
            data: DataSource::Synthetic,
            procedure: procedure.into(),
            trial,
            copy: 0,
            level: 0,
            remaining: 1.0,
        };
        key.record(&CurvePoint { iteration, train_loss: 0.0, train_acc: 0.0, val_loss: 0.0, val_acc: 0.0, test_loss: 0.0, test_acc })
    }

    #[test]
    fn checkpoints_read_the_evaluation_nearest_each_fraction() {
        // Two trials evaluated at 0, 2, 4, 6 (accuracy = iteration / 10 + trial / 100), rows
        // shuffled. Fractions 1/3, 1/2 and 1 of 6: 2; 3 (a tie of 2 and 4: the later, 4); 6.
        let mut rows = Vec::new();
        for &iteration in &[4, 0, 6, 2] {
            for trial in [1, 0] {
                rows.push(record("ticket", trial, iteration, iteration as f64 / 10.0 + trial as f64 / 100.0));
            }
        }
        let frame = checkpoints(&curves_frame(&rows).unwrap(), &[1.0 / 3.0, 0.5, 1.0]).unwrap();
        let column = |name: &str| {
            frame.column(name).unwrap().as_materialized_series().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<_>>()
        };
        assert_eq!(column("checkpoint"), vec![0.0, 1.0, 2.0]);
        assert_eq!(column("iteration"), vec![2.0, 4.0, 6.0]);
        let accuracy = |trial: f64| [2.0, 4.0, 6.0].map(|i: f64| i / 10.0 + trial / 100.0).to_vec();
        assert_eq!(column("test_acc_min"), accuracy(0.0));
        assert_eq!(column("test_acc_max"), accuracy(1.0));
    }
}
