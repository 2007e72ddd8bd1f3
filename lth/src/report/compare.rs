//! `compare OLD.csv NEW.csv`: what changed between two results tables of one figure, as
//! Markdown for a pull-request comment. First a summary a reviewer reads first (how many cells
//! moved beyond noise, and whether the paper's qualitative patterns hold in each table), then
//! one row per changed cell with both trial spreads.
//!
//! Reruns are bit-identical, so a cell that did not change prints as unchanged and "nothing
//! changed" is exactly 0 cells. Whether a change is more than noise is judged against the
//! trial-to-trial variation of both tables ([`NOISE_RULE`]).

use crate::base::error::{Error, Result};
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

/// One cell whose statistics differ between the tables.
#[derive(Debug, Clone)]
pub struct Change {
    /// The row's key columns, in the tables' order.
    pub key: Vec<String>,
    pub metric: String,
    old: Cell,
    new: Cell,
    verdict: Verdict,
}

impl Change {
    pub fn delta(&self) -> f64 {
        self.new.mean - self.old.mean
    }

    /// The old and the new mean.
    pub fn means(&self) -> (f64, f64) {
        (self.old.mean, self.new.mean)
    }

    /// Whether the move is beyond both tables' trial spread ([`NOISE_RULE`]).
    pub fn beyond_noise(&self) -> bool {
        self.verdict == Verdict::Beyond
    }

    /// The verdict as the tables print it: `**yes**`, `no`, or `?` (a single curve on a side).
    pub fn label(&self) -> &'static str {
        match self.verdict {
            Verdict::Beyond => "**yes**",
            Verdict::Within => "no",
            Verdict::Unknown => "?",
        }
    }

    /// `mean [min, max] (n)` of the old and the new cell.
    pub fn old_and_new(&self) -> (String, String) {
        let show = |c: Cell| format!("{} [{}, {}] ({})", num(c.mean), num(c.min), num(c.max), c.n);
        (show(self.old), show(self.new))
    }
}

/// A paper pattern checked in both tables: (description, old verdict, new verdict).
pub type PatternCheck = (&'static str, Option<bool>, Option<bool>);

/// What changed between two tables of one figure.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The key columns both tables share.
    pub keys: Vec<String>,
    /// Cells present in both tables.
    pub compared: usize,
    /// The cells that differ, in the new table's row order.
    pub changes: Vec<Change>,
    /// Rows in only one of the tables.
    pub only_old: usize,
    pub only_new: usize,
    /// The paper's qualitative patterns; None when the table has no per-level early-stop columns.
    pub patterns: Option<Vec<PatternCheck>>,
    /// What makes the tables less comparable than their cells suggest: another scale, other
    /// data, or no provenance file to tell ([`provenance_warnings`]).
    pub warnings: Vec<String>,
}

/// What a figure's provenance file (`figN.md`) says about its table.
pub(super) struct Provenance {
    /// The figure its title names (`# fig5: …`).
    pub(super) figure: Option<String>,
    pub(super) scale: Option<String>,
    /// Its `data` row per experiment (`conv2` → `synthetic`), for the experiments the table
    /// has rows of; the counts of finished trainings, which a rerun changes, left out.
    pub(super) data: BTreeMap<String, String>,
}

impl Provenance {
    pub(super) fn beside(csv: &Path) -> Option<Provenance> {
        let text = std::fs::read_to_string(csv.with_extension("md")).ok()?;
        let figure = text.lines().next().and_then(|l| l.strip_prefix("# ")).and_then(|l| l.split(':').next()).map(str::to_string);
        let data = data_entries(&text).into_iter().filter(|e| !e.what.starts_with("no finished runs")).map(|e| (e.experiment, e.what)).collect();
        Some(Provenance { figure, scale: provenance_value(&text, "scale").map(|s| s.trim_matches('`').to_string()), data })
    }
}

/// The second cell of a provenance file's `| name | value |` row.
pub(super) fn provenance_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.strip_prefix(&format!("| {name} | "))?.strip_suffix(" |"))
}

/// One experiment's entry in a provenance file's `data` row, as `figures` writes it
/// ("`conv2`: **synthetic** (…), 2 of 2 planned trainings finished"), markdown removed.
pub(super) struct DataEntry {
    pub(super) experiment: String,
    /// What it trained on: "real", "synthetic (…)", "JPEG copy of CIFAR-10 (…)", or "no finished runs".
    pub(super) what: String,
    /// Finished and planned trainings.
    pub(super) trainings: Option<(usize, usize)>,
}

/// The entries of a provenance file's `data` row (none where it has no such row).
pub(super) fn data_entries(text: &str) -> Vec<DataEntry> {
    let plain = |t: &str| t.replace(['`', '*'], "");
    let counts = |c: &str| {
        let (finished, planned) = c.strip_suffix(" planned trainings finished")?.split_once(" of ")?;
        Some((finished.parse().ok()?, planned.parse().ok()?))
    };
    provenance_value(text, "data")
        .into_iter()
        .flat_map(|row| row.split("; "))
        .filter_map(|entry| {
            let (experiment, what) = entry.split_once(": ")?;
            let (what, trainings) = match what.rsplit_once(", ").map(|(w, c)| (w, counts(c))) {
                Some((what, Some(trainings))) => (what, Some(trainings)),
                _ => (what, None),
            };
            Some(DataEntry { experiment: plain(experiment), what: plain(what), trainings })
        })
        .collect()
}

/// The warnings for two tables whose provenance files name another scale or other data (or
/// are missing), the sides named by `sides`: cells of a `quick` and a `paper` table differ by
/// the scale, not by noise, and are still compared, so the reader must be told.
pub(super) fn provenance_warnings(old: Option<&Provenance>, new: Option<&Provenance>, sides: [&str; 2], stem: &str) -> Vec<String> {
    let [was_side, now_side] = sides;
    let shown = |value: &Option<String>| value.as_deref().map(|v| format!("`{v}`")).unwrap_or_else(|| "not recorded".into());
    let (Some(o), Some(n)) = (old, new) else {
        return vec![format!("no `{stem}.md` beside the table on one side or both; scale and data not checked")];
    };
    let mut warnings = Vec::new();
    if o.scale != n.scale {
        warnings.push(format!("scale differs ({was_side} {}, {now_side} {}); compared anyway", shown(&o.scale), shown(&n.scale)));
    }
    for (experiment, was) in &o.data {
        match n.data.get(experiment) {
            Some(now) if now != was => warnings.push(format!("`{experiment}` trained on other data ({was_side}: {was}; {now_side}: {now}); compared anyway")),
            _ => {}
        }
    }
    warnings
}

/// Reads both tables and compares them cell by cell.
pub fn between(old: &Path, new: &Path) -> Result<Comparison> {
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
    let (old_table, _) = matching_keys(old, old_table)?;
    let (new_table, shown_keys) = matching_keys(new, new_table)?;
    let typical = typical_sigmas(&old_table, &new_table);
    let (mut compared, mut changes) = (0, Vec::new());
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
            let verdict = judge(o, n, typical.get(metric).copied().unwrap_or(0.0));
            let key = shown_keys.get(key).unwrap_or(key).clone();
            changes.push(Change { key, metric: metric.clone(), old: o, new: n, verdict });
        }
    }
    let patterns = patterns(&old_keys, &old_table)
        .zip(patterns(&old_keys, &new_table))
        .map(|(was, now)| was.into_iter().zip(now).map(|((name, was), (_, now))| (name, was, now)).collect());
    let stem = new.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let warnings = provenance_warnings(Provenance::beside(old).as_ref(), Provenance::beside(new).as_ref(), ["old", "new"], &stem);
    Ok(Comparison {
        warnings,
        only_old: old_table.keys().filter(|k| !new_table.contains_key(*k)).count(),
        only_new: new_table.keys().filter(|k| !old_table.contains_key(*k)).count(),
        keys: old_keys,
        compared,
        changes,
        patterns,
    })
}

/// Decimal places a fractional key value (`remaining`) is matched to. It is itself a mean over
/// the row's runs, so its last bits change with the number of trials behind it
/// (0.8003756574004508 with 2, …509 with 5) while the row is the same.
const KEY_DECIMALS: usize = 9;

/// The table re-keyed by its key values rounded to [`KEY_DECIMALS`], and each rounded key's
/// key as written (what the tables print).
fn matching_keys(path: &Path, table: Table) -> Result<(Table, BTreeMap<Vec<String>, Vec<String>>)> {
    let round = |v: &String| match v.parse::<f64>() {
        Ok(x) if v.contains('.') => format!("{x:.KEY_DECIMALS$}"),
        _ => v.clone(),
    };
    let (mut rounded, mut written) = (Table::new(), BTreeMap::new());
    for (key, metrics) in table {
        let matching: Vec<String> = key.iter().map(round).collect();
        if let Some(earlier) = written.insert(matching.clone(), key.clone()) {
            return Err(Error::Table {
                path: path.to_owned(),
                reason: format!("rows ({}) and ({}) differ only past the {KEY_DECIMALS}th decimal of a key", earlier.join(", "), key.join(", ")),
            });
        }
        rounded.insert(matching, metrics);
    }
    Ok((rounded, written))
}

pub fn compare(old: &Path, new: &Path) -> Result<String> {
    Ok(between(old, new)?.markdown())
}

impl Comparison {
    /// The summary, the paper patterns, the noise rule and one row per changed cell.
    pub fn markdown(&self) -> String {
        let count = |label: &str| self.changes.iter().filter(|c| c.label() == label).count();
        let changed = self.changes.len();
        let (compared, only_old, only_new) = (self.compared, self.only_old, self.only_new);
        let mut out = String::from("### Summary\n\n");
        for warning in &self.warnings {
            out.push_str(&format!("**Warning:** {warning}.\n\n"));
        }
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
        out.push_str(&self.patterns_paragraph());
        out.push_str(&format!("Rule: {NOISE_RULE}\n\n"));
        if changed > 0 {
            out.push_str(&format!("| {} | metric | old mean [min, max] (n) | new mean [min, max] (n) | Δ mean | beyond noise |\n", self.keys.join(" | ")));
            out.push_str(&format!("|{}---|---|---|---|---|\n", "---|".repeat(self.keys.len())));
            for change in &self.changes {
                let (old, new) = change.old_and_new();
                out.push_str(&format!("| {} | {} | {old} | {new} | {:+.4} | {} |\n", change.key.join(" | "), change.metric, change.delta(), change.label()));
            }
        }
        out
    }

    /// The paper's qualitative patterns, checked in each table that has early-stop columns.
    fn patterns_paragraph(&self) -> String {
        let Some(checks) = &self.patterns else {
            return "Paper patterns: not checked (this table has no per-level early-stop columns).\n\n".into();
        };
        let mut out = String::from("Paper patterns (old → new):\n\n");
        for (name, was, now) in checks {
            let mark = if was != now { " **(changed)**" } else { "" };
            out.push_str(&format!("- {name}: {} → {}{mark}\n", pattern_verdict(*was), pattern_verdict(*now)));
        }
        out.push('\n');
        out
    }
}

/// A pattern's verdict in words.
pub fn pattern_verdict(verdict: Option<bool>) -> &'static str {
    match verdict {
        Some(true) => "holds",
        Some(false) => "does not hold",
        None => "not testable",
    }
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
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| corrupt(e.to_string()))?;
        let key: Vec<String> = keys.iter().map(|&i| record.get(i).unwrap_or_default().to_string()).collect();
        let parse = |i: usize| {
            let cell = record.get(i).unwrap_or_default();
            match cell.parse::<f64>() {
                // A NaN is no measurement (a diverged training averaged in): refused, not judged.
                Ok(v) if v.is_nan() => Err(corrupt(format!(
                    "data row {}: `{cell}` in column `{}` is not a measurement; regenerate the table (diverged trainings are left out)",
                    row + 1,
                    header[i]
                ))),
                Ok(v) => Ok(v),
                Err(_) => Err(corrupt(format!("`{cell}` in column `{}` is not a number", header[i]))),
            }
        };
        let n = parse(n_column)? as usize;
        let values =
            columns.iter().map(|(m, [a, b, c])| Ok((m.clone(), Cell { mean: parse(*a)?, min: parse(*b)?, max: parse(*c)?, n }))).collect::<Result<_>>()?;
        // A second row with the same key would silently replace the first (a table pasted
        // together from two runs, or edited by hand): refuse it.
        if table.contains_key(&key) {
            let named: Vec<String> = keys.iter().zip(&key).map(|(&i, v)| format!("{}={v}", header[i])).collect();
            return Err(corrupt(format!("data row {} repeats the key ({}) of an earlier row; a table has one row per key", row + 1, named.join(", "))));
        }
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

    /// Writes `text` as a table in a fresh folder of the system's temp dir.
    fn table(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lth-compare-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("fig4.csv");
        std::fs::write(&path, text).expect("write table");
        path
    }

    #[test]
    fn rows_match_when_a_mean_key_differs_in_its_last_bits_and_repeated_rows_are_refused() {
        let header = "procedure,level,remaining,n,acc_mean,acc_min,acc_max\n";
        let two = table("two", &format!("{header}ticket,1,0.8003756574004508,2,0.97,0.96,0.98\n"));
        let later = table("later", &format!("{header}ticket,1,0.8003756574004509,2,0.97,0.96,0.98\n"));
        let c = between(&two, &later).expect("compare");
        assert_eq!((c.compared, c.only_old, c.only_new, c.changes.len()), (1, 0, 0, 0));
        let repeated = table("repeated", &format!("{header}ticket,1,0.8,2,0.97,0.96,0.98\nticket,1,0.8,2,0.5,0.5,0.5\n"));
        let err = between(&two, &repeated).expect_err("a repeated row").to_string();
        assert!(err.contains("data row 2 repeats the key (procedure=ticket, level=1, remaining=0.8)"), "{err}");
        for path in [two, later, repeated] {
            let _ = std::fs::remove_dir_all(path.parent().expect("folder"));
        }
    }

    /// Issue #29: tables of different scales were compared as if alike, most cells "within
    /// noise". The provenance beside each table is read, and a difference is said first.
    #[test]
    fn tables_of_different_scales_or_data_are_compared_with_a_warning() {
        let header = "procedure,level,remaining,n,acc_mean,acc_min,acc_max\n";
        let quick = table("quick", &format!("{header}ticket,1,0.8,2,0.97,0.96,0.98\n"));
        let paper = table("paper", &format!("{header}ticket,1,0.8,2,0.98,0.97,0.99\n"));
        let bare = between(&quick, &paper).expect("compare").markdown();
        assert!(bare.contains("**Warning:** no `fig4.md` beside the table on one side or both; scale and data not checked."), "{bare}");
        let provenance = |csv: &std::path::Path, scale: &str, data: &str| {
            let text = format!("# fig4: …\n\n| | |\n|---|---|\n| scale | `{scale}` |\n| data | `conv2`: {data}, 2 of 2 planned trainings finished |\n");
            std::fs::write(csv.with_extension("md"), text).expect("write provenance");
        };
        provenance(&quick, "quick", "real");
        provenance(&paper, "quick", "real");
        assert!(!between(&quick, &paper).expect("compare").markdown().contains("Warning"), "alike tables warn of nothing");
        provenance(&paper, "paper", "synthetic");
        let text = between(&quick, &paper).expect("compare").markdown();
        assert!(text.contains("**Warning:** scale differs (old `quick`, new `paper`); compared anyway."), "{text}");
        assert!(text.contains("**Warning:** `conv2` trained on other data (old: real; new: synthetic); compared anyway."), "{text}");
        for path in [quick, paper] {
            let _ = std::fs::remove_dir_all(path.parent().expect("folder"));
        }
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
