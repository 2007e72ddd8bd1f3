//! The learning rate as one function of the iteration: linear warmup from 0 to the peak rate
//! over `warmup` iterations, times the drop factor for every drop already passed (docs/paper.md §4,
//! App I). `lr(t)` is the rate of the step taken after `t` steps, so step 1 uses `lr(0)` (0
//! under warmup, as PyTorch's per-iteration `LambdaLR` gives) and a drop at `d` first applies
//! to step `d + 1`, as `MultiStepLR` stepped every iteration does.

use crate::base::spec::LrSchedule;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    peak: f64,
    warmup: usize,
    drops: Vec<usize>,
    factor: f64,
}

impl Schedule {
    /// A constant rate.
    pub fn constant(lr: f64) -> Self {
        Schedule { peak: lr, warmup: 0, drops: Vec::new(), factor: 1.0 }
    }

    /// `spec` for a training of `iterations`: its points move to the same fraction of this
    /// training as of the spec's (rounded to the nearest iteration), so a shorter scale keeps
    /// the schedule's shape.
    pub fn new(lr: f64, spec: &LrSchedule, iterations: usize) -> Self {
        let at = |point: usize| ((point as u128 * iterations as u128 + spec.iterations as u128 / 2) / spec.iterations as u128) as usize;
        Schedule { peak: lr, warmup: at(spec.warmup), drops: spec.drops.iter().map(|&d| at(d)).collect(), factor: spec.drop_factor }
    }

    /// The rate after `t` steps: `peak · min(1, t / warmup) · factor^(drops ≤ t)`.
    pub fn lr(&self, t: usize) -> f64 {
        let warm = if t >= self.warmup { 1.0 } else { t as f64 / self.warmup as f64 };
        let passed = self.drops.iter().filter(|&&d| d <= t).count();
        (0..passed).fold(self.peak * warm, |lr, _| lr * self.factor)
    }

    /// The warmup length and drop points, in this training's iterations.
    #[cfg(test)]
    pub fn points(&self) -> (usize, &[usize]) {
        (self.warmup, &self.drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_training_keeps_the_fractions() {
        let spec = LrSchedule { iterations: 30_000, warmup: 20_000, drops: vec![20_000, 25_000], drop_factor: 0.1 };
        let s = Schedule::new(0.03, &spec, 60);
        assert_eq!(s.points(), (40, &[40, 50][..]));
        assert_eq!(Schedule::new(0.03, &spec, 30_000).points(), (20_000, &[20_000, 25_000][..]));
    }

    #[test]
    fn constant_is_constant() {
        let s = Schedule::constant(0.1);
        assert_eq!((s.lr(0), s.lr(1_000_000)), (0.1, 0.1));
    }
}
