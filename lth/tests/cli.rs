//! The `lth` binary as a user meets it: an end-to-end smoke reproduce, and bad input giving one
//! clear line that names the file or value and the fix, with a non-zero exit.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lth-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mirror() -> String {
    std::env::var("LTH_DATA_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets").display().to_string())
}

fn lth(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("LTH_DATA_DIR", data_dir)
        .env("LTH_DATA_MIRROR", mirror())
        .output()
        .unwrap()
}

/// The single `error:` line of a failed command.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line in:\n{stderr}");
    errors[0].to_string()
}

#[test]
fn smoke_reproduce_writes_figures_then_reuses_the_runs() {
    let dir = scratch("smoke");
    let (out, figs) = (dir.join("results"), dir.join("figures"));
    let args = ["reproduce", "fig3", "fig4", "--scale", "smoke", "--out", out.to_str().unwrap(), "--figures-dir", figs.to_str().unwrap()];
    let first = lth(&args, &dir.join("data"));
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    for file in ["fig3.svg", "fig3.png", "fig3.csv", "fig3.md", "fig4.svg", "fig4.csv", "fig4.md"] {
        assert!(figs.join(file).exists(), "{file} missing");
    }
    let second = lth(&args, &dir.join("data"));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success() && stderr.contains("7 of 7 trainings are already finished"), "{stderr}");
    // The ticket ships: exported, then scored on the test set to the run's own accuracy.
    let run = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.display().to_string().contains("-ticket-")).unwrap();
    let model = dir.join("ticket.sparse.safetensors");
    let export = lth(&["export", run.to_str().unwrap(), "--level", "3", "--out", model.to_str().unwrap()], &dir.join("data"));
    assert!(export.status.success() && String::from_utf8_lossy(&export.stdout).contains("of the dense"), "{}", String::from_utf8_lossy(&export.stderr));
    let infer = lth(&["infer", model.to_str().unwrap(), "--repeat", "1"], &dir.join("data"));
    let stdout = String::from_utf8_lossy(&infer.stdout);
    assert!(infer.status.success() && stdout.contains("images/s"), "{stdout}{}", String::from_utf8_lossy(&infer.stderr));
}

#[test]
fn export_and_infer_name_a_bad_run_folder_level_or_model_file() {
    let dir = scratch("export");
    let line = error_line(&lth(&["export", dir.to_str().unwrap(), "--level", "0"], &dir));
    assert!(line.contains(&dir.display().to_string()) && line.contains("not a run folder") && line.contains("lth runs"), "{line}");
    std::fs::write(dir.join("spec.json"), "{}").unwrap();
    let line = error_line(&lth(&["export", dir.to_str().unwrap(), "--level", "2"], &dir));
    assert!(line.contains("--level 2 is not finished; finished levels: []"), "{line}");
    let model = dir.join("model.sparse.safetensors");
    std::fs::write(&model, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    let line = error_line(&lth(&["infer", model.to_str().unwrap()], &dir));
    assert!(line.contains(&model.display().to_string()) && line.contains("not an lth export") && line.contains("lth export"), "{line}");
}

#[test]
fn an_unknown_figure_lists_the_valid_ones() {
    let line = error_line(&lth(&["reproduce", "fig9"], &scratch("fig9")));
    assert!(line.contains("unknown figure `fig9`") && line.contains("fig1, fig3, fig4, fig5, fig6, fig7, fig8"), "{line}");
}

#[test]
fn bad_deep_network_specs_name_the_file_and_the_field() {
    let dir = scratch("deep-toml");
    let path = dir.join("broken.toml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let lenet = std::fs::read_to_string(root.join("lenet.toml")).unwrap();
    let resnet = std::fs::read_to_string(root.join("resnet18_lr0.03_warmup.toml")).unwrap();
    let cases = [
        (&lenet, lenet.replace("scope = \"layerwise\"", "scope = \"global\""), "pruning.scope"),
        (&resnet, resnet.replace("warmup = 20000", "warmup = 40000"), "lr_schedule.warmup = 40000"),
        (&resnet, resnet.replace("drops = [20000, 25000]", "drops = [20000, 30000]"), "lr_schedule.drops holds 30000"),
    ];
    for (source, text, field) in cases {
        assert_ne!(&text, source, "the test's edit must apply");
        std::fs::write(&path, text).unwrap();
        let line = error_line(&lth(&["run", path.to_str().unwrap(), "--scale", "smoke"], &dir));
        assert!(line.contains("broken.toml") && line.contains(field), "{line}");
    }
}

#[test]
fn a_malformed_experiment_names_the_file_and_the_field() {
    let dir = scratch("toml");
    let path = dir.join("broken.toml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet.toml")).unwrap();
    std::fs::write(&path, text.replace("batch_size = 60", "batch_size = \"sixty\"")).unwrap();
    let line = error_line(&lth(&["run", path.to_str().unwrap(), "--scale", "smoke"], &dir));
    assert!(line.contains("broken.toml") && line.contains("batch_size"), "{line}");
    std::fs::write(&path, text.replace("reinit_levels = [3]", "reinit_levels = [9]")).unwrap();
    let line = error_line(&lth(&["run", path.to_str().unwrap(), "--scale", "smoke"], &dir));
    assert!(line.contains("broken.toml") && line.contains("level 9"), "{line}");
}

#[test]
fn an_unreachable_mirror_names_the_file_and_the_fix() {
    let dir = scratch("mirror");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = lth(&["fetch", "mnist", "--mirror", &format!("http://127.0.0.1:{port}")], &dir);
    let line = error_line(&out);
    assert!(line.contains("train-images-idx3-ubyte.gz") && line.contains("LTH_DATA_MIRROR"), "{line}");
}

#[test]
fn a_corrupt_dataset_file_in_the_mirror_is_named_and_never_used() {
    let dir = scratch("corrupt");
    let bad_mirror = dir.join("mirror/mnist");
    std::fs::create_dir_all(&bad_mirror).unwrap();
    for file in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        let real = Path::new(&mirror()).join("mnist").join(file);
        let mut bytes = std::fs::read(real).unwrap();
        if file.starts_with("t10k-labels") {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(bad_mirror.join(file), bytes).unwrap();
    }
    let out = lth(&["fetch", "mnist", "--mirror", dir.join("mirror").to_str().unwrap()], &dir.join("data"));
    let line = error_line(&out);
    assert!(line.contains("t10k-labels-idx1-ubyte.gz") && line.contains("checksum mismatch"), "{line}");
    assert!(!dir.join("data/mnist/t10k-labels-idx1-ubyte.gz").exists());
}

#[test]
fn a_results_folder_with_another_spec_is_refused() {
    let dir = scratch("spec");
    let out = dir.join("results");
    let args = ["run", "experiments/lenet.toml", "--scale", "smoke", "--out", out.to_str().unwrap()];
    assert!(lth(&args, &dir.join("data")).status.success());
    let run = std::fs::read_dir(out.join("runs")).unwrap().flatten().next().unwrap().path();
    let spec = std::fs::read_to_string(run.join("spec.json")).unwrap().replace("\"batch_size\":60", "\"batch_size\":50");
    std::fs::write(run.join("spec.json"), spec).unwrap();
    let line = error_line(&lth(&args, &dir.join("data")));
    assert!(line.contains("batch_size") && line.contains("delete that folder"), "{line}");
}

#[test]
fn a_bad_device_says_what_to_use() {
    let line = error_line(&lth(&["run", "experiments/lenet.toml", "--scale", "smoke", "--device", "tpu"], &scratch("device")));
    assert!(line.contains("--device tpu") && line.contains("cpu, cuda"), "{line}");
}

#[test]
fn missing_cifar10_fails_before_any_training_and_names_the_way_out() {
    // The mirror holds MNIST only; fig1 would train LeNet first if data were not fetched first.
    let dir = scratch("nocifar");
    let out = lth(&["reproduce", "fig1", "--scale", "smoke", "--out", dir.join("results").to_str().unwrap()], &dir.join("data"));
    let line = error_line(&out);
    assert!(line.contains("cifar-10-binary.tar.gz") && line.contains("--data synthetic"), "{line}");
    assert!(!dir.join("results").exists(), "training started before the data was there");
}

#[test]
fn gpu_check_without_cuda_names_the_cuda_build() {
    let line = error_line(&lth(&["gpu-check"], &scratch("gpu-check")));
    assert!(line.contains("--device cuda") && line.contains("cargo xtask cuda-build"), "{line}");
}

#[test]
fn bench_vs_pytorch_without_torch_fails_before_timing_anything() {
    let out = Command::new(env!("CARGO_BIN_EXE_lth")).args(["bench", "--vs-pytorch"]).env("LTH_PYTHON", "/nonexistent/python").output().unwrap();
    let line = error_line(&out);
    assert!(line.contains("/nonexistent/python") && line.contains("LTH_PYTHON"), "{line}");
    assert!(out.stdout.is_empty(), "timed rows before checking for torch");
}

/// The MNIST files of the mirror, copied into `dir/mnist`, read-only.
fn read_only_mirror(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("mirror");
    std::fs::create_dir_all(copy.join("mnist")).unwrap();
    for entry in std::fs::read_dir(Path::new(&mirror()).join("mnist")).unwrap().flatten() {
        let to = copy.join("mnist").join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    copy
}

#[test]
fn a_read_only_mirror_leaves_writable_files_and_io_errors_name_their_path_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("readonly");
    let mirror = read_only_mirror(&dir);
    let cache = dir.join("data");
    // A copy killed midway, as an earlier lth left it: a read-only partial file.
    std::fs::create_dir_all(cache.join("mnist")).unwrap();
    let part = cache.join("mnist/train-labels-idx1-ubyte.gz.part");
    std::fs::write(&part, b"half").unwrap();
    std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = lth(&["fetch", "mnist", "--mirror", mirror.to_str().unwrap()], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(cache.join("mnist")).unwrap().flatten() {
        let mode = entry.metadata().unwrap().permissions().mode();
        assert!(mode & 0o200 != 0, "{} is not writable by its owner (mode {mode:o})", entry.path().display());
    }
    // An I/O error names the path it failed on, and says the OS error once.
    let not_a_folder = dir.join("a-file");
    std::fs::write(&not_a_folder, b"").unwrap();
    let line = error_line(&lth(&["fetch", "mnist", "--mirror", mirror.to_str().unwrap()], &not_a_folder));
    assert!(line.contains(&not_a_folder.display().to_string()) && line.matches("(os error").count() == 1, "{line}");
}

#[test]
fn concurrent_fetches_into_one_empty_cache_both_succeed() {
    let dir = scratch("concurrent");
    let cache = dir.join("data");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_lth"))
            .args(["fetch", "mnist"])
            .env("LTH_DATA_DIR", &cache)
            .env("LTH_DATA_MIRROR", mirror())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bad_paths_and_values_fail_before_any_training() {
    let dir = scratch("preflight");
    let out = dir.join("results");
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, b"").unwrap();
    let reproduce = |extra: &[&str]| {
        let mut args = vec!["reproduce", "fig3", "--scale", "smoke", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        lth(&args, &dir.join("data"))
    };
    let line = error_line(&reproduce(&["--figures-dir", a_file.to_str().unwrap()]));
    assert!(line.contains("--figures-dir") && line.contains("a-file") && line.contains("not a folder"), "{line}");
    let line = error_line(&lth(&["run", "experiments/lenet.toml", "--scale", "smoke", "--out", a_file.to_str().unwrap()], &dir.join("data")));
    assert!(line.contains("--out") && line.contains("a-file"), "{line}");
    let empty = dir.join("empty-mirror");
    std::fs::create_dir_all(&empty).unwrap();
    let line = error_line(&reproduce(&["--mirror", empty.to_str().unwrap()]));
    assert!(line.contains("empty-mirror") && line.contains("empty folder"), "{line}");
    let line = error_line(&reproduce(&["--mirror", "htp:/nowhere"]));
    assert!(line.contains("htp:/nowhere"), "{line}");
    for flag in ["--trials", "--jobs"] {
        let line = error_line(&reproduce(&[flag, "0"]));
        assert!(line.contains(flag) && line.contains("at least 1"), "{line}");
    }
    assert!(!out.join("runs").exists(), "training started before the checks");
}

#[test]
fn plan_prints_each_experiment_trial_once_with_every_option() {
    let dir = scratch("plan");
    let out = dir.join("results");
    let plan = lth(&["plan", "--scale", "smoke", "--trials", "3", "--data", "synthetic", "--out", out.to_str().unwrap()], &dir.join("data"));
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let unique: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), lines.len(), "repeated lines:\n{text}");
    let experiments = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")).unwrap().count();
    assert_eq!(lines.len(), 3 * experiments, "{text}");
    for line in &lines {
        assert!(line.contains("--trials 3") && line.contains(&format!("--out {}", out.display())), "{line}");
        // MNIST experiments (LeNet, with or without rewinding) are always real.
        assert_eq!(line.contains("--data synthetic"), !line.contains("experiments/lenet"), "{line}");
    }
    // A printed line runs as printed: trial 1 exists only because the line carries --trials.
    let plan = lth(&["plan", "fig3", "--scale", "smoke", "--trials", "2", "--out", out.to_str().unwrap()], &dir.join("data"));
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    let line = text.lines().find(|l| l.ends_with("--trial 1")).unwrap_or_else(|| panic!("no trial 1 in:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "lth");
    let run = lth(&words[1..], &dir.join("data"));
    assert!(run.status.success(), "`{line}` failed: {}", String::from_utf8_lossy(&run.stderr));
}

#[test]
fn an_edited_spec_never_mixes_with_its_old_runs_which_can_be_listed_and_pruned() {
    let dir = scratch("edited");
    let (out, figs, experiments) = (dir.join("results"), dir.join("figures"), dir.join("experiments"));
    std::fs::create_dir_all(&experiments).unwrap();
    let original = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet.toml")).unwrap();
    let flags = |cmd: &'static str| vec![cmd, "--scale", "smoke", "--out", out.to_str().unwrap(), "--experiments", experiments.to_str().unwrap()];
    let reproduce = || {
        let mut args = flags("reproduce");
        args.extend(["fig3", "--figures-dir", figs.to_str().unwrap()]);
        let done = lth(&args, &dir.join("data"));
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    };
    std::fs::write(experiments.join("lenet.toml"), &original).unwrap();
    reproduce();
    let old_runs: Vec<String> = std::fs::read_dir(out.join("runs")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    std::fs::write(experiments.join("lenet.toml"), original.replace("lr = 1.2e-3", "lr = 2e-3")).unwrap();
    reproduce();
    let table = std::fs::read_to_string(figs.join("fig3.csv")).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split(',').collect();
    let n = header.iter().position(|h| *h == "n").unwrap();
    assert!(table.lines().skip(1).all(|row| row.split(',').nth(n) == Some("1")), "rows pool several runs:\n{table}");
    let md = std::fs::read_to_string(figs.join("fig3.md")).unwrap();
    assert!(old_runs.iter().all(|id| !md.contains(id.as_str())), "{md}");
    // The old runs are on disk, listed as stale, and removed only on request.
    let listed = lth(&[&flags("runs")[..1], &["--stale"], &flags("runs")[3..]].concat(), &dir.join("data"));
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success() && old_runs.iter().all(|id| stdout.contains(id.as_str())) && stdout.lines().count() == old_runs.len(), "{stdout}");
    assert!(old_runs.iter().all(|id| out.join("runs").join(id).exists()));
    let pruned = lth(&[&flags("runs")[..1], &["--prune", "--yes"], &flags("runs")[3..]].concat(), &dir.join("data"));
    assert!(pruned.status.success());
    assert!(old_runs.iter().all(|id| !out.join("runs").join(id).exists()), "{}", String::from_utf8_lossy(&pruned.stdout));
    assert_eq!(std::fs::read_dir(out.join("runs")).unwrap().count(), old_runs.len(), "current runs were pruned");
}

#[test]
fn a_copy_of_cifar10_is_read_through_the_mirror_and_a_bad_one_is_one_line() {
    let dir = scratch("copies");
    // The JPEG copy in the mirror, by its path under the mirror (decoded once, then cached).
    let fetch = lth(&["fetch", "cifar10", "--data", "folder:cifar10-jpeg/cifar10-jpeg.tgz"], &dir.join("data"));
    let stdout = String::from_utf8_lossy(&fetch.stdout);
    assert!(fetch.status.success() && stdout.contains("50000 training and 10000 test images"), "{stdout}{}", String::from_utf8_lossy(&fetch.stderr));
    assert!(dir.join("data/cifar10-copies/jpeg-copy-cb6c50520509605d4bd1856cb7eaba797dabcec3c19d93ce945b0ec1aee34a5f/test_batch.bin").exists());
    // Plan lines carry the copy to the CIFAR-10 experiments only.
    let plan = lth(&["plan", "fig1", "--scale", "smoke", "--data", "folder:cifar10-jpeg/cifar10-jpeg.tgz"], &dir.join("data"));
    for line in String::from_utf8_lossy(&plan.stdout).lines() {
        assert_eq!(line.contains("--data folder:cifar10-jpeg/cifar10-jpeg.tgz"), !line.contains("lenet.toml"), "{line}");
    }
    // A stray file in a class folder.
    let copy = dir.join("copy");
    std::fs::create_dir_all(copy.join("train/cat")).unwrap();
    std::fs::write(copy.join("train/cat/notes.txt"), "hello").unwrap();
    let line = error_line(&lth(&["fetch", "cifar10", "--data", &format!("folder:{}", copy.display())], &dir.join("data")));
    assert!(line.contains("train/cat/notes.txt") && line.contains("not a PNG or JPEG") && line.contains("remove it"), "{line}");
    let line = error_line(&lth(&["fetch", "cifar10", "--data", "jpg"], &dir.join("data")));
    assert!(line.contains("folder:<path-or-url>"), "{line}");
}

/// experiments/lenet.toml renamed `name`, at a smoke size of two trainings.
fn tiny_spec(name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lenet.toml")).unwrap();
    let smoke = text.find("[scales.smoke]").unwrap();
    format!(
        "{}[scales.smoke]\niterations = 20\neval_every = 10\ntrials = 1\nlevels = 1\nreinit_copies = 0\nreinit_levels = []\noneshot_levels = []\n\
         train_subset = 600\neval_subset = 300\n",
        text[..smoke].replace("name = \"lenet\"", &format!("name = \"{name}\""))
    )
}

#[test]
fn prune_lists_first_and_never_deletes_runs_in_use_or_of_unknown_or_damaged_specs() {
    let dir = scratch("prune");
    let (out, experiments, mine) = (dir.join("results"), dir.join("experiments"), dir.join("my"));
    for folder in [&experiments, &mine] {
        std::fs::create_dir_all(folder).unwrap();
    }
    std::fs::write(experiments.join("lenet.toml"), tiny_spec("lenet")).unwrap();
    std::fs::write(mine.join("mylenet.toml"), tiny_spec("mylenet")).unwrap();
    let data = dir.join("data");
    for spec in [experiments.join("lenet.toml"), experiments.join("lenet.toml"), mine.join("mylenet.toml")] {
        let done = lth(&["run", spec.to_str().unwrap(), "--scale", "smoke", "--trials", "3", "--out", out.to_str().unwrap()], &data);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    }
    let runs_of = |name: &str| -> Vec<PathBuf> {
        let mut runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}-")))
            .collect();
        runs.sort();
        runs
    };
    let (lenet, mylenet) = (runs_of("lenet"), runs_of("mylenet"));
    assert_eq!((lenet.len(), mylenet.len()), (3, 3));
    // One spec.json with one digit changed, one garbage, one missing.
    let spec0 = lenet[0].join("spec.json");
    let original = std::fs::read_to_string(&spec0).unwrap();
    std::fs::write(&spec0, original.replacen("\"batch_size\":60", "\"batch_size\":61", 1)).unwrap();
    std::fs::write(lenet[1].join("spec.json"), "garbage").unwrap();
    std::fs::remove_file(lenet[2].join("spec.json")).unwrap();
    let runs = |extra: &[&str], experiments: &Path| {
        lth(&[&["runs", "--out", out.to_str().unwrap(), "--experiments", experiments.to_str().unwrap()], extra].concat(), &data)
    };
    let all_there = |what: &str| {
        for run in lenet.iter().chain(&mylenet) {
            assert!(run.join("level-01/done").exists(), "{what}: {} was deleted", run.display());
        }
    };
    // The run by path is current; the damaged specs are reported with their repair; nothing is deleted.
    let listed = runs(&[], &experiments);
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    for run in &mylenet {
        let line = stdout.lines().find(|l| l.starts_with(&*run.file_name().unwrap().to_string_lossy())).unwrap();
        assert!(line.ends_with("current"), "{line}");
    }
    assert_eq!(stdout.matches("`lth runs --repair`").count(), 3, "{stdout}");
    for extra in [&["--prune"][..], &["--prune", "--yes"]] {
        assert!(runs(extra, &experiments).status.success());
        all_there("damaged spec.json");
    }
    // An --experiments folder without the spec keeps that experiment's runs.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(runs(&["--prune", "--yes"], &empty).status.success());
    all_there("an --experiments folder without lenet.toml");
    // The damaged specs are rewritten from the spec that names their folders.
    assert!(runs(&["--repair"], &experiments).status.success());
    assert_eq!(std::fs::read_to_string(&spec0).unwrap(), original);
    let stdout = String::from_utf8_lossy(&runs(&[], &experiments).stdout).into_owned();
    assert_eq!(stdout.lines().filter(|l| l.ends_with("current")).count(), 6, "{stdout}");
    // An edited spec makes its old runs stale: listed by --prune, deleted only with --yes.
    std::fs::write(mine.join("mylenet.toml"), tiny_spec("mylenet").replace("lr = 1.2e-3", "lr = 2e-3")).unwrap();
    let listed = runs(&["--prune"], &experiments);
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success() && stdout.lines().count() == 3 && String::from_utf8_lossy(&listed.stderr).contains("--prune --yes"), "{stdout}");
    all_there("--prune without --yes");
    // A stale run that a process is training (it holds a level's lock) is kept until it stops.
    let training = lth::store::runs::RunDir { id: lth::base::spec::RunId(mylenet[0].file_name().unwrap().to_string_lossy().into()), dir: mylenet[0].clone() };
    let held = training.lock_level(2, |_| panic!("nobody holds it yet")).unwrap().expect("this file system has locks");
    let pruned = runs(&["--prune", "--yes"], &experiments);
    assert!(pruned.status.success() && String::from_utf8_lossy(&pruned.stderr).contains("kept, a process is training it now"));
    assert!(mylenet[0].exists() && mylenet[1..].iter().all(|run| !run.exists()));
    drop(held);
    assert!(runs(&["--prune", "--yes"], &experiments).status.success());
    assert!(mylenet.iter().all(|run| !run.exists()) && lenet.iter().all(|run| run.exists()));
}

#[test]
fn an_empty_marker_is_never_trusted_and_adopt_checks_what_it_can() {
    let dir = scratch("adopt");
    let (out, figs, experiments) = (dir.join("results"), dir.join("figures"), dir.join("experiments"));
    std::fs::create_dir_all(&experiments).unwrap();
    std::fs::write(experiments.join("lenet.toml"), tiny_spec("lenet")).unwrap();
    let data = dir.join("data");
    let reproduce = || {
        let args = ["reproduce", "fig3", "--scale", "smoke", "--out", out.to_str().unwrap(), "--figures-dir", figs.to_str().unwrap()];
        lth(&[&args[..], &["--experiments", experiments.to_str().unwrap()]].concat(), &data)
    };
    let first = reproduce();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let table = std::fs::read(figs.join("fig3.csv")).unwrap();
    let run = std::fs::read_dir(out.join("runs")).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("-ticket-")).unwrap();
    let (done, curve) = (run.join("level-01/done"), run.join("level-01/curve.csv"));
    let (marker, original) = (std::fs::read(&done).unwrap(), std::fs::read_to_string(&curve).unwrap());
    let adopt = || lth(&["adopt", run.to_str().unwrap()], &data);
    // The last test accuracy edited (as 91.60% drawn as 99.60%), its marker emptied: refused
    // when drawn, and refused by adopt, which recomputes it from the weights.
    let last = original.trim_end().rsplit(',').next().unwrap().to_string();
    let edited = format!("{}{}\n", &original.trim_end()[..original.trim_end().len() - last.len()], "0.996");
    std::fs::write(&curve, &edited).unwrap();
    std::fs::write(&done, b"").unwrap();
    let line = error_line(&reproduce());
    assert!(line.contains(&done.display().to_string()) && line.contains("is empty") && line.contains("lth adopt") && line.contains("lth redo"), "{line}");
    let line = error_line(&adopt());
    assert!(line.contains("final.safetensors") && line.contains("0.996") && line.contains("not adopted"), "{line}");
    assert_eq!(std::fs::read(&done).unwrap(), b"", "a refused adoption wrote the marker");
    // A curve cut to its header: refused for its row count.
    std::fs::write(&curve, original.lines().next().unwrap().to_string() + "\n").unwrap();
    let line = error_line(&adopt());
    assert!(line.contains("curve.csv") && line.contains("0 rows"), "{line}");
    // The files as training wrote them: adopted, saying what was and was not checked, and drawn as before.
    std::fs::write(&curve, &original).unwrap();
    let adopted = adopt();
    let stdout = String::from_utf8_lossy(&adopted.stdout).into_owned();
    assert!(
        adopted.status.success() && stdout.contains("to the bit") && stdout.contains("not checked"),
        "{stdout}{}",
        String::from_utf8_lossy(&adopted.stderr)
    );
    assert_eq!(std::fs::read(&done).unwrap(), marker, "the adopted marker is not the one training wrote");
    assert!(reproduce().status.success());
    assert_eq!(std::fs::read(figs.join("fig3.csv")).unwrap(), table);
}

#[test]
fn extreme_thread_counts_and_sizes_get_one_line_not_a_hang_or_an_abort() {
    let dir = scratch("bounds");
    let spec = dir.join("tiny.toml");
    std::fs::write(&spec, tiny_spec("tiny")).unwrap();
    let out = dir.join("results");
    let run = |extra: &[&'static str]| -> Vec<String> {
        ["run", spec.to_str().unwrap(), "--scale", "smoke", "--out", out.to_str().unwrap()].iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let lth = |args: &[String], data: &Path| lth(&args.iter().map(String::as_str).collect::<Vec<_>>(), data);
    let line = error_line(&lth(&run(&["--trials", "1000000000"]), &dir.join("data")));
    assert!(line.contains("--trials") && line.contains("at most"), "{line}");
    std::fs::write(dir.join("huge.toml"), tiny_spec("huge").replace("trials = 1\n", "trials = 1000000000\n")).unwrap();
    let huge = ["run", dir.join("huge.toml").to_str().unwrap(), "--scale", "smoke"].map(String::from);
    let line = error_line(&lth(&huge, &dir.join("data")));
    assert!(line.contains("huge.toml") && line.contains("scales.smoke.trials = 1000000000"), "{line}");
    // 100,000 threads asked for: capped at the cores with a notice, and the run finishes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(run(&["--jobs", "100000"]))
        .env("RAYON_NUM_THREADS", "100000")
        .env("LTH_DATA_DIR", dir.join("data"))
        .env("LTH_DATA_MIRROR", mirror())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("RAYON_NUM_THREADS=100000: still running after two minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success() && stderr.contains("RAYON_NUM_THREADS=100000 is above") && stderr.contains("--jobs 100000 is above"), "{stderr}");
}

/// Issue #29: an empty `LTH_DATA_DIR=` downloaded into the current folder, and `--mirror ''`
/// silently meant the official URLs. Empty values are unset, with a notice naming them.
#[test]
fn empty_data_settings_are_treated_as_unset_with_a_notice() {
    let home = scratch("empty-env-home");
    let cwd = scratch("empty-env-cwd");
    let out = Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(["fetch", "mnist", "--mirror", ""])
        .current_dir(&cwd)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .env("LTH_DATA_DIR", "")
        .env("LTH_DATA_MIRROR", mirror())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("notice: --mirror '' is empty, so it is ignored (falling back to LTH_DATA_MIRROR"), "{stderr}");
    assert!(stderr.contains("notice: LTH_DATA_DIR is set but empty, so it is ignored (using the default cache folder)"), "{stderr}");
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "something was written into the current folder");
    assert!(home.join(".cache/lth/mnist").is_dir(), "MNIST is not in the default cache under HOME");
}

#[test]
fn a_command_started_outside_the_project_names_the_flag_that_finds_the_specs() {
    // `lth runs` (and every command that reads experiment specs) from a folder without
    // experiments/: the error names --experiments, not just the missing folder.
    let dir = scratch("outside");
    for args in [vec!["runs"], vec!["plan", "fig3"], vec!["figure", "fig3"], vec!["goldens"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_lth")).args(&args).current_dir(&dir).env("LTH_DATA_DIR", dir.join("data")).output().unwrap();
        let line = error_line(&out);
        assert!(line.contains("--experiments experiments") && line.contains("pass --experiments"), "{args:?}: {line}");
    }
}
