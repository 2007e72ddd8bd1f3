//! Dropout with seeded masks: candle-nn's Dropout draws from candle's unseedable CPU RNG, so the
//! masks here come from the run's own ChaCha stream (inverted dropout: kept units are scaled
//! by 1/(1-p), so evaluation needs no rescaling).

use crate::base::error::Result;
use candle_core::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub struct Dropout {
    p: f64,
    rng: ChaCha8Rng,
}

impl Dropout {
    pub fn new(p: f64, rng: ChaCha8Rng) -> Self {
        Dropout { p, rng }
    }

    /// How far its stream has been read, in 32-bit words (`seek` returns there: a resumed
    /// training draws the masks an uninterrupted one would).
    pub fn position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    pub fn seek(&mut self, position: u128) {
        self.rng.set_word_pos(position)
    }

    pub fn apply(&mut self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.mul(&self.mask(xs)?)?)
    }

    /// The next mask for `xs`: 0 for a dropped unit, 1/(1-p) for a kept one. Its gradient is
    /// the upstream gradient times the same mask.
    pub fn mask(&mut self, xs: &Tensor) -> Result<Tensor> {
        let scale = (1.0 / (1.0 - self.p)) as f32;
        let mask: Vec<f32> = (0..xs.elem_count()).map(|_| if self.rng.random::<f64>() < self.p { 0.0 } else { scale }).collect();
        Ok(Tensor::from_vec(mask, xs.shape(), xs.device())?)
    }
}
