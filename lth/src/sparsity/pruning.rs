//! Choosing which weights to remove, as pure functions of weights and masks. Layerwise
//! magnitude pruning removes, in each layer, a fixed fraction of the weights that survive so
//! far, smallest magnitude first (docs/paper.md §1 step 3); ties go to the lower index, so the result
//! is deterministic. Global pruning (VGG-19, ResNet-18) removes a fixed fraction of the
//! convolutions' surviving weights together, under one threshold: the smallest magnitudes
//! across all of them go first, and of equal magnitudes the one in the later layer (by name),
//! then at the higher index, goes first, so the count is exact. One-shot pruning goes straight to the per-layer count that `k` rounds
//! would leave; random pruning keeps the same per-layer counts at random positions.

use crate::base::spec::{PruningScope, PruningSpec};
use crate::nn::{Architecture, LayerKind, Weights};
use crate::sparsity::masks::{LayerMask, Mask};
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// The per-round rate of each prunable parameter.
pub fn rates(arch: &Architecture, spec: &PruningSpec) -> Vec<(String, f64)> {
    arch.prunable()
        .map(|p| {
            let rate = match p.prunable {
                Some(LayerKind::Conv) => spec.conv.unwrap_or(0.0),
                Some(LayerKind::Fc) => spec.fc,
                Some(LayerKind::Output) => spec.output,
                // 1x1 shortcuts are never pruned (docs/paper.md App I.3).
                Some(LayerKind::Shortcut) | None => 0.0,
            };
            (p.name.clone(), rate)
        })
        .collect()
}

/// One round of magnitude pruning under `spec`'s scope.
pub fn prune_round(arch: &Architecture, spec: &PruningSpec, weights: &Weights, mask: &Mask) -> Mask {
    let rates = rates(arch, spec);
    match spec.scope {
        PruningScope::Layerwise => magnitude_round(weights, mask, &rates),
        PruningScope::Global => {
            let convs = global_layers(arch);
            let (others, rate) = split_global(&rates, &convs);
            let remaining = convs.iter().map(|name| mask.layers[name].remaining()).sum();
            keep_largest_global(&magnitude_round(weights, mask, &others), weights, &convs, survivors(remaining, rate))
        }
    }
}

/// One-shot magnitude pruning under `spec`'s scope: from the dense `mask`, straight to the
/// counts `rounds` iterative rounds would leave.
pub fn prune_oneshot(arch: &Architecture, spec: &PruningSpec, weights: &Weights, mask: &Mask, rounds: usize) -> Mask {
    let rates = rates(arch, spec);
    match spec.scope {
        PruningScope::Layerwise => magnitude_oneshot(weights, mask, &rates, rounds),
        PruningScope::Global => {
            let convs = global_layers(arch);
            let (others, rate) = split_global(&rates, &convs);
            let total = convs.iter().map(|name| mask.layers[name].keep.len()).sum();
            keep_largest_global(&magnitude_oneshot(weights, mask, &others, rounds), weights, &convs, survivors_after(total, rate, rounds))
        }
    }
}

/// The layers global pruning ranks together: every convolution (not the 1x1 shortcuts, not the
/// output layer), in name order.
pub fn global_layers(arch: &Architecture) -> Vec<String> {
    arch.prunable().filter(|p| p.prunable == Some(LayerKind::Conv)).map(|p| p.name.clone()).collect()
}

/// The layerwise rates of the layers outside `convs`, and the convolutions' shared rate.
fn split_global(rates: &[(String, f64)], convs: &[String]) -> (Vec<(String, f64)>, f64) {
    let others = rates.iter().filter(|(name, _)| !convs.contains(name)).cloned().collect();
    let rate = rates.iter().find(|(name, _)| convs.contains(name)).map_or(0.0, |(_, r)| *r);
    (others, rate)
}

/// Keeps the `count` largest-magnitude weights among those `mask` keeps in `layers`, ranked
/// together; other layers are left as they are.
pub(super) fn keep_largest_global(mask: &Mask, weights: &Weights, layers: &[String], count: usize) -> Mask {
    let mut alive: Vec<(f32, u32, u32)> = Vec::new();
    for (l, name) in layers.iter().enumerate() {
        let (w, keep) = (&weights[name], &mask.layers[name].keep);
        alive.extend(keep.iter().enumerate().filter(|(_, &k)| k != 0.0).map(|(i, _)| (w[i].abs(), l as u32, i as u32)));
    }
    // Largest magnitude first; equal magnitudes keep the earlier layer, then the lower index.
    // The order is total, so the kept set is unique whatever the selection algorithm does.
    let order = |a: &(f32, u32, u32), b: &(f32, u32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2));
    let mut out = mask.clone();
    if count < alive.len() {
        if count > 0 {
            alive.select_nth_unstable_by(count - 1, order);
        }
        for &(_, l, i) in &alive[count..] {
            out.layers.get_mut(&layers[l as usize]).expect("layers come from the mask").keep[i as usize] = 0.0;
        }
    }
    out
}

/// Weights surviving one round at `rate` out of `remaining`: round(rate · remaining) go.
pub fn survivors(remaining: usize, rate: f64) -> usize {
    remaining - (rate * remaining as f64).round() as usize
}

/// Weights surviving `rounds` rounds from `n`: the count after each round is rounded, exactly
/// as iterative pruning rounds it, so one-shot and random masks match iterative ones.
pub fn survivors_after(n: usize, rate: f64, rounds: usize) -> usize {
    (0..rounds).fold(n, |left, _| survivors(left, rate))
}

/// How many weights level `level` of a ticket keeps, as (layers, count): one entry per layer
/// pruned on its own, and one for the layers pruned globally together.
pub fn level_counts(arch: &Architecture, spec: &PruningSpec, level: usize) -> Vec<(Vec<String>, usize)> {
    let rates = rates(arch, spec);
    let numel = |name: &str| arch.params.iter().find(|p| p.name == name).map_or(0, |p| p.numel());
    let (per_layer, global) = match spec.scope {
        PruningScope::Layerwise => (rates, None),
        PruningScope::Global => {
            let convs = global_layers(arch);
            let (others, rate) = split_global(&rates, &convs);
            let total = convs.iter().map(|name| numel(name)).sum();
            (others, Some((convs, survivors_after(total, rate, level))))
        }
    };
    per_layer.into_iter().map(|(name, rate)| (vec![name.clone()], survivors_after(numel(&name), rate, level))).chain(global).collect()
}

/// One round of layerwise magnitude pruning of the weights `mask` still keeps.
pub fn magnitude_round(weights: &Weights, mask: &Mask, rates: &[(String, f64)]) -> Mask {
    let counts = rates.iter().map(|(name, rate)| (name.clone(), survivors(mask.layers[name].remaining(), *rate)));
    keep_largest(weights, mask, counts)
}

/// One-shot: from the dense `mask`, keep per layer as many weights as `rounds` iterative rounds
/// would, choosing the largest magnitudes of the trained `weights`.
pub fn magnitude_oneshot(weights: &Weights, mask: &Mask, rates: &[(String, f64)], rounds: usize) -> Mask {
    let counts = rates.iter().map(|(name, rate)| (name.clone(), survivors_after(mask.layers[name].keep.len(), *rate, rounds)));
    keep_largest(weights, mask, counts)
}

/// A random mask with the same number of weights per layer as `like`.
pub fn random_like(like: &Mask, rng: &mut ChaCha8Rng) -> Mask {
    let layers = like
        .layers
        .iter()
        .map(|(name, layer)| {
            let mut keep = vec![0.0; layer.keep.len()];
            for i in sample(rng, layer.keep.len(), layer.remaining()) {
                keep[i] = 1.0;
            }
            (name.clone(), LayerMask { shape: layer.shape.clone(), keep })
        })
        .collect();
    Mask { layers }
}

/// Keeps, per layer, the `count` largest-magnitude weights among those `mask` keeps.
fn keep_largest(weights: &Weights, mask: &Mask, counts: impl Iterator<Item = (String, usize)>) -> Mask {
    let mut out = mask.clone();
    for (name, count) in counts {
        let w = &weights[&name];
        let layer = out.layers.get_mut(&name).expect("rates cover exactly the mask's layers");
        let mut alive: Vec<usize> = (0..w.len()).filter(|&i| layer.keep[i] != 0.0).collect();
        // Largest magnitude first; equal magnitudes keep the lower index.
        alive.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
        for &i in &alive[count.min(alive.len())..] {
            layer.keep[i] = 0.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{ParamInfo, Weights};

    fn toy() -> (Architecture, Weights) {
        let arch = Architecture { params: vec![ParamInfo { name: "a.weight".into(), shape: vec![10], prunable: Some(LayerKind::Fc), fan_in: 1, fan_out: 10 }] };
        let w: Weights = [("a.weight".to_string(), vec![0.5, -3.0, 0.1, 2.0, -0.2, 1.0, 0.0, -4.0, 0.3, 0.9])].into();
        (arch, w)
    }

    #[test]
    fn removes_the_smallest_surviving_magnitudes() {
        let (arch, w) = toy();
        let rates = vec![("a.weight".to_string(), 0.2)];
        let m1 = magnitude_round(&w, &Mask::dense(&arch), &rates);
        // 20% of 10 = 2 go: |0.0| and |0.1|.
        assert_eq!(m1.layers["a.weight"].keep, vec![1., 1., 0., 1., 1., 1., 0., 1., 1., 1.]);
        let m2 = magnitude_round(&w, &m1, &rates);
        // round(0.2 * 8) = 2 more go: |-0.2| and |0.3|.
        assert_eq!(m2.layers["a.weight"].remaining(), 6);
        assert!(m2.is_subset_of(&m1));
        assert_eq!(m2.layers["a.weight"].keep[4], 0.0);
        assert_eq!(m2.layers["a.weight"].keep[8], 0.0);
    }

    #[test]
    fn oneshot_counts_match_iterative_rounding() {
        assert_eq!(survivors_after(300, 0.2, 3), 154);
        assert_eq!(survivors_after(1000, 0.1, 2), 810);
    }
}
