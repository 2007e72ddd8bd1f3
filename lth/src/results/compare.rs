//! `compare OLD.csv NEW.csv`: what changed between two results tables of one figure, as
//! Markdown for a pull-request comment. First a summary a reviewer reads first (how many cells
//! moved beyond noise, and whether the paper's qualitative patterns hold in each table), then
//! one row per changed cell with both trial spreads.
//!
//! Reruns are bit-identical, so a cell that did not change prints as unchanged and "nothing
//! changed" is exactly 0 cells. Whether a change is more than noise is judged against the
//! trial-to-trial variation of both tables ([`NOISE_RULE`]).

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The statistics of one metric in one row: mean, min and max over `n` curves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cell {
    pub(super) mean: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) n: usize,
}

impl Cell {
    /// The standard deviation estimated from the range: E[max − min] = d₂(n) · σ for n normal
    /// draws (Tippett's d₂). With 2-5 trials the range is what the tables keep, and d₂ turns it
    /// into a σ estimate that both tables can contribute to. None for a single curve.
    fn sigma(&self) -> Option<f64> {
        const D2: [f64; 9] = [1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078];
        let d2 = *D2.get(self.n.checked_sub(2)?).unwrap_or(&D2[8]);
        Some((self.max - self.min) / d2)
    }
}

/// How a change is judged; printed with every comparison.
pub const NOISE_RULE: &str = "A change is flagged as beyond noise when |Δ mean| > 3·σ·√(1/n_old + 1/n_new). σ is the larger of the cell's own trial-to-trial \
standard deviation (the root mean square of the old and new tables' estimates) and that metric's typical one (the root mean square of the cells' \
own over every row of both tables): with 2-5 curves a single cell's spread is a poor estimate, and a cell whose few trials happened to agree \
must not make every change look significant. Each table's σ comes from its trial range, (max − min)/d₂(n) (Tippett's d₂: 1.128 for 2 curves, \
1.693 for 3, 2.059 for 4, 2.326 for 5). A cell with a single curve on either side has no noise estimate and is marked `?`.";

/// One table: key (the identifying columns) → metric → cell.
pub(super) type Table = BTreeMap<Vec<String>, BTreeMap<String, Cell>>;

/// How a changed cell compares with the noise of both tables.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Beyond,
    Within,
    Unknown,
}

/// The cell's own σ from both tables (None if either has a single curve).
fn cell_sigma(old: Cell, new: Cell) -> Option<f64> {
    let (so, sn) = (old.sigma()?, new.sigma()?);
    Some(((so * so + sn * sn) / 2.0).sqrt())
}

/// `typical`: the metric's σ over the whole table ([`typical_sigmas`]).
fn judge(old: Cell, new: Cell, typical: f64) -> Verdict {
    match cell_sigma(old, new) {
        Some(own) => {
            let se = own.max(typical) * (1.0 / old.n as f64 + 1.0 / new.n as f64).sqrt();
            if (new.mean - old.mean).abs() > 3.0 * se {
                Verdict::Beyond
            } else {
                Verdict::Within
            }
        }
        None => Verdict::Unknown,
    }
}

/// Per metric, the root mean square of the cells' own σ over the rows both tables share.
fn typical_sigmas(old: &Table, new: &Table) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::<String, (f64, usize)>::new();
    for (key, new_metrics) in new {
        let Some(old_metrics) = old.get(key) else { continue };
        for (metric, &n) in new_metrics {
            if let Some(sigma) = old_metrics.get(metric).and_then(|&o| cell_sigma(o, n)) {
                let entry = sums.entry(metric.clone()).or_default();
                entry.0 += sigma * sigma;
                entry.1 += 1;
            }
        }
    }
    sums.into_iter().map(|(metric, (sum, count))| (metric, (sum / count as f64).sqrt())).collect()
}

pub fn compare(old: &Path, new: &Path) -> Result<String> {
    let (old_keys, old_table) = read(old)?;
    let (new_keys, new_table) = read(new)?;
    if old_keys != new_keys {
        return Err(Error::Invalid(format!(
            "{} and {} have different key columns ({} vs {}); compare tables of the same figure",
            old.display(),
            new.display(),
            old_keys.join(","),
            new_keys.join(",")
        )));
    }
    let mut rows = String::new();
    rows.push_str(&format!("| {} | metric | old mean [min, max] (n) | new mean [min, max] (n) | Δ mean | beyond noise |\n", old_keys.join(" | ")));
    rows.push_str(&format!("|{}---|---|---|---|---|---|\n", "---|".repeat(old_keys.len())));
    let (mut compared, mut changed) = (0, 0);
    let mut verdicts = BTreeMap::<&str, usize>::new();
    let typical = typical_sigmas(&old_table, &new_table);
    for (key, new_metrics) in &new_table {
        let Some(old_metrics) = old_table.get(key) else {
            continue;
        };
        for (metric, &n) in new_metrics {
            let Some(&o) = old_metrics.get(metric) else {
                continue;
            };
            compared += 1;
            if (o.mean, o.min, o.max, o.n) == (n.mean, n.min, n.max, n.n) {
                continue;
            }
            changed += 1;
            let verdict = judge(o, n, typical.get(metric).copied().unwrap_or(0.0));
            let label = match verdict {
                Verdict::Beyond => "**yes**",
                Verdict::Within => "no",
                Verdict::Unknown => "?",
            };
            *verdicts.entry(label).or_default() += 1;
            rows.push_str(&format!(
                "| {} | {metric} | {} [{}, {}] ({}) | {} [{}, {}] ({}) | {:+.4} | {label} |\n",
                key.join(" | "),
                num(o.mean),
                num(o.min),
                num(o.max),
                o.n,
                num(n.mean),
                num(n.min),
                num(n.max),
                n.n,
                n.mean - o.mean,
            ));
        }
    }
    let only_old = old_table.keys().filter(|k| !new_table.contains_key(*k)).count();
    let only_new = new_table.keys().filter(|k| !old_table.contains_key(*k)).count();
    let count = |label: &str| verdicts.get(label).copied().unwrap_or(0);
    let mut out = String::from("### Summary\n\n");
    if changed == 0 && only_old == 0 && only_new == 0 {
        out.push_str(&format!("Nothing changed: {compared} cells compared, 0 changed.\n\n"));
    } else {
        out.push_str(&format!(
            "{compared} cells compared, {changed} changed: {} beyond noise, {} within noise, {} with no noise estimate. {only_old} rows only in old, {only_new} only in new.\n\n",
            count("**yes**"),
            count("no"),
            count("?"),
        ));
    }
    out.push_str(&patterns_paragraph(&old_keys, &old_table, &new_table));
    out.push_str(&format!("Rule: {NOISE_RULE}\n\n"));
    if changed > 0 {
        out.push_str(&rows);
    }
    Ok(out)
}

/// The paper's qualitative patterns, checked in each table that has early-stop columns.
fn patterns_paragraph(keys: &[String], old: &Table, new: &Table) -> String {
    let (Some(old_checks), Some(new_checks)) = (patterns(keys, old), patterns(keys, new)) else {
        return "Paper patterns: not checked (this table has no per-level early-stop columns).\n\n".into();
    };
    let mut out = String::from("Paper patterns (old → new):\n\n");
    for ((name, was), (_, now)) in old_checks.iter().zip(&new_checks) {
        let show = |v: &Option<bool>| match v {
            Some(true) => "holds",
            Some(false) => "does not hold",
            None => "not testable",
        };
        let mark = if was != now { " **(changed)**" } else { "" };
        out.push_str(&format!("- {name}: {} → {}{mark}\n", show(was), show(now)));
    }
    out.push('\n');
    out
}

/// (description, verdict) for each pattern; None when the table has no `procedure`, `level`,
/// `remaining` and early-stop columns (a curve table such as Figure 3's).
fn patterns(keys: &[String], table: &Table) -> Option<Vec<(&'static str, Option<bool>)>> {
    let column = |name: &str| keys.iter().position(|k| k == name);
    let (procedure, level) = (column("procedure")?, column("level")?);
    let remaining = column("remaining")?;
    let row = |proc_: &str, lvl: usize| table.iter().find(|(k, _)| k[procedure] == proc_ && k[level] == lvl.to_string()).map(|(k, m)| (k, m));
    let metric = |proc_: &str, lvl: usize, name: &str| row(proc_, lvl).and_then(|(_, m)| m.get(name)).map(|c| c.mean);
    let ticket_levels: Vec<(usize, f64)> = table
        .keys()
        .filter(|k| k[procedure] == "ticket")
        .filter_map(|k| Some((k[level].parse().ok()?, k[remaining].parse().ok()?)))
        .filter(|&(l, _)| l > 0)
        .collect();
    let dense_stop = metric("ticket", 0, "early_stop_iteration");
    let dense_acc = metric("ticket", 0, "early_stop_test_acc");
    // The ticket level nearest Pm = 21% (the size the paper quotes for LeNet and Conv nets).
    let near_21 = ticket_levels.iter().min_by(|a, b| (a.1 - 0.21).abs().total_cmp(&(b.1 - 0.21).abs())).map(|&(l, _)| l);
    let earlier = near_21.and_then(|l| Some(metric("ticket", l, "early_stop_iteration")? < dense_stop?));
    let best_ticket = ticket_levels
        .iter()
        .filter_map(|&(l, _)| metric("ticket", l, "early_stop_test_acc"))
        .fold(None, |best: Option<f64>, a| Some(best.map_or(a, |b| b.max(a))));
    let more_accurate = best_ticket.and_then(|b| Some(b > dense_acc?));
    // Reinit at its sparsest level against the ticket at the same level.
    let reinit_deepest = table.keys().filter(|k| k[procedure] == "reinit").filter_map(|k| k[level].parse::<usize>().ok()).max();
    let reinit_worse = reinit_deepest.and_then(|l| Some(metric("reinit", l, "early_stop_test_acc")? < metric("ticket", l, "early_stop_test_acc")?));
    Some(vec![
        ("tickets reach minimum validation loss earlier than the dense network (ticket nearest Pm 21%)", earlier),
        ("the best ticket is more accurate at early stop than the dense network", more_accurate),
        ("random reinitialisation is less accurate than the ticket at its sparsest level", reinit_worse),
    ])
}

fn num(v: f64) -> String {
    format!("{v:.4}")
}

/// Columns `<m>_mean`, `<m>_min`, `<m>_max` form metric `m`; `n` is the number of curves
/// behind a row; the rest are keys. The claims report reads tables the same way.
pub(super) fn read(path: &Path) -> Result<(Vec<String>, Table)> {
    let corrupt = |reason: String| Error::Table { path: path.to_owned(), reason };
    let mut reader = csv::Reader::from_path(path).map_err(|e| corrupt(e.to_string()))?;
    let header: Vec<String> = reader.headers().map_err(|e| corrupt(e.to_string()))?.iter().map(String::from).collect();
    let metrics: Vec<String> = header.iter().filter_map(|h| h.strip_suffix("_mean")).map(String::from).collect();
    let is_stat = |h: &str| h == "n" || metrics.iter().any(|m| h == format!("{m}_mean") || h == format!("{m}_min") || h == format!("{m}_max"));
    let keys: Vec<usize> = (0..header.len()).filter(|&i| !is_stat(&header[i])).collect();
    let index = |name: String| header.iter().position(|h| *h == name).ok_or_else(|| corrupt(format!("column `{name}` is missing")));
    let n_column = index("n".into())?;
    let columns: Vec<(String, [usize; 3])> = metrics
        .iter()
        .map(|m| Ok((m.clone(), [index(format!("{m}_mean"))?, index(format!("{m}_min"))?, index(format!("{m}_max"))?])))
        .collect::<Result<_>>()?;
    let mut table = Table::new();
    for record in reader.records() {
        let record = record.map_err(|e| corrupt(e.to_string()))?;
        let key: Vec<String> = keys.iter().map(|&i| record.get(i).unwrap_or_default().to_string()).collect();
        let parse = |i: usize| {
            let cell = record.get(i).unwrap_or_default();
            cell.parse::<f64>().map_err(|_| corrupt(format!("`{cell}` in column `{}` is not a number", header[i])))
        };
        let n = parse(n_column)? as usize;
        let values =
            columns.iter().map(|(m, [a, b, c])| Ok((m.clone(), Cell { mean: parse(*a)?, min: parse(*b)?, max: parse(*c)?, n }))).collect::<Result<_>>()?;
        table.insert(key, values);
    }
    Ok((keys.iter().map(|&i| header[i].clone()).collect(), table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(mean: f64, min: f64, max: f64, n: usize) -> Cell {
        Cell { mean, min, max, n }
    }

    #[test]
    fn a_change_is_judged_against_both_tables_spread() {
        // Ranges of 0.01 on both sides: σ ≈ 0.0089, 3σ√(1/2 + 1/2) ≈ 0.027.
        assert_eq!(judge(cell(0.975, 0.97, 0.98, 2), cell(0.98, 0.975, 0.985, 2), 0.0), Verdict::Within);
        // The same move with tight trials on both sides is beyond noise...
        assert_eq!(judge(cell(0.975, 0.9749, 0.9751, 2), cell(0.98, 0.9799, 0.9801, 2), 0.0), Verdict::Beyond);
        // ...unless the metric's trials usually spread more than these happened to.
        assert_eq!(judge(cell(0.975, 0.9749, 0.9751, 2), cell(0.98, 0.9799, 0.9801, 2), 0.005), Verdict::Within);
        // A wide new spread makes an old-spread-only rule's flag go away.
        assert_eq!(judge(cell(0.975, 0.9749, 0.9751, 2), cell(0.98, 0.95, 1.0, 2), 0.0), Verdict::Within);
        // One curve: no estimate.
        assert_eq!(judge(cell(0.5, 0.5, 0.5, 1), cell(0.6, 0.6, 0.6, 1), 0.0), Verdict::Unknown);
    }
}
