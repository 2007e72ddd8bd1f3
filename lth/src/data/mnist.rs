//! MNIST: the four canonical IDX files, fetched as `.gz`, verified, decompressed into the
//! cache and parsed with full header checks (candle-datasets' `load_dir` reads the same files
//! but cannot say which file is wrong or why).

use super::fetch::{self, Checksum, RemoteFile, Source};
use super::RawImages;
use crate::base::error::{Error, IoContext, Result};
use flate2::read::GzDecoder;
use std::fs;
use std::path::{Path, PathBuf};

/// The official location, then a public mirror of the same files.
pub const URLS: [&str; 2] = ["http://yann.lecun.com/exdb/mnist", "https://ossci-datasets.s3.amazonaws.com/mnist"];

/// One IDX file: the published `.gz` and the SHA-256 of its decompressed content.
pub struct IdxFile {
    pub gz: RemoteFile,
    pub name: &'static str,
    pub checksum: Checksum,
}

const fn idx(gz: &'static str, gz_sha: &'static str, name: &'static str, sha256: &'static str) -> IdxFile {
    IdxFile { gz: RemoteFile { dataset: "mnist", name: gz, checksum: Checksum::Sha256(gz_sha) }, name, checksum: Checksum::Sha256(sha256) }
}

// SHA-256 values of the canonical distribution, as the official files have them (docs/data.md).
pub const TRAIN_IMAGES: IdxFile = idx(
    "train-images-idx3-ubyte.gz",
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-images-idx3-ubyte",
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
);
pub const TRAIN_LABELS: IdxFile = idx(
    "train-labels-idx1-ubyte.gz",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "train-labels-idx1-ubyte",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
);
pub const TEST_IMAGES: IdxFile = idx(
    "t10k-images-idx3-ubyte.gz",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-images-idx3-ubyte",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
);
pub const TEST_LABELS: IdxFile = idx(
    "t10k-labels-idx1-ubyte.gz",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "t10k-labels-idx1-ubyte",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
);

pub const FILES: [IdxFile; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// Fetches and verifies all four files; returns the folder holding the decompressed IDX files.
pub fn fetch_all(source: &Source) -> Result<PathBuf> {
    for file in &FILES {
        fetch_idx(source, file)?;
    }
    Ok(source.cache.join("mnist"))
}

/// The verified, decompressed IDX file, fetching and decompressing its `.gz` if needed.
pub fn fetch_idx(source: &Source, file: &IdxFile) -> Result<PathBuf> {
    let path = source.cache.join("mnist").join(file.name);
    if path.exists() {
        match fetch::verify(&path, file.checksum) {
            Ok(()) => return Ok(path),
            Err(e) => {
                eprintln!("warning: {e}");
                fs::remove_file(&path).at(&path)?;
            }
        }
    }
    let gz = source.fetch(&file.gz, &URLS)?;
    let mut bytes = Vec::new();
    let mut decoder = GzDecoder::new(fs::File::open(&gz).at(&gz)?);
    std::io::Read::read_to_end(&mut decoder, &mut bytes)
        .map_err(|e| Error::CorruptData { path: gz.clone(), reason: format!("not a valid gzip file ({e})") })?;
    fetch::write_atomic(&path, &bytes)?;
    if let Err(e) = fetch::verify(&path, file.checksum) {
        fs::remove_file(&path).at(&path)?;
        return Err(e);
    }
    Ok(path)
}

/// Loads the training and test sets from a folder of decompressed IDX files.
pub fn load_dir(dir: &Path) -> Result<(RawImages, RawImages)> {
    let train = read_pair(&dir.join(TRAIN_IMAGES.name), &dir.join(TRAIN_LABELS.name))?;
    let test = read_pair(&dir.join(TEST_IMAGES.name), &dir.join(TEST_LABELS.name))?;
    Ok((train, test))
}

fn read_pair(images: &Path, labels: &Path) -> Result<RawImages> {
    let (pixels, n, shape) = read_idx(images, 2051, 3)?;
    let (classes, n_labels, _) = read_idx(labels, 2049, 1)?;
    if n != n_labels {
        return Err(Error::CorruptData { path: labels.to_owned(), reason: format!("{n_labels} labels for {n} images in {}", images.display()) });
    }
    if let Some(bad) = classes.iter().find(|&&c| c > 9) {
        return Err(Error::CorruptData { path: labels.to_owned(), reason: format!("label {bad} outside 0..=9") });
    }
    Ok(RawImages { pixels, labels: classes, n, shape: [1, shape[0], shape[1]] })
}

/// Parses an IDX file of unsigned bytes: big-endian magic, then `rank` dimensions, then data.
/// Returns the data, the first dimension and the remaining ones.
pub fn read_idx(path: &Path, magic: u32, rank: usize) -> Result<(Vec<u8>, usize, Vec<usize>)> {
    let bytes = fs::read(path).at(path)?;
    let corrupt = |reason: String| Error::CorruptData { path: path.to_owned(), reason };
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(corrupt(format!("{} bytes is shorter than the IDX header", bytes.len())));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    if word(0) != magic {
        return Err(corrupt(format!("IDX magic {} where {magic} was expected", word(0))));
    }
    let dims: Vec<usize> = (1..=rank).map(|i| word(i) as usize).collect();
    let expected = header_len + dims.iter().product::<usize>();
    if bytes.len() != expected {
        return Err(corrupt(format!("{} bytes where the header {:?} implies {expected} (truncated?)", bytes.len(), dims)));
    }
    Ok((bytes[header_len..].to_vec(), dims[0], dims[1..].to_vec()))
}
