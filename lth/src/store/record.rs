//! Row types written by runs and read by tables. One curve row per evaluation, in long
//! format, carrying everything needed to group it: experiment, scale, procedure, trial, copy,
//! level and the fraction of weights remaining.

use crate::base::error::{Error, IoContext, Result};
use crate::base::spec::DataSource;
use crate::train::training::CurvePoint;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveRecord {
    pub experiment: String,
    pub scale: String,
    /// Real or synthetic images (absent in files written before synthetic data existed).
    #[serde(default)]
    pub data: DataSource,
    pub procedure: String,
    pub trial: usize,
    pub copy: usize,
    pub level: usize,
    /// Fraction of prunable weights remaining (Pm / 100).
    pub remaining: f64,
    pub iteration: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
}

/// The first iteration at which a curve's evaluated loss (validation or test) is NaN or
/// infinite: a diverged training, which tables leave out and name rather than average in.
/// (The training loss is NaN at a level's first point by design: nothing has trained yet.)
pub fn diverged_at(curve: &[CurveRecord]) -> Option<usize> {
    curve.iter().find(|r| !r.val_loss.is_finite() || !r.test_loss.is_finite()).map(|r| r.iteration)
}

/// Identifies the run and level a curve belongs to.
#[derive(Debug, Clone)]
pub struct CurveKey {
    pub experiment: String,
    pub scale: String,
    pub data: DataSource,
    pub procedure: String,
    pub trial: usize,
    pub copy: usize,
    pub level: usize,
    pub remaining: f64,
}

impl CurveKey {
    pub fn record(&self, p: &CurvePoint) -> CurveRecord {
        CurveRecord {
            experiment: self.experiment.clone(),
            scale: self.scale.clone(),
            data: self.data,
            procedure: self.procedure.clone(),
            trial: self.trial,
            copy: self.copy,
            level: self.level,
            remaining: self.remaining,
            iteration: p.iteration,
            train_loss: p.train_loss,
            train_acc: p.train_acc,
            val_loss: p.val_loss,
            val_acc: p.val_acc,
            test_loss: p.test_loss,
            test_acc: p.test_acc,
        }
    }
}

pub fn write_csv<T: Serialize>(rows: &[T], path: &Path) -> Result<()> {
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows {
        out.serialize(row).map_err(|e| csv_error(path, e))?;
    }
    let bytes = out.into_inner().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    crate::base::files::write_atomic(path, &bytes)
}

pub fn read_csv<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    parse_csv(&std::fs::read(path).at(path)?, path)
}

/// Parses CSV rows from bytes already read (`path` names them in errors).
pub fn parse_csv<T: for<'de> Deserialize<'de>>(bytes: &[u8], path: &Path) -> Result<Vec<T>> {
    let mut reader = csv::Reader::from_reader(bytes);
    reader.deserialize().map(|row| row.map_err(|e| csv_error(path, e))).collect()
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Table { path: path.to_owned(), reason: e.to_string() }
}
