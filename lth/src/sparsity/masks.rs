//! The `Mask`: a 0/1 value per prunable weight, keyed by parameter name. It checks its own
//! invariants (keys are exactly the prunable parameters, shapes match, values are 0 or 1),
//! reports the fraction of weights remaining, and persists as safetensors (u8), or, for the
//! copy committed with a run's curves, as gzipped bits (`to_bits_gz`: a thirty-second of the
//! size before compression).

use crate::base::error::{IoContext, Result};
use crate::nn::linear::{Compact, SPARSE_BELOW};
use crate::nn::{Architecture, Params};
use crate::ops::sparse::Pattern;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerMask {
    pub shape: Vec<usize>,
    /// 1.0 keeps the weight, 0.0 prunes it (f32, so training multiplies by it directly).
    pub keep: Vec<f32>,
}

impl LayerMask {
    pub fn remaining(&self) -> usize {
        self.keep.iter().filter(|&&k| k != 0.0).count()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub layers: BTreeMap<String, LayerMask>,
}

impl Mask {
    /// Every prunable weight kept (level 0).
    pub fn dense(arch: &Architecture) -> Self {
        let layers = arch.prunable().map(|p| (p.name.clone(), LayerMask { shape: p.shape.clone(), keep: vec![1.0; p.numel()] })).collect();
        Mask { layers }
    }

    /// Fraction of prunable weights remaining (Pm, as a fraction).
    pub fn remaining(&self) -> f64 {
        let kept: usize = self.layers.values().map(LayerMask::remaining).sum();
        let total: usize = self.layers.values().map(|l| l.keep.len()).sum();
        kept as f64 / total as f64
    }

    /// True if every weight kept here is kept in `other` too (masks only shrink).
    pub fn is_subset_of(&self, other: &Mask) -> bool {
        self.layers.iter().all(|(name, layer)| other.layers.get(name).is_some_and(|o| layer.keep.iter().zip(&o.keep).all(|(&a, &b)| a <= b)))
    }

    /// Zeroes pruned parameters in place on their device.
    pub fn apply(&self, params: &Params, tensors: &MaskTensors) -> Result<()> {
        for name in self.layers.keys() {
            if let (Some(var), Some(m)) = (params.get(name), tensors.get(name)) {
                var.set(&var.as_tensor().mul(m)?)?;
            }
        }
        Ok(())
    }

    /// The mask as f32 tensors on `dev`, shaped like their parameters.
    pub fn to_tensors(&self, dev: &Device) -> Result<MaskTensors> {
        self.layers.iter().map(|(name, l)| Ok((name.clone(), Tensor::from_slice(&l.keep, l.shape.as_slice(), dev)?))).collect()
    }

    /// Checks the invariants against an architecture.
    pub fn validate(&self, arch: &Architecture) -> std::result::Result<(), String> {
        let names: Vec<&String> = arch.prunable().map(|p| &p.name).collect();
        let keys: Vec<&String> = self.layers.keys().collect();
        if names != keys {
            return Err(format!("mask layers {keys:?} differ from the prunable parameters {names:?}"));
        }
        for p in arch.prunable() {
            let layer = &self.layers[&p.name];
            if layer.shape != p.shape || layer.keep.len() != p.numel() {
                return Err(format!("mask `{}` has shape {:?}, parameter has {:?}", p.name, layer.shape, p.shape));
            }
            if layer.keep.iter().any(|&k| k != 0.0 && k != 1.0) {
                return Err(format!("mask `{}` holds values other than 0 and 1", p.name));
            }
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: BTreeMap<String, Tensor> = self
            .layers
            .iter()
            .map(|(name, l)| {
                let bytes: Vec<u8> = l.keep.iter().map(|&k| k as u8).collect();
                Ok((name.clone(), Tensor::from_vec(bytes, l.shape.as_slice(), &Device::Cpu)?))
            })
            .collect::<Result<_>>()?;
        crate::base::files::save_tensors(&tensors, path)
    }

    /// Reads a mask file, checking its invariants against `arch`. Run folders read through
    /// `RunDir::load_mask`, which checks the file against its level's marker first.
    pub fn load(path: &Path, arch: &Architecture) -> Result<Self> {
        Self::from_safetensors(&std::fs::read(path).at(path)?, path, arch)
    }

    /// Parses the bytes of a mask file (`path` names it in errors).
    pub fn from_safetensors(bytes: &[u8], path: &Path, arch: &Architecture) -> Result<Self> {
        let damaged = |reason: String| crate::base::files::damaged_tensors(path, reason);
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| damaged(e.to_string()))?;
        let layers = tensors
            .into_iter()
            .map(|(name, t)| {
                let shape = t.dims().to_vec();
                let keep = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Ok((name, LayerMask { shape, keep }))
            })
            .collect::<Result<_>>()?;
        let mask = Mask { layers };
        mask.validate(arch).map_err(damaged)?;
        Ok(mask)
    }
}

/// The first line of a mask's bits file: its format and version.
const BITS_HEADER: &str = "lth-mask-bits 1";

impl Mask {
    /// The mask as gzipped bits: a text header (the format, then one `name d0xd1x…` line per
    /// layer in name order, then an empty line), then each layer's values one bit each, least
    /// significant first, padded with zeros to a whole byte. The same mask always gives the
    /// same bytes (no time stamp; pure-Rust deflate), so a committed copy never changes.
    pub fn to_bits_gz(&self) -> Result<Vec<u8>> {
        let mut raw = format!("{BITS_HEADER}\n").into_bytes();
        for (name, layer) in &self.layers {
            let dims: Vec<String> = layer.shape.iter().map(usize::to_string).collect();
            raw.extend_from_slice(format!("{name} {}\n", dims.join("x")).as_bytes());
        }
        raw.push(b'\n');
        for layer in self.layers.values() {
            raw.extend(layer.keep.chunks(8).map(|bits| bits.iter().enumerate().fold(0u8, |byte, (i, &k)| byte | (u8::from(k != 0.0) << i))));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).and_then(|()| gz.finish()).map_err(|e| crate::base::error::Error::Invalid(format!("cannot compress a mask ({e})")))
    }

    /// Parses [`Mask::to_bits_gz`]'s bytes, checking the invariants against `arch` (`path`
    /// names the file in errors).
    pub fn from_bits_gz(bytes: &[u8], path: &Path, arch: &Architecture) -> Result<Self> {
        let damaged = |reason: String| crate::base::files::damaged_tensors(path, reason);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).map_err(|e| damaged(format!("not gzip ({e})")))?;
        let mut lines = raw.split(|&b| b == b'\n');
        let mut header_bytes = 0;
        let mut next_line = || {
            let line = lines.next().ok_or_else(|| damaged("ends inside its header".into()))?;
            header_bytes += line.len() + 1;
            std::str::from_utf8(line).map(str::to_owned).map_err(|_| damaged("its header is not text".into()))
        };
        if next_line()? != BITS_HEADER {
            return Err(damaged(format!("does not start with `{BITS_HEADER}`")));
        }
        let mut shapes = Vec::new();
        loop {
            let line = next_line()?;
            if line.is_empty() {
                break;
            }
            let (name, dims) = line.split_once(' ').ok_or_else(|| damaged(format!("header line `{line}` is not `name shape`")))?;
            let shape =
                dims.split('x').map(str::parse).collect::<std::result::Result<Vec<usize>, _>>().map_err(|_| damaged(format!("`{dims}` is not a shape")))?;
            shapes.push((name.to_owned(), shape));
        }
        let mut bits = &raw[header_bytes..];
        let mut layers = BTreeMap::new();
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let (layer, rest) = bits.split_at_checked(n.div_ceil(8)).ok_or_else(|| damaged(format!("ends inside layer `{name}`")))?;
            let keep: Vec<f32> = (0..n).map(|i| f32::from((layer[i / 8] >> (i % 8)) & 1)).collect();
            if n % 8 != 0 && layer[n / 8] >> (n % 8) != 0 {
                return Err(damaged(format!("layer `{name}` has bits set past its end")));
            }
            layers.insert(name, LayerMask { shape, keep });
            bits = rest;
        }
        if !bits.is_empty() {
            return Err(damaged(format!("{} bytes follow the last layer", bits.len())));
        }
        let mask = Mask { layers };
        mask.validate(arch).map_err(damaged)?;
        Ok(mask)
    }
}

/// A mask's layers as tensors on the training device.
pub type MaskTensors = BTreeMap<String, Tensor>;

impl Compact {
    /// Picks the fully connected weights (rank 2) of `mask` that keep fewer than
    /// [`SPARSE_BELOW`] of their weights; none unless `fast` (the CPU kernels run,
    /// `ops::device::fast_kernels`).
    pub fn choose(mask: &Mask, fast: bool) -> Self {
        let patterns = mask
            .layers
            .iter()
            .filter(|(_, l)| fast && l.shape.len() == 2 && (l.remaining() as f64) < SPARSE_BELOW * l.keep.len() as f64)
            .map(|(name, l)| (name.clone(), Arc::new(Pattern::of(&l.keep, l.shape.get(1).copied().unwrap_or(1)))))
            .collect();
        Compact::of(patterns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::spec::ModelKind;

    #[test]
    fn a_mask_survives_its_bits_file_exactly_and_a_damaged_one_is_refused() {
        let arch = Architecture::of(ModelKind::Lenet300100);
        let mut mask = Mask::dense(&arch);
        // A pattern that is not periodic in 8, so every bit's place in its byte is exercised.
        for layer in mask.layers.values_mut() {
            layer.keep.iter_mut().enumerate().for_each(|(i, k)| *k = f32::from(u8::from((i * i + 3 * i) % 7 < 3)));
        }
        let bytes = mask.to_bits_gz().unwrap();
        assert_eq!(bytes, mask.to_bits_gz().unwrap(), "the same mask gives the same bytes");
        let path = Path::new("next-mask.bits.gz");
        assert_eq!(Mask::from_bits_gz(&bytes, path, &arch).unwrap(), mask);
        // Far smaller than its u8 safetensors (266,200 bytes for LeNet's weights).
        assert!(bytes.len() < 266_200 / 6, "{} bytes", bytes.len());
        // Another architecture, a truncated file, and bytes that are not gzip are named errors.
        let other = Architecture::of(ModelKind::Conv2);
        for (bytes, arch) in [(&bytes[..], &other), (&bytes[..bytes.len() - 9], &arch), (&b"not gzip"[..], &arch)] {
            let error = Mask::from_bits_gz(bytes, path, arch).unwrap_err().to_string();
            assert!(error.contains("next-mask.bits.gz"), "{error}");
        }
    }
}
