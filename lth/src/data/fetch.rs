//! Getting dataset files onto disk: official URLs with a fallback mirror, or a user mirror
//! (a base URL or a local folder laid out as `<dataset>/<file>`), resumable downloads into
//! `<file>.part`, SHA-256 verification, and atomic renames. A verified file is never fetched
//! again; a corrupt one is reported, removed and fetched again, never used. One process at a
//! time fetches a given file (a lock file in `<cache>/.locks`); the others wait, then find it there.

use crate::base::error::{Error, IoContext, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::Sha256;
use std::fs::{self, File, OpenOptions};
use std::io::IsTerminal;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

// Kept here as well for the modules that reach them through `fetch`.
pub use crate::base::files::{digest_file, unique_temp, write_atomic};

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

/// The flag's value, else the environment variable's, each only if not empty; an empty one
/// is reported once per process and skipped (so an empty flag falls back to the variable).
fn non_empty(flag: Option<std::ffi::OsString>, flag_name: &str, var: &str, fallback: &str) -> Option<std::ffi::OsString> {
    static NOTICED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let notice = |what: String| {
        let mut noticed = NOTICED.lock().unwrap_or_else(|e| e.into_inner());
        if !noticed.contains(&what) {
            eprintln!("notice: {what}");
            noticed.push(what);
        }
    };
    let flag = flag.filter(|v| {
        if v.is_empty() {
            notice(format!("{flag_name} '' is empty, so it is ignored (falling back to {var}, else {fallback})"));
        }
        !v.is_empty()
    });
    flag.or_else(|| match std::env::var_os(var) {
        Some(v) if v.is_empty() => {
            notice(format!("{var} is set but empty, so it is ignored (using {fallback})"));
            None
        }
        other => other,
    })
}

/// Attempts per URL; each one resumes where the previous stopped.
const ATTEMPTS: usize = 3;

impl Source {
    /// The cache from `LTH_DATA_DIR` (else the user's cache folder) and the mirror from
    /// `LTH_DATA_MIRROR`, each overridden by an explicit value (a CLI flag).
    /// An empty value (`LTH_DATA_DIR=`, `--mirror ''`) is treated as unset, with a notice: an
    /// empty cache path would download into the current folder, and an empty mirror would
    /// silently mean the official URLs.
    pub fn from_env(cache: Option<PathBuf>, mirror: Option<String>) -> Self {
        let cache = non_empty(cache.map(|c| c.into_os_string()), "--data-dir", "LTH_DATA_DIR", "the default cache folder")
            .map(PathBuf::from)
            .unwrap_or_else(default_cache);
        let mirror = non_empty(mirror.map(Into::into), "--mirror", "LTH_DATA_MIRROR", "the official download URLs").map(|m| m.to_string_lossy().into_owned());
        Source { mirror, cache }
    }

    /// Checks the mirror before anything runs: a base URL (`http://host…`, `https://host…`) or
    /// an existing folder with something in it.
    pub fn check(&self) -> Result<()> {
        let Some(mirror) = &self.mirror else {
            return Ok(());
        };
        let fix = "set --mirror (or LTH_DATA_MIRROR) to a base URL or to a folder laid out as `<dataset>/<file>`";
        if let Some(rest) = mirror.strip_prefix("http://").or_else(|| mirror.strip_prefix("https://")) {
            if rest.trim_matches('/').is_empty() {
                return Err(Error::Invalid(format!("mirror `{mirror}` names no host; {fix}")));
            }
            return Ok(());
        }
        let dir = Path::new(mirror);
        let problem = if mirror.contains("://") {
            "is neither an http(s) URL nor a folder"
        } else if !dir.is_dir() {
            "is not a folder (or does not exist)"
        } else if fs::read_dir(dir).at(dir)?.next().is_none() {
            "is an empty folder"
        } else {
            return Ok(());
        };
        Err(Error::Invalid(format!("mirror `{mirror}` {problem}; {fix}")))
    }

    /// The verified local copy of `file`, fetching it first if needed.
    pub fn fetch(&self, file: &RemoteFile, official: &[&str]) -> Result<PathBuf> {
        let dir = self.cache.join(file.dataset);
        fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join(file.name);
        if path.exists() && verify(&path, file.checksum).is_ok() {
            return Ok(path);
        }
        // Another process may be fetching the same file: wait for it, then look again.
        let _lock = lock(&self.cache.join(".locks").join(format!("{}.{}.lock", file.dataset, file.name)))?;
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
            copy_contents(&src, &part)?;
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

/// Holds the lock file `path` exclusively until dropped. The OS releases it when the process
/// dies, so a killed fetch never blocks the next one. Lock files stay (removing one while
/// another process waits on it would let a third take a second lock), out of the data folders.
fn lock(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).at(dir)?;
    }
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).at(path)?;
    file.lock().at(path)?;
    Ok(file)
}

/// Copies a mirror file's bytes (not its permissions: a read-only mirror must not leave a
/// read-only partial file behind) into a fresh `part`; each error names the file it failed on.
fn copy_contents(src: &Path, part: &Path) -> Result<()> {
    if part.exists() {
        fs::remove_file(part).at(part)?;
    }
    let mut from = File::open(src).at(src)?;
    let mut to = File::create(part).at(part)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = from.read(&mut buf).at(src)?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).at(part)?;
    }
    to.sync_all().at(part)
}

fn default_cache() -> PathBuf {
    // Empty values are unset (an empty XDG_CACHE_HOME would put the cache in the current folder).
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("lth");
    }
    match var("HOME") {
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

/// Downloads `url` into `part`, resuming from its current length with an HTTP Range request,
/// retrying a dropped connection up to [`ATTEMPTS`] times.
pub(crate) fn download(url: &str, part: &Path) -> Result<()> {
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
        out.seek(io::SeekFrom::End(0)).map_err(|e| format!("{}: {e}", part.display()))?;
    } else {
        out.set_len(0).map_err(|e| format!("{}: {e}", part.display()))?;
    }
    let bar = bytes_bar(total, if resume { have } else { 0 }, url);
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
    out.sync_all().map_err(|e| format!("{}: {e}", part.display()))?;
    Ok(())
}

/// A byte-count bar for one download (hidden when stderr is not a terminal).
pub fn bytes_bar(total: Option<u64>, start: u64, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.unwrap_or(0));
    if let Ok(style) = ProgressStyle::with_template("{bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}") {
        bar.set_style(style);
    }
    bar.set_position(start);
    bar.set_message(label.to_string());
    bar
}
