//! A generated stand-in for CIFAR-10 in the exact binary format (a `.tar.gz` of
//! `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`), for machines without the
//! real data. It is learnable: each class has its own colour and stripe orientation and
//! frequency, with strong per-pixel noise on top. It goes through the same download
//! path as the real archive, from a local mirror folder. It is never mistaken for CIFAR-10:
//! runs made from it carry `data = synthetic` in their id, tables and figures.

use super::cifar10::{self, RECORD, TEST_FILE, TRAIN_FILES};
use super::fetch::{Checksum, RemoteFile, Source};
use crate::base::error::{IoContext, Result};
use crate::base::seeds::{self, Purpose};
use crate::ops::math;
use flate2::{write::GzEncoder, Compression};
use md5::Digest;
use rand::Rng;
use std::f32::consts::PI;
use std::path::{Path, PathBuf};

/// Records per batch file: 5 × 2,000 training images (so 5,000 remain after the 5,000-image
/// validation split) and 2,000 test images.
pub const PER_FILE: usize = 2_000;

/// One synthetic image of class `label` in CIFAR's record layout: a faint class-specific
/// colour cast and stripe pattern (orientation and frequency set by the class, phase random)
/// under heavy noise. One label in ten is replaced by a random class, so no network can get
/// everything right and the curves do not saturate at once.
fn record(label: u8, rng: &mut impl Rng) -> Vec<u8> {
    let c = label as f32;
    let angle = c * PI / 10.0;
    let frequency = 2.0 + (label % 5) as f32;
    let phase = rng.random_range(0.0..2.0 * PI);
    // The project's own sin/cos (`crate::ops::math`): libm's may differ in the last bit between
    // machines, and so would the images.
    let (sin, cos) = (|x: f32| math::sin(x as f64) as f32, |x: f32| math::cos(x as f64) as f32);
    let colour = [sin(c * 0.37), sin(c * 0.71 + 1.0), sin(c * 1.13 + 2.0)];
    let shown = if rng.random_bool(0.1) { rng.random_range(0..10u8) } else { label };
    let mut out = Vec::with_capacity(RECORD);
    out.push(shown);
    for channel in colour {
        for y in 0..32 {
            for x in 0..32 {
                let t = (x as f32 * cos(angle) + y as f32 * sin(angle)) * frequency * 2.0 * PI / 32.0 + phase;
                let value = 128.0 + 25.0 * channel + 35.0 * sin(t) + rng.random_range(-80.0..80.0);
                out.push(value.clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// The archive's bytes: deterministic for a given `seed`.
pub fn archive(per_file: usize, seed: u64) -> Result<Vec<u8>> {
    let mut rng = seeds::stream(seed, Purpose::Synthetic);
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let mut bytes = Vec::with_capacity(per_file * RECORD);
        for i in 0..per_file {
            bytes.extend(record((i % 10) as u8, &mut rng));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        let path = format!("cifar-10-batches-bin/{name}");
        tar.append_data(&mut header, path, bytes.as_slice()).map_err(|e| crate::Error::Invalid(format!("building the synthetic archive: {e}")))?;
    }
    let gz = tar.into_inner().and_then(|gz| gz.finish()).map_err(|e| crate::Error::Invalid(format!("building the synthetic archive: {e}")))?;
    Ok(gz)
}

/// Writes the synthetic archive into a local mirror under `cache` (once) and fetches it from
/// there through the normal path; returns the extracted batch folder.
pub fn fetch_cifar10(cache: &Path) -> Result<PathBuf> {
    let mirror = cache.join("synthetic-mirror");
    let path = mirror.join("cifar10").join(cifar10::ARCHIVE.name);
    let bytes = archive(PER_FILE, 0)?;
    if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
        // A new generator: drop what was extracted from the old archive.
        let _ = std::fs::remove_dir_all(cache.join("synthetic"));
        std::fs::create_dir_all(mirror.join("cifar10")).at(&mirror)?;
        super::fetch::write_atomic(&path, &bytes)?;
    }
    let md5: String = md5::Md5::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let file = RemoteFile { checksum: Checksum::Md5(Box::leak(md5.into_boxed_str())), ..cifar10::ARCHIVE };
    let source = Source { mirror: Some(mirror.display().to_string()), cache: cache.join("synthetic") };
    cifar10::fetch_all(&source, &file, PER_FILE)
}
