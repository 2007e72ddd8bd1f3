//! The generic path (the code a GPU runs: candle's ops, `lth::ops::device`) on the CPU,
//! in process: every network's forward pass at its initial weights agrees with the CPU
//! kernels', and a training step reads nothing back from the device outside the evaluations.
//! The whole pipeline through `lth --device cpu-generic`, and its equivalence with the CPU
//! kernels run for run, is `lth/tests/generic.rs`.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use candle_core::{Device, Tensor};
use lth::base::seeds::{stream, Purpose};
use lth::base::spec::{Augmentation, ModelKind, Normalisation};
use lth::data::augment::Augment;
use lth::data::Dataset;
use lth::nn::{self, Architecture, Dropout};
use lth::ops::device::{reads, with_path};
use lth::sparsity::masks::Mask;
use lth::train::optim::{AdamConfig, Rule, SgdConfig};
use lth::train::training::{self, CurvePoint, Observer, TrainConfig};
use lth_tests::{images, split};

const NETWORKS: [ModelKind; 6] = [ModelKind::Lenet300100, ModelKind::Conv2, ModelKind::Conv4, ModelKind::Conv6, ModelKind::Vgg19, ModelKind::Resnet18];

/// Logits of `kind` at theta0 for `xs`, in training mode (BatchNorm on the batch's statistics)
/// and in evaluation mode, on the generic path or the CPU kernels.
fn logits(kind: ModelKind, xs: &Tensor, generic: bool) -> (Vec<f32>, Vec<f32>) {
    with_path(generic, || {
        let arch = Architecture::of(kind);
        let params = nn::to_params(&arch, &nn::initial_weights(&arch, &mut stream(0, Purpose::Init)), &Device::Cpu).unwrap();
        let net = nn::build(kind, &params, &nn::linear::Compact::none()).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (flat(net.forward_t(xs, None).unwrap()), flat(net.forward(xs).unwrap()))
    })
}

#[test]
fn every_network_gives_the_same_logits_at_theta0_on_both_paths() {
    // f32 products and sums in another order (candle's GEMM and conv2d against the project's
    // kernels): the logits are O(1), so 1e-4 is about a thousand float steps of theirs.
    const TOLERANCE: f32 = 1e-4;
    for kind in NETWORKS {
        let xs = images(kind, 4);
        let (fast_train, fast_eval) = logits(kind, &xs, false);
        let (generic_train, generic_eval) = logits(kind, &xs, true);
        for (mode, a, b) in [("training", &fast_train, &generic_train), ("evaluation", &fast_eval, &generic_eval)] {
            assert_eq!(a.len(), 10 * xs.dim(0).unwrap(), "{kind:?}");
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff <= TOLERANCE, "{kind:?}, {mode} mode: logits differ by {diff:e} (fast {:?}, generic {:?})", &a[..4], &b[..4]);
        }
    }
}

/// Counts the device-to-host reads (`ops::device::reads`) between the observer's calls:
/// `per_step[i]` is what step i + 1 read (its evaluation, if any, comes after and is counted in
/// `per_evaluation`).
#[derive(Default)]
struct ReadCounter {
    last: u64,
    per_step: Vec<u64>,
    per_evaluation: Vec<u64>,
}

impl Observer for ReadCounter {
    fn on_step(&mut self, _iteration: usize) {
        self.per_step.push(reads() - self.last);
        self.last = reads();
    }

    fn on_eval(&mut self, _point: &CurvePoint) {
        self.per_evaluation.push(reads() - self.last);
        self.last = reads();
    }
}

#[test]
fn a_training_step_on_the_generic_path_reads_nothing_back_from_the_device() {
    // With everything that can read back in a step: dropout (Conv-2), augmentation and
    // BatchNorm's running statistics (ResNet-18; VGG-19's ops are these networks' ops), a pruned
    // mask, Adam and SGD.
    let adam = Rule::Adam(AdamConfig { lr: 1.2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 });
    let sgd = Rule::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 });
    let augmentation = Augmentation { flip: true, pad: 4 };
    let norm = Normalisation { mean: vec![0.5; 3], std: vec![0.25; 3] };
    for (kind, rule, dropout, augment) in
        [(ModelKind::Lenet300100, adam, false, false), (ModelKind::Conv2, adam, true, false), (ModelKind::Resnet18, sgd, false, true)]
    {
        let data = Dataset { train: split(kind, 16), validation: split(kind, 6), test: split(kind, 6) };
        let arch = Architecture::of(kind);
        let theta0 = nn::initial_weights(&arch, &mut stream(0, Purpose::Init));
        // One magnitude-pruning round's mask: the pruned weights' masking runs too.
        let spec = lth::base::spec::PruningSpec { scope: lth::base::spec::PruningScope::Layerwise, conv: Some(0.2), fc: 0.2, output: 0.1 };
        let mask = lth::sparsity::pruning::prune_round(&arch, &spec, &theta0, &Mask::dense(&arch));
        let config = TrainConfig { iterations: 3, eval_every: 2, batch_size: 8, optimizer: rule, sparse_kernels: true, lr_schedule: None, start_iteration: 0 };
        let mut counter = ReadCounter::default();
        with_path(true, || {
            let params = nn::to_params(&arch, &theta0, &Device::Cpu).unwrap();
            let dropout = dropout.then(|| Dropout::new(0.5, stream(0, Purpose::Dropout)));
            let augment = augment.then(|| Augment::new(&augmentation, &norm, stream(0, Purpose::Augmentation)));
            counter.last = reads();
            let streams = training::Streams { data_order: stream(0, Purpose::DataOrder), dropout, augment };
            training::train(training::Start { model: kind, params: &params, mask: &mask }, &data, &config, streams, &mut counter).unwrap();
        });
        assert_eq!(counter.per_step, vec![0; 3], "{kind:?}: reads per training step");
        // Validation and test (a loss sum and a hit count each), then the running train loss
        // and accuracy; at iteration 0 there is no running mean to read.
        assert_eq!(&counter.per_evaluation[1..], &[6, 6], "{kind:?}: reads per evaluation");
        assert_eq!(counter.per_evaluation[0], 4 + augment as u64, "{kind:?}: reads before the first step (and the images' host copy for augmentation)");
    }
}
