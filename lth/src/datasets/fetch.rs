//! Getting dataset files onto disk: official URLs with a fallback mirror, or a user mirror
//! (a base URL or a local folder laid out as `<dataset>/<file>`), resumable downloads into
//! `<file>.part`, SHA-256 verification, and atomic renames. A verified file is never fetched
//! again; a corrupt one is reported, removed and fetched again, never used.

use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One file of a dataset, as published.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// Folder name under the cache and under a mirror (`mnist`, `cifar10`).
    pub dataset: &'static str,
    pub name: &'static str,
    pub checksum: Checksum,
}

/// A published digest (hex). MNIST's are SHA-256; CIFAR-10 publishes only MD5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Sha256(&'static str),
    Md5(&'static str),
}

/// Where files come from and where they go.
#[derive(Debug, Clone)]
pub struct Source {
    /// Replaces the official URLs: a base URL (`http://…`, `https://…`) or a local folder.
    pub mirror: Option<String>,
    /// Cache root; files land in `<cache>/<dataset>/<name>`.
    pub cache: PathBuf,
}

/// Attempts per URL; each one resumes where the previous stopped.
const ATTEMPTS: usize = 3;

impl Source {
    /// The cache from `LTH_DATA_DIR` (else the user's cache folder) and the mirror from
    /// `LTH_DATA_MIRROR`, each overridden by an explicit value (a CLI flag).
    pub fn from_env(cache: Option<PathBuf>, mirror: Option<String>) -> Self {
        let cache = cache.or_else(|| std::env::var_os("LTH_DATA_DIR").map(PathBuf::from)).unwrap_or_else(default_cache);
        let mirror = mirror.or_else(|| std::env::var("LTH_DATA_MIRROR").ok()).filter(|m| !m.is_empty());
        Source { mirror, cache }
    }

    /// The verified local copy of `file`, fetching it first if needed.
    pub fn fetch(&self, file: &RemoteFile, official: &[&str]) -> Result<PathBuf> {
        let dir = self.cache.join(file.dataset);
        fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join(file.name);
        if path.exists() {
            match verify(&path, file.checksum) {
                Ok(()) => return Ok(path),
                Err(e) => {
                    eprintln!("warning: {e}");
                    fs::remove_file(&path).at(&path)?;
                }
            }
        }
        let mut failures = Vec::new();
        for base in self.bases(official) {
            match self.fetch_from(&base, file, &path) {
                Ok(()) => return Ok(path),
                Err(e) => failures.push(format!("{base}: {e}")),
            }
        }
        Err(Error::Unreachable { file: format!("{}/{}", file.dataset, file.name), tried: failures.join("; ") })
    }

    fn bases(&self, official: &[&str]) -> Vec<String> {
        match &self.mirror {
            Some(mirror) => vec![mirror.clone()],
            None => official.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Fetches into `<path>.part`, verifies, renames. `base` is a URL or folder of the dataset
    /// (official URLs) or of all datasets (a mirror).
    fn fetch_from(&self, base: &str, file: &RemoteFile, path: &Path) -> Result<()> {
        let part = path.with_extension(format!("{}.part", extension(path)));
        let is_url = base.starts_with("http://") || base.starts_with("https://");
        let under_mirror = self.mirror.is_some();
        let rel = if under_mirror { format!("{}/{}", file.dataset, file.name) } else { file.name.to_string() };
        if is_url {
            let url = format!("{}/{rel}", base.trim_end_matches('/'));
            download(&url, &part)?;
        } else {
            let src = Path::new(base).join(&rel);
            if !src.exists() {
                return Err(Error::Invalid(format!("{} does not exist", src.display())));
            }
            fs::copy(&src, &part).at(&src)?;
        }
        if let Err(e) = verify(&part, file.checksum) {
            fs::remove_file(&part).at(&part)?;
            return Err(e);
        }
        fs::rename(&part, path).at(path)
    }
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A temporary name beside `path`, unique to this process and call, so concurrent writers
/// never share one.
pub fn unique_temp(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("{}.{}-{n}.tmp", extension(path), std::process::id()))
}

fn default_cache() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("lth");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("lth"),
        None => PathBuf::from("data"),
    }
}

/// Checks a file's digest; the error names the file and both digests.
pub fn verify(path: &Path, expected: Checksum) -> Result<()> {
    let (kind, expected, actual) = match expected {
        Checksum::Sha256(hex) => ("sha256", hex, digest_file::<Sha256>(path)?),
        Checksum::Md5(hex) => ("md5", hex, digest_file::<md5::Md5>(path)?),
    };
    if actual == expected {
        Ok(())
    } else {
        Err(Error::Checksum { path: path.to_owned(), kind, expected: expected.into(), actual })
    }
}

/// The hex digest of a file.
pub fn digest_file<D: Digest + io::Write>(path: &Path) -> Result<String> {
    let mut hasher = D::new();
    let mut f = File::open(path).at(path)?;
    io::copy(&mut f, &mut hasher).at(path)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Downloads `url` into `part`, resuming from its current length with an HTTP Range request,
/// retrying a dropped connection up to [`ATTEMPTS`] times.
fn download(url: &str, part: &Path) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        match download_once(&agent, url, part) {
            Ok(()) => return Ok(()),
            Err(e) => last_error = e,
        }
    }
    Err(Error::Invalid(last_error))
}

fn download_once(agent: &ureq::Agent, url: &str, part: &Path) -> std::result::Result<(), String> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let resume = match status {
        206 => true,
        200 => false,
        // The part file already holds the whole file; the checksum decides.
        416 if have > 0 => return Ok(()),
        _ => return Err(format!("{url}: HTTP {status}")),
    };
    let total = response.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map(|n| if resume { n + have } else { n });
    let mut out = OpenOptions::new().create(true).write(true).truncate(false).open(part).map_err(|e| format!("{}: {e}", part.display()))?;
    if resume {
        out.seek(io::SeekFrom::End(0)).map_err(|e| e.to_string())?;
    } else {
        out.set_len(0).map_err(|e| e.to_string())?;
    }
    let bar = crate::progress::bytes_bar(total, if resume { have } else { 0 }, url);
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("{url}: connection lost ({e})"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", part.display()))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    out.sync_all().map_err(|e| e.to_string())?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file + rename), so an interruption never leaves
/// a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = unique_temp(path);
    fs::write(&tmp, bytes).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}
