//! LeNet-300-100 (docs/paper.md Fig 2): 784 → 300 → 100 → 10, fully connected, ReLU.
//! 266,200 prunable weights; `fc3` is the output layer (pruned at half the fc rate).

use super::linear::{self, Compact, Linear};
use super::{Architecture, Dropout, LayerKind, Network, Params};
use crate::base::error::Result;
use candle_core::Tensor;

const SIZES: [usize; 4] = [784, 300, 100, 10];

pub fn architecture() -> Architecture {
    let mut params = Vec::new();
    for (i, pair) in SIZES.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let kind = if i + 2 == SIZES.len() { LayerKind::Output } else { LayerKind::Fc };
        let layer = format!("fc{}", i + 1);
        params.extend(linear::params(&layer, fan_in, fan_out, kind));
    }
    params.sort_by(|a, b| a.name.cmp(&b.name));
    Architecture { params }
}

pub struct LeNet {
    /// Sharing storage with the parameter store.
    layers: Vec<Linear>,
}

impl LeNet {
    pub fn new(params: &Params, compact: &Compact) -> Result<Self> {
        let layers = (1..SIZES.len()).map(|i| Linear::new(params, &format!("fc{i}"), compact)).collect::<Result<_>>()?;
        Ok(LeNet { layers })
    }
}

impl Network for LeNet {
    /// # Shapes
    /// `xs`: `(batch, 1, 28, 28)` → logits `(batch, 10)`.
    fn forward_t(&self, xs: &Tensor, _dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let mut xs = xs.flatten_from(1)?;
        for (i, layer) in self.layers.iter().enumerate() {
            // The first layer's input is the data: no gradient needed.
            xs = if i + 1 < self.layers.len() { layer.forward_relu(&xs, i > 0)? } else { layer.forward(&xs, i > 0)? };
        }
        Ok(xs)
    }

    fn evaluates_feature_major(&self) -> bool {
        self.layers.iter().all(Linear::fast)
    }

    fn forward_feature_major(&self, xs_t: &[f32], n: usize, width: usize) -> Result<Option<Tensor>> {
        let mut hs = std::borrow::Cow::Borrowed(xs_t);
        for (i, layer) in self.layers.iter().enumerate() {
            hs = std::borrow::Cow::Owned(layer.forward_feature_major(&hs, width, i + 1 < self.layers.len())?);
        }
        Ok(Some(super::linear::batch_major(&hs, n, width)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_count_matches_the_paper() {
        // 784·300 + 300·100 + 100·10 = 266,200 ("266K", docs/paper.md §1).
        assert_eq!(architecture().n_weights(), 266_200);
    }
}
