//! A results folder that keeps only curves (what `figures/paper/results` commits: no weights)
//! draws the same tables as the folder it came from, and resumes: a training that needs a level
//! it has only the curve of retrains that level (and what that level reads) to the same bits.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mirror() -> String {
    std::env::var("LTH_DATA_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets").display().to_string())
}

fn reproduce(dir: &Path, out: &Path, figs: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(["reproduce", "fig3", "fig4", "--scale", "smoke", "--jobs", "2"])
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

/// Every `level-NN/curve.csv` under `runs`, by path relative to it.
fn curves(runs: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for run in std::fs::read_dir(runs).unwrap() {
        let run = run.unwrap().path();
        for level in std::fs::read_dir(&run).unwrap() {
            let curve = level.unwrap().path().join("curve.csv");
            if curve.exists() {
                found.push((curve.strip_prefix(runs).unwrap().to_owned(), std::fs::read(&curve).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_folder_of_curves_draws_the_same_tables_and_resumes_to_the_same_bits() {
    let dir = std::env::temp_dir().join(format!("lth-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (full, kept) = (dir.join("full"), dir.join("curves"));
    reproduce(&dir, &full, &dir.join("figs-full"));

    // Keep what a commit keeps: spec.json, and each level's curve and marker.
    for run in std::fs::read_dir(full.join("runs")).unwrap() {
        let run = run.unwrap().path();
        let to = kept.join("runs").join(run.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(run.join("spec.json"), to.join("spec.json")).unwrap();
        for level in std::fs::read_dir(&run).unwrap() {
            let level = level.unwrap().path();
            if level.is_dir() {
                let level_to = to.join(level.file_name().unwrap());
                std::fs::create_dir_all(&level_to).unwrap();
                for file in ["curve.csv", "done"] {
                    std::fs::copy(level.join(file), level_to.join(file)).unwrap();
                }
            }
        }
    }
    let drawn = reproduce(&dir, &kept, &dir.join("figs-kept"));
    assert!(String::from_utf8_lossy(&drawn.stderr).contains("7 of 7 trainings are already finished"));
    for table in ["fig3.csv", "fig4.csv"] {
        assert_eq!(std::fs::read(dir.join("figs-full").join(table)).unwrap(), std::fs::read(dir.join("figs-kept").join(table)).unwrap(), "{table}");
    }

    // Lose one control's level: it reads the ticket's level 3, which kept only its curve, and
    // that reads level 2, and so on to theta0, which the ticket draws again.
    let reinit = std::fs::read_dir(kept.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("-reinit-")).unwrap();
    std::fs::remove_dir_all(reinit.join("level-03")).unwrap();
    let resumed = reproduce(&dir, &kept, &dir.join("figs-resumed"));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("6 of 7 trainings are already finished") && stderr.contains("4 of them kept only their curves"), "{stderr}");
    let trained = stderr.lines().filter(|l| l.starts_with('[') && l.contains("final test acc")).count();
    assert_eq!(trained, 5, "the ticket's levels 0-3 and the reinit level:\n{stderr}");
    assert_eq!(curves(&full.join("runs")), curves(&kept.join("runs")), "every curve, retrained or kept, is byte-identical");
    let _ = std::fs::remove_dir_all(&dir);
}
