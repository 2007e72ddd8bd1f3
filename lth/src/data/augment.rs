//! Augmentation of training batches (VGG-19, ResNet-18; docs/paper.md §2): each image is cropped
//! at a random offset from a copy zero-padded by `pad` pixels on every side, then flipped
//! left-right with probability 1/2 (torchvision's `RandomCrop(32, padding=4)` then
//! `RandomHorizontalFlip()`, as the reference implementations apply them). The padding is zero
//! in pixel space, i.e. `(0 − mean) / std` of each channel after normalisation. The draws come
//! from the run's own seeded stream, three per image in a fixed order (row offset, column
//! offset, flip), so runs stay bit-reproducible; the reference implementations never seed it.

use crate::base::error::{Error, Result};
use crate::base::spec::{Augmentation, Normalisation};
use crate::ops::device::to_host;
use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub struct Augment {
    flip: bool,
    pad: usize,
    /// The normalised value of a zero pixel, per channel.
    fill: Vec<f32>,
    rng: ChaCha8Rng,
}

/// Where one image is cut from its padded copy, and whether it is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

impl Augment {
    pub fn new(spec: &Augmentation, norm: &Normalisation, rng: ChaCha8Rng) -> Self {
        let fill = norm.mean.iter().zip(&norm.std).map(|(&m, &s)| (0.0 - m) / s).collect();
        Augment { flip: spec.flip, pad: spec.pad, fill, rng }
    }

    /// How far its stream has been read, in 32-bit words (`seek` returns there: a resumed
    /// training draws the placements an uninterrupted one would).
    pub fn position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    pub fn seek(&mut self, position: u128) {
        self.rng.set_word_pos(position)
    }

    /// The next image's placement.
    pub fn draw(&mut self) -> Placement {
        let span = 2 * self.pad;
        let dy = self.rng.random_range(0..=span);
        let dx = self.rng.random_range(0..=span);
        let flip = self.flip && self.rng.random::<bool>();
        Placement { dy, dx, flip }
    }

    /// A batch `(n, c, h, w)` of normalised images, each cropped and flipped (read back from
    /// `xs`'s device; training uses [`Augment::gather`], which reads nothing).
    pub fn apply(&mut self, xs: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let pixels = to_host::<f32>(xs)?;
        let indices: Vec<u32> = (0..n as u32).collect();
        self.gather(&pixels, &indices, (c, h, w), xs.device())
    }

    /// The images `indices` of `pixels` (host values of `(·, c, h, w)` images, row-major), each
    /// cropped and flipped in that order, as one batch uploaded to `dev`: the same values as
    /// [`Augment::apply`] on the gathered batch.
    pub fn gather(&mut self, pixels: &[f32], indices: &[u32], (c, h, w): (usize, usize, usize), dev: &Device) -> Result<Tensor> {
        let per_image = c * h * w;
        let mut out = vec![0f32; indices.len() * per_image];
        for (&i, target) in indices.iter().zip(out.chunks_exact_mut(per_image)) {
            let start = i as usize * per_image;
            let image = pixels.get(start..start + per_image).ok_or_else(|| Error::Invalid(format!("augmentation: no image {i} in {} values", pixels.len())))?;
            let placement = self.draw();
            place(image, (c, h, w), self.pad, &self.fill, placement, target);
        }
        Ok(Tensor::from_vec(out, (indices.len(), c, h, w), dev)?)
    }
}

/// Writes into `out` the `(c, h, w)` window at `(dy, dx)` of `image` padded by `pad` pixels of
/// `fill` (per channel), mirrored left-right if `flip`.
pub fn place(image: &[f32], (c, h, w): (usize, usize, usize), pad: usize, fill: &[f32], p: Placement, out: &mut [f32]) {
    for ch in 0..c {
        let value = fill[ch.min(fill.len() - 1)];
        for y in 0..h {
            // Row y of the crop is row y + dy − pad of the image.
            let source_row = (y + p.dy).checked_sub(pad).filter(|&r| r < h);
            for x in 0..w {
                let cx = if p.flip { w - 1 - x } else { x };
                let source_col = (cx + p.dx).checked_sub(pad).filter(|&col| col < w);
                out[(ch * h + y) * w + x] = match (source_row, source_col) {
                    (Some(r), Some(col)) => image[(ch * h + r) * w + col],
                    _ => value,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_and_flip_of_a_known_image() {
        // One channel, 3x3, values 1..9; padding 1 of fill −1.
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut out = vec![0f32; 9];
        // Offset (0, 0) of the padded copy: shifted down-right by one.
        place(&image, (1, 3, 3), 1, &[-1.0], Placement { dy: 0, dx: 0, flip: false }, &mut out);
        assert_eq!(out, vec![-1., -1., -1., -1., 1., 2., -1., 4., 5.]);
        // Centre crop, mirrored.
        place(&image, (1, 3, 3), 1, &[-1.0], Placement { dy: 1, dx: 1, flip: true }, &mut out);
        assert_eq!(out, vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
        // Offset (2, 1), mirrored: rows 2..4 of the padded copy, then left-right.
        place(&image, (1, 3, 3), 1, &[-1.0], Placement { dy: 2, dx: 1, flip: true }, &mut out);
        assert_eq!(out, vec![6., 5., 4., 9., 8., 7., -1., -1., -1.]);
    }
}
