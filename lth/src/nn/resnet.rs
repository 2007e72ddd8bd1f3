//! The paper's "ResNet-18": the CIFAR-10 ResNet of He et al. with 20 layers (docs/paper.md §2, App
//! I.3; open_lth's `cifar_resnet_20`). A 3x3 convolution 3 → 16 with BatchNorm and ReLU; three
//! stages of three basic blocks at 16, 32 and 64 channels (conv-BN-ReLU-conv-BN, plus the
//! shortcut, then ReLU); the first block of stages 2 and 3 has stride 2 and a 1x1 stride-2
//! convolution with BatchNorm as its shortcut, the others the identity; global average pool;
//! fully connected 64 → 10. 270,896 weights: 267,696 in 3x3 convolutions, 2,560 in the 1x1
//! shortcuts (never pruned, App I.3) and 640 in the output layer. No convolution has a bias
//! (BatchNorm follows each one; see `vgg`).

use super::batchnorm::{self, BatchNorm, Mode};
use super::linear::{self, Compact, Linear};
use super::{param, Architecture, Dropout, LayerKind, Network, ParamInfo, Params};
use crate::base::error::Result;
use crate::ops::im2col::conv;
use crate::ops::pool::global_average_pool;
use candle_core::Tensor;

const STAGES: [usize; 3] = [16, 32, 64];
const BLOCKS_PER_STAGE: usize = 3;
const CLASSES: usize = 10;

/// One basic block's shape.
struct BlockShape {
    inputs: usize,
    width: usize,
    stride: usize,
}

impl BlockShape {
    /// A block that changes the width (and halves the maps) needs a projection shortcut.
    fn projects(&self) -> bool {
        self.inputs != self.width
    }
}

fn blocks() -> Vec<BlockShape> {
    let mut inputs = STAGES[0];
    let mut out = Vec::new();
    for (stage, &width) in STAGES.iter().enumerate() {
        for block in 0..BLOCKS_PER_STAGE {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            out.push(BlockShape { inputs, width, stride });
            inputs = width;
        }
    }
    out
}

fn conv_param(name: String, out: usize, inputs: usize, kernel: usize, kind: LayerKind) -> ParamInfo {
    let field = kernel * kernel;
    ParamInfo { name, shape: vec![out, inputs, kernel, kernel], prunable: Some(kind), fan_in: inputs * field, fan_out: out * field }
}

pub fn architecture() -> Architecture {
    let mut params = vec![conv_param("conv.weight".into(), STAGES[0], 3, 3, LayerKind::Conv)];
    params.extend(batchnorm::params("bn", STAGES[0]));
    for (b, shape) in blocks().iter().enumerate() {
        params.push(conv_param(format!("block{b}.conv1.weight"), shape.width, shape.inputs, 3, LayerKind::Conv));
        params.extend(batchnorm::params(&format!("block{b}.bn1"), shape.width));
        params.push(conv_param(format!("block{b}.conv2.weight"), shape.width, shape.width, 3, LayerKind::Conv));
        params.extend(batchnorm::params(&format!("block{b}.bn2"), shape.width));
        if shape.projects() {
            params.push(conv_param(format!("block{b}.shortcut.weight"), shape.width, shape.inputs, 1, LayerKind::Shortcut));
            params.extend(batchnorm::params(&format!("block{b}.shortcut_bn"), shape.width));
        }
    }
    let last = STAGES[STAGES.len() - 1];
    params.extend(linear::params("fc", last, CLASSES, LayerKind::Output));
    params.sort_by(|a, b| a.name.cmp(&b.name));
    Architecture { params }
}

/// A convolution and the normalisation after it.
struct ConvBn {
    weight: Tensor,
    bn: BatchNorm,
    stride: usize,
}

impl ConvBn {
    fn new(params: &Params, conv_name: &str, bn_name: &str, stride: usize) -> Result<Self> {
        Ok(ConvBn { weight: param(params, &format!("{conv_name}.weight"))?, bn: BatchNorm::new(params, bn_name)?, stride })
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.forward(&conv(xs, &self.weight, self.stride)?, mode)
    }

    /// `relu(self.forward(xs) + shortcut)`, or `relu(self.forward(xs))`; `fuse` as
    /// `BatchNorm::forward_relu`.
    fn forward_relu(&self, xs: &Tensor, shortcut: Option<&Tensor>, mode: Mode, fuse: bool) -> Result<Tensor> {
        self.bn.forward_relu(&conv(xs, &self.weight, self.stride)?, shortcut, mode, fuse)
    }
}

struct Block {
    first: ConvBn,
    second: ConvBn,
    /// The projection; None for the identity.
    shortcut: Option<ConvBn>,
}

pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    fc: Linear,
}

impl ResNet {
    pub fn new(params: &Params, compact: &Compact) -> Result<Self> {
        let block = |(b, shape): (usize, &BlockShape)| -> Result<Block> {
            let name = |part: &str| format!("block{b}.{part}");
            Ok(Block {
                first: ConvBn::new(params, &name("conv1"), &name("bn1"), shape.stride)?,
                second: ConvBn::new(params, &name("conv2"), &name("bn2"), 1)?,
                shortcut: if shape.projects() { Some(ConvBn::new(params, &name("shortcut"), &name("shortcut_bn"), shape.stride)?) } else { None },
            })
        };
        Ok(ResNet {
            stem: ConvBn::new(params, "conv", "bn", 1)?,
            blocks: blocks().iter().enumerate().map(block).collect::<Result<_>>()?,
            fc: Linear::new(params, "fc", compact)?,
        })
    }

    /// `fuse`: BatchNorm, the residual addition and ReLU as one op where the CPU can
    /// (`BatchNorm::forward_relu`); false composes candle's ops (the tests' reference).
    ///
    /// # Shapes
    /// `xs`: `(batch, 3, 32, 32)` → logits `(batch, 10)`.
    fn run(&self, xs: &Tensor, mode: Mode, fuse: bool) -> Result<Tensor> {
        let mut xs = self.stem.forward_relu(xs, None, mode, fuse)?;
        for block in &self.blocks {
            let hidden = block.first.forward_relu(&xs, None, mode, fuse)?;
            let shortcut = match &block.shortcut {
                Some(projection) => projection.forward(&xs, mode)?,
                None => xs,
            };
            xs = block.second.forward_relu(&hidden, Some(&shortcut), mode, fuse)?;
        }
        self.fc.forward(&global_average_pool(&xs)?, true)
    }
}

impl Network for ResNet {
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
    fn fusing_batch_norm_the_shortcut_and_relu_keeps_the_bits() {
        assert_fusion_keeps_the_bits(ModelKind::Resnet18, |params, xs, mode, fuse| ResNet::new(params, &Compact::none()).unwrap().run(xs, mode, fuse).unwrap());
    }
}
