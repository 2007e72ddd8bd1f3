//! Experiment specs: `experiments/*.toml` parsed into a fixed [`Method`] (the paper's settings)
//! plus named [`Sizes`] per [`Scale`], and expanded into [`RunSpec`]s, each with a stable
//! content-hashed [`RunId`]. A scale changes sizes only, never the method.

use crate::base::error::{Error, IoContext, Result};
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
    /// Exactly docs/paper.md.
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

/// Everything the paper fixes for an experiment (docs/paper.md §1-2).
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
    /// Rewinding (late resetting), BEYOND THE ICLR PAPER (Frankle et al. 2019, "Stabilizing the
    /// Lottery Ticket Hypothesis"): every pruned level resets its survivors to the dense
    /// network's state at this iteration of the paper-scale training instead of theta0, and
    /// trains from there to the end of the same schedule (`rewind`). 0, the default: the paper's
    /// reset to theta0, and nothing about the run changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewind_iteration: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The learning rate as a function of the iteration (docs/paper.md §4, App I): linear warmup from 0
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
    /// VGG-19 for CIFAR-10 (Liu et al. 2019's variant, docs/paper.md §2).
    Vgg19,
    /// The paper's "ResNet-18": He et al.'s 20-layer CIFAR-10 ResNet (docs/paper.md §2).
    Resnet18,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    Mnist,
    Cifar10,
}

/// Where the images come from: the real dataset, a generated set in the same file format
/// (for machines without the dataset), or an image-folder copy of CIFAR-10 (`data::copies`).
/// Every run, table and figure made from anything but the real dataset says which it was.
/// Written as text everywhere (run specs, curve files, tables): `real`, `synthetic`, or
/// `<codec>-copy-<sha256>`, so the ids of `real` and `synthetic` runs never change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DataSource {
    #[default]
    Real,
    Synthetic,
    Copy(ImageCopy),
}

/// An image-folder copy of CIFAR-10, identified by the SHA-256 of its archive (or of its
/// folder's file manifest) and by the codec of its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCopy {
    pub codec: Codec,
    pub sha256: [u8; 32],
}

/// The image codec of a copy: `Jpeg` if any of its images is a JPEG (lossy), else `Png`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Png,
    Jpeg,
}

impl DataSource {
    pub fn is_real(&self) -> bool {
        *self == DataSource::Real
    }

    /// What a figure title adds, if anything: a short reminder of where the images came from.
    pub fn caveat(&self) -> Option<String> {
        match self {
            DataSource::Real => None,
            DataSource::Synthetic => Some("SYNTHETIC data".into()),
            DataSource::Copy(copy) => Some(format!("{} copy {}{}", copy.codec.name().to_uppercase(), &copy.hex()[..8], copy.codec.lossy_note())),
        }
    }

    /// The part of a run id that keeps runs on other data out of the real runs' folders.
    fn id_tag(&self) -> String {
        match self {
            DataSource::Real => String::new(),
            DataSource::Synthetic => "-synthetic".into(),
            DataSource::Copy(copy) => format!("-{}-copy-{}", copy.codec.name(), &copy.hex()[..8]),
        }
    }
}

impl ImageCopy {
    pub fn hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Png => "png",
            Codec::Jpeg => "jpeg",
        }
    }

    fn lossy_note(self) -> &'static str {
        match self {
            Codec::Png => "",
            Codec::Jpeg => ", lossy",
        }
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Real => f.write_str("real"),
            DataSource::Synthetic => f.write_str("synthetic"),
            DataSource::Copy(copy) => write!(f, "{}-copy-{}", copy.codec.name(), copy.hex()),
        }
    }
}

impl std::str::FromStr for DataSource {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let copy = |codec, hex: &str| {
            let bytes: Option<Vec<u8>> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
            let sha256 = bytes.and_then(|b| <[u8; 32]>::try_from(b).ok());
            sha256.map(|sha256| DataSource::Copy(ImageCopy { codec, sha256 }))
        };
        let parsed = match text {
            "real" => Some(DataSource::Real),
            "synthetic" => Some(DataSource::Synthetic),
            _ => match (text.strip_prefix("png-copy-"), text.strip_prefix("jpeg-copy-")) {
                (Some(hex), _) => copy(Codec::Png, hex),
                (_, Some(hex)) => copy(Codec::Jpeg, hex),
                _ => None,
            },
        };
        parsed.ok_or_else(|| format!("`{text}` is not a data source: use real, synthetic, png-copy-<sha256> or jpeg-copy-<sha256>"))
    }
}

impl Serialize for DataSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DataSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
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
    /// threshold (VGG-19, ResNet-18: docs/paper.md §4, App I.1); other layers keep their own rates.
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
    /// Pruning-at-initialization methods (`init_random`, `init_magnitude`, `snip`, `synflow`;
    /// beyond the paper), each one run per trial at `at_init_levels` (the weight counts of
    /// these ticket levels).
    #[serde(default)]
    pub at_init: Vec<Procedure>,
    #[serde(default)]
    pub at_init_levels: Vec<usize>,
    /// The instability analysis of each trial's ticket run (beyond the paper), run after the
    /// trainings; None: none.
    #[serde(default)]
    pub instability: Option<InstabilitySizes>,
    /// Train on only this many training examples (None: all).
    #[serde(default)]
    pub train_subset: Option<usize>,
    /// Evaluate on only this many validation and test examples (None: all).
    #[serde(default)]
    pub eval_subset: Option<usize>,
}

/// What the instability analysis (`lottery::instability`) of a scale covers: these levels of
/// each trial's ticket run, from each of these iterations, with this many copies (every pair a
/// path) and points per path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstabilitySizes {
    pub levels: Vec<usize>,
    pub rewind: Vec<usize>,
    pub copies: usize,
    pub points: usize,
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
    /// Pruning at initialization (beyond the paper): a mask chosen at theta0 before any
    /// training, with as many weights as the ticket's level keeps, trained from theta0
    /// (`sparsity::at_init`): uniformly random, largest |theta0|, SNIP or SynFlow.
    InitRandom,
    InitMagnitude,
    Snip,
    Synflow,
}

impl Procedure {
    pub fn as_str(self) -> &'static str {
        match self {
            Procedure::Ticket => "ticket",
            Procedure::Oneshot => "oneshot",
            Procedure::Reinit => "reinit",
            Procedure::RandomPrune => "random_prune",
            Procedure::InitRandom => "init_random",
            Procedure::InitMagnitude => "init_magnitude",
            Procedure::Snip => "snip",
            Procedure::Synflow => "synflow",
        }
    }

    /// Whether the run prunes at initialization (needs only theta0 of its trunk).
    pub fn at_init(self) -> bool {
        matches!(self, Procedure::InitRandom | Procedure::InitMagnitude | Procedure::Snip | Procedure::Synflow)
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
    /// The iteration of this scale's training that pruned levels rewind to and start from
    /// (`method.rewind_iteration` moved to the same fraction of training); 0: theta0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewind_iteration: usize,
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
        spec.check_values().and_then(|()| spec.validate()).map_err(|reason| Error::Spec { path: path.to_owned(), reason })?;
        Ok(spec)
    }

    /// Every value in its range, before anything runs: one line naming the field, the value and
    /// what is allowed. The name becomes a folder name, so it may not leave the results folder.
    pub fn check_values(&self) -> std::result::Result<(), String> {
        // Dots are allowed inside (`resnet18_lr0.1`), never first, so `.` and `..` cannot appear.
        let name_ok = self.name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !name_ok {
            return Err(format!(
                "name = {:?} must start with a letter or digit and use only letters, digits, `_`, `-` and `.` (it names run folders)",
                self.name
            ));
        }
        let m = &self.method;
        at_least_one("method.validation_size", m.validation_size)?;
        at_least_one("method.batch_size", m.batch_size)?;
        let channels = match m.dataset {
            DatasetKind::Mnist => 1,
            DatasetKind::Cifar10 => 3,
        };
        let n = &m.normalisation;
        if n.mean.len() != channels || n.std.len() != channels {
            return Err(format!(
                "method.normalisation has {} mean and {} std values; {:?} images have {channels} channel(s), so give {channels} of each",
                n.mean.len(),
                n.std.len(),
                m.dataset
            ));
        }
        for (i, (&mean, &std)) in n.mean.iter().zip(&n.std).enumerate() {
            if !mean.is_finite() {
                return Err(format!("method.normalisation.mean[{i}] = {mean} must be a finite number"));
            }
            if !std.is_finite() || std <= 0.0 {
                return Err(format!("method.normalisation.std[{i}] = {std} must be a finite number > 0"));
            }
        }
        match m.optimizer {
            OptimizerSpec::Adam { lr, beta1, beta2, eps } => {
                positive("method.optimizer.lr", lr)?;
                in_unit("method.optimizer.beta1", beta1)?;
                in_unit("method.optimizer.beta2", beta2)?;
                positive("method.optimizer.eps", eps)?;
            }
            OptimizerSpec::Sgd { lr, momentum, weight_decay } => {
                positive("method.optimizer.lr", lr)?;
                in_unit("method.optimizer.momentum", momentum)?;
                if !weight_decay.is_finite() || weight_decay < 0.0 {
                    return Err(format!("method.optimizer.weight_decay = {weight_decay} must be a finite number >= 0"));
                }
            }
        }
        let p = &m.pruning;
        for (field, rate) in [("fc", Some(p.fc)), ("output", Some(p.output)), ("conv", p.conv)] {
            if let Some(rate) = rate {
                in_unit(&format!("method.pruning.{field}"), rate)?;
            }
        }
        if let Some(d) = m.dropout {
            in_unit("method.dropout", d)?;
        }
        for (scale, sizes) in &self.scales {
            let at = |field: &str| format!("scales.{}.{field}", scale.as_str());
            at_least_one(&at("iterations"), sizes.iterations)?;
            at_least_one(&at("eval_every"), sizes.eval_every)?;
            at_least_one(&at("trials"), sizes.trials)?;
            at_most(&at("trials"), sizes.trials, MAX_TRIALS)?;
            at_most(&at("levels"), sizes.levels, MAX_LEVELS)?;
            at_most(&at("reinit_copies"), sizes.reinit_copies, MAX_COPIES)?;
            at_most(&at("random_prune_copies"), sizes.random_prune_copies, MAX_COPIES)?;
            at_most(&at("iterations"), sizes.iterations, MAX_ITERATIONS)?;
            if let Some(n) = sizes.train_subset {
                if n < m.batch_size {
                    return Err(format!("{} = {n} must be at least method.batch_size ({})", at("train_subset"), m.batch_size));
                }
            }
            if let Some(n) = sizes.eval_subset {
                at_least_one(&at("eval_subset"), n)?;
            }
        }
        Ok(())
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
        self.validate_rewind()?;
        if self.method.rewind_iteration > 0 && self.scales.values().any(|s| !s.at_init.is_empty()) {
            return Err(
                "pruning at initialization (at_init) trains from theta0, but method.rewind_iteration rewinds; use it in a spec without rewinding".into()
            );
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
            let lists = [
                ("reinit_levels", &sizes.reinit_levels),
                ("oneshot_levels", &sizes.oneshot_levels),
                ("random_prune_levels", &sizes.random_prune_levels),
                ("at_init_levels", &sizes.at_init_levels),
            ];
            for (field, levels) in lists {
                if let Some(bad) = levels.iter().find(|&&l| l == 0 || l > sizes.levels) {
                    return Err(format!("{} holds level {bad}; levels must be in 1..={}", at(field), sizes.levels));
                }
            }
            if let Some(bad) = sizes.at_init.iter().find(|m| !m.at_init()) {
                return Err(format!("{} holds `{}`; the methods are init_random, init_magnitude, snip and synflow", at("at_init"), bad.as_str()));
            }
            let batchnorm = matches!(self.method.model, ModelKind::Vgg19 | ModelKind::Resnet18);
            if batchnorm && sizes.at_init.contains(&Procedure::Synflow) {
                return Err(format!("{} holds `synflow`, which is implemented for networks without BatchNorm (LeNet, Conv-2/4/6); remove it", at("at_init")));
            }
            if let Some(inst) = &sizes.instability {
                if let Some(bad) = inst.levels.iter().find(|&&l| l > sizes.levels) {
                    return Err(format!("{} holds level {bad}; levels must be in 0..={}", at("instability.levels"), sizes.levels));
                }
                if let Some(bad) = inst.rewind.iter().find(|&&k| k >= sizes.iterations) {
                    return Err(format!(
                        "{} holds iteration {bad}; copies must start before the end of training ({} iterations)",
                        at("instability.rewind"),
                        sizes.iterations
                    ));
                }
                if inst.copies < 2 || inst.points < 2 {
                    return Err(format!("{} and points must be at least 2", at("instability.copies")));
                }
            }
        }
        Ok(())
    }

    /// The iteration of `scale`'s training that `method.rewind_iteration` (an iteration of the
    /// paper's training) falls at: the same fraction of training, rounded, and at least 1 so
    /// that a short scale still rewinds rather than resets. None for a scale the spec lacks.
    pub fn rewind_at(&self, scale: Scale) -> Option<usize> {
        let k = self.method.rewind_iteration;
        if k == 0 {
            return Some(0);
        }
        let paper = self.scales.get(&Scale::Paper)?.iterations;
        let here = self.scales.get(&scale)?.iterations;
        Some(((k as f64 * here as f64 / paper as f64).round() as usize).max(1))
    }

    pub fn sizes(&self, scale: Scale) -> Result<&Sizes> {
        self.scales.get(&scale).ok_or_else(|| Error::Invalid(format!("experiment `{}` has no `{}` scale", self.name, scale.as_str())))
    }

    /// Every run of this experiment at `scale`, tickets first (the controls branch off them).
    pub fn plan(&self, scale: Scale, trials: Option<usize>, data: DataSource) -> Result<Vec<PlannedRun>> {
        let sizes = self.sizes(scale)?;
        let trials = trials.unwrap_or(sizes.trials);
        if trials > MAX_TRIALS {
            return Err(Error::Invalid(format!("--trials {trials} is above the largest this lth plans ({MAX_TRIALS}); pass at most {MAX_TRIALS}")));
        }
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
                rewind_iteration: self.rewind_at(scale).unwrap_or(0),
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
            for &method in &sizes.at_init {
                runs.push(run(method, trial, 0, sizes.at_init_levels.clone()));
            }
        }
        Ok(runs)
    }
}

impl ExperimentSpec {
    /// A rewind point needs the paper's training length to scale from, and must fall inside
    /// every scale's training (a level that starts at its last iteration would not train).
    fn validate_rewind(&self) -> std::result::Result<(), String> {
        let k = self.method.rewind_iteration;
        if k == 0 {
            return Ok(());
        }
        let Some(paper) = self.scales.get(&Scale::Paper) else {
            return Err(format!("method.rewind_iteration = {k} is an iteration of the paper's training, but the spec has no [scales.paper]; add it"));
        };
        if k >= paper.iterations {
            return Err(format!(
                "method.rewind_iteration = {k} must be below scales.paper.iterations ({}), or 0 for the paper's reset to theta0",
                paper.iterations
            ));
        }
        for (scale, sizes) in &self.scales {
            let at = self.rewind_at(*scale).unwrap_or(0);
            if at >= sizes.iterations {
                return Err(format!(
                    "method.rewind_iteration = {k} falls at iteration {at} of scales.{}.iterations = {}, leaving nothing to train; raise that scale's iterations",
                    scale.as_str(),
                    sizes.iterations
                ));
            }
        }
        Ok(())
    }
}

/// Bounds on the sizes of a plan, far above any the paper uses (5 trials, 20 levels, 3 copies,
/// 112,000 iterations), so that a typo fails in one line instead of exhausting memory.
pub const MAX_TRIALS: usize = 10_000;
pub const MAX_LEVELS: usize = 200;
pub const MAX_COPIES: usize = 1_000;
pub const MAX_ITERATIONS: usize = 1_000_000_000;

fn at_most(field: &str, value: usize, max: usize) -> std::result::Result<(), String> {
    if value > max {
        return Err(format!("{field} = {value} is above the largest this lth plans ({max})"));
    }
    Ok(())
}

fn at_least_one(field: &str, value: usize) -> std::result::Result<(), String> {
    if value == 0 {
        return Err(format!("{field} = 0 must be at least 1"));
    }
    Ok(())
}

fn positive(field: &str, value: f64) -> std::result::Result<(), String> {
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("{field} = {value} must be a finite number > 0"));
    }
    Ok(())
}

/// A rate or an Adam beta: in [0, 1).
fn in_unit(field: &str, value: f64) -> std::result::Result<(), String> {
    if !(0.0..1.0).contains(&value) {
        return Err(format!("{field} = {value} must be in [0, 1)"));
    }
    Ok(())
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
            _ => String::new(),
        };
        RunId(format!("{}{}-{}-{}-t{}{copy}-{hex}", self.experiment, self.data.id_tag(), self.scale.as_str(), self.procedure.as_str(), self.trial))
    }

    /// The ticket run this run branches off (itself for a ticket).
    pub fn trunk(&self) -> RunSpec {
        RunSpec { procedure: Procedure::Ticket, copy: 0, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instability_analysis_asks_for_levels_and_iterations_that_exist() {
        let with = |inst: &str| refused("\noneshot_levels = ", &format!("\ninstability = {{ {inst} }}\noneshot_levels = "));
        let err = with("levels = [0, 99], rewind = [0], copies = 2, points = 11");
        assert!(err.contains("instability.levels holds level 99"), "{err}");
        let err = with("levels = [0], rewind = [50000], copies = 2, points = 11");
        assert!(err.contains("instability.rewind holds iteration 50000"), "{err}");
        let err = with("levels = [0], rewind = [0], copies = 1, points = 11");
        assert!(err.contains("copies and points must be at least 2"), "{err}");
    }

    #[test]
    fn pruning_at_init_lists_only_its_methods_and_levels_that_exist() {
        let err = refused("\noneshot_levels = ", "\nat_init = [\"reinit\"]\noneshot_levels = ");
        assert!(err.contains("at_init holds `reinit`") && err.contains("snip"), "{err}");
        let err = refused("\noneshot_levels = ", "\nat_init = [\"snip\"]\nat_init_levels = [99]\noneshot_levels = ");
        assert!(err.contains("at_init_levels holds level 99"), "{err}");
    }

    /// Loads `experiments/lenet.toml` with `from` replaced by `to`; the error line if refused.
    fn refused(from: &str, to: &str) -> String {
        let text = include_str!("../../../experiments/lenet.toml");
        assert!(text.contains(from), "`{from}` is not in lenet.toml");
        let dir = std::env::temp_dir().join(format!("lth-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = dir.join(format!("edited-{}.toml", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let message = match ExperimentSpec::load(&path) {
            Ok(_) => panic!("`{to}` was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(&path.display().to_string()) && !message.contains('\n'), "{message}");
        message
    }

    #[test]
    fn every_numeric_field_is_checked_before_anything_runs() {
        let lr = "lr = 1.2e-3";
        // (replace, by, words the one-line error must hold: the field, the value, the range)
        let cases = [
            (lr, "lr = nan", &["method.optimizer.lr", "NaN", "> 0"][..]),
            (lr, "lr = -0.1", &["method.optimizer.lr", "-0.1", "> 0"]),
            (lr, "lr = inf", &["method.optimizer.lr", "inf", "finite"]),
            ("beta1 = 0.9", "beta1 = 1.0", &["method.optimizer.beta1", "= 1", "[0, 1)"]),
            ("beta2 = 0.999", "beta2 = -0.5", &["method.optimizer.beta2", "-0.5", "[0, 1)"]),
            ("eps = 1e-8", "eps = 0.0", &["method.optimizer.eps", "= 0", "> 0"]),
            ("fc = 0.2", "fc = nan", &["pruning.fc", "NaN", "[0, 1)"]),
            ("validation_size = 5000", "validation_size = 0", &["method.validation_size", "= 0", "at least 1"]),
            ("mean = [0.1307], std = [0.3081]", "mean = [], std = []", &["method.normalisation", "0 mean", "1 of each"]),
            ("std = [0.3081]", "std = [0.0]", &["method.normalisation.std[0]", "= 0", "> 0"]),
            ("mean = [0.1307]", "mean = [0.1, 0.2]", &["method.normalisation", "2 mean", "1 of each"]),
            ("train_subset = 3000", "train_subset = 0", &["scales.smoke.train_subset", "= 0", "at least method.batch_size"]),
            ("eval_subset = 1000", "eval_subset = 0", &["scales.smoke.eval_subset", "= 0", "at least 1"]),
            ("trials = 1", "trials = 0", &["scales.smoke.trials", "= 0", "at least 1"]),
            ("iterations = 60", "iterations = 0", &["scales.smoke.iterations", "= 0", "at least 1"]),
            ("batch_size = 60", "batch_size = 0", &["method.batch_size", "= 0", "at least 1"]),
            ("fc = 0.2", "fc = 1.0", &["method.pruning.fc", "= 1", "[0, 1)"]),
        ];
        for (from, to, words) in cases {
            let message = refused(from, to);
            for word in words {
                assert!(message.contains(word), "`{to}`: `{word}` missing from: {message}");
            }
        }
    }

    #[test]
    fn a_name_that_could_leave_the_results_folder_is_refused() {
        for name in ["../escape", "/tmp/abs", "a/b", "", "..", ".hidden"] {
            let message = refused("name = \"lenet\"", &format!("name = {name:?}"));
            assert!(message.contains("name =") && message.contains("letters, digits"), "{message}");
        }
        let message = refused("seed = 0", "seed = 0\nlearning_rate = 1");
        assert!(message.contains("learning_rate"), "unknown keys are named: {message}");
    }

    #[test]
    fn a_rewind_point_outside_training_is_refused() {
        let rewind = |k: usize| format!("rewind_iteration = {k}\npruning = {{");
        let message = refused("pruning = {", &rewind(50_000));
        assert!(message.contains("method.rewind_iteration = 50000") && message.contains("scales.paper.iterations (50000)"), "{message}");
        // 40,000 of 50,000 is iteration 48 of smoke's 60: allowed; 49,999 rounds to 60 of 60: refused.
        let message = refused("pruning = {", &rewind(49_999));
        assert!(message.contains("iteration 60 of scales.smoke.iterations = 60"), "{message}");
        let mut spec = ExperimentSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet_rewind1000.toml")).unwrap();
        spec.scales.remove(&Scale::Paper);
        let message = spec.validate().unwrap_err();
        assert!(message.contains("no [scales.paper]"), "{message}");
    }

    #[test]
    fn a_rewind_point_moves_to_the_same_fraction_of_a_shorter_training() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/resnet18_lr0.1_rewind500.toml");
        let spec = ExperimentSpec::load(&path).unwrap();
        // 500 of 30,000 iterations: 20 of quick's 1,200; smoke's 3 rounds to 0 and rewinds to 1.
        assert_eq!([Scale::Paper, Scale::Quick, Scale::Smoke].map(|s| spec.rewind_at(s)), [Some(500), Some(20), Some(1)]);
        let plan = spec.plan(Scale::Quick, None, DataSource::Synthetic).unwrap();
        assert!(plan.iter().all(|r| r.spec.rewind_iteration == 20 && r.spec.id().0.starts_with("resnet18_lr0.1_rewind500-")));
    }

    #[test]
    fn the_committed_experiments_pass_the_checks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 7, "{n} experiments");
    }
}
