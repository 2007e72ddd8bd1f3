//! The per-layer density table of the pruning-at-initialization figures (`fig4i`, `fig5i`):
//! at each level a method ran at, the fraction of every prunable layer's weights that each
//! method and the IMP ticket keep, read from the masks in the run folders. A method that ranks
//! all layers under one threshold can prune a whole layer away ("layer collapse"); the table is
//! where that shows.

use crate::base::error::Result;
use crate::base::spec::{PlannedRun, Procedure};
use crate::lottery::procedure;
use crate::nn::Architecture;
use crate::sparsity::at_init;
use crate::store::runs::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Densities of one (procedure, level), summed over trials so the mean can be taken at the end.
#[derive(Default)]
struct Sum {
    trials: usize,
    remaining: f64,
    layers: BTreeMap<String, f64>,
}

/// The table in markdown, for the runs of `plan` (one experiment): the methods at their levels
/// and the ticket at the same levels, mean over trials. Trainings whose masks are not on this
/// machine are left out and counted in a closing line: a fresh clone keeps only curves, and the
/// ticket's next masks (`procedure::trained_mask`), not the masks chosen at initialization.
pub fn table(store: &Store, plan: &[PlannedRun]) -> Result<String> {
    let levels: BTreeSet<usize> = plan.iter().filter(|p| p.spec.procedure.at_init()).flat_map(|p| p.levels.iter().copied()).collect();
    let mut sums: BTreeMap<(usize, &'static str), Sum> = BTreeMap::new();
    let mut missing = 0;
    let mut names: Vec<String> = Vec::new();
    for planned in plan.iter().filter(|p| p.spec.procedure == Procedure::Ticket || p.spec.procedure.at_init()) {
        let arch = Architecture::of(planned.spec.method.model);
        let run = store.existing(&planned.spec);
        for &level in planned.levels.iter().filter(|l| levels.contains(l)) {
            if !run.is_done(level) {
                continue;
            }
            let ticket = planned.spec.procedure == Procedure::Ticket;
            if !(run.mask_path(level).exists() || ticket && procedure::has_trained_mask(&run, level)) {
                missing += 1;
                continue;
            }
            let mask = if ticket { procedure::trained_mask(&run, level, &arch, &planned.spec.method.pruning)? } else { run.load_mask(level, &arch)? };
            let sum = sums.entry((level, planned.spec.procedure.as_str())).or_default();
            sum.trials += 1;
            sum.remaining += mask.remaining();
            for (name, density) in at_init::densities(&mask) {
                *sum.layers.entry(name.clone()).or_default() += density;
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    let mut out = String::from("Per-layer density: the percentage of each prunable layer's weights kept, mean over the `n` trials (**0.0**: the layer is pruned away, \"layer collapse\"):\n\n");
    let _ = writeln!(out, "| level | Pm (%) | procedure | n | {} |", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|---|---|---|---|{}", "---|".repeat(names.len()));
    for ((level, procedure), sum) in &sums {
        let n = sum.trials as f64;
        let cells: Vec<String> = names
            .iter()
            .map(|name| match sum.layers.get(name).map(|d| 100.0 * d / n) {
                Some(0.0) => "**0.0**".to_string(),
                Some(d) => format!("{d:.1}"),
                None => "-".to_string(),
            })
            .collect();
        let _ = writeln!(out, "| {level} | {:.1} | {procedure} | {} | {} |", 100.0 * sum.remaining / n, sum.trials, cells.join(" | "));
    }
    if missing > 0 {
        let _ = writeln!(out, "\nLeft out: {missing} finished trainings whose masks are not on this machine (a clone keeps the curves, and the masks chosen at initialization are not among them; rerun those trainings to see their densities).");
    }
    Ok(out)
}
