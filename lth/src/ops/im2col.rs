//! Convolutions as im2col + matrix product, with a hand-written backward, one image at a
//! time: 3x3 with padding 1 at stride 1 (with a bias: Conv-2/4/6) or at stride 1 and 2
//! (without: VGG-19, ResNet-18), and ResNet's 1x1 stride-2 shortcuts. candle's own CPU conv2d
//! backward computes the input gradient with `conv_transpose2d`, a direct loop that dominated
//! a Conv-2 training step.
//!
//! Each image's columns are built as a (c·k², ho·wo) matrix, in which row (channel, ky, kx) is
//! the image shifted by (ky − pad, kx − pad) and, at stride 2, subsampled: contiguous copies at
//! stride 1, and a product `W · columns` that comes out in the (o, ho·wo) layout of the
//! output, with no transpose. The matrix is 2.4 MB for a 64-channel 32×32 image, so it stays
//! in cache between being built and being multiplied, where a whole batch's (141 MB at batch
//! 60) would stream through memory several times per step. The backward rebuilds it per image:
//! the weight gradient accumulates `grad · columnsᵀ`, the input gradient is `Wᵀ · grad`
//! scattered back onto the pixels (`col2im`). Products go to the project's GEMM
//! (`host::product`). For maps of at least [`JOIN_BELOW`] pixels the columns are written
//! straight into the panels the GEMM multiplies (`gemm::PackedLayout`), in the forward as they
//! are and in the weight gradient transposed, from a channels-last copy of the image: the GEMM
//! would otherwise copy them there again (and transpose them, for the weight gradient), a
//! tenth of a Conv-2 step. Gradients are checked against candle's conv2d in tests, and the
//! golden runs keep their bits. On other devices (CUDA) candle's conv2d is used as is.

use super::device::fast_kernels;
use super::gemm::{PackedLayout, Path};
use super::host::{f32_slice, fill_planes, fill_uninit, parallel, product, product_packed, with_f32, Matrix, GROUP};
use super::sparse;
use crate::base::error::Result;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `xs` (n, c, h, w) convolved with `w` (o, c, 3, 3) plus bias `b` (o): (n, o, h, w).
pub fn conv3x3(xs: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast_kernels(xs.device()) {
        return Ok(xs.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Conv { geometry: Geometry::of(w, 1)? })?);
    }
    let o = w.dim(0)?;
    Ok(xs.conv2d(w, 1, 1, 1, 1)?.broadcast_add(&b.reshape((1, o, 1, 1))?)?)
}

/// `xs` (n, c, h, w) convolved with `w` (o, c, k, k), k = 1 or 3, at `stride`, without bias
/// (the convolutions that BatchNorm follows): (n, o, h', w') with padding k / 2, so 3x3 keeps
/// the size at stride 1 and both halve it at stride 2.
pub fn conv(xs: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let geometry = Geometry::of(w, stride)?;
    if fast_kernels(xs.device()) {
        return Ok(xs.contiguous()?.apply_op2(&w.contiguous()?, Conv { geometry })?);
    }
    Ok(xs.conv2d(w, geometry.padding(), stride, 1, 1)?)
}

/// `sums[p] += Σ plane p` over the planes of `planes`, `plane` values each: every plane summed
/// in order from -0, as `Iterator::sum` does, but eight planes side by side, so that their
/// chains of dependent additions overlap (one plane at a time, the bias gradients waited on
/// each addition's latency: 1,024 per 32x32 plane).
pub(super) fn add_plane_sums(sums: &mut [f32], planes: &[f32], plane: usize) {
    const SIDE_BY_SIDE: usize = 8;
    for (sums, planes) in sums.chunks_mut(SIDE_BY_SIDE).zip(planes.chunks(SIDE_BY_SIDE * plane.max(1))) {
        let mut acc = [-0f32; SIDE_BY_SIDE];
        for t in 0..plane {
            for (j, acc) in acc.iter_mut().enumerate().take(sums.len()) {
                *acc += planes[j * plane + t];
            }
        }
        sums.iter_mut().zip(acc).for_each(|(s, a)| *s += a);
    }
}

/// A square kernel's size and stride; the padding is `kernel / 2` ("same" at stride 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    kernel: usize,
    stride: usize,
}

impl Geometry {
    pub(super) fn of(w: &Tensor, stride: usize) -> Result<Self> {
        let (_, _, kh, kw) = w.dims4()?;
        if kh != kw || kh % 2 == 0 || stride == 0 {
            return Err(crate::base::error::Error::Invalid(format!(
                "convolution: a {kh}x{kw} kernel at stride {stride} is not supported (odd square kernels only)"
            )));
        }
        Ok(Geometry { kernel: kh, stride })
    }

    fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// The output size along a side of `n` pixels.
    fn out(&self, n: usize) -> usize {
        (n + 2 * self.padding() - self.kernel) / self.stride + 1
    }
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub ho: usize,
    pub wo: usize,
    /// The columns' rows: c · kernel².
    pub k: usize,
}

/// Maps of at most this many output pixels are multiplied several images at a time.
const JOIN_BELOW: usize = 256;

impl Dims {
    /// Images per matrix product: one for large maps (the columns stay in cache), several for
    /// small ones (VGG-19's 8x8 to 2x2 maps), whose products would otherwise stream a large
    /// weight matrix through memory for a few columns per image.
    fn batch(&self) -> usize {
        let ohw = self.ho * self.wo;
        if ohw >= JOIN_BELOW {
            1
        } else {
            (JOIN_BELOW / ohw).clamp(1, GROUP)
        }
    }

    pub(super) fn new(xs: (usize, usize, usize, usize), o: usize, g: Geometry) -> Self {
        let (n, c, h, w) = xs;
        Dims { n, c, h, w, o, ho: g.out(h), wo: g.out(w), k: c * g.kernel * g.kernel }
    }
}

/// The convolution as one op for autograd, with its bias as an optional third input
/// (candle's gradient of a broadcast bias is a strided reduction that cost as much as a
/// convolution's backward).
pub(super) struct Conv {
    pub geometry: Geometry,
}

impl Conv {
    /// The output: per image, `bias + w (o, k) · columns (k, ho·wo)`, for [`Dims::batch`]
    /// images at a time.
    pub(super) fn forward(&self, xs: &[f32], w: &[f32], b: Option<&[f32]>, d: Dims) -> Vec<f32> {
        let (hw, ohw) = (d.h * d.w, d.ho * d.wo);
        let len = d.n * d.o * ohw;
        let mut ys = Vec::with_capacity(len);
        let group = |(images, outs): (&[f32], &mut [MaybeUninit<f32>])| {
            // Every output starts as its channel's bias (0 without one), written by the thread
            // that computes it rather than zeroed beforehand on the calling thread alone.
            let outs = fill_planes(outs, ohw, |plane| b.map_or(0.0, |b| b[plane % d.o]));
            let batch = d.batch();
            if batch == 1 {
                // One image at a time: its columns go straight into the product's panels, and
                // the product adds onto the bias in place.
                let layout = PackedLayout::new(Path::chosen(), d.k, ohw);
                return with_scratch([layout.len(), 0, 0], |[cols, _, _]| {
                    for (image, out) in images.chunks_exact(d.c * hw).zip(outs.chunks_exact_mut(d.o * ohw)) {
                        im2col_packed(image, d, self.geometry, cols, layout);
                        product_packed(out, Matrix::rows(w, d.k), cols, layout, d.o, ohw, d.k, b.is_some());
                    }
                });
            }
            with_scratch([d.k * batch * ohw, d.o * batch * ohw, 0], |[cols, joined, _]| {
                for (images, outs) in images.chunks(batch * d.c * hw).zip(outs.chunks_mut(batch * d.o * ohw)) {
                    let m = images.len() / (d.c * hw);
                    let width = m * ohw;
                    for (j, image) in images.chunks_exact(d.c * hw).enumerate() {
                        im2col(image, d, self.geometry, &mut cols[j * ohw..], width);
                    }
                    // One image writes its (o, ohw) output in place, where the bias already is;
                    // several share one wider product whose column blocks are then copied out
                    // image by image.
                    let target = if m == 1 { &mut *outs } else { &mut joined[..d.o * width] };
                    if let (Some(b), true) = (b, m > 1) {
                        for (row, &bias) in target.chunks_exact_mut(width).zip(b) {
                            row.fill(bias);
                        }
                    }
                    product(target, Matrix::rows(w, d.k), Matrix::rows(&cols[..d.k * width], width), d.o, width, d.k, b.is_some());
                    if m > 1 {
                        for (j, out) in outs.chunks_exact_mut(d.o * ohw).enumerate() {
                            for (plane, row) in out.chunks_exact_mut(ohw).zip(joined.chunks_exact(width)) {
                                plane.copy_from_slice(&row[j * ohw..(j + 1) * ohw]);
                            }
                        }
                    }
                }
            })
        };
        let outs = &mut ys.spare_capacity_mut()[..len];
        if parallel() {
            xs.par_chunks(GROUP * d.c * hw).zip(outs.par_chunks_mut(GROUP * d.o * ohw)).for_each(group);
        } else {
            xs.chunks(GROUP * d.c * hw).zip(outs.chunks_mut(GROUP * d.o * ohw)).for_each(group);
        }
        // SAFETY: the groups cover all `len` entries (one per image's chunk) and each wrote
        // all of its own (`fill_planes`).
        unsafe { ys.set_len(len) };
        ys
    }

    /// The input (if it takes part in autograd), weight and bias gradients of tensors (see
    /// [`Conv::gradients`]).
    fn backward(&self, xs: &Tensor, w: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let d = Dims::new(xs.dims4()?, w.dim(0)?, self.geometry);
        let grad = grad.contiguous()?;
        let input_grad = xs.track_op();
        let (grad_xs, grad_w, grad_b) =
            with_f32(xs, "conv", |xs| with_f32(w, "conv", |w| with_f32(&grad, "conv", |grad| self.gradients(xs, w, grad, d, input_grad))))???;
        self.gradient_tensors(grad_xs, grad_w, grad_b, d, xs.device())
    }

    /// The gradients as tensors of the input's, the weights' and the bias's shapes.
    pub(super) fn gradient_tensors(
        &self,
        grad_xs: Option<Vec<f32>>,
        grad_w: Vec<f32>,
        grad_b: Vec<f32>,
        d: Dims,
        dev: &candle_core::Device,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let kernel = self.geometry.kernel;
        Ok((
            grad_xs.map(|g| Tensor::from_vec(g, (d.n, d.c, d.h, d.w), dev)).transpose()?,
            Tensor::from_vec(grad_w, (d.o, d.c, kernel, kernel), dev)?,
            Tensor::from_vec(grad_b, d.o, dev)?,
        ))
    }

    /// The weight and bias gradients, and the input's if `input_grad` (not for images, which
    /// no gradient reaches), given the gradient of the output. Each group of images sums its
    /// own weight and bias gradients, in image order ([`Dims::batch`] images per product); the
    /// groups' sums are then added in group order, so the result does not depend on the
    /// number of threads.
    pub(super) fn gradients(&self, xs: &[f32], w: &[f32], grad: &[f32], d: Dims, input_grad: bool) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let g = self.geometry;
        let (hw, ohw, k) = (d.h * d.w, d.ho * d.wo, d.k);
        let (xs_g, grad_g) = (GROUP * d.c * hw, GROUP * d.o * ohw);
        let xs_len = if input_grad { d.n * d.c * hw } else { 0 };
        let mut grad_xs = Vec::with_capacity(xs_len);
        // Each group's share of the input gradient, if it is wanted: zeroed image by image just
        // before its columns are added onto it, by the thread that adds them.
        let grad_xs_groups: Vec<Option<&mut [MaybeUninit<f32>]>> =
            if input_grad { grad_xs.spare_capacity_mut()[..xs_len].chunks_mut(xs_g).map(Some).collect() } else { xs.chunks(xs_g).map(|_| None).collect() };
        let group = |((images, grads), mut grad_images): ((&[f32], &[f32]), Option<&mut [MaybeUninit<f32>]>)| {
            let batch = d.batch();
            let (mut grad_w, mut grad_b) = (vec![0f32; d.o * k], vec![0f32; d.o]);
            if batch == 1 {
                self.image_by_image_gradients(images, grads, w, d, &mut grad_w, &mut grad_b, grad_images);
                return (grad_w, grad_b);
            }
            let joined_len = if batch > 1 { d.o * batch * ohw } else { 0 };
            with_scratch([k * batch * ohw, if input_grad { k * batch * ohw } else { 0 }, joined_len], |[cols, grad_cols, joined]| {
                for (i, (images, grads)) in images.chunks(batch * d.c * hw).zip(grads.chunks(batch * d.o * ohw)).enumerate() {
                    let m = images.len() / (d.c * hw);
                    let width = m * ohw;
                    for (j, (image, gr)) in images.chunks_exact(d.c * hw).zip(grads.chunks_exact(d.o * ohw)).enumerate() {
                        add_plane_sums(&mut grad_b, gr, ohw);
                        im2col(image, d, g, &mut cols[j * ohw..], width);
                        if m > 1 {
                            for (row, plane) in joined.chunks_exact_mut(width).zip(gr.chunks_exact(ohw)) {
                                row[j * ohw..(j + 1) * ohw].copy_from_slice(plane);
                            }
                        }
                    }
                    // The upstream gradient as one (o, m·ohw) matrix.
                    let gr = if m == 1 { grads } else { &joined[..d.o * width] };
                    let cols = &cols[..k * width];
                    // grad_w (o, k) += g (o, m·ohw) · colsᵀ (m·ohw, k)
                    product(&mut grad_w, Matrix::rows(gr, width), Matrix::cols(cols, width), d.o, k, width, i > 0);
                    if let Some(grad_images) = grad_images.as_deref_mut() {
                        // grad_cols (k, m·ohw) = wᵀ (k, o) · g (o, m·ohw)
                        product(&mut grad_cols[..k * width], Matrix::cols(w, k), Matrix::rows(gr, width), k, width, d.o, false);
                        let first = i * batch * d.c * hw;
                        for (j, grad_image) in grad_images[first..first + m * d.c * hw].chunks_exact_mut(d.c * hw).enumerate() {
                            col2im(&grad_cols[j * ohw..], d, g, fill_uninit(grad_image, 0.0), width);
                        }
                    }
                }
            });
            (grad_w, grad_b)
        };
        let partials: Vec<(Vec<f32>, Vec<f32>)> = if parallel() {
            xs.par_chunks(xs_g).zip(grad.par_chunks(grad_g)).zip(grad_xs_groups.into_par_iter()).map(group).collect()
        } else {
            xs.chunks(xs_g).zip(grad.chunks(grad_g)).zip(grad_xs_groups).map(group).collect()
        };
        // SAFETY: with `input_grad`, the groups cover all `xs_len` entries and each zeroed (then
        // added to) every image of its own; otherwise the length stays 0.
        unsafe { grad_xs.set_len(xs_len) };
        let (mut grad_w, mut grad_b) = (vec![0f32; d.o * k], vec![0f32; d.o]);
        // Each weight's sum runs from 0 over the groups in order; the weights are split across
        // threads (Conv-6's last layers hold 0.3-0.6 million, times 8 groups).
        let add_groups = |(first, sums): (usize, &mut [f32])| {
            for (partial_w, _) in &partials {
                sums.iter_mut().zip(&partial_w[first..]).for_each(|(s, v)| *s += v);
            }
        };
        const WEIGHTS_PER_TASK: usize = 1 << 14;
        if parallel() {
            grad_w.par_chunks_mut(WEIGHTS_PER_TASK).enumerate().for_each(|(i, sums)| add_groups((i * WEIGHTS_PER_TASK, sums)));
        } else {
            add_groups((0, &mut grad_w));
        }
        for (_, partial_b) in &partials {
            grad_b.iter_mut().zip(partial_b).for_each(|(s, v)| *s += v);
        }
        (input_grad.then_some(grad_xs), grad_w, grad_b)
    }

    /// [`Conv::gradients`] for one group of images of at least [`JOIN_BELOW`] output pixels,
    /// image by image. The weight gradient's right operand, the columns transposed, is written
    /// straight into the product's panels from a channels-last copy of the image, with its rows
    /// (the weights) taken tap by tap, so that each run of channels is one contiguous copy; the
    /// result is put back in (channel, tap) order at the end. Which row an output sits in is not
    /// part of its sum, so the bits are those of [`im2col`] and a transposing pack, which cost a
    /// tenth of a Conv-2 step.
    #[allow(clippy::too_many_arguments)]
    fn image_by_image_gradients(
        &self,
        images: &[f32],
        grads: &[f32],
        w: &[f32],
        d: Dims,
        grad_w: &mut [f32],
        grad_b: &mut [f32],
        mut grad_images: Option<&mut [MaybeUninit<f32>]>,
    ) {
        let g = self.geometry;
        let (hw, ohw, k, taps) = (d.h * d.w, d.ho * d.wo, d.k, g.kernel * g.kernel);
        let layout = PackedLayout::new(Path::chosen(), ohw, k);
        let grad_cols_len = if grad_images.is_some() { k * ohw } else { 0 };
        with_scratch([layout.len(), grad_cols_len, d.c * hw + d.o * k], |[cols_t, grad_cols, rest]| {
            let (image_t, by_tap) = rest.split_at_mut(d.c * hw);
            for (i, (image, gr)) in images.chunks_exact(d.c * hw).zip(grads.chunks_exact(d.o * ohw)).enumerate() {
                add_plane_sums(grad_b, gr, ohw);
                // The image (c, h·w) as (h·w, c): each pixel's channels side by side.
                sparse::transpose(image, d.c, hw, hw, image_t, d.c);
                im2row_packed(image_t, d, g, cols_t, layout);
                // grad_w (o, k; rows tap by tap) += g (o, ohw) · colsᵀ (ohw, k)
                product_packed(by_tap, Matrix::rows(gr, ohw), cols_t, layout, d.o, k, ohw, i > 0);
                if let Some(grad_images) = grad_images.as_deref_mut() {
                    // grad_cols (k, ohw) = wᵀ (k, o) · g (o, ohw)
                    product(grad_cols, Matrix::cols(w, k), Matrix::rows(gr, ohw), k, ohw, d.o, false);
                    col2im(grad_cols, d, g, fill_uninit(&mut grad_images[i * d.c * hw..(i + 1) * d.c * hw], 0.0), ohw);
                }
            }
            for (out, row) in grad_w.chunks_exact_mut(k).zip(by_tap.chunks_exact(k)) {
                for tap in 0..taps {
                    for channel in 0..d.c {
                        out[channel * taps + tap] = row[tap * d.c + channel];
                    }
                }
            }
        })
    }
}

/// [`im2col`] of one image straight into the panels of `layout` (its `k × ho·wo` right operand):
/// each output line is one or a few contiguous runs there.
fn im2col_packed(image: &[f32], d: Dims, g: Geometry, packed: &mut [f32], layout: PackedLayout) {
    let (hw, wo, s) = (d.h * d.w, d.wo, g.stride);
    for_each_line(d, g, |row, channel, sy, y, (first, end, sx)| {
        let line = sy.map(|sy| &image[channel * hw + sy * d.w..channel * hw + (sy + 1) * d.w]);
        let mut x = 0;
        while x < wo {
            let len = layout.run(y * wo + x).min(wo - x);
            let at = layout.index(row, y * wo + x);
            let out = &mut packed[at..at + len];
            match line {
                None => out.fill(0.0),
                Some(line) => {
                    // Output x reads the image inside first..end, and 0 outside it.
                    let (a, b) = (first.clamp(x, x + len), end.clamp(x, x + len));
                    out[..a - x].fill(0.0);
                    out[b - x..].fill(0.0);
                    let from = sx + (a - first) * s;
                    if s == 1 {
                        out[a - x..b - x].copy_from_slice(&line[from..from + b - a]);
                    } else {
                        out[a - x..b - x].iter_mut().zip(line[from..].iter().step_by(s)).for_each(|(o, &v)| *o = v);
                    }
                }
            }
            x += len;
        }
    });
    layout.zero_padding(packed);
}

/// The transposed columns (ho·wo, kernel²·c) of a channels-last image, straight into the panels
/// of `layout`: row p holds, for each tap (ky, kx) in turn, the c channels of the pixel that
/// output p reads through it (zeros outside the image).
fn im2row_packed(image_t: &[f32], d: Dims, g: Geometry, packed: &mut [f32], layout: PackedLayout) {
    let (k, s, pad) = (g.kernel, g.stride, g.padding());
    for y in 0..d.ho {
        for x in 0..d.wo {
            let p = y * d.wo + x;
            for ky in 0..k {
                let sy = (y * s + ky).checked_sub(pad).filter(|&v| v < d.h);
                for kx in 0..k {
                    let sx = (x * s + kx).checked_sub(pad).filter(|&v| v < d.w);
                    let source = match (sy, sx) {
                        (Some(sy), Some(sx)) => Some(&image_t[(sy * d.w + sx) * d.c..(sy * d.w + sx + 1) * d.c]),
                        _ => None,
                    };
                    let first = (ky * k + kx) * d.c;
                    let mut channel = 0;
                    while channel < d.c {
                        let len = layout.run(first + channel).min(d.c - channel);
                        let at = layout.index(p, first + channel);
                        match source {
                            Some(source) => packed[at..at + len].copy_from_slice(&source[channel..channel + len]),
                            None => packed[at..at + len].fill(0.0),
                        }
                        channel += len;
                    }
                }
            }
        }
    }
    layout.zero_padding(packed);
}

/// Calls `f` with three scratch buffers of `lens` values, the calling thread's own, kept across
/// calls: a convolution would otherwise allocate and zero megabytes of columns per group of
/// images. Their contents are left from earlier calls; every user writes what it reads.
fn with_scratch<R>(lens: [usize; 3], f: impl FnOnce([&mut [f32]; 3]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<[Vec<f32>; 3]> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
    }
    SCRATCH.with_borrow_mut(|buffers| {
        for (buffer, &len) in buffers.iter_mut().zip(&lens) {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        }
        let [a, b, c] = buffers;
        f([&mut a[..lens[0]], &mut b[..lens[1]], &mut c[..lens[2]]])
    })
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout, b: &CpuStorage, b_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::new(xs_l.shape().dims4()?, w_l.shape().dims()[0], self.geometry);
        let ys = self.forward(f32_slice(xs, xs_l, "conv")?, f32_slice(w, w_l, "conv")?, Some(f32_slice(b, b_l, "conv")?), d);
        Ok((CpuStorage::F32(ys), Shape::from((d.n, d.o, d.ho, d.wo))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _b: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_w, grad_b) = self.backward(xs, w, grad)?;
        Ok((grad_xs, Some(grad_w), Some(grad_b)))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::new(xs_l.shape().dims4()?, w_l.shape().dims()[0], self.geometry);
        let ys = self.forward(f32_slice(xs, xs_l, "conv")?, f32_slice(w, w_l, "conv")?, None, d);
        Ok((CpuStorage::F32(ys), Shape::from((d.n, d.o, d.ho, d.wo))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_w, _) = self.backward(xs, w, grad)?;
        Ok((grad_xs, Some(grad_w)))
    }
}

/// The (c·k², ho·wo) columns of one (c, h, w) image, rows `row_stride` apart in `cols` (the
/// columns of several images side by side): row (ch, ky, kx) holds, at output
/// (y, x), the pixel (y·stride + ky − pad, x·stride + kx − pad), zero outside the image.
fn im2col(image: &[f32], d: Dims, g: Geometry, cols: &mut [f32], row_stride: usize) {
    let (hw, wo, s) = (d.h * d.w, d.wo, g.stride);
    for_each_line(d, g, |row, channel, sy, y, (first, end, sx)| {
        let out = &mut cols[row * row_stride + y * wo..row * row_stride + (y + 1) * wo];
        match sy {
            Some(sy) => {
                let line = &image[channel * hw + sy * d.w..channel * hw + (sy + 1) * d.w];
                out[..first].fill(0.0);
                out[end..].fill(0.0);
                if s == 1 {
                    out[first..end].copy_from_slice(&line[sx..sx + end - first]);
                } else {
                    out[first..end].iter_mut().zip(line[sx..].iter().step_by(s)).for_each(|(o, &v)| *o = v);
                }
            }
            None => out.fill(0.0),
        }
    });
}

/// The adjoint of [`im2col`]: adds every column entry back onto the pixel it came from, in an
/// order fixed by the loops.
fn col2im(cols: &[f32], d: Dims, g: Geometry, image: &mut [f32], row_stride: usize) {
    let (hw, wo, s) = (d.h * d.w, d.wo, g.stride);
    for_each_line(d, g, |row, channel, sy, y, (first, end, sx)| {
        if let Some(sy) = sy {
            let from = &cols[row * row_stride + y * wo + first..row * row_stride + y * wo + end];
            let line = &mut image[channel * hw + sy * d.w..channel * hw + (sy + 1) * d.w];
            if s == 1 {
                // The same additions, as a loop the compiler vectorises.
                line[sx..sx + from.len()].iter_mut().zip(from).for_each(|(p, &v)| *p += v);
            } else {
                line[sx..].iter_mut().step_by(s).zip(from).for_each(|(p, &v)| *p += v);
            }
        }
    });
}

/// Calls `f(row, channel, source line, output line, (first, end, sx))` for every output line
/// `y` of every columns row (channel, ky, kx): the line reads source line
/// `y·stride + ky − pad` (None outside the image), and its columns `first..end` are the
/// source's `sx, sx + stride, …` (the others fall outside the image).
#[inline(always)]
fn for_each_line(d: Dims, g: Geometry, mut f: impl FnMut(usize, usize, Option<usize>, usize, (usize, usize, usize))) {
    let (k, s, pad) = (g.kernel, g.stride, g.padding());
    for channel in 0..d.c {
        for ky in 0..k {
            for kx in 0..k {
                let row = (channel * k + ky) * k + kx;
                // Output x reads source x·s + kx − pad: inside the image for first <= x < end.
                let first = if kx >= pad { 0 } else { (pad - kx).div_ceil(s) };
                let end = (d.w + pad - kx).div_ceil(s).min(d.wo).max(first);
                let sx = (first * s + kx - pad).min(d.w);
                for y in 0..d.ho {
                    let sy = (y * s + ky).checked_sub(pad).filter(|&v| v < d.h);
                    f(row, channel, sy, y, (first, end, sx));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 211) as f32 - 105.0) / 53.0).collect()
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// The output and the input, weight and bias gradients from plain im2col columns and plain
    /// products, image by image, weight and bias gradients summed per group of [`GROUP`] images
    /// and then group by group: the arithmetic before the columns were written in packed form.
    fn plain(conv: &Conv, xs: &[f32], w: &[f32], b: Option<&[f32]>, grad: &[f32], d: Dims) -> [Vec<f32>; 4] {
        let (hw, ohw, k, g) = (d.h * d.w, d.ho * d.wo, d.k, conv.geometry);
        let (mut cols, mut grad_cols) = (vec![0f32; k * ohw], vec![0f32; k * ohw]);
        let mut ys = vec![0f32; d.n * d.o * ohw];
        for (image, out) in xs.chunks_exact(d.c * hw).zip(ys.chunks_exact_mut(d.o * ohw)) {
            for (o, plane) in out.chunks_exact_mut(ohw).enumerate() {
                plane.fill(b.map_or(0.0, |b| b[o]));
            }
            im2col(image, d, g, &mut cols, ohw);
            product(out, Matrix::rows(w, k), Matrix::rows(&cols, ohw), d.o, ohw, k, b.is_some());
        }
        let (mut grad_xs, mut grad_w, mut grad_b) = (vec![0f32; xs.len()], vec![0f32; d.o * k], vec![0f32; d.o]);
        for (group, (images, grads)) in xs.chunks(GROUP * d.c * hw).zip(grad.chunks(GROUP * d.o * ohw)).enumerate() {
            let (mut partial_w, mut partial_b) = (vec![0f32; d.o * k], vec![0f32; d.o]);
            for (i, (image, gr)) in images.chunks_exact(d.c * hw).zip(grads.chunks_exact(d.o * ohw)).enumerate() {
                for (sum, plane) in partial_b.iter_mut().zip(gr.chunks_exact(ohw)) {
                    *sum += plane.iter().sum::<f32>();
                }
                im2col(image, d, g, &mut cols, ohw);
                product(&mut partial_w, Matrix::rows(gr, ohw), Matrix::cols(&cols, ohw), d.o, k, ohw, i > 0);
                product(&mut grad_cols, Matrix::cols(w, k), Matrix::rows(gr, ohw), k, ohw, d.o, false);
                let first = (group * GROUP + i) * d.c * hw;
                col2im(&grad_cols, d, g, &mut grad_xs[first..first + d.c * hw], ohw);
            }
            grad_w.iter_mut().zip(&partial_w).for_each(|(s, v)| *s += v);
            grad_b.iter_mut().zip(&partial_b).for_each(|(s, v)| *s += v);
        }
        [ys, grad_xs, grad_w, grad_b]
    }

    /// Columns written straight into the product's panels (transposed and tap by tap for the
    /// weight gradient) give the bits of plain columns, for 3x3 and 1x1 kernels at strides 1
    /// and 2, with and without bias, a last group of fewer than [`GROUP`] images, and channel
    /// counts that split panels (5) and fill them (32), on the chosen kernel path (`LTH_KERNELS`
    /// picks another; the golden runs check both vector paths end to end).
    /// Eight planes side by side give each plane's `Iterator::sum` bit for bit: a partial last
    /// group of planes, a plane of -0s (whose sum from -0 stays -0), and empty planes.
    #[test]
    fn plane_sums_are_the_bits_of_iterator_sums() {
        for (planes, plane) in [(13, 37), (8, 1024), (3, 0)] {
            let mut values = wave(planes * plane, 5);
            values[..plane].fill(-0.0);
            let start = wave(planes, 6);
            let mut sums = start.clone();
            add_plane_sums(&mut sums, &values, plane);
            let expected: Vec<f32> = start.iter().enumerate().map(|(p, &s)| s + values[p * plane..(p + 1) * plane].iter().sum::<f32>()).collect();
            assert_eq!(bits(&sums), bits(&expected), "{planes} planes of {plane}");
        }
        let mut zero = [-0.0f32];
        add_plane_sums(&mut zero, &[-0.0; 4], 4);
        assert!(zero[0].is_sign_negative(), "-0 plus a sum of -0s stays -0, as with Iterator::sum");
    }

    #[test]
    fn packed_columns_give_the_bits_of_plain_columns() {
        for (c, side, kernel, stride, bias) in [(5, 16, 3, 1, true), (32, 16, 3, 1, false), (3, 32, 3, 2, false), (6, 32, 1, 2, false)] {
            let (n, o) = (10, 7);
            let conv = Conv { geometry: Geometry { kernel, stride } };
            let d = Dims::new((n, c, side, side), o, conv.geometry);
            assert_eq!(d.batch(), 1, "the packed path is the one under test");
            let (xs, w, b) = (wave(n * c * side * side, 1), wave(o * d.k, 2), wave(o, 3));
            let grad = wave(n * o * d.ho * d.wo, 4);
            let b = bias.then_some(&b[..]);
            let [ys, grad_xs, grad_w, grad_b] = plain(&conv, &xs, &w, b, &grad, d);
            let packed_ys = conv.forward(&xs, &w, b, d);
            let (packed_grad_xs, packed_grad_w, packed_grad_b) = conv.gradients(&xs, &w, &grad, d, true);
            let case = format!("{c} channels, {side}x{side}, {kernel}x{kernel} at stride {stride}, bias {bias}, {:?}", crate::ops::gemm::Path::chosen());
            assert_eq!(bits(&packed_ys), bits(&ys), "forward: {case}");
            assert_eq!(bits(&packed_grad_xs.unwrap_or_default()), bits(&grad_xs), "input gradient: {case}");
            assert_eq!(bits(&packed_grad_w), bits(&grad_w), "weight gradient: {case}");
            assert_eq!(bits(&packed_grad_b), bits(&grad_b), "bias gradient: {case}");
        }
    }
}
