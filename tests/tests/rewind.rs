//! Rewinding (late resetting, beyond the ICLR paper) on the real MNIST mirror: k = 0 is the
//! paper's run to the byte; with k > 0, θk is the dense network after k steps, and every
//! pruned level and branch starts from θk at its kept positions and 0 elsewhere, at iteration k.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::base::seeds::{stream, trial_seed, Purpose};
use lth::base::spec::{DataSource, ExperimentSpec, ModelKind, Procedure, Scale};
use lth::data::Dataset;
use lth::nn::{self, Architecture};
use lth::sparsity::masks::Mask;
use lth::store::record::read_curve;
use lth::store::runs::{load_weights, Store};
use lth::train::training::{self, MaskedNetwork, Observer, TrainConfig};
use lth_tests::{run_smoke, scratch, smoke_data, TINY_LENET};
use std::sync::OnceLock;

/// The tiny LeNet with a paper scale to scale the rewind point from: iteration 5,000 of 50,000
/// is iteration 4 of the smoke scale's 40.
/// `None` leaves the field out.
fn spec_with(k: Option<usize>) -> ExperimentSpec {
    let paper = "[scales.paper]\niterations = 50000\neval_every = 100\ntrials = 1\nlevels = 3\nreinit_copies = 1\nreinit_levels = [2, 3]\noneshot_levels = [2, 3]\n\n[scales.smoke]";
    let mut text = TINY_LENET.replace("[scales.smoke]", paper);
    if let Some(k) = k {
        text = text.replace("pruning = {", &format!("rewind_iteration = {k}\npruning = {{"));
    }
    let path = scratch("rewind-spec").join("lenet.toml");
    std::fs::write(&path, text).unwrap();
    ExperimentSpec::load(&path).unwrap()
}

fn rewinding(k: usize) -> ExperimentSpec {
    spec_with(Some(k))
}

fn data(spec: &ExperimentSpec) -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| smoke_data(spec))
}

/// A finished rewinding results folder (k = 5,000 of 50,000: iteration 4 of 40).
fn finished() -> &'static (ExperimentSpec, Store) {
    static OUT: OnceLock<(ExperimentSpec, Store)> = OnceLock::new();
    OUT.get_or_init(|| {
        let spec = rewinding(5000);
        let store = run_smoke(&spec, data(&spec));
        (spec, store)
    })
}

#[test]
fn rewind_zero_is_the_papers_run_with_the_same_ids() {
    let plain = spec_with(None);
    let zero = rewinding(0).plan(Scale::Smoke, None, DataSource::Real).unwrap();
    let plain = plain.plan(Scale::Smoke, None, DataSource::Real).unwrap();
    assert_eq!(zero.len(), plain.len());
    for (a, b) in zero.iter().zip(&plain) {
        assert_eq!(a.spec.canonical_json(), b.spec.canonical_json());
        assert_eq!(a.spec.id(), b.spec.id());
    }
    assert!(!zero[0].spec.canonical_json().contains("rewind"));
    let k = rewinding(5000).plan(Scale::Smoke, None, DataSource::Real).unwrap();
    assert_eq!(k[0].spec.rewind_iteration, 4, "5,000 of 50,000 iterations is 4 of 40");
    assert_ne!(k[0].spec.id(), plain[0].spec.id(), "a rewinding run never shares a folder with the paper's");
}

#[test]
fn theta_k_is_the_dense_network_after_k_steps() {
    let (spec, store) = finished();
    let arch = Architecture::of(ModelKind::Lenet300100);
    let ticket = store.existing(&spec.plan(Scale::Smoke, None, DataSource::Real).unwrap()[0].spec);
    let theta0 = load_weights(&ticket.init_path(), &arch).unwrap();
    let theta_k = ticket.load_rewind(&arch).unwrap();
    assert_ne!(theta_k, theta0);
    assert_ne!(theta_k, ticket.load_final(0, &arch).unwrap());
    // Four steps of the same training from theta0, as a run of 4 iterations: the same bits.
    let params = nn::to_params(&arch, &theta0, &candle_core::Device::Cpu).unwrap();
    let run_spec = &spec.plan(Scale::Smoke, None, DataSource::Real).unwrap()[0].spec;
    let config = TrainConfig {
        iterations: 4,
        eval_every: 4,
        batch_size: 60,
        optimizer: (&spec.method.optimizer).into(),
        sparse_kernels: true,
        lr_schedule: None,
        start_iteration: 0,
    };
    struct Quiet;
    impl Observer for Quiet {}
    let order = stream(trial_seed(run_spec.seed, 0), Purpose::DataOrder);
    let streams = training::Streams { data_order: order, dropout: None, augment: None };
    training::train(training::Start { model: spec.method.model, params: &params, mask: &Mask::dense(&arch) }, data(spec), &config, streams, &mut Quiet)
        .unwrap();
    assert_eq!(nn::weights_of(&params).unwrap(), theta_k);
}

#[test]
fn every_pruned_level_and_branch_starts_from_theta_k_at_iteration_k() {
    let (spec, store) = finished();
    let arch = Architecture::of(ModelKind::Lenet300100);
    let plan = spec.plan(Scale::Smoke, None, DataSource::Real).unwrap();
    let ticket = store.existing(&plan[0].spec);
    let theta0 = load_weights(&ticket.init_path(), &arch).unwrap();
    let theta_k = ticket.load_rewind(&arch).unwrap();
    let mut checked = 0;
    for planned in &plan {
        let run = store.existing(&planned.spec);
        for &level in &planned.levels {
            let (mask, start) = lth::lottery::procedure::level_start(&planned.spec, &arch, &run, &ticket, &theta0, level).unwrap();
            assert_eq!(mask, Mask::load(&run.mask_path(level), &arch).unwrap());
            let curve = read_curve(&run.curve_path(level)).unwrap();
            let dense_level = planned.spec.procedure == Procedure::Ticket && level == 0;
            assert_eq!(curve[0].point.iteration, if dense_level { 0 } else { 4 }, "{} level {level}", run.id);
            assert_eq!(curve.last().unwrap().point.iteration, 40);
            if dense_level {
                assert_eq!(start, theta0);
                continue;
            }
            if planned.spec.procedure == Procedure::Reinit {
                assert_ne!(start, theta_k, "reinit draws fresh weights");
                continue;
            }
            assert_eq!(start, theta_k, "{} level {level} does not start from θk", run.id);
            // What training began from: θk at kept positions and 0 elsewhere. Its first
            // evaluation (iteration 4) is that network's, to the bit.
            let params = nn::to_params(&arch, &start, &candle_core::Device::Cpu).unwrap();
            let net = MaskedNetwork::new(spec.method.model, &params, &mask, &candle_core::Device::Cpu, true).unwrap();
            net.write_back(&params).unwrap();
            for (name, values) in nn::weights_of(&params).unwrap() {
                let keep = mask.layers.get(&name).map(|l| &l.keep);
                for (i, &v) in values.iter().enumerate() {
                    let kept = keep.is_none_or(|k| k[i] != 0.0);
                    assert_eq!(v, if kept { theta_k[&name][i] } else { 0.0 }, "{name}[{i}]");
                }
            }
            let (test_loss, test_acc) = training::evaluate(net.net.as_ref(), &training::EvalSplit::new(net.net.as_ref(), &data(spec).test).unwrap()).unwrap();
            assert_eq!((curve[0].point.test_loss, curve[0].point.test_acc), (test_loss, test_acc), "{} level {level}", run.id);
            checked += 1;
        }
    }
    assert_eq!(checked, 3 + 2 + 1, "ticket levels 1-3, one-shot 2-3, random pruning 3");
}
