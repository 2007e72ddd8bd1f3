//! `lth adopt`: turning the empty markers of a run folder (an lth older than recorded digests
//! wrote them; a crash can leave one) into real ones, after checking what can still be checked.
//! An empty marker is never trusted on its own (`marker::empty`); this is the one explicit way
//! to vouch for such files, and it says what it could not check.
//!
//! Checked, per level: the curve's schema, that it has one row per evaluation the spec makes
//! at the iterations it makes them, that its identity columns are this run's and this level's,
//! that every value is in range (accuracies in [0, 1], losses finite and not negative), that
//! the mask's share of weights is the curve's, that the tensors have the architecture's names
//! and shapes, and that the final weights under the mask give the curve's last test accuracy
//! to the bit (when the data can be loaded). Not checkable: that the bytes are those training
//! wrote, so earlier points of the curve and its validation and training columns are taken as
//! they are.

use crate::base::error::{Error, IoContext, Result};
use crate::base::spec::RunSpec;
use crate::data::Dataset;
use crate::lottery::rewind;
use crate::nn::Architecture;
use crate::sparsity::masks::Mask;
use crate::store::marker;
use crate::store::record::{parse_curve, CurveRecord};
use crate::store::runs::{load_weights, RunDir};
use crate::tools::export::{self, Ticket};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// What adopting one marker found.
#[derive(Debug)]
pub struct Adopted {
    pub marker: PathBuf,
    pub checked: Vec<String>,
    pub not_checked: Vec<String>,
}

/// Is `marker` present and empty?
pub fn is_empty_marker(marker: &Path) -> bool {
    std::fs::metadata(marker).is_ok_and(|m| m.len() == 0)
}

/// Checks and records every empty marker of `run` (theta0's, then each level's); `data` loads
/// the run's data for the weights check, or says why it cannot. Stops at the first failed
/// check, naming the file and the way to retrain it; markers that passed before stay written.
pub fn adopt(run: &RunDir, data: &mut dyn FnMut(&RunSpec) -> std::result::Result<Dataset, String>, dev: &Device) -> Result<Vec<Adopted>> {
    let spec = run.spec()?;
    if spec.id() != run.id {
        return Err(Error::Invalid(format!(
            "{}: its spec.json is not the spec its folder is named after; `lth runs --repair` rewrites it first",
            run.dir.join("spec.json").display()
        )));
    }
    let arch = Architecture::of(spec.method.model);
    let mut adopted = Vec::new();
    if is_empty_marker(&run.init_marker()) && run.init_path().exists() {
        load_weights(&run.init_path(), &arch)?;
        marker::write(&run.init_marker(), &[run.init_path()])?;
        adopted.push(Adopted {
            marker: run.init_marker(),
            checked: vec!["theta0's tensor names and shapes".into()],
            not_checked: vec!["its values (theta0 is drawn from the seed: `lth redo` on it draws it again)".into()],
        });
    }
    let levels = std::fs::read_dir(&run.dir)
        .at(&run.dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("level-")?.parse::<usize>().ok())
        .filter(|&level| is_empty_marker(&run.done_path(level)));
    let mut levels: Vec<usize> = levels.collect();
    levels.sort_unstable();
    for level in levels {
        adopted.push(adopt_level(run, &spec, &arch, level, data, dev)?);
    }
    Ok(adopted)
}

fn adopt_level(
    run: &RunDir,
    spec: &RunSpec,
    arch: &Architecture,
    level: usize,
    data: &mut dyn FnMut(&RunSpec) -> std::result::Result<Dataset, String>,
    dev: &Device,
) -> Result<Adopted> {
    let refuse = |path: PathBuf, reason: String| Error::RunFile { path, reason: format!("{reason}; not adopted"), redo: run.level_dir(level) };
    let curve_path = run.curve_path(level);
    let bytes = std::fs::read(&curve_path).map_err(|e| refuse(curve_path.clone(), format!("cannot be read ({e})")))?;
    let rows: Vec<CurveRecord> = parse_curve(&bytes, &curve_path).map_err(|e| refuse(curve_path.clone(), format!("not a curve ({e})")))?;
    check_curve(spec, level, &rows).map_err(|reason| refuse(curve_path.clone(), reason))?;
    let mut checked =
        vec![format!("curve.csv: its schema, {} rows at the iterations the spec evaluates, its run and level columns, every value in range", rows.len())];
    let mut not_checked = vec!["that the files are the bytes training wrote (no digest was recorded): the curve's earlier points and its validation and training columns are taken as they are".to_string()];
    let mut files = vec![curve_path.clone()];
    let (mask_path, final_path) = (run.mask_path(level), run.final_path(level));
    match (mask_path.exists(), final_path.exists()) {
        (true, true) => {
            let mask = Mask::from_safetensors(&std::fs::read(&mask_path).at(&mask_path)?, &mask_path, arch)?;
            let weights = load_weights(&final_path, arch)?;
            let remaining = rows[0].key.remaining;
            if mask.remaining() != remaining {
                return Err(refuse(mask_path, format!("keeps {} of the weights, but its curve says {remaining}", mask.remaining())));
            }
            checked.push("mask.safetensors and final.safetensors: the architecture's tensor names and shapes, and the curve's share of weights".into());
            let last = rows[rows.len() - 1].point.test_acc;
            match data(spec) {
                Ok(data) => {
                    let mut weights = weights;
                    export::zero_pruned(&mut weights, &mask);
                    let ticket = Ticket { spec: spec.clone(), run: run.id.0.clone(), level, final_test_acc: last, mask, weights };
                    let (_, acc) = export::evaluate(&ticket, &data, dev, true)?;
                    if acc != last {
                        return Err(refuse(final_path, format!("under its mask gives test accuracy {acc}, but its curve ends at {last}")));
                    }
                    checked.push(format!("the final weights under the mask give the curve's last test accuracy ({:.2}%) to the bit", 100.0 * last));
                }
                Err(why) => not_checked.push(format!("the final weights against the curve's last test accuracy: the data could not be loaded ({why})")),
            }
            files.extend([mask_path, final_path]);
        }
        _ => not_checked.push("the weights: this level keeps only its curve".into()),
    }
    if level == 0 && run.rewind_path().exists() {
        load_weights(&run.rewind_path(), arch)?;
        checked.push("rewind.safetensors: the architecture's tensor names and shapes".into());
        files.push(run.rewind_path());
    }
    let next_mask = run.next_mask_path(level);
    if next_mask.exists() {
        Mask::from_bits_gz(&std::fs::read(&next_mask).at(&next_mask)?, &next_mask, arch)?;
        checked.push("next-mask.bits.gz: the architecture's layer names and shapes".into());
        files.push(next_mask);
    }
    files.sort();
    marker::write(&run.done_path(level), &files)?;
    Ok(Adopted { marker: run.done_path(level), checked, not_checked })
}

/// The curve of `level` as `spec` writes it: one row per evaluation, this run's columns,
/// values in range. Why not, otherwise.
pub fn check_curve(spec: &RunSpec, level: usize, rows: &[CurveRecord]) -> std::result::Result<(), String> {
    let start = rewind::start_iteration(spec, level);
    let expected: Vec<usize> =
        std::iter::once(start).chain((start + 1..=spec.iterations).filter(|i| i % spec.eval_every == 0 || *i == spec.iterations)).collect();
    let iterations: Vec<usize> = rows.iter().map(|r| r.point.iteration).collect();
    if iterations != expected {
        return Err(format!(
            "{} rows at iterations {}, but the spec evaluates {} times, at {}",
            rows.len(),
            span(&iterations),
            expected.len(),
            span(&expected)
        ));
    }
    for (i, CurveRecord { key: k, point: r }) in rows.iter().enumerate() {
        let at = |what: &str| format!("row {} (iteration {}): {what}", i + 1, r.iteration);
        let identity = (k.experiment.as_str(), k.scale.as_str(), k.data, k.procedure.as_str(), k.trial, k.copy, k.level);
        if identity != (spec.experiment.as_str(), spec.scale.as_str(), spec.data, spec.procedure.as_str(), spec.trial, spec.copy, level) {
            return Err(at(&format!("names another run or level ({identity:?})")));
        }
        if !(k.remaining > 0.0 && k.remaining <= 1.0) || k.remaining != rows[0].key.remaining {
            return Err(at(&format!("remaining = {} is not the level's share of weights in (0, 1]", k.remaining)));
        }
        // The first row comes before any training step: it has no training metrics.
        let train = if i == 0 { vec![] } else { vec![("train_loss", r.train_loss, false), ("train_acc", r.train_acc, true)] };
        let values = [("val_loss", r.val_loss, false), ("val_acc", r.val_acc, true), ("test_loss", r.test_loss, false), ("test_acc", r.test_acc, true)];
        for (name, value, accuracy) in train.into_iter().chain(values) {
            let ok = value.is_finite() && value >= 0.0 && (!accuracy || value <= 1.0);
            if !ok {
                return Err(at(&format!("{name} = {value} is outside {}", if accuracy { "[0, 1]" } else { "the finite numbers >= 0" })));
            }
        }
    }
    Ok(())
}

/// A list of iterations, shortened: `0, 20, …, 60`.
fn span(values: &[usize]) -> String {
    match values {
        [] => "none".into(),
        [a] => a.to_string(),
        [a, b] => format!("{a}, {b}"),
        [a, b, .., z] => format!("{a}, {b}, …, {z}"),
    }
}
