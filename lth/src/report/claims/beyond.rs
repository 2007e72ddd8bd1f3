//! Claims beyond the ICLR paper, as data, checked by the same rules as the paper's (`paper.rs`):
//! what the follow-up literature on pruning at initialization says, against `fig4i` (LeNet) and
//! `fig5i` (Conv-2). `CLAIMS.md` lists them in a section of their own, only in a folder that
//! holds one of their tables.

use super::{Bound, Claim, Compare, Metric, Pm, Reference, Series};

/// One procedure against another at the same level of one experiment, at every level in `pm`:
/// the subject's test accuracy at early stop minus the reference's, against `bound`.
const fn versus(id: &'static str, (figure, experiment, pm): (&'static str, &'static str, Pm), (subject, reference): (&'static str, &'static str), bound: Bound, paper: &'static str) -> Claim {
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
];
