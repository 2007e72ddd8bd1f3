//! Batch normalisation over the channels of `(n, c, h, w)` maps (VGG-19, ResNet-18), as
//! PyTorch's `BatchNorm2d` computes it: in training, each channel is normalised with the
//! batch's mean and biased variance, and the running statistics move towards the batch's
//! (momentum 0.1, running variance unbiased); in evaluation the running statistics are used.
//! `eps` = 1e-5.
//!
//! The scale and shift are trained parameters (`<name>.scale`, `<name>.shift`), never pruned.
//! The running statistics (`<name>.running_mean`, `<name>.running_var`) live in the parameter
//! store too, so they are saved, reset to theta0 and redrawn by reinit together with the
//! weights; nothing ever computes a gradient for them, so the optimizer (which skips
//! parameters without one) never touches them.
//!
//! On the CPU, training runs as one custom op with a hand-written backward: every sum is over
//! one channel, in image order, each map in [`fixed_sum`]'s fixed lanes, so results do not
//! depend on the thread count (threads take whole channels or whole images). On other devices
//! (CUDA), and on the CPU's generic path (`device`), the same formulas run as candle ops, the
//! running statistics included, so nothing is read back to the host in a step; the tests also
//! use them as the reference.

use super::device::to_host;
use super::host::{f32_slice, per_image, with_f32};
use super::pool::fixed_sum;
use crate::base::error::{Error, Result};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// PyTorch's defaults, which the reference implementations keep.
pub const MOMENTUM: f32 = 0.1;
pub const EPS: f64 = 1e-5;

/// The factor `m / (m − 1)` that makes the variance of `m` values unbiased, in f32.
pub fn unbias(m: usize) -> f32 {
    m as f32 / (m.max(2) - 1) as f32
}

/// Training-mode normalisation as candle ops (the tests' reference). Returns the output and
/// the batch's per-channel mean and biased variance, read back to the host.
pub fn train_candle(xs: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let (ys, mean, var) = train_candle_stats(xs, scale, shift)?;
    Ok((ys, to_host(&mean)?, to_host(&var)?))
}

/// [`train_candle`] with the statistics left on the device, as tensors `(c)`: what the
/// generic path (any device) runs.
pub fn train_candle_stats(xs: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let c = xs.dim(1)?;
    let per_channel = xs.transpose(0, 1)?.flatten_from(1)?;
    let mean = per_channel.mean_keepdim(1)?;
    let centred = per_channel.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let normalised = centred.broadcast_div(&(var.clone() + EPS)?.sqrt()?)?;
    let ys = normalised.broadcast_mul(&scale.reshape((c, 1))?)?.broadcast_add(&shift.reshape((c, 1))?)?;
    let shape = xs.transpose(0, 1)?.dims().to_vec();
    let ys = ys.reshape(shape)?.transpose(0, 1)?.contiguous()?;
    Ok((ys, mean.flatten_all()?, var.flatten_all()?))
}

/// Training-mode normalisation on the CPU, as one op with a hand-written backward.
pub fn train_cpu(xs: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let stats = Arc::new(Mutex::new(None));
    let ys = xs.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, TrainNorm { stats: stats.clone() })?;
    let (mean, var) = take_stats(&stats)?;
    Ok((ys, mean, var))
}

/// Where a training op's forward leaves the batch's per-channel mean and biased variance.
pub(super) type Stats = Arc<Mutex<Option<(Vec<f32>, Vec<f32>)>>>;

/// The statistics an op's forward left in `stats`, taken out.
pub(super) fn take_stats(stats: &Stats) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut stats = stats.lock().map_err(|_| Error::Invalid("batch norm: statistics lock poisoned".into()))?;
    stats.take().ok_or_else(|| Error::Invalid("batch norm: no statistics".into()))
}

/// `y = x · a + b` per channel of `xs`, as one op (evaluation: no gradient).
pub fn channel_affine(xs: &Tensor, a: Vec<f32>, b: Vec<f32>) -> Result<Tensor> {
    Ok(xs.contiguous()?.apply_op1_no_bwd(&ChannelAffine { a, b })?)
}

/// The training-mode op; the batch statistics of its forward come out through `stats`.
struct TrainNorm {
    stats: Stats,
}

/// Per channel: the mean and `1 / sqrt(var + eps)` of the batch, and the biased variance.
pub(super) struct Moments {
    pub(super) mean: Vec<f32>,
    pub(super) inv_std: Vec<f32>,
    pub(super) var: Vec<f32>,
}

/// The maps of channel `ch` of every image, in image order.
fn channel_maps(xs: &[f32], c: usize, hw: usize, ch: usize) -> impl Iterator<Item = &[f32]> {
    xs.chunks_exact(c * hw).map(move |image| &image[ch * hw..(ch + 1) * hw])
}

/// Two passes per channel (the mean, then the squared deviations from it), threads over
/// channels.
pub(super) fn moments(xs: &[f32], c: usize, hw: usize) -> Moments {
    let m = (xs.len() / c) as f64;
    let per_channel: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mean = channel_maps(xs, c, hw, ch).map(fixed_sum).sum::<f64>() / m;
            let mean32 = mean as f32;
            let mut deviations = vec![0f32; hw];
            let sq = channel_maps(xs, c, hw, ch)
                .map(|map| {
                    deviations.iter_mut().zip(map).for_each(|(d, &x)| *d = (x - mean32) * (x - mean32));
                    fixed_sum(&deviations)
                })
                .sum::<f64>();
            (mean32, (sq / m) as f32)
        })
        .collect();
    let mean = per_channel.iter().map(|p| p.0).collect();
    let var: Vec<f32> = per_channel.iter().map(|p| p.1).collect();
    let inv_std = var.iter().map(|&v| (1.0 / (v as f64 + EPS).sqrt()) as f32).collect();
    Moments { mean, inv_std, var }
}

/// The normalisation as `y = x · a + b` per channel:
/// `y = (x − mean) · inv_std · scale + shift`, with `a = inv_std · scale`, `b = shift − mean · a`.
pub(super) fn coefficients(moments: &Moments, scale: &[f32], shift: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = moments.inv_std.iter().zip(scale).map(|(&s, &g)| s * g).collect();
    let b: Vec<f32> = shift.iter().zip(&moments.mean).zip(&a).map(|((&beta, &mean), &a)| beta - mean * a).collect();
    (a, b)
}

/// `out[i] = xs[i] · a[channel] + b[channel]` for `(n, c, hw)` data; threads over images.
fn affine(xs: &[f32], out: &mut [f32], c: usize, hw: usize, a: &[f32], b: &[f32]) {
    out.par_chunks_mut(c * hw).zip(xs.par_chunks(c * hw)).for_each(|(out, image)| {
        for (((out, map), &a), &b) in out.chunks_exact_mut(hw).zip(image.chunks_exact(hw)).zip(a).zip(b) {
            out.iter_mut().zip(map).for_each(|(y, &x)| *y = x * a + b);
        }
    });
}

impl CustomOp3 for TrainNorm {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_l: &Layout,
        scale: &CpuStorage,
        scale_l: &Layout,
        shift: &CpuStorage,
        shift_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xs_l.shape().dims4()?;
        let (xs, scale, shift) = (f32_slice(xs, xs_l, self.name())?, f32_slice(scale, scale_l, self.name())?, f32_slice(shift, shift_l, self.name())?);
        let moments = moments(xs, c, h * w);
        let (a, b) = coefficients(&moments, scale, shift);
        let mut ys = vec![0f32; xs.len()];
        affine(xs, &mut ys, c, h * w, &a, &b);
        if let Ok(mut stats) = self.stats.lock() {
            *stats = Some((moments.mean, moments.var));
        }
        Ok((CpuStorage::F32(ys), Shape::from((n, c, h, w))))
    }

    /// The moments are computed again from `xs` (the same bits as the forward's); see
    /// [`backward`] for the gradients.
    fn bwd(
        &self,
        xs: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        _ys: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = xs.dims4()?;
        let grad = grad.contiguous()?;
        let scale_host = to_host::<f32>(scale)?;
        let (grad_xs, grad_scale, grad_shift) =
            with_f32(xs, self.name(), |xs| with_f32(&grad, self.name(), |g| backward(xs, g, &scale_host, &moments(xs, c, h * w), c, h * w)))??;
        let dev = xs.device();
        Ok((Some(Tensor::from_vec(grad_xs, (n, c, h, w), dev)?), Some(Tensor::from_vec(grad_scale, c, dev)?), Some(Tensor::from_vec(grad_shift, c, dev)?)))
    }
}

/// The gradients `(dx, d scale, d shift)` of a training-mode normalisation of `xs` (`(n, c, hw)`
/// values, batch statistics `moments`) for the gradient `g` at its output. With
/// `x̂ = (x − mean) · inv_std` and `m` values per channel: `d shift = Σ g`, `d scale = Σ g · x̂`,
/// and `dx = scale · inv_std · (g − d shift / m − x̂ · d scale / m)`. The sums run per channel,
/// in image order, each map in [`fixed_sum`]'s lanes (threads over channels); `dx` threads over
/// images.
pub(super) fn backward(xs: &[f32], g: &[f32], scale: &[f32], moments: &Moments, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (xs.len() / c) as f64;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mean = moments.mean[ch];
            let mut products = vec![0f32; hw];
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            for (map, gmap) in channel_maps(xs, c, hw, ch).zip(channel_maps(g, c, hw, ch)) {
                sum_g += fixed_sum(gmap);
                products.iter_mut().zip(map).zip(gmap).for_each(|((p, &x), &g)| *p = g * (x - mean));
                sum_gx += fixed_sum(&products);
            }
            (sum_g, sum_gx * moments.inv_std[ch] as f64)
        })
        .collect();
    // dx = k · g + a · x + b per channel, with k = scale · inv_std,
    // a = −k · inv_std · d scale / m, b = −k · (d shift / m) − a · mean.
    let mut k = vec![0f32; c];
    let mut a = vec![0f32; c];
    let mut b = vec![0f32; c];
    for ch in 0..c {
        let kk = scale[ch] as f64 * moments.inv_std[ch] as f64;
        let (d_shift, d_scale) = sums[ch];
        let aa = -kk * moments.inv_std[ch] as f64 * d_scale / m;
        k[ch] = kk as f32;
        a[ch] = aa as f32;
        b[ch] = (-kk * d_shift / m - aa * moments.mean[ch] as f64) as f32;
    }
    let grad_xs = per_image(xs.len() / (c * hw), c * hw, |i, out| {
        let (image, gimage) = (&xs[i * c * hw..(i + 1) * c * hw], &g[i * c * hw..(i + 1) * c * hw]);
        let maps = out.chunks_exact_mut(hw).zip(image.chunks_exact(hw)).zip(gimage.chunks_exact(hw));
        for (ch, ((out, map), gmap)) in maps.enumerate() {
            let (k, a, b) = (k[ch], a[ch], b[ch]);
            out.iter_mut().zip(map).zip(gmap).for_each(|((d, &x), &g)| {
                d.write(k * g + a * x + b);
            });
        }
    });
    let grad_scale: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let grad_shift: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    (grad_xs, grad_scale, grad_shift)
}

/// Evaluation: a fixed affine map per channel (no gradient).
struct ChannelAffine {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "batch-norm-eval"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let xs = f32_slice(storage, layout, self.name())?;
        let mut ys = vec![0f32; xs.len()];
        affine(xs, &mut ys, c, h * w, &self.a, &self.b);
        Ok((CpuStorage::F32(ys), Shape::from((n, c, h, w))))
    }
}
