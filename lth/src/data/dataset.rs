//! A dataset in memory: decoded images (`RawDataset`), and the splits one run trains and
//! evaluates on (`Dataset`): the fixed train/validation split, normalised, on the device.

use crate::base::error::Result;
use crate::base::seeds::{self, Purpose};
use crate::base::spec::{DatasetKind, Method, Normalisation, RunSpec};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

/// Decoded images as stored: `n` images of `shape` (channels, height, width), `u8` pixels
/// in that order, and one class label per image.
#[derive(Debug, Clone)]
pub struct RawImages {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub shape: [usize; 3],
}

/// The raw training and test sets of a dataset.
#[derive(Debug, Clone)]
pub struct RawDataset {
    pub kind: DatasetKind,
    pub train: RawImages,
    pub test: RawImages,
}

/// Normalised images and labels on a device: images `(n, c, h, w)` as f32, labels `(n)` u32.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.dims1().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one run trains and evaluates on.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Split,
    pub validation: Split,
    pub test: Split,
}

impl RawDataset {
    /// The run's view of the data: the fixed validation split (docs/paper.md §1: 5,000 training
    /// examples sampled at random), then the scale's subsets, normalised, on `dev`.
    pub fn prepare(&self, run: &RunSpec, dev: &Device) -> Result<Dataset> {
        let method = &run.method;
        let (validation_idx, train_idx) = split_indices(self.train.n, method)?;
        let take = |idx: &[usize], n: Option<usize>| idx[..n.unwrap_or(idx.len()).min(idx.len())].to_vec();
        // Reduced scales evaluate on a fixed random subset of the test set, the same for every run.
        let mut test_idx: Vec<usize> = (0..self.test.n).collect();
        if run.eval_subset.is_some() {
            test_idx.shuffle(&mut seeds::stream(method.split_seed, Purpose::EvalSubset));
        }
        let norm = &method.normalisation;
        Ok(Dataset {
            train: select(&self.train, &take(&train_idx, run.train_subset), norm, dev)?,
            validation: select(&self.train, &take(&validation_idx, run.eval_subset), norm, dev)?,
            test: select(&self.test, &take(&test_idx, run.eval_subset), norm, dev)?,
        })
    }
}

/// (validation, train) indices: a seeded permutation whose first `validation_size` entries are
/// the validation set. Training indices stay in file order; batching shuffles them.
pub fn split_indices(n: usize, method: &Method) -> Result<(Vec<usize>, Vec<usize>)> {
    if method.validation_size >= n {
        return Err(crate::base::error::Error::Invalid(format!("validation_size {} leaves no training data out of {n} examples", method.validation_size)));
    }
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut seeds::stream(method.split_seed, Purpose::Split));
    let mut validation = perm[..method.validation_size].to_vec();
    let mut train = perm[method.validation_size..].to_vec();
    validation.sort_unstable();
    train.sort_unstable();
    Ok((validation, train))
}

fn select(raw: &RawImages, idx: &[usize], norm: &Normalisation, dev: &Device) -> Result<Split> {
    let [c, h, w] = raw.shape;
    let per_image = c * h * w;
    let mut pixels = Vec::with_capacity(idx.len() * per_image);
    for &i in idx {
        let image = &raw.pixels[i * per_image..(i + 1) * per_image];
        for (p, &v) in image.iter().enumerate() {
            let channel = (p / (h * w)).min(norm.mean.len() - 1);
            pixels.push((v as f32 / 255.0 - norm.mean[channel]) / norm.std[channel]);
        }
    }
    let labels: Vec<u32> = idx.iter().map(|&i| raw.labels[i] as u32).collect();
    Ok(Split { images: Tensor::from_vec(pixels, (idx.len(), c, h, w), dev)?, labels: Tensor::from_vec(labels, idx.len(), dev)? })
}
