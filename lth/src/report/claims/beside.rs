//! Figures 7 and 8 beside the paper: one Markdown row per network and learning-rate setting,
//! the paper's result in words next to what a folder's tables measured (dense, best and
//! smallest ticket, tickets against their reinits). README's results table is this output
//! (`lth beside-paper DIR`), so `cargo xtask figures --check` fails when it drifts from the
//! committed tables.

use super::check::load;
use super::model::{percent, Row, Tables};
use crate::base::error::{Error, Result};
use crate::base::spec::DataSource;
use crate::report::catalog;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// The deep-network figures the table reads, in order.
const FIGURES: [&str; 4] = ["fig8", "fig8r", "fig7", "fig7r"];

/// One setting: its experiment, how the table names it, and what the paper reports for it
/// (docs/paper.md §3, at `paper` scale on the official CIFAR-10).
struct Setting {
    experiment: &'static str,
    name: &'static str,
    paper: &'static str,
}

const SETTINGS: [Setting; 9] = [
    Setting { experiment: "resnet18_lr0.1", name: "ResNet-18, lr 0.1", paper: "dense 90.5%; no winning tickets" },
    Setting {
        experiment: "resnet18_lr0.01",
        name: "ResNet-18, lr 0.01",
        paper: "best tickets 89.5% for 41.7% ≥ Pm ≥ 21.9%, below 90.5%; they beat their reinits",
    },
    Setting {
        experiment: "resnet18_lr0.03_warmup",
        name: "ResNet-18, lr 0.03, warmup 20K (read literally)",
        paper: "90.5% at Pm 27.1%; winning tickets for Pm ≥ 11.8%",
    },
    Setting {
        experiment: "resnet18_lr0.03_warmup_late_drops",
        name: "ResNet-18, lr 0.03, warmup 20K (drops at 25K, 27.5K)",
        paper: "90.5% at Pm 27.1%; winning tickets for Pm ≥ 11.8%",
    },
    Setting {
        experiment: "resnet18_lr0.1_rewind500",
        name: "ResNet-18, lr 0.1, rewound to iteration 500",
        paper: "not in this paper (rewinding, Frankle et al. 2020)",
    },
    Setting { experiment: "vgg19_lr0.1", name: "VGG-19, lr 0.1", paper: "no winning tickets; pruned networks no better than their reinits" },
    Setting { experiment: "vgg19_lr0.01", name: "VGG-19, lr 0.01", paper: "within 1 pp of dense for Pm ≥ 3.5%; they beat their reinits" },
    Setting { experiment: "vgg19_lr0.1_warmup", name: "VGG-19, lr 0.1, warmup 10K", paper: "dense ≈ +1 pp; tickets above it for Pm ≥ 1.5%" },
    Setting {
        experiment: "vgg19_lr0.1_rewind1000",
        name: "VGG-19, lr 0.1, rewound to iteration 1,000",
        paper: "not in this paper (rewinding, Frankle et al. 2020)",
    },
];

/// The table for the deep-network figures among `dir`'s tables.
pub fn beside_paper(dir: &Path) -> Result<String> {
    render(&load(dir)?).ok_or_else(|| Error::NoDeepNetTables { dir: dir.to_owned() })
}

/// None when no table of Figures 7 or 8 is among `tables`.
fn render(tables: &Tables) -> Option<String> {
    let figures: Vec<&str> = FIGURES.into_iter().filter(|f| tables.contains_key(*f)).collect();
    if figures.is_empty() {
        return None;
    }
    let (mut sources, mut rows) = (BTreeSet::new(), String::new());
    let mut seen = BTreeSet::new();
    for figure in &figures {
        let table = &tables[*figure];
        let last = table.rows.iter().filter_map(|r| r.checkpoint).max();
        let drawn = catalog::find(figure).map_or(&[][..], |f| f.experiments);
        for setting in SETTINGS.iter().filter(|s| drawn.contains(&s.experiment)) {
            if !seen.insert(setting.experiment) {
                continue; // resnet18_lr0.1 is in fig8 and fig8r: one row
            }
            let at_end: Vec<&Row> = table.rows.iter().filter(|r| r.experiment == setting.experiment && r.checkpoint == last).collect();
            for row in &at_end {
                sources.insert(format!("`{}` scale, {}", table.scale, data_words(&row.data)));
            }
            let trainings = match table.trainings.get(setting.experiment) {
                Some((done, planned)) => format!("{done} of {planned}"),
                None if at_end.is_empty() => "none".into(),
                None => "all".into(),
            };
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} | {} | {} | {trainings} |",
                setting.name,
                setting.paper,
                dense(&at_end),
                best(&at_end),
                smallest(&at_end),
                against_reinit(&at_end)
            );
        }
    }
    let files = figures.iter().map(|f| format!("`{f}.csv`")).collect::<Vec<_>>().join(", ");
    let mut out = format!(
        "Test accuracy at the last iteration, mean over the finished trials, from {files} ({}). The paper's column is its result at `paper` scale on the official CIFAR-10 (docs/paper.md §3). Pm is the percentage of weights remaining.\n\n",
        sources.into_iter().collect::<Vec<_>>().join("; ")
    );
    out += "| network, setting | the paper | dense | best ticket (Pm) | smallest ticket trained (Pm) | ticket vs. reinit (Pm) | trainings finished |\n";
    out += "|---|---|---|---|---|---|---|\n";
    Some(out + &rows)
}

/// "CIFAR-10, JPEG copy cb6c5052, lossy" for the `data` column's value, as figure titles say it.
fn data_words(data: &str) -> String {
    match data.parse::<DataSource>().ok().and_then(|d| d.caveat()) {
        Some(caveat) => format!("CIFAR-10, {caveat}"),
        None => "CIFAR-10".into(),
    }
}

fn acc(row: &Row) -> Option<f64> {
    row.metrics.get("test_acc").map(|c| c.mean)
}

fn show(row: &Row) -> String {
    acc(row).map_or("?".into(), |a| format!("{:.2}%", 100.0 * a))
}

fn tickets<'a, 'b>(rows: &'b [&'a Row]) -> impl Iterator<Item = &'a Row> + 'b {
    rows.iter().copied().filter(|r| r.procedure == "ticket" && r.level > 0)
}

fn dense(rows: &[&Row]) -> String {
    rows.iter().find(|r| r.procedure == "ticket" && r.level == 0).map_or("not trained".into(), |r| show(r))
}

fn best(rows: &[&Row]) -> String {
    let best = tickets(rows).max_by(|a, b| acc(a).unwrap_or(0.0).total_cmp(&acc(b).unwrap_or(0.0)));
    best.map_or("none trained".into(), |r| format!("{} ({})", show(r), percent(r.remaining)))
}

fn smallest(rows: &[&Row]) -> String {
    let smallest = tickets(rows).max_by_key(|r| r.level);
    smallest.map_or("none trained".into(), |r| format!("{} ({})", show(r), percent(r.remaining)))
}

/// "75.10% vs. 60.25% (27.1%)" for each level with a reinit, the sparsest first.
fn against_reinit(rows: &[&Row]) -> String {
    let mut pairs: Vec<(usize, String)> = rows
        .iter()
        .filter(|r| r.procedure == "reinit")
        .filter_map(|reinit| {
            let ticket = tickets(rows).find(|t| t.level == reinit.level)?;
            Some((reinit.level, format!("{} vs. {} ({})", show(ticket), show(reinit), percent(reinit.remaining))))
        })
        .collect();
    pairs.sort_by(|a, b| b.0.cmp(&a.0));
    if pairs.is_empty() {
        return "no reinit trained".into();
    }
    pairs.into_iter().map(|(_, p)| p).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::claims::model::Table;
    use crate::report::compare::Cell;

    fn row(experiment: &str, procedure: &str, level: usize, checkpoint: usize, acc: f64) -> Row {
        let cell = Cell { mean: acc, min: acc, max: acc, n: 1 };
        Row {
            experiment: experiment.into(),
            data: format!("jpeg-copy-{}", "ab".repeat(32)),
            procedure: procedure.into(),
            level,
            remaining: 0.8f64.powi(level as i32),
            iteration: None,
            checkpoint: Some(checkpoint),
            rewind: None,
            metrics: [("test_acc".to_string(), cell)].into(),
        }
    }

    #[test]
    fn reads_the_last_checkpoint_and_pairs_each_reinit_with_its_ticket() {
        let rows = vec![
            row("resnet18_lr0.1", "ticket", 0, 2, 0.70),
            row("resnet18_lr0.1", "ticket", 0, 1, 0.99), // an earlier checkpoint: never read
            row("resnet18_lr0.1", "ticket", 1, 2, 0.75),
            row("resnet18_lr0.1", "ticket", 2, 2, 0.72),
            row("resnet18_lr0.1", "reinit", 2, 2, 0.61),
        ];
        let tables: Tables = [("fig8".to_string(), Table { scale: "quick".into(), rows, trainings: [("resnet18_lr0.1".into(), (4, 10))].into() })].into();
        let text = render(&tables).expect("fig8 is there");
        assert!(text.contains("`quick` scale, CIFAR-10, JPEG copy abababab, lossy"), "{text}");
        assert!(
            text.contains(
                "| ResNet-18, lr 0.1 | dense 90.5%; no winning tickets | 70.00% | 75.00% (80.0%) | 72.00% (64.0%) | 72.00% vs. 61.00% (64.0%) | 4 of 10 |"
            ),
            "{text}"
        );
        assert!(text.contains("| ResNet-18, lr 0.01 | best tickets 89.5% for 41.7% ≥ Pm ≥ 21.9%, below 90.5%; they beat their reinits | not trained | none trained | none trained | no reinit trained | none |"), "a setting of the figure without rows says so: {text}");
        assert!(!text.contains("VGG-19"), "only the settings of the figures present: {text}");
        assert!(render(&Tables::new()).is_none(), "no deep-network table: nothing to print");
    }
}
