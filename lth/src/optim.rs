//! Masked Adam. candle-nn has only AdamW (weight decay 0.01 by default; the paper uses none)
//! and it would let pruned weights come back through their moments. Here the gradient of a
//! pruned weight is zeroed before it reaches the moments, so its moments stay exactly 0, and
//! the weight itself is written as exactly 0 after every step.
//!
//! Two implementations of the same update (PyTorch's `torch.optim.Adam` formula):
//! - `Fused`: one pass per tensor over the parameter, its gradient, mask and moments, in place,
//!   with no allocation (CPU only; a candle `InplaceOp2`).
//! - `CandleOps`: the same arithmetic as candle tensor ops, for any device (CUDA) and as the
//!   reference the fused kernel is tested against.

use crate::error::Result;
use crate::models::Params;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Layout, Tensor};
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    Fused,
    CandleOps,
}

/// A parameter's mask in the two forms the implementations need.
pub struct StepMask<'a> {
    pub host: &'a [f32],
    pub tensor: &'a Tensor,
}

enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

pub struct MaskedAdam {
    config: AdamConfig,
    implementation: Implementation,
    step: i32,
    moments: BTreeMap<String, Moments>,
}

impl MaskedAdam {
    pub fn new(config: AdamConfig, implementation: Implementation) -> Self {
        MaskedAdam { config, implementation, step: 0, moments: BTreeMap::new() }
    }

    /// The fused kernel where the parameters live on the CPU, candle ops elsewhere.
    pub fn for_device(config: AdamConfig, dev: &candle_core::Device) -> Self {
        let implementation = if dev.is_cpu() { Implementation::Fused } else { Implementation::CandleOps };
        Self::new(config, implementation)
    }

    /// One update of every parameter that has a gradient; `masks` covers the prunable ones.
    pub fn step(&mut self, params: &Params, grads: &GradStore, masks: &BTreeMap<String, StepMask>) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step);
        let bias2 = 1.0 - c.beta2.powi(self.step);
        let hyper = Hyper {
            step_size: (c.lr / bias1) as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            sqrt_bias2: bias2.sqrt() as f32,
            eps: c.eps as f32,
        };
        for (name, var) in params {
            let Some(grad) = grads.get(var.as_tensor()) else { continue };
            let mask = masks.get(name);
            let moments = match self.moments.entry(name.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(match self.implementation {
                    Implementation::Fused => Moments::Host { m: vec![0.0; var.elem_count()], v: vec![0.0; var.elem_count()] },
                    Implementation::CandleOps => Moments::Device { m: var.zeros_like()?, v: var.zeros_like()? },
                }),
            };
            match moments {
                Moments::Host { m, v } => {
                    let kernel = FusedAdam { m: RefCell::new(m), v: RefCell::new(v), mask: mask.map(|k| k.host), hyper };
                    var.as_tensor().inplace_op2(grad, &kernel)?;
                }
                Moments::Device { m, v } => {
                    let grad = match mask {
                        Some(k) => grad.mul(k.tensor)?,
                        None => grad.clone(),
                    };
                    *m = ((m.clone() * hyper.beta1 as f64)? + (&grad * (1.0 - hyper.beta1 as f64))?)?;
                    *v = ((v.clone() * hyper.beta2 as f64)? + (grad.sqr()? * (1.0 - hyper.beta2 as f64))?)?;
                    let denom = ((v.sqrt()? / hyper.sqrt_bias2 as f64)? + hyper.eps as f64)?;
                    let mut next = (var.as_tensor() - ((&*m / denom)? * hyper.step_size as f64)?)?;
                    if let Some(k) = mask {
                        next = next.mul(k.tensor)?;
                    }
                    var.set(&next)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Hyper {
    step_size: f32,
    beta1: f32,
    beta2: f32,
    sqrt_bias2: f32,
    eps: f32,
}

/// The in-place kernel: `cpu_fwd` takes `&self`, so the moments sit in `RefCell`s.
struct FusedAdam<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    mask: Option<&'a [f32]>,
    hyper: Hyper,
}

impl candle_core::InplaceOp2 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "masked-adam"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, grad: &CpuStorage, grad_l: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (dst, grad) else {
            candle_core::bail!("masked-adam: f32 parameters and gradients only")
        };
        let (Some((p0, p1)), Some((g0, g1))) = (dst_l.contiguous_offsets(), grad_l.contiguous_offsets()) else {
            candle_core::bail!("masked-adam: contiguous tensors only")
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        let h = self.hyper;
        let (one_b1, one_b2) = (1.0 - h.beta1, 1.0 - h.beta2);
        let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
            *m = h.beta1 * *m + one_b1 * g;
            *v = h.beta2 * *v + one_b2 * g * g;
            *p -= h.step_size * *m / (v.sqrt() / h.sqrt_bias2 + h.eps);
        };
        // Zipped iterators (no indexing), so the loops compile without bounds checks.
        match self.mask {
            Some(mask) => {
                if mask.len() != p.len() {
                    candle_core::bail!("masked-adam: mask has {} entries for {} weights", mask.len(), p.len())
                }
                for ((((p, &g), m), v), &keep) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()).zip(mask) {
                    update(p, g * keep, m, v);
                    *p *= keep;
                }
            }
            None => {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    update(p, g, m, v);
                }
            }
        }
        Ok(())
    }
}

impl From<&crate::spec::OptimizerSpec> for AdamConfig {
    fn from(spec: &crate::spec::OptimizerSpec) -> Self {
        match *spec {
            crate::spec::OptimizerSpec::Adam { lr, beta1, beta2, eps } => AdamConfig { lr, beta1, beta2, eps },
        }
    }
}
