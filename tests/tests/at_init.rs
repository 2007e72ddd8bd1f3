//! Pruning at initialization (issue #28) through the store and the work queue: each method's
//! run trains at the ticket's weight counts, from theta0, after the ticket drew theta0.

lth::jemalloc!();

use lth::base::spec::{DataSource, ExperimentSpec, Procedure, Scale};
use lth::data::{self, fetch::Source};
use lth::lottery::procedure::Resources;
use lth::lottery::work;
use lth::nn::Architecture;
use lth::sparsity::{at_init, masks::Mask};
use lth::store::runs::{load_weights, Store};
use lth::train::progress::Progress;
use lth_tests::{data_cache, mirror, scratch, TINY_LENET};

#[test]
fn every_method_trains_at_the_tickets_weight_counts_from_theta0() {
    let text = TINY_LENET
        .replace("levels = 3\n", "levels = 2\n")
        .replace("reinit_levels = [2, 3]", "reinit_levels = [2]")
        .replace("oneshot_levels = [2, 3]", "oneshot_levels = [2]")
        .replace(
            "random_prune_levels = [3]",
            "random_prune_levels = [2]\nat_init = [\"init_random\", \"init_magnitude\", \"snip\", \"synflow\"]\nat_init_levels = [1, 2]",
        );
    let dir = scratch("at-init");
    std::fs::write(dir.join("lenet.toml"), &text).unwrap();
    let spec = ExperimentSpec::load(&dir.join("lenet.toml")).unwrap();
    let plan = spec.plan(Scale::Smoke, None, DataSource::Real).unwrap();
    let methods: Vec<Procedure> = plan.iter().map(|p| p.spec.procedure).filter(|p| p.at_init()).collect();
    assert_eq!(methods, [Procedure::InitRandom, Procedure::InitMagnitude, Procedure::Snip, Procedure::Synflow]);

    let source = Source { mirror: Some(mirror()), cache: data_cache() };
    let data = data::load(spec.method.dataset, DataSource::Real, &source).unwrap().prepare(&plan[0].spec, &candle_core::Device::Cpu).unwrap();
    let (store, progress) = (Store::new(&dir.join("results")), Progress::new(0, 0));
    // Two workers: the at-init runs must wait for the ticket to draw theta0.
    let tasks = work::pending(&plan, &store, |_, _| 1).unwrap();
    work::run(&plan, tasks, 2, Resources { store: &store, data: &data, dev: &candle_core::Device::Cpu, progress: &progress }).unwrap();

    let arch = Architecture::of(spec.method.model);
    let ticket = store.existing(&plan[0].spec);
    let theta0 = load_weights(&ticket.init_path(), &arch).unwrap();
    let kept = |m: &Mask| m.layers.values().map(|l| l.remaining()).sum::<usize>();
    for level in [1, 2] {
        let imp = kept(&Mask::load(&ticket.mask_path(level), &arch).unwrap());
        let masks: Vec<Mask> = plan
            .iter()
            .filter(|p| p.spec.procedure.at_init())
            .map(|p| {
                let run = store.existing(&p.spec);
                assert!(run.is_done(level), "{} level {level}", run.id);
                let curve = run.load_curve(level).unwrap();
                assert_eq!(curve[0].point.iteration, 0, "{} trains from theta0, from the start", run.id);
                Mask::load(&run.mask_path(level), &arch).unwrap()
            })
            .collect();
        for mask in &masks {
            assert_eq!(kept(mask), imp, "level {level}: the ticket's weight count");
        }
        // Magnitude at init is |theta0|'s top-k of the ticket's own theta0; the methods disagree.
        assert_eq!(masks[1], at_init::magnitude(&arch, &theta0, imp));
        for (i, a) in masks.iter().enumerate() {
            for b in &masks[i + 1..] {
                assert_ne!(a, b, "level {level}: two methods chose the same mask");
            }
        }
    }
}
