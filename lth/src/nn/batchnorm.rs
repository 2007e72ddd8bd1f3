//! The BatchNorm layer (VGG-19, ResNet-18) over four parameters of the store: the trained scale
//! and shift (`<name>.scale`, `<name>.shift`, never pruned) and the running statistics
//! (`<name>.running_mean`, `<name>.running_var`), which live in the store too, so they are
//! saved, reset to theta0 and redrawn by reinit with the weights. The arithmetic is
//! `ops::batchnorm`'s.

use super::params::{param, ParamInfo, Params, Weights};
use crate::base::error::{Error, Result};
use crate::ops::batchnorm::{channel_affine, train_candle_stats, train_cpu, unbias, EPS, MOMENTUM};
use crate::ops::device::{fast_kernels, to_host};
use candle_core::{DType, Tensor, Var};

/// Whether a network normalises with batch statistics (training) or running ones (evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// The four parameters of a normalisation of `channels` channels named `name`.
pub fn params(name: &str, channels: usize) -> Vec<ParamInfo> {
    ["scale", "shift", "running_mean", "running_var"]
        .iter()
        .map(|p| ParamInfo { name: format!("{name}.{p}"), shape: vec![channels], prunable: None, fan_in: channels, fan_out: channels })
        .collect()
}

/// Sets every scale and running variance of `weights` to 1 (the others start at 0, as
/// `init::glorot_normal` leaves every unprunable parameter): PyTorch's initial state.
pub fn set_initial_state(weights: &mut Weights) {
    for (name, values) in weights.iter_mut() {
        if name.ends_with(".scale") || name.ends_with(".running_var") {
            values.fill(1.0);
        }
    }
}

/// One batch normalisation layer over parameters of the store.
pub struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm {
    pub fn new(params: &Params, name: &str) -> Result<Self> {
        let var = |p: &str| params.get(&format!("{name}.{p}")).cloned().ok_or_else(|| Error::Invalid(format!("no parameter `{name}.{p}`")));
        Ok(BatchNorm {
            scale: param(params, &format!("{name}.scale"))?,
            shift: param(params, &format!("{name}.shift"))?,
            running_mean: var("running_mean")?,
            running_var: var("running_var")?,
        })
    }

    /// # Shapes
    /// `xs`: `(n, c, h, w)` → the same. Training also updates the running statistics.
    pub fn forward(&self, xs: &Tensor, mode: Mode) -> Result<Tensor> {
        let m = xs.elem_count() / xs.dim(1)?;
        match mode {
            Mode::Eval => self.evaluate(xs),
            Mode::Train if fast_kernels(xs.device()) => {
                let (ys, mean, var) = train_cpu(xs, &self.scale, &self.shift)?;
                self.update_running(&mean, &var, m)?;
                Ok(ys)
            }
            Mode::Train => {
                let (ys, mean, var) = train_candle_stats(xs, &self.scale, &self.shift)?;
                self.update_running_on_device(&mean, &var, m)?;
                Ok(ys)
            }
        }
    }

    /// `running = (1 - momentum) · running + momentum · batch`, the variance unbiased
    /// (`m / (m - 1)` over the `m` values of a channel), in f32 as PyTorch does.
    fn update_running(&self, mean: &[f32], var: &[f32], m: usize) -> Result<()> {
        let blend = |running: &Var, batch: &[f32], factor: f32| -> Result<()> {
            let old = to_host::<f32>(running.as_tensor())?;
            let new: Vec<f32> = old.iter().zip(batch).map(|(&r, &b)| (1.0 - MOMENTUM) * r + MOMENTUM * (b * factor)).collect();
            running.set(&Tensor::from_vec(new, old.len(), running.device())?)?;
            Ok(())
        };
        blend(&self.running_mean, mean, 1.0)?;
        blend(&self.running_var, var, unbias(m))
    }

    /// [`BatchNorm::update_running`] on the device, with no read back: the same f32
    /// operations, each as candle's `x · a + 0`.
    fn update_running_on_device(&self, mean: &Tensor, var: &Tensor, m: usize) -> Result<()> {
        let blend = |running: &Var, batch: &Tensor, factor: f32| -> Result<()> {
            let kept = (running.as_tensor() * (1.0 - MOMENTUM) as f64)?;
            let moved = ((batch * factor as f64)? * MOMENTUM as f64)?;
            running.set(&(kept + moved)?)?;
            Ok(())
        };
        blend(&self.running_mean, mean, 1.0)?;
        blend(&self.running_var, var, unbias(m))
    }

    /// `y = x · a + b` per channel, with `a = scale / sqrt(running_var + eps)` (in f64) and
    /// `b = shift − running_mean · a`; the generic path computes `a` and `b` on the device with
    /// the same operations, so both paths give the same bits.
    fn evaluate(&self, xs: &Tensor) -> Result<Tensor> {
        let (mean, var) = (self.running_mean.as_tensor(), self.running_var.as_tensor());
        if fast_kernels(xs.device()) {
            let (scale, shift) = (to_host::<f32>(&self.scale)?, to_host::<f32>(&self.shift)?);
            let (mean, var) = (to_host::<f32>(mean)?, to_host::<f32>(var)?);
            let a: Vec<f32> = scale.iter().zip(&var).map(|(&s, &v)| (s as f64 / (v as f64 + EPS).sqrt()) as f32).collect();
            let b: Vec<f32> = shift.iter().zip(&mean).zip(&a).map(|((&s, &m), &a)| s - m * a).collect();
            return channel_affine(xs, a, b);
        }
        let c = self.scale.elem_count();
        let a = (self.scale.to_dtype(DType::F64)? / (var.to_dtype(DType::F64)? + EPS)?.sqrt()?)?.to_dtype(DType::F32)?;
        let b = (&self.shift - (mean * &a)?)?;
        Ok(xs.broadcast_mul(&a.reshape((1, c, 1, 1))?)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?)
    }
}
