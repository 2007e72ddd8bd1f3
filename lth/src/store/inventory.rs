//! What a results folder holds against what the experiment specs ask for: every run folder,
//! its finished levels, and where it stands. Only a run whose spec is known (a loaded spec has
//! its experiment's name) and no longer expands to it (an edited learning rate, a removed
//! scale) is stale: figures never read it, and `lth runs --prune --yes` deletes it. A run whose
//! experiment no loaded spec names, or whose `spec.json` is missing or damaged, is kept: it may
//! hold finished work that only a spec this command was not shown still uses.
//!
//! Specs run by path (`lth run my/spec.toml`) are recorded in the results folder
//! (`<out>/spec-paths/`), so that their runs are judged by them wherever `--experiments` points.

use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use crate::base::spec::{DataSource, ExperimentSpec, RunSpec};
use crate::store::record::CurveRecord;
use crate::store::runs::{RunDir, Store};
use std::path::{Path, PathBuf};

/// Where one run folder stands against the loaded specs.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// A loaded spec expands to it.
    Current,
    /// Its spec is known and no longer expands to it (why): the only runs prune deletes.
    Stale(String),
    /// No loaded spec is named after its experiment (why): kept.
    Unknown(String),
    /// Its `spec.json` is missing, unreadable or not the spec its folder is named after (why):
    /// kept; `repair` is the spec a loaded spec expands to under the folder's name, if any.
    Damaged { reason: String, repair: Option<RunSpec> },
}

/// One run folder as found.
#[derive(Debug)]
pub struct RunStatus {
    pub dir: RunDir,
    pub levels: Vec<usize>,
    pub standing: Standing,
}

impl RunStatus {
    /// The status column of `lth runs`.
    pub fn describe(&self) -> String {
        match &self.standing {
            Standing::Current => "current".into(),
            Standing::Stale(why) => format!("stale: {why}"),
            Standing::Unknown(why) => format!("kept: {why}"),
            Standing::Damaged { reason, repair: Some(_) } => format!("kept: {reason}; `lth runs --repair` rewrites it from the spec that names this folder"),
            Standing::Damaged { reason, repair: None } => {
                format!("kept: {reason}; no loaded spec expands to this folder's name, so it cannot be rewritten (pass the spec with --experiments, or delete the folder by hand)")
            }
        }
    }
}

/// Every experiment spec (`*.toml`) in a folder.
pub fn load_all(dir: &Path) -> Result<Vec<ExperimentSpec>> {
    let mut paths: Vec<_> =
        std::fs::read_dir(dir).at(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    paths.sort();
    paths.iter().map(|p| ExperimentSpec::load(p)).collect()
}

/// The folder of a results folder that records the specs run by path.
fn spec_paths_dir(store: &Store) -> PathBuf {
    store.root.join("spec-paths")
}

/// Records that `spec_path` was run into `store` (one small file per spec path, written
/// atomically, so concurrent runs of different specs never lose each other's record).
pub fn record_spec_path(store: &Store, spec_path: &Path) -> Result<()> {
    let absolute = std::fs::canonicalize(spec_path).at(spec_path)?;
    let text = absolute.to_string_lossy().into_owned();
    let dir = spec_paths_dir(store);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let record = dir.join(format!("{}.path", &files::sha256(text.as_bytes())[..16]));
    if std::fs::read_to_string(&record).is_ok_and(|existing| existing == text) {
        return Ok(());
    }
    files::write_atomic(&record, text.as_bytes())
}

/// The specs recorded in `store` by `record_spec_path`, each with why it could not be loaded
/// (moved, removed, malformed) instead where it could not: its runs are then kept as unknown.
pub fn recorded_specs(store: &Store) -> Vec<std::result::Result<ExperimentSpec, String>> {
    let dir = spec_paths_dir(store);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut records: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "path")).collect();
    records.sort();
    records
        .iter()
        .map(|record| {
            let path = std::fs::read_to_string(record).map_err(|e| format!("{}: cannot be read ({e})", record.display()))?;
            ExperimentSpec::load(Path::new(&path)).map_err(|e| format!("a spec run by path ({}, recorded in {}) cannot be loaded: {e}", path, record.display()))
        })
        .collect()
}

/// Every run folder of `store`, each with its finished levels and where it stands.
pub fn runs(store: &Store, specs: &[ExperimentSpec]) -> Result<Vec<RunStatus>> {
    let mut out = Vec::new();
    for dir in store.run_dirs()? {
        let standing = standing(&dir, specs);
        out.push(RunStatus { levels: dir.finished_levels(), dir, standing });
    }
    Ok(out)
}

fn standing(dir: &RunDir, specs: &[ExperimentSpec]) -> Standing {
    let run = match dir.spec() {
        Err(e) => return damaged(dir, specs, format!("its spec.json is missing or damaged ({e})")),
        Ok(run) => run,
    };
    if run.id() != dir.id {
        return damaged(dir, specs, format!("its spec.json is not the spec its folder is named after (edited or damaged: it hashes to `{}`)", run.id()));
    }
    let named: Vec<&ExperimentSpec> = specs.iter().filter(|s| s.name == run.experiment).collect();
    if named.is_empty() {
        return Standing::Unknown(format!(
            "no loaded spec is named `{}` (pass its folder with --experiments, or run it once by path with `lth run`)",
            run.experiment
        ));
    }
    // The plan up to the run's own trial holds it if a spec still makes it.
    let expands = |spec: &ExperimentSpec| spec.plan(run.scale, Some(run.trial + 1), run.data).unwrap_or_default().iter().any(|p| p.spec == run);
    if named.iter().any(|spec| expands(spec)) {
        Standing::Current
    } else {
        Standing::Stale(format!("the current `{}` spec no longer expands to it", run.experiment))
    }
}

fn damaged(dir: &RunDir, specs: &[ExperimentSpec], reason: String) -> Standing {
    Standing::Damaged { reason, repair: spec_named(dir, specs) }
}

/// The run spec a loaded spec expands to whose id is the folder's name: the folder name holds
/// a digest of its spec, so a match is that spec and no other.
fn spec_named(dir: &RunDir, specs: &[ExperimentSpec]) -> Option<RunSpec> {
    let trial = trial_in(&dir.id.0)?;
    // The images the run trained on: real, synthetic, or a copy that its curves name.
    let mut sources = vec![DataSource::Real, DataSource::Synthetic];
    for level in dir.finished_levels() {
        let rows: Vec<CurveRecord> = crate::store::record::read_curve(&dir.curve_path(level)).unwrap_or_default();
        sources.extend(rows.first().map(|r| r.key.data).filter(|d| !sources.contains(d)));
    }
    for spec in specs.iter().filter(|s| dir.id.0.starts_with(&s.name)) {
        for &scale in spec.scales.keys() {
            for &data in &sources {
                let planned = spec.plan(scale, Some(trial + 1), data).unwrap_or_default();
                if let Some(p) = planned.into_iter().find(|p| p.spec.id() == dir.id) {
                    return Some(p.spec);
                }
            }
        }
    }
    None
}

/// The trial in a run id (`<experiment>...-t<trial>[-c<copy>]-<digest>`).
fn trial_in(id: &str) -> Option<usize> {
    id.rsplit('-').find_map(|part| part.strip_prefix('t')?.parse().ok())
}

/// Rewrites the `spec.json` of a damaged run from the spec that names its folder.
pub fn repair(status: &RunStatus) -> Result<()> {
    let Standing::Damaged { repair: Some(spec), .. } = &status.standing else {
        return Err(Error::Invalid(format!("{}: nothing to repair", status.dir.dir.display())));
    };
    files::write_atomic(&status.dir.dir.join("spec.json"), spec.canonical_json().as_bytes())
}
