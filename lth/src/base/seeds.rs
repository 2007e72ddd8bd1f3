//! Seeded random streams. candle's CPU RNG cannot be seeded, so every random number in a run
//! (initial weights, data order, the validation split, dropout, random pruning) is drawn from a
//! ChaCha stream derived from (seed, purpose). Separate streams mean that adding a control or
//! a level never shifts another stream: the data order of trial 3 is the same whatever else ran.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// What a random stream is for; its text form is part of the derived seed, so never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The trial's original initialisation theta0.
    Init,
    /// Minibatch order; the same at every level of a trial, so levels differ only by their mask.
    DataOrder,
    /// The fixed train/validation split (shared by every trial).
    Split,
    /// Fresh weights for the random-reinitialisation control (copy, level).
    Reinit { copy: usize, level: usize },
    /// The random mask of the random-pruning control (copy, level).
    RandomPrune { copy: usize, level: usize },
    /// Which evaluation examples a reduced scale keeps.
    EvalSubset,
    /// Dropout masks during training (the same sequence at every level of a trial).
    Dropout,
    /// The generated stand-in for CIFAR-10.
    Synthetic,
    /// Crops and flips of training batches (the same sequence at every level of a trial).
    Augmentation,
    /// The mask of uniformly random pruning at initialization (level).
    AtInit { level: usize },
    /// The seed of one copy's streams in an instability analysis (beyond the paper).
    Instability { copy: usize },
}

impl Purpose {
    fn label(&self) -> String {
        match self {
            Purpose::Init => "init".into(),
            Purpose::DataOrder => "data-order".into(),
            Purpose::Split => "split".into(),
            Purpose::Reinit { copy, level } => format!("reinit/{copy}/{level}"),
            Purpose::RandomPrune { copy, level } => format!("random-prune/{copy}/{level}"),
            Purpose::EvalSubset => "eval-subset".into(),
            Purpose::Dropout => "dropout".into(),
            Purpose::Synthetic => "synthetic".into(),
            Purpose::Augmentation => "augmentation".into(),
            Purpose::AtInit { level } => format!("at-init/{level}"),
            Purpose::Instability { copy } => format!("instability/{copy}"),
        }
    }
}

/// A stream for `purpose` under `seed`: SHA-256 of both, so streams are independent and stable
/// across platforms and Rust versions.
pub fn stream(seed: u64, purpose: Purpose) -> ChaCha8Rng {
    let digest = Sha256::new().chain_update(seed.to_le_bytes()).chain_update(purpose.label().as_bytes()).finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(key)
}

/// The seed of one trial of an experiment.
pub fn trial_seed(experiment_seed: u64, trial: usize) -> u64 {
    experiment_seed.wrapping_mul(1_000_003).wrapping_add(trial as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_stable_and_distinct() {
        let a: u64 = stream(7, Purpose::Init).random();
        let b: u64 = stream(7, Purpose::Init).random();
        let c: u64 = stream(7, Purpose::DataOrder).random();
        let d: u64 = stream(8, Purpose::Init).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
