//! Checkpoints within a level (`lth::lottery::checkpoint`): a training interrupted after any
//! evaluation and resumed from its checkpoint ends in the same bits as one never interrupted,
//! through the file and through `lth run`'s procedure, with augmentation, dropout, momentum,
//! Adam's moments, sparse layers, BatchNorm and a rewind point; a checkpoint that does not fit
//! is set aside, never trained from.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use candle_core::Device;
use lth::base::error::Error;
use lth::base::seeds::{stream, Purpose};
use lth::base::spec::{DataSource, DatasetKind, ExperimentSpec, Procedure, RunSpec, Scale};
use lth::data::{self, fetch::Source, Dataset};
use lth::lottery::checkpoint::{self, Saved};
use lth::lottery::procedure::{self, streams, train_config, trial_seed};
use lth::nn::{self, Architecture, Weights};
use lth::sparsity::masks::Mask;
use lth::sparsity::pruning;
use lth::store::runs::{RunDir, Store};
use lth::train::progress::Progress;
use lth::train::training::{self, CurvePoint, Observer, Start, TrainState};
use lth_tests::scratch;
use std::path::Path;

fn experiment(name: &str) -> ExperimentSpec {
    ExperimentSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../experiments/{name}.toml"))).unwrap()
}

/// `name`'s smoke ticket spec on the synthetic set, cut to 12 iterations evaluated every 3.
fn tiny(name: &str, batch_size: usize) -> (RunSpec, Dataset) {
    let mut spec = experiment(name).plan(Scale::Smoke, None, DataSource::Synthetic).unwrap().remove(0).spec;
    assert_eq!(spec.procedure, Procedure::Ticket);
    spec.iterations = 12;
    spec.eval_every = 3;
    spec.method.batch_size = batch_size;
    spec.train_subset = Some(256);
    spec.eval_subset = Some(32);
    (spec.clone(), synthetic().prepare(&spec, &Device::Cpu).unwrap())
}

/// The synthetic set, generated once for the tests of this file (run at once, they would write
/// its cache folder together).
fn synthetic() -> &'static data::RawDataset {
    static RAW: std::sync::OnceLock<data::RawDataset> = std::sync::OnceLock::new();
    RAW.get_or_init(|| {
        let source = Source { mirror: None, cache: lth_tests::data_cache() };
        data::load(DatasetKind::Cifar10, DataSource::Synthetic, &source).unwrap()
    })
}

struct Quiet;
impl Observer for Quiet {}

/// Takes the checkpoint after step `at` (and θk at `rewind_at`), then stops the training with
/// an error, as a killed run stops.
struct Interrupt {
    at: usize,
    rewind_at: Option<usize>,
    rewind: Option<Weights>,
    saved: Option<Saved>,
}

impl Observer for Interrupt {
    fn snapshot_at(&self) -> Option<usize> {
        self.rewind_at
    }
    fn on_snapshot(&mut self, _iteration: usize, weights: Weights) {
        self.rewind = Some(weights);
    }
    fn checkpoint_due(&mut self, iteration: usize) -> bool {
        iteration == self.at
    }
    fn on_checkpoint(&mut self, state: TrainState, weights: Weights) -> lth::base::error::Result<()> {
        self.saved = Some(Saved { state, weights, rewind: self.rewind.clone() });
        Err(Error::Invalid("interrupted".into()))
    }
}

/// A curve's values as bits (its first train metrics are NaN, which `==` never matches).
fn bits(curve: &[CurvePoint]) -> Vec<[u64; 7]> {
    curve
        .iter()
        .map(|p| {
            [
                p.iteration as u64,
                p.train_loss.to_bits(),
                p.train_acc.to_bits(),
                p.val_loss.to_bits(),
                p.val_acc.to_bits(),
                p.test_loss.to_bits(),
                p.test_acc.to_bits(),
            ]
        })
        .collect()
}

/// Trains `spec` under `mask` from θ0 straight through, then interrupted after a step at an
/// evaluation (3) and between them (5, and 10 after the warmup or rate changes of a schedule)
/// and resumed from the checkpoint file: the same curve and weights.
fn check_resumes_to_the_same_bits(spec: &RunSpec, data: &Dataset, level: usize) {
    let arch = Architecture::of(spec.method.model);
    let theta0 = nn::initial_weights(&arch, &mut stream(trial_seed(spec), Purpose::Init));
    let mask = pruning::prune_oneshot(&arch, &spec.method.pruning, &theta0, &Mask::dense(&arch), level);
    let config = train_config(spec, 0);
    let seed = trial_seed(spec);
    let straight = nn::to_params(&arch, &theta0, &Device::Cpu).unwrap();
    let curve = training::train(Start { model: spec.method.model, params: &straight, mask: &mask }, data, &config, streams(spec, seed), &mut Quiet).unwrap();
    let weights = nn::weights_of(&straight).unwrap();
    let path = scratch(&format!("checkpoint-{}-{level}", spec.experiment)).join("checkpoint.safetensors");
    for at in [3, 5, 10] {
        let params = nn::to_params(&arch, &theta0, &Device::Cpu).unwrap();
        let mut interrupt = Interrupt { at, rewind_at: None, rewind: None, saved: None };
        let stopped = training::train(Start { model: spec.method.model, params: &params, mask: &mask }, data, &config, streams(spec, seed), &mut interrupt);
        assert!(stopped.is_err(), "the observer's error ends the training");
        let saved = interrupt.saved.unwrap();
        assert_eq!(saved.state.iteration, at);
        checkpoint::save(&path, &arch, &saved).unwrap();
        let loaded = checkpoint::load(&path, &arch).unwrap();
        // Everything but the curve as it was (the curve by its bits: its first train metrics are NaN).
        let uncurved = |state: &TrainState| TrainState { curve: Vec::new(), ..state.clone() };
        assert_eq!(uncurved(&loaded.state), uncurved(&saved.state));
        assert_eq!(bits(&loaded.state.curve), bits(&saved.state.curve));
        assert_eq!(loaded.weights, saved.weights);
        let params = nn::to_params(&arch, &loaded.weights, &Device::Cpu).unwrap();
        let resumed = training::train_resumed(
            Start { model: spec.method.model, params: &params, mask: &mask },
            loaded.state,
            data,
            &config,
            streams(spec, seed),
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(bits(&resumed), bits(&curve), "{} level {level}: the curve resumed at {at}", spec.experiment);
        assert!(nn::weights_of(&params).unwrap() == weights, "{} level {level}: the weights resumed at {at}", spec.experiment);
    }
}

#[test]
fn a_training_resumed_after_any_step_ends_in_the_same_bits() {
    // SGD with momentum and weight decay, the warmup schedule, augmentation and BatchNorm; dense.
    let (spec, data) = tiny("resnet18_lr0.03_warmup", 8);
    assert!(spec.method.augmentation.is_some());
    check_resumes_to_the_same_bits(&spec, &data, 0);
    // Adam's two moments and step count, dropout, and sparse layers (level 8: Pm 17%).
    let (spec, data) = tiny("conv2_dropout", 16);
    assert!(spec.method.dropout.is_some());
    check_resumes_to_the_same_bits(&spec, &data, 8);
}

#[test]
fn so_does_one_on_the_generic_path_that_cuda_runs() {
    // The optimizer's state as device tensors (candle ops), Adam's two moments restored from
    // the host copy. (ResNet-18 on this path takes minutes; SGD's one buffer is the same code.)
    lth::ops::device::with_path(true, || {
        let (spec, data) = tiny("conv2_dropout", 4);
        check_resumes_to_the_same_bits(&spec, &data, 0);
    });
}

fn level_files(run: &RunDir, levels: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for level in 0..=levels {
        for path in [run.mask_path(level), run.final_path(level), run.curve_path(level), run.next_mask_path(level), run.done_path(level)] {
            files.push((path.strip_prefix(&run.dir).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files.push(("rewind".into(), std::fs::read(run.rewind_path()).unwrap()));
    files
}

#[test]
fn a_run_goes_on_from_a_level_checkpoint_and_sets_aside_one_that_does_not_fit() {
    // ResNet-18 with rewinding to iteration 2: the checkpoint at 7 holds θk, taken before it.
    let (mut spec, data) = tiny("resnet18_lr0.1_rewind500", 8);
    spec.rewind_iteration = 2;
    let planned = lth::base::spec::PlannedRun { spec: spec.clone(), levels: vec![0, 1] };
    let progress = Progress::new(0, 0);
    let straight = Store::new(scratch("checkpoint-straight"));
    procedure::run(&planned, &straight, &data, &Device::Cpu, &progress).unwrap();
    let expected = level_files(&straight.existing(&spec), 1);
    // Where only level 0 is at stake, only level 0 is trained (and compared).
    let dense_only = lth::base::spec::PlannedRun { spec: spec.clone(), levels: vec![0] };
    let expected_dense = level_files(&straight.existing(&spec), 0);

    // Level 0 interrupted after step 7 (its last evaluation at 6), as `Checkpointing` saves it.
    let arch = Architecture::of(spec.method.model);
    let interrupted = |name: &str| {
        let store = Store::new(scratch(name));
        procedure::draw_theta0(&spec, &store).unwrap();
        let run = store.existing(&spec);
        let theta0 = run.load_init(&arch).unwrap();
        let params = nn::to_params(&arch, &theta0, &Device::Cpu).unwrap();
        let mut interrupt = Interrupt { at: 7, rewind_at: Some(2), rewind: None, saved: None };
        let start = Start { model: spec.method.model, params: &params, mask: &Mask::dense(&arch) };
        assert!(training::train(start, &data, &train_config(&spec, 0), streams(&spec, trial_seed(&spec)), &mut interrupt).is_err());
        let saved = interrupt.saved.unwrap();
        assert!(saved.rewind.is_some(), "θk (iteration 2) is saved with the checkpoint at 7");
        (store, run, saved)
    };

    let (store, run, saved) = interrupted("checkpoint-resumed");
    checkpoint::save(&run.checkpoint_path(0), &arch, &saved).unwrap();
    // What `lth runs` lists: the unfinished level and the iteration its checkpoint holds.
    assert_eq!(run.checkpointed_levels(), vec![0]);
    assert_eq!(checkpoint::saved_at(&run.checkpoint_path(0)), Some(7));
    procedure::run(&planned, &store, &data, &Device::Cpu, &progress).unwrap();
    assert!(run.checkpointed_levels().is_empty());
    assert!(level_files(&run, 1) == expected, "a run resumed from its checkpoint writes the files of an uninterrupted one");
    assert!(!run.checkpoint_path(0).exists(), "the checkpoint goes once the level is finished");

    // The checkpoint is what the run goes on from: one weight changed in it changes the result.
    let (store, run, mut saved) = interrupted("checkpoint-tampered");
    saved.weights.get_mut("fc.weight").unwrap()[0] += 0.5;
    checkpoint::save(&run.checkpoint_path(0), &arch, &saved).unwrap();
    procedure::run(&dense_only, &store, &data, &Device::Cpu, &progress).unwrap();
    assert!(std::fs::read(run.final_path(0)).unwrap() != expected.iter().find(|(n, _)| n.ends_with("level-00/final.safetensors")).unwrap().1);

    // Unreadable, with a value other than it recorded (a power cut can leave that), or of a
    // training with other sizes: set aside, and the level trains from its start.
    let file = |saved: &Saved| {
        let path = scratch("checkpoint-file").join("c.safetensors");
        checkpoint::save(&path, &arch, saved).unwrap();
        std::fs::read(&path).unwrap()
    };
    let mut flipped = file(&saved);
    *flipped.last_mut().unwrap() ^= 0x40;
    let mut other = saved.clone();
    other.state.iteration = 9; // its curve ends at 6: the evaluation at 9 is missing
    for (name, bytes) in [("checkpoint-garbage", b"not a checkpoint".to_vec()), ("checkpoint-flipped", flipped), ("checkpoint-other", file(&other))] {
        let store = Store::new(scratch(name));
        procedure::draw_theta0(&spec, &store).unwrap();
        let run = store.existing(&spec);
        std::fs::create_dir_all(run.level_dir(0)).unwrap();
        std::fs::write(run.checkpoint_path(0), bytes).unwrap();
        procedure::run(&dense_only, &store, &data, &Device::Cpu, &progress).unwrap();
        assert!(level_files(&run, 0) == expected_dense, "{name}: trained from the start");
        assert!(!run.checkpoint_path(0).exists(), "{name}: removed");
    }
}
