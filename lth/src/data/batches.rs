//! Seeded minibatch order: the training set is reshuffled every epoch (docs/paper.md §1) from the
//! run's data-order stream. An epoch's last partial batch is dropped, so every step sees
//! exactly `batch_size` examples.

use super::augment::Augment;
use super::Split;
use crate::base::error::Result;
use crate::ops::host::with_f32;
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

pub struct Batches<'a> {
    split: &'a Split,
    batch_size: usize,
    rng: ChaCha8Rng,
    order: Vec<u32>,
    next: usize,
}

impl<'a> Batches<'a> {
    pub fn new(split: &'a Split, batch_size: usize, rng: ChaCha8Rng) -> Self {
        Batches { split, batch_size, rng, order: Vec::new(), next: usize::MAX }
    }

    /// The indices of the next minibatch (public so that tests can check the order).
    pub fn next_indices(&mut self) -> &[u32] {
        if self.next.saturating_add(self.batch_size) > self.order.len() {
            self.order = (0..self.split.len() as u32).collect();
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        let batch = &self.order[self.next..self.next + self.batch_size];
        self.next += self.batch_size;
        batch
    }

    /// The next minibatch: images and labels.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let dev = self.split.images.device().clone();
        let idx = Tensor::new(self.next_indices(), &dev)?;
        Ok((self.split.images.index_select(&idx, 0)?, self.split.labels.index_select(&idx, 0)?))
    }

    /// The next minibatch with every image cropped and flipped by `augment`, built on the host
    /// and uploaded once. `host` holds the split's images as host values where they live on
    /// another device (or the CPU's generic path: `ops::device`), read once per training;
    /// `None` reads the CPU tensor's own storage. The same values as augmenting
    /// [`Batches::next_batch`]'s images, and the same draws.
    pub fn next_augmented(&mut self, augment: &mut Augment, host: Option<&[f32]>) -> Result<(Tensor, Tensor)> {
        let images = &self.split.images;
        let (_, c, h, w) = images.dims4()?;
        let dev = images.device().clone();
        let indices = self.next_indices().to_vec();
        let xs = match host {
            Some(pixels) => augment.gather(pixels, &indices, (c, h, w), &dev)?,
            None => with_f32(images, "augmentation", |pixels| augment.gather(pixels, &indices, (c, h, w), &dev))??,
        };
        let labels = self.split.labels.index_select(&Tensor::new(indices.as_slice(), &dev)?, 0)?;
        Ok((xs, labels))
    }
}
