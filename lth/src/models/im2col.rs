//! 3x3, stride-1, padding-1 convolution as im2col + matrix product, with a hand-written
//! backward. candle's own CPU conv2d backward computes the input gradient with
//! `conv_transpose2d`, a direct loop that dominated a Conv-2 training step. Here the whole
//! convolution is one custom op, so candle's autograd never sees the large im2col matrix (it
//! would allocate a zeroed gradient for it and add into it). The backward rebuilds the matrix
//! and gets both gradients from matrix products: the weight gradient directly, the input
//! gradient through `col2im` (a scatter-add). Gradients are checked against candle's conv2d in
//! tests. On other devices (CUDA) candle's conv2d is used as is.

use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Shape, Tensor};

/// `xs` (n, c, h, w) convolved with `w` (o, c, 3, 3) plus bias `b` (o): (n, o, h, w).
pub fn conv3x3(xs: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let o = w.dim(0)?;
    let ys = if xs.device().is_cpu() { xs.contiguous()?.apply_op2(&w.contiguous()?, Conv3x3)? } else { xs.conv2d(w, 1, 1, 1, 1)? };
    Ok(ys.broadcast_add(&b.reshape((1, o, 1, 1))?)?)
}

/// The convolution without bias, as one op for autograd.
struct Conv3x3;

/// The im2col matrix of `xs` as a (n·h·w, c·9) tensor (no autograd).
fn columns(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    xs.apply_op1_no_bwd(&Im2Col)?.reshape((n * h * w, c * 9))
}

impl CustomOp2 for Conv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, wd) = xs_l.shape().dims4()?;
        let o = w_l.shape().dims()[0];
        let as_tensor = |s: &CpuStorage, l: &Layout| -> candle_core::Result<Tensor> {
            let (CpuStorage::F32(data), Some((a, b))) = (s, l.contiguous_offsets()) else {
                candle_core::bail!("conv3x3: contiguous f32 tensors only")
            };
            Tensor::from_slice(&data[a..b], l.shape(), &Device::Cpu)
        };
        let cols = columns(&as_tensor(xs, xs_l)?)?;
        let weights = as_tensor(w, w_l)?.reshape((o, c * 9))?;
        let ys = cols.matmul(&weights.t()?)?.reshape((n, h * wd, o))?.transpose(1, 2)?.contiguous()?;
        Ok((CpuStorage::F32(ys.flatten_all()?.to_vec1::<f32>()?), Shape::from((n, o, h, wd))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (xs, w) = (xs.detach(), w.detach());
        let (n, c, h, wd) = xs.dims4()?;
        let o = w.dim(0)?;
        // (n, o, h, w) → (n·h·w, o), the layout of the forward product.
        let grad = grad.reshape((n, o, h * wd))?.transpose(1, 2)?.contiguous()?.reshape((n * h * wd, o))?;
        let cols = columns(&xs)?;
        let grad_w = grad.t()?.matmul(&cols)?.reshape((o, c, 3, 3))?;
        let grad_cols = grad.matmul(&w.reshape((o, c * 9))?)?.reshape((n, h * wd, c * 9))?;
        let grad_xs = grad_cols.apply_op1_no_bwd(&Col2Im { c, h, w: wd })?;
        Ok((Some(grad_xs), Some(grad_w)))
    }
}

/// (n, c, h, w) → (n, h·w, c·9): row (y, x) holds the 3x3 neighbourhood of every channel,
/// zero outside the image.
struct Im2Col;

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("im2col3x3: contiguous f32 input only")
        };
        let xs = &data[start..end];
        let k = c * 9;
        let mut cols = vec![0f32; n * h * w * k];
        for (image, out) in xs.chunks_exact(c * h * w).zip(cols.chunks_exact_mut(h * w * k)) {
            for_each_tap(c, h, w, |col, pixel| out[col] = image[pixel]);
        }
        Ok((CpuStorage::F32(cols), Shape::from((n, h * w, k))))
    }
}

/// The adjoint of [`Im2Col`]: (n, h·w, c·9) → (n, c, h, w), summing every neighbourhood entry
/// back onto the pixel it came from.
struct Col2Im {
    c: usize,
    h: usize,
    w: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Col2Im { c, h, w } = *self;
        let (n, _, k) = layout.shape().dims3()?;
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("col2im3x3: contiguous f32 input only")
        };
        let cols = &data[start..end];
        let mut xs = vec![0f32; n * c * h * w];
        for (out, image) in cols.chunks_exact(h * w * k).zip(xs.chunks_exact_mut(c * h * w)) {
            for_each_tap(c, h, w, |col, pixel| image[pixel] += out[col]);
        }
        Ok((CpuStorage::F32(xs), Shape::from((n, c, h, w))))
    }
}

/// Calls `f(col, pixel)` for every tap of a 3x3, padding-1 window that falls inside one
/// (c, h, w) image: `col` indexes its (h·w, c·9) im2col matrix, `pixel` the image. Taps in the
/// padding are skipped (they are 0 in the matrix and receive nothing in the adjoint).
#[inline(always)]
fn for_each_tap(c: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
    let k = c * 9;
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                for ky in 0..3 {
                    let sy = y + ky;
                    if sy < 1 || sy > h {
                        continue;
                    }
                    for kx in 0..3 {
                        let sx = x + kx;
                        if sx >= 1 && sx <= w {
                            f((y * w + x) * k + ch * 9 + ky * 3 + kx, ch * h * w + (sy - 1) * w + sx - 1);
                        }
                    }
                }
            }
        }
    }
}
