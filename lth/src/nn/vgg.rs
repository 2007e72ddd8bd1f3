//! VGG-19 for CIFAR-10 as the paper uses it (Liu et al. 2019's variant, docs/paper.md §2, App I.2):
//! 3x3 same-padding convolutions in the plan 64, 64, M, 128, 128, M, 256 ×4, M, 512 ×4, M,
//! 512 ×4, each followed by BatchNorm and ReLU, a 2x2 max-pool at each M, then the 2x2 average
//! pool of the last 2x2 maps and one fully connected layer 512 → 10. 20,024,000 weights:
//! 20,018,880 in convolutions and 5,120 in the output layer.
//!
//! The convolutions have no bias: BatchNorm subtracts the batch mean of every channel, so a
//! bias before it would never change the output and its gradient would be exactly 0 (its shift
//! does that job). The reference implementations (open_lth, Liu et al.) leave it out too.

use super::batchnorm::{self, BatchNorm, Mode};
use super::linear::{self, Compact, Linear};
use super::{param, Architecture, Dropout, LayerKind, Network, ParamInfo, Params};
use crate::base::error::Result;
use crate::ops::im2col::conv;
use crate::ops::pool::{global_average_pool, max_pool2x2};
use candle_core::Tensor;

/// Output channels of each convolution; `POOL` marks a max-pool.
const POOL: usize = 0;
const PLAN: [usize; 20] = [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512];
const CLASSES: usize = 10;

/// The convolutions' output channels, in order.
fn widths() -> impl Iterator<Item = usize> {
    PLAN.into_iter().filter(|&w| w != POOL)
}

pub fn architecture() -> Architecture {
    let mut params = Vec::new();
    let mut channels = 3;
    for (i, out) in widths().enumerate() {
        // Glorot for a convolution counts the receptive field: fan = channels · 3 · 3.
        params.push(ParamInfo {
            name: format!("conv{}.weight", i + 1),
            shape: vec![out, channels, 3, 3],
            prunable: Some(LayerKind::Conv),
            fan_in: channels * 9,
            fan_out: out * 9,
        });
        params.extend(batchnorm::params(&format!("bn{}", i + 1), out));
        channels = out;
    }
    params.extend(linear::params("fc", channels, CLASSES, LayerKind::Output));
    params.sort_by(|a, b| a.name.cmp(&b.name));
    Architecture { params }
}

pub struct Vgg {
    /// Weight and normalisation of each convolution, sharing storage with the parameter store.
    convs: Vec<(Tensor, BatchNorm)>,
    fc: Linear,
}

impl Vgg {
    pub fn new(params: &Params, compact: &Compact) -> Result<Self> {
        let layer = |i: usize| Ok((param(params, &format!("conv{i}.weight"))?, BatchNorm::new(params, &format!("bn{i}"))?));
        Ok(Vgg { convs: (1..=widths().count()).map(layer).collect::<Result<_>>()?, fc: Linear::new(params, "fc", compact)? })
    }

    /// `fuse`: BatchNorm and ReLU as one op where the CPU can (`BatchNorm::forward_relu`);
    /// false composes candle's ops (the tests' reference).
    ///
    /// # Shapes
    /// `xs`: `(batch, 3, 32, 32)` → logits `(batch, 10)`.
    fn run(&self, xs: &Tensor, mode: Mode, fuse: bool) -> Result<Tensor> {
        let mut xs = xs.clone();
        let mut convs = self.convs.iter();
        for width in PLAN {
            if width == POOL {
                xs = max_pool2x2(&xs)?;
            } else if let Some((w, bn)) = convs.next() {
                xs = bn.forward_relu(&conv(&xs, w, 1)?, None, mode, fuse)?;
            }
        }
        self.fc.forward(&global_average_pool(&xs)?, true)
    }
}

impl Network for Vgg {
    fn forward_t(&self, xs: &Tensor, _dropout: Option<&mut Dropout>) -> Result<Tensor> {
        self.run(xs, Mode::Train, true)
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, Mode::Eval, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::spec::ModelKind;
    use crate::nn::batchnorm::fusion::assert_fusion_keeps_the_bits;

    #[test]
    fn fusing_batch_norm_and_relu_keeps_the_bits() {
        assert_fusion_keeps_the_bits(ModelKind::Vgg19, |params, xs, mode, fuse| Vgg::new(params, &Compact::none()).unwrap().run(xs, mode, fuse).unwrap());
    }
}
