//! Every on-disk name of a results folder (open_lth's `paths.py`), and the checks that make
//! what is read from it exactly what was written:
//!
//! ```text
//! <out>/runs/<run-id>/spec.json                 the resolved RunSpec (canonical JSON)
//! <out>/runs/<run-id>/init.safetensors          theta0 of a ticket run
//! <out>/runs/<run-id>/init.done                 written after it: its size and SHA-256
//! <out>/runs/<run-id>/level-NN/mask.safetensors
//! <out>/runs/<run-id>/level-NN/final.safetensors   weights after training
//! <out>/runs/<run-id>/level-NN/curve.csv        one CurveRecord per evaluation
//! <out>/runs/<run-id>/level-00/rewind.safetensors  θk of a rewinding ticket run (`rewind`)
//! <out>/runs/<run-id>/level-NN/next-mask.bits.gz   a ticket level's: the mask the next level trains under
//! <out>/runs/<run-id>/level-NN/done             written last: each file's size, SHA-256 and tensors
//! <out>/runs/<run-id>/level-NN/checkpoint.safetensors   an unfinished level's training so far (`lottery::checkpoint`)
//! <out>/runs/<run-id>/level-NN/.lth-lock        locked while a process trains the level (`lock_level`)
//! <out>/spec-paths/<digest>.path                the path of a spec run by path (`inventory`)
//! ```
//!
//! A level is finished if and only if its `done` marker exists (a folder may keep just the
//! curves of finished levels, with their markers: see [`RunDir::has_weights`]); every file is written to a
//! temporary name and renamed, so an interrupted run resumes at its first unfinished level.
//! `next-mask.bits.gz` is small enough to commit beside the curves (a thirty-second of the
//! weights' size before compression), so a clone that lacks the weights still resumes a ticket
//! run at its next level, and trains its reinit and random-pruning controls.
//! Every read of a finished file checks it against its marker, so a damaged file is named and
//! refused, never trained from or drawn.

use crate::base::error::{Error, IoContext, Result};
use crate::base::files::{self, damaged_tensors, redo_target, save_tensors, write_atomic};
use crate::base::spec::{RunId, RunSpec};
use crate::nn::{Architecture, Weights};
use crate::sparsity::masks::Mask;
use crate::store::marker;
use crate::store::record::{parse_curve, write_csv, CurveRecord};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
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

/// A level folder held by this process ([`RunDir::lock_level`]); dropping it lets go.
pub struct LevelLock {
    _file: fs::File,
    /// Another process held the level first (and may have finished it meanwhile).
    pub waited: bool,
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(&path, wanted.as_bytes())?,
            Err(e) => return Err(Error::SpecMismatch { dir, reason: format!("its spec.json cannot be read: {e}") }),
        }
        Ok(RunDir { id, dir })
    }

    /// The folder of `spec` if it exists (for reading a trunk from a branch).
    pub fn existing(&self, spec: &RunSpec) -> RunDir {
        let id = spec.id();
        RunDir { dir: self.runs_dir().join(&id.0), id }
    }

    /// Every run folder, sorted by name (none if the results folder is new).
    pub fn run_dirs(&self) -> Result<Vec<RunDir>> {
        let runs = self.runs_dir();
        let Ok(entries) = fs::read_dir(&runs) else {
            return Ok(Vec::new());
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let path = entry.at(&runs)?.path();
            if path.is_dir() {
                let id = RunId(files::file_name(&path));
                dirs.push(RunDir { id, dir: path });
            }
        }
        dirs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(dirs)
    }
}

impl RunDir {
    pub fn init_path(&self) -> PathBuf {
        self.dir.join("init.safetensors")
    }
    pub fn init_marker(&self) -> PathBuf {
        self.dir.join("init.done")
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
    /// A ticket level's record of the mask its next level trains under (`Mask::to_bits_gz`).
    pub fn next_mask_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("next-mask.bits.gz")
    }
    pub fn curve_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("curve.csv")
    }
    /// The dense network's state at the rewind point, written with level 0 (`rewind`).
    pub fn rewind_path(&self) -> PathBuf {
        self.level_dir(0).join("rewind.safetensors")
    }
    /// The state of an unfinished level's training, to resume from (`lottery::checkpoint`).
    pub fn checkpoint_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("checkpoint.safetensors")
    }
    /// Held by the process that trains the level ([`RunDir::lock_level`]).
    pub fn lock_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join(".lth-lock")
    }
    pub fn done_path(&self, level: usize) -> PathBuf {
        self.level_dir(level).join("done")
    }
    pub fn is_done(&self, level: usize) -> bool {
        self.done_path(level).exists()
    }
    /// A finished level whose mask and trained weights are here too: what later levels and
    /// controls read. A committed results folder keeps only curves (`figures/paper/results`),
    /// enough to draw from but not to train from.
    pub fn has_weights(&self, level: usize) -> bool {
        self.is_done(level) && self.mask_path(level).exists() && self.final_path(level).exists()
    }
    /// A finished level that recorded the mask of the next level.
    pub fn has_next_mask(&self, level: usize) -> bool {
        self.is_done(level) && self.next_mask_path(level).exists()
    }
    /// theta0 was written and recorded (a killed run may leave the file without its marker;
    /// `lth redo` or a user may remove the file and leave the marker).
    pub fn has_init(&self) -> bool {
        self.init_marker().exists() && self.init_path().exists()
    }

    /// The run's spec as stored in its folder.
    pub fn spec(&self) -> Result<RunSpec> {
        let path = self.dir.join("spec.json");
        let text = fs::read_to_string(&path).at(&path)?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: not a run spec ({e})", path.display())))
    }

    /// The levels that have a folder, ascending.
    fn levels(&self) -> Vec<usize> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut levels: Vec<usize> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("level-")?.parse().ok()).collect();
        levels.sort_unstable();
        levels
    }

    /// The finished levels, ascending.
    pub fn finished_levels(&self) -> Vec<usize> {
        self.levels().into_iter().filter(|&level| self.is_done(level)).collect()
    }

    /// The unfinished levels that hold a checkpoint of their training, ascending.
    pub fn checkpointed_levels(&self) -> Vec<usize> {
        self.levels().into_iter().filter(|&level| !self.is_done(level) && self.checkpoint_path(level).exists()).collect()
    }

    /// The levels whose lock another process holds now (it is training them), ascending.
    pub fn held_levels(&self) -> Vec<usize> {
        self.levels().into_iter().filter(|&level| self.is_held(level)).collect()
    }

    /// Whether another process holds `level`'s lock now. A probe: the lock is taken and let go
    /// at once, never waited for; a level without a lock file has no holder.
    pub fn is_held(&self, level: usize) -> bool {
        fs::File::open(self.lock_path(level)).is_ok_and(|file| matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock)))
    }

    /// Takes the lock of `level`'s folder for the caller's lifetime of the returned value,
    /// waiting while another process holds it (`on_wait` is told once, with the lock's path).
    /// It is an operating-system lock on `level-NN/.lth-lock` (`File::lock`), released when its
    /// holder ends, killed or not, so no stale lock outlives a crash; the file stays (results
    /// folders' `.gitignore` leaves out `.lth-*`). `None` where the file system has no locks.
    pub fn lock_level(&self, level: usize, on_wait: impl FnOnce(&Path)) -> Result<Option<LevelLock>> {
        let (dir, path) = (self.level_dir(level), self.lock_path(level));
        fs::create_dir_all(&dir).at(&dir)?;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).at(&path)?;
        let waited = match file.try_lock() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => {
                on_wait(&path);
                file.lock().at(&path)?;
                true
            }
            Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(None),
            Err(fs::TryLockError::Error(source)) => return Err(Error::Io { path, source }),
        };
        Ok(Some(LevelLock { _file: file, waited }))
    }

    /// Marks `level` finished: its marker records what its files hold.
    pub fn mark_done(&self, level: usize) -> Result<()> {
        let mut files = vec![self.mask_path(level), self.final_path(level), self.curve_path(level)];
        // A rewinding ticket run's θk is part of its level 0.
        if level == 0 && self.rewind_path().exists() {
            files.push(self.rewind_path());
        }
        if self.next_mask_path(level).exists() {
            files.push(self.next_mask_path(level));
        }
        marker::write(&self.done_path(level), &files)
    }

    /// Before a finished level's files are written again (a level kept only as its curve,
    /// retrained or copied for its weights): its marker goes first, so until the new one is
    /// written the level counts as unfinished and no reader trusts files the old one did not
    /// record.
    pub fn unmark_done(&self, level: usize) -> Result<()> {
        let done = self.done_path(level);
        if done.exists() {
            fs::remove_file(&done).at(&done)?;
        }
        Ok(())
    }

    /// Copies finished `level` of `from` into this run, for a run whose training is the same as
    /// `from`'s under another experiment name: every file is read through `from`'s marker, the
    /// weights (mask, final, θk, the next mask) are written byte for byte, the curve with its
    /// `experiment` column set to `experiment`, and the level is then marked finished here.
    pub fn copy_level_from(&self, from: &RunDir, level: usize, experiment: &str) -> Result<()> {
        fs::create_dir_all(self.level_dir(level)).at(&self.level_dir(level))?;
        self.unmark_done(level)?;
        let mut weights = vec![(from.mask_path(level), self.mask_path(level)), (from.final_path(level), self.final_path(level))];
        if level == 0 && from.rewind_path().exists() {
            weights.push((from.rewind_path(), self.rewind_path()));
        }
        if from.next_mask_path(level).exists() {
            weights.push((from.next_mask_path(level), self.next_mask_path(level)));
        }
        for (source, target) in weights {
            write_atomic(&target, &from.read_level_file(level, &source)?)?;
        }
        let mut curve = from.load_curve(level)?;
        curve.iter_mut().for_each(|row| row.key.experiment = experiment.to_owned());
        write_csv(&curve, &self.curve_path(level))?;
        self.mark_done(level)
    }

    /// Records theta0 as written.
    pub fn mark_init(&self) -> Result<()> {
        marker::write(&self.init_marker(), &[self.init_path()])
    }

    pub fn load_init(&self, arch: &Architecture) -> Result<Weights> {
        let path = self.init_path();
        weights_from(&verified(&self.init_marker(), &path)?, &path, arch)
    }

    pub fn load_mask(&self, level: usize, arch: &Architecture) -> Result<Mask> {
        let path = self.mask_path(level);
        Mask::from_safetensors(&self.read_level_file(level, &path)?, &path, arch)
    }

    /// The mask the level after `level` trains under, as `level` recorded it.
    pub fn load_next_mask(&self, level: usize, arch: &Architecture) -> Result<Mask> {
        let path = self.next_mask_path(level);
        Mask::from_bits_gz(&self.read_level_file(level, &path)?, &path, arch)
    }

    pub fn load_final(&self, level: usize, arch: &Architecture) -> Result<Weights> {
        let path = self.final_path(level);
        weights_from(&self.read_level_file(level, &path)?, &path, arch)
    }

    /// θk of a rewinding ticket run, checked against level 0's marker.
    pub fn load_rewind(&self, arch: &Architecture) -> Result<Weights> {
        let path = self.rewind_path();
        weights_from(&self.read_level_file(0, &path)?, &path, arch)
    }

    pub fn load_curve(&self, level: usize) -> Result<Vec<CurveRecord>> {
        let path = self.curve_path(level);
        parse_curve(&self.read_level_file(level, &path)?, &path)
    }

    /// A finished level's file, checked against its marker (an empty marker vouches for
    /// nothing: see [`marker::empty`]).
    pub fn read_level_file(&self, level: usize, path: &Path) -> Result<Vec<u8>> {
        let done = self.done_path(level);
        if !done.exists() {
            return Err(Error::Invalid(format!("{}: level {level} is not finished", self.level_dir(level).display())));
        }
        verified(&done, path)
    }
}

/// The bytes of `path` if its marker vouches for them; otherwise the error that names it and
/// the part of the run to redo.
fn verified(marker: &Path, path: &Path) -> Result<Vec<u8>> {
    marker::read_verified(marker, path).map_err(|reason| Error::RunFile { path: path.to_owned(), reason, redo: redo_target(path) })
}

/// Removes a damaged part of a run so that the next run of its command redoes it: a level
/// folder (`<out>/runs/<run-id>/level-NN`, or a file in it) or theta0
/// (`<out>/runs/<run-id>/init.safetensors`).
/// Levels are deterministic, so a redone level is bit-identical to the one it replaces.
pub fn redo(path: &Path) -> Result<()> {
    // A file of a level (the one an error named) stands for its level.
    let target = redo_target(path);
    let path = target.as_path();
    let name = files::file_name(path);
    let in_run = |dir: Option<&Path>| dir.and_then(Path::parent).is_some_and(|runs| files::file_name(runs) == "runs");
    let wrong = || Error::Invalid(format!("{}: not a level folder (`<out>/runs/<run-id>/level-NN`) or `<out>/runs/<run-id>/init.safetensors`", path.display()));
    if !in_run(path.parent()) {
        return Err(wrong());
    }
    // What a training process holds is not removed from under it.
    let dir = path.parent().unwrap_or(path);
    let run = RunDir { id: RunId(files::file_name(dir)), dir: dir.to_path_buf() };
    let level = name.strip_prefix("level-").and_then(|n| n.parse::<usize>().ok());
    // theta0 (no level) is read by every level of the run.
    let held = match level {
        Some(level) => run.is_held(level).then_some(level),
        None => run.held_levels().first().copied(),
    };
    if let Some(held) = held {
        return Err(Error::Invalid(format!(
            "{}: another process is training level {held} of this run now (it holds {}); stop it or let it finish, then run `lth redo` again",
            path.display(),
            run.lock_path(held).display()
        )));
    }
    if level.is_some() {
        // The marker first: from then on the level counts as unfinished, whatever else remains.
        let done = path.join("done");
        if done.exists() {
            fs::remove_file(&done).at(&done)?;
        }
        return fs::remove_dir_all(path).at(path);
    }
    if name == "init.safetensors" || name == "init.done" {
        for file in [dir.join("init.done"), dir.join("init.safetensors")] {
            if file.exists() {
                fs::remove_file(&file).at(&file)?;
            }
        }
        return Ok(());
    }
    Err(wrong())
}

pub fn save_weights(weights: &Weights, arch: &Architecture, path: &Path) -> Result<()> {
    let tensors =
        arch.params.iter().map(|p| Ok((p.name.clone(), Tensor::from_slice(&weights[&p.name], p.shape.as_slice(), &Device::Cpu)?))).collect::<Result<_>>()?;
    save_tensors(&tensors, path)
}

/// Reads weights from a safetensors file, checking every parameter's name and shape. Run
/// folders read through [`RunDir`], which checks the file against its marker first.
pub fn load_weights(path: &Path, arch: &Architecture) -> Result<Weights> {
    weights_from(&fs::read(path).at(path)?, path, arch)
}

fn weights_from(bytes: &[u8], path: &Path, arch: &Architecture) -> Result<Weights> {
    let mut tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| damaged_tensors(path, e.to_string()))?;
    take_weights(&mut tensors, "", arch, path)
}

/// Removes `<prefix><name>` of every parameter of `arch` from `tensors` (read from `path`),
/// checking each one's shape: a weights file's tensors, or one set of a checkpoint's.
pub fn take_weights(tensors: &mut HashMap<String, Tensor>, prefix: &str, arch: &Architecture, path: &Path) -> Result<Weights> {
    arch.params
        .iter()
        .map(|p| {
            let name = format!("{prefix}{}", p.name);
            let t = tensors.remove(&name).ok_or_else(|| damaged_tensors(path, format!("no tensor `{name}`")))?;
            if t.dims() != p.shape.as_slice() {
                return Err(damaged_tensors(path, format!("`{name}` has shape {:?}, expected {:?}", t.dims(), p.shape)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_of_a_level_waits_until_the_first_lets_go() {
        let root = std::env::temp_dir().join(format!("lth-lock-test-{}", std::process::id()));
        let run = RunDir { id: RunId("run".into()), dir: root.join("runs").join("run") };
        let first = run.lock_level(3, |_| panic!("nobody holds it yet")).unwrap().expect("this file system has locks");
        assert!(!first.waited);
        let (told, waiting) = mpsc::channel();
        let second = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| run.lock_level(3, move |path| told.send(path.to_path_buf()).unwrap()).unwrap().unwrap());
            // The waiter says it waits, and still waits a while later: the lock holds.
            assert_eq!(waiting.recv_timeout(Duration::from_secs(10)).unwrap(), run.lock_path(3));
            std::thread::sleep(Duration::from_millis(200));
            assert!(!waiter.is_finished(), "the second holder got the lock while the first held it");
            drop(first);
            waiter.join().unwrap()
        });
        assert!(second.waited);
        // Others see it held, and `lth redo` leaves it alone.
        assert!(run.is_held(3) && !run.is_held(4) && run.held_levels() == vec![3]);
        assert!(redo(&run.level_dir(3)).unwrap_err().to_string().contains("another process is training level 3"));
        // Another level is another lock.
        let other = run.lock_level(4, |_| panic!("level 4 is free")).unwrap().unwrap();
        assert!(!other.waited);
        drop((second, other));
        assert!(run.held_levels().is_empty(), "let go when dropped");
        let _ = fs::remove_dir_all(&root);
    }
}
