//! Products with a pruned weight matrix held as its kept values only (the fully connected
//! layers that train sparse, `nn::linear`).
//!
//! The activations are feature-major, `(features, width)`, with the batch padded with zeros to
//! a multiple of [`BLOCK`]: each block of the batch accumulates in registers across a whole row
//! or column of kept weights, and padding with zeros leaves every sum unchanged.
//!
//! Every output is one sum in an order fixed here: the products and input gradients add
//! `weight · activation` term by term in the pattern's order, each a multiplication then an
//! addition (never fused, so a CPU without FMA computes the same); a weight gradient is a dot
//! product with [`BLOCK`] partial sums added in the fixed tree of [`portable::dot`]. The
//! portable, AVX2 and AVX-512 paths differ only in how many lanes they compute at once, so they
//! give the same bits (the tests compare them); the path is `gemm::Path::chosen()`.

use super::gemm::Path;
use rayon::prelude::*;
use std::ops::Range;

/// Batch columns per register block of the kernels.
pub const BLOCK: usize = 32;
const _: () = assert!(BLOCK == 32, "the dot products sum exactly 32 lanes");

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
    /// The nonzero entries of `keep`, a row-major matrix `cols` wide.
    pub fn of(keep: &[f32], cols: usize) -> Self {
        let cols = cols.max(1);
        let rows = keep.len() / cols;
        let (mut row_starts, mut row_cols) = (vec![0], Vec::new());
        for row in keep.chunks_exact(cols) {
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
    pub fn dense_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rows).flat_map(move |o| self.row_cols[self.row_starts[o]..self.row_starts[o + 1]].iter().map(move |&c| o * self.cols + c as usize))
    }

    /// Bytes of the index pattern (row-major and column-major).
    pub fn index_bytes(&self) -> usize {
        4 * (self.row_cols.len() + self.col_rows.len() + self.col_entries.len())
            + std::mem::size_of::<usize>() * (self.row_starts.len() + self.col_starts.len())
    }

    /// The end of row `o`'s entries from entry `from` on whose columns are below `end`.
    fn row_end_before(&self, o: usize, from: usize, end: usize) -> usize {
        from + self.row_cols[from..self.row_starts[o + 1]].partition_point(|&c| (c as usize) < end)
    }

    /// The rows fed by column `i` and their compact entries.
    fn col(&self, i: usize) -> (&[u32], &[u32]) {
        let c = self.col_starts[i]..self.col_starts[i + 1];
        (&self.col_rows[c.clone()], &self.col_entries[c])
    }

    /// Panics unless the compact weights and the activations have the sizes the pattern reads
    /// (the AVX-512 kernels index with these sizes).
    fn check(&self, weights: usize, inputs: &[f32], input_rows: usize, out: &[f32], out_rows: usize, width: usize) {
        assert!(width.is_multiple_of(BLOCK), "sparse product: width {width} is not a multiple of {BLOCK}");
        assert_eq!(weights, self.len(), "sparse product: {weights} weights for a pattern of {}", self.len());
        assert_eq!(inputs.len(), input_rows * width, "sparse product: input of {} values, expected {input_rows}x{width}", inputs.len());
        assert_eq!(out.len(), out_rows * width, "sparse product: output of {} values, expected {out_rows}x{width}", out.len());
    }
}

/// `out` (rows, width): row `o` = Σ over the kept (o, i), in order, of `w[k] · xs_t` row `i`
/// (the forward product).
pub fn rows_product(p: &Pattern, w: &[f32], xs_t: &[f32], width: usize, out: &mut [f32]) {
    rows_product_on(Path::chosen(), p, w, xs_t, width, out, tasks(p.len() * width))
}

/// `out` (cols, width): row `i` = Σ over the kept (o, i), in order of `o`, of `w[k] · grad_t`
/// row `o` (the input gradient).
pub fn cols_product(p: &Pattern, w: &[f32], grad_t: &[f32], width: usize, out: &mut [f32]) {
    cols_product_on(Path::chosen(), p, w, grad_t, width, out, tasks(p.len() * width))
}

/// `out[k]` for the kept (o, i) = `grad_t` row `o` · `xs_t` row `i` (the weight gradient).
pub fn kept_dots(p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, out: &mut [f32]) {
    kept_dots_on(Path::chosen(), p, grad_t, xs_t, width, out, tasks(p.len() * width))
}

/// `out[c · out_stride + r] = m[r · stride + c]` for `r < rows`, `c < cols`.
pub fn transpose(m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32], out_stride: usize) {
    match Path::chosen() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `chosen` is a path this CPU has, and both wider paths include AVX2.
        Path::Avx2 | Path::Avx512 => unsafe { avx2::transpose(m, rows, cols, stride, out, out_stride) },
        _ => portable::transpose(m, rows, cols, stride, out, out_stride),
    }
}

fn rows_product_on(path: Path, p: &Pattern, w: &[f32], xs_t: &[f32], width: usize, out: &mut [f32], tasks: usize) {
    p.check(w.len(), xs_t, p.cols, out, p.rows, width);
    let path = usable(path);
    by_rows(
        p.rows,
        tasks,
        out,
        |o| o * width,
        |rows, out| match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `usable` returns only paths this CPU has; `check` passed.
            Path::Avx512 => unsafe { avx512::rows_product(p, w, xs_t, width, rows, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Path::Avx2 => unsafe { avx2::rows_product(p, w, xs_t, width, rows, out) },
            _ => portable::rows_product(p, w, xs_t, width, rows, out),
        },
    )
}

fn cols_product_on(path: Path, p: &Pattern, w: &[f32], grad_t: &[f32], width: usize, out: &mut [f32], tasks: usize) {
    p.check(w.len(), grad_t, p.rows, out, p.cols, width);
    let path = usable(path);
    by_rows(
        p.cols,
        tasks,
        out,
        |i| i * width,
        |cols, out| match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `usable` returns only paths this CPU has, and AVX-512 includes AVX2.
            Path::Avx2 | Path::Avx512 => unsafe { avx2::cols_product(p, w, grad_t, width, cols, out) },
            _ => portable::cols_product(p, w, grad_t, width, cols, out),
        },
    )
}

fn kept_dots_on(path: Path, p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, out: &mut [f32], tasks: usize) {
    assert!(width.is_multiple_of(BLOCK), "sparse weight gradient: width {width} is not a multiple of {BLOCK}");
    assert_eq!(out.len(), p.len(), "sparse weight gradient: {} outputs for a pattern of {}", out.len(), p.len());
    let path = usable(path);
    by_rows(
        p.rows,
        tasks,
        out,
        |o| p.row_starts[o],
        |rows, out| match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `usable` returns only paths this CPU has, and AVX-512 includes AVX2.
            Path::Avx2 | Path::Avx512 => unsafe { avx2::kept_dots(p, grad_t, xs_t, width, rows, out) },
            _ => portable::kept_dots(p, grad_t, xs_t, width, rows, out, portable::dot),
        },
    )
}

/// Products of at least this many multiply-adds (kept weights × batch columns) are split
/// across threads: Conv-2's first fully connected layer at 20% (54 million per product) ran on
/// the calling thread alone while the second core waited; LeNet's (3 million at 20%) stays on
/// one thread, where waking another costs more than it saves.
const PARALLEL_FROM: usize = 8 << 20;

/// Bytes of the input rows one tile of the forward product or the weight gradient reads: a
/// Conv-2 first layer's inputs (16,384 rows of 256 bytes for a batch of 60) are 4 MB, which
/// every output row read again from the shared cache; in tiles of 512 KB they stay in the
/// core's own (2 MB here). A row's sums carry on from tile to tile in the same order.
const TILE_BYTES: usize = 512 << 10;

/// Input rows per tile when each tile reads `bytes` of an input row.
fn tile_inputs(bytes: usize) -> usize {
    (TILE_BYTES / bytes.max(1)).max(1)
}

/// How many parts a product of `work` multiply-adds is split into: a few per thread of candle's
/// (`RAYON_NUM_THREADS`) from [`PARALLEL_FROM`] on, since rows keep different numbers of
/// weights; else 1, the calling thread.
fn tasks(work: usize) -> usize {
    let threads = candle_core::utils::get_num_threads();
    if threads < 2 || work < PARALLEL_FROM {
        1
    } else {
        4 * threads
    }
}

/// Runs `kernel` on `tasks` ranges of the `rows` output rows (in parallel if more than one),
/// each with its own part of `out`: row `r` starts at `start(r)`, and `start(rows)` is
/// `out.len()`. Each output is computed whole by one call, so the split changes no sum.
fn by_rows(rows: usize, tasks: usize, out: &mut [f32], start: impl Fn(usize) -> usize, kernel: impl Fn(Range<usize>, &mut [f32]) + Sync) {
    if tasks < 2 || rows < 2 {
        return kernel(0..rows, out);
    }
    let per_task = rows.div_ceil(tasks);
    let mut parts = Vec::with_capacity(tasks);
    let mut rest = out;
    for first in (0..rows).step_by(per_task) {
        let last = (first + per_task).min(rows);
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(start(last) - start(first));
        parts.push((first..last, part));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(rows, out)| kernel(rows, out));
}

/// `path` if this CPU has it, else the portable one.
fn usable(path: Path) -> Path {
    if path.is_available() {
        path
    } else {
        Path::Portable
    }
}

/// The loops as plain Rust: the portable path, and (inlined into `avx2`'s functions) the AVX2
/// one, where the compiler vectorises them 8 lanes wide.
mod portable {
    use super::{tile_inputs, Pattern, Range, BLOCK};

    /// Output rows `rows` (`out` holds just those).
    #[inline(always)]
    pub fn rows_product(p: &Pattern, w: &[f32], xs_t: &[f32], width: usize, rows: Range<usize>, out: &mut [f32]) {
        let tile = tile_inputs(BLOCK * 4);
        for block in 0..width / BLOCK {
            // Each row's next entry: the tiles take the entries of every row in column order.
            let mut next: Vec<usize> = rows.clone().map(|o| p.row_starts[o]).collect();
            for first in (0..p.cols.max(1)).step_by(tile) {
                for ((o, out), from) in rows.clone().zip(out.chunks_exact_mut(width)).zip(&mut next) {
                    let end = p.row_end_before(o, *from, first + tile);
                    let terms = p.row_cols[*from..end].iter().zip(&w[*from..end]).map(|(&i, &wv)| (wv, i as usize));
                    accumulate(out, xs_t, width, block, first > 0, terms);
                    *from = end;
                }
            }
        }
    }

    /// Input gradient rows `cols` (`out` holds just those).
    #[inline(always)]
    pub fn cols_product(p: &Pattern, w: &[f32], grad_t: &[f32], width: usize, cols: Range<usize>, out: &mut [f32]) {
        for block in 0..width / BLOCK {
            for (i, out) in cols.clone().zip(out.chunks_exact_mut(width)) {
                let (rows, entries) = p.col(i);
                let terms = rows.iter().zip(entries).map(|(&o, &k)| (w[k as usize], o as usize));
                accumulate(out, grad_t, width, block, false, terms);
            }
        }
    }

    /// The kept weights of rows `rows` (`out` holds just theirs).
    #[inline(always)]
    pub fn kept_dots(p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, rows: Range<usize>, out: &mut [f32], dot: impl Fn(&[f32], &[f32]) -> f32) {
        let (offset, tile) = (p.row_starts[rows.start], tile_inputs(width * 4));
        let mut next: Vec<usize> = rows.clone().map(|o| p.row_starts[o]).collect();
        for first in (0..p.cols.max(1)).step_by(tile) {
            for (o, from) in rows.clone().zip(&mut next) {
                let end = p.row_end_before(o, *from, first + tile);
                let g = &grad_t[o * width..(o + 1) * width];
                for (out, &i) in out[*from - offset..end - offset].iter_mut().zip(&p.row_cols[*from..end]) {
                    let i = i as usize;
                    *out = dot(g, &xs_t[i * width..(i + 1) * width]);
                }
                *from = end;
            }
        }
    }

    /// Eight rows at a time, so that writes go out in runs.
    #[inline(always)]
    pub fn transpose(m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32], out_stride: usize) {
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

    /// Block `block` of `out` = Σ weight · the same block of `rows[row]` over `terms`, from 0,
    /// or if `resume` from the block's sums so far (which stay in registers meanwhile). Callers loop over blocks outermost: one block of every
    /// input row (128 bytes each) stays in cache while all the outputs read it, however wide
    /// the batch (a 5,000-image evaluation batch is 15 MB of inputs). Every output is the same
    /// sum in the same order whichever loop runs outermost.
    #[inline(always)]
    fn accumulate(out: &mut [f32], rows: &[f32], width: usize, block: usize, resume: bool, terms: impl Iterator<Item = (f32, usize)>) {
        let blocks = rows.as_chunks::<BLOCK>().0;
        let per_row = width / BLOCK;
        let mut acc = if resume { out.as_chunks::<BLOCK>().0[block] } else { [0f32; BLOCK] };
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
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; BLOCK];
        for (a, b) in a.as_chunks::<BLOCK>().0.iter().zip(b.as_chunks::<BLOCK>().0) {
            for j in 0..BLOCK {
                acc[j] += a[j] * b[j];
            }
        }
        // A fixed tree: vector adds down to eight lanes, then halves, then pairs (a running sum
        // would be a chain of 32 dependent additions). The vector paths add in this order too.
        let mut lanes = [0f32; 8];
        for j in 0..8 {
            lanes[j] = (acc[j] + acc[j + 8]) + (acc[j + 16] + acc[j + 24]);
        }
        ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
    }
}

/// The portable loops compiled for AVX2, and the dot product written with its intrinsics (the
/// compiler vectorised it only 4 wide).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{portable, Pattern, Range, BLOCK};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub unsafe fn rows_product(p: &Pattern, w: &[f32], xs_t: &[f32], width: usize, rows: Range<usize>, out: &mut [f32]) {
        portable::rows_product(p, w, xs_t, width, rows, out)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn cols_product(p: &Pattern, w: &[f32], grad_t: &[f32], width: usize, cols: Range<usize>, out: &mut [f32]) {
        portable::cols_product(p, w, grad_t, width, cols, out)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn transpose(m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32], out_stride: usize) {
        portable::transpose(m, rows, cols, stride, out, out_stride)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn kept_dots(p: &Pattern, grad_t: &[f32], xs_t: &[f32], width: usize, rows: Range<usize>, out: &mut [f32]) {
        // SAFETY: this function only runs on CPUs that have AVX2.
        portable::kept_dots(p, grad_t, xs_t, width, rows, out, |a, b| unsafe { dot(a, b) })
    }

    /// [`portable::dot`]: four 8-lane accumulators are its 32 partial sums, reduced in its order.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (a, b) in a.as_chunks::<BLOCK>().0.iter().zip(b.as_chunks::<BLOCK>().0) {
            for (q, acc) in acc.iter_mut().enumerate() {
                // SAFETY: q · 8 + 8 ≤ BLOCK, inside both arrays.
                let (x, y) = (_mm256_loadu_ps(a.as_ptr().add(q * 8)), _mm256_loadu_ps(b.as_ptr().add(q * 8)));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
        }
        eight_lanes(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
    }

    /// The last steps of [`portable::dot`]: `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn eight_lanes(lanes: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps(lanes, 1));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
    }
}

/// The forward product with two blocks of the batch (64 lanes, four registers) per pass over a
/// row of kept weights, where AVX2 computes one block (32 lanes) per pass; an odd last block
/// takes a pass of its own. Same sums, same order, so the same bits. It makes LeNet's evaluation
/// of 15,000 images 1.3x faster at 21.1% and 3.6% of weights (README, Speed); written the same
/// way, the two backward kernels made a training step no faster, so they stay AVX2.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{tile_inputs, Pattern, Range, BLOCK};
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// Output rows `rows` (`out` holds just those).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows_product(p: &Pattern, w: &[f32], xs_t: &[f32], width: usize, rows: Range<usize>, out: &mut [f32]) {
        let tile = tile_inputs(2 * BLOCK * 4);
        for (block, blocks) in passes(width) {
            let mut next: Vec<usize> = rows.clone().map(|o| p.row_starts[o]).collect();
            for first in (0..p.cols.max(1)).step_by(tile) {
                for ((o, out), from) in rows.clone().zip(out.chunks_exact_mut(width)).zip(&mut next) {
                    let end = p.row_end_before(o, *from, first + tile);
                    accumulate(out, xs_t, width, block, blocks, first > 0, &p.row_cols[*from..end], &w[*from..end]);
                    *from = end;
                }
            }
        }
    }

    /// (first block, number of blocks) of each pass over the batch.
    fn passes(width: usize) -> impl Iterator<Item = (usize, usize)> {
        let blocks = width / BLOCK;
        (0..blocks).step_by(2).map(move |b| (b, (blocks - b).min(2)))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn accumulate(out: &mut [f32], rows: &[f32], width: usize, block: usize, blocks: usize, resume: bool, sources: &[u32], weights: &[f32]) {
        if blocks == 2 {
            accumulate_n::<4>(out, rows, width, block, resume, sources, weights)
        } else {
            accumulate_n::<2>(out, rows, width, block, resume, sources, weights)
        }
    }

    /// `N` registers of 16 lanes from `block` on: `acc + weights[t] · rows[sources[t]]`, term
    /// by term, as the portable `accumulate` adds each lane, `acc` starting at 0 or, if
    /// `resume`, at `out`. Plain index loops: an iterator's
    /// `next` was not inlined here, which kept the sums in memory (5x slower).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn accumulate_n<const N: usize>(out: &mut [f32], rows: &[f32], width: usize, block: usize, resume: bool, sources: &[u32], weights: &[f32]) {
        let start = block * BLOCK;
        let mut acc = [_mm512_setzero_ps(); N];
        if resume {
            let sums = &out[start..][..N * LANES];
            for (q, acc) in acc.iter_mut().enumerate() {
                // SAFETY: q · 16 + 16 ≤ N · 16, inside `sums`.
                *acc = _mm512_loadu_ps(sums.as_ptr().add(q * LANES));
            }
        }
        for (&row, &weight) in sources.iter().zip(weights) {
            let xs = &rows[row as usize * width + start..][..N * LANES];
            let weight = _mm512_set1_ps(weight);
            for (q, acc) in acc.iter_mut().enumerate() {
                // SAFETY: q · 16 + 16 ≤ N · 16, inside `xs`.
                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(weight, _mm512_loadu_ps(xs.as_ptr().add(q * LANES))));
            }
        }
        let out = &mut out[start..][..N * LANES];
        for (q, acc) in acc.iter().enumerate() {
            // SAFETY: as above, inside `out`.
            _mm512_storeu_ps(out.as_mut_ptr().add(q * LANES), *acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    /// A (rows, cols) pattern keeping about one weight in `every`, with some empty rows and
    /// columns.
    fn pattern(rows: usize, cols: usize, every: u32) -> Pattern {
        let keep: Vec<f32> = (0..rows * cols).map(|i| if (i as u32).wrapping_mul(2_246_822_519) >> 24 < 256 / every { 1.0 } else { 0.0 }).collect();
        Pattern::of(&keep, cols)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn every_path_gives_the_bits_of_the_portable_loops() {
        // Widths with an odd number of blocks test the AVX-512 path's single-block pass; 9,000
        // inputs take several tiles (`TILE_BYTES`).
        for &(rows, cols, every, width) in &[(300, 784, 5, 64), (100, 300, 2, 32), (10, 100, 1, 96), (37, 53, 9, 160), (5, 7, 40, 64), (6, 9000, 7, 64)] {
            let p = pattern(rows, cols, every);
            let w = values(p.len(), 1);
            let (xs_t, grad_t) = (values(cols * width, 2), values(rows * width, 3));
            let reference = |path, tasks| {
                let (mut ys, mut gx, mut gw) = (vec![0f32; rows * width], vec![0f32; cols * width], vec![0f32; p.len()]);
                rows_product_on(path, &p, &w, &xs_t, width, &mut ys, tasks);
                cols_product_on(path, &p, &w, &grad_t, width, &mut gx, tasks);
                kept_dots_on(path, &p, &grad_t, &xs_t, width, &mut gw, tasks);
                (bits(&ys), bits(&gx), bits(&gw))
            };
            let portable = reference(Path::Portable, 1);
            for path in Path::available() {
                // Split across threads in 1, 3 or 8 parts (uneven ones included): the same bits.
                for tasks in [1, 3, 8] {
                    assert!(portable == reference(path, tasks), "{} in {tasks} parts differs from portable at {rows}x{cols}, width {width}", path.name());
                }
            }
        }
    }

    #[test]
    fn the_products_are_the_dense_products_over_the_kept_weights() {
        // Checked in f64 against the dense matrix with pruned weights as 0: the compact order
        // and the column index are the layer's weights, not some other arrangement.
        let (rows, cols, width) = (23, 41, 32);
        let p = pattern(rows, cols, 3);
        let w = values(p.len(), 4);
        let mut dense = vec![0f64; rows * cols];
        for (i, &v) in p.dense_indices().zip(&w) {
            dense[i] = v as f64;
        }
        let xs_t = values(cols * width, 5);
        let mut ys = vec![0f32; rows * width];
        rows_product(&p, &w, &xs_t, width, &mut ys);
        for o in 0..rows {
            for b in 0..width {
                let exact: f64 = (0..cols).map(|i| dense[o * cols + i] * xs_t[i * width + b] as f64).sum();
                assert!((ys[o * width + b] as f64 - exact).abs() < 1e-5, "output ({o}, {b})");
            }
        }
    }

    #[test]
    #[should_panic(expected = "is not a multiple of")]
    fn a_width_that_is_not_whole_blocks_is_refused() {
        let p = pattern(4, 4, 1);
        rows_product(&p, &values(p.len(), 1), &[0.0; 4 * 40], 40, &mut [0.0; 4 * 40]);
    }
}
