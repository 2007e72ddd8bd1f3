//! The instability analysis (issue #28, beyond the paper) on a ticket run of LeNet on real
//! MNIST: the path's ends are the copies' own test errors, copies with one seed are one network
//! (barrier 0, bit for bit), and a finished analysis is read back, not redone.

lth::jemalloc!();

use candle_core::Device;
use lth::base::spec::{DataSource, ExperimentSpec, Procedure, Scale};
use lth::data::{self, fetch::Source};
use lth::lottery::instability::{self, Request};
use lth::lottery::procedure;
use lth::nn::Architecture;
use lth::store::runs::{load_weights, Store};
use lth::train::progress::Progress;
use lth::train::training::Observer;
use lth_tests::{data_cache, mirror, scratch, TINY_LENET};

struct Quiet;
impl Observer for Quiet {}

#[test]
fn the_path_ends_are_the_copies_and_one_seed_gives_barrier_zero() {
    let dir = scratch("instability");
    std::fs::write(dir.join("lenet.toml"), TINY_LENET).unwrap();
    let spec = ExperimentSpec::load(&dir.join("lenet.toml")).unwrap();
    let plan = spec.plan(Scale::Smoke, None, DataSource::Real).unwrap();
    let ticket = plan.iter().find(|p| p.spec.procedure == Procedure::Ticket).unwrap();
    let source = Source { mirror: Some(mirror()), cache: data_cache() };
    let data = data::load(spec.method.dataset, DataSource::Real, &source).unwrap().prepare(&ticket.spec, &Device::Cpu).unwrap();
    let (store, progress, dev) = (Store::new(&dir.join("results")), Progress::new(0, 0), Device::Cpu);
    procedure::run(ticket, &store, &data, &dev, &progress).unwrap();

    // Level 2 of the ticket, from the dense network after 10 of its 40 steps.
    let request = Request { level: 2, rewind: 10, copies: 2, points: 11 };
    let rows = instability::analyse(&ticket.spec, &request, &store, &data, &dev, &progress).unwrap();
    assert_eq!(rows.len(), 11);
    assert_eq!((rows[0].alpha, rows[10].alpha, rows[5].alpha), (0.0, 1.0, 0.5));
    assert!(rows.iter().all(|r| r.pair == "0-1" && r.level == 2 && r.rewind == 10));

    // The ends: each copy trained again on its own reports the same test error, to the bit.
    let arch = Architecture::of(spec.method.model);
    let run = store.existing(&ticket.spec);
    let mask = run.load_mask(2, &arch).unwrap();
    let theta0 = load_weights(&run.init_path(), &arch).unwrap();
    let start = instability::dense_at(&ticket.spec, &theta0, 10, &data, &dev).unwrap();
    let copy = |c: usize| instability::train_copy(&ticket.spec, (&mask, &start, 10), instability::copy_seed(&ticket.spec, c), &data, &dev, &mut Quiet).unwrap();
    let ((a, curve_a), (b, curve_b)) = (copy(0), copy(1));
    assert_eq!(curve_a[0].iteration, 10, "a copy trains from its start iteration");
    assert_eq!(rows[0].test_error, 1.0 - curve_a.last().unwrap().test_acc);
    assert_eq!(rows[10].test_error, 1.0 - curve_b.last().unwrap().test_acc);
    assert_ne!(a, b, "different seeds, different SGD noise");
    assert!(instability::barriers(&rows)[0].1.is_finite());

    // One seed twice: one network, and a flat path.
    let (again, _) = copy(0);
    assert_eq!(again, a);
    let errors: Vec<f64> = instability::path_errors(&ticket.spec, &mask, (&a, &again), 11, &data, &dev).unwrap().into_iter().map(|(_, e)| e).collect();
    assert_eq!(instability::barrier(&errors), 0.0);

    // Finished analyses are read back from their table.
    let path = instability::table_path(&store, &ticket.spec, &request);
    let before = std::fs::read(&path).unwrap();
    assert_eq!(instability::analyse(&ticket.spec, &request, &store, &data, &dev, &progress).unwrap(), rows);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A table cut short (a power cut) is refused by name, never read as a shorter path.
    let text = String::from_utf8(before.clone()).unwrap();
    let cut: String = text.lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, cut).unwrap();
    let err = instability::analyse(&ticket.spec, &request, &store, &data, &dev, &progress).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()) && err.contains("cut short"), "{err}");
    std::fs::write(&path, &before).unwrap();

    // Bad requests are refused by name.
    let err = instability::analyse(&ticket.spec, &Request { copies: 1, ..request }, &store, &data, &dev, &progress).unwrap_err().to_string();
    assert!(err.contains("at least 2 copies"), "{err}");
    let err = instability::analyse(&ticket.spec, &Request { rewind: 40, ..request }, &store, &data, &dev, &progress).unwrap_err().to_string();
    assert!(err.contains("--rewind 40"), "{err}");
}
