//! What a results folder holds against what the experiment specs ask for: every run folder,
//! its finished levels, and whether a current spec still expands to it. Runs no spec expands
//! to (an edited learning rate, a removed experiment) are stale: figures never read them, and
//! `lth runs --stale --prune` deletes them on request.

use super::store::{RunDir, Store};
use crate::error::{IoContext, Result};
use crate::spec::ExperimentSpec;
use std::path::Path;

/// One run folder as found.
#[derive(Debug)]
pub struct RunStatus {
    pub dir: RunDir,
    pub levels: Vec<usize>,
    /// Why no current spec expands to it; None if one does.
    pub stale: Option<String>,
}

/// Every experiment spec (`*.toml`) in a folder.
pub fn load_all(dir: &Path) -> Result<Vec<ExperimentSpec>> {
    let mut paths: Vec<_> =
        std::fs::read_dir(dir).at(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    paths.sort();
    paths.iter().map(|p| ExperimentSpec::load(p)).collect()
}

/// Every run folder of `store`, each with its finished levels and whether it is stale.
pub fn runs(store: &Store, specs: &[ExperimentSpec]) -> Result<Vec<RunStatus>> {
    let mut out = Vec::new();
    for dir in store.run_dirs()? {
        let stale = match dir.spec() {
            Err(e) => Some(format!("its spec cannot be read ({e})")),
            Ok(run) => match specs.iter().find(|s| s.name == run.experiment) {
                None => Some(format!("no experiment spec is named `{}`", run.experiment)),
                Some(_) if run.id() != dir.id => Some(format!("its folder name is not its spec's id `{}`", run.id())),
                Some(spec) => {
                    // The plan up to the run's own trial holds it if the spec still makes it.
                    let planned = spec.plan(run.scale, Some(run.trial + 1), run.data).unwrap_or_default();
                    (!planned.iter().any(|p| p.spec == run)).then(|| format!("the current `{}` spec no longer expands to it", spec.name))
                }
            },
        };
        out.push(RunStatus { levels: dir.finished_levels(), dir, stale });
    }
    Ok(out)
}
