//! `compare OLD.csv NEW.csv`: a Markdown table of the cells of two results tables that differ,
//! each with the trial spread (min..max) of both sides beside it, so a reviewer can tell a
//! change from noise. A change is flagged when the new mean lies outside the old min..max.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One table: key (the identifying columns) → metric → (mean, min, max).
type Table = BTreeMap<Vec<String>, BTreeMap<String, (f64, f64, f64)>>;

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
    let mut out = String::new();
    out.push_str(&format!("| {} | metric | old mean [min, max] | new mean [min, max] | Δ mean | outside old spread |\n", old_keys.join(" | ")));
    out.push_str(&format!("|{}---|---|---|---|---|---|\n", "---|".repeat(old_keys.len())));
    let (mut compared, mut changed, mut flagged) = (0, 0, 0);
    for (key, new_metrics) in &new_table {
        let Some(old_metrics) = old_table.get(key) else {
            continue;
        };
        for (metric, &(n_mean, n_min, n_max)) in new_metrics {
            let Some(&(o_mean, o_min, o_max)) = old_metrics.get(metric) else {
                continue;
            };
            compared += 1;
            let delta = n_mean - o_mean;
            if delta.abs() <= 1e-12 * o_mean.abs().max(1.0) {
                continue;
            }
            changed += 1;
            let outside = n_mean < o_min || n_mean > o_max;
            flagged += outside as usize;
            out.push_str(&format!(
                "| {} | {metric} | {} [{}, {}] | {} [{}, {}] | {:+.4} | {} |\n",
                key.join(" | "),
                num(o_mean),
                num(o_min),
                num(o_max),
                num(n_mean),
                num(n_min),
                num(n_max),
                delta,
                if outside { "**yes**" } else { "no" }
            ));
        }
    }
    let only_old = old_table.keys().filter(|k| !new_table.contains_key(*k)).count();
    let only_new = new_table.keys().filter(|k| !old_table.contains_key(*k)).count();
    let summary = format!(
        "{compared} cells compared, {changed} changed, {flagged} outside the old trial spread; {only_old} rows only in old, {only_new} only in new.\n\n"
    );
    Ok(summary + &out)
}

fn num(v: f64) -> String {
    format!("{v:.4}")
}

/// Columns `<m>_mean`, `<m>_min`, `<m>_max` form metric `m`; `n` is a count; the rest are keys.
fn read(path: &Path) -> Result<(Vec<String>, Table)> {
    let corrupt = |reason: String| Error::Table { path: path.to_owned(), reason };
    let mut reader = csv::Reader::from_path(path).map_err(|e| corrupt(e.to_string()))?;
    let header: Vec<String> = reader.headers().map_err(|e| corrupt(e.to_string()))?.iter().map(String::from).collect();
    let metrics: Vec<String> = header.iter().filter_map(|h| h.strip_suffix("_mean")).map(String::from).collect();
    let is_stat = |h: &str| h == "n" || metrics.iter().any(|m| h == format!("{m}_mean") || h == format!("{m}_min") || h == format!("{m}_max"));
    let keys: Vec<usize> = (0..header.len()).filter(|&i| !is_stat(&header[i])).collect();
    let index = |name: String| header.iter().position(|h| *h == name).ok_or_else(|| corrupt(format!("column `{name}` is missing")));
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
        let values = columns.iter().map(|(m, [a, b, c])| Ok((m.clone(), (parse(*a)?, parse(*b)?, parse(*c)?)))).collect::<Result<_>>()?;
        table.insert(key, values);
    }
    Ok((keys.iter().map(|&i| header[i].clone()).collect(), table))
}
