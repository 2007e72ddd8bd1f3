//! `lth fetch`, and how every command gets its data: the mirror and cache of `--mirror` and
//! `--data-dir`, and the images of `--data` (a copy of CIFAR-10 checked and identified first).

use super::options::DataArgs;
use crate::base::spec::{DataSource, DatasetKind};
use crate::data::copies::{self, DataChoice};
use crate::data::{self, fetch::Source};
use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct Fetch {
    /// Dataset to fetch.
    #[arg(value_parser = ["mnist", "cifar10"])]
    pub dataset: String,
    #[command(flatten)]
    pub data: DataArgs,
}

impl Fetch {
    pub fn run(self) -> Result<()> {
        source(&self.data).check()?;
        let kind = if self.dataset == "mnist" { DatasetKind::Mnist } else { DatasetKind::Cifar10 };
        let (raw, _) = load_data(kind, &self.data)?;
        println!("{}: {} training and {} test images verified", self.dataset, raw.train.n, raw.test.n);
        Ok(())
    }
}

/// Where datasets come from: `--data-dir` and `--mirror`, else their environment variables.
pub fn source(data: &DataArgs) -> Source {
    Source::from_env(data.data_dir.clone(), data.mirror.clone())
}

/// Fetches and decodes a dataset, saying how to go on without CIFAR-10; returns it with the
/// images it is (a copy of CIFAR-10 is checked and identified first).
pub fn load_data(kind: DatasetKind, data: &DataArgs) -> Result<(data::RawDataset, DataSource)> {
    let source = source(data);
    let images = match (kind, &data.data) {
        (DatasetKind::Mnist, _) => DataSource::Real,
        (_, DataChoice::Known(images)) => *images,
        (_, DataChoice::Copy(location)) => {
            copies::prepare(location, &source, &copies::CIFAR10).with_context(|| format!("reading the copy of CIFAR-10 at {location}"))?
        }
    };
    let raw = data::load(kind, images, &source).with_context(|| match (kind, images) {
        (DatasetKind::Cifar10, DataSource::Real) => {
            "fetching CIFAR-10 (without it, `--data folder:<path>` reads a copy you have, and `--data synthetic` runs the pipeline on a generated stand-in)"
                .to_string()
        }
        _ => format!("fetching {kind:?}"),
    })?;
    Ok((raw, images))
}
