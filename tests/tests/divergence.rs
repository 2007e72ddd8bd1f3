//! Issue #29: a spec with an absurd learning rate trained to NaN curves that were marked
//! finished and drawn as results with no warning. A diverged training is still recorded (its
//! curve says what happened) but tables leave it out, the provenance names it, and a figure with
//! nothing else to draw is refused with the fix.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::base::spec::{DataSource, ExperimentSpec, Scale};
use lth::report::figures::{self, Provenance};
use lth::report::table;
use lth::store::record::diverged_at;
use lth_tests::{run_smoke, scratch, smoke_data, TINY_LENET};

#[test]
fn a_diverged_training_is_recorded_but_never_drawn_as_a_result() {
    let text = TINY_LENET.replace("lr = 1.2e-3", "lr = 1e30");
    assert_ne!(text, TINY_LENET);
    let path = scratch("divergence-spec").join("lenet.toml");
    std::fs::write(&path, text).unwrap();
    let spec = ExperimentSpec::load(&path).unwrap();
    let store = run_smoke(&spec, &smoke_data(&spec));
    let plan = spec.plan(Scale::Smoke, None, DataSource::Synthetic).unwrap();
    // Recorded: every level finished, and its curve shows the NaN.
    let ticket = store.existing(&plan[0].spec);
    let curve = ticket.load_curve(1).unwrap();
    assert!(diverged_at(&curve).is_some(), "lr 1e30 did not diverge: {:?}", curve.last());
    // Never averaged in: the tables read no diverged curve, and name each one.
    let finished = table::load_records(&store, &plan).unwrap();
    assert_eq!(finished.finished, finished.planned);
    assert!(!finished.diverged.is_empty() && finished.diverged.iter().all(|d| d.contains(" level ") && d.contains("(iteration ")), "{:?}", finished.diverged);
    assert!(finished.records.iter().all(|r| r.point.val_loss.is_finite() && r.point.test_loss.is_finite()));
    // A figure with nothing but diverged trainings is refused, naming them and the fix.
    let provenance = Provenance {
        command: "test".into(),
        scale: Scale::Smoke,
        trials: None,
        data: DataSource::Synthetic,
        device: "cpu".into(),
        machine: "test".into(),
        git_revision: "test".into(),
    };
    if finished.records.is_empty() {
        let err = figures::make(figures::find("fig4").unwrap(), &store, &[spec], &provenance, &scratch("divergence-figure")).err().expect("drawn");
        let message = err.to_string();
        assert!(message.contains("diverged") && message.contains("lower the learning rate"), "{message}");
    } else {
        // Some level stayed finite: drawn, with the diverged ones named in the provenance.
        let dir = scratch("divergence-figure");
        figures::make(figures::find("fig4").unwrap(), &store, &[spec], &provenance, &dir).unwrap();
        let md = std::fs::read_to_string(dir.join("fig4.md")).unwrap();
        assert!(md.contains("| diverged | `lenet`: "), "{md}");
    }
}
