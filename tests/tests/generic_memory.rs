//! Memory across levels on the generic path (`lth::ops::device`): a Conv-2 ticket run of
//! four levels, each built afresh from theta0 and the level's mask, leaves the process's
//! resident memory where the first pruned level left it. On the CPU the generic path's tensors
//! live in the heap, and jemalloc (the allocator `lth` and its tests choose) keeps freed pages and reuses them, so a
//! level that frees what it allocated adds nothing; one that kept a copy of theta0, the masks,
//! the optimizer state or the images alive (17 MB for Conv-2's weights alone) would show. Its
//! own test binary, so that no other test's memory moves the measurement.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::base::spec::{DataSource, DatasetKind, ExperimentSpec, Scale};
use lth::data::{self, fetch::Source};
use lth::lottery::procedure::Resources;
use lth::ops::device::with_path;
use lth::store::runs::Store;
use lth::train::progress::Progress;
use lth_tests::{data_cache, scratch};
use std::path::Path;

/// experiments/conv2.toml at a size of seconds per level: batch 8, two steps, four levels.
fn tiny_conv2(dir: &Path) -> ExperimentSpec {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/conv2.toml")).unwrap();
    let smoke = text.find("[scales.smoke]").unwrap();
    let rest = &text[smoke + "[scales.smoke]".len()..];
    let after = rest.find("\n[").map_or("", |i| &rest[i..]);
    let text = format!(
        "{}[scales.smoke]\niterations = 2\neval_every = 2\ntrials = 1\nlevels = 3\nreinit_copies = 0\nreinit_levels = []\noneshot_levels = []\n\
         random_prune_copies = 0\nrandom_prune_levels = []\ntrain_subset = 16\neval_subset = 8\n{after}",
        text[..smoke].replace("batch_size = 60", "batch_size = 8")
    );
    let path = dir.join("conv2.toml");
    std::fs::write(&path, text).unwrap();
    ExperimentSpec::load(&path).unwrap()
}

/// The process's resident memory in bytes (Linux `VmRSS`).
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn levels_on_the_generic_path_leave_resident_memory_flat() {
    let dir = scratch("generic-memory");
    let spec = tiny_conv2(&dir);
    let planned = spec.plan(Scale::Smoke, None, DataSource::Synthetic).unwrap().remove(0);
    assert_eq!(planned.levels, vec![0, 1, 2, 3]);
    let source = Source { mirror: None, cache: data_cache() };
    let data = data::load(DatasetKind::Cifar10, DataSource::Synthetic, &source).unwrap().prepare(&planned.spec, &candle_core::Device::Cpu).unwrap();
    let (store, progress) = (Store::new(&dir.join("results")), Progress::new(0, 0));
    let on = Resources { store: &store, data: &data, dev: &candle_core::Device::Cpu, progress: &progress };
    let after: Vec<u64> = with_path(true, || {
        planned
            .levels
            .iter()
            .map(|&level| {
                lth::lottery::procedure::run_level(&planned.spec, level, false, 1, on).unwrap();
                resident()
            })
            .collect()
    });
    // Level 0 sets the high-water marks (its first evaluations, the optimizer's state); the
    // pruned levels allocate the same shapes again. A quarter of one copy of the weights.
    let limit = 4 << 20;
    let growth = after[3].saturating_sub(after[1]);
    assert!(
        growth < limit,
        "resident memory grew by {} KiB from level 1 to level 3 (after each level: {:?} KiB)",
        growth >> 10,
        after.iter().map(|b| b >> 10).collect::<Vec<_>>()
    );
}
