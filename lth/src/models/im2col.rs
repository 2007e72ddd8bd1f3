//! 3x3, stride-1, padding-1 convolution as im2col + matrix product, with a hand-written
//! backward, one image at a time. candle's own CPU conv2d backward computes the input gradient
//! with `conv_transpose2d`, a direct loop that dominated a Conv-2 training step.
//!
//! Each image's columns are built as a (c·9, h·w) matrix, in which row (channel, ky, kx) is the
//! image shifted by (ky − 1, kx − 1): contiguous copies, and a product `W · columns` that comes
//! out in the (o, h·w) layout of the output, with no transpose. The matrix is 2.4 MB for a
//! 64-channel 32×32 image, so it stays in cache between being built and being multiplied, where
//! a whole batch's (141 MB at batch 60) would stream through memory several times per step.
//! The backward rebuilds it per image: the weight gradient accumulates `grad · columnsᵀ`, the
//! input gradient is `Wᵀ · grad` scattered back onto the pixels (`col2im`). Products go to the
//! GEMM that candle itself uses (`host::product`). Gradients are checked against candle's
//! conv2d in tests. On other devices (CUDA) candle's conv2d is used as is.

use super::host::{f32_slice, product, with_f32, Matrix};
use crate::error::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `xs` (n, c, h, w) convolved with `w` (o, c, 3, 3) plus bias `b` (o): (n, o, h, w).
pub fn conv3x3(xs: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() {
        return Ok(xs.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Conv3x3)?);
    }
    let o = w.dim(0)?;
    Ok(xs.conv2d(w, 1, 1, 1, 1)?.broadcast_add(&b.reshape((1, o, 1, 1))?)?)
}

/// Images per unit of work: threads take whole groups.
const GROUP: usize = 8;

/// Whether candle may use more than one thread (`RAYON_NUM_THREADS`).
fn parallel() -> bool {
    candle_core::utils::get_num_threads() > 1
}

/// The convolution with its bias, as one op for autograd (candle's gradient of a broadcast
/// bias is a strided reduction that cost as much as a convolution's backward).
struct Conv3x3;

impl CustomOp3 for Conv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout, b: &CpuStorage, b_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, wd) = xs_l.shape().dims4()?;
        let o = w_l.shape().dims()[0];
        let (xs, w, b) = (f32_slice(xs, xs_l, "conv3x3")?, f32_slice(w, w_l, "conv3x3")?, f32_slice(b, b_l, "conv3x3")?);
        let (hw, k) = (h * wd, c * 9);
        let mut ys = vec![0f32; n * o * hw];
        let group = |(images, outs): (&[f32], &mut [f32])| {
            let mut cols = vec![0f32; k * hw];
            for (image, out) in images.chunks_exact(c * hw).zip(outs.chunks_exact_mut(o * hw)) {
                im2col(image, c, h, wd, &mut cols);
                for (plane, &bias) in out.chunks_exact_mut(hw).zip(b) {
                    plane.fill(bias);
                }
                // out (o, hw) = bias + w (o, k) · cols (k, hw)
                product(out, Matrix::rows(w, k), Matrix::rows(&cols, hw), o, hw, k, true);
            }
        };
        let (xs_groups, ys_groups) = (xs.par_chunks(GROUP * c * hw), ys.par_chunks_mut(GROUP * o * hw));
        if parallel() {
            xs_groups.zip(ys_groups).for_each(group);
        } else {
            xs.chunks(GROUP * c * hw).zip(ys.chunks_mut(GROUP * o * hw)).for_each(group);
        }
        Ok((CpuStorage::F32(ys), Shape::from((n, o, h, wd))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _b: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, wd) = xs.dims4()?;
        let o = w.dim(0)?;
        let (hw, k) = (h * wd, c * 9);
        let grad = grad.contiguous()?;
        let mut grad_xs = vec![0f32; n * c * hw];
        // Each group of images sums its own weight and bias gradients, in image order; the
        // groups' sums are then added in group order, so the result does not depend on the
        // number of threads.
        let group = |((images, grads), grad_images): ((&[f32], &[f32]), &mut [f32]), w: &[f32]| {
            let (mut grad_w, mut grad_b) = (vec![0f32; o * k], vec![0f32; o]);
            let (mut cols, mut grad_cols) = (vec![0f32; k * hw], vec![0f32; k * hw]);
            let per_image = images.chunks_exact(c * hw).zip(grads.chunks_exact(o * hw)).zip(grad_images.chunks_exact_mut(c * hw));
            for (i, ((image, g), grad_image)) in per_image.enumerate() {
                for (sum, plane) in grad_b.iter_mut().zip(g.chunks_exact(hw)) {
                    *sum += plane.iter().sum::<f32>();
                }
                im2col(image, c, h, wd, &mut cols);
                // grad_w (o, k) += g (o, hw) · colsᵀ (hw, k)
                product(&mut grad_w, Matrix::rows(g, hw), Matrix::cols(&cols, hw), o, k, hw, i > 0);
                // grad_cols (k, hw) = wᵀ (k, o) · g (o, hw)
                product(&mut grad_cols, Matrix::cols(w, k), Matrix::rows(g, hw), k, hw, o, false);
                col2im(&grad_cols, c, h, wd, grad_image);
            }
            (grad_w, grad_b)
        };
        let partials: Vec<(Vec<f32>, Vec<f32>)> = with_f32(xs, "conv3x3", |xs| {
            with_f32(w, "conv3x3", |w| {
                with_f32(&grad, "conv3x3", |grad| {
                    let (xs_g, grad_g, grad_xs_g) = (GROUP * c * hw, GROUP * o * hw, GROUP * c * hw);
                    if parallel() {
                        xs.par_chunks(xs_g).zip(grad.par_chunks(grad_g)).zip(grad_xs.par_chunks_mut(grad_xs_g)).map(|g| group(g, w)).collect()
                    } else {
                        xs.chunks(xs_g).zip(grad.chunks(grad_g)).zip(grad_xs.chunks_mut(grad_xs_g)).map(|g| group(g, w)).collect()
                    }
                })
            })
        })???;
        let (mut grad_w, mut grad_b) = (vec![0f32; o * k], vec![0f32; o]);
        for (partial_w, partial_b) in &partials {
            grad_w.iter_mut().zip(partial_w).for_each(|(s, v)| *s += v);
            grad_b.iter_mut().zip(partial_b).for_each(|(s, v)| *s += v);
        }
        let grad_xs = Tensor::from_vec(grad_xs, (n, c, h, wd), xs.device())?;
        let grad_w = Tensor::from_vec(grad_w, (o, c, 3, 3), xs.device())?;
        let grad_b = Tensor::from_vec(grad_b, o, xs.device())?;
        Ok((Some(grad_xs), Some(grad_w), Some(grad_b)))
    }
}

/// The (c·9, h·w) columns of one (c, h, w) image: row (ch, ky, kx) holds the image shifted by
/// (ky − 1, kx − 1), zero where the window leaves the image.
fn im2col(image: &[f32], c: usize, h: usize, w: usize, cols: &mut [f32]) {
    for_each_shift(c, h, w, |row, channel, sy, y, (dst, src, len)| {
        let out = &mut cols[row * h * w + y * w..row * h * w + (y + 1) * w];
        match sy {
            Some(sy) => {
                let line = &image[channel * h * w + sy * w..channel * h * w + (sy + 1) * w];
                out.fill(0.0);
                out[dst..dst + len].copy_from_slice(&line[src..src + len]);
            }
            None => out.fill(0.0),
        }
    });
}

/// The adjoint of [`im2col`]: adds every column entry back onto the pixel it came from.
fn col2im(cols: &[f32], c: usize, h: usize, w: usize, image: &mut [f32]) {
    for_each_shift(c, h, w, |row, channel, sy, y, (dst, src, len)| {
        if let Some(sy) = sy {
            let from = &cols[row * h * w + y * w + dst..row * h * w + y * w + dst + len];
            let line = &mut image[channel * h * w + sy * w + src..channel * h * w + sy * w + src + len];
            for (p, &v) in line.iter_mut().zip(from) {
                *p += v;
            }
        }
    });
}

/// Calls `f(row, channel, source line, output line, (dst, src, len))` for every output line
/// `y` of every columns row (channel, ky, kx): the line reads source line `y + ky − 1` (None
/// outside the image), and its columns `dst..dst + len` are the source's `src..src + len`.
#[inline(always)]
fn for_each_shift(c: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize, Option<usize>, usize, (usize, usize, usize))) {
    for channel in 0..c {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = channel * 9 + ky * 3 + kx;
                // kx = 0 reads one pixel to the left: output x ← source x − 1.
                let span = match kx {
                    0 => (1, 0, w - 1),
                    1 => (0, 0, w),
                    _ => (0, 1, w - 1),
                };
                for y in 0..h {
                    let sy = (y + ky).checked_sub(1).filter(|&s| s < h);
                    f(row, channel, sy, y, span);
                }
            }
        }
    }
}
