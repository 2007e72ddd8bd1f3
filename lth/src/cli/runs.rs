//! `lth runs` and `lth redo`: the run folders of a results folder and where each stands
//! against the experiment specs; stale runs pruned, damaged spec.json files repaired, a
//! damaged level removed for retraining.

use super::options::check_experiments;
use crate::store::inventory::{self, Standing};
use crate::store::runs::Store;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct Runs {
    /// Results folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Folder of experiment specs.
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    /// List only the stale runs.
    #[arg(long)]
    pub stale: bool,
    /// List the stale runs that would be deleted; with --yes, delete them.
    #[arg(long)]
    pub prune: bool,
    /// Confirm --prune: delete the stale runs it lists.
    #[arg(long, requires = "prune")]
    pub yes: bool,
    /// Rewrite each missing or damaged spec.json from the loaded spec that its folder's
    /// name (a digest of the spec) identifies.
    #[arg(long, conflicts_with = "prune")]
    pub repair: bool,
}

impl Runs {
    /// Every run folder and where it stands (only the stale ones with `stale` or `prune`);
    /// stale runs deleted with `prune` and `yes`, damaged spec.json files rewritten with
    /// `repair`.
    pub fn run(self) -> Result<()> {
        let Runs { out, experiments, stale: only_stale, prune, yes, repair } = self;
        let store = Store::new(&out);
        check_experiments(&experiments)?;
        let mut specs = inventory::load_all(&experiments)?;
        for recorded in inventory::recorded_specs(&store) {
            match recorded {
                Ok(spec) => specs.push(spec),
                Err(why) => eprintln!("warning: {why}; its runs are kept"),
            }
        }
        let runs = inventory::runs(&store, &specs)?;
        if runs.is_empty() {
            eprintln!("{}: no run folders", store.runs_dir().display());
        }
        let mut stale = 0;
        let (only_stale, delete) = (only_stale || prune, prune && yes);
        for run in runs.iter().filter(|r| !only_stale || matches!(r.standing, Standing::Stale(_))) {
            let levels = run.levels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",");
            let mut line = format!("{}\tlevels [{levels}]\t{}", run.dir.id, run.describe());
            let (checkpointed, held) = (run.dir.checkpointed_levels(), run.dir.held_levels());
            for level in checkpointed.iter().chain(held.iter().filter(|l| !checkpointed.contains(l))) {
                let saved = match crate::lottery::checkpoint::saved_at(&run.dir.checkpoint_path(*level)) {
                    Some(at) => format!("checkpoint at iteration {at}"),
                    None if checkpointed.contains(level) => "an unreadable checkpoint".into(),
                    None => "no checkpoint yet".into(),
                };
                let now = if held.contains(level) { " (a process is training it now)" } else { "" };
                line.push_str(&format!("\tlevel {level}: {saved}{now}"));
            }
            println!("{line}");
            match &run.standing {
                // A run some process is training is never deleted under it.
                Standing::Stale(_) if delete && !held.is_empty() => {
                    eprintln!("{}: kept, a process is training it now; prune again once it has stopped", run.dir.dir.display());
                }
                Standing::Stale(_) if delete => {
                    std::fs::remove_dir_all(&run.dir.dir).with_context(|| format!("removing {}", run.dir.dir.display()))?;
                    println!("removed {}", run.dir.dir.display());
                }
                Standing::Stale(_) => stale += 1,
                Standing::Damaged { repair: Some(_), .. } if repair => {
                    inventory::repair(run)?;
                    println!("rewrote {}", run.dir.dir.join("spec.json").display());
                }
                _ => {}
            }
        }
        if prune && !yes && stale > 0 {
            eprintln!("{stale} stale run folder(s) listed above; nothing was deleted: pass --prune --yes to delete them");
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Redo {
    pub path: PathBuf,
}

impl Redo {
    pub fn run(self) -> Result<()> {
        crate::store::runs::redo(&self.path)?;
        eprintln!("removed {}; run the same command again to retrain it", self.path.display());
        Ok(())
    }
}
