//! Architectures as candle modules over a parameter store keyed by stable names
//! (`fc1.weight`, …), which masks, checkpoints and pruning share. Initial weights come from
//! seeded Rust RNGs (`init`), never from candle's unseedable CPU RNG.

pub mod conv;
pub mod dropout;
pub mod init;
pub mod lenet;
pub mod linear;
pub mod resnet;
pub mod vgg;

pub use dropout::Dropout;

use crate::error::Result;
use crate::spec::ModelKind;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use std::collections::BTreeMap;

/// The trainable parameters, by stable name; `BTreeMap` so iteration order is fixed.
pub type Params = BTreeMap<String, Var>;

/// Host copies of parameter values, by name.
pub type Weights = BTreeMap<String, Vec<f32>>;

/// How a layer is pruned: each kind has its own rate (docs/paper.md Fig 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerKind {
    /// A convolution.
    Conv,
    /// A hidden fully connected layer.
    Fc,
    /// The output layer.
    Output,
    /// A 1x1 projection shortcut of a residual network (never pruned, docs/paper.md App I.3).
    Shortcut,
}

/// One parameter tensor of an architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// `Some(kind)` for prunable weights; `None` for biases, which are never pruned.
    pub prunable: Option<LayerKind>,
    pub fan_in: usize,
    pub fan_out: usize,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A network's parameter list, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub params: Vec<ParamInfo>,
}

impl Architecture {
    pub fn of(kind: ModelKind) -> Self {
        match kind {
            ModelKind::Lenet300100 => lenet::architecture(),
            ModelKind::Conv2 | ModelKind::Conv4 | ModelKind::Conv6 => conv::architecture(kind),
            ModelKind::Vgg19 => vgg::architecture(),
            ModelKind::Resnet18 => resnet::architecture(),
        }
    }

    pub fn prunable(&self) -> impl Iterator<Item = &ParamInfo> {
        self.params.iter().filter(|p| p.prunable.is_some())
    }

    /// The number of prunable weights (biases excluded, docs/paper.md §1).
    pub fn n_weights(&self) -> usize {
        self.prunable().map(ParamInfo::numel).sum()
    }
}

/// A forward pass over the parameters it was built from.
pub trait Network {
    /// Training: logits `(batch, classes)` for images `(batch, channels, height, width)`;
    /// `dropout` is given to networks that use it, and BatchNorm normalises with the batch's
    /// statistics (updating its running ones).
    fn forward_t(&self, xs: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor>;

    /// One training step's logits, mean cross-entropy and gradients for `labels`. By default
    /// candle's autograd differentiates [`Network::forward_t`]; a network may run (part of) its
    /// backward by hand, with the same bits.
    fn train_step(&self, xs: &Tensor, labels: &Tensor, dropout: Option<&mut Dropout>) -> Result<Step> {
        autograd_step(self.forward_t(xs, dropout)?, labels)
    }

    /// Evaluation: no dropout; BatchNorm uses its running statistics.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, None)
    }

    /// Whether [`Network::forward_feature_major`] evaluates this network (on the CPU).
    fn evaluates_feature_major(&self) -> bool {
        false
    }

    /// Evaluation logits `(n, classes)` from images already transposed to feature-major rows
    /// (`linear::feature_major`: the evaluation splits never change, so training transposes
    /// them once); `None` for networks that evaluate batch-major through [`Network::forward`].
    fn forward_feature_major(&self, _xs_t: &[f32], _n: usize, _width: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// What one training step computed.
pub struct Step {
    pub logits: Tensor,
    /// The mean cross-entropy over the batch (a scalar).
    pub loss: Tensor,
    /// The gradients of the loss, by parameter.
    pub grads: GradStore,
}

/// The loss of `logits` for `labels` and its gradients by candle's autograd.
pub fn autograd_step(logits: Tensor, labels: &Tensor) -> Result<Step> {
    let loss = crate::kernels::loss::cross_entropy(&logits, labels)?;
    let grads = loss.backward()?;
    Ok(Step { logits, loss, grads })
}

/// Builds the network of `kind` over `params` (which it shares, so optimizer updates show).
/// The layers `compact` names train sparse, over their compact weights in `params`
/// (`linear`); pass `Compact::none()` for dense parameters.
pub fn build(kind: ModelKind, params: &Params, compact: &linear::Compact) -> Result<Box<dyn Network>> {
    match kind {
        ModelKind::Lenet300100 => Ok(Box::new(lenet::LeNet::new(params, compact)?)),
        ModelKind::Conv2 | ModelKind::Conv4 | ModelKind::Conv6 => Ok(Box::new(conv::ConvNet::new(kind, params, compact)?)),
        ModelKind::Vgg19 => Ok(Box::new(vgg::Vgg::new(params, compact)?)),
        ModelKind::Resnet18 => Ok(Box::new(resnet::ResNet::new(params, compact)?)),
    }
}

/// Seeded initial values of every parameter (theta0, and reinit's fresh draws): Gaussian
/// Glorot weights, zero biases, and BatchNorm's initial state (scale 1, shift 0, running mean
/// 0, running variance 1; PyTorch's, the paper does not say).
pub fn initial_weights(arch: &Architecture, rng: &mut rand_chacha::ChaCha8Rng) -> Weights {
    let mut weights = init::glorot_normal(arch, rng);
    crate::kernels::batchnorm::set_initial_state(&mut weights);
    weights
}

/// Fresh parameters holding `weights`.
pub fn to_params(arch: &Architecture, weights: &Weights, dev: &Device) -> Result<Params> {
    let mut params = Params::new();
    for p in &arch.params {
        let values = weights.get(&p.name).ok_or_else(|| missing(&p.name))?;
        let tensor = Tensor::from_slice(values, p.shape.as_slice(), dev)?;
        params.insert(p.name.clone(), Var::from_tensor(&tensor)?);
    }
    Ok(params)
}

/// Host copies of the parameters.
pub fn weights_of(params: &Params) -> Result<Weights> {
    params.iter().map(|(name, var)| Ok((name.clone(), crate::kernels::device::to_host::<f32>(var)?))).collect()
}

fn missing(name: &str) -> crate::error::Error {
    crate::error::Error::Invalid(format!("no values for parameter `{name}`"))
}

/// The parameter `name` of the store, shared (not copied).
pub(crate) fn param(params: &Params, name: &str) -> Result<Tensor> {
    params.get(name).map(|v| v.as_tensor().clone()).ok_or_else(|| crate::error::Error::Invalid(format!("no parameter `{name}`")))
}
