//! Pruning at initialization (beyond the paper, issue #28): a mask chosen at θ0, before any
//! training, by one score per prunable weight ranked over every prunable layer together, so
//! that a method may empty a whole layer ("layer collapse") and the per-layer densities show it.
//! Each keeps exactly `keep` weights (the count of the IMP level it is compared with):
//! - random: `keep` weights drawn uniformly from all of them (every layer about equally dense);
//! - magnitude: the largest |θ0|;
//! - SNIP (Lee et al., 2019): the largest |θ0 ⊙ ∂L/∂θ| for the cross-entropy of one batch;
//! - SynFlow (Tanaka et al., 2020): with every parameter replaced by its magnitude, R = Σ f(1)
//!   for one all-ones input, the largest |θ ⊙ ∂R/∂θ|, rescored over `rounds` rounds that
//!   keep (keep / n)^(r / rounds) of the n weights after round r (its exponential schedule).
//!
//! Ties go to the earlier layer (by name), then the lower index, as in global magnitude pruning.

use crate::base::error::{Error, Result};
use crate::base::spec::ModelKind;
use crate::nn::{self, linear::Compact, Architecture, Weights};
use crate::sparsity::masks::Mask;
use crate::sparsity::pruning::keep_largest_global;
use candle_core::{Device, Tensor};
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// `keep` of the prunable weights at random, uniformly over all of them.
pub fn random(arch: &Architecture, keep: usize, rng: &mut ChaCha8Rng) -> Mask {
    let mut mask = Mask::dense(arch);
    let total = arch.n_weights();
    let mut kept = vec![false; total];
    for i in sample(rng, total, keep.min(total)) {
        kept[i] = true;
    }
    let mut flags = kept.into_iter();
    for layer in mask.layers.values_mut() {
        layer.keep.iter_mut().zip(flags.by_ref()).for_each(|(k, on)| *k = if on { 1.0 } else { 0.0 });
    }
    mask
}

/// The `keep` largest |θ0| over every prunable layer.
pub fn magnitude(arch: &Architecture, theta0: &Weights, keep: usize) -> Mask {
    top(arch, &prunable_abs(arch, theta0), keep)
}

/// SNIP's saliency |θ ⊙ g| (g: the gradient of the mean cross-entropy of the batch
/// `(xs, labels)` at θ), by prunable parameter.
pub fn snip_scores(model: ModelKind, arch: &Architecture, theta: &Weights, xs: &Tensor, labels: &Tensor) -> Result<Weights> {
    let params = nn::to_params(arch, theta, xs.device())?;
    let net = nn::build(model, &params, &Compact::none())?;
    let step = net.train_step(xs, labels, None)?;
    saliency(arch, &params, &step.grads)
}

/// The `keep` weights of largest SNIP saliency on the batch `(xs, labels)`.
pub fn snip(model: ModelKind, arch: &Architecture, theta0: &Weights, keep: usize, (xs, labels): (&Tensor, &Tensor)) -> Result<Mask> {
    Ok(top(arch, &snip_scores(model, arch, theta0, xs, labels)?, keep))
}

/// SynFlow's scores |θ ⊙ ∂R/∂θ| of the network with parameters |θ| (the pruned weights of
/// `mask` zero), R the sum of its logits for one all-ones image of `input` shape. Networks with
/// BatchNorm are refused: their normalisation of a single image is not SynFlow's linear path.
pub fn synflow_scores(model: ModelKind, arch: &Architecture, theta: &Weights, mask: &Mask, input: &[usize]) -> Result<Weights> {
    if arch.params.iter().any(|p| p.name.ends_with(".running_mean")) {
        return Err(Error::Invalid(format!("SynFlow is implemented for networks without BatchNorm (LeNet-300-100, Conv-2/4/6), not {model:?}")));
    }
    let positive: Weights = theta
        .iter()
        .map(|(name, values)| {
            let keep = mask.layers.get(name).map(|l| l.keep.as_slice());
            let abs = values.iter().enumerate().map(|(i, v)| if keep.is_some_and(|k| k[i] == 0.0) { 0.0 } else { v.abs() }).collect();
            (name.clone(), abs)
        })
        .collect();
    let params = nn::to_params(arch, &positive, &Device::Cpu)?;
    let net = nn::build(model, &params, &Compact::none())?;
    let mut shape = vec![1];
    shape.extend_from_slice(input);
    let ones = Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu)?;
    let grads = net.forward_t(&ones, None)?.sum_all()?.backward()?;
    saliency(arch, &params, &grads)
}

/// The `keep` weights SynFlow keeps after `rounds` rounds of rescoring.
pub fn synflow(model: ModelKind, arch: &Architecture, theta0: &Weights, keep: usize, input: &[usize], rounds: usize) -> Result<Mask> {
    let (total, rounds) = (arch.n_weights() as f64, rounds.max(1));
    let mut mask = Mask::dense(arch);
    for round in 1..=rounds {
        let scores = synflow_scores(model, arch, theta0, &mask, input)?;
        // total · (keep/total)^(round/rounds) never rounds below `keep`; the last round is exact.
        let count = if round == rounds { keep } else { (total * (keep as f64 / total).powf(round as f64 / rounds as f64)).round() as usize };
        mask = keep_largest_global(&mask, &scores, &names(arch), count);
    }
    Ok(mask)
}

/// Each prunable layer's kept fraction, in name order: where a method collapses a layer.
pub fn densities(mask: &Mask) -> Vec<(String, f64)> {
    mask.layers.iter().map(|(name, l)| (name.clone(), l.remaining() as f64 / l.keep.len().max(1) as f64)).collect()
}

fn names(arch: &Architecture) -> Vec<String> {
    arch.prunable().map(|p| p.name.clone()).collect()
}

fn top(arch: &Architecture, scores: &Weights, keep: usize) -> Mask {
    keep_largest_global(&Mask::dense(arch), scores, &names(arch), keep)
}

fn prunable_abs(arch: &Architecture, theta: &Weights) -> Weights {
    arch.prunable().map(|p| (p.name.clone(), theta[&p.name].iter().map(|v| v.abs()).collect())).collect()
}

/// |θ ⊙ g| by prunable parameter, in f32 on the host.
fn saliency(arch: &Architecture, params: &nn::Params, grads: &candle_core::backprop::GradStore) -> Result<Weights> {
    arch.prunable()
        .map(|p| {
            let var = &params[&p.name];
            let g = grads.get(var.as_tensor()).ok_or_else(|| Error::Invalid(format!("no gradient for `{}`", p.name)))?;
            let score = (var.as_tensor() * g)?.abs()?;
            Ok((p.name.clone(), crate::ops::device::to_host::<f32>(&score)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::seeds::{stream, Purpose};
    use crate::base::spec::{PruningScope, PruningSpec};
    use crate::sparsity::pruning::level_counts;

    const LENET: ModelKind = ModelKind::Lenet300100;

    fn lenet() -> (Architecture, Weights) {
        let arch = Architecture::of(LENET);
        let theta0 = nn::initial_weights(&arch, &mut stream(0, Purpose::Init));
        (arch, theta0)
    }

    /// What level 3 of LeNet's ticket keeps (fc 20%, output 10% per round): 51.2%.
    fn level3(arch: &Architecture) -> usize {
        let spec = PruningSpec { scope: PruningScope::Layerwise, conv: None, fc: 0.2, output: 0.1 };
        level_counts(arch, &spec, 3).iter().map(|(_, n)| n).sum()
    }

    fn kept(mask: &Mask) -> usize {
        mask.layers.values().map(|l| l.remaining()).sum()
    }

    /// A weight matrix (out, in) of `theta` in f64.
    fn matrix(theta: &Weights, name: &str, arch: &Architecture) -> Vec<Vec<f64>> {
        let shape = &arch.params.iter().find(|p| p.name == name).unwrap().shape;
        theta[name].chunks(shape[1]).map(|row| row.iter().map(|&v| v as f64).collect()).collect()
    }

    /// How many kept weights of `mask` are not among the `keep` largest `reference` scores.
    fn disagreements(mask: &Mask, reference: &[(String, Vec<f64>)], keep: usize) -> usize {
        let mut all: Vec<f64> = reference.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        all.sort_by(|a, b| b.total_cmp(a));
        let threshold = all[keep - 1];
        reference.iter().map(|(name, s)| s.iter().zip(&mask.layers[name].keep).filter(|(&s, &k)| (k != 0.0) != (s >= threshold)).count()).sum()
    }

    #[test]
    fn every_method_keeps_exactly_the_requested_count() {
        let (arch, theta0) = lenet();
        let keep = level3(&arch);
        let xs = Tensor::from_vec((0..8 * 784).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect::<Vec<_>>(), (8, 1, 28, 28), &Device::Cpu).unwrap();
        let labels = Tensor::from_vec((0..8u32).map(|i| i % 10).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap();
        let masks = [
            random(&arch, keep, &mut stream(0, Purpose::Init)),
            magnitude(&arch, &theta0, keep),
            snip(LENET, &arch, &theta0, keep, (&xs, &labels)).unwrap(),
            synflow(LENET, &arch, &theta0, keep, &[1, 28, 28], 5).unwrap(),
        ];
        for mask in &masks {
            assert_eq!(kept(mask), keep);
            assert_eq!(mask.layers.keys().collect::<Vec<_>>(), Mask::dense(&arch).layers.keys().collect::<Vec<_>>());
        }
        // Uniform random: every layer near the overall density (51.2%).
        for (name, density) in densities(&masks[0]) {
            assert!((density - 0.512).abs() < 0.05, "{name}: {density}");
        }
    }

    /// SNIP's scores are |w · ∂L/∂w| of a by-hand backward in f64 through LeNet (zero biases at
    /// θ0), to float tolerance, and its mask is the reference's top-k but for near-ties.
    #[test]
    fn snip_matches_a_by_hand_backward() {
        let (arch, theta0) = lenet();
        let batch = 4;
        let images: Vec<f32> = (0..batch * 784).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
        let labels: Vec<u32> = vec![3, 1, 4, 1];
        let xs = Tensor::from_vec(images.clone(), (batch, 1, 28, 28), &Device::Cpu).unwrap();
        let ys = Tensor::from_vec(labels.clone(), batch, &Device::Cpu).unwrap();
        let scores = snip_scores(LENET, &arch, &theta0, &xs, &ys).unwrap();

        let w = ["fc1.weight", "fc2.weight", "fc3.weight"].map(|n| matrix(&theta0, n, &arch));
        let mut grads: Vec<Vec<Vec<f64>>> = w.iter().map(|m| vec![vec![0.0; m[0].len()]; m.len()]).collect();
        let affine = |m: &Vec<Vec<f64>>, x: &[f64]| m.iter().map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()).collect::<Vec<f64>>();
        for b in 0..batch {
            let x: Vec<f64> = images[b * 784..(b + 1) * 784].iter().map(|&v| v as f64).collect();
            let h1: Vec<f64> = affine(&w[0], &x).into_iter().map(|v| v.max(0.0)).collect();
            let h2: Vec<f64> = affine(&w[1], &h1).into_iter().map(|v| v.max(0.0)).collect();
            let z = affine(&w[2], &h2);
            let max = z.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let dz: Vec<f64> = z.iter().enumerate().map(|(i, v)| ((v - max).exp() / sum - (i == labels[b] as usize) as u8 as f64) / batch as f64).collect();
            let back = |m: &Vec<Vec<f64>>, d: &[f64], h: &[f64]| {
                (0..m[0].len()).map(|j| if h[j] > 0.0 { (0..m.len()).map(|i| m[i][j] * d[i]).sum() } else { 0.0 }).collect::<Vec<f64>>()
            };
            let dh2 = back(&w[2], &dz, &h2);
            let dh1 = back(&w[1], &dh2, &h1);
            for (g, (d, input)) in grads.iter_mut().zip([(&dh1, &x), (&dh2, &h1), (&dz, &h2)]) {
                for (i, row) in g.iter_mut().enumerate() {
                    row.iter_mut().zip(input.iter()).for_each(|(gij, xj)| *gij += d[i] * xj);
                }
            }
        }
        let reference: Vec<(String, Vec<f64>)> = ["fc1.weight", "fc2.weight", "fc3.weight"]
            .iter()
            .zip(w.iter().zip(&grads))
            .map(|(name, (m, g))| (name.to_string(), m.iter().flatten().zip(g.iter().flatten()).map(|(a, b)| (a * b).abs()).collect()))
            .collect();
        let largest = reference.iter().flat_map(|(_, s)| s.iter().copied()).fold(0.0, f64::max);
        for (name, expected) in &reference {
            for (got, want) in scores[name].iter().zip(expected) {
                assert!((*got as f64 - want).abs() <= 1e-4 * largest, "{name}: {got} vs {want}");
            }
        }
        let keep = level3(&arch);
        let mask = top(&arch, &scores, keep);
        assert!(disagreements(&mask, &reference, keep) <= keep / 1000, "{} of {keep}", disagreements(&mask, &reference, keep));
    }

    /// SynFlow through LeNet (zero biases) is a product of positive matrices: R = 1ᵀ A3 A2 A1 1,
    /// so each score has a closed form. Rescored over five rounds of the exponential schedule in
    /// f64, it keeps the same weights but for near-ties.
    #[test]
    fn synflow_matches_its_closed_form_over_the_iterative_schedule() {
        let (arch, theta0) = lenet();
        let names = ["fc1.weight", "fc2.weight", "fc3.weight"];
        let keep = level3(&arch);
        let rounds = 5;
        let total = arch.n_weights() as f64;
        let mut alive: Vec<Vec<Vec<bool>>> = names.iter().map(|n| matrix(&theta0, n, &arch).iter().map(|r| vec![true; r.len()]).collect()).collect();
        for round in 1..=rounds {
            let a: Vec<Vec<Vec<f64>>> = names
                .iter()
                .zip(&alive)
                .map(|(n, live)| {
                    matrix(&theta0, n, &arch).iter().zip(live).map(|(r, l)| r.iter().zip(l).map(|(v, &on)| if on { v.abs() } else { 0.0 }).collect()).collect()
                })
                .collect();
            let apply = |m: &Vec<Vec<f64>>, x: &[f64]| m.iter().map(|row| row.iter().zip(x).map(|(p, q)| p * q).sum::<f64>()).collect::<Vec<f64>>();
            let pull = |m: &Vec<Vec<f64>>, y: &[f64]| (0..m[0].len()).map(|j| (0..m.len()).map(|i| y[i] * m[i][j]).sum()).collect::<Vec<f64>>();
            let h1 = apply(&a[0], &vec![1.0; 784]);
            let h2 = apply(&a[1], &h1);
            let up3 = vec![1.0; 10];
            let up2 = pull(&a[2], &up3);
            let up1 = pull(&a[1], &up2);
            let inputs = [vec![1.0; 784], h1, h2];
            let ups = [up1, up2, up3];
            let reference: Vec<(String, Vec<f64>)> = names
                .iter()
                .enumerate()
                .map(|(l, n)| {
                    (
                        n.to_string(),
                        a[l].iter()
                            .enumerate()
                            .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, v)| (i, j, v)))
                            .map(|(i, j, v)| v * ups[l][i] * inputs[l][j])
                            .collect::<Vec<f64>>(),
                    )
                })
                .collect();
            let count = if round == rounds { keep } else { (total * (keep as f64 / total).powf(round as f64 / rounds as f64)).round() as usize };
            let mut all: Vec<f64> = reference.iter().flat_map(|(_, s)| s.iter().copied()).collect();
            all.sort_by(|a, b| b.total_cmp(a));
            let threshold = all[count - 1];
            for (l, (_, s)) in reference.iter().enumerate() {
                let width = alive[l][0].len();
                for (k, &score) in s.iter().enumerate() {
                    alive[l][k / width][k % width] &= score >= threshold && score > 0.0;
                }
            }
        }
        let mask = synflow(LENET, &arch, &theta0, keep, &[1, 28, 28], rounds).unwrap();
        let expected: usize = alive.iter().flatten().flatten().filter(|&&on| on).count();
        assert!(expected.abs_diff(keep) <= keep / 1000, "the reference keeps {expected} of {keep}");
        let mut differ = 0;
        for (l, name) in names.iter().enumerate() {
            differ += mask.layers[*name].keep.iter().zip(alive[l].iter().flatten()).filter(|(&k, &on)| (k != 0.0) != on).count();
        }
        assert!(differ <= keep / 1000, "{differ} of {keep} weights differ from the reference");
    }
}
