//! A dataset by kind and images: fetched (or found in the cache) and decoded.

use super::dataset::RawDataset;
use super::{cifar10, copies, fetch, mnist, synthetic};
use crate::base::error::Result;
use crate::base::spec::{DataSource, DatasetKind};

/// Fetches (or finds in the cache) and decodes a dataset. `Synthetic` and copies apply to
/// CIFAR-10 only: MNIST is always the real one. A copy must have been decoded into the cache
/// first (`copies::prepare`).
pub fn load(kind: DatasetKind, data: DataSource, source: &fetch::Source) -> Result<RawDataset> {
    let (train, test) = match (kind, data) {
        (DatasetKind::Mnist, _) => mnist::load_dir(&mnist::fetch_all(source)?)?,
        (DatasetKind::Cifar10, DataSource::Real) => cifar10::load_dir(&cifar10::fetch_all(source, &cifar10::ARCHIVE, cifar10::PER_FILE)?)?,
        (DatasetKind::Cifar10, DataSource::Synthetic) => cifar10::load_dir(&synthetic::fetch_cifar10(&source.cache)?)?,
        (DatasetKind::Cifar10, DataSource::Copy(copy)) => cifar10::load_dir(&copies::cached_or_error(&source.cache, &copy)?)?,
    };
    Ok(RawDataset { kind, train, test })
}
