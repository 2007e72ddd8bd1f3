//! The data layer: fetching (`fetch`), decoding (`mnist`, `cifar10`; copies of CIFAR-10 a user
//! has in `copies` and `image_folder`, a generated stand-in in `synthetic`), the fixed split and
//! normalisation (`dataset`), augmentation and seeded minibatch order (`augment`, `batches`).
//! May import `ops` (host reads) and `base`; knows nothing of models, masks or training.

pub mod augment;
pub mod batches;
pub mod cifar10;
pub mod copies;
pub mod dataset;
pub mod fetch;
pub mod image_folder;
pub mod load;
pub mod mnist;
pub mod synthetic;

pub use dataset::{split_indices, Dataset, RawDataset, RawImages, Split};
pub use load::load;
