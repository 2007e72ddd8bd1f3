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
//! Both are CPU custom ops; on other devices (CUDA) every layer is candle's dense matmul.

use super::{param, Params};
use crate::error::{Error, Result};
use crate::kernels::host::{f32_slice, product_threaded, with_f32, Matrix};
use crate::masks::{LayerMask, Mask};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, Var};
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

/// The kept weights of an (out, in) matrix. Entry `k` of the compact vector (row-major order)
/// is weight (o, `row_cols[k]`) for `row_starts[o] <= k < row_starts[o + 1]`. The same entries
/// by column: input `i` feeds rows `col_rows[c]`, whose compact entries are `col_entries[c]`,
/// for `col_starts[i] <= c < col_starts[i + 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub rows: usize,
    pub cols: usize,
    row_starts: Vec<usize>,
    row_cols: Vec<u32>,
    col_starts: Vec<usize>,
    col_rows: Vec<u32>,
    col_entries: Vec<u32>,
}

impl Pattern {
    pub fn of(mask: &LayerMask) -> Self {
        let cols = mask.shape.get(1).copied().unwrap_or(1).max(1);
        let rows = mask.keep.len() / cols;
        let (mut row_starts, mut row_cols) = (vec![0], Vec::new());
        for row in mask.keep.chunks_exact(cols) {
            row_cols.extend(row.iter().enumerate().filter(|(_, &k)| k != 0.0).map(|(c, _)| c as u32));
            row_starts.push(row_cols.len());
        }
        // Counting sort of the entries by column, rows ascending within each column.
        let mut col_starts = vec![0usize; cols + 1];
        for &c in &row_cols {
            col_starts[c as usize + 1] += 1;
        }
        for i in 0..cols {
            col_starts[i + 1] += col_starts[i];
        }
        let mut next = col_starts.clone();
        let (mut col_rows, mut col_entries) = (vec![0u32; row_cols.len()], vec![0u32; row_cols.len()]);
        for o in 0..rows {
            for k in row_starts[o]..row_starts[o + 1] {
                let slot = &mut next[row_cols[k] as usize];
                col_rows[*slot] = o as u32;
                col_entries[*slot] = k as u32;
                *slot += 1;
            }
        }
        Pattern { rows, cols, row_starts, row_cols, col_starts, col_rows, col_entries }
    }

    /// The number of kept weights.
    pub fn len(&self) -> usize {
        self.row_cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_cols.is_empty()
    }

    /// The index of every compact entry in the dense (out, in) matrix.
    fn dense_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rows).flat_map(move |o| self.row_cols[self.row_starts[o]..self.row_starts[o + 1]].iter().map(move |&c| o * self.cols + c as usize))
    }
}

/// The layers of a network that train sparse, with their compact parameters (CPU only).
pub struct Compact {
    patterns: BTreeMap<String, Arc<Pattern>>,
}

impl Compact {
    /// Picks the fully connected weights (rank 2) of `mask` that keep fewer than
    /// [`SPARSE_BELOW`] of their weights; none off the CPU.
    pub fn choose(mask: &Mask, cpu: bool) -> Self {
        let patterns = mask
            .layers
            .iter()
            .filter(|(_, l)| cpu && l.shape.len() == 2 && (l.remaining() as f64) < SPARSE_BELOW * l.keep.len() as f64)
            .map(|(name, l)| (name.clone(), Arc::new(Pattern::of(l))))
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
        let usize_bytes = std::mem::size_of::<usize>();
        Some(4 * p.len() + 4 * (p.row_cols.len() + p.col_rows.len() + p.col_entries.len()) + usize_bytes * (p.row_starts.len() + p.col_starts.len()))
    }

    /// Training parameters: `dense`'s, with each sparse weight replaced by a fresh variable
    /// holding its kept values.
    pub fn params(&self, dense: &Params) -> Result<Params> {
        let mut params = dense.clone();
        for (name, pattern) in &self.patterns {
            let values = param(dense, name)?.flatten_all()?.to_vec1::<f32>()?;
            let kept: Vec<f32> = pattern.dense_indices().map(|i| values[i]).collect();
            params.insert(name.clone(), Var::from_vec(kept, pattern.len(), &candle_core::Device::Cpu)?);
        }
        Ok(params)
    }

    /// Writes the compact weights of `compact` back into `dense` (pruned weights as 0).
    pub fn write_back(&self, compact: &Params, dense: &Params) -> Result<()> {
        for (name, pattern) in &self.patterns {
            let kept = param(compact, name)?.to_vec1::<f32>()?;
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

    /// Whether the layer's weights live on the CPU (where its custom kernels run).
    pub fn on_cpu(&self) -> bool {
        self.w.device().is_cpu()
    }

    /// `xs` (batch, in) → (batch, out); `input_grad: false` for a network's first layer.
    pub fn forward(&self, xs: &Tensor, input_grad: bool) -> Result<Tensor> {
        linear(xs, &self.w, &self.b, &self.product, input_grad)
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
            Product::Sparse(pattern) => kernels::rows_product(pattern, w, xs_t, width, &mut ys_t),
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
    let ys = if !xs.device().is_cpu() {
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
        let mut ys = vec![0f32; batch * outputs];
        // ys (batch, out) = xs (batch, in) · wᵀ (in, out)
        product_threaded(&mut ys, Matrix::rows(xs, inputs), Matrix::cols(w, inputs), batch, outputs, inputs, false);
        Ok((CpuStorage::F32(ys), Shape::from((batch, outputs))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (batch, inputs) = xs.dims2()?;
        let outputs = w.dim(0)?;
        let grad = grad.contiguous()?;
        let mut grad_w = vec![0f32; outputs * inputs];
        let mut grad_xs = vec![0f32; if self.input_grad { batch * inputs } else { 0 }];
        with_f32(&grad, self.name(), |g| {
            with_f32(xs, "linear-dense", |x| {
                // grad_w (out, in) = gᵀ (out, batch) · xs (batch, in)
                product_threaded(&mut grad_w, Matrix::cols(g, outputs), Matrix::rows(x, inputs), outputs, inputs, batch, false)
            })?;
            if self.input_grad {
                with_f32(w, "linear-dense", |w| {
                    // grad_xs (batch, in) = g (batch, out) · w (out, in)
                    product_threaded(&mut grad_xs, Matrix::rows(g, outputs), Matrix::rows(w, inputs), batch, inputs, outputs, false)
                })?;
            }
            Ok::<_, candle_core::Error>(())
        })??;
        let grad_w = Tensor::from_vec(grad_w, (outputs, inputs), xs.device())?;
        let grad_xs = if self.input_grad { Some(Tensor::from_vec(grad_xs, (batch, inputs), xs.device())?) } else { None };
        Ok((grad_xs, Some(grad_w)))
    }
}

/// The sparse kernels work on feature-major copies of the activations, `(features, width)`,
/// with the batch padded with zeros to a multiple of `BLOCK`, so that each block of the batch
/// accumulates in registers across a whole row or column of kept weights. Padding with zeros
/// leaves every sum unchanged.
const BLOCK: usize = 32;
const _: () = assert!(BLOCK == 32, "kernels::dot sums exactly 32 lanes");

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
        kernels::rows_product(p, w, &xs_t, width, &mut ys_t);
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
        kernels::kept_dots(p, &grad_t, &xs_t, width, &mut grad_w);
        let grad_w = Tensor::from_vec(grad_w, p.len(), xs.device())?;
        let grad_xs = if self.input_grad {
            let mut grad_xs_t = vec![0f32; p.cols * width];
            with_f32(&w.contiguous()?, "linear-sparse", |w| kernels::cols_product(p, w, &grad_t, width, &mut grad_xs_t))?;
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
    kernels::transpose(m, batch, features, features, &mut t, width);
    t
}

/// The inverse of [`to_feature_major`]: (features, width) → (batch, features).
fn to_batch_major(t: &[f32], batch: usize, features: usize, width: usize) -> Vec<f32> {
    let mut m = vec![0f32; batch * features];
    kernels::transpose(t, features, batch, width, &mut m, features);
    m
}

/// The loops, each compiled twice: as is, and for AVX2, chosen at run time where the CPU has
/// it (the default x86-64 target stops at SSE2; candle's GEMM dispatches the same way). It is
/// the same code either way, without FMA, so results do not depend on the CPU.
mod kernels {
    use super::{Pattern, BLOCK};

    macro_rules! dispatched {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
            $(#[$doc])*
            pub fn $name($($arg: $ty),*) {
                #[inline(always)]
                fn kernel($($arg: $ty),*) $body
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    kernel($($arg),*)
                }
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: only reached on CPUs that have AVX2.
                    return unsafe { avx2($($arg),*) };
                }
                kernel($($arg),*)
            }
        };
    }

    dispatched! {
        /// Row `o` of `out` = Σ over the kept (o, i): `w[k] · xs_t` row `i` (the forward product).
        fn rows_product(p: &Pattern, w: &[f32], xs_t: &[f32], width: usize, out: &mut [f32]) {
            for block in 0..width / BLOCK {
                for o in 0..p.rows {
                    let entries = p.row_starts[o]..p.row_starts[o + 1];
                    let terms = p.row_cols[entries.clone()].iter().zip(&w[entries]).map(|(&i, &wv)| (wv, i as usize));
                    accumulate(&mut out[o * width..(o + 1) * width], xs_t, width, block, terms);
                }
            }
        }
    }

    dispatched! {
        /// Row `i` of `out` = Σ over the kept (o, i): `w[k] · grad_t` row `o` (the input gradient).
        fn cols_product(p: &Pattern, w: &[f32], grad_t: &[f32], width: usize, out: &mut [f32]) {
            for block in 0..width / BLOCK {
                for i in 0..p.cols {
                    let entries = p.col_starts[i]..p.col_starts[i + 1];
                    let terms = p.col_rows[entries.clone()].iter().zip(&p.col_entries[entries]).map(|(&o, &k)| (w[k as usize], o as usize));
                    accumulate(&mut out[i * width..(i + 1) * width], grad_t, width, block, terms);
                }
            }
        }
    }

    /// Entry k = (o, i) of `out` = grad_t row `o` · xs_t row `i` (the weight gradient). Its
    /// dot products are written with AVX2 intrinsics where the CPU has them (the compiler
    /// vectorised them only 4 wide), summing in the same order as [`dot`].
    pub fn kept_dots(p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, out: &mut [f32]) {
        #[inline(always)]
        fn each(p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, out: &mut [f32], dot: impl Fn(&[f32], &[f32]) -> f32) {
            for o in 0..p.rows {
                let g = &grad_t[o * width..(o + 1) * width];
                let entries = p.row_starts[o]..p.row_starts[o + 1];
                for (out, &i) in out[entries.clone()].iter_mut().zip(&p.row_cols[entries]) {
                    let i = i as usize;
                    *out = dot(g, &xs_t[i * width..(i + 1) * width]);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, out: &mut [f32]) {
            // SAFETY: `avx2` itself is only called on CPUs that have AVX2.
            each(p, grad_t, xs_t, width, out, |a, b| unsafe { dot_avx2(a, b) })
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: only reached on CPUs that have AVX2.
            return unsafe { avx2(p, grad_t, xs_t, width, out) };
        }
        each(p, grad_t, xs_t, width, out, dot)
    }

    /// [`dot`] with AVX2: four 8-lane accumulators are its 32 partial sums, reduced in its order.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        let mut acc = [_mm256_setzero_ps(); 4];
        for (a, b) in a.as_chunks::<BLOCK>().0.iter().zip(b.as_chunks::<BLOCK>().0) {
            for (q, acc) in acc.iter_mut().enumerate() {
                // SAFETY: q · 8 + 8 ≤ BLOCK, inside both arrays.
                let (x, y) = (_mm256_loadu_ps(a.as_ptr().add(q * 8)), _mm256_loadu_ps(b.as_ptr().add(q * 8)));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
        }
        let lanes = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let halves = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps(lanes, 1));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
    }

    dispatched! {
        /// `out[c · out_stride + r] = m[r · stride + c]` for `r < rows`, `c < cols`, eight rows
        /// at a time so that writes go out in runs.
        fn transpose(m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32], out_stride: usize) {
            let mut r = 0;
            while r + 8 <= rows {
                for c in 0..cols {
                    let dst = &mut out[c * out_stride + r..c * out_stride + r + 8];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = m[(r + j) * stride + c];
                    }
                }
                r += 8;
            }
            for r in r..rows {
                for c in 0..cols {
                    out[c * out_stride + r] = m[r * stride + c];
                }
            }
        }
    }

    /// Block `block` of `out` = Σ weight · the same block of `rows[row]` over `terms` (the
    /// block's sums stay in registers). Callers loop over blocks outermost: one block of every
    /// input row (128 bytes each) stays in cache while all the outputs read it, however wide
    /// the batch (a 5,000-image evaluation batch is 15 MB of inputs). Every output is the same
    /// sum in the same order whichever loop runs outermost.
    #[inline(always)]
    fn accumulate(out: &mut [f32], rows: &[f32], width: usize, block: usize, terms: impl Iterator<Item = (f32, usize)>) {
        let blocks = rows.as_chunks::<BLOCK>().0;
        let per_row = width / BLOCK;
        let mut acc = [0f32; BLOCK];
        for (weight, row) in terms {
            let xs = &blocks[row * per_row + block];
            for j in 0..BLOCK {
                acc[j] += weight * xs[j];
            }
        }
        out.as_chunks_mut::<BLOCK>().0[block] = acc;
    }

    /// A dot product of two padded rows with `BLOCK` partial sums (so it vectorises), summed
    /// in a fixed order.
    #[inline(always)]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; BLOCK];
        for (a, b) in a.as_chunks::<BLOCK>().0.iter().zip(b.as_chunks::<BLOCK>().0) {
            for j in 0..BLOCK {
                acc[j] += a[j] * b[j];
            }
        }
        // A fixed tree: vector adds down to eight lanes, then halves, then pairs (a running sum
        // would be a chain of 32 dependent additions). `dot_avx2` adds in this order too.
        let mut lanes = [0f32; 8];
        for j in 0..8 {
            lanes[j] = (acc[j] + acc[j + 8]) + (acc[j + 16] + acc[j + 24]);
        }
        ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
    }
}

#[cfg(test)]
mod tests {
    use super::kernels;

    #[test]
    fn the_avx2_dot_product_adds_in_the_portable_order() {
        // Bit-identical, so results do not depend on which path a CPU takes.
        let a: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let b: Vec<f32> = (0..96).map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0).collect();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            for len in [32, 64, 96] {
                // SAFETY: the CPU has AVX2.
                let fast = unsafe { kernels::dot_avx2(&a[..len], &b[..len]) };
                assert_eq!(fast.to_bits(), kernels::dot(&a[..len], &b[..len]).to_bits(), "{len} values");
            }
        }
    }
}
