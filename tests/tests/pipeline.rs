//! Short end-to-end runs of the real pipeline on the real MNIST mirror: every procedure,
//! the reset rule, mask invariants, resume after interruption, bit-identical reruns, spec
//! mismatch, figures redrawn from their tables, and `compare`.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::base::seeds::{stream, Purpose};
use lth::base::spec::{DataSource, ExperimentSpec, PlannedRun, Procedure, Scale};
use lth::data::{self, batches::Batches, fetch::Source, Dataset};
use lth::nn::Architecture;
use lth::report::{compare, figures, plot};
use lth::sparsity::masks::Mask;
use lth::sparsity::pruning;
use lth::store::runs::{load_weights, Store};
use lth::train::progress::Progress;
use lth::train::training::{Start, Streams};
use lth_tests::{data_cache, mirror, scratch, TINY_LENET};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn spec() -> ExperimentSpec {
    spec_from(TINY_LENET)
}

fn spec_from(text: &str) -> ExperimentSpec {
    let dir = scratch("spec");
    let path = dir.join("lenet.toml");
    std::fs::write(&path, text).unwrap();
    ExperimentSpec::load(&path).unwrap()
}

fn plan() -> Vec<PlannedRun> {
    spec().plan(Scale::Smoke, None, DataSource::Real).unwrap()
}

/// The prepared data, loaded once per test process.
fn data() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        let source = Source { mirror: Some(mirror()), cache: data_cache() };
        let raw = data::load(spec().method.dataset, DataSource::Real, &source).unwrap();
        raw.prepare(&plan()[0].spec, &candle_core::Device::Cpu).unwrap()
    })
}

/// Runs every planned run into `out`.
fn run_all(out: &Path) -> Store {
    try_run(out, &spec()).unwrap();
    Store::new(out)
}

/// Runs every run of `spec` at smoke scale into `out`, stopping at the first error.
fn try_run(out: &Path, spec: &ExperimentSpec) -> lth::Result<()> {
    let store = Store::new(out);
    let progress = Progress::new(0, 0);
    for planned in spec.plan(Scale::Smoke, None, DataSource::Real).unwrap() {
        lth::lottery::procedure::run(&planned, &store, data(), &candle_core::Device::Cpu, &progress)?;
    }
    Ok(())
}

fn smoke_provenance() -> figures::Provenance {
    figures::Provenance {
        command: "test".into(),
        scale: Scale::Smoke,
        trials: None,
        data: DataSource::Real,
        device: "cpu".into(),
        machine: "test".into(),
        git_revision: "test".into(),
    }
}

/// One finished results folder shared by the read-only tests.
fn finished() -> &'static PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = scratch("finished");
        run_all(&out);
        out
    })
}

fn run_dir(out: &Path, procedure: Procedure, copy: usize) -> lth::store::runs::RunDir {
    let planned = plan().into_iter().find(|r| r.spec.procedure == procedure && r.spec.copy == copy).unwrap();
    Store::new(out).existing(&planned.spec)
}

#[test]
fn every_level_of_every_procedure_finishes() {
    let out = finished();
    for planned in plan() {
        let dir = Store::new(out).existing(&planned.spec);
        for level in &planned.levels {
            assert!(dir.is_done(*level), "{} level {level} not done", dir.id);
            let curve = std::fs::read_to_string(dir.curve_path(*level)).unwrap();
            // Evaluations at 0, 10, 20, 30, 40.
            assert_eq!(curve.lines().count(), 1 + 5, "{}", dir.id);
        }
    }
}

#[test]
fn masks_follow_the_pruning_rates_and_only_shrink() {
    let arch = Architecture::of(lth::base::spec::ModelKind::Lenet300100);
    let ticket = run_dir(finished(), Procedure::Ticket, 0);
    let mut previous = Mask::dense(&arch);
    for level in 0..=3 {
        let mask = Mask::load(&ticket.mask_path(level), &arch).unwrap();
        assert!(mask.is_subset_of(&previous), "level {level} regrew weights");
        for p in arch.prunable() {
            let rate = if p.name == "fc3.weight" { 0.1 } else { 0.2 };
            assert_eq!(mask.layers[&p.name].remaining(), pruning::survivors_after(p.numel(), rate, level), "{} level {level}", p.name);
        }
        // Every pruned weight is exactly 0 at the end of training.
        let trained = load_weights(&ticket.final_path(level), &arch).unwrap();
        for (name, layer) in &mask.layers {
            for (i, &k) in layer.keep.iter().enumerate() {
                assert!(k == 1.0 || trained[name][i] == 0.0, "{name}[{i}] = {} at level {level}", trained[name][i]);
            }
        }
        previous = mask;
    }
    // Controls keep the ticket's per-layer counts.
    let random = Mask::load(&run_dir(finished(), Procedure::RandomPrune, 0).mask_path(3), &arch).unwrap();
    let oneshot = Mask::load(&run_dir(finished(), Procedure::Oneshot, 0).mask_path(3), &arch).unwrap();
    for (name, layer) in &previous.layers {
        assert_eq!(random.layers[name].remaining(), layer.remaining());
        assert_eq!(oneshot.layers[name].remaining(), layer.remaining());
    }
    assert_ne!(random, previous);
}

#[test]
fn survivors_restart_from_theta0_and_reinit_draws_fresh_weights() {
    let arch = Architecture::of(lth::base::spec::ModelKind::Lenet300100);
    let out = finished();
    let ticket = run_dir(out, Procedure::Ticket, 0);
    let theta0 = load_weights(&ticket.init_path(), &arch).unwrap();
    for planned in plan() {
        let run = Store::new(out).existing(&planned.spec);
        for &level in &planned.levels {
            let (mask, start) = lth::lottery::procedure::level_start(&planned.spec, &arch, &run, &ticket, &theta0, level).unwrap();
            let saved = Mask::load(&run.mask_path(level), &arch).unwrap();
            assert_eq!(mask, saved, "{} level {level}: mask is not reproducible", run.id);
            let same_as_theta0 = start == theta0;
            match planned.spec.procedure {
                Procedure::Reinit => assert!(!same_as_theta0, "reinit reused theta0"),
                _ => assert!(same_as_theta0, "{} level {level} does not start from theta0", run.id),
            }
        }
    }
}

#[test]
fn the_same_seed_gives_bit_identical_runs() {
    let again = scratch("again");
    run_all(&again);
    let (a, b) = (files_under(&finished().join("runs")), files_under(&again.join("runs")));
    assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), b.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between two runs with the same seed");
    }
    // Data order: the same stream gives the same batches; another trial's differs.
    let order = |seed: u64| {
        let mut batches = Batches::new(&data().train, 60, stream(seed, Purpose::DataOrder));
        (0..30).flat_map(|_| batches.next_indices().to_vec()).collect::<Vec<_>>()
    };
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));
}

#[test]
fn an_interrupted_run_resumes_at_its_first_unfinished_level() {
    let out = scratch("resume");
    run_all(&out);
    let ticket = run_dir(&out, Procedure::Ticket, 0);
    let original = std::fs::read(ticket.curve_path(3)).unwrap();
    let level1 = std::fs::metadata(ticket.curve_path(1)).unwrap().modified().unwrap();
    // An interruption during level 3: its marker never written, its files half-written.
    std::fs::remove_file(ticket.done_path(3)).unwrap();
    std::fs::write(ticket.curve_path(3), b"half a fi").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    run_all(&out);
    assert!(ticket.is_done(3));
    assert_eq!(std::fs::read(ticket.curve_path(3)).unwrap(), original, "resumed level differs");
    assert_eq!(std::fs::metadata(ticket.curve_path(1)).unwrap().modified().unwrap(), level1, "a finished level was retrained");
}

#[test]
fn a_folder_holding_another_spec_is_refused() {
    let out = scratch("mismatch");
    let store = Store::new(&out);
    let planned = &plan()[0];
    let dir = store.open(&planned.spec).unwrap();
    let path = dir.dir.join("spec.json");
    let edited = std::fs::read_to_string(&path).unwrap().replace("\"iterations\":40", "\"iterations\":41");
    std::fs::write(&path, edited).unwrap();
    let message = store.open(&planned.spec).unwrap_err().to_string();
    assert!(message.contains("iterations") && message.contains("delete that folder"), "{message}");
}

#[test]
fn run_ids_are_stable() {
    // Changing these names orphans every existing results folder: only change them on purpose,
    // with a new default-free field or a deliberate method change.
    let ids: Vec<String> = plan().iter().map(|r| r.spec.id().0).collect();
    assert_eq!(
        ids,
        [
            "lenet-smoke-ticket-t0-75663071ae",
            "lenet-smoke-oneshot-t0-e1d7a6604e",
            "lenet-smoke-reinit-t0-c0-919cebdbf3",
            "lenet-smoke-random_prune-t0-c0-178e3bbadf",
        ]
    );
}

#[test]
fn figures_are_drawn_and_redraw_identically_from_their_tables() {
    let figs = scratch("figures");
    let store = Store::new(finished());
    for id in ["fig3", "fig4"] {
        let figure = figures::find(id).unwrap();
        let out = figures::make(figure, &store, &[spec()], &smoke_provenance(), &figs).unwrap();
        for path in [&out.csv, &out.svg, &out.png, &out.md] {
            assert!(std::fs::metadata(path).unwrap().len() > 100, "{} is empty", path.display());
        }
        let redrawn = figs.join(format!("{id}-again.svg"));
        plot::draw_from_csv(figure, &out.csv, &redrawn, None).unwrap();
        assert_eq!(std::fs::read(&out.svg).unwrap(), std::fs::read(&redrawn).unwrap(), "{id} does not redraw identically");
    }
    let fig3 = std::fs::read_to_string(figs.join("fig3.csv")).unwrap();
    let levels: std::collections::BTreeSet<&str> = fig3.lines().skip(1).filter(|l| l.starts_with("ticket,")).map(|l| l.split(',').nth(1).unwrap()).collect();
    assert!(levels.len() >= 3, "fig3 covers levels {levels:?}");
    let md = std::fs::read_to_string(figs.join("fig4.md")).unwrap();
    assert!(md.contains("| scale | `smoke` |") && md.contains("| lenet | reinit | 3 |"), "{md}");

    // compare: a table against itself changes nothing; a shifted mean is judged against the
    // trial spread of both tables (none with one curve; beyond noise with two identical ones).
    let table = figs.join("fig4.csv");
    let same = compare::compare(&table, &table).unwrap();
    assert!(same.contains("Nothing changed") && same.contains(", 0 changed.") && !same.contains("| Δ mean |"), "{same}");
    let text = std::fs::read_to_string(&table).unwrap();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let edited = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut lines = lines.clone();
        let mut cells: Vec<String> = lines[1].split(',').map(String::from).collect();
        edit(&mut cells);
        lines[1] = cells.join(",");
        let path = figs.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let shifted = edited("shifted.csv", &|cells| cells[col("final_test_acc_mean")] = "0.01".into());
    let diff = compare::compare(&table, &shifted).unwrap();
    assert!(diff.contains(" 1 changed: 0 beyond noise, 0 within noise, 1 with no noise estimate") && diff.contains("| ? |"), "{diff}");
    let two_trials = |cells: &mut Vec<String>| {
        cells[col("n")] = "2".into();
        let acc = cells[col("final_test_acc_mean")].clone();
        cells[col("final_test_acc_min")] = acc.clone();
        cells[col("final_test_acc_max")] = acc;
    };
    let (old2, new2) = (
        edited("old2.csv", &two_trials),
        edited("new2.csv", &|cells| {
            two_trials(cells);
            for c in ["final_test_acc_mean", "final_test_acc_min", "final_test_acc_max"] {
                cells[col(c)] = "0.01".into();
            }
        }),
    );
    let diff = compare::compare(&old2, &new2).unwrap();
    assert!(diff.contains("beyond noise") && diff.contains("**yes**") && diff.contains("Paper patterns"), "{diff}");
}

#[test]
fn sparse_kernels_train_like_dense_masked_training() {
    // A ticket at ~5% of weights (one-shot from the trained dense net of the finished run),
    // trained from theta0 with and without the sparse layers and updates.
    let arch = Architecture::of(spec().method.model);
    let ticket = run_dir(finished(), Procedure::Ticket, 0);
    let theta0 = load_weights(&ticket.init_path(), &arch).unwrap();
    let trained = load_weights(&ticket.final_path(0), &arch).unwrap();
    let rates = pruning::rates(&arch, &spec().method.pruning);
    let mask = pruning::magnitude_oneshot(&trained, &Mask::dense(&arch), &rates, 13);
    assert!(mask.remaining() < 0.06, "Pm {}", mask.remaining());
    let train = |sparse_kernels: bool| {
        let params = lth::nn::to_params(&arch, &theta0, &candle_core::Device::Cpu).unwrap();
        let config = lth::train::training::TrainConfig {
            iterations: 40,
            eval_every: 10,
            batch_size: 60,
            optimizer: (&spec().method.optimizer).into(),
            sparse_kernels,
            lr_schedule: None,
            start_iteration: 0,
        };
        struct Quiet;
        impl lth::train::training::Observer for Quiet {}
        let start = Start { model: spec().method.model, params: &params, mask: &mask };
        let streams = Streams { data_order: stream(5, Purpose::DataOrder), dropout: None, augment: None };
        let curve = lth::train::training::train(start, data(), &config, streams, &mut Quiet).unwrap();
        (curve, lth::nn::weights_of(&params).unwrap())
    };
    let (sparse_curve, sparse_weights) = train(true);
    let (dense_curve, dense_weights) = train(false);
    for (s, d) in sparse_curve.iter().zip(&dense_curve) {
        // Float summation order only: losses agree to 1e-4, accuracies to one example in 500.
        for (a, b) in [(s.train_loss, d.train_loss), (s.val_loss, d.val_loss), (s.test_loss, d.test_loss)] {
            assert!((a - b).abs() < 1e-4 || (a.is_nan() && b.is_nan()), "iteration {}: loss {a} vs {b}", s.iteration);
        }
        for (a, b) in [(s.val_acc, d.val_acc), (s.test_acc, d.test_acc)] {
            assert!((a - b).abs() <= 0.002 + 1e-12, "iteration {}: accuracy {a} vs {b}", s.iteration);
        }
    }
    for (name, s) in &sparse_weights {
        let d = &dense_weights[name];
        let worst = s.iter().zip(d).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{name}: weights differ by {worst}");
        if let Some(layer) = mask.layers.get(name) {
            assert!(s.iter().zip(&layer.keep).all(|(&w, &k)| k != 0.0 || w == 0.0), "{name}: a pruned weight is nonzero");
        }
    }
    // The next pruning round picks the same weights.
    let next = |w| pruning::magnitude_round(w, &mask, &rates);
    assert_eq!(next(&sparse_weights), next(&dense_weights), "masks differ");
}

/// A figure of `spec` drawn from `out` into a fresh folder: its table and provenance.
fn fig4_of(out: &Path, spec: &ExperimentSpec) -> lth::Result<(String, String)> {
    let figs = scratch("fig4");
    let made = figures::make(figures::find("fig4").unwrap(), &Store::new(out), std::slice::from_ref(spec), &smoke_provenance(), &figs)?;
    Ok((std::fs::read_to_string(made.csv).unwrap(), std::fs::read_to_string(made.md).unwrap()))
}

#[test]
fn a_figure_aggregates_exactly_the_runs_its_spec_expands_to() {
    // One results folder holding: the spec's runs, the same experiment with another learning
    // rate, and a one-off run with one more level.
    let out = scratch("mixed");
    run_all(&out);
    let (expected, _) = fig4_of(finished(), &spec()).unwrap();
    let edited_lr = spec_from(&TINY_LENET.replace("lr = 1.2e-3", "lr = 2e-3"));
    try_run(&out, &edited_lr).unwrap();
    try_run(&out, &spec_from(&TINY_LENET.replace("levels = 3", "levels = 4"))).unwrap();
    let (table, md) = fig4_of(&out, &spec()).unwrap();
    assert_eq!(table, expected, "the figure mixed in runs of other specs or levels");
    for planned in plan() {
        assert!(md.contains(&format!("`{}`", planned.spec.id())), "{} missing from the provenance:\n{md}", planned.spec.id());
    }
    for planned in edited_lr.plan(Scale::Smoke, None, DataSource::Real).unwrap() {
        assert!(!md.contains(&planned.spec.id().0), "{} is in the provenance", planned.spec.id());
    }
    // The other spec's runs are stale, listed, and left on disk until pruned.
    let status = lth::store::inventory::runs(&Store::new(&out), &[spec()]).unwrap();
    let stale: Vec<String> = status.iter().filter(|r| matches!(r.standing, lth::store::inventory::Standing::Stale(_))).map(|r| r.dir.id.0.clone()).collect();
    let old: Vec<String> = edited_lr.plan(Scale::Smoke, None, DataSource::Real).unwrap().iter().map(|r| r.spec.id().0).collect();
    assert_eq!(stale, {
        let mut o = old.clone();
        o.sort();
        o
    });
    assert!(old.iter().all(|id| out.join("runs").join(id).exists()));
}

/// Flips one byte of a file in place.
fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_run_files_are_named_and_never_drawn_or_trained_from() {
    let out = scratch("damaged");
    run_all(&out);
    let arch = Architecture::of(spec().method.model);
    let ticket = run_dir(&out, Procedure::Ticket, 0);
    let (table, _) = fig4_of(&out, &spec()).unwrap();

    // A curve cut inside its last number: refused by name, with the way to redo the level.
    let curve = ticket.curve_path(2);
    let original = std::fs::read(&curve).unwrap();
    std::fs::write(&curve, &original[..original.len() - 4]).unwrap();
    let message = fig4_of(&out, &spec()).unwrap_err().to_string();
    assert!(message.contains(&curve.display().to_string()) && message.contains(&format!("lth redo {}", ticket.level_dir(2).display())), "{message}");
    lth::store::runs::redo(&ticket.level_dir(2)).unwrap();
    run_all(&out);
    assert_eq!(std::fs::read(&curve).unwrap(), original, "the redone level differs");
    assert_eq!(fig4_of(&out, &spec()).unwrap().0, table);

    // Weights a later level trains from, one byte changed: named, nothing trained.
    flip_byte(&ticket.final_path(1), 5000);
    lth::store::runs::redo(&ticket.curve_path(2)).unwrap();
    assert!(!ticket.level_dir(2).exists(), "redo of a level's file removes its level");
    let message = try_run(&out, &spec()).unwrap_err().to_string();
    assert!(message.contains(&ticket.final_path(1).display().to_string()) && message.contains("SHA-256"), "{message}");
    assert!(!ticket.is_done(2), "trained from a damaged file");
    lth::store::runs::redo(&ticket.level_dir(1)).unwrap();
    run_all(&out);

    // theta0, one byte changed: the branches that read it refuse it.
    let init = ticket.init_path();
    flip_byte(&init, 3000);
    let reinit = run_dir(&out, Procedure::Reinit, 0);
    lth::store::runs::redo(&reinit.level_dir(2)).unwrap();
    let message = try_run(&out, &spec()).unwrap_err().to_string();
    assert!(message.contains(&init.display().to_string()), "{message}");
    lth::store::runs::redo(&init).unwrap();
    run_all(&out);

    // A dense mask planted in a pruned level, even with its marker rewritten to match, and a
    // mask of the wrong shape: refused, never trained from.
    let dense = Mask::dense(&arch);
    dense.save(&ticket.mask_path(2)).unwrap();
    ticket.mark_done(2).unwrap();
    lth::store::runs::redo(&ticket.level_dir(3)).unwrap();
    let message = try_run(&out, &spec()).unwrap_err().to_string();
    assert!(message.contains("mask.safetensors") && message.contains("level 2 of a ticket keeps"), "{message}");
    let mut wrong = Mask::load(&run_dir(finished(), Procedure::Ticket, 0).mask_path(2), &arch).unwrap();
    let layer = wrong.layers.get_mut("fc2.weight").unwrap();
    layer.shape = vec![layer.keep.len()];
    wrong.save(&ticket.mask_path(2)).unwrap();
    ticket.mark_done(2).unwrap();
    let message = try_run(&out, &spec()).unwrap_err().to_string();
    assert!(message.contains("mask.safetensors") && message.contains("shape"), "{message}");
    assert!(!ticket.is_done(3), "trained from a planted mask");
    lth::store::runs::redo(&ticket.level_dir(2)).unwrap();
    run_all(&out);
    assert_eq!(fig4_of(&out, &spec()).unwrap().0, table, "the repaired folder draws another table");
}

#[test]
fn a_control_started_before_its_ticket_names_the_command_to_run_first() {
    let out = scratch("no-ticket");
    let reinit = plan().into_iter().find(|r| r.spec.procedure == Procedure::Reinit).unwrap();
    let message = lth::lottery::procedure::run(&reinit, &Store::new(&out), data(), &candle_core::Device::Cpu, &Progress::new(0, 0)).unwrap_err().to_string();
    assert!(message.contains("`lth run experiments/lenet.toml --scale smoke --trial 0`"), "{message}");
    assert!(!message.contains("--only"), "{message}");
}

#[test]
fn a_failed_drawing_leaves_the_previous_figure_untouched() {
    let figs = scratch("atomic");
    let store = Store::new(finished());
    let figure = figures::find("fig3").unwrap();
    let made = figures::make(figure, &store, &[spec()], &smoke_provenance(), &figs).unwrap();
    let svg = std::fs::read(&made.svg).unwrap();
    // The PNG cannot be written (its folder does not exist): the SVG must not change either.
    std::fs::write(&made.svg, b"previous").unwrap();
    assert!(plot::draw_from_csv(figure, &made.csv, &made.svg, Some(&figs.join("missing/fig3.png"))).is_err());
    assert!(std::fs::read(&made.svg).unwrap() == b"previous", "a failed drawing replaced the SVG");
    let left: Vec<_> =
        std::fs::read_dir(&figs).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".tmp")).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    plot::draw_from_csv(figure, &made.csv, &made.svg, None).unwrap();
    assert!(std::fs::read(&made.svg).unwrap() == svg, "the redrawn SVG differs");
}

/// Every file under `base` with its bytes, by path within it, sorted.
fn files_under(base: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_spec_that_differs_only_in_its_name_copies_the_finished_levels_instead_of_training() {
    let out = scratch("twin");
    run_all(&out);
    // Mark the trained ticket's level 1 (a value training never gives, recorded by its marker),
    // so that a copy and a retraining can be told apart.
    let ticket = run_dir(&out, Procedure::Ticket, 0);
    let mut curve = ticket.load_curve(1).unwrap();
    curve.last_mut().unwrap().point.test_acc = 0.123456;
    lth::store::record::write_csv(&curve, &ticket.curve_path(1)).unwrap();
    ticket.mark_done(1).unwrap();

    let twin = spec_from(&TINY_LENET.replace("name = \"lenet\"", "name = \"lenet_twin\""));
    try_run(&out, &twin).unwrap();
    let fresh = scratch("twin-fresh");
    try_run(&fresh, &twin).unwrap();
    for planned in twin.plan(Scale::Smoke, None, DataSource::Real).unwrap() {
        let id = planned.spec.id().0;
        let (copied, trained) = (files_under(&out.join("runs").join(&id)), files_under(&fresh.join("runs").join(&id)));
        assert_eq!(copied.iter().map(|f| &f.0).collect::<Vec<_>>(), trained.iter().map(|f| &f.0).collect::<Vec<_>>(), "{id}");
        for ((name, a), (_, b)) in copied.iter().zip(&trained) {
            let marked = planned.spec.procedure == Procedure::Ticket && ["level-01/curve.csv", "level-01/done"].contains(&name.as_str());
            assert_eq!(a != b, marked, "{id}/{name}: a copied level is the training's bits; only the marked curve and its marker differ");
        }
    }
    let copy = Store::new(&out).existing(&twin.plan(Scale::Smoke, None, DataSource::Real).unwrap()[0].spec);
    let copied = copy.load_curve(1).unwrap();
    assert_eq!(copied.last().unwrap().point.test_acc, 0.123456, "level 1 was copied from the twin, not trained");
    assert!(copied.iter().all(|row| row.key.experiment == "lenet_twin"), "the copy's curve names its own experiment");
}
