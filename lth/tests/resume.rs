//! A results folder that keeps only curves and next masks (what `figures/paper/results` commits:
//! no weights) draws the same tables as the folder it came from, and resumes to the same bits: a
//! ticket level and the reinit control train from the mask the ticket recorded; a training that
//! needs weights, or a folder committed before next masks were recorded, retrains the level it
//! reads (and what that level reads). Two runs on one folder at once train each level once:
//! the second waits for the level the first holds.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::base::spec::{DataSource, ExperimentSpec, Scale};
use lth::store::runs::Store;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn mirror() -> String {
    std::env::var("LTH_DATA_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets").display().to_string())
}

fn reproduce(dir: &Path, out: &Path, figs: &Path) -> Output {
    reproduce_figures(&["fig3", "fig4"], dir, out, figs)
}

fn reproduce_figures(figures: &[&str], dir: &Path, out: &Path, figs: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_lth"))
        .arg("reproduce")
        .args(figures)
        .args(["--scale", "smoke", "--jobs", "2"])
        .arg("--out")
        .arg(out)
        .arg("--figures-dir")
        .arg(figs)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("LTH_DATA_DIR", dir.join("data"))
        .env("LTH_DATA_MIRROR", mirror())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Every `level-NN/<name>` under `runs` with its bytes, by path relative to `runs`.
fn level_files(runs: &Path, name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for run in std::fs::read_dir(runs).unwrap() {
        let run = run.unwrap().path();
        for level in std::fs::read_dir(&run).unwrap() {
            let file = level.unwrap().path().join(name);
            if file.exists() {
                found.push((file.strip_prefix(runs).unwrap().to_owned(), std::fs::read(&file).unwrap()));
            }
        }
    }
    found.sort();
    found
}

fn curves(runs: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    level_files(runs, "curve.csv")
}

fn next_masks(runs: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    level_files(runs, "next-mask.bits.gz")
}

#[test]
fn a_folder_of_curves_draws_the_same_tables_and_resumes_to_the_same_bits() {
    let dir = std::env::temp_dir().join(format!("lth-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (full, kept) = (dir.join("full"), dir.join("curves"));
    reproduce(&dir, &full, &dir.join("figs-full"));

    // Keep what a commit keeps: spec.json, and each level's curve, marker and next mask.
    keep_commit(&full, &kept);
    let drawn = reproduce(&dir, &kept, &dir.join("figs-kept"));
    assert!(String::from_utf8_lossy(&drawn.stderr).contains("7 of 7 trainings are already finished"));
    for table in ["fig3.csv", "fig4.csv"] {
        assert_eq!(std::fs::read(dir.join("figs-full").join(table)).unwrap(), std::fs::read(dir.join("figs-kept").join(table)).unwrap(), "{table}");
    }
    let run_of = |kind: &str| std::fs::read_dir(kept.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains(kind)).unwrap();
    let (ticket, reinit) = (run_of("-ticket-"), run_of("-reinit-"));

    // Lose one control's level: it reads the mask of the ticket's level 3, which level 2
    // recorded; nothing else is trained.
    std::fs::remove_dir_all(reinit.join("level-03")).unwrap();
    assert_eq!(trained(&reproduce(&dir, &kept, &dir.join("figs-resumed"))), 1, "the reinit level only");
    // Lose the ticket's last level: it trains from level 2's record of its mask.
    std::fs::remove_dir_all(ticket.join("level-03")).unwrap();
    assert_eq!(trained(&reproduce(&dir, &kept, &dir.join("figs-resumed"))), 1, "the ticket's level 3 only");
    assert_eq!(curves(&full.join("runs")), curves(&kept.join("runs")), "every curve, retrained or kept, is byte-identical");
    assert_eq!(next_masks(&full.join("runs")), next_masks(&kept.join("runs")), "and every recorded next mask");

    // A folder committed before ticket levels recorded their next mask: the control reads the
    // ticket's level 3, which kept only its curve, and that reads level 2, and so on to theta0,
    // which the ticket draws again.
    let _ = std::fs::remove_dir_all(&kept);
    keep_commit(&full, &kept);
    for run in std::fs::read_dir(kept.join("runs")).unwrap() {
        for level in std::fs::read_dir(run.unwrap().path()).unwrap() {
            let _ = std::fs::remove_file(level.unwrap().path().join("next-mask.bits.gz"));
        }
    }
    std::fs::remove_dir_all(reinit.join("level-03")).unwrap();
    let resumed = reproduce(&dir, &kept, &dir.join("figs-resumed"));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("6 of 7 trainings are already finished") && stderr.contains("4 of them kept only their curves"), "{stderr}");
    assert_eq!(trained(&resumed), 5, "the ticket's levels 0-3 and the reinit level:\n{stderr}");
    assert!(!stderr.contains("gave a curve other than the one recorded"), "each retrained curve is checked against its record, and matches:\n{stderr}");
    assert_eq!(curves(&full.join("runs")), curves(&kept.join("runs")), "every curve, retrained or kept, is byte-identical");
    assert_eq!(next_masks(&full.join("runs")).len(), 4, "the ticket's levels 0-3 record the next mask");
    assert_eq!(next_masks(&full.join("runs")), next_masks(&kept.join("runs")), "and the retrained levels record it again, to the same bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_clone_draws_the_tickets_densities_from_their_next_masks() {
    let dir = std::env::temp_dir().join(format!("lth-resume-density-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (full, kept) = (dir.join("full"), dir.join("curves"));
    reproduce_figures(&["fig4i"], &dir, &full, &dir.join("figs-full"));
    keep_commit(&full, &kept);
    reproduce_figures(&["fig4i"], &dir, &kept, &dir.join("figs-kept"));
    let density_rows = |figs: &str, procedure: &str| -> Vec<String> {
        let md = std::fs::read_to_string(dir.join(figs).join("fig4i.md")).unwrap();
        md.lines().filter(|l| l.starts_with("| 3 |") && l.contains(&format!("| {procedure} |"))).map(str::to_owned).collect()
    };
    let ticket = density_rows("figs-full", "ticket");
    assert_eq!(ticket.len(), 1, "the ticket's densities at level 3");
    assert_eq!(density_rows("figs-kept", "ticket"), ticket, "the clone reads the same mask from level 2's next mask");
    assert_eq!(density_rows("figs-full", "snip").len(), 1);
    assert!(density_rows("figs-kept", "snip").is_empty(), "a mask chosen at initialization is not committed");
    let md = std::fs::read_to_string(dir.join("figs-kept").join("fig4i.md")).unwrap();
    assert!(md.contains("Left out: 4 finished trainings whose masks are not on this machine"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies what a commit keeps of the results folder `from` into `to`: spec.json, and each
/// level's curve, marker and (a ticket level's) next mask; no weights.
fn keep_commit(from: &Path, to: &Path) {
    for run in std::fs::read_dir(from.join("runs")).unwrap() {
        let run = run.unwrap().path();
        let run_to = to.join("runs").join(run.file_name().unwrap());
        std::fs::create_dir_all(&run_to).unwrap();
        std::fs::copy(run.join("spec.json"), run_to.join("spec.json")).unwrap();
        for level in std::fs::read_dir(&run).unwrap() {
            let level = level.unwrap().path();
            if level.is_dir() {
                let level_to = run_to.join(level.file_name().unwrap());
                std::fs::create_dir_all(&level_to).unwrap();
                for file in ["curve.csv", "done", "next-mask.bits.gz"] {
                    if level.join(file).exists() {
                        std::fs::copy(level.join(file), level_to.join(file)).unwrap();
                    }
                }
            }
        }
    }
}

/// How many trainings a reproduce ran (one line per finished training; a level the other
/// process finished is reported, not trained).
fn trained(output: &Output) -> usize {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("final test acc") && !l.contains("finished by the other process"))
        .count()
}

/// `lth run experiments/lenet.toml --scale smoke --jobs 1 --out OUT`, started.
fn spawn_lenet_smoke(dir: &Path, out: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(["run", "experiments/lenet.toml", "--scale", "smoke", "--jobs", "1", "--out"])
        .arg(out)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("LTH_DATA_DIR", dir.join("data"))
        .env("LTH_DATA_MIRROR", mirror())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_runs_on_one_folder_train_each_level_once() {
    let dir = std::env::temp_dir().join(format!("lth-resume-concurrent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // While the ticket's level 0 is held (as a first `lth run` would), a run waits for it, says
    // so, and trains nothing meanwhile; let go, it goes on and finishes.
    let out = dir.join("held");
    let spec = ExperimentSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet.toml")).unwrap();
    let ticket = spec.plan(Scale::Smoke, None, DataSource::Real).unwrap().remove(0).spec;
    let run = Store::new(&out).open(&ticket).unwrap();
    let held = run.lock_level(0, |_| panic!("nobody holds it yet")).unwrap().expect("this file system has locks");
    let mut child = spawn_lenet_smoke(&dir, &out);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("another process is training it") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the run ended without waiting:\n{said}");
        said.push_str(&line);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none() && !run.is_done(0), "the run went on while level 0 was held:\n{said}");
    // `lth runs` says which level is being trained.
    let listed = Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(["runs", "--out"])
        .arg(&out)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = listed.lines().find(|l| l.starts_with(&run.id.0)).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("level 0: no checkpoint yet (a process is training it now)"), "{line}");
    drop(held);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{said}{rest}");
    assert!(run.is_done(0), "{said}{rest}");

    // Two runs started together: between them every training runs once.
    let out = dir.join("together");
    let (first, second) = (spawn_lenet_smoke(&dir, &out), spawn_lenet_smoke(&dir, &out));
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    let say = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(first.status.success() && second.status.success(), "{}\n{}", say(&first), say(&second));
    assert_eq!(trained(&first) + trained(&second), 7, "lenet's 7 smoke trainings, each once:\n{}\n{}", say(&first), say(&second));
    assert_eq!(curves(&dir.join("held").join("runs")), curves(&out.join("runs")), "and to the same bits as one run alone");
    let _ = std::fs::remove_dir_all(&dir);
}
