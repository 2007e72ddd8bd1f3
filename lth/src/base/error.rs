//! The library's typed errors: one variant per failure a user can fix, each naming the
//! file or value and what to do. The binary adds context with `anyhow`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: checksum mismatch ({kind} {actual}, expected {expected}): a corrupt or truncated copy, removed and not used")]
    Checksum { path: PathBuf, kind: &'static str, expected: String, actual: String },

    #[error("{path}: {reason}; delete it and run the command again to fetch it anew")]
    CorruptData { path: PathBuf, reason: String },

    #[error("could not fetch {file}: {tried}; check the network, or point LTH_DATA_MIRROR (or --mirror) at a folder laid out as `<dataset>/<file>` or at a base URL")]
    Unreachable { file: String, tried: String },

    /// A user's copy of a dataset (an image folder, an archive of one, or extracted official
    /// files) that cannot be used as it is: `at` names the file (inside an archive: `archive member`).
    #[error("{at}: {problem}; {fix}")]
    BadCopy { at: String, problem: String, fix: String },

    #[error("{path}: {reason}")]
    Spec { path: PathBuf, reason: String },

    #[error("{path}: {reason}; regenerate it (`cargo xtask reproduce`; for a run's curve, delete that run's level folder)")]
    Table { path: PathBuf, reason: String },

    #[error("{}: holds a run whose spec differs from the requested one ({reason}); delete that folder or pass another --out", .dir.join("spec.json").display())]
    SpecMismatch { dir: PathBuf, reason: String },

    /// A file of a run folder that does not match what was recorded when it was written.
    #[error("{path}: {reason}; the run file is damaged: run `lth redo {redo}` (or delete it) and the same command again to retrain just that part")]
    RunFile { path: PathBuf, reason: String, redo: PathBuf },

    #[error("{}: holds no figure tables (figN.csv); pass the folder `cargo xtask reproduce` wrote (its --figures-dir)", .dir.display())]
    NoTables { dir: PathBuf },

    #[error("{}: holds no table of Figures 7 or 8 (fig7.csv, fig8.csv, fig7r.csv or fig8r.csv); pass a folder that `cargo xtask reproduce fig7 fig8` wrote (its --figures-dir)", .dir.display())]
    NoDeepNetTables { dir: PathBuf },

    /// A figure's provenance file (`figN.md`) that does not say what the claims need.
    #[error("{}: {reason}; regenerate it with the command it names, or `lth figure <fig> --scale <scale>`", .path.display())]
    Provenance { path: PathBuf, reason: String },

    #[error("unknown figure `{name}`; valid figures: {valid}")]
    UnknownFigure { name: String, valid: String },

    /// A training that failed, named so the user knows which run folder to look at.
    #[error("run {run}, level {level}: {source}")]
    Training { run: String, level: usize, source: Box<Error> },

    #[error("{0}")]
    Invalid(String),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Polars(#[from] polars::prelude::PolarsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path to an I/O error, so that every I/O failure names its file.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.into(), source })
    }
}
