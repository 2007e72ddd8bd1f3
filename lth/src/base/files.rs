//! Low-level file helpers shared by the data cache, the run folders and the figures: unique
//! temporary names, atomic writes (temporary file + rename) and SHA-256 digests. Everything
//! that writes a file another process or a rerun may read goes through here, so no reader ever
//! sees half a file under its final name.

use crate::base::error::{Error, IoContext, Result};
use candle_core::Tensor;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// A temporary name beside `path`, unique to this process and call, so concurrent writers
/// never share one: `curve.csv` → `curve.csv.<pid>-<n>.tmp`.
pub fn unique_temp(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!("{}.{}-{n}.tmp", file_name(path), std::process::id()))
}

/// The last component of `path` as text ("" for none).
pub fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Writes `bytes` to `path` atomically (temp file + rename), so an interruption never leaves
/// a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = unique_temp(path);
    fs::write(&tmp, bytes).at(&tmp)?;
    rename(&tmp, path)
}

/// Renames a finished temporary file into place (removing the temporary file if that fails).
pub fn rename(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path)
        .inspect_err(|_| {
            let _ = fs::remove_file(tmp);
        })
        .at(path)
}

/// The hex digest of a file.
pub fn digest_file<D: Digest + io::Write>(path: &Path) -> Result<String> {
    let mut hasher = D::new();
    let mut f = File::open(path).at(path)?;
    io::copy(&mut f, &mut hasher).at(path)?;
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of some bytes, as hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes named tensors as safetensors, atomically. Serialized here and written like every
/// other run file (so its mode follows the umask: candle's own `save` creates 0600 files, which
/// another user of a shared results folder cannot read); the bytes are the same.
pub fn save_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let bytes = safetensors::serialize(tensors.iter(), None).map_err(|e| Error::Invalid(format!("{}: cannot serialize tensors ({e})", path.display())))?;
    write_atomic(path, &bytes)
}

/// What to remove so that a rerun writes `path` again: its level folder, or theta0 itself.
pub fn redo_target(path: &Path) -> PathBuf {
    match path.parent() {
        Some(level) if file_name(level).starts_with("level-") => level.to_owned(),
        _ => path.to_owned(),
    }
}

/// The error for a run's tensor file that does not hold what the run needs.
pub fn damaged_tensors(path: &Path, reason: String) -> Error {
    Error::RunFile { path: path.to_owned(), reason, redo: redo_target(path) }
}
