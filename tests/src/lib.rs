//! Shared helpers for the integration tests: scratch folders, the real MNIST mirror, seeded
//! images of a network's input shape, and a tiny experiment spec that runs the real pipeline in
//! seconds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the system temp dir, unique to this process and call.
pub fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_finished_processes_folders);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lth-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch folder");
    dir
}

/// Removes the scratch and cache folders of test processes that have exited (`lth-test-*`, and
/// `lth-cli-*` of `lth/tests/cli.rs`), named by their process id. Tests keep their folders for
/// inspection after a failure, so without this every run left about 400 MB behind (two copies
/// of the 60,000-image JPEG set) and a developer's temp dir filled up. Linux only (`/proc`).
fn remove_finished_processes_folders() {
    let (temp, proc_dir) = (std::env::temp_dir(), std::path::Path::new("/proc/self"));
    let Ok(entries) = std::fs::read_dir(&temp) else { return };
    if !proc_dir.exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("lth-test-data-").or_else(|| name.strip_prefix("lth-test-")).or_else(|| name.strip_prefix("lth-cli-")) else {
            continue;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else { continue };
        if pid != std::process::id() && !std::path::Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The local mirror of the official dataset files: `LTH_DATA_MIRROR` if set, else
/// `../shared/datasets` beside the repository (as laid out for developers and CI).
pub fn mirror() -> String {
    if let Ok(m) = std::env::var("LTH_DATA_MIRROR") {
        if !m.is_empty() {
            return m;
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets");
    assert!(dir.join("mnist").exists(), "the MNIST mirror is missing: expected {} (or set LTH_DATA_MIRROR)", dir.display());
    dir.canonicalize().expect("canonical mirror path").display().to_string()
}

/// A shared dataset cache for this test process, so MNIST is copied and checked once.
pub fn data_cache() -> PathBuf {
    std::env::temp_dir().join(format!("lth-test-data-{}", std::process::id()))
}

/// A LeNet experiment at test size: the paper's method, tiny sizes.
pub const TINY_LENET: &str = r#"
name = "lenet"
seed = 0

[method]
model = "lenet_300_100"
dataset = "mnist"
validation_size = 5000
split_seed = 0
batch_size = 60
normalisation = { mean = [0.1307], std = [0.3081] }
optimizer = { kind = "adam", lr = 1.2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 }
pruning = { scope = "layerwise", fc = 0.2, output = 0.1 }

[scales.smoke]
iterations = 40
eval_every = 10
trials = 1
levels = 3
reinit_copies = 1
reinit_levels = [2, 3]
oneshot_levels = [2, 3]
random_prune_copies = 1
random_prune_levels = [3]
train_subset = 1200
eval_subset = 500
"#;

/// `spec`'s smoke-scale data on the CPU, prepared as its runs prepare it (real MNIST from the
/// mirror; CIFAR-10 experiments get the synthetic set).
pub fn smoke_data(spec: &lth::base::spec::ExperimentSpec) -> lth::data::Dataset {
    use lth::base::spec::{DataSource, Scale};
    let source = lth::data::fetch::Source { mirror: Some(mirror()), cache: data_cache() };
    let raw = lth::data::load(spec.method.dataset, DataSource::Synthetic, &source).expect("loading the dataset");
    let plan = spec.plan(Scale::Smoke, None, DataSource::Synthetic).expect("a smoke scale");
    raw.prepare(&plan[0].spec, &candle_core::Device::Cpu).expect("preparing the dataset")
}

/// Trains every smoke-scale run of `spec` into a new scratch results folder.
pub fn run_smoke(spec: &lth::base::spec::ExperimentSpec, data: &lth::data::Dataset) -> lth::store::runs::Store {
    use lth::base::spec::{DataSource, Scale};
    let store = lth::store::runs::Store::new(scratch(&format!("smoke-{}", spec.name)));
    for planned in spec.plan(Scale::Smoke, None, DataSource::Synthetic).expect("a smoke scale") {
        lth::lottery::procedure::run(&planned, &store, data, &candle_core::Device::Cpu, &lth::train::progress::Progress::new(0, 0)).expect("a smoke run");
    }
    store
}

/// Seeded images in [-1, 1) of `kind`'s input shape.
pub fn images(kind: lth::base::spec::ModelKind, n: usize) -> candle_core::Tensor {
    let shape = if kind == lth::base::spec::ModelKind::Lenet300100 { (n, 1, 28, 28) } else { (n, 3, 32, 32) };
    let count = shape.0 * shape.1 * shape.2 * shape.3;
    let values: Vec<f32> = (0..count as u64).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2000) as f32 / 1000.0 - 1.0).collect();
    candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu).expect("seeded images")
}

/// Seeded images of `kind` ([`images`]) with labels 0..9 in turn.
pub fn split(kind: lth::base::spec::ModelKind, n: usize) -> lth::data::Split {
    let labels = candle_core::Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &candle_core::Device::Cpu).expect("labels");
    lth::data::Split { images: images(kind, n), labels }
}
