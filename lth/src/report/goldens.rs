//! Golden digests: SHA-256 of every file the `smoke` runs of a few experiments write (curves,
//! masks, initial and trained weights), committed in `tests/goldens.txt` and checked by a test,
//! so that any change to the arithmetic, on purpose or not, on this machine or another, shows
//! up as a named run, level and file. Tensors are digested by name, shape and values (not the
//! file's bytes), so a change in the safetensors writer alone does not count.
//!
//! Regenerate after an intended change with `cargo xtask goldens` and say so in the commit.

use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use crate::base::spec::{DataSource, Scale};
use crate::store::runs::Store;
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
    for run in store.run_dirs()? {
        let id = run.id.0.clone();
        if run.init_path().exists() {
            out.insert((id.clone(), "init.safetensors".into()), tensors_digest(&run.init_path())?);
        }
        for level in run.finished_levels() {
            let folder = format!("level-{level:02}");
            for (file, path) in [("mask.safetensors", run.mask_path(level)), ("final.safetensors", run.final_path(level))] {
                if path.exists() {
                    out.insert((id.clone(), format!("{folder}/{file}")), tensors_digest(&path)?);
                }
            }
            let curve = run.curve_path(level);
            out.insert((id.clone(), format!("{folder}/curve.csv")), files::sha256(&std::fs::read(&curve).at(&curve)?));
        }
    }
    Ok(out)
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
    Ok(files::hex(&hash.finalize()))
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
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
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
            Some(got) => out.push(format!("run {} file {}: digest {} differs from the golden {}", key.0, key.1, &got[..12], &want[..12])),
            None => out.push(format!("run {} file {}: missing (the spec or the run folder layout changed?)", key.0, key.1)),
        }
    }
    for key in actual.keys().filter(|k| !expected.contains_key(*k)) {
        out.push(format!("run {} file {}: not in the goldens", key.0, key.1));
    }
    out
}
