//! `lth bench`: training-step and evaluation throughput on random data, each row beside the
//! alternative it replaces, measured in the same process: sparse layers against the dense
//! product under the same mask, the fused optimizer against plain candle ops, the im2col
//! convolution against candle's `conv2d`. With `--vs-pytorch`, the same workloads also run in
//! PyTorch (`bench_pytorch.py`, one long-lived `python3` or `$LTH_PYTHON` process), and the
//! sides are interleaved timing by timing (lth, alternative, PyTorch, lth, ...), so a machine
//! that slows down for a minute slows every side alike. Each side reports the median and the
//! range of its timed repeats; the ratio is that of the medians. Rows run at 1 and 2 threads.

use crate::base::error::{Error, Result};
use crate::base::seeds::{stream, Purpose};
use crate::base::spec::{ModelKind, PruningScope, PruningSpec};
use crate::nn::{self, Architecture};
use crate::ops::im2col::conv3x3;
use crate::sparsity::masks::Mask;
use crate::sparsity::pruning;
use crate::tools::bench_tables::{cells, write_csv, Machine, Report, Row, Sample};
use crate::train::optim::{AdamConfig, Implementation, MaskedOptimizer, Rule, SgdConfig};
use crate::train::training::{MaskedNetwork, MaskedTrainer};
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

const BATCH: usize = 60;
const ADAM: Rule = Rule::Adam(AdamConfig { lr: 1.2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 });
/// VGG-19's and ResNet-18's optimizer (docs/paper.md Fig 2).
const SGD: Rule = Rule::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 });
const DENSITIES: [(f64, &str); 3] = [(1.0, "dense"), (0.2, "20%"), (0.05, "5%")];
/// The fewest timed repeats a row may have: a median and a range mean little below it.
pub const MIN_REPEATS: usize = 5;

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

/// What `lth bench` runs.
pub struct Options<'a> {
    /// Multiplies the steps of every timing.
    pub scale: f64,
    /// Timed repeats per side and row (after one untimed warm-up round).
    pub repeats: usize,
    /// The Python with torch, for `--vs-pytorch`.
    pub pytorch: Option<&'a str>,
    /// Only rows whose workload contains this text (case-insensitive).
    pub only: Option<&'a str>,
    /// Rewritten after every row with the rows so far.
    pub csv: Option<&'a std::path::Path>,
}

/// This machine, as a report describes it.
fn this_machine(repeats: usize, pytorch: Option<String>) -> Machine {
    let cpu = cpu_model().unwrap_or_else(|| "unknown CPU".into());
    Machine { cpu, kernels: crate::ops::gemm::Path::chosen().name().to_string(), pytorch, repeats }
}

/// This CPU's model name with its family and model numbers (Linux, from /proc/cpuinfo). A
/// virtual machine may name just the brand ("AMD EPYC"): the numbers say the generation, which
/// decides what a vector instruction costs (family 23 model 1, the first EPYC, runs each 256-bit
/// FMA as two 128-bit halves: half the peak of later ones).
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |name: &str| info.lines().find_map(|l| Some(l.split_once(':').filter(|(k, _)| k.trim() == name)?.1.trim().to_string()));
    let name = field("model name")?;
    Some(match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{name} (family {family}, model {model})"),
        _ => name,
    })
}

/// The PyTorch side: one Python process that times a workload per request, so its timings can
/// be interleaved with ours.
struct Torch {
    child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
    version: String,
}

impl Torch {
    fn start(python: &str) -> Result<Torch> {
        let script = std::env::temp_dir().join(format!("lth-bench-pytorch-{}.py", std::process::id()));
        std::fs::write(&script, PYTORCH_SCRIPT).map_err(|e| Error::Io { path: script.clone(), source: e })?;
        let spawned = Command::new(python).arg(&script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn();
        let mut child = spawned.map_err(|e| Error::Invalid(format!("--vs-pytorch: cannot run `{python}` ({e}); set LTH_PYTHON to a Python with torch")))?;
        let (Some(requests), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Invalid("--vs-pytorch: the PyTorch process has no pipes".into()));
        };
        let mut torch = Torch { child, requests, answers: BufReader::new(answers), version: String::new() };
        let hello = torch.answer();
        // The script is read once it has started; it is not needed on disk after that.
        let _ = std::fs::remove_file(&script);
        torch.version = hello.map_err(|_| {
            Error::Invalid(format!(
                "--vs-pytorch: `{python}` cannot import torch; install it (`{python} -m pip install torch`) or set LTH_PYTHON to a Python that has it"
            ))
        })?;
        Ok(torch)
    }

    fn answer(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.answers.read_line(&mut line) {
            Ok(n) if n > 0 => Ok(line.trim().to_string()),
            _ => Err(Error::Invalid("--vs-pytorch: the PyTorch benchmark process stopped (its error is printed above)".into())),
        }
    }

    /// One timing of `key` at `threads`, per second.
    fn time(&mut self, key: &str, threads: usize, scale: f64) -> Result<f64> {
        writeln!(self.requests, "{key} {threads} {scale}")
            .and_then(|()| self.requests.flush())
            .map_err(|e| Error::Invalid(format!("--vs-pytorch: cannot reach the PyTorch process ({e})")))?;
        let answer = self.answer()?;
        answer.parse().map_err(|_| Error::Invalid(format!("--vs-pytorch: the PyTorch process answered `{answer}` for {key}")))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Masks are the slow part of setting a row up (pruning VGG-19's 20M weights to 5% takes 14
/// rounds); each (network, density) is pruned once per run.
#[derive(Default)]
struct Masks(HashMap<(&'static str, u64), (nn::Weights, Mask)>);

impl Masks {
    fn get(&mut self, kind: ModelKind, density: f64) -> &(nn::Weights, Mask) {
        self.0.entry((name(kind), density.to_bits())).or_insert_with(|| {
            let arch = Architecture::of(kind);
            let weights = nn::initial_weights(&arch, &mut stream(0, Purpose::Init));
            let mask = mask_at(&arch, &weights, density, scope(kind));
            (weights, mask)
        })
    }
}

/// What a training step runs with.
#[derive(Clone, Copy)]
struct Variant {
    /// Sparse products and optimizer passes where the mask allows (what training uses).
    sparse: bool,
    implementation: Implementation,
}

const OURS: Variant = Variant { sparse: true, implementation: Implementation::Fused };

/// Evaluation images per timing: LeNet's validation and test sets at paper scale (15,000
/// images, every 100 iterations); for the CIFAR networks a few of `evaluate`'s chunks (130
/// images each), enough for a steady rate: with the quick scale's 2,000 images a Conv-2
/// evaluation row took about 3 minutes, and a full `--vs-pytorch` run would have taken over two
/// hours (estimated from the rows a stopped run had finished).
fn eval_images(kind: ModelKind) -> usize {
    match kind {
        ModelKind::Lenet300100 => 15_000,
        ModelKind::Conv2 | ModelKind::Conv4 | ModelKind::Conv6 => 520,
        ModelKind::Resnet18 => 260,
        ModelKind::Vgg19 => 130,
    }
}

/// Every network of the paper with its key in the PyTorch script and the steps per training
/// timing, in inverse proportion to its cost.
const NETS: [(ModelKind, &str, f64); 6] = [
    (ModelKind::Lenet300100, "lenet", 300.0),
    (ModelKind::Conv2, "conv2", 4.0),
    (ModelKind::Conv4, "conv4", 2.0),
    (ModelKind::Conv6, "conv6", 2.0),
    (ModelKind::Resnet18, "resnet18", 1.0),
    (ModelKind::Vgg19, "vgg19", 1.0),
];

/// LeNet's evaluation densities: dense, and the Pm values docs/paper.md discusses (21.1% and
/// 3.6%, levels 7 and 15).
const LENET_EVAL_DENSITIES: [(f64, &str); 3] = [(1.0, "100%"), (0.211, "21.1%"), (0.036, "3.6%")];

/// Runs every row (or those whose workload contains `only`), interleaving the sides' timings.
pub fn run(options: &Options) -> Result<Report> {
    let mut torch = options.pytorch.map(Torch::start).transpose()?;
    // Size rayon's pool for the most threads measured before anything uses it; each row then
    // limits candle (and the optimizer) through RAYON_NUM_THREADS.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
    let only = options.only.map(str::to_lowercase);
    let wanted = |workload: &str| only.as_ref().is_none_or(|o| workload.to_lowercase().contains(o.as_str()));
    let (scale, repeats) = (options.scale, options.repeats.max(1));
    let machine = this_machine(repeats, torch.as_ref().map(|t| t.version.clone()));
    let steps = |n: f64| ((n * scale).round() as usize).max(2);
    let mut masks = Masks::default();
    let mut rows = Vec::new();
    for threads in [1, 2] {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        // One row: an untimed warm-up round, then `repeats` rounds of ours, the alternative
        // and PyTorch in turn.
        let mut measure = |workload: String,
                           unit,
                           key: Option<String>,
                           ours: &mut dyn FnMut() -> Result<f64>,
                           mut alternative: Option<(String, &mut dyn FnMut() -> Result<f64>)>|
         -> Result<()> {
            if !wanted(&workload) {
                return Ok(());
            }
            eprintln!("bench: {workload}, {threads} thread{}", if threads == 1 { "" } else { "s" });
            let (mut o, mut a, mut p) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..=repeats {
                let timed = round > 0;
                let v = ours()?;
                if timed {
                    o.push(v);
                }
                if let Some((_, f)) = alternative.as_mut() {
                    let v = f()?;
                    if timed {
                        a.push(v);
                    }
                }
                if let (Some(t), Some(k)) = (torch.as_mut(), key.as_deref()) {
                    let v = t.time(k, threads, scale)?;
                    if timed {
                        p.push(v);
                    }
                }
            }
            let alternative = alternative.map(|(name, _)| (name, Sample::of(&a)));
            let pytorch = (!p.is_empty()).then(|| Sample::of(&p));
            let row = Row { workload, threads, unit, ours: Sample::of(&o), alternative, pytorch };
            // Each row as it finishes: a long run stopped early keeps the rows it measured.
            eprintln!("bench: {} |{}", row.workload, cells(&row, row.pytorch.is_some()));
            rows.push(row);
            if let Some(path) = options.csv {
                write_csv(&machine, &rows, path)?;
            }
            Ok(())
        };
        for (kind, key, n) in NETS {
            for (density, label) in DENSITIES {
                let workload = format!("{} train step (batch {}), {label}", name(kind), recipe(kind).1);
                let key = Some(format!("{key}_train_{label}"));
                let prepared = masks.get(kind, density);
                let mut ours = || train_steps(kind, prepared, OURS, steps(n));
                // LeNet's row keeps the alternative it was built against: plain candle ops
                // (dense), the dense product and update under the mask (sparse).
                if kind == ModelKind::Lenet300100 {
                    let (alt, variant) = if density == 1.0 {
                        ("candle ops (Adam as tensor ops, matmul backward)", Variant { sparse: false, implementation: Implementation::CandleOps })
                    } else {
                        ("dense product and update under the mask", Variant { sparse: false, implementation: Implementation::Fused })
                    };
                    let mut theirs = || train_steps(kind, prepared, variant, steps(n));
                    measure(workload, "it/s", key, &mut ours, Some((alt.into(), &mut theirs)))?;
                } else {
                    measure(workload, "it/s", key, &mut ours, None)?;
                }
            }
        }
        for (kind, key, _) in NETS {
            let densities: &[(f64, &str)] = if kind == ModelKind::Lenet300100 { &LENET_EVAL_DENSITIES } else { &DENSITIES };
            for &(density, label) in densities {
                let n = eval_images(kind);
                let workload = format!("{} evaluation of {n} images, {label}", name(kind));
                let key = Some(format!("{key}_eval_{label}"));
                let passes = if kind == ModelKind::Lenet300100 { steps(2.0) } else { 1 };
                let prepared = masks.get(kind, density);
                measure(workload, "images/s", key, &mut || evaluate_split(kind, prepared, n, passes), None)?;
            }
        }
        if threads == 1 {
            for (label, shape) in PRODUCTS {
                let workload = format!("matrix product {label}, fixed order ({})", crate::ops::gemm::Path::chosen().name());
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
    }
    std::env::remove_var("RAYON_NUM_THREADS");
    Ok(Report { machine, rows })
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
pub fn mask_at(arch: &Architecture, weights: &nn::Weights, density: f64, scope: PruningScope) -> Mask {
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

/// Training steps per second of `kind` under a prepared magnitude mask (random weights).
fn train_steps(kind: ModelKind, (weights, mask): &(nn::Weights, Mask), variant: Variant, steps: usize) -> Result<f64> {
    let arch = Architecture::of(kind);
    let dense = nn::to_params(&arch, weights, &Device::Cpu)?;
    let (rule, batch) = recipe(kind);
    let masked = MaskedNetwork::new(kind, &dense, mask, &Device::Cpu, variant.sparse)?;
    let mut trainer = MaskedTrainer::new(masked, MaskedOptimizer::new(rule, variant.implementation));
    let xs = images(kind, batch)?;
    let ys = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &Device::Cpu)?;
    per_second(steps, || {
        let step = trainer.step(&xs, &ys, None)?;
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

/// GFLOP/s of one single-threaded product: ours (`nn::gemm`) or the `gemm` crate's.
fn product((m, n, k, lhs_t, rhs_t): (usize, usize, usize, bool, bool), gemm_crate: bool, steps: usize) -> Result<f64> {
    use crate::ops::gemm::{multiply, Path, Strided};
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

/// Images per second of `training::evaluate` (loss and accuracy, as training calls it) over
/// `n` images, under a prepared mask with the layers training would make sparse.
fn evaluate_split(kind: ModelKind, (weights, mask): &(nn::Weights, Mask), n: usize, passes: usize) -> Result<f64> {
    let arch = Architecture::of(kind);
    let dense = nn::to_params(&arch, weights, &Device::Cpu)?;
    let masked = MaskedNetwork::new(kind, &dense, mask, &Device::Cpu, true)?;
    let labels = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let split = crate::data::Split { images: images(kind, n)?, labels };
    // Prepared once, as training prepares its splits once per training.
    let eval = crate::train::training::EvalSplit::new(masked.net.as_ref(), &split)?;
    Ok(n as f64 * per_second(passes, || crate::train::training::evaluate(masked.net.as_ref(), &eval).map(drop))?)
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
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
