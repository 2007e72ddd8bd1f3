//! Every on-disk name of a results folder (open_lth's `paths.py`):
//!
//! ```text
//! <out>/runs/<run-id>/spec.json                 the resolved RunSpec (canonical JSON)
//! <out>/runs/<run-id>/init.safetensors          theta0 of a ticket run
//! <out>/runs/<run-id>/level-NN/mask.safetensors
//! <out>/runs/<run-id>/level-NN/final.safetensors   weights after training
//! <out>/runs/<run-id>/level-NN/curve.csv        one CurveRecord per evaluation
//! <out>/runs/<run-id>/level-NN/done             written last: the level is finished
//! ```
//!
//! A level is finished if and only if its `done` marker exists; every file is written to a
//! temporary name and renamed, so an interrupted run resumes at its first unfinished level.

use crate::datasets::fetch::write_atomic;
use crate::error::{Error, IoContext, Result};
use crate::models::{Architecture, Weights};
use crate::spec::{RunId, RunSpec};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: RunId,
    pub dir: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// The folder of `spec`, created with its `spec.json`; fails if the folder holds another spec.
    pub fn open(&self, spec: &RunSpec) -> Result<RunDir> {
        let id = spec.id();
        let dir = self.runs_dir().join(&id.0);
        fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join("spec.json");
        let wanted = spec.canonical_json();
        match fs::read_to_string(&path) {
            Ok(existing) if existing == wanted => {}
            Ok(existing) => return Err(Error::SpecMismatch { dir, reason: first_difference(&existing, &wanted) }),
            Err(_) => write_atomic(&path, wanted.as_bytes())?,
        }
        Ok(RunDir { id, dir })
    }

    /// The folder of `spec` if it exists (for reading a trunk from a branch).
    pub fn existing(&self, spec: &RunSpec) -> RunDir {
        let id = spec.id();
        RunDir { dir: self.runs_dir().join(&id.0), id }
    }
}

impl RunDir {
    pub fn init_path(&self) -> PathBuf {
        self.dir.join("init.safetensors")
    }
    pub fn level_dir(&self, level: usize) -> PathBuf {
        self.dir.join(format!("level-{level:02}"))
    }
    pub fn mask_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("mask.safetensors")
    }
    pub fn final_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("final.safetensors")
    }
    pub fn curve_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("curve.csv")
    }
    pub fn done_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("done")
    }
    pub fn is_done(&self, level: usize) -> bool {
        self.done_path(level).exists()
    }

    pub fn mark_done(&self, level: usize) -> Result<()> {
        write_atomic(&self.done_path(level), b"")
    }
}

/// Writes named tensors as safetensors, atomically.
pub fn save_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let tmp = crate::datasets::fetch::unique_temp(path);
    let map: HashMap<&str, Tensor> = tensors.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    candle_core::safetensors::save(&map, &tmp)?;
    fs::rename(&tmp, path).at(path)
}

pub fn save_weights(weights: &Weights, arch: &Architecture, path: &Path) -> Result<()> {
    let tensors =
        arch.params.iter().map(|p| Ok((p.name.clone(), Tensor::from_slice(&weights[&p.name], p.shape.as_slice(), &Device::Cpu)?))).collect::<Result<_>>()?;
    save_tensors(&tensors, path)
}

pub fn load_weights(path: &Path, arch: &Architecture) -> Result<Weights> {
    let corrupt = |reason: String| Error::CorruptData { path: path.to_owned(), reason };
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| corrupt(e.to_string()))?;
    arch.params
        .iter()
        .map(|p| {
            let t = tensors.get(&p.name).ok_or_else(|| corrupt(format!("no tensor `{}`", p.name)))?;
            if t.dims() != p.shape.as_slice() {
                return Err(corrupt(format!("`{}` has shape {:?}, expected {:?}", p.name, t.dims(), p.shape)));
            }
            Ok((p.name.clone(), t.flatten_all()?.to_vec1::<f32>()?))
        })
        .collect()
}

/// The first field whose value differs between two specs' JSON, for the error message.
fn first_difference(existing: &str, wanted: &str) -> String {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    if let (Some(serde_json::Value::Object(a)), Some(serde_json::Value::Object(b))) = (parse(existing), parse(wanted)) {
        for (key, value) in &b {
            if a.get(key) != Some(value) {
                let old = a.get(key).map(|v| v.to_string()).unwrap_or_else(|| "absent".into());
                return format!("`{key}` is {old} there, {value} requested");
            }
        }
    }
    "spec.json does not match".into()
}
