//! `lth gpu-check`: a short check (a minute or two) that a device trains like the CPU.
//! - **Parity.** A few training steps of LeNet-300-100 (dense, and a ticket at 5% of weights),
//!   Conv-2, and ResNet-18 in training mode (BatchNorm on batch statistics; dense and at 20%
//!   of its convolution weights) from the same initial weights, masks and batches: on the CPU with this
//!   project's kernels (fused optimizer, sparse layers, im2col convolution), and on the device
//!   with what runs there (candle ops, dense masked products, candle's conv2d). Reports the
//!   largest loss and weight differences against stated tolerances.
//! - **Throughput** on the device: training steps per second (each network at its own batch
//!   size) and evaluation images per second for every network.
//!
//! With `--device cpu` the "device" side is the plain candle-ops path on the CPU (the optimizer
//! and dense layers; convolution, pooling and BatchNorm keep their CPU kernels there), so the
//! same check runs (and is tested) without a GPU.

use crate::bench::{images, mask_at, per_second, recipe, scope};
use crate::error::Result;
use crate::models::linear::Compact;
use crate::models::{self, Architecture, Weights};
use crate::optim::{Implementation, MaskedOptimizer};
use crate::seeds::{stream, Purpose};
use crate::spec::ModelKind;
use crate::training::MaskedNetwork;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

const STEPS: usize = 5;
/// Largest relative loss difference accepted: f32 products summed in another order.
const LOSS_TOLERANCE: f64 = 1e-3;
/// Largest weight difference accepted after `STEPS` Adam steps of lr 1.2e-3 (ResNet-18's SGD
/// steps move weights by lr · gradient, so their float differences stay far below it): Adam moves each
/// weight by about lr per step whatever its gradient's size, so a weight whose tiny gradient
/// differs in sign between devices may differ by up to 2·lr per step; 2e-3 allows one such step.
const WEIGHT_TOLERANCE: f32 = 2e-3;

pub struct Parity {
    pub workload: String,
    pub loss_diff: f64,
    pub weight_diff: f32,
}

impl Parity {
    pub fn ok(&self) -> bool {
        self.loss_diff <= LOSS_TOLERANCE && self.weight_diff <= WEIGHT_TOLERANCE
    }
}

/// The parity rows: CPU kernels against `dev`.
pub fn parity(dev: &Device) -> Result<Vec<Parity>> {
    let mut rows = Vec::new();
    for (kind, density, label) in [
        (ModelKind::Lenet300100, 1.0, "LeNet-300-100, dense"),
        (ModelKind::Lenet300100, 0.05, "LeNet-300-100, 5% remaining"),
        (ModelKind::Conv2, 1.0, "Conv-2, dense"),
        (ModelKind::Resnet18, 1.0, "ResNet-18, dense, training mode (BatchNorm)"),
        (ModelKind::Resnet18, 0.2, "ResNet-18, 20% of conv weights, training mode"),
    ] {
        let (cpu_losses, cpu_weights) = train(kind, density, &Device::Cpu, Implementation::Fused, true)?;
        let (dev_losses, dev_weights) = train(kind, density, dev, Implementation::CandleOps, false)?;
        let loss_diff = cpu_losses.iter().zip(&dev_losses).map(|(a, b)| ((a - b) / a.abs().max(1e-12)).abs()).fold(0.0, f64::max);
        let weight_diff = cpu_weights.iter().flat_map(|(name, a)| a.iter().zip(&dev_weights[name]).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
        rows.push(Parity { workload: label.into(), loss_diff, weight_diff });
    }
    Ok(rows)
}

/// `STEPS` training steps from seeded weights on batches that differ per step; returns the
/// losses and the final weights.
fn train(kind: ModelKind, density: f64, dev: &Device, implementation: Implementation, sparse: bool) -> Result<(Vec<f64>, Weights)> {
    let arch = Architecture::of(kind);
    let theta0 = models::initial_weights(&arch, &mut stream(0, Purpose::Init));
    let mask = mask_at(&arch, &theta0, density, scope(kind));
    let params = models::to_params(&arch, &theta0, dev)?;
    let masked = MaskedNetwork::new(kind, &params, &mask, dev, sparse)?;
    let (net, train_params, step_masks) = (&masked.net, &masked.params, masked.step_masks());
    let (rule, batch) = recipe(kind);
    let mut optimizer = MaskedOptimizer::new(rule, implementation);
    // A parity check needs no paper-sized batch: ResNet-18 at 32 keeps the CPU side short.
    let batch = if kind == ModelKind::Resnet18 { 32 } else { batch };
    let all = images(kind, batch * STEPS)?.to_device(dev)?;
    let mut losses = Vec::new();
    for step in 0..STEPS {
        let xs = all.narrow(0, step * batch, batch)?;
        let ys = Tensor::from_vec((0..batch as u32).map(|i| (i * 7 + step as u32) % 10).collect::<Vec<_>>(), batch, dev)?;
        let step = net.train_step(&xs, &ys, None)?;
        optimizer.step(train_params, &step.grads, &step_masks)?;
        losses.push(step.loss.to_scalar::<f32>()? as f64);
    }
    masked.write_back(&params)?;
    Ok((losses, models::weights_of(&params)?))
}

/// Training steps per second (dense, at the network's own batch size: 60, or 64 for VGG-19
/// and 128 for ResNet-18) and evaluation images per second on `dev`.
pub fn throughput(dev: &Device, kind: ModelKind) -> Result<(f64, f64)> {
    let arch = Architecture::of(kind);
    let params = models::to_params(&arch, &models::initial_weights(&arch, &mut stream(0, Purpose::Init)), dev)?;
    let net = models::build(kind, &params, &Compact::none())?;
    let (rule, batch) = recipe(kind);
    let mut optimizer = MaskedOptimizer::for_device(rule, dev);
    let xs = images(kind, batch)?.to_device(dev)?;
    let ys = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, dev)?;
    let steps = if dev.is_cpu() && kind != ModelKind::Lenet300100 { 2 } else { 50 };
    let train = per_second(steps, || {
        let step = net.train_step(&xs, &ys, None)?;
        optimizer.step(&params, &step.grads, &BTreeMap::new())?;
        step.loss.to_scalar::<f32>()?;
        Ok(())
    })?;
    let n = if kind == ModelKind::Lenet300100 { 510 } else { 130 };
    let eval_xs = images(kind, n)?.to_device(dev)?;
    let eval = n as f64
        * per_second(steps, || {
            // Reading the predictions back waits for the device to finish.
            net.forward(&eval_xs)?.argmax(1)?.to_vec1::<u32>()?;
            Ok(())
        })?;
    Ok((train, eval))
}

/// Runs both parts and prints a report; returns whether parity held.
pub fn run(dev: &Device) -> Result<bool> {
    println!("gpu-check on {dev:?}\n\n| parity workload ({STEPS} steps) | max relative loss difference | max weight difference | within tolerance ({LOSS_TOLERANCE:e}, {WEIGHT_TOLERANCE:e}) |\n|---|---|---|---|");
    let mut all_ok = true;
    for p in parity(dev)? {
        all_ok &= p.ok();
        println!("| {} | {:.2e} | {:.2e} | {} |", p.workload, p.loss_diff, p.weight_diff, if p.ok() { "yes" } else { "NO" });
    }
    println!("\n| network | batch | train steps/s | evaluation images/s |\n|---|---|---|---|");
    for kind in [ModelKind::Lenet300100, ModelKind::Conv2, ModelKind::Conv4, ModelKind::Conv6, ModelKind::Resnet18, ModelKind::Vgg19] {
        let (train, eval) = throughput(dev, kind)?;
        println!("| {kind:?} | {} | {train:.1} | {eval:.0} |", recipe(kind).1);
    }
    println!("\nparity: {}", if all_ok { "ok" } else { "FAILED" });
    Ok(all_ok)
}
