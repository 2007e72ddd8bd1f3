//! Pooling as CPU custom ops: 2x2 max-pooling (Conv-2/4/6, VGG-19) and global average pooling
//! (VGG-19's 2x2 average pool of its 2x2 maps, ResNet-18's 8x8 one).
//!
//! candle 0.11's max-pool backward multiplies the gradient by the average of the window's
//! "is maximal" mask, so a unique maximum receives a quarter of its gradient (`backprop.rs`,
//! `Op::MaxPool2D`); through VGG-19's four pools that scales the first convolutions' gradients
//! by up to 1/256. Here the whole gradient goes to the first maximum of each window in
//! row-major order, as PyTorch does. Averages sum in an order fixed by the code
//! ([`fixed_sum`]), never by the thread count. On other devices candle's own ops are used.

use super::device::fast_kernels;
use super::host::f32_slice;
use crate::base::error::Result;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Max over each 2x2 window: `(n, c, h, w)` → `(n, c, h/2, w/2)`; `h` and `w` must be even.
pub fn max_pool2x2(xs: &Tensor) -> Result<Tensor> {
    if fast_kernels(xs.device()) {
        return Ok(xs.contiguous()?.apply_op1(MaxPool2x2)?);
    }
    max_pool2x2_candle(xs)
}

/// The same pooling as candle ops for other devices (CUDA) and the CPU's generic path, with
/// the same gradient: each window becomes a last axis of 4, and its output is the sum of the
/// window times a 0/1 mask of its first maximum (row-major), so the gradient goes whole to that
/// one value, as in [`max_pool2x2`] and PyTorch. candle's `max` would send it to every tied
/// maximum, and after ReLU whole windows tie at 0: where the value before ReLU is exactly 0 (a
/// channel whose batch variance is 0 normalises to 0), that gradient passes ReLU, and VGG-19's
/// BatchNorm shifts got up to 4 times theirs. The mask is exact: 0/1 values, a cumulative sum of
/// four of them; the forward value is the maximum plus three zeros.
pub fn max_pool2x2_candle(xs: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let windows = xs.reshape((n, c, h / 2, 2, w / 2, 2))?.permute((0, 1, 2, 4, 3, 5))?.contiguous()?.reshape((n, c, h / 2, w / 2, 4))?;
    let values = windows.detach();
    let is_max = values.broadcast_eq(&values.max_keepdim(4)?)?.to_dtype(xs.dtype())?;
    let first = (&is_max * is_max.cumsum(4)?.eq(1.0)?.to_dtype(xs.dtype())?)?;
    Ok((windows * first)?.sum(4)?)
}

/// Mean over each whole map: `(n, c, h, w)` → `(n, c)`.
pub fn global_average_pool(xs: &Tensor) -> Result<Tensor> {
    if fast_kernels(xs.device()) {
        return Ok(xs.contiguous()?.apply_op1(GlobalAveragePool)?);
    }
    Ok(xs.mean(3)?.mean(2)?)
}

/// Sums `term(i)` for `i` in `0..n` in eight interleaved f32 lanes, then the lanes and the
/// tail in order in f64: an order fixed by the code (the compiler may vectorise the lanes, but
/// never reorders them), so every machine and thread count gets the same bits.
#[inline(always)]
pub fn fixed_sum(values: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().chain(tail).fold(0f64, |sum, &v| sum + v as f64)
}

struct MaxPool2x2;

/// The input dimensions of a 2x2 pool, or an error for odd maps.
fn pool_dims(layout: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = layout.shape().dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("max-pool 2x2: maps of {h}x{w} are not even");
    }
    Ok((n, c, h, w))
}

/// The index, within a map of width `w`, of the first maximum (row-major) of the 2x2 window at
/// output (y, x).
#[inline(always)]
fn argmax(map: &[f32], w: usize, y: usize, x: usize) -> usize {
    let top = 2 * y * w + 2 * x;
    let mut best = top;
    for i in [top + 1, top + w, top + w + 1] {
        if map[i] > map[best] {
            best = i;
        }
    }
    best
}

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = pool_dims(layout)?;
        let xs = f32_slice(storage, layout, self.name())?;
        let (ho, wo) = (h / 2, w / 2);
        let mut ys = vec![0f32; n * c * ho * wo];
        ys.par_chunks_mut(ho * wo).zip(xs.par_chunks(h * w)).for_each(|(out, map)| {
            for y in 0..ho {
                for x in 0..wo {
                    out[y * wo + x] = map[argmax(map, w, y, x)];
                }
            }
        });
        Ok((CpuStorage::F32(ys), Shape::from((n, c, ho, wo))))
    }

    /// Each window's gradient goes whole to its first maximum; windows do not overlap, so
    /// nothing is summed.
    fn bwd(&self, xs: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = xs.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let grad = grad.contiguous()?;
        let mut grad_xs = vec![0f32; n * c * h * w];
        super::host::with_f32(xs, self.name(), |xs| {
            super::host::with_f32(&grad, self.name(), |grad| {
                grad_xs.par_chunks_mut(h * w).zip(xs.par_chunks(h * w)).zip(grad.par_chunks(ho * wo)).for_each(|((out, map), g)| {
                    for y in 0..ho {
                        for x in 0..wo {
                            out[argmax(map, w, y, x)] = g[y * wo + x];
                        }
                    }
                })
            })
        })??;
        Ok(Some(Tensor::from_vec(grad_xs, (n, c, h, w), xs.device())?))
    }
}

struct GlobalAveragePool;

impl CustomOp1 for GlobalAveragePool {
    fn name(&self) -> &'static str {
        "global-average-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let xs = f32_slice(storage, layout, self.name())?;
        let ys = xs.chunks_exact(h * w).map(|map| (fixed_sum(map) / (h * w) as f64) as f32).collect();
        Ok((CpuStorage::F32(ys), Shape::from((n, c))))
    }

    fn bwd(&self, xs: &Tensor, _ys: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = xs.dims4()?;
        let scale = 1.0 / (h * w) as f64;
        Ok(Some((grad.reshape((n, c, 1, 1))? * scale)?.broadcast_as((n, c, h, w))?.contiguous()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn max_pool_sends_the_whole_gradient_to_the_first_maximum() {
        // One 2x6 map: windows [1 5 / 3 2] (max 5, unique), [7 7 / 0 7] (ties: the first 7) and
        // [0 0 / 0 0] (after ReLU: all tied), through the CPU kernel and the candle ops.
        let xs = Var::from_vec(vec![1f32, 5., 7., 7., 0., 0., 3., 2., 0., 7., 0., 0.], (1, 1, 2, 6), &Device::Cpu).unwrap();
        for pool in [max_pool2x2, max_pool2x2_candle] {
            let ys = pool(xs.as_tensor()).unwrap();
            assert_eq!(ys.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![5., 7., 0.]);
            let weights = Tensor::new(&[[[[10f32, 100., 1000.]]]], &Device::Cpu).unwrap();
            let grads = (ys * weights).unwrap().sum_all().unwrap().backward().unwrap();
            let grad = grads.get(xs.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // candle's own max_pool2d backward would give 2.5 (and 25 to every 7); its `max`,
            // 100 to every 7 and 1000 to every 0.
            assert_eq!(grad, vec![0., 10., 100., 0., 1000., 0., 0., 0., 0., 0., 0., 0.]);
        }
    }

    #[test]
    fn the_candle_ops_version_agrees_where_maxima_are_unique() {
        let values: Vec<f32> = (0..2 * 3 * 4 * 6).map(|i| ((i * 37 % 101) as f32) / 7.0).collect();
        let xs = Var::from_vec(values, (2, 3, 4, 6), &Device::Cpu).unwrap();
        let upstream = Tensor::from_vec((0..2 * 3 * 2 * 3).map(|i| i as f32 - 5.0).collect::<Vec<_>>(), (2, 3, 2, 3), &Device::Cpu).unwrap();
        let outputs = [max_pool2x2(xs.as_tensor()).unwrap(), max_pool2x2_candle(xs.as_tensor()).unwrap()];
        assert_eq!(outputs[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(), outputs[1].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let grads: Vec<Vec<f32>> = outputs
            .iter()
            .map(|ys| {
                let g = (ys * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(xs.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        assert_eq!(grads[0], grads[1]);
    }

    #[test]
    fn global_average_pool_matches_candle_and_spreads_its_gradient() {
        let values: Vec<f32> = (0..2 * 3 * 5 * 5).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let xs = Var::from_vec(values, (2, 3, 5, 5), &Device::Cpu).unwrap();
        let ours = global_average_pool(xs.as_tensor()).unwrap();
        let theirs = xs.as_tensor().mean(3).unwrap().mean(2).unwrap();
        let diff = (ours.clone() - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{diff}");
        let grads = ours.sum_all().unwrap().backward().unwrap();
        let grad = grads.get(xs.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(grad.iter().all(|&g| (g - 1.0 / 25.0).abs() < 1e-7));
    }

    #[test]
    fn fixed_sum_is_exact_on_small_integers() {
        let values: Vec<f32> = (1..=21).map(|i| i as f32).collect();
        assert_eq!(fixed_sum(&values), 231.0);
    }
}
