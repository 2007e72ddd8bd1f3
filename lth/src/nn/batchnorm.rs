//! The BatchNorm layer (VGG-19, ResNet-18) over four parameters of the store: the trained scale
//! and shift (`<name>.scale`, `<name>.shift`, never pruned) and the running statistics
//! (`<name>.running_mean`, `<name>.running_var`), which live in the store too, so they are
//! saved, reset to theta0 and redrawn by reinit with the weights. The arithmetic is
//! `ops::batchnorm`'s.

use super::params::{param, ParamInfo, Params, Weights};
use crate::base::error::{Error, Result};
use crate::ops::batchnorm::{channel_affine, train_candle_stats, train_cpu, unbias, EPS, MOMENTUM};
use crate::ops::bn_relu::{eval_relu, train_relu_cpu};
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

    /// `relu(self.forward(xs) + shortcut)`, or `relu(self.forward(xs))` without a shortcut. On
    /// the CPU's fast path with `fuse`, one op (`ops::bn_relu`), in training and in evaluation,
    /// with the same bits; otherwise (and in the tests' reference, `fuse` false) candle's `+`
    /// and `relu`.
    pub fn forward_relu(&self, xs: &Tensor, shortcut: Option<&Tensor>, mode: Mode, fuse: bool) -> Result<Tensor> {
        if fuse && fast_kernels(xs.device()) {
            if mode == Mode::Eval {
                let (a, b) = self.eval_coefficients()?;
                return eval_relu(xs, a, b, shortcut);
            }
            let (ys, mean, var) = train_relu_cpu(xs, &self.scale, &self.shift, shortcut)?;
            self.update_running(&mean, &var, xs.elem_count() / xs.dim(1)?)?;
            return Ok(ys);
        }
        let ys = self.forward(xs, mode)?;
        let ys = match shortcut {
            Some(shortcut) => (ys + shortcut)?,
            None => ys,
        };
        Ok(ys.relu()?)
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
            let (a, b) = self.eval_coefficients()?;
            return channel_affine(xs, a, b);
        }
        let c = self.scale.elem_count();
        let a = (self.scale.to_dtype(DType::F64)? / (var.to_dtype(DType::F64)? + EPS)?.sqrt()?)?.to_dtype(DType::F32)?;
        let b = (&self.shift - (mean * &a)?)?;
        Ok(xs.broadcast_mul(&a.reshape((1, c, 1, 1))?)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?)
    }

    /// [`BatchNorm::evaluate`]'s `a` and `b` on the host (the CPU's fast path).
    fn eval_coefficients(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (scale, shift) = (to_host::<f32>(&self.scale)?, to_host::<f32>(&self.shift)?);
        let (mean, var) = (to_host::<f32>(self.running_mean.as_tensor())?, to_host::<f32>(self.running_var.as_tensor())?);
        let a: Vec<f32> = scale.iter().zip(&var).map(|(&s, &v)| (s as f64 / (v as f64 + EPS).sqrt()) as f32).collect();
        let b: Vec<f32> = shift.iter().zip(&mean).zip(&a).map(|((&s, &m), &a)| s - m * a).collect();
        Ok((a, b))
    }
}

/// The check that fusing BatchNorm, the residual addition and ReLU (`BatchNorm::forward_relu`)
/// changes no bit of a training step, shared by the networks that fuse them.
#[cfg(test)]
pub(crate) mod fusion {
    use super::Mode;
    use crate::base::seeds::{stream, Purpose};
    use crate::base::spec::ModelKind;
    use crate::nn::{self, autograd_step, Architecture, Params};
    use candle_core::{Device, Tensor};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// One training step of `kind` from the same weights, with `logits(params, xs, mode, fuse)`
    /// fused and composed: the logits, the loss, every gradient and the running statistics
    /// after the step are the same bits, and so are the evaluation logits after it. In every normalisation, channel 0 never fires (its shift is
    /// -100), channel 1 fires for some values only, and channel 2 has scale 0, so that its
    /// pre-activations are exactly +0, where candle's ReLU gradient still passes (`>= 0`).
    pub(crate) fn assert_fusion_keeps_the_bits(kind: ModelKind, logits: impl Fn(&Params, &Tensor, Mode, bool) -> Tensor) {
        let (batch, dev) = (3, Device::Cpu);
        let arch = Architecture::of(kind);
        let mut weights = nn::initial_weights(&arch, &mut stream(7, Purpose::Init));
        for (name, values) in weights.iter_mut() {
            if name.ends_with(".shift") {
                values.iter_mut().enumerate().for_each(|(i, v)| *v = [-100.0, -0.5, 0.0].get(i).copied().unwrap_or(0.01 * (i % 5) as f32 - 0.02));
            } else if name.ends_with(".scale") {
                values[2] = 0.0;
            }
        }
        let xs: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
        let xs = Tensor::from_vec(xs, (batch, 3, 32, 32), &dev).unwrap();
        let labels = Tensor::new(&[3u32, 0, 9], &dev).unwrap();
        let (fused, composed) = (nn::to_params(&arch, &weights, &dev).unwrap(), nn::to_params(&arch, &weights, &dev).unwrap());
        let step = |params: &Params, fuse: bool| autograd_step(logits(params, &xs, Mode::Train, fuse), &labels).unwrap();
        let (a, b) = (step(&fused, true), step(&composed, false));
        assert_eq!(bits(&a.logits), bits(&b.logits), "{kind:?} logits");
        assert_eq!(bits(&a.loss), bits(&b.loss), "{kind:?} loss");
        let mut zeros = 0;
        for ((name, x), y) in fused.iter().zip(composed.values()) {
            let (gx, gy) = (a.grads.get(x.as_tensor()).map(bits), b.grads.get(y.as_tensor()).map(bits));
            assert_eq!(gx, gy, "{kind:?} {name} gradient");
            assert_eq!(bits(x.as_tensor()), bits(y.as_tensor()), "{kind:?} {name} after the step");
            zeros += gx.unwrap_or_default().iter().filter(|&&v| v == 0).count();
        }
        assert!(zeros > 0, "{kind:?}: dead channels give exact zeros in the gradients");
        // Evaluation, with the running statistics the step moved.
        let eval = |params: &Params, fuse: bool| bits(&logits(params, &xs, Mode::Eval, fuse));
        assert_eq!(eval(&fused, true), eval(&composed, false), "{kind:?} evaluation logits");
    }
}
