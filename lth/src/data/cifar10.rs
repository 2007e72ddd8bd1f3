//! CIFAR-10, binary version: `cifar-10-binary.tar.gz` fetched and verified (the dataset
//! publishes an MD5; its SHA-256 is computed on first download and written beside the
//! archive), extracted atomically, and each batch file checked for its exact size.
//! Every batch folder in the cache (extracted, installed from a user's copy, or decoded from
//! an image copy) records its files' SHA-256 in `SHA256SUMS` when it is written, and every
//! load checks them, so pixels changed in the cache are refused, never trained on.
//! Images come out as (3, 32, 32) in the file's own R, G, B plane order (candle-datasets' hub
//! loader swaps height and width; this one does not).

use super::fetch::{self, Checksum, RemoteFile, Source};
use super::RawImages;
use crate::base::error::{Error, IoContext, Result};
use flate2::read::GzDecoder;
use std::fs;
use std::path::{Path, PathBuf};

/// The official location (no second public mirror is known; use LTH_DATA_MIRROR).
pub const URLS: [&str; 1] = ["https://www.cs.toronto.edu/~kriz"];

pub const ARCHIVE: RemoteFile = RemoteFile { dataset: "cifar10", name: "cifar-10-binary.tar.gz", checksum: Checksum::Md5("c32a1d4ab5d03f1284b67883e8d87530") };

/// The folder inside the archive.
const FOLDER: &str = "cifar-10-batches-bin";
pub const TRAIN_FILES: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";
/// One record: a label byte, then 32·32 red, 32·32 green and 32·32 blue bytes.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// Records per batch file in the real dataset.
pub const PER_FILE: usize = 10_000;

/// The published MD5s of the extracted files, for accepting a copy of `cifar-10-batches-bin/`
/// that is already on disk (listed identically by rai-project/dldataset and
/// prabhuomkar/pytorch-cpp; docs/data.md).
pub const BATCH_MD5: [(&str, &str); 6] = [
    ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
];

/// Checks every file of an extracted folder against `md5s` (file name, hex MD5); the first
/// missing or different file is named, and the folder is not used.
pub fn verify_extracted(dir: &Path, md5s: &[(&str, &str)]) -> Result<()> {
    let fix = "use an intact copy of the official cifar-10-batches-bin/ folder, or leave out --data to download the official archive";
    for (name, expected) in md5s {
        let path = dir.join(name);
        let at = path.display().to_string();
        if !path.is_file() {
            let names = md5s.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
            return Err(Error::BadCopy { at, problem: format!("missing (an extracted CIFAR-10 folder holds {names})"), fix: fix.into() });
        }
        let actual = fetch::digest_file::<md5::Md5>(&path)?;
        if actual != *expected {
            let problem = format!("MD5 {actual} is not the published {expected}: not the official file (damaged, truncated or another version)");
            return Err(Error::BadCopy { at, problem, fix: fix.into() });
        }
    }
    Ok(())
}

/// Fetches, verifies and extracts the archive `file` (the real one, or a synthetic stand-in)
/// into `<cache>/<dataset>/cifar-10-batches-bin`; returns that folder.
pub fn fetch_all(source: &Source, file: &RemoteFile, per_file: usize) -> Result<PathBuf> {
    let dir = source.cache.join(file.dataset);
    let batches = dir.join(FOLDER);
    if batches.exists() && check_sizes(&batches, per_file).is_ok() && batches.join(DIGESTS).is_file() {
        return Ok(batches);
    }
    if batches.exists() && check_sizes(&batches, per_file).is_ok() {
        // Extracted by an lth that recorded no digests. The official files can still be
        // checked against their published MD5s; anything else is extracted again.
        if file.checksum == ARCHIVE.checksum && verify_extracted(&batches, &BATCH_MD5).is_ok() {
            record_digests(&batches)?;
            return Ok(batches);
        }
        eprintln!("note: {} has no recorded digests (an older lth extracted it); extracting it again from the verified archive", batches.display());
    }
    let archive = source.fetch(file, &URLS)?;
    record_sha256(&archive)?;
    // Extract into a temporary folder, check it, then rename: never a half-extracted set, and
    // no staging folder left behind when extraction fails (a full disk).
    let staging = fetch::unique_temp(&dir.join("extract"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).at(&staging)?;
    let extracted = extract(&archive, &staging, per_file);
    if extracted.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    extracted?;
    let _ = fs::remove_dir_all(&batches);
    let renamed = fs::rename(staging.join(FOLDER), &batches);
    let _ = fs::remove_dir_all(&staging);
    // Another process may have finished the same extraction first: its copy is as good.
    if renamed.is_err() && check_sizes(&batches, per_file).is_err() {
        renamed.at(&batches)?;
    }
    Ok(batches)
}

/// Unpacks `archive` into `staging`, checks the batch files' sizes and records their digests.
fn extract(archive: &Path, staging: &Path, per_file: usize) -> Result<()> {
    let corrupt = |e: std::io::Error| Error::CorruptData { path: archive.to_owned(), reason: format!("not a valid .tar.gz ({e})") };
    tar::Archive::new(GzDecoder::new(fs::File::open(archive).at(archive)?)).unpack(staging).map_err(corrupt)?;
    check_sizes(&staging.join(FOLDER), per_file)?;
    record_digests(&staging.join(FOLDER))
}

/// The file of a batch folder that records each batch file's SHA-256 (`sha256sum` format).
pub const DIGESTS: &str = "SHA256SUMS";

/// Records the SHA-256 of every batch file of `dir` in its `SHA256SUMS`: called where a batch
/// folder is written (extracted, installed or decoded), before it is renamed into place.
pub fn record_digests(dir: &Path) -> Result<()> {
    let mut text = String::new();
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let path = dir.join(name);
        text += &format!("{}  {name}\n", fetch::digest_file::<sha2::Sha256>(&path)?);
    }
    fetch::write_atomic(&dir.join(DIGESTS), text.as_bytes())
}

/// The digests `record_digests` wrote, by file name.
fn recorded_digests(dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let path = dir.join(DIGESTS);
    let text = fs::read_to_string(&path).map_err(|e| Error::CorruptData {
        path: dir.to_owned(),
        reason: format!(
            "{DIGESTS} cannot be read ({e}): no digests were recorded when this folder was written (an older lth), so its pixels cannot be checked"
        ),
    })?;
    Ok(text.lines().filter_map(|line| line.split_once("  ")).map(|(digest, name)| (name.to_string(), digest.to_string())).collect())
}

/// Where the official archive's batch files are extracted to in a cache.
pub fn extracted_dir(cache: &Path) -> PathBuf {
    cache.join(ARCHIVE.dataset).join(FOLDER)
}

/// Writes `<archive>.sha256` (CIFAR-10 publishes only an MD5) so the digest is on record.
fn record_sha256(archive: &Path) -> Result<()> {
    let path = archive.with_extension("gz.sha256");
    if !path.exists() {
        let digest = fetch::digest_file::<sha2::Sha256>(archive)?;
        fetch::write_atomic(&path, format!("{digest}  {}\n", ARCHIVE.name).as_bytes())?;
    }
    Ok(())
}

/// Every batch file exists and holds exactly `per_file` records.
pub fn check_sizes(dir: &Path, per_file: usize) -> Result<()> {
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let path = dir.join(name);
        let len = fs::metadata(&path).at(&path)?.len() as usize;
        if len != per_file * RECORD {
            return Err(Error::CorruptData {
                path,
                reason: format!("{len} bytes where {per_file} records of {RECORD} bytes make {} (truncated or not CIFAR-10)", per_file * RECORD),
            });
        }
    }
    Ok(())
}

/// Loads the training set (the five data batches) and the test set from a batch folder, each
/// file checked against the digest recorded when the folder was written.
pub fn load_dir(dir: &Path) -> Result<(RawImages, RawImages)> {
    let recorded = recorded_digests(dir)?;
    let mut train = RawImages { pixels: Vec::new(), labels: Vec::new(), n: 0, shape: [3, 32, 32] };
    for name in TRAIN_FILES {
        append(&mut train, dir, name, &recorded)?;
    }
    let mut test = RawImages { pixels: Vec::new(), labels: Vec::new(), n: 0, shape: [3, 32, 32] };
    append(&mut test, dir, TEST_FILE, &recorded)?;
    Ok((train, test))
}

fn append(images: &mut RawImages, dir: &Path, name: &str, recorded: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let path = &dir.join(name);
    let bytes = fs::read(path).at(path)?;
    let actual = crate::base::files::sha256(&bytes);
    if recorded.get(name) != Some(&actual) {
        let was = recorded.get(name).map_or_else(|| format!("no digest recorded for it in {DIGESTS}"), |d| format!("not the {d} recorded when it was written"));
        return Err(Error::CorruptData {
            path: dir.to_owned(),
            reason: format!("{name} has SHA-256 {actual}, {was}: changed in the cache since, and not used"),
        });
    }
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::CorruptData { path: path.to_owned(), reason: format!("{} bytes is not a whole number of {RECORD}-byte records", bytes.len()) });
    }
    for record in bytes.chunks_exact(RECORD) {
        if record[0] > 9 {
            return Err(Error::CorruptData { path: path.to_owned(), reason: format!("label {} outside 0..=9", record[0]) });
        }
        images.labels.push(record[0]);
        images.pixels.extend_from_slice(&record[1..]);
        images.n += 1;
    }
    Ok(())
}
