//! Each architecture by its `ModelKind`: its parameter list, its network over a parameter
//! store, and its seeded initial values.

use super::params::{Architecture, Params, Weights};
use super::{conv, init, lenet, linear, resnet, vgg, Network};
use crate::base::error::Result;
use crate::base::spec::ModelKind;

impl Architecture {
    pub fn of(kind: ModelKind) -> Self {
        match kind {
            ModelKind::Lenet300100 => lenet::architecture(),
            ModelKind::Conv2 | ModelKind::Conv4 | ModelKind::Conv6 => conv::architecture(kind),
            ModelKind::Vgg19 => vgg::architecture(),
            ModelKind::Resnet18 => resnet::architecture(),
        }
    }
}

/// Builds the network of `kind` over `params` (which it shares, so optimizer updates show).
/// The layers `compact` names train sparse, over their compact weights in `params`
/// (`linear`); pass `Compact::none()` for dense parameters.
pub fn build(kind: ModelKind, params: &Params, compact: &linear::Compact) -> Result<Box<dyn Network>> {
    match kind {
        ModelKind::Lenet300100 => Ok(Box::new(lenet::LeNet::new(params, compact)?)),
        ModelKind::Conv2 | ModelKind::Conv4 | ModelKind::Conv6 => Ok(Box::new(conv::ConvNet::new(kind, params, compact)?)),
        ModelKind::Vgg19 => Ok(Box::new(vgg::Vgg::new(params, compact)?)),
        ModelKind::Resnet18 => Ok(Box::new(resnet::ResNet::new(params, compact)?)),
    }
}

/// Seeded initial values of every parameter (theta0, and reinit's fresh draws): Gaussian
/// Glorot weights, zero biases, and BatchNorm's initial state (scale 1, shift 0, running mean
/// 0, running variance 1; PyTorch's, the paper does not say).
pub fn initial_weights(arch: &Architecture, rng: &mut rand_chacha::ChaCha8Rng) -> Weights {
    let mut weights = init::glorot_normal(arch, rng);
    super::batchnorm::set_initial_state(&mut weights);
    weights
}
