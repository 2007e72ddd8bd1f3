//! The pull-request comment: every figure table of the base branch's figures folder against
//! the same table of the pull request's, as one Markdown comment a reviewer can read without
//! opening the job. Per table: how many cells changed, which moved beyond the trial spread, and
//! the largest moves (each cell judged by [`compare`]). What cannot be compared (a table on one
//! side only, tables of different figures, a damaged table) is one line of the comment, and a
//! change of scale or data one warning line, never a failed job: the comment is posted
//! whatever the pull request did to the tables.

use crate::report::compare::{self, Change, Comparison, Provenance};
use std::collections::BTreeSet;
use std::path::Path;

/// The comment's hidden first line: the workflow finds its earlier comment by it and updates
/// that one instead of adding a comment per push.
pub const MARKER: &str = "<!-- lth-results -->";

/// Largest moves listed per metric of a changed table.
const LARGEST_PER_METRIC: usize = 3;
/// Beyond-spread cells listed per table (the count is always given).
const BEYOND_LISTED: usize = 10;
/// A table's full comparison is attached only below this size: GitHub refuses comments over
/// 65,536 characters, and Figure 3's curve tables at paper scale have 35,000 rows.
const FULL_LIMIT: usize = 12_000;

/// What the pull request changed and where its tables came from, said at the top.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The base branch's name, as the comment shows it (e.g. `main`).
    pub base: String,
    /// The pull request changes committed tables and no code or experiment spec.
    pub tables_only: bool,
    /// Tables (relative to the figures folder, e.g. `fig5.csv`) that were rerun on the runner
    /// from the pull request's code, rather than taken as committed.
    pub rerun: Vec<String>,
}

/// How one table pair came out.
enum Outcome {
    Compared {
        comparison: Comparison,
        warnings: Vec<String>,
    },
    /// Not compared, and why (one line).
    Skipped(String),
}

/// The whole comment for `base` (the base branch's figures folder) against `pr` (the pull
/// request's). Never fails: every problem is a line of the comment.
pub fn comment(base: &Path, pr: &Path, context: &Context) -> String {
    let mut out = format!("{MARKER}\n## Results tables: `{}` → this pull request\n\n", context.base);
    if context.tables_only {
        out.push_str("**Tables changed, code did not.** This pull request edits committed results tables without touching the code or the experiment specs that produce them: the numbers below are the committed ones, not rerun.\n\n");
    }
    if context.rerun.is_empty() {
        out.push_str("Both sides are the committed tables.\n\n");
    } else {
        out.push_str(&format!(
            "Rerun on the runner with this pull request's code: {}; the other tables are the committed ones.\n\n",
            context.rerun.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    let (base_tables, pr_tables) = match (tables(base), tables(pr)) {
        (Ok(b), Ok(p)) => (b, p),
        (Err(e), _) | (_, Err(e)) => {
            out.push_str(&format!("Nothing compared: {e}.\n"));
            return out;
        }
    };
    let all: BTreeSet<&String> = base_tables.iter().chain(&pr_tables).collect();
    if all.is_empty() {
        out.push_str("Nothing compared: neither side has a figure table (`figN.csv`).\n");
        return out;
    }
    let outcomes: Vec<(&String, Outcome)> = all
        .into_iter()
        .map(|table| {
            let outcome = match (base_tables.contains(table), pr_tables.contains(table)) {
                (true, false) => Outcome::Skipped("removed by this pull request; nothing to compare".into()),
                (false, true) => Outcome::Skipped("new in this pull request; nothing to compare it with".into()),
                _ => compare_one(base, pr, table),
            };
            (table, outcome)
        })
        .collect();

    out.push_str("| table | cells compared | changed | beyond trial spread | rows added / removed | largest move |\n|---|---|---|---|---|---|\n");
    for (table, outcome) in &outcomes {
        match outcome {
            Outcome::Compared { comparison: c, .. } => {
                let beyond = c.changes.iter().filter(|ch| ch.beyond_noise()).count();
                let largest = largest_moves(c, 1).first().map(|ch| move_text(&c.keys, ch)).unwrap_or_else(|| "none".into());
                out.push_str(&format!("| `{table}` | {} | {} | {beyond} | +{} / −{} | {largest} |\n", c.compared, c.changes.len(), c.only_new, c.only_old));
            }
            Outcome::Skipped(why) => out.push_str(&format!("| `{table}` | not compared: {why} | | | | |\n")),
        }
    }
    out.push('\n');
    let warnings: Vec<String> = outcomes
        .iter()
        .flat_map(|(table, outcome)| match outcome {
            Outcome::Compared { warnings, .. } => warnings.iter().map(|w| format!("- `{table}`: {w}\n")).collect(),
            Outcome::Skipped(_) => Vec::new(),
        })
        .collect();
    if !warnings.is_empty() {
        out.push_str("Warnings:\n\n");
        out.extend(warnings);
        out.push('\n');
    }
    for (table, outcome) in &outcomes {
        if let Outcome::Compared { comparison, .. } = outcome {
            if !comparison.changes.is_empty() {
                out.push_str(&section(table, comparison));
            }
        }
    }
    out.push_str(&format!("<sub>Δ is the pull request's mean minus the base's. Rule for \"beyond trial spread\": {}</sub>\n", compare::NOISE_RULE));
    out
}

/// One table of both sides, with the checks `compare` itself does not make.
fn compare_one(base: &Path, pr: &Path, table: &str) -> Outcome {
    let (old, new) = (base.join(table), pr.join(table));
    let (old_prov, new_prov) = (Provenance::beside(&old), Provenance::beside(&new));
    let stem = Path::new(table).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for (side, prov) in [("base", &old_prov), ("pull request", &new_prov)] {
        if let Some(figure) = prov.as_ref().and_then(|p| p.figure.as_deref()).filter(|f| *f != stem) {
            return Outcome::Skipped(format!("the {side}'s provenance file describes `{figure}`, not `{stem}`: a table of another figure"));
        }
    }
    let comparison = match compare::between(&old, &new) {
        Ok(c) => c,
        Err(e) => return Outcome::Skipped(without_folders(&e.to_string(), base, pr)),
    };
    if comparison.compared == 0 && comparison.only_old > 0 && comparison.only_new > 0 {
        return Outcome::Skipped(format!(
            "no row in common ({} rows only in the base, {} only in the pull request): tables of different figures, experiments or data",
            comparison.only_old, comparison.only_new
        ));
    }
    let warnings = compare::provenance_warnings(old_prov.as_ref(), new_prov.as_ref(), ["base", "pull request"], &stem);
    Outcome::Compared { comparison, warnings }
}

/// The section of a table with changes: counts, the beyond-spread cells, the largest moves,
/// the patterns that changed, and the full comparison when it is short enough.
fn section(table: &str, c: &Comparison) -> String {
    let beyond: Vec<&Change> = c.changes.iter().filter(|ch| ch.beyond_noise()).collect();
    let unknown = c.changes.iter().filter(|ch| ch.label() == "?").count();
    let mut out = format!(
        "### `{table}`\n\n{} of {} cells changed, {} beyond the trial spread, {unknown} with a single curve on a side (no spread to judge by); {} rows only in the base, {} only in the pull request.\n\n",
        c.changes.len(),
        c.compared,
        beyond.len(),
        c.only_old,
        c.only_new
    );
    if !beyond.is_empty() {
        out.push_str("Beyond the trial spread:\n\n");
        out.push_str(&rows(&c.keys, beyond.iter().take(BEYOND_LISTED).copied()));
        if beyond.len() > BEYOND_LISTED {
            out.push_str(&format!("\n…and {} more (the full comparison has them all).\n", beyond.len() - BEYOND_LISTED));
        }
        out.push('\n');
    }
    if !c.changes.is_empty() {
        out.push_str(&format!("Largest moves (at most {LARGEST_PER_METRIC} per metric):\n\n"));
        out.push_str(&rows(&c.keys, largest_moves(c, LARGEST_PER_METRIC).into_iter()));
        out.push('\n');
    }
    for (name, was, now) in c.patterns.iter().flatten().filter(|(_, was, now)| was != now) {
        out.push_str(&format!("Paper pattern changed: {name}: {} → {}.\n\n", compare::pattern_verdict(*was), compare::pattern_verdict(*now)));
    }
    let full = c.markdown();
    if full.len() <= FULL_LIMIT {
        out.push_str(&format!("<details><summary>Full comparison</summary>\n\n{full}\n</details>\n\n"));
    } else {
        out.push_str(&format!(
            "The full comparison ({} characters) is too long for a comment: run `cargo xtask compare BASE/{table} PR/{table}`.\n\n",
            full.len()
        ));
    }
    out
}

/// Per metric, the `per_metric` changes with the largest |Δ mean| (ties in table order); the
/// metrics' units differ (iterations, accuracy), so moves are ranked within a metric only.
fn largest_moves(c: &Comparison, per_metric: usize) -> Vec<&Change> {
    let metrics: BTreeSet<&str> = c.changes.iter().map(|ch| ch.metric.as_str()).collect();
    let mut picked = Vec::new();
    for metric in metrics {
        let mut of_metric: Vec<&Change> = c.changes.iter().filter(|ch| ch.metric == metric).collect();
        of_metric.sort_by(|a, b| b.delta().abs().total_cmp(&a.delta().abs()));
        picked.extend(of_metric.into_iter().take(per_metric));
    }
    if per_metric == 1 {
        // The summary's one move: the largest relative to its own base value.
        picked.sort_by(|a, b| relative(b).total_cmp(&relative(a)));
        picked.truncate(1);
    }
    picked
}

fn relative(change: &Change) -> f64 {
    let (old, _) = change.means();
    change.delta().abs() / old.abs().max(f64::MIN_POSITIVE)
}

fn move_text(keys: &[String], change: &Change) -> String {
    format!("{} {} {:+.4}{}", key_text(keys, &change.key), change.metric, change.delta(), if change.beyond_noise() { " (beyond spread)" } else { "" })
}

/// `procedure=ticket, level=3`: the key columns, numbers shortened to 4 decimals.
fn key_text(keys: &[String], key: &[String]) -> String {
    keys.iter()
        .zip(key)
        .map(|(k, v)| {
            let v = match v.parse::<f64>() {
                Ok(x) if v.contains('.') && v.len() > 6 => format!("{x:.4}"),
                _ => v.clone(),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows<'a>(keys: &[String], changes: impl Iterator<Item = &'a Change>) -> String {
    let mut out =
        String::from("| row | metric | base: mean [min, max] (n) | pull request: mean [min, max] (n) | Δ mean | beyond spread |\n|---|---|---|---|---|---|\n");
    for change in changes {
        let (old, new) = change.old_and_new();
        out.push_str(&format!("| {} | {} | {old} | {new} | {:+.4} | {} |\n", key_text(keys, &change.key), change.metric, change.delta(), change.label()));
    }
    out
}

/// The figure tables of a figures folder: its `*.csv` and those of each folder directly in it
/// (`paper/fig3.csv`), as paths relative to it.
fn tables(dir: &Path) -> Result<BTreeSet<String>, String> {
    let listing = |d: &Path| std::fs::read_dir(d).map(|entries| entries.flatten().map(|e| e.path()).collect::<Vec<_>>());
    let top = listing(dir).map_err(|e| format!("{} cannot be read ({e})", dir.display()))?;
    let mut found = BTreeSet::new();
    for path in top {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            for inner in listing(&path).unwrap_or_default() {
                if inner.extension().is_some_and(|e| e == "csv") {
                    found.insert(format!("{name}/{}", inner.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
                }
            }
        } else if path.extension().is_some_and(|e| e == "csv") {
            found.insert(name);
        }
    }
    Ok(found)
}

/// An error message with the two folders' paths replaced by whose they are, so the comment
/// names tables as the repository does (`fig5.csv`, not a runner's scratch path).
fn without_folders(message: &str, base: &Path, pr: &Path) -> String {
    message.replace(&format!("{}/", base.display()), "the base's ").replace(&format!("{}/", pr.display()), "the pull request's ")
}
