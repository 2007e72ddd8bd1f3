//! The parameter store every network is built over: named tensors (`fc1.weight`, …) that
//! masks, checkpoints and pruning share, their host copies, and each tensor's shape and kind.

use crate::base::error::Result;
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
    pub fn prunable(&self) -> impl Iterator<Item = &ParamInfo> {
        self.params.iter().filter(|p| p.prunable.is_some())
    }

    /// The number of prunable weights (biases excluded, docs/paper.md §1).
    pub fn n_weights(&self) -> usize {
        self.prunable().map(ParamInfo::numel).sum()
    }
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
    params.iter().map(|(name, var)| Ok((name.clone(), crate::ops::device::to_host::<f32>(var)?))).collect()
}

fn missing(name: &str) -> crate::base::error::Error {
    crate::base::error::Error::Invalid(format!("no values for parameter `{name}`"))
}

/// The parameter `name` of the store, shared (not copied).
pub(crate) fn param(params: &Params, name: &str) -> Result<Tensor> {
    params.get(name).map(|v| v.as_tensor().clone()).ok_or_else(|| crate::base::error::Error::Invalid(format!("no parameter `{name}`")))
}
