//! The figure catalogue: each paper figure the project draws, the experiments it reads and the
//! kind of table it computes (curves, sparsity, checkpoints), with the notes shown beside it.

use crate::base::error::{Error, Result};

pub struct Figure {
    pub id: &'static str,
    /// The experiment specs (`experiments/<name>.toml`) whose runs it draws.
    pub experiments: &'static [&'static str],
    pub title: &'static str,
    pub kind: Kind,
    /// Method notes printed in the provenance file.
    pub notes: &'static str,
}

/// What a figure shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Test accuracy against training iterations (Fig 3).
    Curves,
    /// Early stopping and accuracy against the fraction of weights remaining, for these
    /// procedures (Figs 1, 4, 5, 6).
    Sparsity(&'static [&'static str]),
    /// Test accuracy against the fraction of weights remaining at fixed points of training,
    /// tickets against reinit, one series per experiment (Figs 7, 8).
    Checkpoints(&'static [Checkpoint]),
    /// The error barrier between copies trained with different SGD noise against the iteration
    /// they start from, one series per level of the ticket run (beyond the paper).
    Instability,
}

/// A point of training a figure reads: a fraction of the run's iterations, and how the paper
/// names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checkpoint {
    pub fraction: f64,
    pub label: &'static str,
}

/// VGG-19's checkpoints: 30K, 60K and 112,480 (the last) of 112,480 iterations (docs/paper.md Fig 7).
const VGG_CHECKPOINTS: [Checkpoint; 3] = [
    Checkpoint { fraction: 30_000.0 / 112_480.0, label: "30K of 112K iterations" },
    Checkpoint { fraction: 60_000.0 / 112_480.0, label: "60K of 112K iterations" },
    Checkpoint { fraction: 1.0, label: "112K of 112K iterations (the last)" },
];

/// ResNet-18's checkpoints: 10K, 20K and 30K of 30K iterations (docs/paper.md Fig 8).
const RESNET_CHECKPOINTS: [Checkpoint; 3] = [
    Checkpoint { fraction: 10_000.0 / 30_000.0, label: "10K of 30K iterations" },
    Checkpoint { fraction: 20_000.0 / 30_000.0, label: "20K of 30K iterations" },
    Checkpoint { fraction: 1.0, label: "30K of 30K iterations (the last)" },
];

/// Said wherever Conv-6 is drawn (a macro, so `concat!` can join it to other notes).
macro_rules! conv6_note {
    () => {
        "Conv-6 is built as docs/paper.md's table describes it: 2,261,184 prunable weights, 49% of them fully connected. Fig 2 of the paper says 1.7M, and the architecture does not give that (docs/paper.md §2), so Conv-6's Pm grid differs slightly from the paper's: 26.6/15.3% where the paper quotes 26.4/15.1%."
    };
}

/// Said wherever rewinding is drawn.
/// Said wherever pruning at initialization is drawn.
const AT_INIT_NOTE: &str = "**Beyond the ICLR paper.** Pruning at initialization (`lth::sparsity::at_init`; docs/decisions.md, \"Pruning at initialization\"): each method chooses a mask at theta0, before any training, keeping as many weights as the IMP ticket keeps at that level, ranked over every prunable layer under one threshold (so a whole layer can be pruned away: the per-layer table below shows it); the network then trains from theta0 exactly as the ticket's level 0 does. `init_random`: uniformly random weights. `init_magnitude`: the largest |theta0|. `snip`: the largest |theta0 · dL/dtheta0| on the first training batch of the trial's data order (Lee et al. 2019). `synflow`: the largest |theta0 · dR/dtheta0|, R the network's output summed on an all-ones input with |theta|, pruned over 100 rounds on an exponential schedule (Tanaka et al. 2020). The IMP tickets and the reinit control are the paper's procedure, unchanged.";

/// The procedures the pruning-at-initialization figures draw: the tickets and reinit of the same trials, then the methods.
const AT_INIT_PROCEDURES: [&str; 6] = ["ticket", "reinit", "init_random", "init_magnitude", "snip", "synflow"];

const REWIND_NOTE: &str = "**Beyond the ICLR paper.** Rewinding (late resetting; Frankle et al. 2019, \"Stabilizing the Lottery Ticket Hypothesis\", and the authors' open_lth): the `_rewind<k>` runs reset every pruned level's survivors to the dense network's state at iteration k of the paper-scale training (BatchNorm statistics included), not to theta0, and train from k to the end of the same schedule; the learning-rate schedule and the data order resume at k, the optimizer state restarts. Reinit controls draw fresh weights and also train from k. A smaller scale rewinds to the same fraction of its training (at least iteration 1). The other experiment is the paper's procedure, unchanged.";

pub const FIGURES: [Figure; 13] = [
    Figure {
        id: "fig1",
        experiments: &["lenet", "conv2", "conv4", "conv6"],
        title: "Winning tickets vs. randomly sampled sparse networks (docs/paper.md Fig 1)",
        kind: Kind::Sparsity(&["ticket", "random_prune"]),
        notes: concat!("Random sparse networks keep the ticket's per-layer weight counts at random positions and start from theta0. ", conv6_note!()),
    },
    Figure {
        id: "fig3",
        experiments: &["lenet"],
        title: "LeNet-300-100 on MNIST: test accuracy during training (docs/paper.md Fig 3)",
        kind: Kind::Curves,
        notes: "",
    },
    Figure {
        id: "fig4",
        experiments: &["lenet"],
        title: "LeNet-300-100 on MNIST: early stopping and accuracy vs. weights remaining (docs/paper.md Fig 4)",
        kind: Kind::Sparsity(&["ticket", "reinit", "oneshot"]),
        notes: "",
    },
    Figure {
        id: "fig5",
        experiments: &["conv2", "conv4", "conv6"],
        title: "Conv-2/4/6 on CIFAR-10: early stopping and accuracy vs. weights remaining (docs/paper.md Fig 5)",
        kind: Kind::Sparsity(&["ticket", "reinit"]),
        notes: conv6_note!(),
    },
    Figure {
        id: "fig6",
        experiments: &["conv2_dropout", "conv4_dropout", "conv6_dropout"],
        title: "Conv-2/4/6 with dropout on CIFAR-10 (docs/paper.md Fig 6)",
        kind: Kind::Sparsity(&["ticket", "reinit"]),
        notes: concat!("Dropout p = 0.5 follows each hidden fully connected layer; the paper does not say which layers. ", conv6_note!()),
    },
    Figure {
        id: "fig7",
        experiments: &["vgg19_lr0.1", "vgg19_lr0.01", "vgg19_lr0.1_warmup"],
        title: "VGG-19 on CIFAR-10: test accuracy vs. weights remaining at 30K, 60K and 112K iterations (docs/paper.md Fig 7)",
        kind: Kind::Checkpoints(&VGG_CHECKPOINTS),
        notes: "Global magnitude pruning of the convolutions, 20% per round; the output layer is never pruned. SGD with momentum 0.9 and weight decay 1e-4, batch 64, rate ×0.1 at 50% and 75% of training; the warmup variant rises linearly from 0 to 0.1 over the first 10,000 of 112,480 iterations. Flip and pad-4 crop augmentation. Smaller scales read the checkpoints at the same fractions of training.",
    },
    Figure {
        id: "fig8",
        experiments: &["resnet18_lr0.1", "resnet18_lr0.01", "resnet18_lr0.03_warmup", "resnet18_lr0.03_warmup_late_drops"],
        title: "ResNet-18 on CIFAR-10: test accuracy vs. weights remaining at 10K, 20K and 30K iterations (docs/paper.md Fig 8)",
        kind: Kind::Checkpoints(&RESNET_CHECKPOINTS),
        notes: "The paper's ResNet-18 is He et al.'s 20-layer CIFAR ResNet. Global magnitude pruning of the 3x3 convolutions, 20% per round; the 1x1 shortcuts and the output layer are never pruned. SGD with momentum 0.9 and weight decay 1e-4, batch 128, rate ×0.1 at 20K and 25K of 30K iterations; the warmup variants rise linearly from 0 to 0.03 over the first 20K. The paper's schedule has two readings, and both are drawn: `resnet18_lr0.03_warmup` takes its numbers literally (the first drop fires at 20K, exactly where the warmup peaks, so the peak is never trained at); `resnet18_lr0.03_warmup_late_drops` holds the peak and moves the drops to 25K and 27.5K (see the two specs in `experiments/`). Flip and pad-4 crop augmentation. Smaller scales read the checkpoints at the same fractions of training.",
    },
    // Beyond the ICLR paper: rewinding (late resetting, `lth::lottery::rewind`), each beside the paper's
    // reset to theta0 on the same network.
    Figure {
        id: "fig4r",
        experiments: &["lenet", "lenet_rewind1000"],
        title: "BEYOND THE ICLR PAPER: LeNet-300-100 on MNIST, rewinding to 2% of training (iteration 1,000 of 50K at paper scale) against the paper's reset to theta0",
        kind: Kind::Sparsity(&["ticket", "reinit"]),
        notes: REWIND_NOTE,
    },
    Figure {
        id: "fig7r",
        experiments: &["vgg19_lr0.1", "vgg19_lr0.1_rewind1000"],
        title: "BEYOND THE ICLR PAPER: VGG-19 lr 0.1 on CIFAR-10, rewinding to 0.9% of training (iteration 1,000 of 112K at paper scale) against the paper's reset to theta0 (Fig 7's checkpoints)",
        kind: Kind::Checkpoints(&VGG_CHECKPOINTS),
        notes: REWIND_NOTE,
    },
    Figure {
        id: "fig8r",
        experiments: &["resnet18_lr0.1", "resnet18_lr0.1_rewind500"],
        title: "BEYOND THE ICLR PAPER: ResNet-18 lr 0.1 on CIFAR-10, rewinding to 1.7% of training (iteration 500 of 30K at paper scale) against the paper's reset to theta0 (Fig 8's checkpoints)",
        kind: Kind::Checkpoints(&RESNET_CHECKPOINTS),
        notes: REWIND_NOTE,
    },
    Figure {
        id: "fig4i",
        experiments: &["lenet_at_init"],
        title: "BEYOND THE ICLR PAPER: LeNet-300-100 on MNIST, IMP tickets against pruning at initialization (random, magnitude, SNIP, SynFlow)",
        kind: Kind::Sparsity(&AT_INIT_PROCEDURES),
        notes: AT_INIT_NOTE,
    },
    Figure {
        id: "fig5i",
        experiments: &["conv2_at_init"],
        title: "BEYOND THE ICLR PAPER: Conv-2 on CIFAR-10, IMP tickets against pruning at initialization (random, magnitude, SNIP, SynFlow)",
        kind: Kind::Sparsity(&AT_INIT_PROCEDURES),
        notes: AT_INIT_NOTE,
    },
    Figure {
        id: "lmc",
        experiments: &["lenet_lmc", "conv2_lmc", "resnet18_lmc"],
        title: "BEYOND THE ICLR PAPER: instability (linear mode connectivity) of LeNet-300-100, Conv-2 and ResNet-18, dense and IMP tickets",
        kind: Kind::Instability,
        notes: "**Beyond the ICLR paper.** Instability analysis (Frankle, Dziugaite, Roy and Carbin 2020, \"Linear Mode Connectivity and the Lottery Ticket Hypothesis\"; `lth::lottery::instability`, docs/decisions.md \"Instability\"): copies of the dense network (level 0) or of an IMP ticket's mask start from the same weights at iteration k (theta0 for k = 0, else the dense network after k steps of the trial's training) and train to the end of the same schedule, each with its own data order; the error barrier is the largest test error on the straight line between two trained copies (evenly spaced points, ends included) minus the mean of the two ends' errors, in percentage points, mean [min, max] over every pair of copies of every trial. A network is stable where its barrier is about 0. ResNet-18 (BatchNorm): at every point of the path, its ends included, the running statistics are reset and recomputed from the first 50 unaugmented training batches (fewer if the training set holds fewer) in training mode, so its ends are the copies with recomputed statistics.",
    },
];

pub fn find(name: &str) -> Result<&'static Figure> {
    if let Some(figure) = FIGURES.iter().find(|f| f.id == name) {
        return Ok(figure);
    }
    let valid = FIGURES.iter().map(|f| f.id).collect::<Vec<_>>().join(", ");
    Err(Error::UnknownFigure { name: name.into(), valid })
}
