//! Tickets you can ship: a trained level of a run written as a compact sparse model, and read
//! back for inference. One safetensors file:
//!
//! ```text
//! <weight>.values       f32 [kept]        the kept weights, row by row (compressed rows)
//! <weight>.columns      u16 [kept]        each one's column (u32 where a row is longer than 65,536)
//! <weight>.row_offsets  u32 [rows + 1]    where each row's entries start
//! <other>               f32 [its shape]   biases and BatchNorm (scale, shift, running
//!                                         statistics), kept as trained, not folded
//! metadata              format, the run's spec (architecture, dataset, normalisation,
//!                       evaluation subset), run id, level, Pm, the run's final test accuracy,
//!                       and `sha256`: the digest of everything else (below)
//! ```
//!
//! The digest covers every other metadata value and every tensor's name, type, shape and bytes,
//! so a flipped bit in a weight or an edited accuracy is refused when the file is read, instead
//! of giving a wrong accuracy that `lth infer` would blame on the dataset.
//!
//! A weight's rows are its first dimension (output features, or output channels of a
//! convolution) and its columns the rest flattened. BatchNorm is kept rather than folded into
//! the convolutions: folding changes the arithmetic, and the exported model must give the run's
//! test accuracy to the bit. Each kept weight costs 6 bytes against the dense file's 4, so the
//! export is smaller once fewer than about 2/3 of the weights remain.

use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use crate::base::spec::RunSpec;
use crate::data::Dataset;
use crate::nn::linear::Compact;
use crate::nn::{self, Architecture, Weights};
use crate::sparsity::masks::{LayerMask, Mask};
use crate::store::runs::RunDir;
use crate::train::training::{self, MaskedNetwork};
use candle_core::Device;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The format this code writes and reads.
/// `/1` files carried no digest: they are refused, and exported again.
pub const FORMAT: &str = "lth-sparse-ticket/2";

/// A trained ticket: what an export file holds, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub spec: RunSpec,
    pub run: String,
    pub level: usize,
    /// The run's test accuracy at the last iteration of this level.
    pub final_test_acc: f64,
    pub mask: Mask,
    /// Every parameter, dense, pruned weights 0.
    pub weights: Weights,
}

/// The metadata keys, in one place.
mod key {
    pub const FORMAT: &str = "format";
    pub const SPEC: &str = "spec";
    pub const RUN: &str = "run";
    pub const LEVEL: &str = "level";
    pub const REMAINING: &str = "remaining";
    pub const FINAL_TEST_ACC: &str = "final_test_acc";
    pub const SHA256: &str = "sha256";
}

/// The SHA-256 of an export's content: each metadata entry but the digest, then each tensor, in
/// name order, every field length-prefixed so no two contents share a byte stream.
fn content_digest<'a>(metadata: &BTreeMap<&str, &str>, tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (k, v) in metadata.iter().filter(|(k, _)| **k != key::SHA256) {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    for (name, dtype, shape, data) in tensors {
        field(name.as_bytes());
        field(format!("{dtype:?} {shape:?}").as_bytes());
        field(data);
    }
    files::hex(&hasher.finalize())
}

/// Reads finished level `level` of `run` (each file checked against its marker).
pub fn ticket_of(run: &RunDir, level: usize) -> Result<Ticket> {
    let spec = run.spec()?;
    let arch = Architecture::of(spec.method.model);
    let mask = run.load_mask(level, &arch)?;
    let mut weights = run.load_final(level, &arch)?;
    zero_pruned(&mut weights, &mask);
    let curve = run.load_curve(level)?;
    let last = curve.last().ok_or_else(|| Error::Invalid(format!("{}: an empty curve", run.curve_path(level).display())))?;
    Ok(Ticket { spec, run: run.id.0.clone(), level, final_test_acc: last.point.test_acc, mask, weights })
}

/// The export file's bytes.
pub fn to_bytes(ticket: &Ticket) -> Result<Vec<u8>> {
    let arch = Architecture::of(ticket.spec.method.model);
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for p in &arch.params {
        let values = &ticket.weights[&p.name];
        let Some(layer) = ticket.mask.layers.get(&p.name) else {
            tensors.insert(p.name.clone(), (Dtype::F32, p.shape.clone(), le_bytes(values.iter().map(|v| v.to_le_bytes()))));
            continue;
        };
        let rows = p.shape[0];
        let cols = p.numel() / rows;
        let (mut kept, mut columns, mut offsets) = (Vec::new(), Vec::new(), vec![0u32]);
        for (row, keep) in values.chunks_exact(cols).zip(layer.keep.chunks_exact(cols)) {
            for (c, (&v, &k)) in row.iter().zip(keep).enumerate() {
                if k != 0.0 {
                    kept.push(v);
                    columns.push(c as u32);
                }
            }
            offsets.push(kept.len() as u32);
        }
        let n = kept.len();
        let columns = if cols <= 1 << 16 {
            (Dtype::U16, le_bytes(columns.iter().map(|&c| (c as u16).to_le_bytes())))
        } else {
            (Dtype::U32, le_bytes(columns.iter().map(|c| c.to_le_bytes())))
        };
        tensors.insert(format!("{}.values", p.name), (Dtype::F32, vec![n], le_bytes(kept.iter().map(|v| v.to_le_bytes()))));
        tensors.insert(format!("{}.columns", p.name), (columns.0, vec![n], columns.1));
        tensors.insert(format!("{}.row_offsets", p.name), (Dtype::U32, vec![rows + 1], le_bytes(offsets.iter().map(|o| o.to_le_bytes()))));
    }
    let (spec, level, remaining, acc) =
        (ticket.spec.canonical_json(), ticket.level.to_string(), ticket.mask.remaining().to_string(), ticket.final_test_acc.to_string());
    let mut metadata: BTreeMap<&str, &str> = BTreeMap::from([
        (key::FORMAT, FORMAT),
        (key::SPEC, spec.as_str()),
        (key::RUN, ticket.run.as_str()),
        (key::LEVEL, level.as_str()),
        (key::REMAINING, remaining.as_str()),
        (key::FINAL_TEST_ACC, acc.as_str()),
    ]);
    let digest = content_digest(&metadata, tensors.iter().map(|(name, (dtype, shape, bytes))| (name.as_str(), *dtype, shape.as_slice(), bytes.as_slice())));
    metadata.insert(key::SHA256, &digest);
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let views = tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| Ok((name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).map_err(invalid)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(invalid)
}

/// Writes `ticket` to `path` atomically.
pub fn write(ticket: &Ticket, path: &Path) -> Result<()> {
    files::write_atomic(path, &to_bytes(ticket)?)
}

/// Reads an export file, checking its format, its architecture and every index; a file that is
/// not one, is damaged, or does not match its own metadata is one error naming it.
pub fn load(path: &Path) -> Result<Ticket> {
    from_bytes(&std::fs::read(path).at(path)?)
        .map_err(|reason| Error::Invalid(format!("{}: {reason}; export it again with `lth export <run> --level L`", path.display())))
}

fn from_bytes(bytes: &[u8]) -> std::result::Result<Ticket, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).ok_or_else(|| format!("no `{k}` in its metadata, so not an lth export"));
    let format = get(key::FORMAT)?;
    if format != FORMAT {
        return Err(format!("format `{format}`, but this lth reads `{FORMAT}`"));
    }
    let spec: RunSpec = serde_json::from_str(get(key::SPEC)?).map_err(|e| format!("its spec metadata is not a run spec ({e})"))?;
    let number = |k: &str| get(k)?.parse::<f64>().map_err(|e| format!("metadata `{k}` is not a number ({e})"));
    let level = number(key::LEVEL)? as usize;
    let final_test_acc = number(key::FINAL_TEST_ACC)?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("damaged ({e})"))?;
    let arch = Architecture::of(spec.method.model);
    let tensor = |name: &str, dtype: Dtype, len: usize| -> std::result::Result<Vec<u8>, String> {
        let view = file.tensor(name).map_err(|_| format!("no tensor `{name}`, which a {:?} export holds", spec.method.model))?;
        let n: usize = view.shape().iter().product();
        if view.dtype() != dtype || (len != usize::MAX && n != len) {
            return Err(format!("tensor `{name}` is {:?} {:?}, expected {dtype:?} of {len} values", view.dtype(), view.shape()));
        }
        Ok(view.data().to_vec())
    };
    let (mut weights, mut layers) = (Weights::new(), BTreeMap::new());
    for p in &arch.params {
        if p.prunable.is_none() {
            weights.insert(p.name.clone(), f32s(&tensor(&p.name, Dtype::F32, p.numel())?));
            continue;
        }
        let (rows, cols) = (p.shape[0], p.numel() / p.shape[0]);
        let offsets = u32s(&tensor(&format!("{}.row_offsets", p.name), Dtype::U32, rows + 1)?);
        let values = f32s(&tensor(&format!("{}.values", p.name), Dtype::F32, usize::MAX)?);
        let wide = if cols <= 1 << 16 { Dtype::U16 } else { Dtype::U32 };
        let columns_bytes = tensor(&format!("{}.columns", p.name), wide, values.len())?;
        let columns: Vec<u32> =
            if wide == Dtype::U16 { columns_bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect() } else { u32s(&columns_bytes) };
        let (mut dense, mut keep) = (vec![0f32; p.numel()], vec![0f32; p.numel()]);
        if offsets.first() != Some(&0) || offsets.last().map(|&o| o as usize) != Some(values.len()) || offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("`{}.row_offsets` do not run from 0 to its {} values in order", p.name, values.len()));
        }
        for row in 0..rows {
            let mut previous = None;
            for i in offsets[row] as usize..offsets[row + 1] as usize {
                let c = columns[i] as usize;
                if c >= cols || previous.is_some_and(|prev| prev >= c) {
                    return Err(format!("`{}.columns` holds column {c} in row {row}: out of 0..{cols} or out of order", p.name));
                }
                previous = Some(c);
                dense[row * cols + c] = values[i];
                keep[row * cols + c] = 1.0;
            }
        }
        weights.insert(p.name.clone(), dense);
        layers.insert(p.name.clone(), LayerMask { shape: p.shape.clone(), keep });
    }
    // Every index checked above (so a damaged index is named); now every byte, metadata included.
    let mut tensors = file.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata: BTreeMap<&str, &str> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let digest = content_digest(&metadata, tensors.iter().map(|(name, view)| (name.as_str(), view.dtype(), view.shape(), view.data())));
    if *get(key::SHA256)? != digest {
        return Err(format!(
            "its content does not match its recorded digest (sha256 {digest}, recorded {}): the file was changed or damaged since it was exported",
            get(key::SHA256)?
        ));
    }
    let mask = Mask { layers };
    let recorded_remaining = number(key::REMAINING)?;
    if recorded_remaining != mask.remaining() {
        return Err(format!("its metadata says Pm {recorded_remaining} but its indices keep {}", mask.remaining()));
    }
    let run = get(key::RUN)?.clone();
    if run != spec.id().0 {
        return Err(format!("its metadata names run `{run}`, but its spec is that of run `{}`", spec.id().0));
    }
    Ok(Ticket { spec, run, level, final_test_acc, mask, weights })
}

/// Test loss and accuracy of `ticket` on `data`'s test split, evaluated as training evaluates
/// (the sparse kernels where the mask is sparse enough, `nn::linear`); `sparse: false`
/// evaluates the dense masked network instead.
pub fn evaluate(ticket: &Ticket, data: &Dataset, dev: &Device, sparse: bool) -> Result<(f64, f64)> {
    let arch = Architecture::of(ticket.spec.method.model);
    let params = nn::to_params(&arch, &ticket.weights, dev)?;
    let net = MaskedNetwork::new(ticket.spec.method.model, &params, &ticket.mask, dev, sparse)?;
    training::evaluate(net.net.as_ref(), &training::EvalSplit::new(net.net.as_ref(), &data.test)?)
}

/// Bytes the parameters take in memory when `ticket` is evaluated on `dev`: layers the sparse
/// kernels run (fully connected ones below `nn::linear::SPARSE_BELOW` of their weights, on
/// the CPU) hold their kept values and index pattern; every other parameter is dense f32
/// (`sparse: false`: all of them).
pub fn parameter_bytes(ticket: &Ticket, dev: &Device, sparse: bool) -> usize {
    let compact = if sparse { Compact::choose(&ticket.mask, crate::ops::device::fast_kernels(dev)) } else { Compact::none() };
    Architecture::of(ticket.spec.method.model).params.iter().map(|p| compact.sparse_bytes(&p.name).unwrap_or(4 * p.numel())).sum()
}

/// Sets the weights `mask` prunes to 0 (a run's final weights keep whatever they held).
pub fn zero_pruned(weights: &mut Weights, mask: &Mask) {
    for (name, layer) in &mask.layers {
        if let Some(values) = weights.get_mut(name) {
            values.iter_mut().zip(&layer.keep).filter(|(_, &k)| k == 0.0).for_each(|(v, _)| *v = 0.0);
        }
    }
}

fn le_bytes<const N: usize>(items: impl Iterator<Item = [u8; N]>) -> Vec<u8> {
    items.flatten().collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn invalid(e: safetensors::SafeTensorError) -> Error {
    Error::Invalid(format!("writing an export: {e}"))
}
