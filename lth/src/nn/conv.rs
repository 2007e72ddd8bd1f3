//! Conv-2, Conv-4 and Conv-6 (docs/paper.md Fig 2, after Simonyan & Zisserman): pairs of 3x3
//! same-padding convolutions (64, then 128, then 256 channels), a 2x2 max-pool after each pair,
//! then fully connected 256-256-10; ReLU throughout. With dropout (Fig 6), p applies after each
//! hidden fully connected layer: the paper does not say which layers, and the fc layers hold
//! 99/89/49% of the weights. Conv-6 is built as described (2,261,184 weights), not as Fig 2's
//! 1.7M count (docs/paper.md §2 explains the discrepancy).

use super::dropout::Dropout;
use super::linear::{self, Compact, Linear};
use super::{autograd_step, param, Architecture, LayerKind, Network, ParamInfo, Params, Step};
use crate::base::error::{Error, Result};
use crate::base::spec::ModelKind;
use crate::ops::applied::Applied;
use crate::ops::conv_relu::{conv3x3_relu, conv3x3_relu_applied};
use crate::ops::device::fast_kernels;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// Output channels of each convolution.
pub fn widths(kind: ModelKind) -> &'static [usize] {
    match kind {
        ModelKind::Conv2 => &[64, 64],
        ModelKind::Conv4 => &[64, 64, 128, 128],
        _ => &[64, 64, 128, 128, 256, 256],
    }
}

const FC: [usize; 3] = [256, 256, 10];

pub fn architecture(kind: ModelKind) -> Architecture {
    let widths = widths(kind);
    let mut params = Vec::new();
    let mut channels = 3;
    for (i, &out) in widths.iter().enumerate() {
        let name = format!("conv{}", i + 1);
        // Glorot for a convolution counts the receptive field: fan = channels · 3 · 3.
        let (fan_in, fan_out) = (channels * 9, out * 9);
        params.push(ParamInfo { name: format!("{name}.weight"), shape: vec![out, channels, 3, 3], prunable: Some(LayerKind::Conv), fan_in, fan_out });
        params.push(ParamInfo { name: format!("{name}.bias"), shape: vec![out], prunable: None, fan_in, fan_out });
        channels = out;
    }
    let side = 32 >> (widths.len() / 2);
    let mut inputs = channels * side * side;
    for (i, &out) in FC.iter().enumerate() {
        let kind = if i + 1 == FC.len() { LayerKind::Output } else { LayerKind::Fc };
        let name = format!("fc{}", i + 1);
        params.extend(linear::params(&name, inputs, out, kind));
        inputs = out;
    }
    params.sort_by(|a, b| a.name.cmp(&b.name));
    Architecture { params }
}

pub struct ConvNet {
    /// (weight, bias) per convolution, sharing storage with the parameter store.
    convs: Vec<(Tensor, Tensor)>,
    fcs: Vec<Linear>,
}

impl ConvNet {
    pub fn new(kind: ModelKind, params: &Params, compact: &Compact) -> Result<Self> {
        let conv = |i: usize| Ok((param(params, &format!("conv{i}.weight"))?, param(params, &format!("conv{i}.bias"))?));
        Ok(ConvNet {
            convs: (1..=widths(kind).len()).map(conv).collect::<Result<_>>()?,
            fcs: (1..=FC.len()).map(|i| Linear::new(params, &format!("fc{i}"), compact)).collect::<Result<_>>()?,
        })
    }
}

impl ConvNet {
    /// The fully connected layers from the `first`, each hidden one through ReLU and then
    /// `dropout`: `xs` (batch, features) → logits (batch, 10).
    fn fully_connected(&self, mut xs: Tensor, first: usize, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        for (i, layer) in self.fcs.iter().enumerate().skip(first) {
            if i + 1 < self.fcs.len() {
                xs = layer.forward_relu(&xs, true)?;
                if let Some(d) = dropout.as_deref_mut() {
                    xs = d.apply(&xs)?;
                }
            } else {
                xs = layer.forward(&xs, true)?;
            }
        }
        Ok(xs)
    }
}

/// Stores the gradients of an op's weight and bias (its second and third inputs).
fn keep_gradients(grads: &mut GradStore, op: &Applied, weight: Option<Tensor>, bias: Option<Tensor>) {
    for (i, g) in [(1, weight), (2, bias)] {
        if let Some(g) = g {
            grads.insert(op.arg(i), g);
        }
    }
}

impl Network for ConvNet {
    /// # Shapes
    /// `xs`: `(batch, 3, 32, 32)` → logits `(batch, 10)`.
    fn forward_t(&self, xs: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, (w, b)) in self.convs.iter().enumerate() {
            xs = conv3x3_relu(&xs, w, b, i % 2 == 1)?;
        }
        self.fully_connected(xs.flatten_from(1)?, 0, dropout)
    }

    /// On the CPU, the convolutions and the first fully connected layer (with its dropout) run
    /// their backward by hand, each op's own, in reverse order; the small rest of the network
    /// (two fully connected layers on 256 features, and the loss) goes through candle's
    /// autograd from a leaf cut after the first layer. Nothing branches in this chain, so each
    /// gradient is its op's alone; candle would add it to a zeroed tensor, which changes no
    /// bit of what these ops compute from it (each adds +0 itself, or multiplies by the ReLU's
    /// 0/1, then adds +0; a test compares every gradient with autograd's).
    fn train_step(&self, xs: &Tensor, labels: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Step> {
        let first = &self.fcs[0];
        if !fast_kernels(xs.device()) || !first.fast() {
            return autograd_step(self.forward_t(xs, dropout)?, labels);
        }
        let mut convs: Vec<Applied> = Vec::with_capacity(self.convs.len());
        for (i, (w, b)) in self.convs.iter().enumerate() {
            let input = convs.last().map_or(xs, |c| &c.out);
            convs.push(conv3x3_relu_applied(input, w, b, i % 2 == 1)?);
        }
        let maps = convs.last().map_or(xs, |c| &c.out);
        let fc1 = first.forward_relu_applied(&maps.flatten_from(1)?, true)?;
        let mask = dropout.as_deref_mut().map(|d| d.mask(&fc1.out)).transpose()?;
        let hidden = match &mask {
            Some(mask) => fc1.out.mul(mask)?,
            None => fc1.out.clone(),
        };
        let cut = Var::from_tensor(&hidden)?;
        let mut step = autograd_step(self.fully_connected(cut.as_tensor().clone(), 1, dropout)?, labels)?;
        let grads = &mut step.grads;
        let no_gradient = || Error::Invalid("conv net: no gradient reached the first fully connected layer".into());
        let mut grad = grads.remove(cut.as_tensor()).ok_or_else(no_gradient)?;
        if let Some(mask) = &mask {
            grad = grad.mul(mask)?;
        }
        let [input, weight, bias] = fc1.backward(&grad)?;
        keep_gradients(grads, &fc1, weight, bias);
        let mut grad = input.map(|g| g.reshape(maps.shape())).transpose()?;
        for conv in convs.iter().rev() {
            let Some(g) = grad else { break };
            let [input, weight, bias] = conv.backward(&g)?;
            keep_gradients(grads, conv, weight, bias);
            grad = input;
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::seeds::{stream, Purpose};
    use crate::nn::{self, linear::Compact, Dropout};
    use crate::sparsity::masks::Mask;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// The backward by hand gives autograd's logits, loss and every gradient, bit for bit: with
    /// and without dropout, with the first fully connected layer dense and sparse, and with
    /// channels whose ReLU is dead (exact zeros in the gradients).
    #[test]
    fn the_backward_by_hand_gives_the_bits_of_autograd() {
        let (kind, batch) = (ModelKind::Conv2, 3);
        let arch = Architecture::of(kind);
        let mut weights = nn::initial_weights(&arch, &mut stream(7, Purpose::Init));
        // Two channels of each convolution that never fire, and biases that are not all zero.
        for name in ["conv1.bias", "conv2.bias"] {
            let bias = weights.get_mut(name).unwrap();
            bias.iter_mut().enumerate().for_each(|(i, b)| *b = if i < 2 { -100.0 } else { 0.01 * (i % 5) as f32 - 0.02 });
        }
        let dense = nn::to_params(&arch, &weights, &Device::Cpu).unwrap();
        // The first fully connected layer at 10% (sparse), everything else dense.
        let mut sparse_mask = Mask::dense(&arch);
        sparse_mask.layers.get_mut("fc1.weight").unwrap().keep.iter_mut().enumerate().for_each(|(i, k)| *k = if i % 10 == 3 { 1.0 } else { 0.0 });
        let xs: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
        let xs = Tensor::from_vec(xs, (batch, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[3u32, 0, 9], &Device::Cpu).unwrap();
        for (compact, label) in [(Compact::none(), "dense"), (Compact::choose(&sparse_mask, true), "sparse fc1")] {
            assert_eq!(compact.is_sparse("fc1.weight"), label == "sparse fc1");
            let params = compact.params(&dense).unwrap();
            let net = ConvNet::new(kind, &params, &compact).unwrap();
            for with_dropout in [false, true] {
                let dropout = || with_dropout.then(|| Dropout::new(0.5, stream(1, Purpose::Dropout)));
                let (mut d1, mut d2) = (dropout(), dropout());
                let by_hand = net.train_step(&xs, &labels, d1.as_mut()).unwrap();
                let autograd = autograd_step(net.forward_t(&xs, d2.as_mut()).unwrap(), &labels).unwrap();
                let case = format!("{label}, dropout {with_dropout}");
                assert_eq!(bits(&by_hand.logits), bits(&autograd.logits), "logits, {case}");
                assert_eq!(bits(&by_hand.loss), bits(&autograd.loss), "loss, {case}");
                for (name, var) in &params {
                    let (a, b) = (by_hand.grads.get(var.as_tensor()), autograd.grads.get(var.as_tensor()));
                    let (a, b) = (a.unwrap_or_else(|| panic!("{name}: no gradient by hand, {case}")), b.unwrap());
                    assert_eq!(bits(a), bits(b), "{name} gradient, {case}");
                }
                let zeros = bits(by_hand.grads.get(params["conv1.weight"].as_tensor()).unwrap()).iter().filter(|&&v| v == 0).count();
                assert!(zeros >= 2 * 27, "the dead channels' weight gradients are zero ({zeros} zeros), {case}");
            }
        }
    }

    #[test]
    fn weight_counts_match_the_architectures() {
        // docs/paper.md §2 [derived]: all / conv weights.
        for (kind, all, conv) in [(ModelKind::Conv2, 4_300_992, 38_592), (ModelKind::Conv4, 2_425_024, 259_776), (ModelKind::Conv6, 2_261_184, 1_144_512)] {
            let arch = architecture(kind);
            let conv_weights: usize = arch.prunable().filter(|p| p.prunable == Some(LayerKind::Conv)).map(ParamInfo::numel).sum();
            assert_eq!((arch.n_weights(), conv_weights), (all, conv), "{kind:?}");
        }
    }
}
