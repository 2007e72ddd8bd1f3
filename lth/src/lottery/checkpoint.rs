//! A level's training saved as it goes, so that an interrupted run (a closed laptop, a
//! preempted cluster job, the end of a sitting) loses minutes of it, not the level: at the
//! first step [`EVERY`] after the level started or last saved, the whole state of the training
//! (`training::TrainState`, every parameter and, for a rewinding dense level past its rewind
//! point, θk) goes to `level-NN/checkpoint.safetensors`. The next run of the same command goes
//! on from there, to the same bits as a training never interrupted. The file is removed once
//! the level is finished; one that cannot be read is reported and set aside, and the level
//! trains from its start. Its header records a SHA-256 of its tensors, so a file that a power
//! cut left with the right layout and other bytes is set aside too (docs/guarantees.md).

use crate::base::error::{Error, IoContext, Result};
use crate::base::files::{damaged_tensors, hex, write_atomic};
use crate::lottery::rewind;
use crate::nn::{Architecture, Weights};
use crate::store::runs::take_weights;
use crate::train::optim::OptimizerState;
use crate::train::progress::Progress;
use crate::train::training::{CurvePoint, Observer, RunningSums, TrainState};
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// About how much training an interruption may lose. Saving copies, hashes and writes the
/// weights and the optimizer's buffers (for VGG-19 with SGD's one buffer, 2 × 80 MB): rare at
/// this interval.
pub const EVERY: Duration = Duration::from_secs(5 * 60);

/// The version of the file's layout; a file of another is set aside.
const FORMAT: &str = "2";

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub state: TrainState,
    pub weights: Weights,
    /// θk of a rewinding ticket run's dense level, once taken (`rewind::Snapshot`).
    pub rewind: Option<Weights>,
}

/// Writes `saved` to `path` (atomically: a run killed meanwhile leaves the previous one).
pub fn save(path: &Path, arch: &Architecture, saved: &Saved) -> Result<()> {
    let cpu = &Device::Cpu;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for p in &arch.params {
        let values = saved.weights.get(&p.name).ok_or_else(|| Error::Invalid(format!("checkpoint: no weights for `{}`", p.name)))?;
        tensors.insert(format!("weights/{}", p.name), Tensor::from_slice(values, p.shape.as_slice(), cpu)?);
        if let Some(rewind) = &saved.rewind {
            let values = rewind.get(&p.name).ok_or_else(|| Error::Invalid(format!("checkpoint: no θk for `{}`", p.name)))?;
            tensors.insert(format!("rewind/{}", p.name), Tensor::from_slice(values, p.shape.as_slice(), cpu)?);
        }
    }
    for (name, (first, second)) in &saved.state.optimizer.buffers {
        tensors.insert(format!("first/{name}"), Tensor::from_slice(first, first.len(), cpu)?);
        tensors.insert(format!("second/{name}"), Tensor::from_slice(second, second.len(), cpu)?);
    }
    // The curve as f64 rows (NaN train metrics of the first evaluation included, which JSON
    // cannot hold); the iteration is exact in f64.
    let rows: Vec<f64> =
        saved.state.curve.iter().flat_map(|p| [p.iteration as f64, p.train_loss, p.train_acc, p.val_loss, p.val_acc, p.test_loss, p.test_acc]).collect();
    tensors.insert("curve".into(), Tensor::from_vec(rows, (saved.state.curve.len(), 7), cpu)?);
    let position = |at: Option<u128>| at.map_or_else(String::new, |at| at.to_string());
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("iteration".to_string(), saved.state.iteration.to_string()),
        ("optimizer_step".to_string(), saved.state.optimizer.step.to_string()),
        ("augment_at".to_string(), position(saved.state.augment_at)),
        ("dropout_at".to_string(), position(saved.state.dropout_at)),
        // The f64 sum by its bits, exact.
        ("running_loss_sum_bits".to_string(), saved.state.running.loss_sum.to_bits().to_string()),
        ("running_correct".to_string(), saved.state.running.correct.to_string()),
        ("running_seen".to_string(), saved.state.running.seen.to_string()),
        ("running_batches".to_string(), saved.state.running.batches.to_string()),
        ("sha256".to_string(), digest(&tensors)?),
    ]);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let bytes = safetensors::serialize(tensors.iter(), Some(metadata))
        .map_err(|e| Error::Invalid(format!("{}: cannot serialize the checkpoint ({e})", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads a checkpoint of `arch`'s network, checking every name and shape.
pub fn load(path: &Path, arch: &Architecture) -> Result<Saved> {
    let bytes = std::fs::read(path).at(path)?;
    let damaged = |reason: String| damaged_tensors(path, reason);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| damaged(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| metadata.get(key).cloned().ok_or_else(|| damaged(format!("no `{key}` in its metadata")));
    if field("format")? != FORMAT {
        return Err(damaged(format!("layout {} where this lth writes {FORMAT}", field("format")?)));
    }
    let number = |key: &str| -> Result<u128> { field(key)?.parse().map_err(|_| damaged(format!("`{key}` is not a number"))) };
    let position = |key: &str| -> Result<Option<u128>> {
        if field(key)?.is_empty() {
            Ok(None)
        } else {
            number(key).map(Some)
        }
    };
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| damaged(e.to_string()))?;
    if digest(tensors.iter())? != field("sha256")? {
        return Err(damaged("its tensors do not match the SHA-256 in its header".into()));
    }
    let weights = take_weights(&mut tensors, "weights/", arch, path)?;
    let rewind = if tensors.contains_key(&format!("rewind/{}", arch.params[0].name)) { Some(take_weights(&mut tensors, "rewind/", arch, path)?) } else { None };
    let curve = tensors.remove("curve").ok_or_else(|| damaged("no tensor `curve`".into()))?;
    let curve: Vec<CurvePoint> = curve
        .to_vec2::<f64>()
        .map_err(|e| damaged(format!("`curve` ({e})")))?
        .into_iter()
        .map(|r| match r[..] {
            [iteration, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc] => {
                Ok(CurvePoint { iteration: iteration as usize, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc })
            }
            _ => Err(damaged(format!("a `curve` row of {} values, 7 expected", r.len()))),
        })
        .collect::<Result<_>>()?;
    // What remains are the optimizer's buffers, in pairs.
    let mut buffers = BTreeMap::new();
    for name in tensors.keys().filter_map(|k| k.strip_prefix("first/")).map(str::to_owned).collect::<Vec<_>>() {
        let first = tensors.remove(&format!("first/{name}")).ok_or_else(|| damaged(format!("no tensor `first/{name}`")))?;
        let second = tensors.remove(&format!("second/{name}")).ok_or_else(|| damaged(format!("no tensor `second/{name}`")))?;
        buffers.insert(name, (first.to_vec1::<f32>()?, second.to_vec1::<f32>()?));
    }
    if let Some(unknown) = tensors.keys().next() {
        return Err(damaged(format!("an unknown tensor `{unknown}`")));
    }
    let count = |key: &str| usize::try_from(number(key)?).map_err(|_| damaged(format!("`{key}` out of range")));
    let iteration = count("iteration")?;
    let running = RunningSums {
        loss_sum: f64::from_bits(u64::try_from(number("running_loss_sum_bits")?).map_err(|_| damaged("`running_loss_sum_bits` out of range".into()))?),
        correct: u32::try_from(number("running_correct")?).map_err(|_| damaged("`running_correct` out of range".into()))?,
        seen: count("running_seen")?,
        batches: count("running_batches")?,
    };
    let step = i32::try_from(number("optimizer_step")?).map_err(|_| damaged("`optimizer_step` out of range".into()))?;
    let state = TrainState {
        iteration,
        curve,
        running,
        optimizer: OptimizerState { step, buffers },
        augment_at: position("augment_at")?,
        dropout_at: position("dropout_at")?,
    };
    Ok(Saved { state, weights, rewind })
}

/// The iteration a checkpoint was saved at, read from its header alone (`lth runs`); None if
/// the header cannot be read.
pub fn saved_at(path: &Path) -> Option<usize> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    // A safetensors header is JSON of a few kilobytes; a larger length is damage.
    let n = usize::try_from(u64::from_le_bytes(len)).ok().filter(|&n| n <= 1 << 24)?;
    let mut header = vec![0u8; n];
    file.read_exact(&mut header).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&header).ok()?;
    json.get("__metadata__")?.get("iteration")?.as_str()?.parse().ok()
}

/// The SHA-256 of tensors' names and values, in name order.
fn digest<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Result<String> {
    let sorted: BTreeMap<&String, &Tensor> = tensors.into_iter().collect();
    let mut hasher = Sha256::new();
    for (name, tensor) in sorted {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        let values = tensor.flatten_all()?;
        match values.dtype() {
            DType::F64 => values.to_vec1::<f64>()?.iter().for_each(|v| hasher.update(v.to_le_bytes())),
            _ => values.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().for_each(|v| hasher.update(v.to_le_bytes())),
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// A level's observer that also saves checkpoints: it wraps the level's [`rewind::Snapshot`]
/// (so θk, once taken, is saved with them) and writes at the first step [`EVERY`] after the
/// level started or last saved. A checkpoint that cannot be written is reported and
/// training goes on (it loses nothing of the result).
pub struct Checkpointing<'a, 'b> {
    pub snapshot: &'a mut rewind::Snapshot<'b>,
    path: PathBuf,
    arch: &'a Architecture,
    progress: &'a Progress,
    last: Instant,
}

impl<'a, 'b> Checkpointing<'a, 'b> {
    pub fn new(snapshot: &'a mut rewind::Snapshot<'b>, path: PathBuf, arch: &'a Architecture, progress: &'a Progress) -> Self {
        Checkpointing { snapshot, path, arch, progress, last: Instant::now() }
    }
}

impl Observer for Checkpointing<'_, '_> {
    fn on_step(&mut self, iteration: usize) {
        self.snapshot.on_step(iteration)
    }
    fn on_eval(&mut self, point: &CurvePoint) {
        self.snapshot.on_eval(point)
    }
    fn snapshot_at(&self) -> Option<usize> {
        self.snapshot.snapshot_at()
    }
    fn on_snapshot(&mut self, iteration: usize, weights: Weights) {
        self.snapshot.on_snapshot(iteration, weights)
    }
    fn checkpoint_due(&mut self, _iteration: usize) -> bool {
        self.last.elapsed() >= EVERY
    }
    fn on_checkpoint(&mut self, state: TrainState, weights: Weights) -> Result<()> {
        let iteration = state.iteration;
        let saved = Saved { state, weights, rewind: self.snapshot.weights.clone() };
        if let Err(e) = save(&self.path, self.arch, &saved) {
            self.progress.line(format!("warning: the checkpoint at iteration {iteration} could not be written ({e}); training goes on without it"));
        }
        self.last = Instant::now();
        Ok(())
    }
}
