//! What a network is to the training loop: a forward pass (training and evaluation) and one
//! training step's logits, loss and gradients.

use super::dropout::Dropout;
use crate::base::error::Result;
use candle_core::backprop::GradStore;
use candle_core::Tensor;

/// A forward pass over the parameters it was built from.
pub trait Network {
    /// Training: logits `(batch, classes)` for images `(batch, channels, height, width)`;
    /// `dropout` is given to networks that use it, and BatchNorm normalises with the batch's
    /// statistics (updating its running ones).
    fn forward_t(&self, xs: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor>;

    /// One training step's logits, mean cross-entropy and gradients for `labels`. By default
    /// candle's autograd differentiates [`Network::forward_t`]; a network may run (part of) its
    /// backward by hand, with the same bits.
    fn train_step(&self, xs: &Tensor, labels: &Tensor, dropout: Option<&mut Dropout>) -> Result<Step> {
        autograd_step(self.forward_t(xs, dropout)?, labels)
    }

    /// Evaluation: no dropout; BatchNorm uses its running statistics.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, None)
    }

    /// Whether [`Network::forward_feature_major`] evaluates this network (on the CPU).
    fn evaluates_feature_major(&self) -> bool {
        false
    }

    /// Evaluation logits `(n, classes)` from images already transposed to feature-major rows
    /// (`linear::feature_major`: the evaluation splits never change, so training transposes
    /// them once); `None` for networks that evaluate batch-major through [`Network::forward`].
    fn forward_feature_major(&self, _xs_t: &[f32], _n: usize, _width: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// What one training step computed.
pub struct Step {
    pub logits: Tensor,
    /// The mean cross-entropy over the batch (a scalar).
    pub loss: Tensor,
    /// The gradients of the loss, by parameter.
    pub grads: GradStore,
}

/// The loss of `logits` for `labels` and its gradients by candle's autograd.
pub fn autograd_step(logits: Tensor, labels: &Tensor) -> Result<Step> {
    let loss = crate::ops::loss::cross_entropy(&logits, labels)?;
    let grads = loss.backward()?;
    Ok(Step { logits, loss, grads })
}
