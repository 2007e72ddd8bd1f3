//! Seeded initial weights: Gaussian Glorot for every weight, zeros for biases (docs/paper.md §1:
//! "Gaussian Glorot" for all networks; bias init is not stated, zeros is the usual choice).
//! candle-nn's own initialisers are not used: candle's CPU RNG cannot be seeded.

use super::{Architecture, Weights};
use crate::ops::math;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Draws theta ~ N(0, 2 / (fan_in + fan_out)) per weight tensor, in parameter-name order.
pub fn glorot_normal(arch: &Architecture, rng: &mut ChaCha8Rng) -> Weights {
    arch.params
        .iter()
        .map(|p| {
            let values = if p.prunable.is_some() {
                let std = (2.0 / (p.fan_in + p.fan_out) as f64).sqrt();
                standard_normal(rng, p.numel()).into_iter().map(|z| (z * std) as f32).collect()
            } else {
                vec![0.0; p.numel()]
            };
            (p.name.clone(), values)
        })
        .collect()
}

/// `count` draws from N(0, 1) by Marsaglia's polar method, two per accepted pair. It needs only
/// `ln` and `sqrt`, and `ln` is the project's own (`crate::ops::math`): rand_distr's sampler calls
/// the platform's `exp`/`ln`, which may differ in the last bit between machines.
pub fn standard_normal(rng: &mut ChaCha8Rng, count: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        let (u, v) = (rng.random::<f64>() * 2.0 - 1.0, rng.random::<f64>() * 2.0 - 1.0);
        let s = u * u + v * v;
        if s >= 1.0 || s == 0.0 {
            continue;
        }
        let factor = (-2.0 * math::ln(s) / s).sqrt();
        out.extend([u * factor, v * factor]);
    }
    out.truncate(count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::seeds::{stream, Purpose};
    use crate::base::spec::ModelKind;

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
