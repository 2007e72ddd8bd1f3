//! Row types written by runs and read by tables. One curve row per evaluation, in long
//! format, carrying everything needed to group it: experiment, scale, procedure, trial, copy,
//! level and the fraction of weights remaining.

use crate::base::error::{Error, IoContext, Result};
use crate::base::spec::DataSource;
use crate::train::training::CurvePoint;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One row of a curve file: the run and level it belongs to, then one evaluation. The file's
/// columns are [`CurveKey`]'s fields followed by [`CurvePoint`]'s, each defined once: a row is
/// written as the pair and read by matching both against the header.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveRecord {
    pub key: CurveKey,
    pub point: CurvePoint,
}

impl Serialize for CurveRecord {
    fn serialize<S: serde::Serializer>(&self, out: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.key, &self.point).serialize(out)
    }
}

/// The first iteration at which a curve's evaluated loss (validation or test) is NaN or
/// infinite: a diverged training, which tables leave out and name rather than average in.
/// (The training loss is NaN at a level's first point by design: nothing has trained yet.)
pub fn diverged_at(curve: &[CurveRecord]) -> Option<usize> {
    curve.iter().map(|r| &r.point).find(|p| !p.val_loss.is_finite() || !p.test_loss.is_finite()).map(|p| p.iteration)
}

/// Identifies the run and level a curve belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveKey {
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
}

impl CurveKey {
    pub fn record(&self, point: &CurvePoint) -> CurveRecord {
        CurveRecord { key: self.clone(), point: *point }
    }
}

/// A curve file's rows (`path` names them in errors).
pub fn read_curve(path: &Path) -> Result<Vec<CurveRecord>> {
    parse_curve(&std::fs::read(path).at(path)?, path)
}

/// A curve's rows from bytes already read (`path` names them in errors).
pub fn parse_curve(bytes: &[u8], path: &Path) -> Result<Vec<CurveRecord>> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let row = |record: csv::StringRecord| -> std::result::Result<CurveRecord, csv::Error> {
        Ok(CurveRecord { key: record.deserialize(Some(&header))?, point: record.deserialize(Some(&header))? })
    };
    reader.records().map(|record| record.and_then(row).map_err(|e| csv_error(path, e))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A curve file is the key's columns then the point's, and reads back as written: a name
    /// that looks like a number stays a name, and the first row's NaN training loss stays NaN.
    #[test]
    fn a_curve_reads_back_as_written() {
        let key = CurveKey {
            experiment: "007".into(),
            scale: "smoke".into(),
            data: DataSource::Synthetic,
            procedure: "ticket".into(),
            trial: 1,
            copy: 0,
            level: 2,
            remaining: 0.64,
        };
        let point = |iteration: usize, train_loss: f64| CurvePoint {
            iteration,
            train_loss,
            train_acc: 0.5,
            val_loss: 1.25,
            val_acc: 0.5,
            test_loss: 1.5,
            test_acc: 0.25,
        };
        let rows = vec![key.record(&point(0, f64::NAN)), key.record(&point(10, 2.0))];
        let path = std::env::temp_dir().join(format!("lth-curve-{}.csv", std::process::id()));
        write_csv(&rows, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next(),
            Some("experiment,scale,data,procedure,trial,copy,level,remaining,iteration,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc")
        );
        let back = read_curve(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back[1], rows[1]);
        assert_eq!(back[0].key, key);
        assert!(back[0].point.train_loss.is_nan());
        assert_eq!(back[0].point.iteration, 0);
    }
}
