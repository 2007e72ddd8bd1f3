//! `lth bench`: training-step and evaluation throughput on random data, each beside the
//! alternative it replaces, measured in the same process: the fused masked-Adam kernel against
//! the same update as candle ops, and the im2col convolution against candle's `conv2d`. Rows
//! run at 1 and 2 threads (candle reads `RAYON_NUM_THREADS` at every matrix product).

use crate::error::Result;
use crate::masks::Mask;
use crate::models::{self, im2col::conv3x3, init, Architecture};
use crate::optim::{AdamConfig, Implementation, MaskedAdam, StepMask};
use crate::pruning;
use crate::seeds::{stream, Purpose};
use crate::spec::{ModelKind, PruningScope, PruningSpec};
use candle_core::{Device, Tensor, Var};
use std::collections::BTreeMap;
use std::time::Instant;

const BATCH: usize = 60;
const ADAM: AdamConfig = AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/// One measured row.
pub struct Row {
    pub workload: String,
    pub threads: usize,
    pub per_second: f64,
    pub unit: &'static str,
}

/// The median of three measurements.
fn median3(mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut runs = [measure()?, measure()?, measure()?];
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// Runs every row (each the median of three timings); `scale` multiplies the timed steps.
pub fn run(scale: f64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for threads in [1, 2] {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        let steps = |n: f64| ((n * scale).round() as usize).max(2);
        for (density, label) in [(1.0, "dense"), (0.2, "20% remaining"), (0.05, "5% remaining")] {
            let fused = median3(|| train_steps(ModelKind::Lenet300100, density, Implementation::Fused, steps(200.0)))?;
            rows.push(Row { workload: format!("LeNet-300-100 train step, {label}, fused Adam"), threads, per_second: fused, unit: "it/s" });
        }
        let ops = median3(|| train_steps(ModelKind::Lenet300100, 1.0, Implementation::CandleOps, steps(200.0)))?;
        rows.push(Row { workload: "LeNet-300-100 train step, dense, Adam as candle ops".into(), threads, per_second: ops, unit: "it/s" });
        let conv = median3(|| train_steps(ModelKind::Conv2, 1.0, Implementation::Fused, steps(4.0)))?;
        rows.push(Row { workload: "Conv-2 train step, dense, fused Adam".into(), threads, per_second: conv, unit: "it/s" });
        for (label, candle) in [("im2col conv3x3", false), ("candle conv2d", true)] {
            let per_second = median3(|| conv_layer(candle, steps(4.0)))?;
            rows.push(Row { workload: format!("3x3 conv 64→64 on 60×32×32, forward + backward, {label}"), threads, per_second, unit: "it/s" });
        }
        for kind in [ModelKind::Lenet300100, ModelKind::Conv2] {
            let per_second = median3(|| evaluate(kind, steps(4.0)))?;
            rows.push(Row { workload: format!("{kind:?} evaluation"), threads, per_second, unit: "images/s" });
        }
    }
    std::env::remove_var("RAYON_NUM_THREADS");
    Ok(rows)
}

/// The rows as a Markdown table, with the peak resident memory of the process.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from("| workload | threads | throughput |\n|---|---|---|\n");
    for r in rows {
        s += &format!("| {} | {} | {:.1} {} |\n", r.workload, r.threads, r.per_second, r.unit);
    }
    if let Some(peak) = peak_rss_mb() {
        s += &format!("\nPeak resident memory of the benchmark process: {peak:.0} MB\n");
    }
    s
}

fn images(kind: ModelKind, n: usize) -> Result<Tensor> {
    let shape = match kind {
        ModelKind::Lenet300100 => (n, 1, 28, 28),
        _ => (n, 3, 32, 32),
    };
    let values: Vec<f32> = (0..shape.0 * shape.1 * shape.2 * shape.3).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Training steps per second of `kind` with a magnitude mask of `density` (random weights).
fn train_steps(kind: ModelKind, density: f64, implementation: Implementation, steps: usize) -> Result<f64> {
    let arch = Architecture::of(kind);
    let weights = init::glorot_normal(&arch, &mut stream(0, Purpose::Init));
    // Enough magnitude-pruning rounds at 20% to reach `density`.
    let spec = PruningSpec { scope: PruningScope::Layerwise, conv: Some(0.2), fc: 0.2, output: 0.2 };
    let rates = pruning::rates(&arch, &spec);
    let mut mask = Mask::dense(&arch);
    while mask.remaining() > density + 1e-9 {
        mask = pruning::magnitude_round(&weights, &mask, &rates);
    }
    let params = models::to_params(&arch, &weights, &Device::Cpu)?;
    let net = models::build(kind, &params)?;
    let tensors = mask.to_tensors(&Device::Cpu)?;
    let step_masks: BTreeMap<String, StepMask> =
        mask.layers.iter().map(|(name, l)| (name.clone(), StepMask { host: &l.keep, tensor: &tensors[name] })).collect();
    let mut adam = MaskedAdam::new(ADAM, implementation);
    let xs = images(kind, BATCH)?;
    let ys = Tensor::from_vec((0..BATCH as u32).map(|i| i % 10).collect::<Vec<_>>(), BATCH, &Device::Cpu)?;
    per_second(steps, || {
        let loss = candle_nn::loss::cross_entropy(&net.forward(&xs)?, &ys)?;
        adam.step(&params, &loss.backward()?, &step_masks)
    })
}

/// Forward + backward of one 64→64 convolution per second.
fn conv_layer(candle: bool, steps: usize) -> Result<f64> {
    let dev = Device::Cpu;
    let xs = Var::from_tensor(&images(ModelKind::Conv2, BATCH)?.repeat((1, 22, 1, 1))?.narrow(1, 0, 64)?.contiguous()?)?;
    let w = Var::from_tensor(&Tensor::from_vec((0..64 * 64 * 9).map(|i| ((i % 17) as f32 - 8.0) / 100.0).collect::<Vec<_>>(), (64, 64, 3, 3), &dev)?)?;
    let b = Var::from_tensor(&Tensor::zeros(64, candle_core::DType::F32, &dev)?)?;
    per_second(steps, || {
        let ys = if candle {
            xs.conv2d(w.as_tensor(), 1, 1, 1, 1)?.broadcast_add(&b.reshape((1, 64, 1, 1))?)?
        } else {
            conv3x3(xs.as_tensor(), w.as_tensor(), b.as_tensor())?
        };
        ys.sum_all()?.backward()?;
        Ok(())
    })
}

/// Evaluation images per second (forward only, batches of 130 CIFAR or 510 MNIST images, as
/// in training's evaluation).
fn evaluate(kind: ModelKind, batches: usize) -> Result<f64> {
    let arch = Architecture::of(kind);
    let params = models::to_params(&arch, &init::glorot_normal(&arch, &mut stream(0, Purpose::Init)), &Device::Cpu)?;
    let net = models::build(kind, &params)?;
    let n = if kind == ModelKind::Lenet300100 { 510 } else { 130 };
    let xs = images(kind, n)?;
    Ok(n as f64 * per_second(batches, || net.forward(&xs).map(drop))?)
}

/// Calls of `step` per second over `steps` timed calls, after one untimed warm-up call.
fn per_second(steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    step()?;
    let start = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// VmHWM from /proc (Linux); None elsewhere.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
