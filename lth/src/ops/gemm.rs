//! Single-precision matrix products whose every output is the same bits on every machine.
//!
//! Entry (i, j) of `lhs · rhs` is one chain of fused multiply-adds in the order k = 0, 1, …:
//! `acc = fma(lhs[i][k], rhs[k][j], acc)`, starting from 0 (or from the destination's value
//! when accumulating). The blocking below (panels of `KC` values of k, tiles of `MR × NR`
//! outputs) only decides which outputs are computed together and when: an output's chain is
//! carried across k-blocks through the destination, so it is unbroken whatever the block sizes,
//! the vector width or the thread that computes it. An FMA rounds once, identically in every
//! implementation (IEEE 754), so the AVX-512, AVX2 and portable kernels give the same bits;
//! only their speed differs. The `gemm` crate, which candle uses, picks its k-blocking from the
//! cache sizes it detects, so its sums (and a training run's results) changed from one CPU
//! model to another.
//!
//! `LTH_KERNELS=portable|avx2|avx512` forces a path (tests and benchmarks use it to show that
//! the paths agree); by default the widest one the CPU has is used.

use std::sync::OnceLock;

/// A matrix as strides over a slice: entry (r, c) is `data[r · row_stride + c · col_stride]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

#[cfg(test)]
impl Strided<'_> {
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// Values of k per packed panel. Any value gives the same bits (see the module comment).
const KC: usize = 256;
/// Rows of `lhs` packed at a time.
const MC: usize = 96;
const _: () = assert!(MC % 12 == 0 && MC % 6 == 0 && MC % 4 == 0, "MC holds whole tiles of every path");
/// Columns of `rhs` packed at a time.
const NC: usize = 1024;

/// The kernels a CPU can run, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Portable,
    Avx2,
    Avx512,
}

impl Path {
    /// Every path this CPU can run.
    pub fn available() -> Vec<Path> {
        [Path::Portable, Path::Avx2, Path::Avx512].into_iter().filter(|p| p.is_available()).collect()
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Path::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Avx2 | Path::Avx512 => false,
        }
    }

    /// The widest available path, or the one `LTH_KERNELS` names if the CPU has it.
    pub fn chosen() -> Path {
        static CHOSEN: OnceLock<Path> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let available = Path::available();
            let forced = std::env::var("LTH_KERNELS").ok().and_then(|name| match name.as_str() {
                "portable" => Some(Path::Portable),
                "avx2" => Some(Path::Avx2),
                "avx512" => Some(Path::Avx512),
                _ => None,
            });
            match forced {
                Some(path) if available.contains(&path) => path,
                _ => *available.last().unwrap_or(&Path::Portable),
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    /// Rows and columns of one tile.
    fn tile(self) -> (usize, usize) {
        match self {
            Path::Portable => (4, 8),
            Path::Avx2 => (6, 16),
            Path::Avx512 => (12, 32),
        }
    }
}

/// `dst (m × n, row stride dst_stride) = [dst +] lhs (m × k) · rhs (k × n)` on `path`.
///
/// # Safety
/// `path` must be one of [`Path::available`]; `dst` must be valid for reads and writes of the
/// `m × n` block and alias neither operand.
#[allow(clippy::too_many_arguments)]
pub unsafe fn multiply(path: Path, dst: *mut f32, dst_stride: usize, lhs: Strided, rhs: Strided, m: usize, n: usize, k: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_stride), n).fill(0.0);
            }
        }
        return;
    }
    let (mr, nr) = path.tile();
    BUFFERS.with_borrow_mut(|(packed_a, packed_b)| {
        let kc_max = KC.min(k);
        grow(packed_b, kc_max * NC.min(n).next_multiple_of(nr));
        grow(packed_a, MC.min(m).next_multiple_of(mr) * kc_max);
        blocks(path, dst, dst_stride, lhs, Rhs::Strided(rhs), m, n, k, accumulate, packed_a, packed_b)
    })
}

thread_local! {
    /// Packing buffers, reused across calls on the same thread: a small product would otherwise
    /// spend as long allocating and zeroing them as multiplying. Packing overwrites every value
    /// the kernels then read.
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The right operand of [`blocks`]: packed there block by block, or already packed.
#[derive(Clone, Copy)]
enum Rhs<'a> {
    Strided(Strided<'a>),
    Packed(&'a [f32], PackedLayout),
}

/// Where [`multiply_packed`] reads each value of a `k × n` right operand that its caller wrote
/// straight into the panels [`multiply`] would otherwise pack it into (a convolution's columns,
/// built from the image): that saves a copy of the whole operand per product. Column blocks of
/// `NC`, then k-blocks of `KC`, then panels of the path's `NR` columns, each stored k by k.
#[derive(Debug, Clone, Copy)]
pub struct PackedLayout {
    k: usize,
    n: usize,
    nr: usize,
    /// log2 of `nr` (a power of two): callers index value by value, where a division costs.
    nr_log2: u32,
}

impl PackedLayout {
    /// The layout of a `k × n` right operand for `path`'s kernels.
    pub fn new(path: Path, k: usize, n: usize) -> Self {
        let nr = path.tile().1;
        assert!(nr.is_power_of_two() && NC % nr == 0, "gemm: panels of {nr} columns");
        PackedLayout { k, n, nr, nr_log2: nr.trailing_zeros() }
    }

    /// Values the packed operand takes, padding included.
    pub fn len(&self) -> usize {
        let full = self.n / NC;
        full * self.k * NC + self.k * (self.n - full * NC).next_multiple_of(self.nr)
    }

    /// Whether the operand is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The start of the column block holding `col`, its width padded to whole panels, and
    /// where k-block `pc` of it starts.
    fn block(&self, col: usize, pc: usize) -> (usize, usize) {
        let first = col / NC * NC;
        let nc_padded = NC.min(self.n - first).next_multiple_of(self.nr);
        (first * self.k + pc * nc_padded, nc_padded)
    }

    /// Where value (`row`, `col`) goes.
    #[inline(always)]
    pub fn index(&self, row: usize, col: usize) -> usize {
        let pc = row / KC * KC;
        let kc = KC.min(self.k - pc);
        let (block, _) = self.block(col, pc);
        let in_block = col % NC;
        block + (((in_block >> self.nr_log2) * kc + row - pc) << self.nr_log2) + (in_block & (self.nr - 1))
    }

    /// How many columns from `col` on (in one row) are stored one after another: to the end of
    /// `col`'s panel.
    #[inline(always)]
    pub fn run(&self, col: usize) -> usize {
        self.nr - (col & (self.nr - 1))
    }

    /// Zeroes the padding columns past `n` in the last panel, as [`pack`] does: their products
    /// are never stored, and zeros keep stale values (or NaNs) of an earlier use out of them.
    pub fn zero_padding(&self, packed: &mut [f32]) {
        let padded = self.n.next_multiple_of(self.nr);
        if padded == self.n {
            return;
        }
        for row in 0..self.k {
            for col in self.n..padded {
                packed[self.index(row, col)] = 0.0;
            }
        }
    }
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs` where `rhs` was written in `layout` (of `k × n`
/// for `path`), the same bits as [`multiply`] on the same values.
///
/// # Safety
/// As [`multiply`]; `layout` must be `PackedLayout::new(path, k, n)` and `rhs` hold its `len()`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn multiply_packed(
    path: Path,
    dst: *mut f32,
    dst_stride: usize,
    lhs: Strided,
    rhs: &[f32],
    layout: PackedLayout,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    assert!(layout.k == k && layout.n == n && layout.nr == path.tile().1 && rhs.len() >= layout.len(), "gemm: packed operand of another shape or path");
    if m == 0 || n == 0 || k == 0 {
        return multiply(path, dst, dst_stride, lhs, Strided { data: &[], row_stride: 0, col_stride: 0 }, m, n, k, accumulate);
    }
    let (mr, _) = path.tile();
    BUFFERS.with_borrow_mut(|(packed_a, _)| {
        grow(packed_a, MC.min(m).next_multiple_of(mr) * KC.min(k));
        blocks(path, dst, dst_stride, lhs, Rhs::Packed(rhs, layout), m, n, k, accumulate, packed_a, &mut [])
    })
}

fn grow(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

/// The loops of [`multiply`] over blocks of k, rows and columns, into the packing buffers.
#[allow(clippy::too_many_arguments)]
unsafe fn blocks(
    path: Path,
    dst: *mut f32,
    dst_stride: usize,
    lhs: Strided,
    rhs: Rhs,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    packed_a: &mut [f32],
    packed_b: &mut [f32],
) {
    let (mr, nr) = path.tile();
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // After the first k-block the destination holds each chain so far.
            let load = accumulate || pc > 0;
            let packed_b: &[f32] = match rhs {
                Rhs::Strided(rhs) => {
                    let b_block =
                        Block { data: rhs.data, start: pc * rhs.row_stride + jc * rhs.col_stride, k_stride: rhs.row_stride, line_stride: rhs.col_stride };
                    pack(packed_b, nr, kc, nc, b_block);
                    packed_b
                }
                Rhs::Packed(data, layout) => {
                    let (start, nc_padded) = layout.block(jc, pc);
                    &data[start..start + kc * nc_padded]
                }
            };
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                let a_block = Block { data: lhs.data, start: ic * lhs.row_stride + pc * lhs.col_stride, k_stride: lhs.col_stride, line_stride: lhs.row_stride };
                pack(packed_a, mr, kc, mc, a_block);
                for (jr, b_panel) in (0..nc).step_by(nr).zip(packed_b.chunks_exact(kc * nr)) {
                    for (ir, a_panel) in (0..mc).step_by(mr).zip(packed_a.chunks_exact(kc * mr)) {
                        let tile =
                            Tile { c: dst.add((ic + ir) * dst_stride + jc + jr), stride: dst_stride, rows: mr.min(mc - ir), cols: nr.min(nc - jr), load };
                        match path {
                            #[cfg(target_arch = "x86_64")]
                            Path::Avx512 => avx512::kernel(kc, a_panel, b_panel, tile),
                            #[cfg(target_arch = "x86_64")]
                            Path::Avx2 => avx2::kernel(kc, a_panel, b_panel, tile),
                            _ => portable::kernel(kc, a_panel, b_panel, tile),
                        }
                    }
                }
            }
        }
    }
}

/// A block of an operand to pack: value (kk, line) is `data[start + kk · k_stride + line · line_stride]`.
#[derive(Clone, Copy)]
struct Block<'a> {
    data: &'a [f32],
    start: usize,
    k_stride: usize,
    line_stride: usize,
}

/// Packs `extent` lines of `kc` values of `block` into panels of `width` lines, interleaved by
/// k: panel p holds value (kk, p · width + l) at `p · kc · width + kk · width + l`, zero past
/// `extent` (those lines only produce outputs that are never stored). The writes run in
/// buffer order; where the lines are not contiguous (a transposed operand: a layer's weights in
/// its forward product), each k reads one value from each of the `width` lines, whose cache
/// lines stay in L1 across consecutive k. Writing column by column instead touched a new cache
/// line on every store and made packing a third of LeNet's evaluation.
fn pack(buffer: &mut [f32], width: usize, kc: usize, extent: usize, block: Block) {
    let Block { data, start, k_stride, line_stride } = block;
    for (p, panel) in buffer.chunks_exact_mut(kc * width).take(extent.div_ceil(width)).enumerate() {
        let lines = width.min(extent - p * width);
        let first = start + p * width * line_stride;
        if k_stride == 1 && line_stride != 1 {
            pack_transposed(panel, width, lines, &data[first..], line_stride);
            continue;
        }
        for (kk, row) in panel.chunks_exact_mut(width).enumerate() {
            let from = first + kk * k_stride;
            if line_stride == 1 {
                row[..lines].copy_from_slice(&data[from..from + lines]);
            } else {
                let last = from + (lines - 1) * line_stride;
                for (v, &x) in row[..lines].iter_mut().zip(data[from..=last].iter().step_by(line_stride)) {
                    *v = x;
                }
            }
            row[lines..].fill(0.0);
        }
    }
}

/// One panel of [`pack`] from lines that are contiguous along k (a transposed operand: the
/// columns of a convolution, or its output gradient, in its weight gradient). Reading one
/// value from each line per k, as [`pack`] does, missed L1 on almost every load: the lines of
/// a 32x32 map lie 4 KB apart, so they share one cache set. Here blocks of 8 lines × 8 values
/// of k are read with contiguous loads and transposed in registers where the CPU has AVX
/// (0.79 → 0.34 ns per value on the development machine, in a throwaway timing harness).
fn pack_transposed(panel: &mut [f32], width: usize, lines: usize, data: &[f32], line_stride: usize) {
    let kc = panel.len() / width;
    // Values of k whose every line is packed.
    let mut packed = 0;
    #[cfg(target_arch = "x86_64")]
    if Path::chosen() != Path::Portable && kc >= 8 && lines >= 8 {
        let (l_end, kk_end) = (lines - lines % 8, kc - kc % 8);
        assert!((l_end - 1) * line_stride + kk_end <= data.len() && (kk_end - 1) * width + l_end <= panel.len(), "pack: block out of bounds");
        // SAFETY: the CPU has AVX (every non-portable path does); the assert bounds every
        // read (lines < l_end, k < kk_end) and write (rows < kk_end, columns < l_end).
        unsafe { transpose8::blocks(panel.as_mut_ptr(), width, data.as_ptr(), line_stride, l_end, kk_end) };
        // The lines past l_end at every k; then every line past kk_end.
        for kk in 0..kk_end {
            for l in l_end..lines {
                panel[kk * width + l] = data[l * line_stride + kk];
            }
        }
        packed = kk_end;
    }
    for kk in packed..kc {
        for l in 0..lines {
            panel[kk * width + l] = data[l * line_stride + kk];
        }
    }
    for row in panel.chunks_exact_mut(width) {
        row[lines..].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod transpose8 {
    use std::arch::x86_64::*;

    /// `panel[k · width + l] = data[l · line_stride + k]` for l < `lines`, k < `kc`, both
    /// multiples of 8, by 8x8 register transposes.
    #[target_feature(enable = "avx")]
    pub unsafe fn blocks(panel: *mut f32, width: usize, data: *const f32, line_stride: usize, lines: usize, kc: usize) {
        for l0 in (0..lines).step_by(8) {
            for kk0 in (0..kc).step_by(8) {
                let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(data.add((l0 + j) * line_stride + kk0)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (t, v) in out.iter().enumerate() {
                    _mm256_storeu_ps(panel.add((kk0 + t) * width + l0), *v);
                }
            }
        }
    }
}

/// Where one tile of outputs goes: `rows × cols` entries from `c` with row stride `stride`;
/// `load`: continue the chains held there instead of starting from 0.
struct Tile {
    c: *mut f32,
    stride: usize,
    rows: usize,
    cols: usize,
    load: bool,
}

impl Tile {
    /// Calls `f` with a full `MR × NR` row-major buffer of the tile's starting values, then
    /// stores what `f` left in it. Full tiles use the destination in place when possible.
    #[inline(always)]
    unsafe fn with_buffer<const MR: usize, const NR: usize>(&self, f: impl FnOnce(*mut f32, usize)) {
        if self.rows == MR && self.cols == NR {
            return f(self.c, self.stride);
        }
        let mut buffer = [[0f32; NR]; MR];
        if self.load {
            for (i, row) in buffer.iter_mut().enumerate().take(self.rows) {
                row[..self.cols].copy_from_slice(std::slice::from_raw_parts(self.c.add(i * self.stride), self.cols));
            }
        }
        f(buffer.as_mut_ptr().cast(), NR);
        for (i, row) in buffer.iter().enumerate().take(self.rows) {
            std::slice::from_raw_parts_mut(self.c.add(i * self.stride), self.cols).copy_from_slice(&row[..self.cols]);
        }
    }
}

/// Plain Rust: `f32::mul_add` is an exactly rounded FMA on every platform.
mod portable {
    use super::Tile;
    const MR: usize = 4;
    const NR: usize = 8;

    pub unsafe fn kernel(kc: usize, a: &[f32], b: &[f32], tile: Tile) {
        tile.with_buffer::<MR, NR>(|c, stride| {
            let mut acc = [[0f32; NR]; MR];
            if tile.load || tile.rows < MR || tile.cols < NR {
                for (i, row) in acc.iter_mut().enumerate() {
                    row.copy_from_slice(std::slice::from_raw_parts(c.add(i * stride), NR));
                }
            }
            for (a, b) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
                for i in 0..MR {
                    for j in 0..NR {
                        acc[i][j] = a[i].mul_add(b[j], acc[i][j]);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                std::slice::from_raw_parts_mut(c.add(i * stride), NR).copy_from_slice(row);
            }
        })
    }
}

/// Macro-free x86 kernels: a tile of `MR` rows × `NR / LANES` vectors of accumulators, one
/// broadcast of `a` and one FMA per vector and k.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Tile;
    use std::arch::x86_64::*;
    const MR: usize = 6;
    const NR: usize = 16;

    pub unsafe fn kernel(kc: usize, a: &[f32], b: &[f32], tile: Tile) {
        tile.with_buffer::<MR, NR>(|c, stride| inner(kc, a.as_ptr(), b.as_ptr(), c, stride, tile.load || tile.rows < MR || tile.cols < NR))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn inner(kc: usize, a: *const f32, b: *const f32, c: *mut f32, stride: usize, load: bool) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        if load {
            for (i, row) in acc.iter_mut().enumerate() {
                row[0] = _mm256_loadu_ps(c.add(i * stride));
                row[1] = _mm256_loadu_ps(c.add(i * stride + 8));
            }
        }
        for kk in 0..kc {
            let (b0, b1) = (_mm256_loadu_ps(b.add(kk * NR)), _mm256_loadu_ps(b.add(kk * NR + 8)));
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(kk * MR + i));
                row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                row[1] = _mm256_fmadd_ps(x, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(i * stride), row[0]);
            _mm256_storeu_ps(c.add(i * stride + 8), row[1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Tile;
    use std::arch::x86_64::*;
    const MR: usize = 12;
    const NR: usize = 32;

    pub unsafe fn kernel(kc: usize, a: &[f32], b: &[f32], tile: Tile) {
        tile.with_buffer::<MR, NR>(|c, stride| inner(kc, a.as_ptr(), b.as_ptr(), c, stride, tile.load || tile.rows < MR || tile.cols < NR))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn inner(kc: usize, a: *const f32, b: *const f32, c: *mut f32, stride: usize, load: bool) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        if load {
            for (i, row) in acc.iter_mut().enumerate() {
                row[0] = _mm512_loadu_ps(c.add(i * stride));
                row[1] = _mm512_loadu_ps(c.add(i * stride + 16));
            }
        }
        for kk in 0..kc {
            let (b0, b1) = (_mm512_loadu_ps(b.add(kk * NR)), _mm512_loadu_ps(b.add(kk * NR + 16)));
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(kk * MR + i));
                row[0] = _mm512_fmadd_ps(x, b0, row[0]);
                row[1] = _mm512_fmadd_ps(x, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(i * stride), row[0]);
            _mm512_storeu_ps(c.add(i * stride + 16), row[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain of FMAs by hand, in f32.
    fn reference(lhs: Strided, rhs: Strided, m: usize, n: usize, k: usize, start: &[f32]) -> Vec<f32> {
        let mut out = start.to_vec();
        for i in 0..m {
            for j in 0..n {
                let mut acc = out[i * n + j];
                for kk in 0..k {
                    acc = lhs.at(i, kk).mul_add(rhs.at(kk, j), acc);
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    #[test]
    fn every_path_gives_the_bits_of_one_fma_chain_per_output() {
        // Sizes that leave partial tiles and several k-blocks, operands plain and transposed.
        for &(m, n, k) in &[(1, 1, 1), (7, 19, 3), (61, 300, 784), (13, 45, 600), (100, 33, 257), (5, 2100, 300)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let start = values(m * n, 3);
            for (lhs, rhs) in [
                (Strided { data: &a, row_stride: k, col_stride: 1 }, Strided { data: &b, row_stride: n, col_stride: 1 }),
                (Strided { data: &a, row_stride: 1, col_stride: m }, Strided { data: &b, row_stride: 1, col_stride: k }),
            ] {
                for accumulate in [false, true] {
                    let zeros = vec![0f32; m * n];
                    let expected = reference(lhs, rhs, m, n, k, if accumulate { &start } else { &zeros });
                    for path in Path::available() {
                        let mut out = start.clone();
                        // SAFETY: `out` holds m × n values; the operands hold every entry.
                        unsafe { multiply(path, out.as_mut_ptr(), n, lhs, rhs, m, n, k, accumulate) };
                        let same = out.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{path:?} {m}x{n}x{k} accumulate={accumulate}");
                        // The same operand written straight into the packed layout, over a
                        // buffer of NaNs (every value the kernels read must be written).
                        let layout = PackedLayout::new(path, k, n);
                        let mut packed = vec![f32::NAN; layout.len()];
                        for row in 0..k {
                            for col in 0..n {
                                packed[layout.index(row, col)] = rhs.at(row, col);
                            }
                        }
                        layout.zero_padding(&mut packed);
                        let mut out = start.clone();
                        // SAFETY: as above; `packed` holds the layout's values.
                        unsafe { multiply_packed(path, out.as_mut_ptr(), n, lhs, &packed, layout, m, n, k, accumulate) };
                        let same = out.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "packed {path:?} {m}x{n}x{k} accumulate={accumulate}");
                    }
                }
            }
        }
    }
}
