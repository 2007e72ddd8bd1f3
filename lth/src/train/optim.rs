//! Masked optimizers: Adam (the paper's Conv/LeNet runs) and SGD with momentum and weight
//! decay (VGG-19, ResNet-18). candle-nn has only AdamW (weight decay 0.01 by default; the paper
//! uses none) and plain SGD, and both would let pruned weights come back through their state.
//! Here the gradient of a pruned weight is zeroed before it reaches the state, so the state
//! stays exactly 0, and the weight itself is written as exactly 0 after every step. The update
//! formulas are PyTorch's (`torch.optim.Adam`, and `torch.optim.SGD` with dampening 0).
//!
//! Two implementations of each update:
//! - `Fused`: one pass per tensor over the parameter, its gradient, mask and state, in place,
//!   with no allocation (CPU; a candle `InplaceOp2`). Large tensors are split across threads.
//!   (Sparse layers come as compact vectors of their kept weights, `nn::linear`, with no
//!   mask: the same arithmetic on fewer values.)
//! - `CandleOps`: the same arithmetic as candle tensor ops, for any device (CUDA) and as the
//!   reference the fused kernels are tested against.

use crate::base::error::{Error, Result};
use crate::nn::Params;
use crate::ops::device::to_host;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Layout, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// SGD as PyTorch writes it: `g += weight_decay · w; buf = momentum · buf + g; w -= lr · buf`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Adam(AdamConfig),
    Sgd(SgdConfig),
}

impl Rule {
    /// The (peak) learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Rule::Adam(c) => c.lr,
            Rule::Sgd(c) => c.lr,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    Fused,
    CandleOps,
}

/// A parameter's mask in the two forms the implementations need.
pub struct StepMask<'a> {
    pub host: &'a [f32],
    pub tensor: Tensor,
}

/// Per-parameter state: Adam's two moments, or SGD's momentum buffer (in `first`).
enum State {
    Host { first: Vec<f32>, second: Vec<f32> },
    Device { first: Tensor, second: Tensor },
}

pub struct MaskedOptimizer {
    rule: Rule,
    implementation: Implementation,
    step: i32,
    state: BTreeMap<String, State>,
}

impl MaskedOptimizer {
    pub fn new(rule: Rule, implementation: Implementation) -> Self {
        MaskedOptimizer { rule, implementation, step: 0, state: BTreeMap::new() }
    }

    /// The fused kernels where the parameters live on the CPU, candle ops elsewhere (and on
    /// the CPU's generic path, `ops::device`).
    pub fn for_device(rule: Rule, dev: &candle_core::Device) -> Self {
        let implementation = if crate::ops::device::fast_kernels(dev) { Implementation::Fused } else { Implementation::CandleOps };
        Self::new(rule, implementation)
    }

    /// Sets the learning rate of the next steps (`schedule`).
    pub fn set_lr(&mut self, lr: f64) {
        match &mut self.rule {
            Rule::Adam(c) => c.lr = lr,
            Rule::Sgd(c) => c.lr = lr,
        }
    }

    /// One update of every parameter that has a gradient (so never BatchNorm's running
    /// statistics, which no gradient reaches); `masks` covers the prunable ones.
    pub fn step(&mut self, params: &Params, grads: &GradStore, masks: &BTreeMap<String, StepMask>) -> Result<()> {
        self.step += 1;
        let kernel = Kernel::new(self.rule, self.step);
        for (name, var) in params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mask = masks.get(name);
            let state = match self.state.entry(name.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(fresh_state(self.rule, self.implementation, var)?),
            };
            match state {
                State::Host { first, second } => {
                    let op = FusedUpdate { first: RefCell::new(first), second: RefCell::new(second), mask, kernel };
                    var.as_tensor().inplace_op2(grad, &op)?;
                }
                State::Device { first, second } => {
                    let grad = match mask {
                        Some(k) => grad.mul(&k.tensor)?,
                        None => grad.clone(),
                    };
                    let mut next = kernel.candle_ops(var.as_tensor(), &grad, first, second)?;
                    if let Some(k) = mask {
                        next = next.mul(&k.tensor)?;
                    }
                    var.set(&next)?;
                }
            }
        }
        Ok(())
    }
}

/// An optimizer's whole state on the host, to save with a training's checkpoint: the step
/// count (Adam's bias correction) and each parameter's buffers (Adam's two moments; SGD's
/// momentum buffer, with `second` empty).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    pub step: i32,
    pub buffers: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

impl MaskedOptimizer {
    /// A copy of the state (the device's buffers read back).
    pub fn state(&self) -> Result<OptimizerState> {
        let adam = matches!(self.rule, Rule::Adam(_));
        let mut buffers = BTreeMap::new();
        for (name, state) in &self.state {
            let pair = match state {
                State::Host { first, second } => (first.clone(), second.clone()),
                State::Device { first, second } => (to_host::<f32>(first)?, if adam { to_host::<f32>(second)? } else { Vec::new() }),
            };
            buffers.insert(name.clone(), pair);
        }
        Ok(OptimizerState { step: self.step, buffers })
    }

    /// Takes up `state`, saved from an optimizer of the same rule over the same `params`: the
    /// next step is the one that optimizer would have taken. Refuses buffers of other sizes.
    pub fn restore(&mut self, state: OptimizerState, params: &Params) -> Result<()> {
        let adam = matches!(self.rule, Rule::Adam(_));
        let mut restored = BTreeMap::new();
        for (name, (first, second)) in state.buffers {
            let var = params.get(&name).ok_or_else(|| Error::Invalid(format!("optimizer state for `{name}`, which the network does not have")))?;
            let n = var.elem_count();
            if first.len() != n || second.len() != if adam { n } else { 0 } {
                return Err(Error::Invalid(format!(
                    "optimizer state for `{name}` holds {} and {} values; {n} and {} expected",
                    first.len(),
                    second.len(),
                    if adam { n } else { 0 }
                )));
            }
            let state = match self.implementation {
                Implementation::Fused => State::Host { first, second },
                Implementation::CandleOps => {
                    let tensor = |values: Vec<f32>| Tensor::from_vec(values, var.shape(), var.device());
                    let second = if adam { tensor(second)? } else { var.zeros_like()? };
                    State::Device { first: tensor(first)?, second }
                }
            };
            restored.insert(name, state);
        }
        self.step = state.step;
        self.state = restored;
        Ok(())
    }
}

/// Zero state for `var`: two moments for Adam, a momentum buffer for SGD.
fn fresh_state(rule: Rule, implementation: Implementation, var: &candle_core::Var) -> Result<State> {
    Ok(match implementation {
        Implementation::Fused => {
            let second = if matches!(rule, Rule::Adam(_)) { var.elem_count() } else { 0 };
            State::Host { first: vec![0.0; var.elem_count()], second: vec![0.0; second] }
        }
        Implementation::CandleOps => State::Device { first: var.zeros_like()?, second: var.zeros_like()? },
    })
}

/// A rule with the scalars of the current step folded in.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Adam { step_size: f32, beta1: f32, beta2: f32, sqrt_bias2: f32, eps: f32 },
    Sgd { lr: f32, momentum: f32, weight_decay: f32 },
}

impl Kernel {
    fn new(rule: Rule, step: i32) -> Self {
        match rule {
            Rule::Adam(c) => {
                let (bias1, bias2) = (1.0 - c.beta1.powi(step), 1.0 - c.beta2.powi(step));
                Kernel::Adam {
                    step_size: (c.lr / bias1) as f32,
                    beta1: c.beta1 as f32,
                    beta2: c.beta2 as f32,
                    sqrt_bias2: bias2.sqrt() as f32,
                    eps: c.eps as f32,
                }
            }
            Rule::Sgd(c) => Kernel::Sgd { lr: c.lr as f32, momentum: c.momentum as f32, weight_decay: c.weight_decay as f32 },
        }
    }

    /// The same update as candle ops (unmasked; the caller masks `grad` and the result).
    fn candle_ops(&self, p: &Tensor, grad: &Tensor, first: &mut Tensor, second: &mut Tensor) -> Result<Tensor> {
        Ok(match *self {
            Kernel::Adam { step_size, beta1, beta2, sqrt_bias2, eps } => {
                let (beta1, beta2) = (beta1 as f64, beta2 as f64);
                *first = ((&*first * beta1)? + (grad * (1.0 - beta1))?)?;
                *second = ((&*second * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
                let denom = ((second.sqrt()? / sqrt_bias2 as f64)? + eps as f64)?;
                (p - ((&*first / denom)? * step_size as f64)?)?
            }
            Kernel::Sgd { lr, momentum, weight_decay } => {
                let grad = (grad + (p * weight_decay as f64)?)?;
                *first = ((&*first * momentum as f64)? + grad)?;
                (p - (&*first * lr as f64)?)?
            }
        })
    }
}

/// Tensors at least this large are split across threads (when candle may use more than one);
/// below it, waking a thread costs more than it saves (LeNet's 235K-weight layer ran slower).
const PARALLEL_FROM: usize = 1 << 20;
const CHUNK: usize = 1 << 14;

/// The in-place kernel: `cpu_fwd` takes `&self`, so the state sits in `RefCell`s.
struct FusedUpdate<'a, 'm> {
    first: RefCell<&'a mut Vec<f32>>,
    /// Empty for SGD.
    second: RefCell<&'a mut Vec<f32>>,
    mask: Option<&'a StepMask<'m>>,
    kernel: Kernel,
}

impl candle_core::InplaceOp2 for FusedUpdate<'_, '_> {
    fn name(&self) -> &'static str {
        "masked-update"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, grad: &CpuStorage, grad_l: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (dst, grad) else { candle_core::bail!("masked-update: f32 parameters and gradients only") };
        let (Some((p0, p1)), Some((g0, g1))) = (dst_l.contiguous_offsets(), grad_l.contiguous_offsets()) else {
            candle_core::bail!("masked-update: contiguous tensors only")
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let (mut first, mut second) = (self.first.borrow_mut(), self.second.borrow_mut());
        let k = self.kernel;
        match self.mask {
            Some(mask) if mask.host.len() != p.len() => {
                candle_core::bail!("masked-update: mask has {} entries for {} weights", mask.host.len(), p.len())
            }
            mask => {
                let mask = mask.map(|m| m.host);
                if p.len() < PARALLEL_FROM || candle_core::utils::get_num_threads() < 2 {
                    k.dense(p, g, &mut first, &mut second, mask);
                } else {
                    // Chunk lists, so that an absent mask or SGD's empty second moment still
                    // lines up with the weights.
                    let n = p.len().div_ceil(CHUNK);
                    let seconds: Vec<&mut [f32]> =
                        if second.is_empty() { (0..n).map(|_| <&mut [f32]>::default()).collect() } else { second.chunks_mut(CHUNK).collect() };
                    let masks: Vec<Option<&[f32]>> = match mask {
                        Some(m) => m.chunks(CHUNK).map(Some).collect(),
                        None => vec![None; n],
                    };
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(first.par_chunks_mut(CHUNK))
                        .zip(seconds.into_par_iter())
                        .zip(masks.into_par_iter())
                        .for_each(|((((p, g), m), v), mask)| k.dense(p, g, m, v, mask));
                }
            }
        }
        Ok(())
    }
}

impl Kernel {
    #[inline(always)]
    fn adam(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        if let Kernel::Adam { step_size, beta1, beta2, sqrt_bias2, eps } = *self {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *p -= step_size * *m / (v.sqrt() / sqrt_bias2 + eps);
        }
    }

    #[inline(always)]
    fn sgd(&self, p: &mut f32, g: f32, buf: &mut f32) {
        if let Kernel::Sgd { lr, momentum, weight_decay } = *self {
            let g = g + weight_decay * *p;
            *buf = momentum * *buf + g;
            *p -= lr * *buf;
        }
    }

    /// Every weight of a tensor (or a chunk of one); `second` is empty for SGD. With AVX2 where
    /// the CPU has it: 8 lanes instead of SSE's 4 for the division and square root. Each weight
    /// is the same IEEE operations either way (Rust never fuses a multiply and an add), so the
    /// bits do not depend on the path.
    fn dense(&self, p: &mut [f32], g: &[f32], first: &mut [f32], second: &mut [f32], mask: Option<&[f32]>) {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(k: &Kernel, p: &mut [f32], g: &[f32], first: &mut [f32], second: &mut [f32], mask: Option<&[f32]>) {
            k.dense_loops(p, g, first, second, mask)
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: only reached on CPUs that have AVX2.
            return unsafe { avx2(self, p, g, first, second, mask) };
        }
        self.dense_loops(p, g, first, second, mask)
    }

    /// Zipped iterators (no indexing), so the loops compile without bounds checks.
    #[inline(always)]
    fn dense_loops(&self, p: &mut [f32], g: &[f32], first: &mut [f32], second: &mut [f32], mask: Option<&[f32]>) {
        match (self, mask) {
            (Kernel::Adam { .. }, Some(mask)) => {
                for ((((p, &g), m), v), &keep) in p.iter_mut().zip(g).zip(first).zip(second).zip(mask) {
                    self.adam(p, g * keep, m, v);
                    *p *= keep;
                }
            }
            (Kernel::Adam { .. }, None) => {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(first).zip(second) {
                    self.adam(p, g, m, v);
                }
            }
            (Kernel::Sgd { .. }, Some(mask)) => {
                for (((p, &g), buf), &keep) in p.iter_mut().zip(g).zip(first).zip(mask) {
                    self.sgd(p, g * keep, buf);
                    *p *= keep;
                }
            }
            (Kernel::Sgd { .. }, None) => {
                for ((p, &g), buf) in p.iter_mut().zip(g).zip(first) {
                    self.sgd(p, g, buf);
                }
            }
        }
    }
}

impl From<&crate::base::spec::OptimizerSpec> for Rule {
    fn from(spec: &crate::base::spec::OptimizerSpec) -> Self {
        match *spec {
            crate::base::spec::OptimizerSpec::Adam { lr, beta1, beta2, eps } => Rule::Adam(AdamConfig { lr, beta1, beta2, eps }),
            crate::base::spec::OptimizerSpec::Sgd { lr, momentum, weight_decay } => Rule::Sgd(SgdConfig { lr, momentum, weight_decay }),
        }
    }
}
