//! Experiment specs: `experiments/*.toml` parsed into a fixed [`Method`] (the paper's settings)
//! plus named [`Sizes`] per [`Scale`], and expanded into [`RunSpec`]s, each with a stable
//! content-hashed [`RunId`]. A scale changes sizes only, never the method.

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// How much of the paper's protocol to run. Every record carries its scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Seconds: tests and CI.
    Smoke,
    /// Real data, fewer iterations, levels and trials: minutes on a laptop CPU.
    Quick,
    /// Exactly PAPER.md.
    Paper,
}

impl Scale {
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Smoke => "smoke",
            Scale::Quick => "quick",
            Scale::Paper => "paper",
        }
    }
}

/// One experiment file: the method is fixed, the scales only change sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    /// Base seed; trial t uses `seeds::trial_seed(seed, t)`.
    pub seed: u64,
    pub method: Method,
    pub scales: BTreeMap<Scale, Sizes>,
}

/// Everything the paper fixes for an experiment (PAPER.md §1-2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    pub model: ModelKind,
    pub dataset: DatasetKind,
    /// Examples held out of the training set for validation and early stopping.
    pub validation_size: usize,
    /// Seed of the fixed train/validation split, shared by every trial.
    pub split_seed: u64,
    pub batch_size: usize,
    pub normalisation: Normalisation,
    pub optimizer: OptimizerSpec,
    pub pruning: PruningSpec,
    /// Dropout probability on the hidden fully connected layers (Fig 6), if any. New fields are
    /// optional and left out of the JSON when unset, so existing run ids stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Learning-rate warmup and step drops (VGG-19, ResNet-18); None: a constant rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<LrSchedule>,
    /// Training-batch augmentation (VGG-19, ResNet-18); None: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<Augmentation>,
}

/// The learning rate as a function of the iteration (PAPER.md §4, App I): linear warmup from 0
/// to the optimizer's rate over `warmup` iterations, times `drop_factor` for every drop passed.
/// The iterations are those of a training of `iterations` (the paper's length); a scale that
/// trains for fewer iterations moves every point to the same fraction of its training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// The training length the points below refer to.
    pub iterations: usize,
    /// Iterations of linear warmup (0: none).
    #[serde(default)]
    pub warmup: usize,
    /// Iterations at which the rate is multiplied by `drop_factor`.
    #[serde(default)]
    pub drops: Vec<usize>,
    pub drop_factor: f64,
}

/// Augmentation of training batches: random horizontal flip and a random 32x32 crop of the
/// image zero-padded by `pad` pixels (zero in pixel space, before normalisation), drawn from the
/// run's seeded stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    pub flip: bool,
    pub pad: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[serde(rename = "lenet_300_100")]
    Lenet300100,
    Conv2,
    Conv4,
    Conv6,
    /// VGG-19 for CIFAR-10 (Liu et al. 2019's variant, PAPER.md §2).
    Vgg19,
    /// The paper's "ResNet-18": He et al.'s 20-layer CIFAR-10 ResNet (PAPER.md §2).
    Resnet18,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    Mnist,
    Cifar10,
}

/// Where the images come from: the real dataset, or a generated set in the same file format
/// (for machines without the dataset; every run, table and figure made from it says so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    #[default]
    Real,
    Synthetic,
}

impl DataSource {
    pub fn is_real(&self) -> bool {
        *self == DataSource::Real
    }
}

/// Per-channel `(x / 255 - mean) / std`. The paper does not state its normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Adam (Kingma & Ba) without weight decay.
    Adam { lr: f64, beta1: f64, beta2: f64, eps: f64 },
    /// SGD with momentum and weight decay, PyTorch's formula (VGG-19, ResNet-18).
    Sgd { lr: f64, momentum: f64, weight_decay: f64 },
}

/// Fraction of the still-unpruned weights removed per round, by layer kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningSpec {
    pub scope: PruningScope,
    /// Convolutional layers (absent for networks without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<f64>,
    /// Hidden fully connected layers.
    pub fc: f64,
    /// The output layer (the paper prunes it at half the fc rate).
    pub output: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruningScope {
    /// Each layer loses its own rate of its own weights.
    Layerwise,
    /// The convolutions lose `conv` of their surviving weights together, under one magnitude
    /// threshold (VGG-19, ResNet-18: PAPER.md §4, App I.1); other layers keep their own rates.
    Global,
}

/// What a scale may change: sizes only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Training iterations per level (always the full budget: early stopping is read afterwards).
    pub iterations: usize,
    /// Evaluate validation and test every this many iterations.
    pub eval_every: usize,
    pub trials: usize,
    /// Iterative pruning runs levels 0..=levels.
    pub levels: usize,
    /// Random-reinitialisation copies per trial, at `reinit_levels`.
    pub reinit_copies: usize,
    pub reinit_levels: Vec<usize>,
    /// One-shot pruning targets (the sparsity of these iterative levels).
    pub oneshot_levels: Vec<usize>,
    /// Random-pruning copies per trial, at `random_prune_levels`.
    #[serde(default)]
    pub random_prune_copies: usize,
    #[serde(default)]
    pub random_prune_levels: Vec<usize>,
    /// Train on only this many training examples (None: all).
    #[serde(default)]
    pub train_subset: Option<usize>,
    /// Evaluate on only this many validation and test examples (None: all).
    #[serde(default)]
    pub eval_subset: Option<usize>,
}

/// The procedure of one run: the winning-ticket trunk or one of its branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Procedure {
    /// Iterative magnitude pruning with reset to theta0 (the paper's Strategy 1).
    Ticket,
    /// Prune the trained dense network of the same trial once, directly to a level's sparsity.
    Oneshot,
    /// The ticket's mask with fresh weights from the same distribution.
    Reinit,
    /// A random mask with the ticket's per-layer sparsity, from theta0.
    RandomPrune,
}

impl Procedure {
    pub fn as_str(self) -> &'static str {
        match self {
            Procedure::Ticket => "ticket",
            Procedure::Oneshot => "oneshot",
            Procedure::Reinit => "reinit",
            Procedure::RandomPrune => "random_prune",
        }
    }
}

/// One run: one trial (and copy) of one procedure of one experiment at one scale. The levels it
/// trains are not part of its identity, so asking for more levels extends a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub experiment: String,
    pub scale: Scale,
    pub seed: u64,
    pub method: Method,
    pub iterations: usize,
    pub eval_every: usize,
    pub train_subset: Option<usize>,
    pub eval_subset: Option<usize>,
    pub procedure: Procedure,
    pub trial: usize,
    /// Which copy of a control (0 for the ticket and one-shot).
    pub copy: usize,
    #[serde(default, skip_serializing_if = "DataSource::is_real")]
    pub data: DataSource,
}

/// A run's folder name: readable prefix plus a hash of the canonical JSON of its spec.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub String);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A run with the levels requested of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub spec: RunSpec,
    pub levels: Vec<usize>,
}

impl ExperimentSpec {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let spec: ExperimentSpec = toml::from_str(&text).map_err(|e| {
            // One line: where, and toml's message without its source snippet.
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                let source = text.lines().nth(line - 1).unwrap_or_default().trim();
                format!("line {line}, column {column} (`{source}`): ")
            });
            Error::Spec {
                path: path.to_owned(),
                reason: format!("malformed experiment spec at {}{}", at.unwrap_or_default(), e.message().trim_end().replace('\n', "; ")),
            }
        })?;
        spec.validate().map_err(|reason| Error::Spec { path: path.to_owned(), reason })?;
        Ok(spec)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.method.pruning;
        let has_conv = self.method.model != ModelKind::Lenet300100;
        if p.scope == PruningScope::Global && (!has_conv || p.conv.is_none_or(|rate| rate <= 0.0)) {
            return Err(format!(
                "pruning.scope = \"global\" prunes the convolutions together, but model {:?} has {}; set pruning.conv > 0 or use scope = \"layerwise\"",
                self.method.model,
                if has_conv { "pruning.conv unset or 0" } else { "no convolutions" }
            ));
        }
        if let Some(schedule) = &self.method.lr_schedule {
            schedule.validate()?;
        }
        if has_conv != p.conv.is_some() {
            return Err(format!("pruning.conv must be {} for model {:?}", if has_conv { "set" } else { "absent" }, self.method.model));
        }
        if let Some(d) = self.method.dropout {
            if !(0.0..1.0).contains(&d) {
                return Err(format!("method.dropout = {d} must be in [0, 1)"));
            }
        }
        let rates = [("fc", p.fc), ("output", p.output), ("conv", p.conv.unwrap_or(0.0))];
        for (name, rate) in rates {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("pruning.{name} = {rate} must be in [0, 1)"));
            }
        }
        if self.method.batch_size == 0 {
            return Err("method.batch_size must be at least 1".into());
        }
        for (scale, sizes) in &self.scales {
            let at = |field: &str| format!("scales.{}.{field}", scale.as_str());
            if sizes.iterations == 0 || sizes.eval_every == 0 || sizes.trials == 0 {
                return Err(format!("{}, eval_every and trials must be at least 1", at("iterations")));
            }
            let lists =
                [("reinit_levels", &sizes.reinit_levels), ("oneshot_levels", &sizes.oneshot_levels), ("random_prune_levels", &sizes.random_prune_levels)];
            for (field, levels) in lists {
                if let Some(bad) = levels.iter().find(|&&l| l == 0 || l > sizes.levels) {
                    return Err(format!("{} holds level {bad}; levels must be in 1..={}", at(field), sizes.levels));
                }
            }
        }
        Ok(())
    }

    pub fn sizes(&self, scale: Scale) -> Result<&Sizes> {
        self.scales.get(&scale).ok_or_else(|| Error::Invalid(format!("experiment `{}` has no `{}` scale", self.name, scale.as_str())))
    }

    /// Every run of this experiment at `scale`, tickets first (the controls branch off them).
    pub fn plan(&self, scale: Scale, trials: Option<usize>, data: DataSource) -> Result<Vec<PlannedRun>> {
        let sizes = self.sizes(scale)?;
        let trials = trials.unwrap_or(sizes.trials);
        // There is no synthetic MNIST: MNIST is always available, so its runs stay real.
        let data = if self.method.dataset == DatasetKind::Mnist { DataSource::Real } else { data };
        let run = |procedure, trial, copy, levels: Vec<usize>| PlannedRun {
            spec: RunSpec {
                experiment: self.name.clone(),
                scale,
                seed: self.seed,
                method: self.method.clone(),
                iterations: sizes.iterations,
                eval_every: sizes.eval_every,
                train_subset: sizes.train_subset,
                eval_subset: sizes.eval_subset,
                procedure,
                trial,
                copy,
                data,
            },
            levels,
        };
        let mut runs = Vec::new();
        for trial in 0..trials {
            runs.push(run(Procedure::Ticket, trial, 0, (0..=sizes.levels).collect()));
        }
        for trial in 0..trials {
            if !sizes.oneshot_levels.is_empty() {
                runs.push(run(Procedure::Oneshot, trial, 0, sizes.oneshot_levels.clone()));
            }
            for copy in 0..sizes.reinit_copies {
                runs.push(run(Procedure::Reinit, trial, copy, sizes.reinit_levels.clone()));
            }
            for copy in 0..sizes.random_prune_copies {
                runs.push(run(Procedure::RandomPrune, trial, copy, sizes.random_prune_levels.clone()));
            }
        }
        Ok(runs)
    }
}

impl LrSchedule {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.iterations == 0 {
            return Err("method.lr_schedule.iterations must be at least 1".into());
        }
        if self.warmup > self.iterations {
            return Err(format!(
                "method.lr_schedule.warmup = {} is longer than training (lr_schedule.iterations = {}); shorten the warmup",
                self.warmup, self.iterations
            ));
        }
        if let Some(bad) = self.drops.iter().find(|&&d| d == 0 || d >= self.iterations) {
            return Err(format!("method.lr_schedule.drops holds {bad}, outside training (1..{}); drops must fall inside it", self.iterations));
        }
        if !(self.drop_factor > 0.0 && self.drop_factor <= 1.0) {
            return Err(format!("method.lr_schedule.drop_factor = {} must be in (0, 1]", self.drop_factor));
        }
        Ok(())
    }
}

impl RunSpec {
    /// Canonical JSON: serde writes struct fields in declaration order and maps sorted.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a RunSpec always serialises")
    }

    pub fn id(&self) -> RunId {
        let hash = Sha256::digest(self.canonical_json().as_bytes());
        let hex: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
        let copy = match self.procedure {
            Procedure::Reinit | Procedure::RandomPrune => format!("-c{}", self.copy),
            Procedure::Ticket | Procedure::Oneshot => String::new(),
        };
        let data = if self.data.is_real() { "" } else { "-synthetic" };
        RunId(format!("{}{data}-{}-{}-t{}{copy}-{hex}", self.experiment, self.scale.as_str(), self.procedure.as_str(), self.trial))
    }

    /// The ticket run this run branches off (itself for a ticket).
    pub fn trunk(&self) -> RunSpec {
        RunSpec { procedure: Procedure::Ticket, copy: 0, ..self.clone() }
    }
}
