//! Copies of CIFAR-10 a user has (`--data folder:…`): image folders and archives of them, made
//! here with real PNG and JPEG encoders at a small size, and extracted official batch files with
//! an injected MD5 table. They load with the right labels, shapes and order, are decoded once,
//! are labelled in run ids, and every bad copy is refused with one line naming the file and
//! the fix. Runs on a copy name it in their tables, figures and provenance. The last test reads
//! the real JPEG copy in the mirror.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use flate2::{write::GzEncoder, Compression};
use image::{DynamicImage, ImageOutputFormat, Rgb, RgbImage};
use lth::base::spec::{Codec, DataSource, DatasetKind, ExperimentSpec, ImageCopy, Scale};
use lth::data::copies::{self, Expected};
use lth::data::image_folder::{Counts, CLASSES};
use lth::data::{self, cifar10, fetch::Source};
use lth::report::figures;
use lth_tests::scratch;
use std::path::{Path, PathBuf};

/// Small copies: 3 training and 2 test images per class.
const COUNTS: Counts = Counts { train: 3, test: 2 };
/// Written out of name order, so the loader's sort is what puts them in order.
const NAMES: [&str; 3] = ["b", "c", "a"];

fn expected() -> Expected<'static> {
    Expected { counts: COUNTS, official_md5: &cifar10::BATCH_MD5 }
}

/// The image at (split, class, rank of its name): red says which image it is, green and blue
/// say the column and row, so a swapped axis or channel shows.
fn pattern(split: usize, class: usize, rank: usize) -> RgbImage {
    RgbImage::from_fn(32, 32, |x, y| Rgb([(100 * split + 10 * class + rank) as u8, (x * 7) as u8, (y * 7) as u8]))
}

fn encode(image: DynamicImage, format: ImageOutputFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Writes an image-folder copy under `root/top` (no top folder if `top` is empty).
fn write_copy(root: &Path, top: &str, extension: &str) -> PathBuf {
    let base = root.join(top);
    for (split, name) in ["train", "test"].iter().enumerate() {
        let n = if split == 0 { COUNTS.train } else { COUNTS.test };
        for (class, class_name) in CLASSES.iter().enumerate() {
            let dir = base.join(name).join(class_name);
            std::fs::create_dir_all(&dir).unwrap();
            for file in NAMES.iter().take(n) {
                let rank = ["a", "b", "c"].iter().position(|n| n == file).unwrap();
                let image = DynamicImage::ImageRgb8(pattern(split, class, rank));
                let format = if extension == "png" { ImageOutputFormat::Png } else { ImageOutputFormat::Jpeg(95) };
                std::fs::write(dir.join(format!("{file}.{extension}")), encode(image, format)).unwrap();
            }
        }
    }
    // Beside the splits, as in fast.ai's archive: ignored.
    std::fs::write(base.join("labels.txt"), CLASSES.join("\n")).unwrap();
    base
}

/// Packs `dir` into `archive` under the name `inside` (gzip for .tgz).
fn pack(dir: &Path, inside: &str, archive: &Path) {
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(inside, dir).unwrap();
    let bytes = tar.into_inner().unwrap();
    let bytes = if archive.extension().is_some_and(|e| e == "tgz") {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        gz.finish().unwrap()
    } else {
        bytes
    };
    std::fs::write(archive, bytes).unwrap();
}

fn source(dir: &Path) -> Source {
    Source { mirror: None, cache: dir.join("cache") }
}

fn load(images: DataSource, source: &Source) -> data::RawDataset {
    data::load(DatasetKind::Cifar10, images, source).unwrap()
}

/// The refusal of a copy as one line, checked to be one line that names `names` and a fix.
fn refused(location: &Path, names: &str) -> String {
    let dir = location.parent().unwrap();
    let line = match copies::prepare(location.to_str().unwrap(), &source(dir), &expected()) {
        Ok(images) => panic!("{} was accepted as {images}", location.display()),
        Err(e) => e.to_string(),
    };
    assert!(!line.contains('\n') && line.contains(names) && line.contains("; "), "{line}");
    eprintln!("{line}");
    line
}

/// A PNG copy under `<scratch>/cifar10`, prepared: (scratch, copy folder, data source, its id).
fn png_copy(name: &str) -> (PathBuf, PathBuf, DataSource, ImageCopy) {
    let dir = scratch(name);
    let copy = write_copy(&dir, "cifar10", "png");
    let images = copies::prepare(copy.to_str().unwrap(), &source(&dir), &expected()).unwrap();
    let DataSource::Copy(id) = images else { panic!("{images}") };
    (dir, copy, images, id)
}

#[test]
fn a_png_folder_loads_with_labels_shapes_and_order_and_is_decoded_once() {
    let (dir, copy, images, id) = png_copy("png-copy");
    assert_eq!(id.codec, Codec::Png);
    let raw = load(images, &source(&dir));
    assert_eq!((raw.train.n, raw.test.n, raw.train.shape), (30, 20, [3, 32, 32]));
    // Classes interleaved in label order, each class's files by name: a of every class, then b…
    for (split, set) in [&raw.train, &raw.test].into_iter().enumerate() {
        let per_class = set.n / 10;
        for i in 0..set.n {
            // The test split has only "b" and "c" (ranks 1 and 2).
            let (class, rank) = (i % 10, i / 10 + NAMES.len() - per_class);
            assert_eq!(set.labels[i] as usize, class);
            let planes = &set.pixels[i * 3072..(i + 1) * 3072];
            assert_eq!(planes[0] as usize, 100 * split + 10 * class + rank, "image {i}");
            // Green plane at (y = 2, x = 5) holds the column, blue the row.
            assert_eq!((planes[1024 + 2 * 32 + 5], planes[2048 + 2 * 32 + 5]), (35, 14));
        }
    }
    // The same images from a plain .tar with no top folder; a different copy, so another id.
    let tar = dir.join("copy.tar");
    pack(&copy, ".", &tar);
    let from_tar = copies::prepare(tar.to_str().unwrap(), &source(&dir), &expected()).unwrap();
    assert_ne!(from_tar, images);
    let again = load(from_tar, &source(&dir));
    assert_eq!((again.train.pixels == raw.train.pixels, again.test.labels == raw.test.labels), (true, true));
    // Decoded once: a second prepare reads the cache, whose digests catch a label edited there.
    let folder = copies::cached(&source(&dir).cache, &id);
    let cached = folder.join(cifar10::TRAIN_FILES[0]);
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[0] = 9;
    std::fs::write(&cached, bytes).unwrap();
    assert_eq!(copies::prepare(copy.to_str().unwrap(), &source(&dir), &expected()).unwrap(), images);
    let line = data::load(DatasetKind::Cifar10, images, &source(&dir)).unwrap_err().to_string();
    assert!(line.contains(cifar10::TRAIN_FILES[0]) && line.contains("changed in the cache") && line.contains(&folder.display().to_string()), "{line}");
    // A decode by an lth that recorded no digests is decoded again, back to the copy's labels.
    std::fs::remove_file(folder.join(cifar10::DIGESTS)).unwrap();
    assert_eq!(copies::prepare(copy.to_str().unwrap(), &source(&dir), &expected()).unwrap(), images);
    assert_eq!(load(images, &source(&dir)).train.labels, raw.train.labels);
}

#[test]
fn a_jpeg_archive_loads_is_named_by_its_sha256_and_marked_lossy_in_run_ids() {
    let dir = scratch("jpeg-copy");
    let copy = write_copy(&dir.join("tree"), "", "jpg");
    let archive = dir.join("copy.tgz");
    pack(&copy, "cifar10", &archive);
    let images = copies::prepare(archive.to_str().unwrap(), &source(&dir), &expected()).unwrap();
    let DataSource::Copy(id) = images else { panic!("{images}") };
    assert_eq!((id.codec, id.hex()), (Codec::Jpeg, lth::base::files::digest_file::<sha2::Sha256>(&archive).unwrap()));
    let raw = load(images, &source(&dir));
    assert_eq!((raw.train.n, raw.test.n), (30, 20));
    // JPEG is lossy: close to the pattern, not equal to it.
    // The 12th image: the second file ("b") of class 1.
    let planes = &raw.train.pixels[11 * 3072..12 * 3072];
    assert!((planes[0] as i32 - 11).abs() <= 6 && (planes[1024 + 2 * 32 + 5] as i32 - 35).abs() <= 6, "{}", planes[0]);
    assert_eq!(raw.train.labels[11], 1);
    // Labelled everywhere: text form, title caveat, and a run id of its own.
    assert_eq!(images.to_string().parse::<DataSource>().unwrap(), images);
    assert!(images.caveat().unwrap().contains("JPEG copy") && images.caveat().unwrap().contains("lossy"));
    let spec = ExperimentSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/conv2.toml")).unwrap();
    let ids: Vec<String> =
        [DataSource::Real, DataSource::Synthetic, images].iter().map(|&d| spec.plan(Scale::Smoke, None, d).unwrap()[0].spec.id().0).collect();
    assert!(ids[2].starts_with(&format!("conv2-jpeg-copy-{}-smoke-ticket-t0-", &id.hex()[..8])), "{}", ids[2]);
    assert!(ids[0] != ids[2] && ids[1] != ids[2] && !ids[0].contains("copy"), "{ids:?}");
    // The ids of real and synthetic runs are as before copies existed (tests/goldens.txt has more).
    assert_eq!(ids[1], "conv2-synthetic-smoke-ticket-t0-29d15af961");
}

#[test]
fn runs_on_a_copy_name_it_in_their_table_figure_titles_and_provenance() {
    let (dir, _, images, id) = png_copy("copy-figure");
    // Conv-2 at a size the 30 + 20 images allow: two levels of two iterations.
    let mut spec = ExperimentSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/conv2.toml")).unwrap();
    spec.method.validation_size = 10;
    spec.method.batch_size = 10;
    let sizes = spec.scales.get_mut(&Scale::Smoke).unwrap();
    (sizes.iterations, sizes.eval_every, sizes.levels, sizes.train_subset, sizes.eval_subset) = (2, 1, 1, None, None);
    (sizes.reinit_levels, sizes.random_prune_levels, sizes.oneshot_levels) = (vec![1], vec![], vec![]);
    let plan = spec.plan(Scale::Smoke, None, images).unwrap();
    let data = load(images, &source(&dir)).prepare(&plan[0].spec, &candle_core::Device::Cpu).unwrap();
    let store = lth::store::runs::Store::new(dir.join("results"));
    for planned in &plan {
        lth::lottery::procedure::run(planned, &store, &data, &candle_core::Device::Cpu, &lth::train::progress::Progress::new(0, 0)).unwrap();
    }
    let figure = figures::Figure { id: "figcopy", experiments: &["conv2"], title: "Conv-2", kind: figures::Kind::Sparsity(&["ticket", "reinit"]), notes: "" };
    let provenance = figures::Provenance {
        command: "test".into(),
        scale: Scale::Smoke,
        trials: None,
        data: images,
        device: "cpu".into(),
        machine: "test".into(),
        git_revision: "test".into(),
    };
    let out = figures::make(&figure, &store, &[spec], &provenance, &dir.join("figures")).unwrap();
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    assert!(read(&out.csv).lines().skip(1).all(|row| row.starts_with(&format!("conv2,png-copy-{},", id.hex()))), "{}", read(&out.csv));
    assert!(read(&out.svg).contains(&format!("PNG copy {}", &id.hex()[..8])), "the heading names the copy");
    let md = read(&out.md);
    assert!(md.contains("not the official files") && md.contains(&format!("SHA-256 `{}`", id.hex())) && md.contains("png-copy-"), "{md}");
    assert!(!md.contains("lossy"), "a PNG copy is lossless: {md}");
}

#[test]
fn each_bad_copy_is_refused_in_one_line_naming_the_file_and_the_fix() {
    let dir = scratch("bad-copies");
    let fresh = |name: &str| write_copy(&dir.join(name), "cifar10", "png");
    let png = |image: DynamicImage| encode(image, ImageOutputFormat::Png);

    let copy = fresh("missing");
    std::fs::remove_dir_all(copy.join("test/frog")).unwrap();
    let line = refused(&copy, "cifar10: has no test/frog/ folder");
    assert!(line.contains("ten classes") && line.contains("airplane"), "{line}");

    let copy = fresh("too-few");
    std::fs::remove_file(copy.join("train/dog/a.png")).unwrap();
    refused(&copy, "train/dog/ holds 2 images where CIFAR-10 has 3");

    let copy = fresh("size");
    std::fs::write(copy.join("train/cat/b.png"), png(DynamicImage::ImageRgb8(RgbImage::new(31, 32)))).unwrap();
    let line = refused(&copy, "train/cat/b.png");
    assert!(line.contains("31x32") && line.contains("32x32 8-bit RGB"), "{line}");

    let copy = fresh("grey");
    std::fs::write(copy.join("test/ship/b.png"), png(DynamicImage::new_luma8(32, 32))).unwrap();
    assert!(refused(&copy, "test/ship/b.png").contains("L8"));

    let copy = fresh("rgba");
    std::fs::write(copy.join("test/ship/b.png"), png(DynamicImage::new_rgba8(32, 32))).unwrap();
    assert!(refused(&copy, "test/ship/b.png").contains("Rgba8"));

    let copy = fresh("not-image");
    std::fs::write(copy.join("train/horse/notes.txt"), "hello").unwrap();
    assert!(refused(&copy, "train/horse/notes.txt").contains("not a PNG or JPEG"));

    let copy = fresh("garbage");
    std::fs::write(copy.join("train/horse/a.png"), "not a png").unwrap();
    assert!(refused(&copy, "train/horse/a.png").contains("cannot be decoded as PNG"));

    let copy = fresh("class");
    std::fs::create_dir_all(copy.join("train/plane")).unwrap();
    std::fs::write(copy.join("train/plane/a.png"), png(DynamicImage::ImageRgb8(RgbImage::new(32, 32)))).unwrap();
    assert!(refused(&copy, "train/plane/a.png").contains("`plane` is not a CIFAR-10 class folder"));

    // Truncated archives, gzipped and plain, cut inside an image.
    for extension in ["tgz", "tar"] {
        let archive = dir.join(format!("whole.{extension}"));
        pack(&fresh(&format!("truncated-{extension}")), "cifar10", &archive);
        let bytes = std::fs::read(&archive).unwrap();
        let cut = dir.join(format!("cut.{extension}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2 + 100]).unwrap();
        assert!(refused(&cut, cut.to_str().unwrap()).contains("truncated"));
    }
    assert!(refused(&dir.join("nowhere.tgz"), "nowhere.tgz").contains("no such file or folder"));
}

#[test]
fn an_extracted_official_copy_is_verified_file_by_file_and_installed() {
    let dir = scratch("official");
    let batches = dir.join("copy/cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).unwrap();
    let mut table = Vec::new();
    for (i, (name, _)) in cifar10::BATCH_MD5.iter().enumerate() {
        let records: Vec<u8> = (0..4).flat_map(|r| std::iter::once(((i + r) % 10) as u8).chain(std::iter::repeat_n(i as u8, cifar10::RECORD - 1))).collect();
        std::fs::write(batches.join(name), &records).unwrap();
        table.push((*name, lth::base::files::digest_file::<md5::Md5>(&batches.join(name)).unwrap()));
    }
    let table: Vec<(&str, &str)> = table.iter().map(|(n, m)| (*n, m.as_str())).collect();
    let expected = Expected { counts: COUNTS, official_md5: &table };
    // The folder above cifar-10-batches-bin and the folder itself both work.
    for location in [dir.join("copy"), batches.clone()] {
        let images = copies::prepare(location.to_str().unwrap(), &source(&dir), &expected).unwrap();
        assert_eq!(images, DataSource::Real, "verified official files are the real data");
    }
    let (train, test) = cifar10::load_dir(&cifar10::extracted_dir(&source(&dir).cache)).unwrap();
    assert_eq!((train.n, test.n, test.labels.clone()), (20, 4, vec![5, 6, 7, 8]));
    // One changed byte in one file: refused, naming that file, and nothing installed from it.
    let mut bytes = std::fs::read(batches.join("data_batch_3.bin")).unwrap();
    bytes[100] ^= 1;
    std::fs::write(batches.join("data_batch_3.bin"), bytes).unwrap();
    let line = copies::prepare(batches.to_str().unwrap(), &source(&dir.join("other")), &expected).unwrap_err().to_string();
    assert!(line.contains("data_batch_3.bin") && line.contains("MD5") && !line.contains('\n'), "{line}");
    assert!(!cifar10::extracted_dir(&source(&dir.join("other")).cache).exists());
    std::fs::remove_file(batches.join("test_batch.bin")).unwrap();
    let line =
        copies::prepare(batches.to_str().unwrap(), &source(&dir), &Expected { counts: COUNTS, official_md5: &cifar10::BATCH_MD5 }).unwrap_err().to_string();
    assert!(line.contains("data_batch_1.bin") && line.contains("not the published 5dd7e06a14cb22eb9f671a540d1b7c25"), "the real table is used: {line}");
}

#[test]
fn the_jpeg_copy_in_the_mirror_loads_all_60000_images() {
    let dir = scratch("mirror-jpeg");
    let source = Source { mirror: Some(lth_tests::mirror()), cache: dir.join("cache") };
    let started = std::time::Instant::now();
    let images = copies::prepare("cifar10-jpeg/cifar10-jpeg.tgz", &source, &copies::CIFAR10).unwrap();
    let decoded = started.elapsed();
    assert_eq!(images.to_string(), "jpeg-copy-cb6c50520509605d4bd1856cb7eaba797dabcec3c19d93ce945b0ec1aee34a5f");
    let raw = load(images, &source);
    assert_eq!((raw.train.n, raw.test.n, raw.train.pixels.len()), (50_000, 10_000, 50_000 * 3072));
    for class in 0..10u8 {
        assert_eq!(raw.train.labels.iter().filter(|&&l| l == class).count(), 5_000);
        assert_eq!(raw.test.labels.iter().filter(|&&l| l == class).count(), 1_000);
    }
    // Interleaved, so a scale's training subset (a prefix) holds every class alike.
    assert_eq!(raw.train.labels[..20], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    eprintln!("decoded and cached the 60,000-image JPEG copy in {decoded:.1?}; loaded in {:.1?} more", started.elapsed() - decoded);
}
