//! Claims beyond the ICLR paper, as data, checked by the same rules as the paper's (`paper.rs`):
//! what the follow-up literature on pruning at initialization says, against `fig4i` (LeNet) and
//! `fig5i` (Conv-2), and on instability, against `lmc`. `CLAIMS.md` lists them in a section of
//! their own, only in a folder that holds one of their tables.

use super::model::Rewind;
use super::{Bound, Claim, Compare, Metric, Pm, Reference, Series};

/// One procedure against another at the same level of one experiment, at every level in `pm`:
/// the subject's test accuracy at early stop minus the reference's, against `bound`.
const fn versus(
    id: &'static str,
    (figure, experiment, pm): (&'static str, &'static str, Pm),
    (subject, reference): (&'static str, &'static str),
    bound: Bound,
    paper: &'static str,
) -> Claim {
    Claim {
        id,
        figure,
        paper,
        metric: Metric::EarlyStopTestAcc,
        subject: (Series { experiment, procedure: subject }, pm),
        reference: Reference::SameLevel(reference),
        compare: Compare::Difference,
        bound,
    }
}

/// LeNet below 10% remaining, where the quick scale has three levels (7.0, 3.6, 1.9%).
const LENET: (&str, &str, Pm) = ("fig4i", "lenet_at_init", Pm::Every(0.0, 0.10));
/// Conv-2 at every level its quick scale runs the methods at (41.2% and 17.0%).
const CONV2: (&str, &str, Pm) = ("fig5i", "conv2_at_init", Pm::Every(0.0, 0.45));

/// The method is below the ticket.
const WORSE: Bound = Bound::LessThan(0.0);
/// The method is above random pruning at initialization.
const BETTER: Bound = Bound::MoreThan(0.0);

const MISSING_THE_MARK: &str = "IMP tickets are more accurate than a mask chosen at initialization at the same sparsity (Frankle et al. 2021, \"Pruning Neural Networks at Initialization: Why Are We Missing the Mark?\")";
const SCORED: &str = "A mask scored at initialization beats a random one at the same sparsity (Lee et al. 2019, SNIP; Tanaka et al. 2020, SynFlow)";

/// The barrier of an experiment's tickets at every level with Pm in [`low`, `high`] minus its
/// dense network's, both with copies starting at `rewind`, against `bound`.
const fn barrier(id: &'static str, experiment: &'static str, (low, high): (f64, f64), rewind: Rewind, bound: Bound, paper: &'static str) -> Claim {
    Claim {
        id,
        figure: "lmc",
        paper,
        metric: Metric::Barrier(rewind),
        subject: (Series { experiment, procedure: "ticket" }, Pm::Every(low, high)),
        reference: Reference::At(Series { experiment, procedure: "ticket" }, 1.0),
        compare: Compare::Difference,
        bound,
    }
}

const STABLE_LENET: &str = "LeNet's IMP tickets are stable to SGD noise from theta0, as the dense network is (Frankle et al. 2020, \"Linear Mode Connectivity and the Lottery Ticket Hypothesis\", on LeNet-300-100)";
const UNSTABLE_RESNET: &str = "At lr 0.1 the IMP subnetworks of the CIFAR ResNet-20, reset to theta0, are much less stable than the dense network (Frankle et al. 2020, on the ResNet-20 of this paper's Figure 8)";
const STABLE_CONV2: &str = "IMP subnetworks are matching only where they are stable to SGD noise (Frankle et al. 2020); Conv-2's tickets at 41.2% and 17.0% match the dense network (Figure 5), so they are stable from theta0 as the dense network is";
const REWOUND_RESNET: &str = "Rewound to an early iteration instead of theta0, the same IMP subnetworks become about as stable as the dense network (Frankle et al. 2020, with rewinding to about 3% of training)";

pub const BEYOND: &[Claim] = &[
    versus("4i-imp-beats-random", LENET, ("init_random", "ticket"), WORSE, MISSING_THE_MARK),
    versus("4i-imp-beats-magnitude", LENET, ("init_magnitude", "ticket"), WORSE, MISSING_THE_MARK),
    versus("4i-imp-beats-snip", LENET, ("snip", "ticket"), WORSE, MISSING_THE_MARK),
    versus("4i-imp-beats-synflow", LENET, ("synflow", "ticket"), WORSE, MISSING_THE_MARK),
    versus("4i-snip-beats-random", LENET, ("snip", "init_random"), BETTER, SCORED),
    versus("4i-synflow-beats-random", LENET, ("synflow", "init_random"), BETTER, SCORED),
    versus("5i-imp-beats-random", CONV2, ("init_random", "ticket"), WORSE, MISSING_THE_MARK),
    versus("5i-imp-beats-magnitude", CONV2, ("init_magnitude", "ticket"), WORSE, MISSING_THE_MARK),
    versus("5i-imp-beats-snip", CONV2, ("snip", "ticket"), WORSE, MISSING_THE_MARK),
    versus("5i-imp-beats-synflow", CONV2, ("synflow", "ticket"), WORSE, MISSING_THE_MARK),
    versus("5i-snip-beats-random", CONV2, ("snip", "init_random"), BETTER, SCORED),
    versus("5i-synflow-beats-random", CONV2, ("synflow", "init_random"), BETTER, SCORED),
    // Within half a percentage point of the dense network's barrier (above it, or below).
    barrier("lmc-lenet-tickets-stable", "lenet_lmc", (0.0, 0.99), Rewind::Zero, Bound::AtMost(0.5), STABLE_LENET),
    // Conv-2 is not in Frankle et al. (2020): the rule is LeNet's, applied to the tickets at the
    // two levels the quick scale analyses (41.2%, 17.0%), which Figure 5 finds matching.
    barrier("lmc-conv2-tickets-stable", "conv2_lmc", (0.0, 0.99), Rewind::Zero, Bound::AtMost(0.5), STABLE_CONV2),
    // At least a percentage point above the dense network's barrier: unstable where it is not.
    barrier("lmc-resnet-tickets-unstable", "resnet18_lmc", (0.0, 0.52), Rewind::Zero, Bound::MoreThan(1.0), UNSTABLE_RESNET),
    barrier("lmc-resnet-rewound-stable", "resnet18_lmc", (0.0, 0.52), Rewind::Latest, Bound::AtMost(0.5), REWOUND_RESNET),
];
