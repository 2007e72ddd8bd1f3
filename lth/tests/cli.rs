//! The `lth` binary as a user meets it: an end-to-end smoke reproduce, and bad input giving one
//! clear line that names the file or value and the fix, with a non-zero exit.

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
    assert!(second.status.success() && stderr.matches("already done").count() == 7, "{stderr}");
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
