//! The report's text: the rule of each claim in words, generated from its fields, and
//! `CLAIMS.md` itself (how claims are judged, then one row per claim).

use super::beyond::BEYOND;
use super::check::{evaluate, load};
use super::model::*;
use super::paper::CLAIMS;
use crate::base::error::Result;
use crate::base::files;
use crate::report::catalog;
use crate::report::compare::Cell;
use std::fmt::Write;
use std::path::Path;

/// Reads every figure table in `dir` and writes the report to `output`.
pub fn write(dir: &Path, output: &Path) -> Result<()> {
    files::write_atomic(output, render(&load(dir)?).as_bytes())
}

/// Where a folder's report goes.
pub fn report_path(dir: &Path) -> std::path::PathBuf {
    dir.join("CLAIMS.md")
}

impl Claim {
    /// The rule in words, generated from the fields it is evaluated from.
    pub fn rule(&self) -> String {
        let (series, pm) = self.subject;
        let subject = match pm {
            Pm::At(target) => name(series, target),
            Pm::Every(low, high) => format!("every {} `{}` level with Pm in [{}, {}]", series.experiment, series.procedure, percent(low), percent(high)),
            Pm::Some(low, high) => format!("some {} `{}` level with Pm in [{}, {}]", series.experiment, series.procedure, percent(low), percent(high)),
        };
        let reference = match self.reference {
            Reference::At(other, target) => name(other, target),
            Reference::SameLevel(procedure) => format!("`{procedure}` at the same level"),
        };
        let op = match self.compare {
            Compare::Ratio => "÷",
            Compare::Difference => "−",
        };
        let bound = self.bound.show(|v| self.compare.show(v, self.metric));
        format!("{}: {subject} {op} {reference} is {bound}", self.metric.describe(self.figure))
    }
}

impl Metric {
    /// In words; a checkpoint by the name its figure gives it.
    pub(super) fn describe(self, figure: &str) -> String {
        match self {
            Metric::EarlyStopIteration => "early-stop iteration (minimum validation loss)".into(),
            Metric::EarlyStopTestAcc => "test accuracy at early stop".into(),
            Metric::FinalTestAcc => "test accuracy at the last iteration".into(),
            Metric::IterationsToTestAcc(threshold) => format!("iterations until the test accuracy first reaches {}", percent(threshold)),
            Metric::CheckpointTestAcc(checkpoint) => {
                let label = catalog::find(figure).ok().and_then(|f| match f.kind {
                    catalog::Kind::Checkpoints(points) => points.get(checkpoint).map(|p| p.label.to_string()),
                    _ => None,
                });
                format!("test accuracy at {}", label.unwrap_or_else(|| format!("checkpoint {checkpoint}")))
            }
            Metric::Barrier(Rewind::Zero) => "error barrier between copies trained from theta0".into(),
            Metric::Barrier(Rewind::Latest) => "error barrier between copies trained from the latest rewind iteration of the table".into(),
        }
    }

    /// "98.28% [98.25, 98.30], n 2", "0.73 pp [0.24, 1.27], n 3" or "2125 [1750, 2500], n 2".
    pub(super) fn show(self, c: Cell) -> String {
        let v = |x: f64| match () {
            _ if x.is_infinite() => "not reached".to_string(),
            _ if self.is_accuracy() => format!("{:.2}", 100.0 * x),
            _ => format!("{x:.0}"),
        };
        // A barrier is a difference of error rates: percentage points, not a percentage.
        let unit = match self {
            Metric::Barrier(_) => " pp",
            _ if self.is_accuracy() => "%",
            _ => "",
        };
        format!("{}{unit} [{}, {}], n {}", v(c.mean), v(c.min), v(c.max), c.n)
    }
}

impl Compare {
    pub(super) fn word(self) -> &'static str {
        match self {
            Compare::Ratio => "ratio",
            Compare::Difference => "difference",
        }
    }

    pub(super) fn show(self, value: f64, metric: Metric) -> String {
        match self {
            Compare::Ratio => format!("{value:.2}"),
            Compare::Difference if metric.is_accuracy() => format!("{value:+.2} pp"),
            Compare::Difference => format!("{value:+.0}"),
        }
    }
}

impl Bound {
    pub(super) fn show(self, value: impl Fn(f64) -> String) -> String {
        match self {
            Bound::MoreThan(x) => format!("more than {}", value(x)),
            Bound::AtLeast(x) => format!("at least {}", value(x)),
            Bound::LessThan(x) => format!("less than {}", value(x)),
            Bound::AtMost(x) => format!("at most {}", value(x)),
            Bound::Between(low, high) => format!("between {} and {}", value(low), value(high)),
        }
    }
}

/// The report: how claims are judged, then one row per claim whose table is in the folder.
pub(super) fn render(tables: &Tables) -> String {
    let mut out = String::from(
        "# Claims of docs/paper.md §3 against the tables in this folder\n\n\
         Generated by `cargo xtask claims` (`lth claims <folder>`) from the tables and provenance files beside it; do not edit. \
         `cargo xtask figures --check` fails when it no longer matches them.\n\n",
    );
    let _ = write!(
        out,
        "How a claim is judged:\n\n\
         - Each measured number is the mean over the `n` trial curves of the table, with [min, max] over them. The rule compares means: \
         subject ÷ reference (a ratio) or subject − reference (a difference, in percentage points for accuracies), against a bound.\n\
         - A single Pm is matched to the level whose Pm is nearest, if within {at:.0}% of it (relative); the Pm used is named in the measured \
         column. A range of Pm takes every level inside it, with {range:.0}% slack at each end. \"Every\" holds if each level passes, and \
         shows the worst; \"some\" holds if one does, and shows the best.\n\
         - Iterations until an accuracy is reached are read off Figure 3's mean curve, with the spread [first trial, all trials] read off \
         its max and min curves; a curve that never reaches it counts as infinitely slow.\n\
         - Verdicts: **holds**, **does not hold**, or *not tested* with the reason: synthetic data (a stand-in for CIFAR-10 says nothing \
         about the paper), `smoke` scale (a pipeline check), or a level or procedure this scale does not train.\n\
         - Scale and data are each table's own (its `figN.md` and `data` column): one folder may mix scales.\n\
         - A verdict read from experiments whose planned trainings are not all finished is marked *provisional*, with how many \
         of them were: the missing trainings could still flip it.\n\n",
        at = 100.0 * AT_TOLERANCE,
        range = 100.0 * RANGE_TOLERANCE,
    );
    let claims: Vec<(&Claim, &Table)> = CLAIMS.iter().filter_map(|c| Some((c, tables.get(c.figure)?))).collect();
    // Only where one of their tables is: the paper's folders keep their report as it was.
    let beyond: Vec<(&Claim, &Table)> = BEYOND.iter().filter_map(|c| Some((c, tables.get(c.figure)?))).collect();
    if claims.is_empty() && !beyond.is_empty() {
        out.push_str("No claim of docs/paper.md §3 reads the tables in this folder.\n");
    } else {
        rows(&mut out, &claims);
        let absent: Vec<&str> =
            catalog::FIGURES.iter().map(|f| f.id).filter(|id| !tables.contains_key(*id) && CLAIMS.iter().any(|c| c.figure == *id)).collect();
        if !absent.is_empty() {
            let _ = writeln!(out, "\nNot checked here, for want of a table in this folder: the claims of {}.", absent.join(", "));
        }
    }
    if !beyond.is_empty() {
        out.push_str(
            "\n## Beyond the ICLR paper\n\n\
             Claims of the follow-up literature (pruning at initialization), judged by the same rules on the `fig4i`/`fig5i` tables.\n\n",
        );
        rows(&mut out, &beyond);
    }
    out
}

/// The count line and one table row per claim.
fn rows(out: &mut String, claims: &[(&Claim, &Table)]) {
    let outcomes: Vec<Outcome> = claims.iter().map(|(c, t)| evaluate(c, t)).collect();
    let count = |f: fn(&Verdict) -> bool| outcomes.iter().filter(|o| f(&o.verdict)).count();
    let _ = writeln!(
        out,
        "{} claims on the tables here: {} hold, {} do not hold, {} not tested.\n",
        claims.len(),
        count(|v| *v == Verdict::Holds),
        count(|v| *v == Verdict::DoesNotHold),
        count(|v| matches!(v, Verdict::NotTested(_)))
    );
    out.push_str("| claim | paper | rule | measured | scale, data | verdict |\n|---|---|---|---|---|---|\n");
    for ((claim, _), outcome) in claims.iter().zip(&outcomes) {
        let provisional = outcome.provisional.map(|(f, p)| format!(" (*provisional*: {f} of {p} planned trainings finished)")).unwrap_or_default();
        let verdict = match &outcome.verdict {
            Verdict::Holds => format!("**holds**{provisional}"),
            Verdict::DoesNotHold => format!("**does not hold**{provisional}"),
            Verdict::NotTested(why) => format!("*not tested*: {why}"),
        };
        let _ = writeln!(out, "| `{}` | {} | {} | {} | {} | {verdict} |", claim.id, claim.paper, claim.rule(), outcome.measured, outcome.source);
    }
}
