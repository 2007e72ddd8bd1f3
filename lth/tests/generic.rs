//! The generic path through the `lth` binary: `--device cpu-generic` trains on the CPU through
//! exactly the code a GPU runs (candle's ops; `lth::ops::device`), so the whole pipeline a
//! CUDA user runs is run on every commit. Each smoke run is made twice, with the CPU kernels
//! and on the generic path, and the two compared run for run; `lth gpu-check` runs its
//! self-test. The forward passes at theta0 and the host-read count per step are
//! `tests/tests/generic.rs`.
//!
//! Tolerances. Both paths compute the same formulas in f32, summed in other orders, so a
//! training's losses agree to about 1e-6 relative until a value before a ReLU lands within
//! rounding of 0 on one side only, after which training carries the difference on (VGG-19 at
//! lr 0.1 on batches of 8 moved its validation loss by 1.5e-3 in two steps; the LeNet runs
//! agree to 5e-7). Every evaluation's losses must agree within [`LOSS_TOLERANCE`] and its
//! accuracies within [`ACCURACY_EXAMPLES`] examples (whose logits nearly tie). Masks: magnitude pruning ranks weights by |w| (ties to the lower
//! index), so two weights whose trained magnitudes differ by less than the paths' float
//! differences can swap across the threshold, each swap flipping two entries; level 1's masks
//! must agree on [`MASK_AGREEMENT`] of the weights. A level's curves are compared where both
//! paths trained it under the same mask (always the dense level): where swaps left the masks a
//! few weights apart the networks differ, and in a reinit control those weights are fresh
//! draws of full size (VGG-19's first loss moved by 1%).

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOSS_TOLERANCE: f64 = 1e-2;
const ACCURACY_EXAMPLES: f64 = 2.0;
const MASK_AGREEMENT: f64 = 0.999;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lth-cli-{}-generic-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mirror() -> String {
    std::env::var("LTH_DATA_MIRROR").ok().filter(|m| !m.is_empty()).unwrap_or_else(|| root().join("../shared/datasets").display().to_string())
}

/// `lth args…` with a data cache shared by this test process's runs.
fn lth(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join(format!("lth-cli-{}-generic-data", std::process::id()));
    let out =
        Command::new(env!("CARGO_BIN_EXE_lth")).args(args).current_dir(root()).env("LTH_DATA_DIR", cache).env("LTH_DATA_MIRROR", mirror()).output().unwrap();
    assert!(out.status.success(), "lth {}:\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// `experiments/<name>.toml` with its smoke scale replaced by `smoke` and its batch size by
/// `batch` (None: kept), written into `dir`.
fn spec(dir: &Path, name: &str, batch: Option<usize>, smoke: Option<&str>) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join(format!("experiments/{name}.toml"))).unwrap();
    if let Some(smoke) = smoke {
        let start = text.find("[scales.smoke]").unwrap();
        let rest = &text[start + "[scales.smoke]".len()..];
        let after = rest.find("\n[").map_or(String::new(), |i| rest[i..].to_string());
        text = format!("{}[scales.smoke]\n{smoke}\n{after}", &text[..start]);
    }
    if let Some(batch) = batch {
        let line = text.lines().find(|l| l.starts_with("batch_size")).unwrap().to_string();
        text = text.replace(&line, &format!("batch_size = {batch}"));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One evaluation's numbers: train, validation and test loss and accuracy.
type Row = Vec<f64>;

/// Every level of every run under `out`: its curve and its mask file's bytes.
fn levels(out: &Path) -> BTreeMap<String, (Vec<Row>, Vec<u8>)> {
    let mut levels = BTreeMap::new();
    for run in std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()) {
        for level in std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("curve.csv").exists()) {
            let curve = std::fs::read_to_string(level.join("curve.csv")).unwrap();
            // The last six columns: train, validation and test loss and accuracy.
            let row = |line: &str| -> Row {
                let fields: Vec<&str> = line.split(',').collect();
                fields[fields.len() - 6..].iter().map(|v| v.parse().unwrap()).collect()
            };
            let rows = curve.lines().skip(1).map(row).collect();
            let key = format!("{}/{}", run.file_name().unwrap().to_string_lossy(), level.file_name().unwrap().to_string_lossy());
            levels.insert(key, (rows, std::fs::read(level.join("mask.safetensors")).unwrap()));
        }
    }
    levels
}

/// The fraction of entries two mask files agree on (their u8 payloads, compared byte by byte
/// past the identical headers).
fn agreement(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "mask files of different sizes");
    let header = 8 + u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
    assert_eq!(a[..header], b[..header], "mask headers differ");
    let same = a[header..].iter().zip(&b[header..]).filter(|(x, y)| x == y).count();
    same as f64 / (a.len() - header).max(1) as f64
}

/// Trains `spec` at smoke scale with the CPU kernels and on the generic path, and checks the
/// tolerances above (`examples`: the evaluation subset's size); returns the generic run's
/// results folder.
fn both_paths_agree(dir: &Path, spec: &Path, extra: &[&str], examples: usize) -> PathBuf {
    let accuracy_tolerance = ACCURACY_EXAMPLES / examples as f64 + 1e-9;
    let outs: Vec<PathBuf> = ["cpu", "cpu-generic"]
        .iter()
        .map(|device| {
            let out = dir.join(format!("results-{device}"));
            let mut args = vec!["run", spec.to_str().unwrap(), "--scale", "smoke", "--device", device, "--jobs", "1", "--out", out.to_str().unwrap()];
            args.extend(extra);
            lth(&args);
            out
        })
        .collect();
    let (fast, generic) = (levels(&outs[0]), levels(&outs[1]));
    let mut compared = Vec::new();
    assert_eq!(fast.keys().collect::<Vec<_>>(), generic.keys().collect::<Vec<_>>(), "the same runs and levels");
    for (key, (rows, mask)) in &fast {
        let (generic_rows, generic_mask) = &generic[key];
        if key.contains("-ticket-") && key.ends_with("level-01") {
            let agree = agreement(mask, generic_mask);
            assert!(agree >= MASK_AGREEMENT, "{key}: the masks agree on {:.4}% of the weights", 100.0 * agree);
        }
        if mask != generic_mask {
            continue;
        }
        compared.push(key.clone());
        assert_eq!(rows.len(), generic_rows.len(), "{key}: evaluations");
        for (i, (a, b)) in rows.iter().zip(generic_rows).enumerate() {
            for (column, (x, y)) in a.iter().zip(b).enumerate() {
                let (is_loss, what) = (column % 2 == 0, ["train loss", "train acc", "val loss", "val acc", "test loss", "test acc"][column]);
                let ok = (x.is_nan() && y.is_nan()) || if is_loss { (x - y).abs() <= LOSS_TOLERANCE * x.abs() } else { (x - y).abs() <= accuracy_tolerance };
                assert!(ok, "{key}, evaluation {i}: {what} {x} with the CPU kernels, {y} on the generic path");
            }
        }
    }
    assert!(compared.iter().any(|k| k.contains("-ticket-") && k.ends_with("level-00")), "the dense level was not compared: {compared:?}");
    outs[1].clone()
}

#[test]
fn lenet_trains_alike_on_both_paths_through_every_procedure_and_its_ticket_ships() {
    // The smoke scale as committed: three iterative levels, one-shot pruning, reinit and random
    // pruning (layerwise), on real MNIST.
    let dir = scratch("lenet");
    let out = both_paths_agree(&dir, &root().join("experiments/lenet.toml"), &[], 1000);
    let run = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.display().to_string().contains("-ticket-")).unwrap();
    let model = dir.join("ticket.sparse.safetensors");
    lth(&["export", run.to_str().unwrap(), "--level", "3", "--out", model.to_str().unwrap()]);
    // infer fails unless the exported model scores the run's own final test accuracy exactly.
    let infer = lth(&["infer", model.to_str().unwrap(), "--repeat", "1", "--device", "cpu-generic"]);
    assert!(String::from_utf8_lossy(&infer.stdout).contains("images/s"));
}

#[test]
fn conv_vgg_and_resnet_train_alike_on_both_paths() {
    let dir = scratch("deep");
    // Conv-2 with dropout; VGG-19 with global pruning and rewinding; ResNet-18: each a ticket
    // level and its reinit control, with augmentation and BatchNorm for the last two, at a few
    // steps of small batches on the synthetic set.
    let tiny = |levels: usize| {
        format!(
            "iterations = 2\neval_every = 1\ntrials = 1\nlevels = {levels}\nreinit_copies = 1\nreinit_levels = [{levels}]\noneshot_levels = []\n\
             random_prune_copies = 0\nrandom_prune_levels = []\ntrain_subset = 32\neval_subset = 16"
        )
    };
    for (name, batch) in [("conv2_dropout", 16), ("vgg19_lr0.1_rewind1000", 8), ("resnet18_lr0.1", 8)] {
        let path = spec(&dir, name, Some(batch), Some(&tiny(1)));
        let out = both_paths_agree(&dir.join(name), &path, &["--data", "synthetic"], 16);
        if name.starts_with("resnet") {
            // Evaluation of an export on the generic path (BatchNorm on running statistics).
            let run = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.display().to_string().contains("-ticket-")).unwrap();
            let model = dir.join("resnet.sparse.safetensors");
            lth(&["export", run.to_str().unwrap(), "--level", "1", "--out", model.to_str().unwrap()]);
            lth(&["infer", model.to_str().unwrap(), "--repeat", "1", "--device", "cpu-generic"]);
        }
    }
}

#[test]
fn gpu_check_runs_its_self_test_on_the_generic_path() {
    let out = lth(&["gpu-check", "--device", "cpu-generic"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<&str> = stdout.lines().filter(|l| l.starts_with("verdict: ")).collect();
    // Six parity workloads (LeNet dense and 5%, Conv-2, VGG-19, ResNet-18 dense and 20%) and
    // twelve throughput rows (six networks, dense and sparse), every one ok.
    assert_eq!(verdicts.len(), 18, "{stdout}");
    assert!(verdicts.iter().all(|v| v.contains(": ok (")), "{stdout}");
    for network in ["LeNet", "Conv-2", "VGG-19", "ResNet-18"] {
        assert!(verdicts.iter().any(|v| v.starts_with(&format!("verdict: parity {network}"))), "{stdout}");
    }
}
