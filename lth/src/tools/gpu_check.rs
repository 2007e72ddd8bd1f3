//! `lth gpu-check`: a short check (a few minutes) that a device trains like the CPU, for every
//! network family of the paper. One line `verdict: <item>: ok|FAILED …` per item.
//! - **Parity.** A few training steps of LeNet-300-100 (dense, and a ticket at 5% of weights),
//!   Conv-2, VGG-19 and ResNet-18 in training mode (BatchNorm on batch statistics; ResNet-18
//!   also at 20% of its convolution weights) from the same initial weights, masks and batches:
//!   on the CPU with this project's kernels (fused optimizer, sparse layers, im2col
//!   convolution), and on the device with what runs there, the generic path (candle ops, dense
//!   masked products, candle's conv2d, BatchNorm as candle ops). Reports the largest loss
//!   difference and, per parameter, how far the two updates (final weights minus initial ones)
//!   differ, against stated tolerances.
//! - **Throughput** on the device: training steps per second of every network, dense and under
//!   a mask at 5% (the generic path multiplies by the mask, so a sparse ticket costs what a dense
//!   network does there), and evaluation images per second.
//!
//! On the CPU (`--device cpu` or `cpu-generic`) the device side is the generic path on the CPU
//! (`ops::device`), so the same check runs in the tests without a GPU; there the throughput
//! rows use small batches and one timed step, to exercise the code rather than to measure it.

use crate::base::error::Result;
use crate::base::seeds::{stream, Purpose};
use crate::base::spec::ModelKind;
use crate::nn::{self, Architecture, Weights};
use crate::ops::device::{scalar, to_host, with_path};
use crate::sparsity::masks::Mask;
use crate::tools::bench::{images, mask_at, per_second, recipe, scope};
use crate::train::optim::{Implementation, MaskedOptimizer};
use crate::train::training::{MaskedNetwork, MaskedTrainer};
use candle_core::{Device, Tensor};
use std::time::Instant;

/// Largest relative loss difference accepted: f32 products summed in another order.
const LOSS_TOLERANCE: f64 = 1e-3;
/// Largest difference accepted between the two updates of a parameter, `‖u_cpu − u_dev‖ /
/// ‖u_cpu‖` (u: final weights minus initial ones, Euclidean norms). Summation order alone
/// changes gradients by about 1e-6 of their size, but not everywhere: where a value before a
/// ReLU lies within rounding of 0, one side passes its gradient and the other does not (one
/// such value in ResNet-18's block 4 changed a 288-weight slice of that convolution's gradient
/// by 1.5% of the gradient's largest entry), and Adam moves a weight whose tiny gradient changes
/// sign by 2·lr. Such differences touch a few weights and stay near 1e-2 of an update; a wrong
/// gradient, mask or update rule in a layer differs by the size of the update itself.
const UPDATE_TOLERANCE: f64 = 5e-2;
/// The density of the throughput rows' sparse networks.
const SPARSE_DENSITY: f64 = 0.05;

/// One parity workload: a network, the fraction of its weights kept, its batch and steps.
struct Workload {
    kind: ModelKind,
    density: f64,
    batch: usize,
    steps: usize,
    label: &'static str,
}

/// The networks' batches are their recipes' (60) except VGG-19's and ResNet-18's, which need
/// no paper-sized batch for a parity check: small ones keep the CPU side short. Those two take
/// one step: at SGD's lr 0.1 a second step's forward pass already carries the first step's
/// ReLU flips (see [`UPDATE_TOLERANCE`]) into every weight.
const WORKLOADS: [Workload; 6] = [
    Workload { kind: ModelKind::Lenet300100, density: 1.0, batch: 60, steps: 5, label: "LeNet-300-100, dense" },
    Workload { kind: ModelKind::Lenet300100, density: 0.05, batch: 60, steps: 5, label: "LeNet-300-100, 5% remaining" },
    Workload { kind: ModelKind::Conv2, density: 1.0, batch: 60, steps: 5, label: "Conv-2, dense" },
    Workload { kind: ModelKind::Vgg19, density: 1.0, batch: 16, steps: 1, label: "VGG-19, dense, training mode (BatchNorm)" },
    Workload { kind: ModelKind::Resnet18, density: 1.0, batch: 32, steps: 1, label: "ResNet-18, dense, training mode (BatchNorm)" },
    Workload { kind: ModelKind::Resnet18, density: 0.2, batch: 32, steps: 1, label: "ResNet-18, 20% of conv weights, training mode" },
];

pub struct Parity {
    pub workload: String,
    pub steps: usize,
    pub loss_diff: f64,
    /// The largest relative update difference over the parameters, and that parameter.
    pub update_diff: f64,
    pub worst: String,
}

impl Parity {
    pub fn ok(&self) -> bool {
        self.loss_diff <= LOSS_TOLERANCE && self.update_diff <= UPDATE_TOLERANCE
    }
}

/// The parity rows: the CPU kernels against the generic path on `dev`.
pub fn parity(dev: &Device) -> Result<Vec<Parity>> {
    let mut rows = Vec::new();
    for w in &WORKLOADS {
        let (theta0, _) = ticket(w.kind, w.density);
        let (cpu_losses, cpu_weights) = with_path(false, || train(w, &Device::Cpu, Implementation::Fused, true))?;
        let (dev_losses, dev_weights) = with_path(true, || train(w, dev, Implementation::CandleOps, false))?;
        let loss_diff = cpu_losses.iter().zip(&dev_losses).map(|(a, b)| ((a - b) / a.abs().max(1e-12)).abs()).fold(0.0, f64::max);
        let (mut update_diff, mut worst) = (0.0, String::new());
        for (name, start) in &theta0 {
            let diff = update_difference(start, &cpu_weights[name], &dev_weights[name]);
            if diff > update_diff || worst.is_empty() {
                (update_diff, worst) = (diff, name.clone());
            }
        }
        rows.push(Parity { workload: w.label.into(), steps: w.steps, loss_diff, update_diff, worst });
    }
    Ok(rows)
}

/// `‖a − b‖ / ‖a − start‖` for the updates `a − start` and `b − start`, in f64; 0 where
/// neither moved (BatchNorm's running statistics in a network without it), and infinite where
/// only the device's moved.
fn update_difference(start: &[f32], a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut size) = (0f64, 0f64);
    for ((&s, &x), &y) in start.iter().zip(a).zip(b) {
        diff += (x as f64 - y as f64).powi(2);
        size += (x as f64 - s as f64).powi(2);
    }
    match (diff, size) {
        (d, _) if d == 0.0 => 0.0,
        (_, s) if s == 0.0 => f64::INFINITY,
        (d, s) => (d / s).sqrt(),
    }
}

/// Seeded initial weights of `kind` and their mask at `density` (1: dense).
fn ticket(kind: ModelKind, density: f64) -> (Weights, Mask) {
    let arch = Architecture::of(kind);
    let theta0 = nn::initial_weights(&arch, &mut stream(0, Purpose::Init));
    let mask = if density < 1.0 { mask_at(&arch, &theta0, density, scope(kind)) } else { Mask::dense(&arch) };
    (theta0, mask)
}

/// `w.steps` training steps from seeded weights on batches that differ per step; returns the
/// losses and the final weights.
fn train(w: &Workload, dev: &Device, implementation: Implementation, sparse: bool) -> Result<(Vec<f64>, Weights)> {
    let (theta0, mask) = ticket(w.kind, w.density);
    let params = nn::to_params(&Architecture::of(w.kind), &theta0, dev)?;
    let masked = MaskedNetwork::new(w.kind, &params, &mask, dev, sparse)?;
    let mut trainer = MaskedTrainer::new(masked, MaskedOptimizer::new(recipe(w.kind).0, implementation));
    let all = images(w.kind, w.batch * w.steps)?.to_device(dev)?;
    let mut losses = Vec::new();
    for step in 0..w.steps {
        let xs = all.narrow(0, step * w.batch, w.batch)?;
        let ys = Tensor::from_vec((0..w.batch as u32).map(|i| (i * 7 + step as u32) % 10).collect::<Vec<_>>(), w.batch, dev)?;
        let step = trainer.step(&xs, &ys, None)?;
        losses.push(scalar::<f32>(&step.loss)? as f64);
    }
    trainer.masked.write_back(&params)?;
    Ok((losses, nn::weights_of(&params)?))
}

/// One throughput row.
pub struct Throughput {
    pub kind: ModelKind,
    pub density: f64,
    pub batch: usize,
    pub train_steps_per_s: f64,
    pub eval_images_per_s: f64,
}

/// Training steps per second of `kind` on `dev` under a mask at `density` (1: dense), at the
/// network's own batch size (60, or 64 for VGG-19 and 128 for ResNet-18; 8 on the CPU), and
/// evaluation images per second.
pub fn throughput(dev: &Device, kind: ModelKind, density: f64) -> Result<Throughput> {
    let on_cpu = dev.is_cpu();
    let (theta0, mask) = ticket(kind, density);
    let params = nn::to_params(&Architecture::of(kind), &theta0, dev)?;
    let (rule, batch) = recipe(kind);
    let batch = if on_cpu { 8 } else { batch };
    let mut trainer = MaskedTrainer::new(MaskedNetwork::new(kind, &params, &mask, dev, true)?, MaskedOptimizer::for_device(rule, dev));
    let xs = images(kind, batch)?.to_device(dev)?;
    let ys = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, dev)?;
    // On the CPU: one untimed-warm-up-free step each, to run the code (see the module docs).
    let timed = |steps: usize, f: &mut dyn FnMut() -> Result<()>| if on_cpu { once(f) } else { per_second(steps, f) };
    let steps = 50;
    let train_steps_per_s = timed(steps, &mut || {
        let step = trainer.step(&xs, &ys, None)?;
        // Reading the loss back waits for the device to finish the step.
        scalar::<f32>(&step.loss)?;
        Ok(())
    })?;
    let n = match (on_cpu, kind) {
        (true, _) => 16,
        (false, ModelKind::Lenet300100) => 510,
        (false, _) => 130,
    };
    let eval_xs = images(kind, n)?.to_device(dev)?;
    let eval_images_per_s = n as f64
        * timed(steps, &mut || {
            to_host::<u32>(&trainer.net().forward(&eval_xs)?.argmax(1)?)?;
            Ok(())
        })?;
    Ok(Throughput { kind, density, batch, train_steps_per_s, eval_images_per_s })
}

/// `f` run once, as runs per second.
fn once(f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(1.0 / start.elapsed().as_secs_f64())
}

/// The verdict line of one item.
fn verdict(item: &str, ok: bool, detail: &str) -> String {
    format!("verdict: {item}: {} ({detail})", if ok { "ok" } else { "FAILED" })
}

/// Runs both parts and prints a report; returns whether parity held.
pub fn run(dev: &Device) -> Result<bool> {
    println!("gpu-check on {dev:?}\n\n| parity workload | steps | max relative loss difference | max relative update difference (parameter) | within tolerance ({LOSS_TOLERANCE:e}, {UPDATE_TOLERANCE:e}) |\n|---|---|---|---|---|");
    let rows = parity(dev)?;
    for p in &rows {
        println!("| {} | {} | {:.2e} | {:.2e} ({}) | {} |", p.workload, p.steps, p.loss_diff, p.update_diff, p.worst, if p.ok() { "yes" } else { "NO" });
    }
    println!("\n| network | kept | batch | train steps/s | evaluation images/s |\n|---|---|---|---|---|");
    let mut lines: Vec<String> = rows
        .iter()
        .map(|p| verdict(&format!("parity {}", p.workload), p.ok(), &format!("loss {:.2e}, update {:.2e} in {}", p.loss_diff, p.update_diff, p.worst)))
        .collect();
    for kind in [ModelKind::Lenet300100, ModelKind::Conv2, ModelKind::Conv4, ModelKind::Conv6, ModelKind::Vgg19, ModelKind::Resnet18] {
        for density in [1.0, SPARSE_DENSITY] {
            let t = throughput(dev, kind, density)?;
            let kept = format!("{:.0}%", 100.0 * t.density);
            println!("| {kind:?} | {kept} | {} | {:.1} | {:.0} |", t.batch, t.train_steps_per_s, t.eval_images_per_s);
            let finite = t.train_steps_per_s.is_finite() && t.eval_images_per_s.is_finite();
            lines.push(verdict(
                &format!("throughput {kind:?} at {kept}"),
                finite,
                &format!("{:.1} steps/s, {:.0} images/s", t.train_steps_per_s, t.eval_images_per_s),
            ));
        }
    }
    let all_ok = rows.iter().all(Parity::ok);
    println!("\n{}\n\nparity: {}", lines.join("\n"), if all_ok { "ok" } else { "FAILED" });
    Ok(all_ok)
}
