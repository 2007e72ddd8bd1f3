//! A 3x3 convolution with its bias, then ReLU, then optionally a 2x2 max-pool, as one CPU op
//! (the layers of Conv-2/4/6).
//!
//! Composed as three ops under candle's autograd, every step of the backward allocated, zeroed
//! and passed over whole activation maps several times: candle's `GradStore` starts each
//! gradient from a tensor of zeros and adds to it, and ReLU's backward builds a comparison
//! mask, converts it and multiplies. At batch 60 a 64-channel 32x32 map is 15.7 MB, and that
//! traffic took about a fifth of a Conv-2 step, on one thread. Here ReLU and pooling run per
//! image, on every thread the convolution uses.
//!
//! The results are the same bits as the composition (a test compares them): ReLU is
//! candle's `v.max(0)`, the pool sends a window's gradient to its first maximum, and the
//! backward repeats candle's arithmetic on the gradient exactly, additions of +0 included
//! (`0 + g` turns a -0 into +0): the gradient reaching the convolution is
//! `0 + (0 + g_pool) · [pre-activation >= 0]`.

use super::applied::Applied;
use super::device::fast_kernels;
use super::host::{f32_slice, per_image};
use super::im2col::{conv3x3, Conv, Dims, Geometry};
use super::pool::max_pool2x2;
use crate::base::error::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use std::sync::Mutex;

/// `relu(conv3x3(xs, w) + b)`, then 2x2 max-pooled if `pool`: `(n, c, h, w)` →
/// `(n, o, h, w)`, or `(n, o, h/2, w/2)` when pooled.
pub fn conv3x3_relu(xs: &Tensor, w: &Tensor, b: &Tensor, pool: bool) -> Result<Tensor> {
    if !fast_kernels(xs.device()) {
        let ys = conv3x3(xs, w, b)?.relu()?;
        return if pool { max_pool2x2(&ys) } else { Ok(ys) };
    }
    Ok(conv3x3_relu_applied(xs, w, b, pool)?.out)
}

/// [`conv3x3_relu`] on the CPU, with the op kept for a backward by hand.
pub fn conv3x3_relu_applied(xs: &Tensor, w: &Tensor, b: &Tensor, pool: bool) -> Result<Applied> {
    let (_, _, h, width) = xs.dims4()?;
    if pool && (h % 2 != 0 || width % 2 != 0) {
        return Err(crate::base::error::Error::Invalid(format!("max-pool 2x2: maps of {h}x{width} are not even")));
    }
    let op = ConvRelu { conv: Conv { geometry: Geometry::of(w, 1)? }, pool, pre_activations: Mutex::new(None) };
    Applied::new([xs.contiguous()?, w.contiguous()?, b.contiguous()?], op)
}

struct ConvRelu {
    conv: Conv,
    pool: bool,
    /// The convolution's output before ReLU, kept from the forward for the backward: ReLU's
    /// gradient tests it (`>= 0`, as candle does), and the pool's maxima are found again in it.
    pre_activations: Mutex<Option<Vec<f32>>>,
}

/// candle's ReLU on f32 (`UnaryOp::Relu`), written the same way.
#[inline(always)]
pub(super) fn relu(v: f32) -> f32 {
    v.max(0f32)
}

/// candle's ReLU gradient factor: 1 where the pre-activation is `>= 0` (0 included), else 0.
#[inline(always)]
pub(super) fn passes(pre_activation: f32) -> f32 {
    if pre_activation >= 0.0 {
        1.0
    } else {
        0.0
    }
}

/// The cells of the 2x2 window at output (y, x) of a map `width` wide, in row-major order.
#[inline(always)]
fn window(width: usize, y: usize, x: usize) -> [usize; 4] {
    let top = 2 * y * width + 2 * x;
    [top, top + 1, top + width, top + width + 1]
}

/// The first maximum of a window's values (the pool's rule: `max_pool2x2`).
#[inline(always)]
fn first_max(values: [f32; 4]) -> usize {
    let mut best = 0;
    for j in 1..4 {
        if values[j] > values[best] {
            best = j;
        }
    }
    best
}

impl ConvRelu {
    /// Sides of the op's output maps.
    fn out_side(&self, d: Dims) -> (usize, usize) {
        if self.pool {
            (d.ho / 2, d.wo / 2)
        } else {
            (d.ho, d.wo)
        }
    }
}

impl CustomOp3 for ConvRelu {
    fn name(&self) -> &'static str {
        "conv-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout, b: &CpuStorage, b_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::new(xs_l.shape().dims4()?, w_l.shape().dims()[0], self.conv.geometry);
        let pre = self.conv.forward(f32_slice(xs, xs_l, self.name())?, f32_slice(w, w_l, self.name())?, Some(f32_slice(b, b_l, self.name())?), d);
        let (ho, wo) = self.out_side(d);
        let (map, out_map) = (d.ho * d.wo, ho * wo);
        let ys = per_image(d.n, d.o * out_map, |image, out| {
            let pre = &pre[image * d.o * map..(image + 1) * d.o * map];
            if !self.pool {
                out.iter_mut().zip(pre).for_each(|(y, &x)| {
                    y.write(relu(x));
                });
                return;
            }
            for (pre, out) in pre.chunks_exact(map).zip(out.chunks_exact_mut(out_map)) {
                for y in 0..ho {
                    for x in 0..wo {
                        let values = window(d.wo, y, x).map(|i| relu(pre[i]));
                        out[y * wo + x].write(values[first_max(values)]);
                    }
                }
            }
        });
        *self.pre_activations.lock().map_err(|_| candle_core::Error::Msg("conv-relu: a thread panicked".into()))? = Some(pre);
        Ok((CpuStorage::F32(ys), Shape::from((d.n, d.o, ho, wo))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _b: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::new(xs.dims4()?, w.dim(0)?, self.conv.geometry);
        let saved = self.pre_activations.lock().map_err(|_| candle_core::Error::Msg("conv-relu: a thread panicked".into()))?;
        let Some(pre) = saved.as_ref() else { candle_core::bail!("conv-relu: backward without a forward") };
        let grad = grad.contiguous()?;
        let xs_tracked = xs.track_op();
        let (ho, wo) = self.out_side(d);
        let (map, out_map) = (d.ho * d.wo, ho * wo);
        let (grad_xs, grad_w, grad_b) = super::host::with_f32(&grad, self.name(), |grad| {
            // The gradient at the convolution's output, per image.
            let grad_pre = per_image(d.n, d.o * map, |image, grad_pre| {
                let grad = &grad[image * d.o * out_map..(image + 1) * d.o * out_map];
                let pre = &pre[image * d.o * map..(image + 1) * d.o * map];
                for ((g, pre), grad_pre) in grad.chunks_exact(out_map).zip(pre.chunks_exact(map)).zip(grad_pre.chunks_exact_mut(map)) {
                    if !self.pool {
                        for ((out, &x), &up) in grad_pre.iter_mut().zip(pre).zip(g) {
                            out.write(0.0 + up * passes(x));
                        }
                        continue;
                    }
                    for y in 0..ho {
                        for x in 0..wo {
                            let cells = window(d.wo, y, x);
                            let best = first_max(cells.map(|i| relu(pre[i])));
                            for (j, &i) in cells.iter().enumerate() {
                                // The pool's gradient, which candle's GradStore adds to zeros.
                                let upstream = if j == best { g[y * wo + x] } else { 0.0 } + 0.0;
                                grad_pre[i].write(0.0 + upstream * passes(pre[i]));
                            }
                        }
                    }
                }
            });
            with_slices(xs, w, |xs, w| self.conv.gradients(xs, w, &grad_pre, d, xs_tracked))
        })??;
        let (grad_xs, grad_w, grad_b) = self.conv.gradient_tensors(grad_xs, grad_w, grad_b, d, xs.device())?;
        Ok((grad_xs, Some(grad_w), Some(grad_b)))
    }
}

/// Calls `f` on the values of two contiguous f32 CPU tensors.
fn with_slices<R>(a: &Tensor, b: &Tensor, f: impl FnOnce(&[f32], &[f32]) -> R) -> candle_core::Result<R> {
    super::host::with_f32(a, "conv-relu", |a| super::host::with_f32(b, "conv-relu", |b| f(a, b)))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pool::max_pool2x2;
    use candle_core::{Device, Var};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Forward values and every gradient of the fused op are the bits of conv3x3 → candle's
    /// relu → max_pool2x2 under candle's autograd, ties and exact zeros included.
    #[test]
    fn the_fused_op_gives_the_bits_of_the_three_ops() {
        let dev = Device::Cpu;
        let (n, c, o, side) = (10, 3, 5, 6);
        let wave = |len: usize, seed: usize| (0..len).map(|i| (((i * 7919 + seed * 104_729) % 211) as f32 - 105.0) / 53.0).collect::<Vec<f32>>();
        let mut images = wave(n * c * side * side, 1);
        // Repeated pixels make tied maxima in the pools.
        images[..side].fill(0.75);
        let mut weights = wave(o * c * 9, 2);
        // A channel with zero weights and bias: its pre-activations are exactly 0, where
        // candle's ReLU gradient still passes (`>= 0`).
        weights[..c * 9].fill(0.0);
        let mut bias = wave(o, 3);
        bias[0] = 0.0;
        for pool in [false, true] {
            let xs = Var::from_vec(images.clone(), (n, c, side, side), &dev).unwrap();
            let w = Var::from_vec(weights.clone(), (o, c, 3, 3), &dev).unwrap();
            let b = Var::from_vec(bias.clone(), o, &dev).unwrap();
            let out_side = if pool { side / 2 } else { side };
            let upstream = Tensor::from_vec(wave(n * o * out_side * out_side, 4), (n, o, out_side, out_side), &dev).unwrap();
            let fused = conv3x3_relu(xs.as_tensor(), w.as_tensor(), b.as_tensor(), pool).unwrap();
            let mut composed = conv3x3(xs.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap().relu().unwrap();
            if pool {
                composed = max_pool2x2(&composed).unwrap();
            }
            assert_eq!(bits(&fused), bits(&composed), "forward, pool={pool}");
            let grads = |ys: &Tensor| (ys * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let (g_fused, g_composed) = (grads(&fused), grads(&composed));
            for (name, v) in [("input", &xs), ("weight", &w), ("bias", &b)] {
                let (x, y) = (g_fused.get(v.as_tensor()).unwrap(), g_composed.get(v.as_tensor()).unwrap());
                assert_eq!(bits(x), bits(y), "{name} gradient, pool={pool}");
            }
        }
    }
}
