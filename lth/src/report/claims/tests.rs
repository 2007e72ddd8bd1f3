//! Every claim is fed a table built to pass its rule and one built to fail it; the matching of
//! Pm, the reasons for "not tested", the crossing metric and the reading of a folder are tested
//! on small hand-made tables.

use super::beyond::BEYOND;
use super::check;
use super::check::cell as cell_of;
use super::check::*;
use super::model::*;
use super::paper::CLAIMS;
use super::report::*;
use crate::base::error::Error;
use crate::report::compare::Cell;
use std::collections::BTreeMap;
use std::path::Path;

fn cell(mean: f64) -> Cell {
    Cell { mean, min: mean * 0.99, max: mean * 1.01, n: 2 }
}

/// One aggregated row (or, for the crossing metric, its two curve rows) holding `mean`.
fn rows_for(series: Series, remaining: f64, metric: Metric, mean: f64) -> Vec<Row> {
    let row = |metrics: Vec<(&str, f64)>, iteration: Option<f64>, checkpoint: Option<usize>, rewind: Option<usize>| Row {
        experiment: series.experiment.into(),
        data: "real".into(),
        procedure: series.procedure.into(),
        level: (-remaining.ln() * 100.0).round() as usize,
        remaining,
        iteration,
        checkpoint,
        rewind,
        metrics: metrics.into_iter().map(|(k, v)| (k.to_string(), cell(v))).collect(),
    };
    match metric {
        // Below the threshold at iteration 0, above it from iteration `mean` on.
        Metric::IterationsToTestAcc(threshold) => {
            vec![row(vec![("test_acc", threshold - 0.1)], Some(0.0), None, None), row(vec![("test_acc", (threshold + 0.01) / 0.99)], Some(mean), None, None)]
        }
        Metric::CheckpointTestAcc(c) => vec![row(vec![("test_acc", mean)], None, Some(c), None)],
        // From theta0, and (for the latest) a later start that carries the value.
        Metric::Barrier(Rewind::Zero) => vec![row(vec![("barrier", mean)], None, None, Some(0)), row(vec![("barrier", 9.0)], None, None, Some(500))],
        Metric::Barrier(Rewind::Latest) => vec![row(vec![("barrier", 9.0)], None, None, Some(0)), row(vec![("barrier", mean)], None, None, Some(500))],
        _ => vec![row(vec![(metric.column(), mean)], None, None, None)],
    }
}

/// A compared value inside the bound (`pass`) or outside it.
fn value(bound: Bound, pass: bool) -> f64 {
    let (inside, outside) = match bound {
        Bound::MoreThan(x) | Bound::AtLeast(x) => (x + 0.1, x - 0.1),
        Bound::LessThan(x) | Bound::AtMost(x) => (x - 0.1, x + 0.1),
        Bound::Between(low, high) => ((low + high) / 2.0, high + 0.1),
    };
    if pass {
        inside
    } else {
        outside
    }
}

/// A table on which `claim` holds (`pass`) or does not. The reference is 1000 iterations or 50%;
/// each subject level is set so that its compared value is inside or outside the bound. For
/// `Every`, one level fails; for `Some`, one level passes. A subject level that is the reference
/// itself (the dense network in a range up to 100%) keeps the reference's value.
fn built(claim: &Claim, pass: bool) -> Table {
    let (series, pm) = claim.subject;
    let pms = match pm {
        Pm::At(target) => vec![target],
        Pm::Every(low, high) | Pm::Some(low, high) => {
            let low = low.max(0.05 * high);
            vec![high.min(1.0), (low * high).sqrt(), low]
        }
    };
    let reference_value = if claim.metric.is_accuracy() { 0.5 } else { 1000.0 };
    let mut rows = Vec::new();
    let mut reference_at = None;
    match claim.reference {
        Reference::At(other, target) => {
            rows.extend(rows_for(other, target, claim.metric, reference_value));
            reference_at = Some((other.experiment, other.procedure, target));
        }
        Reference::SameLevel(procedure) => {
            for &r in &pms {
                rows.extend(rows_for(Series { experiment: series.experiment, procedure }, r, claim.metric, reference_value));
            }
        }
    }
    let own: Vec<f64> = pms.iter().copied().filter(|&r| reference_at != Some((series.experiment, series.procedure, r))).collect();
    for (i, &r) in own.iter().enumerate() {
        let last = i + 1 == own.len();
        let passes = match pm {
            Pm::At(_) => pass,
            Pm::Every(..) => pass || !last,
            Pm::Some(..) => pass && last,
        };
        let v = value(claim.bound, passes);
        let mean = match claim.compare {
            Compare::Ratio => reference_value * v,
            Compare::Difference => reference_value + v / claim.metric.unit_scale(),
        };
        rows.extend(rows_for(series, r, claim.metric, mean));
    }
    Table { scale: "quick".into(), rows, ..Default::default() }
}

#[test]
fn every_claim_holds_on_a_table_built_to_pass_and_not_on_one_built_to_fail() {
    for claim in CLAIMS.iter().chain(BEYOND) {
        let passing = evaluate(claim, &built(claim, true));
        assert_eq!(passing.verdict, Verdict::Holds, "{}: {}", claim.id, passing.measured);
        let failing = evaluate(claim, &built(claim, false));
        assert_eq!(failing.verdict, Verdict::DoesNotHold, "{}: {}", claim.id, failing.measured);
    }
}

#[test]
fn synthetic_data_and_smoke_scale_are_never_judged() {
    for claim in CLAIMS.iter().chain(BEYOND) {
        let mut table = built(claim, true);
        table.scale = "smoke".into();
        assert!(matches!(evaluate(claim, &table).verdict, Verdict::NotTested(why) if why.contains("smoke")), "{}", claim.id);
        let mut table = built(claim, true);
        table.rows.iter_mut().for_each(|r| r.data = "synthetic".into());
        assert_eq!(evaluate(claim, &table).verdict, Verdict::NotTested("synthetic data".into()), "{}", claim.id);
    }
}

/// The claims beyond the paper get a section of their own, and only in a folder that holds one
/// of their tables: the paper's folders keep their reports byte for byte.
#[test]
fn claims_beyond_the_paper_are_reported_apart_and_only_beside_their_tables() {
    let beyond = &BEYOND[0];
    let paper = claim("4a-earlier-21");
    let paper_only = Tables::from([("fig4".to_string(), built(paper, true))]);
    assert!(!render(&paper_only).contains("Beyond the ICLR paper"));
    let beyond_only = Tables::from([(beyond.figure.to_string(), built(beyond, false))]);
    let text = render(&beyond_only);
    assert!(text.contains("No claim of docs/paper.md §3 reads the tables in this folder."), "{text}");
    let section = text.split("## Beyond the ICLR paper").nth(1).expect("a section beyond the paper");
    assert!(section.contains(&format!("| `{}` |", beyond.id)) && section.contains("**does not hold**"), "{section}");
    let both = Tables::from([("fig4".to_string(), built(paper, true)), (beyond.figure.to_string(), built(beyond, true))]);
    let text = render(&both);
    let (before, after) = text.split_once("## Beyond the ICLR paper").expect("a section beyond the paper");
    assert!(before.contains("`4a-earlier-21`") && !before.contains(beyond.id) && after.contains(beyond.id));
}

/// Issue #29: verdicts on tables with unfinished trainings (553 of 605) were given as final; one
/// flipped as more trials finished. They are kept, marked provisional with n of N.
#[test]
fn a_verdict_on_unfinished_trainings_is_marked_provisional_with_how_many_finished() {
    let c = claim("4a-earlier-21");
    let mut table = built(c, true);
    assert_eq!(evaluate(c, &table).provisional, None, "no counts recorded: nothing to mark");
    table.trainings.insert("lenet".into(), (5, 5));
    assert_eq!(evaluate(c, &table).provisional, None, "all finished");
    table.trainings.insert("lenet".into(), (553, 605));
    let outcome = evaluate(c, &table);
    assert_eq!((outcome.verdict, outcome.provisional), (Verdict::Holds, Some((553, 605))));
    let tables = Tables::from([("fig4".to_string(), table)]);
    assert!(render(&tables).contains("| **holds** (*provisional*: 553 of 605 planned trainings finished) |"));
    let provenance = "| data | `lenet`: real, 553 of 605 planned trainings finished; `conv2`: synthetic, 2 of 2 planned trainings finished |";
    assert_eq!(check::trainings(provenance), BTreeMap::from([("conv2".to_string(), (2, 2)), ("lenet".to_string(), (553, 605))]));
}

/// Issue #29: a NaN cell was judged "does not hold". A table holding one is refused, naming it.
#[test]
fn a_nan_cell_is_refused_not_judged() {
    let dir = std::env::temp_dir().join(format!("lth-claims-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let csv = "procedure,level,iteration,remaining,n,test_acc_mean,test_acc_min,test_acc_max\nticket,0,0,1,2,NaN,0.4,0.6\n";
    std::fs::write(dir.join("fig3.csv"), csv).expect("write");
    std::fs::write(dir.join("fig3.md"), "| | |\n|---|---|\n| scale | `paper` |\n| data | `lenet`: real, 5 of 5 planned trainings finished |\n").expect("write");
    let message = load(&dir).err().expect("a NaN cell was accepted").to_string();
    assert!(message.contains("fig3.csv") && message.contains("`NaN` in column `test_acc_mean` is not a measurement"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn claim(id: &str) -> &'static Claim {
    CLAIMS.iter().find(|c| c.id == id).expect("the claim exists")
}

#[test]
fn a_single_pm_is_matched_to_the_nearest_level_within_ten_percent() {
    let c = claim("4a-earlier-21");
    let lenet = Series { experiment: "lenet", procedure: "ticket" };
    let mut rows = rows_for(lenet, 1.0, c.metric, 1000.0);
    rows.extend(rows_for(lenet, 0.2107, c.metric, 500.0));
    rows.extend(rows_for(lenet, 0.1688, c.metric, 2000.0));
    let outcome = evaluate(c, &Table { scale: "paper".into(), rows: rows.clone(), ..Default::default() });
    assert_eq!(outcome.verdict, Verdict::Holds);
    assert!(outcome.measured.contains("at Pm 21.1%"), "{}", outcome.measured);
    // Without the 21.07% level the nearest, 16.9%, is too far: not tested, and why.
    rows.retain(|r| r.remaining != 0.2107);
    let outcome = evaluate(c, &Table { scale: "paper".into(), rows, ..Default::default() });
    assert_eq!(outcome.verdict, Verdict::NotTested("no `ticket` level within 10% of Pm 21.1% (nearest: 16.9%) among the finished runs of these tables".into()));
}

#[test]
fn every_shows_the_worst_level_and_names_the_failing_ones() {
    let c = claim("4a-reinit-below-from-21");
    let (lenet, reinit) = (Series { experiment: "lenet", procedure: "ticket" }, Series { experiment: "lenet", procedure: "reinit" });
    let mut rows = rows_for(lenet, 1.0, c.metric, 0.976);
    rows.extend(rows_for(reinit, 0.513, c.metric, 0.99)); // outside the range: ignored
    rows.extend(rows_for(reinit, 0.2107, c.metric, 0.978));
    rows.extend(rows_for(reinit, 0.0695, c.metric, 0.975));
    let outcome = evaluate(c, &Table { scale: "quick".into(), rows, ..Default::default() });
    assert_eq!(outcome.verdict, Verdict::DoesNotHold);
    assert!(outcome.measured.starts_with("worst of 2 levels (Pm 21.1, 7.0%): lenet `reinit` at Pm 21.1%"), "{}", outcome.measured);
    assert!(outcome.measured.ends_with("difference +0.20 pp; fails at Pm 21.1%"), "{}", outcome.measured);
}

/// Claims against the reinits read every level that has one: the smaller scales train ticket
/// levels the reinit skips, and those must not make the claim untestable.
#[test]
fn claims_against_reinits_read_the_levels_that_have_one() {
    let (ticket, reinit) = (Series { experiment: "resnet18_lr0.1", procedure: "ticket" }, Series { experiment: "resnet18_lr0.1", procedure: "reinit" });
    let c = claim("8-lr0.1-no-better-than-reinit");
    let mut rows = Vec::new();
    for (pm, acc) in [(1.0, 0.71), (0.802, 0.71), (0.417, 0.78), (0.271, 0.78)] {
        rows.extend(rows_for(ticket, pm, c.metric, acc));
    }
    rows.extend(rows_for(reinit, 0.271, c.metric, 0.66));
    let outcome = evaluate(c, &Table { scale: "quick".into(), rows, ..Default::default() });
    assert_eq!(outcome.verdict, Verdict::DoesNotHold, "{}", outcome.measured);
    assert!(outcome.measured.starts_with("resnet18_lr0.1 `reinit` at Pm 27.1%"), "{}", outcome.measured);
    assert!(outcome.measured.ends_with("difference -12.00 pp"), "{}", outcome.measured);
}

#[test]
fn a_missing_experiment_or_control_is_not_tested_with_the_reason() {
    let c = claim("4a-faster-than-reinit-21");
    let lenet = Series { experiment: "lenet", procedure: "ticket" };
    let rows = rows_for(lenet, 0.2107, c.metric, 1000.0);
    let outcome = evaluate(c, &Table { scale: "quick".into(), rows: rows.clone(), ..Default::default() });
    assert_eq!(outcome.verdict, Verdict::NotTested("no `reinit` run at level 156 (Pm 21.1%) among the finished runs of these tables".into()));
    let outcome = evaluate(claim("5-conv2-earlier-8.8"), &Table { scale: "quick".into(), rows, ..Default::default() });
    assert_eq!(outcome.verdict, Verdict::NotTested("fig5.csv has no `conv2` rows".into()));
}

#[test]
fn crossing_iterations_come_from_the_mean_max_and_min_curves() {
    let series = Series { experiment: "lenet", procedure: "ticket" };
    let point = |iteration: f64, mean: f64, min: f64, max: f64| Row {
        experiment: "lenet".into(),
        data: "real".into(),
        procedure: "ticket".into(),
        level: 0,
        remaining: 1.0,
        iteration: Some(iteration),
        checkpoint: None,
        rewind: None,
        metrics: [("test_acc".to_string(), Cell { mean, min, max, n: 2 })].into(),
    };
    let rows = vec![point(500.0, 0.97, 0.965, 0.976), point(0.0, 0.5, 0.4, 0.6), point(250.0, 0.96, 0.95, 0.97), point(750.0, 0.98, 0.977, 0.983)];
    let crossing = cell_of(&Table { scale: "quick".into(), rows, ..Default::default() }, series, 0, Metric::IterationsToTestAcc(0.975)).expect("a curve");
    // The first trial (max curve) reaches 97.5% at 500, the mean at 750, every trial at 750.
    assert_eq!((crossing.min, crossing.mean, crossing.max), (500.0, 750.0, 750.0));
    let never =
        cell_of(&Table { scale: "quick".into(), rows: vec![point(0.0, 0.5, 0.4, 0.6)], ..Default::default() }, series, 0, Metric::IterationsToTestAcc(0.975));
    assert!(never.is_ok_and(|c| c.mean.is_infinite()));
}

#[test]
fn the_rule_text_is_generated_from_the_claim() {
    assert_eq!(claim("4a-earlier-21").rule(), "early-stop iteration (minimum validation loss): lenet `ticket` at Pm 21.1% ÷ lenet dense is at most 0.70");
    assert_eq!(
        claim("4c-oneshot-more-accurate").rule(),
        "test accuracy at early stop: every lenet `oneshot` level with Pm in [5.2%, 95.0%] − lenet dense is more than +0.00 pp"
    );
}

#[test]
fn a_folder_is_read_with_the_scale_and_data_its_provenance_names() {
    let dir = std::env::temp_dir().join(format!("lth-claims-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    assert!(matches!(load(&dir), Err(Error::NoTables { .. })));
    let csv = "procedure,level,iteration,remaining,n,test_acc_mean,test_acc_min,test_acc_max\nticket,0,0,1,2,0.5,0.4,0.6\n";
    std::fs::write(dir.join("fig3.csv"), csv).expect("write");
    assert!(matches!(load(&dir), Err(Error::Provenance { .. })));
    std::fs::write(dir.join("fig3.md"), "| | |\n|---|---|\n| scale | `paper` |\n| data | `lenet`: real, 5 of 5 planned trainings finished |\n").expect("write");
    let tables = load(&dir).expect("a table");
    assert_eq!(tables["fig3"].scale, "paper");
    assert_eq!((tables["fig3"].rows[0].experiment.as_str(), tables["fig3"].rows[0].data.as_str()), ("lenet", "real"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The committed reports match the committed tables (`cargo xtask figures --check` checks the
/// same in CI; this fails first, in `cargo test`).
#[test]
fn committed_claims_reports_are_current() {
    let figures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../figures");
    for dir in [figures.clone(), figures.join("paper")] {
        let report = dir.join("CLAIMS.md");
        if !report.exists() {
            assert!(dir != figures, "{} is missing; run `cargo xtask claims`", report.display());
            continue;
        }
        let committed = std::fs::read_to_string(&report).expect("readable");
        assert!(committed == render(&load(&dir).expect("tables")), "{} is stale; run `cargo xtask claims` and commit it", report.display());
    }
}
