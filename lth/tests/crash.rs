//! A smoke reproduce killed at random moments, with random bytes of random run files damaged
//! between reruns. Every rerun must either draw tables byte-identical to an uninterrupted run,
//! or exit non-zero naming the damaged file (and then, after the repair it names, draw them).
//! Some rounds also empty the damaged file's marker, as an unsynced crash can: still refused.
//! Nothing wrong is ever drawn. Seeded, and bounded to a few rounds of a tiny experiment.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 12;

/// experiments/lenet.toml with its smoke sizes cut further, so one reproduce takes a second or two.
fn tiny_lenet() -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet.toml")).unwrap();
    let smoke = text.find("[scales.smoke]").unwrap();
    format!(
        "{}[scales.smoke]\niterations = 30\neval_every = 10\ntrials = 1\nlevels = 2\nreinit_copies = 1\nreinit_levels = [2]\noneshot_levels = [2]\n\
         random_prune_copies = 1\nrandom_prune_levels = [1]\ntrain_subset = 600\neval_subset = 300\n",
        &text[..smoke]
    )
}

/// A small seeded generator (xorshift64*), so every run of the test makes the same choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

struct Setup {
    dir: PathBuf,
    experiments: PathBuf,
}

impl Setup {
    fn command(&self, out: &Path, figs: &Path) -> Command {
        let mirror = std::env::var("LTH_DATA_MIRROR")
            .ok()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets").display().to_string());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lth"));
        cmd.args(["reproduce", "fig3", "fig4", "--scale", "smoke", "--jobs", "1"])
            .arg("--out")
            .arg(out)
            .arg("--figures-dir")
            .arg(figs)
            .arg("--experiments")
            .arg(&self.experiments)
            .env("LTH_DATA_DIR", self.dir.join("data"))
            .env("LTH_DATA_MIRROR", mirror)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, out: &Path, figs: &Path) -> Output {
        self.command(out, figs).output().unwrap()
    }
}

fn tables(figs: &Path) -> Vec<Vec<u8>> {
    ["fig3.csv", "fig4.csv"].iter().map(|f| std::fs::read(figs.join(f)).unwrap()).collect()
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The marker that vouches for a run file: its level's `done`, or theta0's `init.done`.
fn marker_of(file: &Path) -> Option<PathBuf> {
    let name = file.file_name()?.to_string_lossy().into_owned();
    let dir = file.parent()?;
    match name.as_str() {
        "init.safetensors" | "init.done" => Some(dir.join("init.done")),
        _ if dir.file_name()?.to_string_lossy().starts_with("level-") => Some(dir.join("done")),
        _ => None,
    }
}

/// The repair an error line asks for: `lth redo PATH`, or deleting a run folder.
fn repair(line: &str, out: &Path) {
    if let Some(rest) = line.split("run `lth redo ").nth(1) {
        let target = rest.split('`').next().unwrap();
        let done = Command::new(env!("CARGO_BIN_EXE_lth")).args(["redo", target]).output().unwrap();
        assert!(done.status.success(), "lth redo {target}: {}", String::from_utf8_lossy(&done.stderr));
    } else if line.contains("delete that folder") {
        let spec = line.trim_start_matches("error: ").split(": ").find(|w| w.ends_with("spec.json")).unwrap_or_else(|| panic!("{line}"));
        std::fs::remove_dir_all(Path::new(spec).parent().unwrap()).unwrap();
    } else {
        panic!("no repair named in: {line}");
    }
    assert!(out.exists());
}

#[test]
fn killed_and_damaged_reproduces_draw_the_right_tables_or_name_the_damage() {
    let dir = std::env::temp_dir().join(format!("lth-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let setup = Setup { experiments: dir.join("experiments"), dir: dir.clone() };
    std::fs::create_dir_all(&setup.experiments).unwrap();
    std::fs::write(setup.experiments.join("lenet.toml"), tiny_lenet()).unwrap();

    let started = Instant::now();
    let reference = setup.run(&dir.join("ref-results"), &dir.join("ref-figures"));
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let full = started.elapsed();
    let expected = tables(&dir.join("ref-figures"));

    let (out, figs) = (dir.join("results"), dir.join("figures"));
    let mut rng = Rng(0x13_13_13_13);
    let (mut damaged_runs, mut empty_markers) = (0, 0);
    for round in 0..ROUNDS {
        // Killed at a random moment, from start-up to the last figure.
        let mut child = setup.command(&out, &figs).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(full.as_millis() as usize + 1) as u64));
        let _ = child.kill();
        let _ = child.wait();
        for file in files_under(&figs).iter().filter(|f| !f.to_string_lossy().contains(".tmp")) {
            let bytes = std::fs::read(file).unwrap();
            assert!(!bytes.is_empty(), "round {round}: {} is empty after a kill", file.display());
            if file.extension().is_some_and(|e| e == "svg") {
                assert!(String::from_utf8_lossy(&bytes).trim_end().ends_with("</svg>"), "round {round}: {} is cut short", file.display());
            }
        }
        // One random byte of a random run file, in two rounds out of three; in every fourth
        // round, also an empty marker beside the damaged file (what an unsynced crash can
        // leave), which must not vouch for it.
        let run_files: Vec<PathBuf> = files_under(&out.join("runs")).into_iter().filter(|f| !f.to_string_lossy().contains(".tmp")).collect();
        let mut originals: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut damaged = (rng.below(3) != 0 && !run_files.is_empty()).then(|| {
            let file = run_files[rng.below(run_files.len())].clone();
            let mut bytes = std::fs::read(&file).unwrap();
            originals.push((file.clone(), bytes.clone()));
            if !bytes.is_empty() {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 + rng.below(255) as u8;
                std::fs::write(&file, bytes).unwrap();
            }
            file
        });
        if round % 4 == 3 {
            if let Some(marker) = damaged.as_ref().and_then(|file| marker_of(file)).filter(|m| m.exists() && Some(m) != damaged.as_ref()) {
                originals.push((marker.clone(), std::fs::read(&marker).unwrap()));
                std::fs::write(&marker, b"").unwrap();
                empty_markers += 1;
                damaged = Some(marker);
            }
        }
        // Reruns until it draws: each failure must name the damaged file and its repair.
        let mut attempts = 0;
        loop {
            let rerun = setup.run(&out, &figs);
            let stderr = String::from_utf8_lossy(&rerun.stderr).into_owned();
            eprintln!("round {round}: damaged {damaged:?}: {}", stderr.lines().find(|l| l.starts_with("error")).unwrap_or("tables as expected"));
            if rerun.status.success() {
                assert!(tables(&figs) == expected, "round {round}: tables differ from an uninterrupted run (damaged: {damaged:?})\n{stderr}");
                // A damaged file that this rerun had no need to read (say, the mask of a level
                // whose successor was already finished) is only found when something reads it;
                // undo it, so that a later round's error is about that round's damage.
                for (file, bytes) in originals.iter().rev() {
                    if file.exists() {
                        std::fs::write(file, bytes).unwrap();
                    }
                }
                break;
            }
            let line = stderr.lines().find(|l| l.starts_with("error")).unwrap_or_else(|| panic!("round {round}: failed without an error line:\n{stderr}"));
            let file = damaged.as_ref().unwrap_or_else(|| panic!("round {round}: failed with nothing damaged: {line}"));
            assert!(line.contains(&file.display().to_string()), "round {round}: the error does not name {}: {line}", file.display());
            attempts += 1;
            assert!(attempts <= 2, "round {round}: still failing after the repair: {line}");
            damaged_runs += 1;
            repair(line, &out);
        }
    }
    eprintln!("{ROUNDS} rounds ({damaged_runs} refused a damaged file, {empty_markers} with an empty marker) in {:.1} s", started.elapsed().as_secs_f64());
    assert!(empty_markers > 0, "no round emptied a marker");
    let _ = std::fs::remove_dir_all(&dir);
}
