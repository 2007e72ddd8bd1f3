//! Fully connected layers, `xs Wᵀ + b`, with a backward written for lottery tickets.
//!
//! Two things candle's own matmul backward cannot know:
//! - **No input gradient for the first layer.** candle computes both gradients of every
//!   product; a network's first layer multiplies the data, whose gradient nobody reads, and for
//!   LeNet that product is a third of the layer's work.
//! - **Pruned weights.** Below [`SPARSE_BELOW`] of its weights kept, a layer trains its kept
//!   weights only, as a compact vector in the order of a [`Pattern`] (compressed rows): the
//!   forward product, the input gradient and the weight gradient all run over the kept weights,
//!   and no dense weight gradient is ever formed. [`Compact`] moves weights between the dense
//!   parameter store and the compact vectors. Pruned weights are exactly 0, so this equals dense
//!   masked training up to float summation order (tests compare the two).
//!
//! Both are CPU custom ops, and a hidden layer's product, bias and ReLU are one op
//! ([`Linear::forward_relu`]); on other devices (CUDA) every layer is candle's dense matmul.

use super::{param, Params};
use crate::error::{Error, Result};
use crate::kernels::applied::Applied;
use crate::kernels::device::{fast_kernels, to_host};
use crate::kernels::host::{f32_slice, new_product, product_threaded, with_f32, Matrix};
use crate::kernels::sparse::{self, Pattern, BLOCK};
use crate::masks::Mask;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, Var};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Layers keeping fewer than this fraction of their weights train sparse. A whole LeNet step
/// with every layer at one density (1 thread) was faster sparse from 41% kept and slower at
/// 52%; 0.35 leaves a margin (README, Speed).
pub const SPARSE_BELOW: f64 = 0.35;

/// How one fully connected layer multiplies.
#[derive(Clone)]
pub enum Product {
    Dense,
    /// The layer's weight parameter is the compact vector of its kept weights.
    Sparse(Arc<Pattern>),
}

/// The layers of a network that train sparse, with their compact parameters (CPU only).
pub struct Compact {
    patterns: BTreeMap<String, Arc<Pattern>>,
}

impl Compact {
    /// Picks the fully connected weights (rank 2) of `mask` that keep fewer than
    /// [`SPARSE_BELOW`] of their weights; none unless `fast` (the CPU kernels run,
    /// `kernels::device::fast_kernels`).
    pub fn choose(mask: &Mask, fast: bool) -> Self {
        let patterns = mask
            .layers
            .iter()
            .filter(|(_, l)| fast && l.shape.len() == 2 && (l.remaining() as f64) < SPARSE_BELOW * l.keep.len() as f64)
            .map(|(name, l)| (name.clone(), Arc::new(Pattern::of(&l.keep, l.shape.get(1).copied().unwrap_or(1)))))
            .collect();
        Compact { patterns }
    }

    /// No sparse layers.
    pub fn none() -> Self {
        Compact { patterns: BTreeMap::new() }
    }

    pub fn is_sparse(&self, weight: &str) -> bool {
        self.patterns.contains_key(weight)
    }

    /// Bytes a sparse layer holds: its kept values (f32) and its index pattern (row-major and
    /// column-major, for the forward and backward products); None for a dense layer.
    pub fn sparse_bytes(&self, weight: &str) -> Option<usize> {
        let p = self.patterns.get(weight)?;
        Some(4 * p.len() + p.index_bytes())
    }

    /// Training parameters: `dense`'s, with each sparse weight replaced by a fresh variable
    /// holding its kept values.
    pub fn params(&self, dense: &Params) -> Result<Params> {
        let mut params = dense.clone();
        for (name, pattern) in &self.patterns {
            let values = to_host::<f32>(&param(dense, name)?)?;
            let kept: Vec<f32> = pattern.dense_indices().map(|i| values[i]).collect();
            params.insert(name.clone(), Var::from_vec(kept, pattern.len(), &candle_core::Device::Cpu)?);
        }
        Ok(params)
    }

    /// Writes the compact weights of `compact` back into `dense` (pruned weights as 0).
    pub fn write_back(&self, compact: &Params, dense: &Params) -> Result<()> {
        for (name, pattern) in &self.patterns {
            let kept = to_host::<f32>(&param(compact, name)?)?;
            let var = dense.get(name).ok_or_else(|| Error::Invalid(format!("no parameter `{name}`")))?;
            let mut values = vec![0f32; var.elem_count()];
            for (i, v) in pattern.dense_indices().zip(kept) {
                values[i] = v;
            }
            var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
        }
        Ok(())
    }

    fn product(&self, weight: &str) -> Product {
        self.patterns.get(weight).map_or(Product::Dense, |p| Product::Sparse(p.clone()))
    }
}

/// A fully connected layer over the parameters `{name}.weight` (out, in), or its compact kept
/// values when the layer trains sparse, and `{name}.bias` (out) of the store.
pub struct Linear {
    w: Tensor,
    b: Tensor,
    product: Product,
}

impl Linear {
    pub fn new(params: &Params, name: &str, compact: &Compact) -> Result<Self> {
        let weight = format!("{name}.weight");
        Ok(Linear { w: param(params, &weight)?, b: param(params, &format!("{name}.bias"))?, product: compact.product(&weight) })
    }

    /// Whether the layer runs its custom kernels (its weights live on the CPU, and the CPU
    /// is not on the generic path, `kernels::device`).
    pub fn fast(&self) -> bool {
        fast_kernels(self.w.device())
    }

    /// `xs` (batch, in) → (batch, out); `input_grad: false` for a network's first layer.
    pub fn forward(&self, xs: &Tensor, input_grad: bool) -> Result<Tensor> {
        linear(xs, &self.w, &self.b, &self.product, input_grad)
    }

    /// `relu(forward(xs))`, the same bits forward and backward; on the CPU as one op.
    pub fn forward_relu(&self, xs: &Tensor, input_grad: bool) -> Result<Tensor> {
        if !self.fast() {
            return Ok(self.forward(xs, input_grad)?.relu()?);
        }
        Ok(self.forward_relu_applied(xs, input_grad)?.out)
    }

    /// [`Linear::forward_relu`] on the CPU, with the op kept for a backward by hand.
    pub fn forward_relu_applied(&self, xs: &Tensor, input_grad: bool) -> Result<Applied> {
        let args = [xs.contiguous()?, self.w.contiguous()?, self.b.contiguous()?];
        match &self.product {
            Product::Dense => Applied::new(args, LinearRelu::new(DenseProduct { input_grad })),
            Product::Sparse(pattern) => Applied::new(args, LinearRelu::new(SparseProduct { pattern: pattern.clone(), input_grad, xs_t: Mutex::default() })),
        }
    }

    /// Evaluation on the CPU in feature-major layout: `xs_t` (in, width) → (out, width), plus
    /// the bias, through ReLU if `relu`. Every output is the sum [`Linear::forward`] computes, in
    /// the same order (a dense entry is the same chain of fused multiply-adds with the factors
    /// swapped; a sparse one the same loop), so the bits are the same; but no activation is
    /// ever transposed, and no autograd graph is kept. `width` is a multiple of 32.
    pub fn forward_feature_major(&self, xs_t: &[f32], width: usize, relu: bool) -> Result<Vec<f32>> {
        let (w, b) = (self.w.contiguous()?, self.b.contiguous()?);
        let outputs = b.elem_count();
        let inputs = xs_t.len() / width.max(1);
        let mut ys_t = vec![0f32; outputs * width];
        with_f32(&w, "linear-feature-major", |w| match &self.product {
            // ys_t (out, width) = w (out, in) · xs_t (in, width)
            Product::Dense => product_threaded(&mut ys_t, Matrix::rows(w, inputs), Matrix::rows(xs_t, width), outputs, width, inputs, false),
            Product::Sparse(pattern) => sparse::rows_product(pattern, w, xs_t, width, &mut ys_t),
        })?;
        with_f32(&b, "linear-feature-major", |b| {
            for (row, &bias) in ys_t.chunks_exact_mut(width).zip(b) {
                for y in row.iter_mut() {
                    // candle's `broadcast_add` and `relu` (`max(0)`), value by value.
                    *y += bias;
                    if relu {
                        *y = y.max(0.0);
                    }
                }
            }
        })?;
        Ok(ys_t)
    }
}

/// The images of `xs` (n, ...) as feature-major rows (features, width), zero-padded to a width
/// that is a multiple of 32: what [`Linear::forward_feature_major`] reads.
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
fn linear(xs: &Tensor, w: &Tensor, b: &Tensor, product: &Product, input_grad: bool) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    fn bits(t: Option<&Tensor>) -> Vec<u32> {
        t.map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("an f32 tensor").iter().map(|v| v.to_bits()).collect()).unwrap_or_default()
    }

    #[test]
    fn linear_relu_as_one_op_gives_the_bits_of_candle_ops() {
        let (batch, inputs, outputs) = (7, 19, 13);
        let keep: Vec<f32> = (0..outputs * inputs).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let pattern = Arc::new(Pattern::of(&keep, inputs));
        // Image 0 is all zeros and output 0's bias is 0, so its pre-activation is exactly 0: the
        // ReLU's gradient passes there (`>= 0`), which the bias and input gradients show.
        let mut images = values(batch * inputs, 3);
        images[..inputs].fill(0.0);
        let mut biases = values(outputs, 2);
        biases[0] = 0.0;
        // Weights of the loss of both signs, so that gradients are negative and positive.
        let weights = Tensor::from_vec(values(batch * outputs, 4), (batch, outputs), &Device::Cpu).expect("weights");
        for product in [Product::Dense, Product::Sparse(pattern.clone())] {
            let w = match &product {
                Product::Dense => Var::from_vec(values(outputs * inputs, 1), (outputs, inputs), &Device::Cpu),
                Product::Sparse(p) => Var::from_vec(values(p.len(), 1), p.len(), &Device::Cpu),
            }
            .expect("w");
            let b = Var::from_vec(biases.clone(), outputs, &Device::Cpu).expect("b");
            let xs = Var::from_vec(images.clone(), (batch, inputs), &Device::Cpu).expect("xs");
            let layer = Linear { w: w.as_tensor().clone(), b: b.as_tensor().clone(), product };
            let run = |fused: bool| -> Result<[Vec<u32>; 4]> {
                let ys = if fused { layer.forward_relu(&xs, true)? } else { layer.forward(&xs, true)?.relu()? };
                let grads = (&ys * &weights)?.sum_all()?.backward()?;
                Ok([bits(Some(&ys)), bits(grads.get(&w)), bits(grads.get(&b)), bits(grads.get(&xs))])
            };
            let (fused, ops) = (run(true).expect("fused"), run(false).expect("candle ops"));
            for (name, (a, b)) in ["output", "weight gradient", "bias gradient", "input gradient"].iter().zip(fused.iter().zip(&ops)) {
                assert!(!a.is_empty() && a == b, "{name} differs");
            }
        }
    }
}
