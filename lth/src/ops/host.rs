//! Host-side helpers for the CPU custom ops: the values of a CPU tensor as a slice, and
//! matrix products on slices (`gemm`: the same bits on every machine), so that an op writes
//! straight into its output and chooses its own threading.

use super::gemm::{multiply, multiply_packed, PackedLayout, Path, Strided};
use candle_core::{CpuStorage, Layout, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Images per unit of work: threads take whole groups (convolutions, BatchNorm, [`per_image`]).
pub(super) const GROUP: usize = 8;

/// Whether candle may use more than one thread (`RAYON_NUM_THREADS`).
pub(super) fn parallel() -> bool {
    candle_core::utils::get_num_threads() > 1
}

/// The values of a contiguous f32 CPU storage.
pub fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("{op}: contiguous f32 tensors only"),
    }
}

/// Calls `f` on the values of a contiguous f32 CPU tensor.
pub fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => Ok(f(f32_slice(cpu, layout, op)?)),
        _ => candle_core::bail!("{op}: CPU tensors only"),
    }
}

/// A row-major matrix, or the transpose of one.
pub type Matrix<'a> = Strided<'a>;

impl<'a> Strided<'a> {
    /// A row-major matrix with `width` columns.
    pub fn rows(data: &'a [f32], width: usize) -> Self {
        Matrix { data, row_stride: width, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with `width` columns.
    pub fn cols(data: &'a [f32], width: usize) -> Self {
        Matrix { data, row_stride: 1, col_stride: width }
    }
}

/// Products of at least this many multiply-adds are split across threads by
/// [`product_threaded`]; smaller ones lose more to waking threads than they gain.
const PARALLEL_FROM: usize = 32 << 20;

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)`, row-major `dst`, on the calling thread
/// (for callers that parallelise over independent work themselves).
pub fn product(dst: &mut [f32], lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize, accumulate: bool) {
    check(dst, lhs, rhs, m, n, k);
    // SAFETY: `check` keeps every access in bounds; `dst` is borrowed mutably, so it aliases
    // neither operand.
    unsafe { gemm_into(dst.as_mut_ptr(), n, lhs, rhs, m, n, k, accumulate) }
}

/// [`product`] split by columns of `dst` over candle's thread count (`RAYON_NUM_THREADS`) when
/// it is large enough. Every entry is still one chain of multiply-adds over `k` (`gemm`), so the
/// split does not change the arithmetic.
pub fn product_threaded(dst: &mut [f32], lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize, accumulate: bool) {
    check(dst, lhs, rhs, m, n, k);
    // SAFETY: `check` keeps every access in bounds; `dst` is borrowed mutably, so it aliases
    // neither operand.
    unsafe { product_threaded_into(dst.as_mut_ptr(), lhs, rhs, m, n, k, accumulate) }
}

/// [`product`] with `rhs` already written in `layout` (see [`PackedLayout`]), on the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn product_packed(dst: &mut [f32], lhs: Matrix, rhs: &[f32], layout: PackedLayout, m: usize, n: usize, k: usize, accumulate: bool) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    check_operand(lhs, m, k);
    // SAFETY: the destination and `lhs` are bounded above, `rhs` by `multiply_packed`; `dst` is
    // borrowed mutably, so it aliases neither operand.
    unsafe { multiply_packed(Path::chosen(), dst.as_mut_ptr(), n, lhs, rhs, layout, m, n, k, accumulate) }
}

/// `lhs (m, k) · rhs (k, n)` as a new row-major vector, threaded as [`product_threaded`]. The
/// product writes every entry before anything reads it, so the vector is not zeroed first: a
/// fully connected layer's weight gradient (16 MB in Conv-2) was otherwise zeroed on the calling
/// thread alone while the other waited.
pub fn new_product(lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize) -> Vec<f32> {
    if k == 0 {
        return vec![0f32; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    check_operands(lhs, rhs, m, n, k);
    // SAFETY: the capacity holds m·n values and the operands are bounded (`check_operands`);
    // with k > 0 and no accumulation the product stores every entry without reading it first
    // (`gemm::multiply`), so all m·n are initialised when the length is set.
    unsafe {
        product_threaded_into(dst.as_mut_ptr(), lhs, rhs, m, n, k, false);
        dst.set_len(m * n);
    }
    dst
}

/// A new vector of `images · out_len` values, `f(image, out)` writing the `out_len` of each
/// image, on every thread candle uses (`RAYON_NUM_THREADS`), in groups of [`GROUP`] images.
/// `f` must write every value of its chunk; nothing is zeroed first (that took the calling
/// thread alone a few milliseconds per 15.7 MB map, while the other waited).
pub fn per_image(images: usize, out_len: usize, f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let len = images * out_len;
    let mut values = Vec::with_capacity(len);
    let out = &mut values.spare_capacity_mut()[..len];
    let group = |(g, out): (usize, &mut [MaybeUninit<f32>])| {
        for (i, out) in out.chunks_exact_mut(out_len.max(1)).enumerate() {
            f(g * GROUP + i, out)
        }
    };
    if parallel() {
        out.par_chunks_mut((GROUP * out_len).max(1)).enumerate().for_each(group);
    } else {
        out.chunks_mut((GROUP * out_len).max(1)).enumerate().for_each(group);
    }
    // SAFETY: the chunks cover all `len` values and `f` writes every value of each.
    unsafe { values.set_len(len) };
    values
}

/// Writes `value` into every entry and returns them as initialised values: for an op's output
/// that its own threads fill, chunk by chunk, instead of zeroing all of it on one thread first.
pub fn fill_uninit(entries: &mut [MaybeUninit<f32>], value: f32) -> &mut [f32] {
    fill_planes(entries, entries.len().max(1), |_| value)
}

/// Writes `value(p)` into every entry of plane `p` (the `p`-th run of `plane` entries) and returns
/// them all as initialised values.
pub fn fill_planes(entries: &mut [MaybeUninit<f32>], plane: usize, value: impl Fn(usize) -> f32) -> &mut [f32] {
    assert!(entries.len() % plane == 0, "fill_planes: {} entries are not whole planes of {plane}", entries.len());
    for (p, run) in entries.chunks_exact_mut(plane).enumerate() {
        run.fill(MaybeUninit::new(value(p)));
    }
    // SAFETY: every entry was just written, and MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(entries as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// [`product_threaded`] into `m × n` entries at `dst` (row-major).
///
/// # Safety
/// `dst` must be valid for writes of `m × n` values (and reads, if `accumulate`) and alias
/// neither operand, whose extents must have been checked.
#[allow(clippy::too_many_arguments)]
unsafe fn product_threaded_into(dst: *mut f32, lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize, accumulate: bool) {
    let threads = candle_core::utils::get_num_threads();
    if threads < 2 || m * n * k < PARALLEL_FROM || n < 32 {
        return gemm_into(dst, n, lhs, rhs, m, n, k, accumulate);
    }
    let per_block = n.div_ceil(threads).next_multiple_of(16);
    // The address travels as an integer: the blocks write disjoint columns of `dst`.
    let dst_addr = dst as usize;
    rayon::scope(|scope| {
        for first in (0..n).step_by(per_block) {
            let width = per_block.min(n - first);
            let rhs_block = Strided { data: &rhs.data[first * rhs.col_stride..], ..rhs };
            scope.spawn(move |_| {
                // SAFETY: `check` bounds the whole product; this block is columns
                // first..first + width of it, and no other block writes them.
                unsafe { gemm_into((dst_addr as *mut f32).add(first), n, lhs, rhs_block, m, width, k, accumulate) }
            });
        }
    });
}

fn check(dst: &[f32], lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    check_operands(lhs, rhs, m, n, k);
}

fn check_operands(lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize) {
    check_operand(lhs, m, k);
    check_operand(rhs, k, n);
}

/// Panics unless `x` holds every entry of a `rows × cols` matrix at its strides.
fn check_operand(x: Matrix, rows: usize, cols: usize) {
    let extent = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * x.row_stride + (cols - 1) * x.col_stride + 1 };
    assert!(x.data.len() >= extent, "gemm: operands too small");
}

/// `m × n` entries of a row-major destination with row stride `dst_stride`.
///
/// # Safety
/// `dst` must be valid for writes of that block, and not alias the operands.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(dst: *mut f32, dst_stride: usize, lhs: Matrix, rhs: Matrix, m: usize, n: usize, k: usize, accumulate: bool) {
    multiply(Path::chosen(), dst, dst_stride, lhs, rhs, m, n, k, accumulate)
}
