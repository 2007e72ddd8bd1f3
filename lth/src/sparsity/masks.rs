//! The `Mask`: a 0/1 value per prunable weight, keyed by parameter name. It checks its own
//! invariants (keys are exactly the prunable parameters, shapes match, values are 0 or 1),
//! reports the fraction of weights remaining, and persists as safetensors (u8).

use crate::base::error::{IoContext, Result};
use crate::nn::linear::{Compact, SPARSE_BELOW};
use crate::nn::{Architecture, Params};
use crate::ops::sparse::Pattern;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerMask {
    pub shape: Vec<usize>,
    /// 1.0 keeps the weight, 0.0 prunes it (f32, so training multiplies by it directly).
    pub keep: Vec<f32>,
}

impl LayerMask {
    pub fn remaining(&self) -> usize {
        self.keep.iter().filter(|&&k| k != 0.0).count()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub layers: BTreeMap<String, LayerMask>,
}

impl Mask {
    /// Every prunable weight kept (level 0).
    pub fn dense(arch: &Architecture) -> Self {
        let layers = arch.prunable().map(|p| (p.name.clone(), LayerMask { shape: p.shape.clone(), keep: vec![1.0; p.numel()] })).collect();
        Mask { layers }
    }

    /// Fraction of prunable weights remaining (Pm, as a fraction).
    pub fn remaining(&self) -> f64 {
        let kept: usize = self.layers.values().map(LayerMask::remaining).sum();
        let total: usize = self.layers.values().map(|l| l.keep.len()).sum();
        kept as f64 / total as f64
    }

    /// True if every weight kept here is kept in `other` too (masks only shrink).
    pub fn is_subset_of(&self, other: &Mask) -> bool {
        self.layers.iter().all(|(name, layer)| other.layers.get(name).is_some_and(|o| layer.keep.iter().zip(&o.keep).all(|(&a, &b)| a <= b)))
    }

    /// Zeroes pruned parameters in place on their device.
    pub fn apply(&self, params: &Params, tensors: &MaskTensors) -> Result<()> {
        for name in self.layers.keys() {
            if let (Some(var), Some(m)) = (params.get(name), tensors.get(name)) {
                var.set(&var.as_tensor().mul(m)?)?;
            }
        }
        Ok(())
    }

    /// The mask as f32 tensors on `dev`, shaped like their parameters.
    pub fn to_tensors(&self, dev: &Device) -> Result<MaskTensors> {
        self.layers.iter().map(|(name, l)| Ok((name.clone(), Tensor::from_slice(&l.keep, l.shape.as_slice(), dev)?))).collect()
    }

    /// Checks the invariants against an architecture.
    pub fn validate(&self, arch: &Architecture) -> std::result::Result<(), String> {
        let names: Vec<&String> = arch.prunable().map(|p| &p.name).collect();
        let keys: Vec<&String> = self.layers.keys().collect();
        if names != keys {
            return Err(format!("mask layers {keys:?} differ from the prunable parameters {names:?}"));
        }
        for p in arch.prunable() {
            let layer = &self.layers[&p.name];
            if layer.shape != p.shape || layer.keep.len() != p.numel() {
                return Err(format!("mask `{}` has shape {:?}, parameter has {:?}", p.name, layer.shape, p.shape));
            }
            if layer.keep.iter().any(|&k| k != 0.0 && k != 1.0) {
                return Err(format!("mask `{}` holds values other than 0 and 1", p.name));
            }
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: BTreeMap<String, Tensor> = self
            .layers
            .iter()
            .map(|(name, l)| {
                let bytes: Vec<u8> = l.keep.iter().map(|&k| k as u8).collect();
                Ok((name.clone(), Tensor::from_vec(bytes, l.shape.as_slice(), &Device::Cpu)?))
            })
            .collect::<Result<_>>()?;
        crate::base::files::save_tensors(&tensors, path)
    }

    /// Reads a mask file, checking its invariants against `arch`. Run folders read through
    /// `RunDir::load_mask`, which checks the file against its level's marker first.
    pub fn load(path: &Path, arch: &Architecture) -> Result<Self> {
        Self::from_safetensors(&std::fs::read(path).at(path)?, path, arch)
    }

    /// Parses the bytes of a mask file (`path` names it in errors).
    pub fn from_safetensors(bytes: &[u8], path: &Path, arch: &Architecture) -> Result<Self> {
        let damaged = |reason: String| crate::base::files::damaged_tensors(path, reason);
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| damaged(e.to_string()))?;
        let layers = tensors
            .into_iter()
            .map(|(name, t)| {
                let shape = t.dims().to_vec();
                let keep = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Ok((name, LayerMask { shape, keep }))
            })
            .collect::<Result<_>>()?;
        let mask = Mask { layers };
        mask.validate(arch).map_err(damaged)?;
        Ok(mask)
    }
}

/// A mask's layers as tensors on the training device.
pub type MaskTensors = BTreeMap<String, Tensor>;

impl Compact {
    /// Picks the fully connected weights (rank 2) of `mask` that keep fewer than
    /// [`SPARSE_BELOW`] of their weights; none unless `fast` (the CPU kernels run,
    /// `ops::device::fast_kernels`).
    pub fn choose(mask: &Mask, fast: bool) -> Self {
        let patterns = mask
            .layers
            .iter()
            .filter(|(_, l)| fast && l.shape.len() == 2 && (l.remaining() as f64) < SPARSE_BELOW * l.keep.len() as f64)
            .map(|(name, l)| (name.clone(), Arc::new(Pattern::of(&l.keep, l.shape.get(1).copied().unwrap_or(1)))))
            .collect();
        Compact::of(patterns)
    }
}
