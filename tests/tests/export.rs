//! Tickets you can ship: an exported level reads back to the same ticket, evaluates to the run's
//! final test accuracy exactly, is smaller than the dense file once sparse enough, and a
//! corrupt or mismatched file is one error naming it.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::base::spec::{DataSource, ExperimentSpec, Scale};
use lth::data::Dataset;
use lth::store::runs::{RunDir, Store};
use lth::tools::export::{self, Ticket};
use lth_tests::{run_smoke, scratch, smoke_data, TINY_LENET};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn spec() -> ExperimentSpec {
    let path = scratch("export-spec").join("lenet.toml");
    std::fs::write(&path, TINY_LENET).unwrap();
    ExperimentSpec::load(&path).unwrap()
}

fn finished() -> &'static (Dataset, Store) {
    static OUT: OnceLock<(Dataset, Store)> = OnceLock::new();
    OUT.get_or_init(|| {
        let data = smoke_data(&spec());
        let store = run_smoke(&spec(), &data);
        (data, store)
    })
}

fn ticket_run() -> RunDir {
    let plan = spec().plan(Scale::Smoke, None, DataSource::Real).unwrap();
    finished().1.existing(&plan[0].spec)
}

fn exported(level: usize) -> (Ticket, PathBuf) {
    let ticket = export::ticket_of(&ticket_run(), level).unwrap();
    let path = scratch("export").join(format!("level-{level}.sparse.safetensors"));
    export::write(&ticket, &path).unwrap();
    (ticket, path)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn an_exported_ticket_reads_back_and_scores_the_runs_final_test_accuracy_exactly() {
    let (data, _) = finished();
    for level in 0..=3 {
        let (ticket, path) = exported(level);
        let loaded = export::load(&path).unwrap();
        assert_eq!(loaded, ticket, "level {level} does not read back as written");
        let curve = ticket_run().load_curve(level).unwrap();
        let (_, acc) = export::evaluate(&loaded, data, &candle_core::Device::Cpu, true).unwrap();
        assert_eq!(acc, curve.last().unwrap().point.test_acc, "level {level}");
        // The trained weights themselves, not just the score: the same bits where kept.
        let trained = ticket_run().load_final(level, &lth::nn::Architecture::of(loaded.spec.method.model)).unwrap();
        for (name, values) in &loaded.weights {
            let keep = loaded.mask.layers.get(name).map(|l| &l.keep);
            for (i, &v) in values.iter().enumerate() {
                let expected = if keep.is_none_or(|k| k[i] != 0.0) { trained[name][i] } else { 0.0 };
                assert_eq!(v.to_bits(), expected.to_bits(), "{name}[{i}] at level {level}");
            }
        }
    }
}

#[test]
fn the_export_is_smaller_than_the_dense_file_below_two_thirds_of_the_weights() {
    let run = ticket_run();
    // Pm 100%: 6 bytes per kept weight against 4, larger; Pm 51% (level 3): smaller.
    let (_, dense_level) = exported(0);
    assert!(size(&dense_level) > size(&run.final_path(0)));
    let (ticket, sparse_level) = exported(3);
    assert!(ticket.mask.remaining() < 0.52);
    assert!(size(&sparse_level) < size(&run.final_path(3)), "{} >= {}", size(&sparse_level), size(&run.final_path(3)));
    // In memory the sparse kernels need a layer below 35% (`SPARSE_BELOW`): at 51% all is dense.
    let cpu = candle_core::Device::Cpu;
    assert_eq!(export::parameter_bytes(&ticket, &cpu, true), export::parameter_bytes(&ticket, &cpu, false));
}

/// The one-line error of loading `bytes` as an export.
fn refused(bytes: &[u8]) -> String {
    let path = scratch("export-bad").join("model.sparse.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let message = export::load(&path).expect_err("a bad export was accepted").to_string();
    assert!(message.starts_with(&path.display().to_string()) && !message.contains('\n') && message.contains("lth export"), "{message}");
    message
}

/// `bytes` with `from` replaced by `to` (the same length, so the header's offsets still hold).
fn edited(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap_or_else(|| panic!("`{from}` not in the file"));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

#[test]
fn a_corrupt_or_mismatched_export_is_one_line_naming_the_file() {
    let (_, path) = exported(3);
    let bytes = std::fs::read(&path).unwrap();
    assert!(refused(&bytes[..bytes.len() / 2]).contains("not a safetensors file"));
    assert!(refused(b"not a model").contains("not a safetensors file"));
    assert!(refused(&edited(&bytes, "lth-sparse-ticket/2", "lth-sparse-ticket/9")).contains("lth-sparse-ticket/9"));
    // Another architecture in the metadata than the tensors hold (JSON allows the padding).
    let message = refused(&edited(&bytes, r#"lenet_300_100\""#, r#"conv2\"        "#));
    assert!(message.contains("no tensor `conv") && message.contains("Conv2"), "{message}");
    let message = refused(&edited(&bytes, "fc1.weight.row_offsets", "fc1.weight.row_offsetz"));
    assert!(message.contains("no tensor `fc1.weight.row_offsets`"), "{message}");
    // A column index past its row: damaged indices are refused, never scattered out of bounds.
    let message = refused(&with_tensor(&bytes, "fc2.weight.columns", |columns| columns[..2].copy_from_slice(&u16::MAX.to_le_bytes())));
    assert!(message.contains("`fc2.weight.columns` holds column 65535 in row 0"), "{message}");
}

/// Issue #29: a flipped bit in a kept weight used to pass `lth infer`, and an edited accuracy in
/// the metadata made it blame the dataset. The digest refuses both, naming the file.
#[test]
fn a_changed_weight_or_metadata_value_is_refused_by_the_digest() {
    let (ticket, path) = exported(3);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(export::load(&path).unwrap(), ticket);
    let flipped = with_tensor(&bytes, "fc1.weight.values", |values| values[5] ^= 0x01);
    assert!(refused(&flipped).contains("does not match its recorded digest"), "a flipped weight bit");
    let acc = format!("\"final_test_acc\":\"{}", ticket.final_test_acc);
    let digit = acc.chars().last().unwrap();
    let other = if digit == '1' { '2' } else { '1' };
    let changed = format!("{}{other}", &acc[..acc.len() - 1]);
    assert!(refused(&edited(&bytes, &acc, &changed)).contains("does not match its recorded digest"), "an edited accuracy");
    // A file of the first format (no digest) is refused by its format, and exported again.
    let message = refused(&edited(&bytes, "lth-sparse-ticket/2", "lth-sparse-ticket/1"));
    assert!(message.contains("format `lth-sparse-ticket/1`"), "{message}");
}

/// `bytes` with the data of tensor `name` changed by `change`, metadata kept.
fn with_tensor(bytes: &[u8], name: &str, change: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        file.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    let target = tensors.iter_mut().find(|t| t.0 == name).unwrap();
    change(&mut target.3);
    let views = tensors.iter().map(|(n, dtype, shape, data)| (n.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap()));
    safetensors::serialize(views, header.metadata().clone()).unwrap()
}

/// The deep nets: a rewinding ResNet-18 ticket (synthetic CIFAR-10, smoke scale) keeps
/// BatchNorm's running statistics in θk, its pruned level starts from θk, and its export (with
/// BatchNorm kept, not folded) scores the run's final test accuracy exactly.
#[test]
fn a_rewound_resnet_ticket_ships_with_its_batchnorm_state() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/resnet18_lr0.1_rewind500.toml");
    let spec = ExperimentSpec::load(&path).unwrap();
    let data = smoke_data(&spec);
    let ticket = spec.plan(Scale::Smoke, None, DataSource::Synthetic).unwrap().into_iter().next().unwrap();
    let store = Store::new(scratch("resnet-rewind"));
    lth::lottery::procedure::run(&ticket, &store, &data, &candle_core::Device::Cpu, &lth::train::progress::Progress::new(0, 0)).unwrap();
    let run = store.existing(&ticket.spec);
    let arch = lth::nn::Architecture::of(spec.method.model);
    let theta0 = run.load_init(&arch).unwrap();
    let theta_k = run.load_rewind(&arch).unwrap();
    let moved = |suffix: &str| theta_k.iter().filter(|(n, _)| n.ends_with(suffix)).any(|(n, v)| v != &theta0[n]);
    assert!(moved(".running_mean") && moved(".running_var"), "θk holds BatchNorm's running statistics after step k");
    let (_, start) = lth::lottery::procedure::level_start(&ticket.spec, &arch, &run, &run, &theta0, 1).unwrap();
    assert_eq!(start, theta_k);
    let exported = export::ticket_of(&run, 1).unwrap();
    let file = scratch("resnet-export").join("resnet.sparse.safetensors");
    export::write(&exported, &file).unwrap();
    let (_, acc) = export::evaluate(&export::load(&file).unwrap(), &data, &candle_core::Device::Cpu, true).unwrap();
    assert_eq!(acc, run.load_curve(1).unwrap().last().unwrap().point.test_acc);
}

/// Issue #29: `.safetensors` files were written 0600 whatever the umask (candle's writer) while
/// the rest of a run was 0644, so another user of a shared results folder was told the file was
/// "damaged". Every file of a run now has the mode the umask gives a new file.
#[cfg(unix)]
#[test]
fn every_file_of_a_run_has_the_mode_of_its_spec_file() {
    use std::os::unix::fs::PermissionsExt;
    let run = ticket_run();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let spec_mode = mode(&run.dir.join("spec.json"));
    let mut tensors = 0;
    let mut files = vec![run.dir.clone()];
    while let Some(dir) = files.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.push(path);
                continue;
            }
            tensors += usize::from(path.extension().is_some_and(|e| e == "safetensors"));
            assert_eq!(mode(&path), spec_mode, "{}", path.display());
        }
    }
    assert!(tensors >= 4, "only {tensors} tensor files in the run");
}
