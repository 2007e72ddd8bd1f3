//! Markers: the small JSON files written after a run's files (`level-NN/done`, `init.done`)
//! that record each file's size, SHA-256 and, for safetensors, tensor names and shapes, and the
//! check of a file against its marker on every read. `store` decides which files a marker
//! covers and what to redo when a check fails.

use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What a marker records of one file: enough to tell any change to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub bytes: u64,
    pub sha256: String,
    /// Tensor names and shapes of a safetensors file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tensors: BTreeMap<String, Vec<usize>>,
}

/// A marker's content: the files it vouches for, by name within its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub files: BTreeMap<String, FileRecord>,
}

/// Writes `marker` (atomically, after the files) recording each of `paths`.
pub fn write(marker: &Path, paths: &[PathBuf]) -> Result<()> {
    let mut files = BTreeMap::new();
    for path in paths {
        let bytes = fs::read(path).at(path)?;
        let tensors = if path.extension().is_some_and(|e| e == "safetensors") {
            tensor_shapes(&bytes).ok_or_else(|| Error::Invalid(format!("{}: not a safetensors file", path.display())))?
        } else {
            BTreeMap::new()
        };
        files.insert(files::file_name(path), FileRecord { bytes: bytes.len() as u64, sha256: files::sha256(&bytes), tensors });
    }
    let json = serde_json::to_string_pretty(&Marker { files }).map_err(|e| Error::Invalid(format!("{}: {e}", marker.display())))?;
    files::write_atomic(marker, json.as_bytes())
}

/// The bytes of `path` if they are exactly what `marker` recorded; otherwise why not.
pub fn read_verified(marker: &Path, path: &Path) -> std::result::Result<Vec<u8>, String> {
    let text = fs::read_to_string(marker).map_err(|e| format!("its marker {} cannot be read ({e})", marker.display()))?;
    if text.is_empty() {
        return Err(empty(marker));
    }
    let recorded: Marker = serde_json::from_str(&text).map_err(|e| format!("its marker {} is damaged ({e})", marker.display()))?;
    let name = files::file_name(path);
    let Some(record) = recorded.files.get(&name) else {
        return Err(format!("its marker {} does not record `{name}`", marker.display()));
    };
    let bytes = fs::read(path).map_err(|e| format!("cannot be read ({e})"))?;
    let sha256 = files::sha256(&bytes);
    if bytes.len() as u64 != record.bytes || sha256 != record.sha256 {
        return Err(format!(
            "{} bytes with SHA-256 {sha256}, but {} recorded {} bytes with SHA-256 {} when it was written",
            bytes.len(),
            marker.display(),
            record.bytes,
            record.sha256
        ));
    }
    if !record.tensors.is_empty() && tensor_shapes(&bytes).as_ref() != Some(&record.tensors) {
        return Err(format!("its tensors differ from those {} recorded", marker.display()));
    }
    Ok(bytes)
}

/// Why a file whose marker is empty is refused. An empty marker records nothing: a crash
/// before the marker reached the disk can leave one, and so did lth before markers recorded
/// digests. Only `lth adopt` (which checks what it can) turns it into a marker.
pub fn empty(marker: &Path) -> String {
    let run = marker.parent().and_then(|p| if files::file_name(p).starts_with("level-") { p.parent() } else { Some(p) }).unwrap_or(marker);
    format!(
        "its marker {} is empty (left by a crash before it reached the disk, or by an lth older than recorded digests), so nothing vouches for it; if the run is yours and was not damaged, `lth adopt {}` checks what it can and records it",
        marker.display(),
        run.display()
    )
}

/// The tensor names and shapes in a safetensors header (8 bytes of length, then JSON).
fn tensor_shapes(bytes: &[u8]) -> Option<BTreeMap<String, Vec<usize>>> {
    #[derive(Deserialize)]
    struct Entry {
        shape: Vec<usize>,
    }
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(len)?)?;
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    Some(
        entries
            .into_iter()
            .filter(|(name, _)| name != "__metadata__")
            .filter_map(|(name, value)| Some((name, serde_json::from_value::<Entry>(value).ok()?.shape)))
            .collect(),
    )
}
