//! Copies of CIFAR-10 that a user already has, named by `--data folder:<path-or-url>`:
//! - an image-folder copy (`image_folder`): a folder, or a `.tgz`/`.tar.gz`/`.tar` of one. It is
//!   identified by its SHA-256 (of the archive; for a folder, of its `sha256sum` manifest),
//!   decoded once and cached in CIFAR-10's binary layout under
//!   `<cache>/cifar10-copies/<codec>-copy-<sha256>/`, which `data::load` reads (checked
//!   against the SHA-256s recorded when it was decoded: `cifar10::load_dir`);
//! - the official files already extracted (`cifar-10-batches-bin/`): verified file by file
//!   against the published MD5s and installed where the official archive extracts to, so they
//!   are the real data from then on (same run ids: they are the same bytes).
//!
//! The location is a URL (downloaded into the cache), a local path, or a path under the mirror.

use super::cifar10::{self, RECORD, TEST_FILE, TRAIN_FILES};
use super::fetch::{self, Source};
use super::image_folder::{self, Counts, Decoded, Member, Origin};
use super::RawImages;
use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use crate::base::spec::{Codec, DataSource, ImageCopy};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What `--data` asks for: a data source by name, or a copy on disk to be identified first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataChoice {
    Known(DataSource),
    /// `folder:<path-or-url>`.
    Copy(String),
}

impl std::str::FromStr for DataChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.strip_prefix("folder:") {
            Some("") => Err("`folder:` needs a path or URL, e.g. folder:cifar10-jpeg/cifar10-jpeg.tgz".into()),
            Some(location) => Ok(DataChoice::Copy(location.into())),
            None => text.parse().map(DataChoice::Known).map_err(|e| format!("{e}, or folder:<path-or-url> for a copy of CIFAR-10")),
        }
    }
}

impl std::fmt::Display for DataChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataChoice::Known(data) => write!(f, "{data}"),
            DataChoice::Copy(location) => write!(f, "folder:{location}"),
        }
    }
}

/// What a copy must hold. Tests inject small counts and their own checksum table.
pub struct Expected<'a> {
    pub counts: Counts,
    /// (file name, MD5) of each file of an extracted official copy.
    pub official_md5: &'a [(&'a str, &'a str)],
}

/// CIFAR-10 as published: 5,000 training and 1,000 test images per class.
pub const CIFAR10: Expected<'static> = Expected { counts: Counts { train: 5_000, test: 1_000 }, official_md5: &cifar10::BATCH_MD5 };

/// The cache folder under which copies are decoded and downloaded. A decoded copy is found by
/// its source's digest alone, so if `image_folder` ever changes the order or the bytes it
/// produces, rename this folder: no stale decode may be read.
const CACHE: &str = "cifar10-copies";

/// Finds the copy at `location`, checks it and makes it loadable by `data::load`; returns
/// the data source it is (`Real` for verified official files).
pub fn prepare(location: &str, source: &Source, expected: &Expected) -> Result<DataSource> {
    let path = locate(location, source)?;
    if path.is_dir() {
        if let Some(batches) = official_folder(&path, expected.official_md5) {
            cifar10::verify_extracted(&batches, expected.official_md5)?;
            install_official(&batches, &source.cache, expected.official_md5)?;
            return Ok(DataSource::Real);
        }
        let members = read_folder(&path)?;
        let sha256 = manifest_digest(&members);
        return decoded_once(sha256, &source.cache, || image_folder::decode(&members, expected.counts, &Origin::Folder(path.clone())));
    }
    let sha256 = sha256_of_file(&path)?;
    decoded_once(sha256, &source.cache, || image_folder::decode(&read_archive(&path)?, expected.counts, &Origin::Archive(path.clone())))
}

/// The decoded copy's folder in the cache, in CIFAR-10's binary layout.
pub fn cached(cache: &Path, copy: &ImageCopy) -> PathBuf {
    cache.join(CACHE).join(DataSource::Copy(*copy).to_string())
}

/// The cached folder of a copy that was decoded before, or an error saying how to decode it.
pub fn cached_or_error(cache: &Path, copy: &ImageCopy) -> Result<PathBuf> {
    let dir = cached(cache, copy);
    if dir.is_dir() {
        return Ok(dir);
    }
    let problem = "this copy of CIFAR-10 has not been decoded into this cache".to_string();
    Err(Error::BadCopy { at: dir.display().to_string(), problem, fix: "pass --data folder:<its archive or folder> once".into() })
}

/// The copy with this digest from the cache, decoding it (`decode`) only if it is not there.
fn decoded_once(sha256: [u8; 32], cache: &Path, decode: impl FnOnce() -> Result<Decoded>) -> Result<DataSource> {
    for codec in [Codec::Jpeg, Codec::Png] {
        let copy = ImageCopy { codec, sha256 };
        let dir = cached(cache, &copy);
        if dir.join(cifar10::DIGESTS).is_file() {
            return Ok(DataSource::Copy(copy));
        }
        if dir.is_dir() {
            // Decoded by an lth that recorded no digests: its pixels cannot be checked, so
            // they are decoded again (to the same bytes, if nothing changed them).
            eprintln!("note: {} has no recorded digests (an older lth decoded it); decoding the copy again", dir.display());
            fs::remove_dir_all(&dir).at(&dir)?;
        }
    }
    let decoded = decode()?;
    let copy = ImageCopy { codec: decoded.codec, sha256 };
    write_binary(&decoded, &cached(cache, &copy))?;
    Ok(DataSource::Copy(copy))
}

/// A URL, an existing local path, or a path under the mirror (folder or base URL).
fn locate(location: &str, source: &Source) -> Result<PathBuf> {
    let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    if is_url(location) {
        return download(location, source);
    }
    let local = Path::new(location);
    if local.exists() {
        return Ok(local.to_owned());
    }
    let mut looked = String::new();
    if let Some(mirror) = source.mirror.as_deref().filter(|_| local.is_relative()) {
        if is_url(mirror) {
            return download(&format!("{}/{location}", mirror.trim_end_matches('/')), source);
        }
        let under = Path::new(mirror).join(local);
        if under.exists() {
            return Ok(under);
        }
        looked = format!(", nor under the mirror {mirror}");
    }
    Err(Error::BadCopy {
        at: location.into(),
        problem: format!("no such file or folder{looked}"),
        fix: "pass an archive (.tgz, .tar.gz, .tar) or folder holding train/<class>/ and test/<class>/ images, an extracted cifar-10-batches-bin/ folder, a URL, or a path under the mirror (LTH_DATA_MIRROR)".into(),
    })
}

/// Downloads a copy into the cache once (no checksum is published for copies: the SHA-256
/// computed afterwards names it instead). Delete the file to fetch it again.
fn download(url: &str, source: &Source) -> Result<PathBuf> {
    let dir = source.cache.join(CACHE).join("downloads");
    fs::create_dir_all(&dir).at(&dir)?;
    let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("copy");
    let path = dir.join(format!("{}-{name}", &files::sha256(url.as_bytes())[..8]));
    if !path.exists() {
        let part = files::unique_temp(&path);
        fetch::download(url, &part).map_err(|e| Error::Unreachable { file: url.into(), tried: e.to_string() })?;
        files::rename(&part, &path)?;
    }
    Ok(path)
}

/// The folder of extracted official files inside `dir`, if it looks like one.
fn official_folder(dir: &Path, md5s: &[(&str, &str)]) -> Option<PathBuf> {
    let inner = dir.join("cifar-10-batches-bin");
    if inner.is_dir() {
        return Some(inner);
    }
    md5s.iter().any(|(name, _)| dir.join(name).is_file()).then(|| dir.to_owned())
}

/// Copies verified official files to where the official archive extracts to (unless an
/// identical copy is there), through a temporary folder renamed into place.
fn install_official(batches: &Path, cache: &Path, md5s: &[(&str, &str)]) -> Result<()> {
    let target = cifar10::extracted_dir(cache);
    if target.is_dir() && cifar10::verify_extracted(&target, md5s).is_ok() {
        // Verified just now: an install by an lth that recorded no digests gets them here.
        if !target.join(cifar10::DIGESTS).is_file() {
            cifar10::record_digests(&target)?;
        }
        return Ok(());
    }
    let staging = files::unique_temp(&target);
    fs::create_dir_all(&staging).at(&staging)?;
    let copied = md5s.iter().try_for_each(|(name, _)| {
        let (from, to) = (batches.join(name), staging.join(name));
        // The bytes only: a read-only source must not leave read-only files in the cache.
        std::io::copy(&mut fs::File::open(&from).at(&from)?, &mut fs::File::create(&to).at(&to)?).at(&to).map(|_| ())
    });
    // The copies are checked again: the source may have changed while it was copied.
    let checked = copied.and_then(|()| cifar10::verify_extracted(&staging, md5s)).and_then(|()| cifar10::record_digests(&staging));
    if checked.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    checked?;
    let _ = fs::remove_dir_all(&target);
    fs::rename(&staging, &target).at(&target)
}

/// Every file under `root`, with its path relative to it, in path order.
fn read_folder(root: &Path) -> Result<Vec<Member>> {
    let mut members = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let full = entry.path();
            // A link to a folder is not followed (a loop would never end); read as a file, it
            // fails naming itself.
            if entry.file_type().at(&full)?.is_dir() {
                pending.push(path);
            } else {
                members.push(Member { bytes: fs::read(&full).at(&full)?, path });
            }
        }
    }
    members.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(members)
}

/// A folder's identity: the SHA-256 of its `sha256sum`-style manifest, one
/// `<sha256>  <path>\n` line per file in path (byte) order.
fn manifest_digest(members: &[Member]) -> [u8; 32] {
    let mut manifest = Sha256::new();
    for member in members {
        manifest.update(format!("{}  {}\n", files::sha256(&member.bytes), member.path).as_bytes());
    }
    manifest.finalize().into()
}

fn sha256_of_file(path: &Path) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut fs::File::open(path).at(path)?, &mut hasher).at(path)?;
    Ok(hasher.finalize().into())
}

/// Every regular file of a `.tar`, `.tar.gz` or `.tgz` (gzip told by its magic bytes).
fn read_archive(path: &Path) -> Result<Vec<Member>> {
    let bad = |e: &dyn std::fmt::Display| Error::BadCopy {
        at: path.display().to_string(),
        problem: format!("truncated or not a .tar, .tar.gz or .tgz archive ({e})"),
        fix: "fetch the archive again, or pass the folder it came from".into(),
    };
    let mut file = BufReader::new(fs::File::open(path).at(path)?);
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = BufReader::new(fs::File::open(path).at(path)?);
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    let mut members = Vec::new();
    for entry in archive.entries().map_err(|e| bad(&e))? {
        let mut entry = entry.map_err(|e| bad(&e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(|e| bad(&e))?.to_string_lossy().into_owned();
        let size = entry.size();
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(|e| bad(&e))?;
        // A tar cut inside a file's data ends that file early without an error.
        if bytes.len() as u64 != size {
            return Err(bad(&format!("{member} ends after {} of its {size} bytes", bytes.len())));
        }
        members.push(Member { path: member, bytes });
    }
    if members.is_empty() {
        return Err(bad(&"no files in it"));
    }
    Ok(members)
}

/// Writes a decoded copy in CIFAR-10's binary layout (five training batches, one test batch)
/// into a temporary folder, then renames it into place: a reader never sees half of it.
fn write_binary(decoded: &Decoded, dir: &Path) -> Result<()> {
    let records = |images: &RawImages, range: std::ops::Range<usize>| -> Vec<u8> {
        let mut out = Vec::with_capacity(range.len() * RECORD);
        for i in range {
            out.push(images.labels[i]);
            out.extend_from_slice(&images.pixels[i * (RECORD - 1)..(i + 1) * (RECORD - 1)]);
        }
        out
    };
    let parent = dir.parent().unwrap_or(dir);
    fs::create_dir_all(parent).at(parent)?;
    let staging = files::unique_temp(dir);
    fs::create_dir_all(&staging).at(&staging)?;
    let per_file = decoded.train.n / TRAIN_FILES.len();
    let written = TRAIN_FILES
        .iter()
        .enumerate()
        .try_for_each(|(i, name)| {
            let path = staging.join(name);
            let end = if i + 1 == TRAIN_FILES.len() { decoded.train.n } else { (i + 1) * per_file };
            fs::write(&path, records(&decoded.train, i * per_file..end)).at(&path)
        })
        .and_then(|()| {
            let path = staging.join(TEST_FILE);
            fs::write(&path, records(&decoded.test, 0..decoded.test.n)).at(&path)
        })
        .and_then(|()| cifar10::record_digests(&staging));
    // A full disk must not leave a staging folder in the cache for good.
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written?;
    if let Err(e) = fs::rename(&staging, dir) {
        let _ = fs::remove_dir_all(&staging);
        // Another process may have decoded the same copy first: its folder is as good.
        if !dir.is_dir() {
            return Err(e).at(dir);
        }
    }
    Ok(())
}
