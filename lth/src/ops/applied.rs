//! A three-input custom op applied with the op kept, so that a network can run its backward by
//! hand instead of through candle's autograd. candle's `GradStore` starts every gradient it
//! receives as a zeroed tensor and adds the op's gradient to it, on the calling thread alone:
//! for a Conv-2 step that was a 16 MB zero-fill and addition for the first fully connected
//! weights and as much again for the activations, while the second core waited (README,
//! Speed). Calling the op's own `bwd` gives the same values without that pass.

use crate::base::error::Result;
use candle_core::{CustomOp3, Tensor};
use std::sync::Arc;

/// `args[0].apply_op3(args[1], args[2], op)`, with the op and its inputs kept.
pub struct Applied {
    op: Arc<Box<dyn CustomOp3 + Send + Sync>>,
    args: [Tensor; 3],
    /// The op's output.
    pub out: Tensor,
}

impl Applied {
    pub fn new(args: [Tensor; 3], op: impl CustomOp3 + Send + Sync + 'static) -> Result<Self> {
        let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(op));
        let out = args[0].apply_op3_arc(&args[1], &args[2], op.clone())?;
        Ok(Applied { op, args, out })
    }

    /// The input the gradient `i` of [`Applied::backward`] belongs to.
    pub fn arg(&self, i: usize) -> &Tensor {
        &self.args[i]
    }

    /// The gradients of the three inputs, given the output's: the op's own backward, as candle's
    /// autograd calls it (`None` where the op computes none).
    pub fn backward(&self, grad: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let [a, b, c] = &self.args;
        let (ga, gb, gc) = self.op.bwd(a, b, c, &self.out, grad)?;
        Ok([ga, gb, gc])
    }
}
