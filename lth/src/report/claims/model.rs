//! What a claim is (its subject, metric, reference and bound), what a table row holds for the
//! claims, and what a check comes to; with the words numbers and series are named by.

use crate::report::compare::Cell;
use std::collections::BTreeMap;

/// One claim of the paper and the rule it is checked by.
pub struct Claim {
    pub id: &'static str,
    /// The table it reads (`<figure>.csv`).
    pub figure: &'static str,
    /// The paper's statement, with its number and where it says so.
    pub paper: &'static str,
    pub metric: Metric,
    /// The series the claim is about, and at which Pm.
    pub subject: (Series, Pm),
    pub reference: Reference,
    pub compare: Compare,
    pub bound: Bound,
}

/// The curves of one procedure of one experiment.
#[derive(Clone, Copy, PartialEq)]
pub struct Series {
    pub experiment: &'static str,
    pub procedure: &'static str,
}

/// Which levels of the subject a claim is about (Pm as a fraction).
#[derive(Clone, Copy)]
pub enum Pm {
    /// The level nearest this Pm, within [`AT_TOLERANCE`].
    At(f64),
    /// Every level with Pm in [low, high] (within [`RANGE_TOLERANCE`]) must pass.
    Every(f64, f64),
    /// Some level with Pm in [low, high] must pass ("up to" claims).
    Some(f64, f64),
}

/// What the subject is compared with.
#[derive(Clone, Copy)]
pub enum Reference {
    /// A series at one Pm (1.0: the dense network).
    At(Series, f64),
    /// This procedure of the subject's experiment, at the subject's level.
    SameLevel(&'static str),
}

#[derive(Clone, Copy, PartialEq)]
pub enum Metric {
    EarlyStopIteration,
    EarlyStopTestAcc,
    FinalTestAcc,
    /// The first evaluation at which the test accuracy reaches this fraction (Fig 3's curves).
    IterationsToTestAcc(f64),
    /// Test accuracy at this checkpoint of a checkpoint table (Figs 7, 8; 2 is the last).
    CheckpointTestAcc(usize),
    /// The error barrier of an instability table (`lmc`) for copies starting at this point.
    Barrier(Rewind),
}

/// Where the copies of an instability claim start: θ0, or the latest iteration the table has
/// for that level (the scales rewind to different iterations, at the same fractions).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Rewind {
    Zero,
    Latest,
}

/// How the subject's mean is set against the reference's: subject ÷ reference, or subject −
/// reference (in percentage points for accuracies).
#[derive(Clone, Copy)]
pub enum Compare {
    Ratio,
    Difference,
}

/// What the compared value must satisfy.
#[derive(Clone, Copy)]
pub enum Bound {
    MoreThan(f64),
    AtLeast(f64),
    LessThan(f64),
    AtMost(f64),
    /// Inclusive at both ends.
    Between(f64, f64),
}

/// How far the nearest level may lie from a claim's single Pm, relative to it: the LeNet grid
/// steps by 20% per level, so 10% picks one level or none, and Conv-6's 26.6% still answers the
/// paper's 26.4% (docs/paper.md §2).
pub const AT_TOLERANCE: f64 = 0.10;
/// The slack at the ends of a Pm range, relative: enough for the grid's 21.07% to count as the
/// paper's "21.1%", too little to take in the next level.
pub const RANGE_TOLERANCE: f64 = 0.01;

/// A claim's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    NotTested(String),
}

/// One row of a table as the claims read it.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) experiment: String,
    pub(super) data: String,
    pub(super) procedure: String,
    pub(super) level: usize,
    pub(super) remaining: f64,
    /// Set in curve tables (Fig 3): the evaluation this row is.
    pub(super) iteration: Option<f64>,
    /// Set in checkpoint tables (Figs 7, 8).
    pub(super) checkpoint: Option<usize>,
    /// Set in instability tables: the iteration the copies start from.
    pub(super) rewind: Option<usize>,
    pub(super) metrics: BTreeMap<String, Cell>,
}

/// A figure's table and the scale its provenance names.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    pub(super) scale: String,
    pub(super) rows: Vec<Row>,
    /// Per experiment, (finished, planned) trainings, as its provenance's `data` row says.
    pub(super) trainings: BTreeMap<String, (usize, usize)>,
}

/// The tables of one figures folder, by figure id.
pub(super) type Tables = BTreeMap<String, Table>;

/// What a claim came to, and the numbers behind it.
pub(super) struct Outcome {
    pub(super) verdict: Verdict,
    /// The measured numbers (empty when not tested).
    pub(super) measured: String,
    /// "scale, data" of the rows read.
    pub(super) source: String,
    /// (finished, planned) trainings of the experiments it read, when some are unfinished: a
    /// verdict that more trainings could still flip.
    pub(super) provisional: Option<(usize, usize)>,
}

pub(super) fn percent(fraction: f64) -> String {
    format!("{:.1}%", 100.0 * fraction)
}

/// "lenet `ticket` at Pm 21.1%"; the dense network by name.
pub(super) fn name(series: Series, remaining: f64) -> String {
    if series.procedure == "ticket" && remaining >= 1.0 {
        format!("{} dense", series.experiment)
    } else {
        format!("{} `{}` at Pm {}", series.experiment, series.procedure, percent(remaining))
    }
}

impl Claim {
    pub(super) fn reference_experiment(&self) -> Option<&'static str> {
        match self.reference {
            Reference::At(series, _) => Some(series.experiment),
            Reference::SameLevel(_) => None,
        }
    }
}

impl Metric {
    pub(super) fn column(self) -> &'static str {
        match self {
            Metric::EarlyStopIteration => "early_stop_iteration",
            Metric::EarlyStopTestAcc => "early_stop_test_acc",
            Metric::FinalTestAcc => "final_test_acc",
            Metric::IterationsToTestAcc(_) | Metric::CheckpointTestAcc(_) => "test_acc",
            Metric::Barrier(_) => "barrier",
        }
    }

    /// Accuracies, and barriers (differences of error rates): shown in % and compared in
    /// percentage points.
    pub(super) fn is_accuracy(self) -> bool {
        matches!(self, Metric::EarlyStopTestAcc | Metric::FinalTestAcc | Metric::CheckpointTestAcc(_) | Metric::Barrier(_))
    }

    /// Differences of accuracies are compared in percentage points.
    pub(super) fn unit_scale(self) -> f64 {
        if self.is_accuracy() {
            100.0
        } else {
            1.0
        }
    }
}

impl Bound {
    pub fn holds(self, v: f64) -> bool {
        match self {
            Bound::MoreThan(x) => v > x,
            Bound::AtLeast(x) => v >= x,
            Bound::LessThan(x) => v < x,
            Bound::AtMost(x) => v <= x,
            Bound::Between(low, high) => (low..=high).contains(&v),
        }
    }

    /// How far inside the bound a value is (negative: outside), to pick the deciding level.
    pub(super) fn margin(self, v: f64) -> f64 {
        match self {
            Bound::MoreThan(x) | Bound::AtLeast(x) => v - x,
            Bound::LessThan(x) | Bound::AtMost(x) => x - v,
            Bound::Between(low, high) => (v - low).min(high - v),
        }
    }
}
