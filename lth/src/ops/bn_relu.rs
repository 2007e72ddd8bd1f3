//! Batch normalisation in training mode, then ReLU, as one CPU op: `relu(bn(x))` (VGG-19, and
//! ResNet-18's stem and first convolution of each block), or with a residual added before the
//! ReLU, `relu(bn(x) + shortcut)` (the end of each ResNet-18 block).
//!
//! Composed as candle ops (`TrainNorm`, then candle's `relu`, and `+`), every step of the
//! backward allocates and passes over whole activation maps: candle's `GradStore` starts each
//! gradient from a tensor of zeros and adds to it, and ReLU's backward builds a comparison mask,
//! converts it to f32 and multiplies; the forward keeps the normalised maps alive besides the
//! ReLU's output. Here the forward writes `relu(x · a + b [+ shortcut])` in one pass, and the
//! backward computes the ReLU's gradient once, per image, then runs the normalisation's
//! backward (`batchnorm::backward`, the same sums in the same order) on it. The batch
//! statistics are kept from the forward instead of being computed again.
//!
//! The results are the same bits as the composition (tests in `nn::resnet` and `nn::vgg`
//! compare whole training steps): the pre-activation is `x · a + b` (then `+ shortcut`) in f32,
//! as the composed ops round it; ReLU is candle's `v.max(0)`; and the backward repeats
//! candle's arithmetic on the gradient exactly, additions of +0 included (`0 + g` turns a -0
//! into +0): the gradient at the pre-activation is `0 + g · [pre-activation >= 0]`, which
//! candle hands on unchanged to both inputs of the addition (a second `0 +` changes no bit of
//! a value that has no -0). The shortcut's gradient is that one; candle adds it to whatever
//! else reaches the shortcut, as it did for the addition's.
//!
//! Evaluation (running statistics) fuses likewise, with no backward: `relu(x · a + b [+ shortcut])`
//! for the fixed `a` and `b` of `BatchNorm`'s evaluation.
//!
//! candle's custom ops take at most three inputs, so the residual form takes the scale and
//! shift as one tensor (`cat`): its backward hands each half to them through `0 +`, which is
//! what they received from the composed ops' `TrainNorm` too.

use super::batchnorm::{backward, coefficients, moments, take_stats, Moments, Stats};
use super::conv_relu::{passes, relu};
use super::device::to_host;
use super::host::{f32_slice, per_image, with_f32};
use crate::base::error::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

/// `relu(bn(xs) + shortcut)`, or `relu(bn(xs))` without one, in training mode, on the CPU.
/// Returns the output and the batch's per-channel mean and biased variance (for the running
/// statistics), as `batchnorm::train_cpu` does.
pub fn train_relu_cpu(xs: &Tensor, scale: &Tensor, shift: &Tensor, shortcut: Option<&Tensor>) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let stats = Arc::new(Mutex::new(None));
    let op = BnRelu { residual: shortcut.is_some(), stats: stats.clone(), moments: Mutex::new(None) };
    let xs = xs.contiguous()?;
    let ys = match shortcut {
        Some(shortcut) => xs.apply_op3(&shortcut.contiguous()?, &Tensor::cat(&[scale, shift], 0)?, op)?,
        None => xs.apply_op3(&scale.contiguous()?, &shift.contiguous()?, op)?,
    };
    let (mean, var) = take_stats(&stats)?;
    Ok((ys, mean, var))
}

/// The op. Its inputs are `(xs, scale, shift)`, or `(xs, shortcut, [scale, shift])` when
/// `residual`.
struct BnRelu {
    residual: bool,
    /// The batch's mean and variance, handed out to the caller after the forward.
    stats: Stats,
    /// The forward's statistics, kept for the backward.
    moments: Mutex<Option<Moments>>,
}

/// `out[i] = f(pre[i], upstream[i])` over one image's `(c, hw)` values, where the
/// pre-activation is `x · a + b` per channel, plus the shortcut's value where there is one;
/// `shortcut` and `upstream` are empty where there are none (`f` then gets 0 for `upstream`).
/// The four cases are separate loops, so that each vectorises.
#[inline(always)]
fn map_pre_activations(
    out: &mut [MaybeUninit<f32>],
    image: &[f32],
    shortcut: &[f32],
    upstream: &[f32],
    hw: usize,
    (a, b): (&[f32], &[f32]),
    f: impl Fn(f32, f32) -> f32,
) {
    for (ch, (out, map)) in out.chunks_exact_mut(hw).zip(image.chunks_exact(hw)).enumerate() {
        let (a, b, maps) = (a[ch], b[ch], ch * hw..(ch + 1) * hw);
        match (shortcut.get(maps.clone()), upstream.get(maps)) {
            (None, None) => out.iter_mut().zip(map).for_each(|(y, &x)| {
                y.write(f(x * a + b, 0.0));
            }),
            (None, Some(g)) => out.iter_mut().zip(map).zip(g).for_each(|((y, &x), &g)| {
                y.write(f(x * a + b, g));
            }),
            (Some(s), None) => out.iter_mut().zip(map).zip(s).for_each(|((y, &x), &s)| {
                y.write(f((x * a + b) + s, 0.0));
            }),
            (Some(s), Some(g)) => out.iter_mut().zip(map).zip(s).zip(g).for_each(|(((y, &x), &s), &g)| {
                y.write(f((x * a + b) + s, g));
            }),
        }
    }
}

/// Image `i`'s values of `values`, `len` per image, or nothing where `values` is empty.
fn image_of(values: &[f32], i: usize, len: usize) -> &[f32] {
    values.get(i * len..(i + 1) * len).unwrap_or(&[])
}

impl BnRelu {
    fn lock(&self) -> candle_core::Result<std::sync::MutexGuard<'_, Option<Moments>>> {
        self.moments.lock().map_err(|_| candle_core::Error::Msg("batch norm + relu: a thread panicked".into()))
    }

    /// The scale and shift among the inputs: the second and third, or the halves of the third.
    fn affine<'a>(&self, second: &'a [f32], third: &'a [f32]) -> (&'a [f32], &'a [f32]) {
        if self.residual {
            third.split_at(third.len() / 2)
        } else {
            (second, third)
        }
    }
}

impl CustomOp3 for BnRelu {
    fn name(&self) -> &'static str {
        "batch-norm-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, s: &CpuStorage, s_l: &Layout, t: &CpuStorage, t_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xs_l.shape().dims4()?;
        if self.residual && s_l.shape() != xs_l.shape() {
            candle_core::bail!("batch-norm-relu: maps {:?} and shortcut {:?} differ", xs_l.shape(), s_l.shape());
        }
        let hw = h * w;
        let (xs, second, third) = (f32_slice(xs, xs_l, self.name())?, f32_slice(s, s_l, self.name())?, f32_slice(t, t_l, self.name())?);
        let (scale, shift) = self.affine(second, third);
        let shortcut = if self.residual { second } else { &[] };
        let moments = moments(xs, c, hw);
        let (a, b) = coefficients(&moments, scale, shift);
        let len = c * hw;
        let ys = per_image(n, len, |i, out| map_pre_activations(out, image_of(xs, i, len), image_of(shortcut, i, len), &[], hw, (&a, &b), |v, _| relu(v)));
        if let Ok(mut stats) = self.stats.lock() {
            *stats = Some((moments.mean.clone(), moments.var.clone()));
        }
        *self.lock()? = Some(moments);
        Ok((CpuStorage::F32(ys), Shape::from((n, c, h, w))))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        second: &Tensor,
        third: &Tensor,
        _ys: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = xs.dims4()?;
        let hw = h * w;
        let saved = self.lock()?;
        let Some(moments) = saved.as_ref() else { candle_core::bail!("batch norm + relu: backward without a forward") };
        let grad = grad.contiguous()?;
        let third_host = to_host::<f32>(third)?;
        // `second` is read in place: with a shortcut it is a whole activation map.
        let (grad_pre, (grad_xs, grad_scale, grad_shift)) = with_f32(second, self.name(), |second| {
            let (scale, shift) = self.affine(second, &third_host);
            let shortcut = if self.residual { second } else { &[] };
            let (a, b) = coefficients(moments, scale, shift);
            with_f32(xs, self.name(), |xs| {
                with_f32(&grad, self.name(), |g| {
                    // The gradient at the pre-activation, as candle's ReLU backward adds it to zeros.
                    let len = c * hw;
                    let grad_pre = per_image(n, len, |i, out| {
                        map_pre_activations(out, image_of(xs, i, len), image_of(shortcut, i, len), image_of(g, i, len), hw, (&a, &b), |v, g| {
                            0.0 + g * passes(v)
                        })
                    });
                    let grads = backward(xs, &grad_pre, scale, moments, c, hw);
                    (grad_pre, grads)
                })
            })
        })???;
        let dev = xs.device();
        let grad_xs = Some(Tensor::from_vec(grad_xs, (n, c, h, w), dev)?);
        if self.residual {
            let affine = [grad_scale, grad_shift].concat();
            let len = affine.len();
            return Ok((grad_xs, Some(Tensor::from_vec(grad_pre, (n, c, h, w), dev)?), Some(Tensor::from_vec(affine, len, dev)?)));
        }
        Ok((grad_xs, Some(Tensor::from_vec(grad_scale, c, dev)?), Some(Tensor::from_vec(grad_shift, c, dev)?)))
    }
}

/// `relu(xs · a + b + shortcut)` per channel of `xs`, or `relu(xs · a + b)` without a shortcut,
/// as one op (evaluation: no gradient).
pub fn eval_relu(xs: &Tensor, a: Vec<f32>, b: Vec<f32>, shortcut: Option<&Tensor>) -> Result<Tensor> {
    let (xs, op) = (xs.contiguous()?, AffineRelu { a, b });
    Ok(match shortcut {
        Some(shortcut) => xs.apply_op2_no_bwd(&shortcut.contiguous()?, &op)?,
        None => xs.apply_op1_no_bwd(&op)?,
    })
}

/// Evaluation's fixed affine map per channel, the shortcut and ReLU.
struct AffineRelu {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl AffineRelu {
    fn forward(&self, xs: &[f32], shortcut: &[f32], shape: &Shape) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = shape.dims4()?;
        let len = c * h * w;
        let ys = per_image(n, len, |i, out| {
            map_pre_activations(out, image_of(xs, i, len), image_of(shortcut, i, len), &[], h * w, (&self.a, &self.b), |v, _| relu(v))
        });
        Ok((CpuStorage::F32(ys), shape.clone()))
    }
}

impl CustomOp1 for AffineRelu {
    fn name(&self) -> &'static str {
        "batch-norm-eval-relu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(f32_slice(storage, layout, CustomOp1::name(self))?, &[], layout.shape())
    }
}

impl CustomOp2 for AffineRelu {
    fn name(&self) -> &'static str {
        "batch-norm-eval-add-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, s: &CpuStorage, s_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if xs_l.shape() != s_l.shape() {
            candle_core::bail!("batch-norm-eval-add-relu: maps {:?} and shortcut {:?} differ", xs_l.shape(), s_l.shape());
        }
        self.forward(f32_slice(xs, xs_l, CustomOp2::name(self))?, f32_slice(s, s_l, CustomOp2::name(self))?, xs_l.shape())
    }
}
