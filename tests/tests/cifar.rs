//! CIFAR-10 and the Conv-2/4/6 family on the synthetic set in the real binary format: the
//! format and channel order, checksum, size and cached-pixel errors, the convolution's gradients against
//! candle's conv2d, the paper's Pm grid, learning above chance, and the pruning invariants and
//! determinism of the LeNet slice, now for convolution kernels.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use candle_core::{Device, Tensor, Var};
use lth::base::spec::{DataSource, ExperimentSpec, ModelKind, Procedure, Scale};
use lth::data::cifar10::{self, RECORD};
use lth::data::fetch::{Checksum, RemoteFile, Source};
use lth::data::{self, synthetic};
use lth::nn::{Architecture, LayerKind};
use lth::ops::im2col::conv3x3;
use lth::sparsity::masks::Mask;
use lth::sparsity::pruning;
use lth::store::runs::{load_weights, Store};
use lth::train::progress::Progress;
use lth_tests::scratch;
use std::path::Path;

/// Extracts a synthetic archive with `per_file` records per batch into a fresh folder.
fn extracted(per_file: usize) -> std::path::PathBuf {
    let dir = scratch("cifar");
    let mirror = dir.join("mirror");
    std::fs::create_dir_all(mirror.join("cifar10")).unwrap();
    let bytes = synthetic::archive(per_file, 7).unwrap();
    std::fs::write(mirror.join("cifar10/cifar-10-binary.tar.gz"), &bytes).unwrap();
    let md5 = md5_hex(&bytes);
    let file = RemoteFile { checksum: Checksum::Md5(Box::leak(md5.into_boxed_str())), ..cifar10::ARCHIVE };
    let source = Source { mirror: Some(mirror.display().to_string()), cache: dir.join("cache") };
    cifar10::fetch_all(&source, &file, per_file).unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_archive_has_the_real_layout_and_channel_order() {
    let dir = extracted(30);
    for name in cifar10::TRAIN_FILES.iter().chain([&cifar10::TEST_FILE]) {
        assert_eq!(std::fs::metadata(dir.join(name)).unwrap().len() as usize, 30 * RECORD, "{name}");
    }
    // A hand-made record: label 3, red plane 10, green 20, blue 30, except pixel (y=1, x=2).
    let mut record = vec![3u8];
    for (channel, value) in [10u8, 20, 30].iter().enumerate() {
        let mut plane = vec![*value; 1024];
        plane[32 + 2] = 200 + channel as u8;
        record.extend(plane);
    }
    std::fs::write(dir.join(cifar10::TEST_FILE), record.repeat(30)).unwrap();
    // Written by hand, so recorded by hand (every writer of a batch folder does so).
    cifar10::record_digests(&dir).unwrap();
    let (train, test) = cifar10::load_dir(&dir).unwrap();
    assert_eq!((train.n, test.n, test.shape), (150, 30, [3, 32, 32]));
    assert_eq!(test.labels[0], 3);
    let raw = data::RawDataset { kind: lth::base::spec::DatasetKind::Cifar10, train, test };
    let spec = experiment("conv2");
    let mut run = spec.plan(Scale::Smoke, None, DataSource::Synthetic).unwrap()[0].spec.clone();
    run.method.validation_size = 50;
    run.train_subset = None;
    run.eval_subset = None;
    let data = raw.prepare(&run, &Device::Cpu).unwrap();
    assert_eq!(data.test.images.dims(), &[30, 3, 32, 32]);
    // Channel 0 is red, and (row 1, column 2) is height then width: no transposition.
    let norm = &spec.method.normalisation;
    let pixel = |c: usize, y: usize, x: usize| data.test.images.get(0).unwrap().get(c).unwrap().get(y).unwrap().get(x).unwrap().to_scalar::<f32>().unwrap();
    for (c, value) in [10.0f32, 20.0, 30.0].iter().enumerate() {
        let expected = (value / 255.0 - norm.mean[c]) / norm.std[c];
        assert!((pixel(c, 0, 0) - expected).abs() < 1e-6, "channel {c}");
        let marked = ((200 + c) as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        assert!((pixel(c, 1, 2) - marked).abs() < 1e-6, "channel {c} at (1, 2)");
    }
}

#[test]
fn a_wrong_checksum_a_truncated_file_and_a_wrong_size_are_named() {
    let dir = scratch("cifar-bad");
    let mirror = dir.join("mirror");
    std::fs::create_dir_all(mirror.join("cifar10")).unwrap();
    let bytes = synthetic::archive(20, 1).unwrap();
    std::fs::write(mirror.join("cifar10/cifar-10-binary.tar.gz"), &bytes).unwrap();
    let source = Source { mirror: Some(mirror.display().to_string()), cache: dir.join("cache") };
    // The real archive's MD5 does not match the synthetic bytes.
    let message = cifar10::fetch_all(&source, &cifar10::ARCHIVE, 20).unwrap_err().to_string();
    assert!(message.contains("cifar-10-binary.tar.gz") && message.contains("checksum mismatch") && message.contains("md5"), "{message}");

    let batches = extracted(20);
    let path = batches.join("data_batch_3.bin");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 100]).unwrap();
    let message = cifar10::load_dir(&batches).unwrap_err().to_string();
    assert!(message.contains("data_batch_3.bin") && message.contains("changed in the cache"), "{message}");
    cifar10::record_digests(&batches).unwrap();
    let message = cifar10::load_dir(&batches).unwrap_err().to_string();
    assert!(message.contains("data_batch_3.bin") && message.contains("whole number"), "{message}");
    std::fs::write(&path, &full[..RECORD * 19]).unwrap();
    let message = cifar10::check_sizes(&batches, 20).unwrap_err().to_string();
    assert!(message.contains("data_batch_3.bin") && message.contains("truncated"), "{message}");
}

#[test]
fn changed_pixels_in_the_cache_are_refused_and_a_cache_without_digests_is_extracted_again() {
    let dir = scratch("cifar-cache");
    let source = Source { mirror: None, cache: dir.join("cache") };
    let original = data::load(lth::base::spec::DatasetKind::Cifar10, DataSource::Synthetic, &source).unwrap();
    let batches = synthetic::fetch_cifar10(&source.cache).unwrap();
    // One pixel byte of the extracted synthetic set: one line naming the file and the fix.
    let path = batches.join("data_batch_2.bin");
    let bytes = std::fs::read(&path).unwrap();
    let mut changed = bytes.clone();
    changed[RECORD * 7 + 100] ^= 0x10;
    std::fs::write(&path, &changed).unwrap();
    let line = data::load(lth::base::spec::DatasetKind::Cifar10, DataSource::Synthetic, &source).unwrap_err().to_string();
    assert!(line.contains("data_batch_2.bin") && line.contains("changed in the cache") && line.contains("delete it") && !line.contains('\n'), "{line}");
    // A cache as an lth without digests left it (and its changed pixel): extracted again, not trusted.
    std::fs::remove_file(batches.join(cifar10::DIGESTS)).unwrap();
    let again = data::load(lth::base::spec::DatasetKind::Cifar10, DataSource::Synthetic, &source).unwrap();
    assert!(again.train.pixels == original.train.pixels && again.test.pixels == original.test.pixels);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // Nothing is left staged in the cache.
    let leftovers: Vec<_> =
        std::fs::read_dir(batches.parent().unwrap()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn conv3x3_matches_candles_conv2d_forward_and_backward() {
    let dev = Device::Cpu;
    let mut rng = lth::base::seeds::stream(5, lth::base::seeds::Purpose::Init);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0)).collect() };
    // 11 images span two of the kernel's groups of 8 (the groups' gradients are summed).
    for (n, c, h, w, o) in [(3, 5, 7, 6, 4), (11, 3, 5, 4, 6)] {
        let xs = Var::from_vec(random(n * c * h * w), (n, c, h, w), &dev).unwrap();
        let k = Var::from_vec(random(o * c * 9), (o, c, 3, 3), &dev).unwrap();
        let b = Var::from_vec(random(o), o, &dev).unwrap();
        let upstream = Tensor::from_vec(random(n * o * h * w), (n, o, h, w), &dev).unwrap();
        let ours = conv3x3(xs.as_tensor(), k.as_tensor(), b.as_tensor()).unwrap();
        let reference = xs.conv2d(k.as_tensor(), 1, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, o, 1, 1)).unwrap()).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{what}: max difference {diff}");
        };
        close(&ours, &reference, "forward");
        let grads_ours = ours.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let grads_ref = reference.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for (var, name) in [(&xs, "input"), (&k, "kernel"), (&b, "bias")] {
            close(grads_ours.get(var.as_tensor()).unwrap(), grads_ref.get(var.as_tensor()).unwrap(), name);
        }
    }
}

#[test]
fn the_pm_grid_matches_the_paper() {
    let pm = |kind: ModelKind, conv: f64, rounds: usize| {
        let arch = Architecture::of(kind);
        let spec = lth::base::spec::PruningSpec { scope: lth::base::spec::PruningScope::Layerwise, conv: Some(conv), fc: 0.2, output: 0.1 };
        let rates = pruning::rates(&arch, &spec);
        let kept: usize = arch.prunable().zip(&rates).map(|(p, (_, r))| pruning::survivors_after(p.numel(), *r, rounds)).sum();
        100.0 * kept as f64 / arch.n_weights() as f64
    };
    // docs/paper.md §2 [derived]: Conv-2 8.8% after 11 rounds and 4.6% after 14; Conv-4 11.1% after
    // 11 and 9.2% after 12.
    for (kind, rounds, expected) in [(ModelKind::Conv2, 11, 8.8), (ModelKind::Conv2, 14, 4.6), (ModelKind::Conv4, 11, 11.1), (ModelKind::Conv4, 12, 9.2)] {
        let got = pm(kind, 0.1, rounds);
        assert!((got - expected).abs() <= 0.1, "{kind:?} after {rounds} rounds: {got:.2}%");
    }
}

fn experiment(name: &str) -> ExperimentSpec {
    ExperimentSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../experiments/{name}.toml"))).unwrap()
}

/// Runs the smoke-scale ticket run of `name` on the synthetic set into `out`, levels 0..=`levels`.
fn ticket_run(name: &str, levels: usize, out: &Path) -> (ExperimentSpec, lth::store::runs::RunDir) {
    let spec = experiment(name);
    let mut planned = spec.plan(Scale::Smoke, None, DataSource::Synthetic).unwrap().remove(0);
    assert_eq!(planned.spec.procedure, Procedure::Ticket);
    planned.levels.truncate(levels + 1);
    let data = synthetic_raw().prepare(&planned.spec, &Device::Cpu).unwrap();
    let store = Store::new(out);
    lth::lottery::procedure::run(&planned, &store, &data, &Device::Cpu, &Progress::new(0, 0)).unwrap();
    let dir = store.existing(&planned.spec);
    (spec, dir)
}

/// The synthetic set, generated and loaded once per test process.
fn synthetic_raw() -> &'static data::RawDataset {
    static RAW: std::sync::OnceLock<data::RawDataset> = std::sync::OnceLock::new();
    RAW.get_or_init(|| {
        let source = Source { mirror: None, cache: lth_tests::data_cache() };
        data::load(lth::base::spec::DatasetKind::Cifar10, DataSource::Synthetic, &source).unwrap()
    })
}

fn final_test_acc(dir: &lth::store::runs::RunDir, level: usize) -> f64 {
    let curve = std::fs::read_to_string(dir.curve_path(level)).unwrap();
    let last = curve.lines().last().unwrap();
    last.split(',').last().unwrap().parse().unwrap()
}

#[test]
fn every_conv_network_learns_well_above_chance_at_smoke_scale() {
    // Chance is 10%. The smoke test set has 200 images, so the standard deviation of a chance
    // accuracy is sqrt(0.1 · 0.9 / 200) = 2.1 points; "well above chance" is more than four of
    // them (18.5%). 12 iterations (720 examples) reach 20-55% on this set.
    let threshold = 0.1 + 4.0 * (0.1f64 * 0.9 / 200.0).sqrt();
    for name in ["conv2", "conv4", "conv6"] {
        let (_, dir) = ticket_run(name, 0, &scratch(name));
        let acc = final_test_acc(&dir, 0);
        assert!(acc > threshold, "{name}: test accuracy {acc} after the smoke budget (threshold {threshold:.3})");
    }
}

#[test]
fn conv_kernels_keep_the_pruning_invariants_and_runs_are_deterministic() {
    let (out_a, out_b) = (scratch("conv-a"), scratch("conv-b"));
    let (spec, a) = ticket_run("conv2", 2, &out_a);
    let (_, b) = ticket_run("conv2", 2, &out_b);
    let arch = Architecture::of(spec.method.model);
    let theta0 = load_weights(&a.init_path(), &arch).unwrap();
    let mut previous = Mask::dense(&arch);
    for level in 0..=2 {
        for file in [a.mask_path(level), a.final_path(level), a.curve_path(level)] {
            let other = b.dir.join(file.strip_prefix(&a.dir).unwrap());
            assert!(std::fs::read(&file).unwrap() == std::fs::read(&other).unwrap(), "{} differs between identical runs", file.display());
        }
        let mask = Mask::load(&a.mask_path(level), &arch).unwrap();
        assert!(mask.is_subset_of(&previous));
        let trained = load_weights(&a.final_path(level), &arch).unwrap();
        for p in arch.prunable() {
            let rate = match p.prunable {
                Some(LayerKind::Conv) => 0.1,
                Some(LayerKind::Fc) => 0.2,
                _ => 0.1,
            };
            let layer = &mask.layers[&p.name];
            assert_eq!(layer.remaining(), pruning::survivors_after(p.numel(), rate, level), "{} level {level}", p.name);
            assert!(layer.keep.iter().zip(&trained[&p.name]).all(|(&k, &w)| k == 1.0 || w == 0.0), "{}: a pruned weight moved", p.name);
        }
        let (start_mask, start) = lth::lottery::procedure::level_start(
            &experiment("conv2").plan(Scale::Smoke, None, DataSource::Synthetic).unwrap()[0].spec,
            &arch,
            &a,
            &a,
            &theta0,
            level,
        )
        .unwrap();
        assert_eq!(start_mask, mask);
        assert!(start == theta0, "level {level} does not restart from theta0");
        previous = mask;
    }
}
