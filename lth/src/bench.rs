//! `lth bench`: training-step and evaluation throughput on random data, each row beside the
//! alternative it replaces, measured in the same process: sparse layers against the dense
//! product under the same mask, the fused optimizer and first-layer backward against plain
//! candle ops, the im2col convolution against candle's `conv2d`. With `--vs-pytorch`, the
//! same workloads also run in PyTorch (`bench_pytorch.py`, through `python3` or `$LTH_PYTHON`)
//! in the same run, and each row gets the ratio. Rows run at 1 and 2 threads.

use crate::error::{Error, Result};
use crate::kernels::im2col::conv3x3;
use crate::masks::Mask;
use crate::models::linear::Compact;
use crate::models::{self, Architecture};
use crate::optim::{AdamConfig, Implementation, MaskedOptimizer, Rule, SgdConfig};
use crate::pruning;
use crate::seeds::{stream, Purpose};
use crate::spec::{ModelKind, PruningScope, PruningSpec};
use crate::training::MaskedNetwork;
use candle_core::{Device, Tensor, Var};
use std::collections::BTreeMap;
use std::time::Instant;

const BATCH: usize = 60;
const ADAM: Rule = Rule::Adam(AdamConfig { lr: 1.2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 });
/// VGG-19's and ResNet-18's optimizer (docs/paper.md Fig 2).
const SGD: Rule = Rule::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 });
const DENSITIES: [(f64, &str); 3] = [(1.0, "dense"), (0.2, "20%"), (0.05, "5%")];

/// The optimizer and batch size a network trains with (docs/paper.md Fig 2).
pub(crate) fn recipe(kind: ModelKind) -> (Rule, usize) {
    match kind {
        ModelKind::Vgg19 => (SGD, 64),
        ModelKind::Resnet18 => (SGD, 128),
        _ => (ADAM, BATCH),
    }
}

/// How a network is pruned: globally over the convolutions for VGG-19 and ResNet-18.
pub(crate) fn scope(kind: ModelKind) -> PruningScope {
    match kind {
        ModelKind::Vgg19 | ModelKind::Resnet18 => PruningScope::Global,
        _ => PruningScope::Layerwise,
    }
}

/// The PyTorch side, run as a script (never a test dependency).
const PYTORCH_SCRIPT: &str = include_str!("bench_pytorch.py");

/// One measured row: ours, and optionally an alternative and PyTorch on the same workload.
pub struct Row {
    pub workload: String,
    pub threads: usize,
    pub unit: &'static str,
    pub ours: f64,
    pub alternative: Option<(String, f64)>,
    pub pytorch: Option<f64>,
    /// The key the PyTorch script reports this workload under.
    key: Option<String>,
}

/// The median of three measurements.
fn median3(mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut runs = [measure()?, measure()?, measure()?];
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// What a training step runs with.
#[derive(Clone, Copy)]
struct Variant {
    /// Sparse products and optimizer passes where the mask allows (what training uses).
    sparse: bool,
    implementation: Implementation,
}

const OURS: Variant = Variant { sparse: true, implementation: Implementation::Fused };

/// Runs every row (each the median of three timings), or those whose workload contains
/// `only` (case-insensitive); `scale` multiplies the timed steps. With `pytorch`, runs the
/// PyTorch script for the same workloads.
pub fn run(scale: f64, pytorch: Option<&str>, only: Option<&str>) -> Result<Vec<Row>> {
    if let Some(python) = pytorch {
        check_torch(python)?;
    }
    // Size rayon's pool for the most threads measured before anything uses it; each row then
    // limits candle (and the optimizer) through RAYON_NUM_THREADS.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
    let only = only.map(str::to_lowercase);
    let wanted = |workload: &str| only.as_ref().is_none_or(|o| workload.to_lowercase().contains(o.as_str()));
    let mut rows = Vec::new();
    for threads in [1, 2] {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        let steps = |n: f64| ((n * scale).round() as usize).max(2);
        let mut measure = |workload: String,
                           unit,
                           key: Option<String>,
                           ours: &mut dyn FnMut() -> Result<f64>,
                           alternative: Option<(String, &mut dyn FnMut() -> Result<f64>)>|
         -> Result<()> {
            if !wanted(&workload) {
                return Ok(());
            }
            let ours = median3(&mut *ours)?;
            let alternative = match alternative {
                Some((name, f)) => Some((name, median3(f)?)),
                None => None,
            };
            rows.push(Row { workload, threads, unit, ours, alternative, pytorch: None, key });
            Ok(())
        };
        for (density, label) in DENSITIES {
            let (name, variant) = if density == 1.0 {
                ("candle ops (Adam as tensor ops, matmul backward)", Variant { sparse: false, implementation: Implementation::CandleOps })
            } else {
                ("dense product and update under the mask", Variant { sparse: false, implementation: Implementation::Fused })
            };
            measure(
                format!("LeNet-300-100 train step, {label}"),
                "it/s",
                Some(format!("lenet_train_{label}")),
                &mut || train_steps(ModelKind::Lenet300100, density, OURS, steps(300.0)),
                Some((name.into(), &mut || train_steps(ModelKind::Lenet300100, density, variant, steps(300.0)))),
            )?;
        }
        // Steps per timing in inverse proportion to each net's cost (Conv-4 about 2x Conv-2's
        // multiply-adds, Conv-6 about 3.5x).
        for (kind, key, n) in [(ModelKind::Conv2, "conv2", 4.0), (ModelKind::Conv4, "conv4", 2.0), (ModelKind::Conv6, "conv6", 2.0)] {
            for (density, label) in DENSITIES {
                let key = Some(format!("{key}_train_{label}"));
                measure(format!("{} train step, {label}", name(kind)), "it/s", key, &mut || train_steps(kind, density, OURS, steps(n)), None)?;
            }
        }
        for (kind, key) in [(ModelKind::Resnet18, "resnet18"), (ModelKind::Vgg19, "vgg19")] {
            for (density, label) in DENSITIES {
                let workload = format!("{} train step (batch {}), {label}", name(kind), recipe(kind).1);
                measure(workload, "it/s", Some(format!("{key}_train_{label}")), &mut || train_steps(kind, density, OURS, steps(1.0)), None)?;
            }
        }
        if threads == 1 {
            for (label, shape) in PRODUCTS {
                let workload = format!("matrix product {label}, fixed order ({})", crate::kernels::gemm::Path::chosen().name());
                let theirs: &mut dyn FnMut() -> Result<f64> = &mut || product(shape, true, steps(40.0));
                measure(workload, "GFLOP/s", None, &mut || product(shape, false, steps(40.0)), Some(("gemm crate, candle's".into(), theirs)))?;
            }
        }
        measure(
            "3x3 conv 64→64 on 60×32×32, forward + backward".into(),
            "it/s",
            None,
            &mut || conv_layer(false, steps(4.0)),
            Some(("candle conv2d".into(), &mut || conv_layer(true, steps(4.0)))),
        )?;
        for (density, label) in EVAL_DENSITIES {
            let workload = format!("LeNet-300-100 evaluation of {EVAL_IMAGES} images, {label}");
            let key = Some(format!("lenet_eval_{label}"));
            measure(workload, "images/s", key, &mut || evaluate_split(ModelKind::Lenet300100, density, EVAL_IMAGES, steps(2.0)), None)?;
        }
        measure("Conv-2 evaluation".into(), "images/s", Some("conv2_eval".into()), &mut || evaluate(ModelKind::Conv2, steps(4.0)), None)?;
    }
    std::env::remove_var("RAYON_NUM_THREADS");
    if let Some(python) = pytorch {
        let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
        let measured = run_pytorch(python, scale, &keys)?;
        for r in &mut rows {
            r.pytorch = r.key.as_ref().and_then(|k| measured.get(&(k.clone(), r.threads)).copied());
        }
    }
    Ok(rows)
}

fn name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Lenet300100 => "LeNet-300-100",
        ModelKind::Conv2 => "Conv-2",
        ModelKind::Conv4 => "Conv-4",
        ModelKind::Conv6 => "Conv-6",
        ModelKind::Vgg19 => "VGG-19",
        ModelKind::Resnet18 => "ResNet-18",
    }
}

/// The rows as a Markdown table, with the peak resident memory of the process.
pub fn markdown(rows: &[Row]) -> String {
    let with_pytorch = rows.iter().any(|r| r.pytorch.is_some());
    let mut s = String::from("| workload | threads | lth | alternative | lth / alternative |");
    s += if with_pytorch { " PyTorch | lth / PyTorch |\n|---|---|---|---|---|---|---|\n" } else { "\n|---|---|---|---|---|\n" };
    for r in rows {
        let (alt, ratio) = match &r.alternative {
            Some((name, v)) => (format!("{v:.1} ({name})"), format!("{:.2}x", r.ours / v)),
            None => (String::new(), String::new()),
        };
        // Deep-network steps run at about one per second: keep two decimals there.
        let digits = if r.ours < 10.0 { 2 } else { 1 };
        s += &format!("| {} | {} | {:.digits$} {} | {alt} | {ratio} |", r.workload, r.threads, r.ours, r.unit);
        if with_pytorch {
            s += &match r.pytorch {
                Some(p) => format!(" {p:.digits$} | {:.2}x |", r.ours / p),
                None => " | |".into(),
            };
        }
        s += "\n";
    }
    if let Some(peak) = peak_rss_mb() {
        s += &format!("\nPeak resident memory of the benchmark process (lth rows): {peak:.0} MB\n");
    }
    s
}

/// Fails early, with what to do, if `python` cannot import torch.
fn check_torch(python: &str) -> Result<()> {
    let probe = std::process::Command::new(python).args(["-c", "import torch"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err(Error::Invalid(format!(
            "--vs-pytorch: `{python}` cannot import torch; install it (`{python} -m pip install torch`) or set LTH_PYTHON to a Python that has it"
        ))),
        Err(e) => Err(Error::Invalid(format!("--vs-pytorch: cannot run `{python}` ({e}); set LTH_PYTHON to a Python with torch"))),
    }
}

/// Runs the PyTorch script; returns per-second figures by (workload key, threads).
fn run_pytorch(python: &str, scale: f64, keys: &[&str]) -> Result<BTreeMap<(String, usize), f64>> {
    let script = std::env::temp_dir().join(format!("lth-bench-pytorch-{}.py", std::process::id()));
    std::fs::write(&script, PYTORCH_SCRIPT).map_err(|e| Error::Io { path: script.clone(), source: e })?;
    eprintln!("bench: timing the same workloads in PyTorch ({python})");
    let output = std::process::Command::new(python).arg(&script).arg(scale.to_string()).arg(keys.join(",")).output();
    let _ = std::fs::remove_file(&script);
    let output = output.map_err(|e| Error::Invalid(format!("--vs-pytorch: cannot run `{python}` ({e}); set LTH_PYTHON to a Python with torch")))?;
    if !output.status.success() {
        return Err(Error::Invalid(format!("--vs-pytorch: the PyTorch benchmark failed under `{python}`: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    // Lines of `key threads per_second`.
    let mut measured = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [key, threads, value] = fields[..] {
            if let (Ok(t), Ok(v)) = (threads.parse(), value.parse()) {
                measured.insert((key.to_string(), t), v);
            }
        }
    }
    Ok(measured)
}

/// Deterministic stand-in images of `kind`'s input shape.
pub(crate) fn images(kind: ModelKind, n: usize) -> Result<Tensor> {
    let shape = match kind {
        ModelKind::Lenet300100 => (n, 1, 28, 28),
        _ => (n, 3, 32, 32),
    };
    let values: Vec<f32> = (0..shape.0 * shape.1 * shape.2 * shape.3).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Magnitude pruning of `weights` at 20% per round until at most `density` remains (the
/// bench's masks: realistic structure, no training needed). Globally pruned networks keep
/// their output layer and shortcuts, so they stop once the convolutions hold `density` of
/// theirs.
pub fn mask_at(arch: &Architecture, weights: &models::Weights, density: f64, scope: PruningScope) -> Mask {
    let spec = match scope {
        PruningScope::Layerwise => PruningSpec { scope, conv: Some(0.2), fc: 0.2, output: 0.2 },
        PruningScope::Global => PruningSpec { scope, conv: Some(0.2), fc: 0.0, output: 0.0 },
    };
    let convs = pruning::global_layers(arch);
    let conv_fraction = |m: &Mask| {
        let kept: usize = convs.iter().map(|n| m.layers[n].remaining()).sum();
        kept as f64 / convs.iter().map(|n| m.layers[n].keep.len()).sum::<usize>().max(1) as f64
    };
    let mut mask = Mask::dense(arch);
    let remaining = |m: &Mask| if scope == PruningScope::Global { conv_fraction(m) } else { m.remaining() };
    while remaining(&mask) > density + 1e-9 {
        mask = pruning::prune_round(arch, &spec, weights, &mask);
    }
    mask
}

/// Training steps per second of `kind` with a magnitude mask of `density` (random weights).
fn train_steps(kind: ModelKind, density: f64, variant: Variant, steps: usize) -> Result<f64> {
    let arch = Architecture::of(kind);
    let weights = models::initial_weights(&arch, &mut stream(0, Purpose::Init));
    let mask = mask_at(&arch, &weights, density, scope(kind));
    let dense = models::to_params(&arch, &weights, &Device::Cpu)?;
    let masked = MaskedNetwork::new(kind, &dense, &mask, &Device::Cpu, variant.sparse)?;
    let (net, params, step_masks) = (&masked.net, &masked.params, masked.step_masks());
    let (rule, batch) = recipe(kind);
    let mut optimizer = MaskedOptimizer::new(rule, variant.implementation);
    let xs = images(kind, batch)?;
    let ys = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &Device::Cpu)?;
    per_second(steps, || {
        let step = net.train_step(&xs, &ys, None)?;
        optimizer.step(params, &step.grads, &step_masks)?;
        // Read the loss, as training does (and so nothing is left pending).
        step.loss.to_scalar::<f32>()?;
        Ok(())
    })
}

/// Products the networks run: (label, (m, n, k, lhs transposed, rhs transposed)).
const PRODUCTS: [(&str, (usize, usize, usize, bool, bool)); 3] = [
    ("60×784 · 784×300 (LeNet fc1)", (60, 300, 784, false, true)),
    ("64×576 · 576×1024 (conv 64→64 forward)", (64, 1024, 576, false, false)),
    ("64×1024 · 1024×576 (its weight gradient)", (64, 576, 1024, false, true)),
];

/// GFLOP/s of one single-threaded product: ours (`models::gemm`) or the `gemm` crate's.
fn product((m, n, k, lhs_t, rhs_t): (usize, usize, usize, bool, bool), gemm_crate: bool, steps: usize) -> Result<f64> {
    use crate::kernels::gemm::{multiply, Path, Strided};
    let lhs: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 251) as f32 / 251.0 - 0.5).collect();
    let mut dst = vec![0f32; m * n];
    // (row stride, column stride) of a rows × cols matrix stored row-major, or transposed.
    let strides = |rows: usize, cols: usize, transposed: bool| if transposed { (1, rows) } else { (cols, 1) };
    let ((l_rs, l_cs), (r_rs, r_cs)) = (strides(m, k, lhs_t), strides(k, n, rhs_t));
    let per_second = per_second(steps, || {
        // SAFETY: `dst` holds m × n values and each operand every entry its strides address.
        unsafe {
            if gemm_crate {
                let (d, l, r) = (dst.as_mut_ptr(), lhs.as_ptr(), rhs.as_ptr());
                gemm::gemm(
                    m,
                    n,
                    k,
                    d,
                    1,
                    n as isize,
                    false,
                    l,
                    l_cs as isize,
                    l_rs as isize,
                    r,
                    r_cs as isize,
                    r_rs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            } else {
                let lhs = Strided { data: &lhs, row_stride: l_rs, col_stride: l_cs };
                let rhs = Strided { data: &rhs, row_stride: r_rs, col_stride: r_cs };
                multiply(Path::chosen(), dst.as_mut_ptr(), n, lhs, rhs, m, n, k, false);
            }
        }
        Ok(())
    })?;
    Ok(per_second * 2.0 * (m * n * k) as f64 / 1e9)
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
    let params = models::to_params(&arch, &models::initial_weights(&arch, &mut stream(0, Purpose::Init)), &Device::Cpu)?;
    let net = models::build(kind, &params, &Compact::none())?;
    let n = if kind == ModelKind::Lenet300100 { 510 } else { 130 };
    let xs = images(kind, n)?;
    Ok(n as f64 * per_second(batches, || net.forward(&xs).map(drop))?)
}

/// LeNet's evaluation at paper scale: validation and test, 15,000 images, every 100 iterations.
const EVAL_IMAGES: usize = 15_000;
/// The densities where LeNet's evaluation speed matters: dense, and the Pm values docs/paper.md
/// discusses (21.1% and 3.6%, levels 7 and 15).
const EVAL_DENSITIES: [(f64, &str); 3] = [(1.0, "100%"), (0.211, "21.1%"), (0.036, "3.6%")];

/// Images per second of `training::evaluate` (loss and accuracy, as training calls it) over
/// `n` images, with a magnitude mask of `density` and the layers training would make sparse.
fn evaluate_split(kind: ModelKind, density: f64, n: usize, passes: usize) -> Result<f64> {
    let arch = Architecture::of(kind);
    let weights = models::initial_weights(&arch, &mut stream(0, Purpose::Init));
    let mask = mask_at(&arch, &weights, density, scope(kind));
    let dense = models::to_params(&arch, &weights, &Device::Cpu)?;
    let masked = MaskedNetwork::new(kind, &dense, &mask, &Device::Cpu, true)?;
    let labels = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let split = crate::datasets::Split { images: images(kind, n)?, labels };
    // Prepared once, as training prepares its splits once per training of 501 evaluations.
    let eval = crate::training::EvalSplit::new(masked.net.as_ref(), &split)?;
    Ok(n as f64 * per_second(passes, || crate::training::evaluate(masked.net.as_ref(), &eval).map(drop))?)
}

/// Calls of `step` per second over `steps` timed calls, after one untimed warm-up call.
pub(crate) fn per_second(steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
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
