//! Seeded initial weights: Gaussian Glorot for every weight, zeros for biases (PAPER.md §1:
//! "Gaussian Glorot" for all networks; bias init is not stated, zeros is the usual choice).
//! candle-nn's own initialisers are not used: candle's CPU RNG cannot be seeded.

use super::{Architecture, Weights};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Draws theta ~ N(0, 2 / (fan_in + fan_out)) per weight tensor, in parameter-name order.
pub fn glorot_normal(arch: &Architecture, rng: &mut ChaCha8Rng) -> Weights {
    arch.params
        .iter()
        .map(|p| {
            let values = if p.prunable.is_some() {
                let std = (2.0 / (p.fan_in + p.fan_out) as f64).sqrt();
                let normal = Normal::new(0.0, std).expect("std is finite and positive");
                (0..p.numel()).map(|_| normal.sample(rng) as f32).collect()
            } else {
                vec![0.0; p.numel()]
            };
            (p.name.clone(), values)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::{stream, Purpose};
    use crate::spec::ModelKind;

    #[test]
    fn glorot_std_and_zero_biases() {
        let arch = Architecture::of(ModelKind::Lenet300100);
        let w = glorot_normal(&arch, &mut stream(1, Purpose::Init));
        let fc1 = &w["fc1.weight"];
        let var = fc1.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / fc1.len() as f64;
        let expected = 2.0 / (784.0 + 300.0);
        assert!((var / expected - 1.0).abs() < 0.02, "variance {var} vs {expected}");
        assert!(w["fc1.bias"].iter().all(|&b| b == 0.0));
    }
}
