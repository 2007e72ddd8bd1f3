//! Mean softmax cross-entropy with its gradient, as one CPU op whose sums run in a fixed order
//! and whose `exp`/`ln` are the project's own (`crate::ops::math`), so a loss and its gradient are
//! the same bits on every machine. candle's `cross_entropy` (log-softmax then a gathered mean)
//! calls the platform's libm and sums rows with vector code chosen at run time. On other
//! devices (CUDA) candle's is used.

use super::device::{fast_kernels, scalar, to_host};
use super::host::{f32_slice, with_f32};
use crate::base::error::Result;
use crate::ops::math::{exp, ln};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// The mean over the batch of `−ln softmax(logits)[label]`: `logits` (batch, classes) f32,
/// `labels` (batch) u32.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if !fast_kernels(logits.device()) {
        return Ok(candle_nn::loss::cross_entropy(logits, labels)?);
    }
    Ok(logits.contiguous()?.apply_op2(&labels.contiguous()?, CrossEntropy)?)
}

struct CrossEntropy;

/// One row's log-sum-exp pieces: its maximum and Σ exp(x − max), summed left to right in f64.
fn row_stats(row: &[f32]) -> (f32, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = row.iter().map(|&x| exp((x - max) as f64)).fold(0.0, |s, e| s + e);
    (max, sum)
}

fn labels_of<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [u32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::U32(labels), Some((start, end))) => Ok(&labels[start..end]),
        _ => candle_core::bail!("cross-entropy: labels must be contiguous u32"),
    }
}

fn check(batch: usize, classes: usize, labels: &[u32]) -> candle_core::Result<()> {
    if labels.len() != batch {
        candle_core::bail!("cross-entropy: {batch} rows of logits, {} labels", labels.len())
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        candle_core::bail!("cross-entropy: label {bad} with {classes} classes")
    }
    Ok(())
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, logits: &CpuStorage, logits_l: &Layout, labels: &CpuStorage, labels_l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, classes) = logits_l.shape().dims2()?;
        let (logits, labels) = (f32_slice(logits, logits_l, self.name())?, labels_of(labels, labels_l)?);
        check(batch, classes, labels)?;
        let mut total = 0.0;
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let (max, sum) = row_stats(row);
            // −ln softmax = ln Σ exp(x − max) − (x_label − max)
            total += ln(sum) - (row[label as usize] - max) as f64;
        }
        Ok((CpuStorage::F32(vec![(total / batch as f64) as f32]), Shape::from(())))
    }

    fn bwd(&self, logits: &Tensor, labels: &Tensor, _loss: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (batch, classes) = logits.dims2()?;
        let scale = scalar::<f32>(grad)? as f64 / batch as f64;
        let labels = to_host::<u32>(labels)?;
        let grad_logits = with_f32(logits, self.name(), |logits| {
            let mut out = vec![0f32; batch * classes];
            for ((row, out), &label) in logits.chunks_exact(classes).zip(out.chunks_exact_mut(classes)).zip(&labels) {
                let (max, sum) = row_stats(row);
                for (j, (o, &x)) in out.iter_mut().zip(row).enumerate() {
                    let target = if j == label as usize { 1.0 } else { 0.0 };
                    *o = ((exp((x - max) as f64) / sum - target) * scale) as f32;
                }
            }
            out
        })?;
        Ok((Some(Tensor::from_vec(grad_logits, (batch, classes), logits.device())?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candles_loss_and_gradient() {
        let values: Vec<f32> = (0..60).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0).collect();
        let logits = Var::from_vec(values, (6, 10), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 9, 3, 3, 7, 1], &Device::Cpu).unwrap();
        let ours = cross_entropy(logits.as_tensor(), &labels).unwrap();
        let theirs = candle_nn::loss::cross_entropy(logits.as_tensor(), &labels).unwrap();
        let (a, b) = (ours.to_scalar::<f32>().unwrap(), theirs.to_scalar::<f32>().unwrap());
        assert!((a - b).abs() < 1e-6, "loss {a} vs {b}");
        let (ga, gb) = (ours.backward().unwrap(), theirs.backward().unwrap());
        let ga = ga.get(logits.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gb = gb.get(logits.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-7, "gradient {x} vs {y}");
        }
    }

    #[test]
    fn a_label_out_of_range_is_an_error_not_a_panic() {
        let logits = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
        assert!(cross_entropy(&logits, &labels).is_err());
    }
}
