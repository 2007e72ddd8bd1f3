//! The trainings of a plan as a work queue shared by worker threads: one task per (run, level),
//! started as soon as the level it reads is finished (a ticket level reads the ticket's previous
//! level; one-shot reads the ticket's dense level 0; reinit and random pruning read the ticket's
//! level of the same sparsity). Workers take the first ready task in a fixed order: trial, then
//! the ticket before its controls, then level. So the trial in hand finishes first (a stopped
//! reproduce leaves whole trials behind it), and no core idles while another trial has work:
//! when a trial's controls wait for its ticket, the next trial's ticket starts.
//!
//! Every training's result depends only on its own seeds, never on which worker ran it or when,
//! so any order gives the same bits.

use crate::base::error::{Error, Result};
use crate::base::spec::{PlannedRun, Procedure};
use crate::lottery::checkpoint;
use crate::lottery::procedure::{self, Resources};
use crate::lottery::rewind;
use crate::store::runs::Store;
use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex};

/// One training: `level` of `plan[run]`, weighing `units` in the overall progress. `redo`: the
/// level is finished but kept only its curve, and a pending training reads what it no longer has
/// (its weights, or the mask a ticket level records for the next), so it is trained again (to the
/// same bits; its curve is rewritten unchanged). `resumes_at`: the iteration of the checkpoint
/// the level resumes from, if it has one; it then weighs only the steps it has left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Task {
    pub run: usize,
    pub level: usize,
    pub units: u64,
    pub redo: bool,
    pub resumes_at: Option<usize>,
}

/// The pending tasks of `plan` in the order workers take them, each with the task (run, level)
/// it waits for, if that one is in the plan. Finished levels are left out, unless they kept
/// only their curves and a pending training reads more than that.
/// Every run folder is opened first, so one that holds another spec is refused before any
/// training, even when all its levels are finished.
pub fn pending(plan: &[PlannedRun], store: &Store, units: impl Fn(usize, usize) -> u64) -> Result<Vec<(Task, Option<(usize, usize)>)>> {
    let reads = |run: usize, level: usize| match plan[run].spec.procedure {
        Procedure::Ticket => level.checked_sub(1).map(|previous| (run, previous)),
        Procedure::Oneshot => trunk_of(plan, run).map(|trunk| (trunk, 0)),
        Procedure::Reinit | Procedure::RandomPrune => trunk_of(plan, run).map(|trunk| (trunk, level)),
        // Pruning at initialization reads only theta0 (drawn before any worker starts); it
        // waits for the ticket's level 0 so that the ticket's levels come first.
        Procedure::InitRandom | Procedure::InitMagnitude | Procedure::Snip | Procedure::Synflow => trunk_of(plan, run).map(|trunk| (trunk, 0)),
    };
    let dirs = plan.iter().map(|p| store.open(&p.spec)).collect::<Result<Vec<_>>>()?;
    // Whether level `l` of run `r` still holds what `reader` needs: the weights, or for the
    // readers that only take a ticket level's mask, that mask in any of its forms
    // (`procedure::trained_mask`), with θk beside it for those that reset to it.
    let readable = |reader: usize, r: usize, l: usize| {
        let spec = &plan[reader].spec;
        let rewind_point = spec.rewind_iteration == 0 || dirs[r].rewind_path().exists();
        dirs[r].has_weights(l)
            || match spec.procedure {
                Procedure::Ticket => dirs[r].has_next_mask(l) && rewind_point,
                Procedure::Reinit => procedure::has_trained_mask(&dirs[r], l),
                Procedure::RandomPrune => procedure::has_trained_mask(&dirs[r], l) && rewind_point,
                _ => false,
            }
    };
    let mut todo: BTreeSet<(usize, usize, bool)> = BTreeSet::new();
    for (run, planned) in plan.iter().enumerate() {
        for &level in &planned.levels {
            if !dirs[run].is_done(level) {
                todo.insert((run, level, false));
            }
        }
    }
    // Follow what pending trainings read back through levels that kept only their curves.
    let mut frontier: Vec<(usize, usize)> = todo.iter().map(|&(run, level, _)| (run, level)).collect();
    while let Some((run, level)) = frontier.pop() {
        if let Some((r, l)) = reads(run, level).filter(|_| !plan[run].spec.procedure.at_init()) {
            if dirs[r].is_done(l) && !readable(run, r, l) && todo.insert((r, l, true)) {
                frontier.push((r, l));
            }
        }
    }
    let task = |run: usize, level: usize, redo: bool| {
        let iterations = plan[run].spec.iterations;
        // Read from the checkpoint's header alone; one the training cannot use is set aside there.
        let resumes_at = checkpoint::saved_at(&dirs[run].checkpoint_path(level)).filter(|&at| !redo && at < iterations);
        let whole = units(run, level);
        // `whole` weighs the steps after the level's start (its rewind point, if any).
        let steps = iterations - rewind::start_iteration(&plan[run].spec, level).min(iterations);
        let units = resumes_at.map_or(whole, |at| ((whole as f64) * (iterations - at) as f64 / steps.max(1) as f64).round().max(1.0) as u64);
        Task { run, level, units, redo, resumes_at }
    };
    let mut tasks: Vec<(Task, Option<(usize, usize)>)> = todo.into_iter().map(|(run, level, redo)| (task(run, level, redo), reads(run, level))).collect();
    let rank = |t: &Task| {
        let spec = &plan[t.run].spec;
        (spec.trial, spec.procedure != Procedure::Ticket, t.level, t.run)
    };
    tasks.sort_by_key(|(t, _)| rank(t));
    Ok(tasks)
}

/// The index in `plan` of the ticket run that `plan[run]` reads, if it is in the plan.
fn trunk_of(plan: &[PlannedRun], run: usize) -> Option<usize> {
    let trunk = plan[run].spec.trunk();
    plan.iter().position(|p| p.spec == trunk)
}

struct Queue {
    pending: Vec<(Task, Option<(usize, usize)>)>,
    /// Tasks pending or running: a task waits while the one it reads is among them.
    unfinished: BTreeSet<(usize, usize)>,
    failed: bool,
}

/// Runs `tasks` (from [`pending`]) on `jobs` worker threads; the first error stops the others
/// once their current training ends, and is returned.
pub fn run(plan: &[PlannedRun], tasks: Vec<(Task, Option<(usize, usize)>)>, jobs: usize, on: Resources) -> Result<()> {
    // theta0 of every ticket run a task trains or reads, before any worker starts.
    let tickets: BTreeSet<usize> =
        tasks.iter().filter_map(|(t, _)| if plan[t.run].spec.procedure == Procedure::Ticket { Some(t.run) } else { trunk_of(plan, t.run) }).collect();
    for &ticket in &tickets {
        procedure::draw_theta0(&plan[ticket].spec, on.store)?;
    }
    let unfinished = tasks.iter().map(|(t, _)| (t.run, t.level)).collect();
    let queue = Mutex::new(Queue { pending: tasks, unfinished, failed: false });
    let changed = Condvar::new();
    let worker = || -> Result<()> {
        while let Some(task) = next(&queue, &changed)? {
            let spec = &plan[task.run].spec;
            let result = procedure::run_level(spec, task.level, task.redo, task.units, on);
            let mut q = queue.lock().map_err(|_| poisoned())?;
            q.unfinished.remove(&(task.run, task.level));
            q.failed |= result.is_err();
            changed.notify_all();
            drop(q);
            result.map_err(|e| Error::Training { run: spec.id().0, level: task.level, source: Box::new(e) })?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.max(1)).map(|_| scope.spawn(worker)).collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(Error::Invalid("a training thread panicked".into())))).collect::<Vec<_>>()
    })
    .into_iter()
    .collect::<Result<Vec<()>>>()
    .map(drop)
}

/// The next task to train, waiting while every pending one waits for a running one; None when
/// nothing is left or another worker failed.
fn next(queue: &Mutex<Queue>, changed: &Condvar) -> Result<Option<Task>> {
    let mut q = queue.lock().map_err(|_| poisoned())?;
    loop {
        if q.failed || q.pending.is_empty() {
            return Ok(None);
        }
        // A task whose trunk is outside this plan and unfinished on disk starts anyway:
        // `lottery` then says which command to run first.
        let ready = |after: &Option<(usize, usize)>| after.is_none_or(|dep| !q.unfinished.contains(&dep));
        if let Some(i) = q.pending.iter().position(|(_, after)| ready(after)) {
            let (task, _) = q.pending.remove(i);
            return Ok(Some(task));
        }
        q = changed.wait(q).map_err(|_| poisoned())?;
    }
}

/// The wall time, in task units, that [`run`] takes on `jobs` workers if every task takes its
/// `units`: the queue's own rule (a free worker takes the first ready task), simulated. With
/// fewer trials than workers a trial's ticket levels are a chain that no worker count shortens,
/// so the total divided by the workers can be far too optimistic.
pub fn makespan(tasks: &[(Task, Option<(usize, usize)>)], jobs: usize) -> u64 {
    let mut pending = tasks.to_vec();
    let mut unfinished: BTreeSet<(usize, usize)> = tasks.iter().map(|(t, _)| (t.run, t.level)).collect();
    // (end, task) of the tasks in progress.
    let mut running: Vec<(u64, (usize, usize))> = Vec::new();
    let mut now = 0;
    loop {
        while running.len() < jobs.max(1) {
            let Some(i) = pending.iter().position(|(_, after)| after.is_none_or(|dep| !unfinished.contains(&dep))) else { break };
            let (task, _) = pending.remove(i);
            running.push((now + task.units, (task.run, task.level)));
        }
        let Some(first) = (0..running.len()).min_by_key(|&i| running[i].0) else { return now };
        let (end, done) = running.swap_remove(first);
        now = end;
        unfinished.remove(&done);
    }
}

fn poisoned() -> Error {
    Error::Invalid("a training thread panicked while holding the work queue".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::spec::{DataSource, ExperimentSpec, Scale};

    #[test]
    fn the_makespan_follows_the_chain_of_ticket_levels() {
        let task = |run, level, units| Task { run, level, units, redo: false, resumes_at: None };
        // A ticket's levels 0-2 (10 each), a control reading level 1 (5) and one reading level 2 (5).
        let tasks = vec![
            (task(0, 0, 10), None),
            (task(0, 1, 10), Some((0, 0))),
            (task(0, 2, 10), Some((0, 1))),
            (task(1, 1, 5), Some((0, 1))),
            (task(1, 2, 5), Some((0, 2))),
        ];
        // 40 units on 2 workers are not 20: the chain takes 30 and the last control 5 more.
        assert_eq!(makespan(&tasks, 2), 35);
        assert_eq!(makespan(&tasks, 1), 40);
        // Independent tasks share the workers.
        let independent: Vec<_> = (0..4).map(|run| (task(run, 0, 10), None)).collect();
        assert_eq!(makespan(&independent, 2), 20);
        assert_eq!(makespan(&[], 2), 0);
    }

    /// LeNet's `quick` plan, and an empty results folder named `name` in the temp folder.
    fn lenet_quick_in(name: &str) -> (Vec<PlannedRun>, std::path::PathBuf, Store) {
        quick_in("lenet", name)
    }

    fn quick_in(experiment: &str, name: &str) -> (Vec<PlannedRun>, std::path::PathBuf, Store) {
        let spec = ExperimentSpec::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../experiments/{experiment}.toml"))).unwrap();
        let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        (spec.plan(Scale::Quick, None, DataSource::Real).unwrap(), root.clone(), Store::new(&root))
    }

    #[test]
    fn tasks_come_trial_by_trial_ticket_first_each_after_the_level_it_reads() {
        let (plan, root, store) = lenet_quick_in("lth-work-test");
        let tasks = pending(&plan, &store, |_, level| level as u64 + 1).unwrap();
        assert_eq!(tasks.len(), plan.iter().map(|p| p.levels.len()).sum::<usize>(), "nothing is finished in an empty folder");
        let (first, after) = tasks[0];
        assert_eq!((plan[first.run].spec.procedure, plan[first.run].spec.trial, first.level, after), (Procedure::Ticket, 0, 0, None));
        for (i, (task, after)) in tasks.iter().enumerate() {
            let spec = &plan[task.run].spec;
            assert_eq!(task.units, task.level as u64 + 1);
            assert!(!task.redo);
            if i > 0 {
                assert!(plan[tasks[i - 1].0.run].spec.trial <= spec.trial, "trial by trial");
            }
            match spec.procedure {
                Procedure::Ticket if task.level == 0 => assert_eq!(*after, None),
                _ => {
                    let (run, level) = after.expect("every other task reads a level");
                    assert_eq!(plan[run].spec.procedure, Procedure::Ticket);
                    assert_eq!(plan[run].spec.trial, spec.trial);
                    let expected = if spec.procedure == Procedure::Oneshot {
                        0
                    } else if spec.procedure == Procedure::Ticket {
                        task.level - 1
                    } else {
                        task.level
                    };
                    assert_eq!(level, expected, "{:?} level {}", spec.procedure, task.level);
                    assert!(tasks[..i].iter().any(|(t, _)| (t.run, t.level) == (run, level)), "what a task reads comes before it");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Writes the header of a checkpoint of `spec`'s `level`; only the header is read here: its
    /// length, then JSON with the iteration.
    fn write_checkpoint_header(store: &Store, spec: &crate::base::spec::RunSpec, level: usize, header: &str) {
        let path = store.open(spec).unwrap().checkpoint_path(level);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_level_resuming_from_its_checkpoint_weighs_the_steps_it_has_left() {
        let (plan, root, store) = lenet_quick_in("lth-work-resume-test");
        let iterations = plan[0].spec.iterations;
        let write_header = |level: usize, header: &str| write_checkpoint_header(&store, &plan[0].spec, level, header);
        write_header(0, &format!(r#"{{"__metadata__":{{"iteration":"{}"}}}}"#, iterations / 4));
        write_header(1, &format!(r#"{{"__metadata__":{{"iteration":"{iterations}"}}}}"#));
        write_header(2, "not json");
        let tasks = pending(&plan, &store, |_, _| 1000).unwrap();
        let of = |level: usize| tasks.iter().map(|(t, _)| *t).find(|t| t.run == 0 && t.level == level).unwrap();
        assert_eq!((of(0).resumes_at, of(0).units), (Some(iterations / 4), 750), "a quarter done leaves three quarters");
        assert_eq!((of(1).resumes_at, of(1).units), (None, 1000), "a checkpoint at the last iteration or past it is no resume");
        assert_eq!((of(2).resumes_at, of(2).units), (None, 1000), "an unreadable header is no resume");
        assert!(tasks.iter().filter(|(t, _)| t.run != 0).all(|(t, _)| t.resumes_at.is_none() && t.units == 1000));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_rewound_level_resuming_weighs_its_steps_left_against_those_after_its_rewind_point() {
        let (plan, root, store) = quick_in("lenet_rewind1000", "lth-work-rewind-resume-test");
        let spec = &plan[0].spec;
        let (k, iterations) = (spec.rewind_iteration, spec.iterations);
        assert!(k > 0 && spec.procedure == Procedure::Ticket, "the ticket run comes first and rewinds");
        // Level 1 trains k+1..=T; a checkpoint halfway through those steps leaves half of them.
        let halfway = k + (iterations - k) / 2;
        write_checkpoint_header(&store, spec, 1, &format!(r#"{{"__metadata__":{{"iteration":"{halfway}"}}}}"#));
        let tasks = pending(&plan, &store, |_, _| 1000).unwrap();
        let level1 = tasks.iter().map(|(t, _)| *t).find(|t| t.run == 0 && t.level == 1).unwrap();
        assert_eq!((level1.resumes_at, level1.units), (Some(halfway), 500));
        let _ = std::fs::remove_dir_all(&root);
    }
}
