//! Golden digests: SHA-256 of every file the `smoke` runs of a few experiments write (curves,
//! masks, initial and trained weights), committed in `tests/goldens.txt` and checked by a test,
//! so that any change to the arithmetic, on purpose or not, on this machine or another, shows
//! up as a named run, level and file. Tensors are digested by name, shape and values (not the
//! file's bytes), so a change in the safetensors writer alone does not count.
//!
//! Regenerate after an intended change with `cargo xtask goldens` and say so in the commit.

use super::store::Store;
use crate::error::{Error, IoContext, Result};
use crate::spec::{DataSource, Scale};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The experiments whose smoke runs are golden: (spec file stem, CIFAR-10 data). ResNet-18
/// covers BatchNorm, strided and 1x1 convolutions, SGD, augmentation and global pruning.
pub const EXPERIMENTS: [(&str, DataSource); 3] = [("lenet", DataSource::Real), ("conv2", DataSource::Synthetic), ("resnet18_lr0.1", DataSource::Synthetic)];

/// The scale the goldens are made at.
pub const SCALE: Scale = Scale::Smoke;

/// `(run id, file within the run folder)` → hex SHA-256.
pub type Digests = BTreeMap<(String, String), String>;

/// The digests of every finished file under `store`.
pub fn digests(store: &Store) -> Result<Digests> {
    let mut out = Digests::new();
    let runs = store.runs_dir();
    for run in sorted_entries(&runs)? {
        let id = name_of(&run);
        if run.join("init.safetensors").exists() {
            out.insert((id.clone(), "init.safetensors".into()), tensors_digest(&run.join("init.safetensors"))?);
        }
        for level in sorted_entries(&run)?.into_iter().filter(|l| l.is_dir() && l.join("done").exists()) {
            let level_name = name_of(&level);
            for file in ["mask.safetensors", "final.safetensors"] {
                if level.join(file).exists() {
                    out.insert((id.clone(), format!("{level_name}/{file}")), tensors_digest(&level.join(file))?);
                }
            }
            let curve = level.join("curve.csv");
            out.insert((id.clone(), format!("{level_name}/curve.csv")), hex(&Sha256::digest(std::fs::read(&curve).at(&curve)?)));
        }
    }
    Ok(out)
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).at(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    Ok(entries)
}

fn name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// SHA-256 over each tensor in name order: its name, its shape and its f32 values (little-endian).
fn tensors_digest(path: &Path) -> Result<String> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut hash = Sha256::new();
    for name in names {
        let tensor = &tensors[name];
        hash.update(name.as_bytes());
        hash.update(format!("{:?}", tensor.dims()).as_bytes());
        for v in tensor.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()? {
            hash.update(v.to_le_bytes());
        }
    }
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of a goldens file.
pub fn render(digests: &Digests) -> String {
    let mut out = String::from(
        "# SHA-256 of the smoke runs' files (tensors by name, shape and values); checked by lth/tests/goldens.rs.\n\
         # Regenerate with `cargo xtask goldens` only when the arithmetic changes on purpose, and say so in the commit.\n",
    );
    for ((run, file), digest) in digests {
        out.push_str(&format!("{digest}  {run}/{file}\n"));
    }
    out
}

/// Parses a goldens file.
pub fn parse(path: &Path) -> Result<Digests> {
    let text = std::fs::read_to_string(path).at(path)?;
    let mut out = Digests::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty()) {
        let bad = || Error::Invalid(format!("{} line {}: expected `<sha256>  <run>/<file>`; regenerate it with `cargo xtask goldens`", path.display(), i + 1));
        let (digest, name) = line.split_once("  ").ok_or_else(bad)?;
        let (run, file) = name.split_once('/').ok_or_else(bad)?;
        out.insert((run.to_string(), file.to_string()), digest.to_string());
    }
    Ok(out)
}

/// One line per difference between the expected and the actual digests (empty: identical).
pub fn differences(expected: &Digests, actual: &Digests) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in expected {
        match actual.get(key) {
            Some(got) if got == want => {}
            Some(got) => out.push(format!("run {} file {}: digest {} differs from the golden {}", key.0, key.1, &got[..12], &want[..12.min(want.len())])),
            None => out.push(format!("run {} file {}: missing (the spec or the run folder layout changed?)", key.0, key.1)),
        }
    }
    for key in actual.keys().filter(|k| !expected.contains_key(*k)) {
        out.push(format!("run {} file {}: not in the goldens", key.0, key.1));
    }
    out
}
