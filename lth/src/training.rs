//! The one training loop: minibatch (augmented where the spec asks), forward, cross-entropy,
//! backward, masked optimizer step at the scheduled learning rate (`schedule`).
//! It always trains for the full budget and evaluates validation and test loss/accuracy every
//! `eval_every` iterations (docs/paper.md §1, App C); the early-stop iteration is read from the
//! curve afterwards (`results::table`), never used to stop. Progress goes to an [`Observer`].

use crate::datasets::augment::Augment;
use crate::datasets::batches::Batches;
use crate::datasets::{Dataset, Split};
use crate::error::{Error, Result};
use crate::masks::{Mask, MaskTensors};
use crate::models::linear::Compact;
use crate::models::{self, Dropout, Network, Params};
use crate::optim::{MaskedOptimizer, Rule, StepMask};
use crate::schedule::Schedule;
use crate::spec::{LrSchedule, ModelKind};
use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub iterations: usize,
    pub eval_every: usize,
    pub batch_size: usize,
    pub optimizer: Rule,
    /// Let sparse layers skip their pruned weights (`models::linear`, `optim`). The results
    /// are the same within float tolerance; off only to check that.
    pub sparse_kernels: bool,
    /// Warmup and drops of the optimizer's rate (`schedule`); None: constant.
    pub lr_schedule: Option<LrSchedule>,
    /// The iteration training starts after (0: from the start). A rewound level (`rewind`)
    /// starts at its rewind point: it trains the remaining iterations, the rate schedule and
    /// the data order pick up there, and the optimizer state starts afresh.
    pub start_iteration: usize,
}

/// One evaluation: metrics at `iteration` (train metrics are the running mean over the
/// minibatches since the previous evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub iteration: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
}

/// Hooks for progress reporting; the loop itself knows nothing about levels or figures.
pub trait Observer {
    fn on_step(&mut self, _iteration: usize) {}
    fn on_eval(&mut self, _point: &CurvePoint) {}
    /// The iteration after which the observer wants the network's full state (`rewind`).
    fn snapshot_at(&self) -> Option<usize> {
        None
    }
    /// Every parameter (BatchNorm's running statistics included) after `snapshot_at`'s step.
    fn on_snapshot(&mut self, _iteration: usize, _weights: models::Weights) {}
}

/// The loss of an evaluation is averaged over chunks of at most this many input values (510
/// MNIST images, 130 CIFAR images, also a batch-major forward pass: a convolution's im2col
/// buffer holds up to 192 values per input value, so this keeps it near 300 MB) and then summed
/// in f64 in chunk order; a network that evaluates a whole split at once keeps these chunks.
const EVAL_CHUNK_VALUES: usize = 400_000;

/// A split as evaluation reads it: for networks that evaluate feature-major (LeNet on the CPU),
/// its images transposed once, here, instead of at every evaluation.
pub struct EvalSplit<'a> {
    split: &'a Split,
    feature_major: Option<(Vec<f32>, usize)>,
}

impl<'a> EvalSplit<'a> {
    pub fn new(net: &dyn Network, split: &'a Split) -> Result<Self> {
        let feature_major = if net.evaluates_feature_major() { Some(crate::models::linear::feature_major(&split.images)?) } else { None };
        Ok(EvalSplit { split, feature_major })
    }
}

/// Trains the `model` network over `params` under `mask` and returns its curve.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: ModelKind,
    params: &Params,
    mask: &Mask,
    data: &Dataset,
    config: &TrainConfig,
    data_order: ChaCha8Rng,
    mut dropout: Option<Dropout>,
    mut augment: Option<Augment>,
    observer: &mut dyn Observer,
) -> Result<Vec<CurvePoint>> {
    if data.train.len() < config.batch_size {
        return Err(Error::Invalid(format!("{} training examples cannot fill a batch of {}", data.train.len(), config.batch_size)));
    }
    let dev = data.train.images.device();
    let masked = MaskedNetwork::new(model, params, mask, dev, config.sparse_kernels)?;
    let (net, train_params, step_masks) = (masked.net.as_ref(), &masked.params, masked.step_masks());
    let mut optimizer = MaskedOptimizer::for_device(config.optimizer, dev);
    let peak = config.optimizer.lr();
    let schedule = config.lr_schedule.as_ref().map_or_else(|| Schedule::constant(peak), |s| Schedule::new(peak, s, config.iterations));
    let mut batches = Batches::new(&data.train, config.batch_size, data_order);
    // A rewound level sees the batches the dense network would have seen after its rewind point.
    for _ in 0..config.start_iteration {
        batches.next_indices();
    }
    let mut running = Running::default();
    let eval = (EvalSplit::new(net, &data.validation)?, EvalSplit::new(net, &data.test)?);
    let mut curve = vec![evaluate_point(net, &eval, config.start_iteration, &running)?];
    observer.on_eval(&curve[0]);
    let snapshot_at = observer.snapshot_at();
    for iteration in config.start_iteration + 1..=config.iterations {
        let (xs, ys) = batches.next_batch()?;
        let xs = match augment.as_mut() {
            Some(augment) => augment.apply(&xs)?,
            None => xs,
        };
        optimizer.set_lr(schedule.lr(iteration - 1));
        let step = net.train_step(&xs, &ys, dropout.as_mut())?;
        optimizer.step(train_params, &step.grads, &step_masks)?;
        running.add(step.loss.to_scalar::<f32>()? as f64, correct(&step.logits, &ys)?, ys.dims1()?);
        observer.on_step(iteration);
        if snapshot_at == Some(iteration) {
            masked.write_back(params)?;
            observer.on_snapshot(iteration, models::weights_of(params)?);
        }
        if iteration % config.eval_every == 0 || iteration == config.iterations {
            let point = evaluate_point(net, &eval, iteration, &running)?;
            observer.on_eval(&point);
            curve.push(point);
            running = Running::default();
        }
    }
    masked.write_back(params)?;
    Ok(curve)
}

/// A network set up to train under a mask: the pruned weights of the dense parameters zeroed,
/// sparse layers (`models::linear`) as compact parameters, and the masks the optimizer needs
/// for the rest.
pub struct MaskedNetwork<'m> {
    mask: &'m Mask,
    mask_tensors: MaskTensors,
    compact: Compact,
    /// What the optimizer updates: the dense parameters, with sparse layers' weights compact.
    pub params: Params,
    pub net: Box<dyn Network>,
}

impl<'m> MaskedNetwork<'m> {
    /// `sparse_kernels: false` keeps every layer dense (the reference the sparse kernels are
    /// checked against).
    pub fn new(model: ModelKind, dense: &Params, mask: &'m Mask, dev: &Device, sparse_kernels: bool) -> Result<Self> {
        let mask_tensors = mask.to_tensors(dev)?;
        mask.apply(dense, &mask_tensors)?;
        let compact = if sparse_kernels { Compact::choose(mask, dev.is_cpu()) } else { Compact::none() };
        let params = compact.params(dense)?;
        let net = models::build(model, &params, &compact)?;
        Ok(MaskedNetwork { mask, mask_tensors, compact, params, net })
    }

    /// The masks of the layers that train dense (sparse ones hold only kept weights).
    pub fn step_masks(&self) -> BTreeMap<String, StepMask<'_>> {
        self.mask
            .layers
            .iter()
            .filter(|(name, _)| !self.compact.is_sparse(name))
            .filter_map(|(name, layer)| Some((name.clone(), StepMask { host: &layer.keep, tensor: self.mask_tensors.get(name)? })))
            .collect()
    }

    /// Writes the trained weights of sparse layers back into `dense` (the others share storage).
    pub fn write_back(&self, dense: &Params) -> Result<()> {
        self.compact.write_back(&self.params, dense)
    }
}

#[derive(Default)]
struct Running {
    loss_sum: f64,
    correct: usize,
    seen: usize,
    batches: usize,
}

impl Running {
    fn add(&mut self, loss: f64, correct: usize, n: usize) {
        self.loss_sum += loss;
        self.correct += correct;
        self.seen += n;
        self.batches += 1;
    }
}

fn evaluate_point(net: &dyn Network, (validation, test): &(EvalSplit, EvalSplit), iteration: usize, running: &Running) -> Result<CurvePoint> {
    let (val_loss, val_acc) = evaluate(net, validation)?;
    let (test_loss, test_acc) = evaluate(net, test)?;
    let (train_loss, train_acc) =
        if running.batches == 0 { (f64::NAN, f64::NAN) } else { (running.loss_sum / running.batches as f64, running.correct as f64 / running.seen as f64) };
    Ok(CurvePoint { iteration, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc })
}

/// Mean cross-entropy and accuracy of `net` on a split: in one feature-major pass where the
/// network takes one, else in batch-major passes of [`EVAL_CHUNK_VALUES`]; the loss chunk by
/// chunk either way, so both give the same bits.
pub fn evaluate(net: &dyn Network, eval: &EvalSplit) -> Result<(f64, f64)> {
    let split = eval.split;
    let n = split.len();
    let chunk = (EVAL_CHUNK_VALUES / (split.images.elem_count() / n.max(1)).max(1)).max(1);
    let whole = match &eval.feature_major {
        Some((xs_t, width)) => net.forward_feature_major(xs_t, n, *width)?,
        None => None,
    };
    let (mut loss_sum, mut n_correct) = (0.0, 0);
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let logits = match &whole {
            Some(logits) => logits.narrow(0, start, len)?,
            None => net.forward(&split.images.narrow(0, start, len)?)?,
        };
        let ys = split.labels.narrow(0, start, len)?;
        loss_sum += crate::kernels::loss::cross_entropy(&logits, &ys)?.to_scalar::<f32>()? as f64 * len as f64;
        n_correct += correct(&logits, &ys)?;
    }
    Ok((loss_sum / n as f64, n_correct as f64 / n as f64))
}

fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let hits = logits.argmax(1)?.eq(labels)?.to_dtype(DType::U32)?.sum_all()?;
    Ok(hits.to_scalar::<u32>()? as usize)
}
