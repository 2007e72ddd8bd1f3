//! Fully connected layers, `xs Wᵀ + b`, with a backward written for lottery tickets (the custom
//! ops themselves are `ops::linear`).
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

use super::params::{param, LayerKind, ParamInfo, Params};
use crate::base::error::{Error, Result};
use crate::ops::applied::Applied;
use crate::ops::device::{fast_kernels, to_host};
use crate::ops::host::{product_threaded, with_f32, Matrix};
use crate::ops::linear::{linear, linear_relu, Product};
use crate::ops::sparse::{self, Pattern};
use candle_core::{Tensor, Var};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::ops::linear::{batch_major, feature_major};

/// Layers keeping fewer than this fraction of their weights train sparse. A whole LeNet step
/// with every layer at one density (1 thread) was faster sparse from 41% kept and slower at
/// 52%; 0.35 leaves a margin (README, Speed).
pub const SPARSE_BELOW: f64 = 0.35;

/// The layers of a network that train sparse, with their compact parameters (CPU only).
pub struct Compact {
    patterns: BTreeMap<String, Arc<Pattern>>,
}

impl Compact {
    /// The layers named in `patterns` train sparse, each over its pattern's kept weights.
    pub fn of(patterns: BTreeMap<String, Arc<Pattern>>) -> Self {
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

/// The parameters of the fully connected layer `name`: `{name}.weight` (outputs, inputs), pruned
/// as `kind`, and `{name}.bias` (outputs), never pruned; the names [`Linear::new`] reads.
pub fn params(name: &str, inputs: usize, outputs: usize, kind: LayerKind) -> [ParamInfo; 2] {
    let (fan_in, fan_out) = (inputs, outputs);
    [
        ParamInfo { name: format!("{name}.weight"), shape: vec![outputs, inputs], prunable: Some(kind), fan_in, fan_out },
        ParamInfo { name: format!("{name}.bias"), shape: vec![outputs], prunable: None, fan_in, fan_out },
    ]
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
    /// is not on the generic path, `ops::device`).
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
        linear_relu(args, &self.product, input_grad)
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
