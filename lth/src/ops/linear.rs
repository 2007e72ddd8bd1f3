//! The custom ops of fully connected layers (`nn::linear`): dense and sparse products whose
//! backward skips the input gradient of a network's first layer, and product + bias + ReLU as
//! one op, on the CPU; candle's matmul elsewhere. Pruned weights are exactly 0, so the sparse
//! product equals the dense masked one up to float summation order (tests compare the two).

use super::applied::Applied;
use super::device::fast_kernels;
use super::host::{f32_slice, new_product, with_f32, Matrix};
use super::sparse::{self, Pattern, BLOCK};
use crate::base::error::Result;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// How one fully connected layer multiplies.
#[derive(Clone)]
pub enum Product {
    Dense,
    /// The layer's weight parameter is the compact vector of its kept weights.
    Sparse(Arc<Pattern>),
}

/// `relu(product(xs, w) + b)` of `[xs, w, b]` on the CPU as one op, kept for a backward by hand.
pub fn linear_relu(args: [Tensor; 3], product: &Product, input_grad: bool) -> Result<Applied> {
    match product {
        Product::Dense => Applied::new(args, LinearRelu::new(DenseProduct { input_grad })),
        Product::Sparse(pattern) => Applied::new(args, LinearRelu::new(SparseProduct { pattern: pattern.clone(), input_grad, xs_t: Mutex::default() })),
    }
}

/// The images of `xs` (n, ...) as feature-major rows (features, width), zero-padded to a width
/// that is a multiple of 32: what `nn::linear::Linear::forward_feature_major` reads.
pub fn feature_major(xs: &Tensor) -> Result<(Vec<f32>, usize)> {
    let xs = xs.flatten_from(1)?.contiguous()?;
    let (n, features) = xs.dims2()?;
    let width = n.next_multiple_of(BLOCK).max(BLOCK);
    Ok((with_f32(&xs, "feature-major", |x| to_feature_major(x, n, features, width))?, width))
}

/// The first `n` columns of feature-major rows (features, width) as a (n, features) tensor.
pub fn batch_major(ys_t: &[f32], n: usize, width: usize) -> Result<Tensor> {
    let features = ys_t.len() / width.max(1);
    Ok(Tensor::from_vec(to_batch_major(ys_t, n, features, width), (n, features), &candle_core::Device::Cpu)?)
}

/// `xs (batch, in) · wᵀ (in, out) + b`. `input_grad: false` when `xs` needs no gradient
/// (the data); the product is `product`'s on the CPU and candle's matmul elsewhere.
pub fn linear(xs: &Tensor, w: &Tensor, b: &Tensor, product: &Product, input_grad: bool) -> Result<Tensor> {
    let ys = if !fast_kernels(xs.device()) {
        xs.matmul(&w.t()?)?
    } else {
        let (xs, w) = (xs.contiguous()?, w.contiguous()?);
        match product {
            Product::Dense => xs.apply_op2(&w, DenseProduct { input_grad })?,
            Product::Sparse(pattern) => xs.apply_op2(&w, SparseProduct { pattern: pattern.clone(), input_grad, xs_t: Mutex::default() })?,
        }
    };
    Ok(ys.broadcast_add(b)?)
}

/// `relu(product(xs, w) + b)` as one op. Under candle's autograd the bias addition and the ReLU
/// were three graph nodes per layer (broadcast, addition, ReLU), each gradient starting as a
/// zeroed tensor that the next was added to, the ReLU's gradient a comparison, a conversion and
/// a product, and the bias gradient a `sum_keepdim` that computed an index by division for
/// every value. This op repeats their arithmetic exactly: forward `max(p + b, 0)`; backward,
/// for the product's output, `0 + (0 + g · [p + b >= 0])` (the ReLU node's and the addition
/// node's accumulations), and for the bias, the column sums of that over the batch in
/// ascending order from 0 (candle's reduction), which candle then adds to its zero as before.
struct LinearRelu<P> {
    product: P,
    /// The pre-activations `p + b` of the forward pass, for the backward pass's mask.
    pre: Mutex<Vec<f32>>,
}

impl<P: CustomOp2> LinearRelu<P> {
    fn new(product: P) -> Self {
        LinearRelu { product, pre: Mutex::default() }
    }
}

impl<P: CustomOp2> CustomOp3 for LinearRelu<P> {
    fn name(&self) -> &'static str {
        "linear-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout, b: &CpuStorage, b_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (ys, shape) = self.product.cpu_fwd(xs, xs_l, w, w_l)?;
        let (CpuStorage::F32(mut pre), b) = (ys, f32_slice(b, b_l, self.name())?) else { candle_core::bail!("linear-relu: f32 only") };
        let (_, outputs) = shape.dims2()?;
        if b.len() != outputs {
            candle_core::bail!("linear-relu: {} biases for {outputs} outputs", b.len())
        }
        for row in pre.chunks_exact_mut(outputs) {
            for (p, &bias) in row.iter_mut().zip(b) {
                *p += bias;
            }
        }
        // candle's ReLU, value by value.
        let ys = pre.iter().map(|&v| v.max(0.0)).collect();
        if let Ok(mut saved) = self.pre.lock() {
            *saved = pre;
        }
        Ok((CpuStorage::F32(ys), shape))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _b: &Tensor, ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, outputs) = ys.dims2()?;
        let pre = self.pre.lock().map(|mut saved| std::mem::take(&mut *saved)).unwrap_or_default();
        if pre.len() != batch * outputs {
            candle_core::bail!("linear-relu: backward without its forward pass")
        }
        let grad_p: Vec<f32> =
            with_f32(&grad.contiguous()?, self.name(), |g| g.iter().zip(&pre).map(|(&g, &p)| 0.0 + (0.0 + g * if p >= 0.0 { 1.0 } else { 0.0 })).collect())?;
        let mut grad_b = vec![0f32; outputs];
        for row in grad_p.chunks_exact(outputs) {
            for (sum, &g) in grad_b.iter_mut().zip(row) {
                *sum += g;
            }
        }
        let grad_p = Tensor::from_vec(grad_p, (batch, outputs), ys.device())?;
        let (grad_xs, grad_w) = self.product.bwd(xs, w, ys, &grad_p)?;
        Ok((grad_xs, grad_w, Some(Tensor::from_vec(grad_b, outputs, ys.device())?)))
    }
}

/// `xs wᵀ` for a dense `w` (out, in), with candle's GEMM called directly: one split by output
/// columns across threads for large products, and none for small ones (candle's own threaded
/// GEMM made LeNet's products slower on two threads than on one).
struct DenseProduct {
    input_grad: bool,
}

impl CustomOp2 for DenseProduct {
    fn name(&self) -> &'static str {
        "linear-dense"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, inputs) = xs_l.shape().dims2()?;
        let (outputs, w_inputs) = w_l.shape().dims2()?;
        if w_inputs != inputs {
            candle_core::bail!("linear-dense: input width {inputs}, weight {:?}", w_l.shape())
        }
        let (xs, w) = (f32_slice(xs, xs_l, self.name())?, f32_slice(w, w_l, self.name())?);
        // ys (batch, out) = xs (batch, in) · wᵀ (in, out)
        let ys = new_product(Matrix::rows(xs, inputs), Matrix::cols(w, inputs), batch, outputs, inputs);
        Ok((CpuStorage::F32(ys), Shape::from((batch, outputs))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (batch, inputs) = xs.dims2()?;
        let outputs = w.dim(0)?;
        let grad = grad.contiguous()?;
        let (grad_w, grad_xs) = with_f32(&grad, self.name(), |g| {
            // grad_w (out, in) = gᵀ (out, batch) · xs (batch, in)
            let grad_w = with_f32(xs, "linear-dense", |x| new_product(Matrix::cols(g, outputs), Matrix::rows(x, inputs), outputs, inputs, batch))?;
            // grad_xs (batch, in) = g (batch, out) · w (out, in)
            let grad_xs = if self.input_grad {
                Some(with_f32(w, "linear-dense", |w| new_product(Matrix::rows(g, outputs), Matrix::rows(w, inputs), batch, inputs, outputs))?)
            } else {
                None
            };
            Ok::<_, candle_core::Error>((grad_w, grad_xs))
        })??;
        let grad_w = Tensor::from_vec(grad_w, (outputs, inputs), xs.device())?;
        let grad_xs = grad_xs.map(|g| Tensor::from_vec(g, (batch, inputs), xs.device())).transpose()?;
        Ok((grad_xs, Some(grad_w)))
    }
}

/// `xs wᵀ` over the kept weights: `xs` (batch, in), `w` compact → (batch, out).
struct SparseProduct {
    pattern: Arc<Pattern>,
    input_grad: bool,
    /// The forward pass's feature-major copy of `xs`, kept for the backward pass.
    xs_t: Mutex<Vec<f32>>,
}

impl CustomOp2 for SparseProduct {
    fn name(&self) -> &'static str {
        "linear-sparse"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, w: &CpuStorage, w_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, inputs) = xs_l.shape().dims2()?;
        let p = &*self.pattern;
        if inputs != p.cols || w_l.shape().elem_count() != p.len() {
            candle_core::bail!("linear-sparse: pattern {}x{} with {} kept, input width {inputs}, weight {:?}", p.rows, p.cols, p.len(), w_l.shape())
        }
        let (xs, w) = (f32_slice(xs, xs_l, self.name())?, f32_slice(w, w_l, self.name())?);
        let width = batch.next_multiple_of(BLOCK);
        let xs_t = to_feature_major(xs, batch, inputs, width);
        let mut ys_t = vec![0f32; p.rows * width];
        sparse::rows_product(p, w, &xs_t, width, &mut ys_t);
        let ys = to_batch_major(&ys_t, batch, p.rows, width);
        if let Ok(mut saved) = self.xs_t.lock() {
            *saved = xs_t;
        }
        Ok((CpuStorage::F32(ys), Shape::from((batch, p.rows))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let p = &*self.pattern;
        let (batch, _) = xs.dims2()?;
        let width = batch.next_multiple_of(BLOCK);
        let grad = grad.contiguous()?;
        let grad_t = with_f32(&grad, "linear-sparse", |g| to_feature_major(g, batch, p.rows, width))?;
        let mut xs_t = self.xs_t.lock().map(|mut saved| std::mem::take(&mut *saved)).unwrap_or_default();
        if xs_t.len() != p.cols * width {
            xs_t = with_f32(&xs.contiguous()?, "linear-sparse", |x| to_feature_major(x, batch, p.cols, width))?;
        }
        let mut grad_w = vec![0f32; p.len()];
        sparse::kept_dots(p, &grad_t, &xs_t, width, &mut grad_w);
        let grad_w = Tensor::from_vec(grad_w, p.len(), xs.device())?;
        let grad_xs = if self.input_grad {
            let mut grad_xs_t = vec![0f32; p.cols * width];
            with_f32(&w.contiguous()?, "linear-sparse", |w| sparse::cols_product(p, w, &grad_t, width, &mut grad_xs_t))?;
            Some(Tensor::from_vec(to_batch_major(&grad_xs_t, batch, p.cols, width), (batch, p.cols), xs.device())?)
        } else {
            None
        };
        Ok((grad_xs, Some(grad_w)))
    }
}

/// A row-major (batch, features) matrix as (features, width), zero-padded past `batch`.
fn to_feature_major(m: &[f32], batch: usize, features: usize, width: usize) -> Vec<f32> {
    let mut t = vec![0f32; features * width];
    sparse::transpose(m, batch, features, features, &mut t, width);
    t
}

/// The inverse of [`to_feature_major`]: (features, width) → (batch, features).
fn to_batch_major(t: &[f32], batch: usize, features: usize, width: usize) -> Vec<f32> {
    let mut m = vec![0f32; batch * features];
    sparse::transpose(t, features, batch, width, &mut m, features);
    m
}
