//! The one training loop: minibatch (augmented where the spec asks), forward, cross-entropy,
//! backward, masked optimizer step at the scheduled learning rate (`schedule`).
//! It always trains for the full budget and evaluates validation and test loss/accuracy every
//! `eval_every` iterations (docs/paper.md §1, App C); the early-stop iteration is read from the
//! curve afterwards (`results::table`), never used to stop. Progress goes to an [`Observer`].

use crate::base::error::{Error, Result};
use crate::base::spec::{LrSchedule, ModelKind};
use crate::data::augment::Augment;
use crate::data::batches::Batches;
use crate::data::{Dataset, Split};
use crate::nn::linear::Compact;
use crate::nn::{self, Dropout, Network, Params};
use crate::ops::device::{fast_kernels, scalar, to_host};
use crate::sparsity::masks::Mask;
use crate::train::optim::{MaskedOptimizer, OptimizerState, Rule, StepMask};
use crate::train::schedule::Schedule;
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
    /// Let sparse layers skip their pruned weights (`nn::linear`, `optim`). The results
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
    fn on_snapshot(&mut self, _iteration: usize, _weights: nn::Weights) {}
    /// End the training at the snapshot (`instability` needs only θk).
    fn stop_at_snapshot(&self) -> bool {
        false
    }
    /// Whether to take a checkpoint after step `iteration` (asked after every step but the
    /// last; a checkpoint reads the weights and the optimizer's buffers back, so not often).
    fn checkpoint_due(&mut self, _iteration: usize) -> bool {
        false
    }
    /// The training's state after that step, and every parameter (BatchNorm's running
    /// statistics included): what [`train_resumed`] goes on from. An error ends the training.
    fn on_checkpoint(&mut self, _state: TrainState, _weights: nn::Weights) -> Result<()> {
        Ok(())
    }
}

/// Where a training stands after a step, its parameters apart: with them, enough to go on to
/// the same bits as a training never interrupted (`lottery::checkpoint` saves both).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// The last iteration trained.
    pub iteration: usize,
    /// The evaluations so far.
    pub curve: Vec<CurvePoint>,
    /// The train metrics summed since the last evaluation.
    pub running: RunningSums,
    pub optimizer: OptimizerState,
    /// How far the augmentation and dropout streams were read (the data order is replayed).
    pub augment_at: Option<u128>,
    pub dropout_at: Option<u128>,
}

/// The train loss and hits summed since the last evaluation, as [`Running`] holds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunningSums {
    pub loss_sum: f64,
    pub correct: u32,
    pub seen: usize,
    pub batches: usize,
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
        let feature_major = if net.evaluates_feature_major() { Some(crate::nn::linear::feature_major(&split.images)?) } else { None };
        Ok(EvalSplit { split, feature_major })
    }
}

/// What a training starts from: the network, its parameters (trained in place: the caller
/// reads the trained weights from them) and the mask it trains under.
pub struct Start<'a> {
    pub model: ModelKind,
    pub params: &'a Params,
    pub mask: &'a Mask,
}

/// A training's random streams, each seeded by the caller (`base::seeds`): the batch order and,
/// where the spec asks for them, dropout and augmentation.
pub struct Streams {
    pub data_order: ChaCha8Rng,
    pub dropout: Option<Dropout>,
    pub augment: Option<Augment>,
}

/// Trains `start`'s network on `data` and returns its curve.
pub fn train(start: Start, data: &Dataset, config: &TrainConfig, streams: Streams, observer: &mut dyn Observer) -> Result<Vec<CurvePoint>> {
    run(start, None, data, config, streams, observer)
}

/// Goes on with a training from its checkpoint `state` (`start.params` holding the weights
/// saved with it; `config` and `streams` those of the training it interrupted) and returns the
/// whole curve: the same bits as the training never interrupted.
pub fn train_resumed(
    start: Start,
    state: TrainState,
    data: &Dataset,
    config: &TrainConfig,
    streams: Streams,
    observer: &mut dyn Observer,
) -> Result<Vec<CurvePoint>> {
    run(start, Some(state), data, config, streams, observer)
}

fn run(
    start: Start,
    resume: Option<TrainState>,
    data: &Dataset,
    config: &TrainConfig,
    streams: Streams,
    observer: &mut dyn Observer,
) -> Result<Vec<CurvePoint>> {
    let Start { model, params, mask } = start;
    if data.train.len() < config.batch_size {
        return Err(Error::Invalid(format!("{} training examples cannot fill a batch of {}", data.train.len(), config.batch_size)));
    }
    let dev = data.train.images.device();
    let mut trainer =
        MaskedTrainer::new(MaskedNetwork::new(model, params, mask, dev, config.sparse_kernels)?, MaskedOptimizer::for_device(config.optimizer, dev));
    let peak = config.optimizer.lr();
    let schedule = config.lr_schedule.as_ref().map_or_else(|| Schedule::constant(peak), |s| Schedule::new(peak, s, config.iterations));
    let first = match &resume {
        Some(state) => check_resumable(state, config, &streams)?,
        None => config.start_iteration,
    };
    let Streams { data_order, mut dropout, mut augment } = streams;
    let mut batches = Batches::new(&data.train, config.batch_size, data_order);
    // A rewound level sees the batches the dense network would have seen after its rewind
    // point, a resumed one those after its checkpoint.
    for _ in 0..first {
        batches.next_indices();
    }
    // Augmentation builds each batch on the host (`Batches::next_augmented`); where the images
    // are not the fast CPU path's, their host copy is read once here, not at every step.
    let host_images = if augment.is_some() && !fast_kernels(dev) { Some(to_host::<f32>(&data.train.images)?) } else { None };
    let mut running = Running::new(dev)?;
    let eval = (EvalSplit::new(trainer.net(), &data.validation)?, EvalSplit::new(trainer.net(), &data.test)?);
    let mut curve = match resume {
        Some(state) => {
            running = Running::from_sums(state.running, dev)?;
            trainer.optimizer.restore(state.optimizer, &trainer.masked.params)?;
            if let (Some(augment), Some(at)) = (augment.as_mut(), state.augment_at) {
                augment.seek(at);
            }
            if let (Some(dropout), Some(at)) = (dropout.as_mut(), state.dropout_at) {
                dropout.seek(at);
            }
            state.curve
        }
        None => {
            let point = evaluate_point(trainer.net(), &eval, config.start_iteration, &running)?;
            observer.on_eval(&point);
            vec![point]
        }
    };
    let snapshot_at = observer.snapshot_at();
    for iteration in first + 1..=config.iterations {
        let (xs, ys) = match augment.as_mut() {
            Some(augment) => batches.next_augmented(augment, host_images.as_deref())?,
            None => batches.next_batch()?,
        };
        trainer.set_lr(schedule.lr(iteration - 1));
        let step = trainer.step(&xs, &ys, dropout.as_mut())?;
        running.add(&step.loss, &step.logits, &ys)?;
        observer.on_step(iteration);
        if snapshot_at == Some(iteration) {
            trainer.masked.write_back(params)?;
            observer.on_snapshot(iteration, nn::weights_of(params)?);
            if observer.stop_at_snapshot() {
                return Ok(curve);
            }
        }
        if iteration % config.eval_every == 0 || iteration == config.iterations {
            let point = evaluate_point(trainer.net(), &eval, iteration, &running)?;
            observer.on_eval(&point);
            curve.push(point);
            running = Running::new(dev)?;
        }
        if iteration < config.iterations && observer.checkpoint_due(iteration) {
            trainer.masked.write_back(params)?;
            let state = TrainState {
                iteration,
                curve: curve.clone(),
                running: running.sums()?,
                optimizer: trainer.optimizer.state()?,
                augment_at: augment.as_ref().map(Augment::position),
                dropout_at: dropout.as_ref().map(Dropout::position),
            };
            observer.on_checkpoint(state, nn::weights_of(params)?)?;
        }
    }
    trainer.masked.write_back(params)?;
    Ok(curve)
}

/// The iteration a checkpoint resumes after, if `state` can be one of a training under
/// `config` with `streams`: an iteration within its span, a curve that ends at the last
/// evaluation before it, and a stream position for each stream the training draws from, and
/// for no other.
pub fn check_resumable(state: &TrainState, config: &TrainConfig, streams: &Streams) -> Result<usize> {
    let (augment, dropout) = (streams.augment.is_some(), streams.dropout.is_some());
    let at = state.iteration;
    let last_evaluation = config.start_iteration.max(at - at % config.eval_every.max(1));
    if !(config.start_iteration..config.iterations).contains(&at) || state.curve.last().map(|p| p.iteration) != Some(last_evaluation) {
        return Err(Error::Invalid(format!(
            "a checkpoint at iteration {at} (its curve ends at {:?}) cannot resume a training of iterations {}..{} evaluated every {}",
            state.curve.last().map(|p| p.iteration),
            config.start_iteration,
            config.iterations,
            config.eval_every
        )));
    }
    if state.augment_at.is_some() != augment || state.dropout_at.is_some() != dropout {
        return Err(Error::Invalid(format!(
            "a checkpoint at iteration {at} was taken with other random streams (augmentation, dropout) than this training draws"
        )));
    }
    Ok(at)
}

/// A network set up to train under a mask: the pruned weights of the dense parameters zeroed,
/// sparse layers (`nn::linear`) as compact parameters, and the masks the optimizer needs
/// for the rest.
pub struct MaskedNetwork<'m> {
    /// The masks of the layers that train dense (sparse ones hold only kept weights), made
    /// once: the optimizer reads them at every step.
    step_masks: BTreeMap<String, StepMask<'m>>,
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
        let compact = if sparse_kernels { Compact::choose(mask, fast_kernels(dev)) } else { Compact::none() };
        let params = compact.params(dense)?;
        let net = nn::build(model, &params, &compact)?;
        let step_masks = mask
            .layers
            .iter()
            .filter(|(name, _)| !compact.is_sparse(name))
            .filter_map(|(name, layer)| Some((name.clone(), StepMask { host: &layer.keep, tensor: mask_tensors.get(name)?.clone() })))
            .collect();
        Ok(MaskedNetwork { step_masks, compact, params, net })
    }

    /// Writes the trained weights of sparse layers back into `dense` (the others share storage).
    pub fn write_back(&self, dense: &Params) -> Result<()> {
        self.compact.write_back(&self.params, dense)
    }
}

/// A masked network and its optimizer: the one definition of a training step (forward,
/// backward, the update under the mask) that training runs and `bench`, `estimate` and
/// `gpu-check` time.
pub struct MaskedTrainer<'m> {
    pub masked: MaskedNetwork<'m>,
    optimizer: MaskedOptimizer,
}

impl<'m> MaskedTrainer<'m> {
    pub fn new(masked: MaskedNetwork<'m>, optimizer: MaskedOptimizer) -> Self {
        MaskedTrainer { masked, optimizer }
    }

    pub fn net(&self) -> &dyn Network {
        self.masked.net.as_ref()
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.optimizer.set_lr(lr);
    }

    /// One step on the batch `(xs, labels)`; its loss and logits stay on the device (reading
    /// them is the caller's choice: training sums them there, `ops::device`).
    pub fn step(&mut self, xs: &Tensor, labels: &Tensor, dropout: Option<&mut Dropout>) -> Result<nn::Step> {
        let step = self.masked.net.train_step(xs, labels, dropout)?;
        self.optimizer.step(&self.masked.params, &step.grads, &self.masked.step_masks)?;
        Ok(step)
    }
}

/// The train loss and accuracy since the last evaluation, summed on the device so that a step
/// reads nothing back (`ops::device`): the loss in f64, each step's f32 loss converted
/// exactly and added in step order (the arithmetic of a host f64 sum), the hits as integers.
struct Running {
    loss_sum: Tensor,
    correct: Tensor,
    seen: usize,
    batches: usize,
}

impl Running {
    fn new(dev: &Device) -> Result<Self> {
        Ok(Running { loss_sum: Tensor::zeros((), DType::F64, dev)?, correct: Tensor::zeros((), DType::U32, dev)?, seen: 0, batches: 0 })
    }

    fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<()> {
        self.loss_sum = (&self.loss_sum + loss.detach().to_dtype(DType::F64)?)?;
        self.correct = (&self.correct + hits(&logits.detach(), labels)?)?;
        self.seen += labels.dims1()?;
        self.batches += 1;
        Ok(())
    }

    fn from_sums(sums: RunningSums, dev: &Device) -> Result<Self> {
        let RunningSums { loss_sum, correct, seen, batches } = sums;
        Ok(Running { loss_sum: Tensor::new(loss_sum, dev)?, correct: Tensor::new(correct, dev)?, seen, batches })
    }

    /// The sums on the host (two reads).
    fn sums(&self) -> Result<RunningSums> {
        Ok(RunningSums { loss_sum: scalar::<f64>(&self.loss_sum)?, correct: scalar::<u32>(&self.correct)?, seen: self.seen, batches: self.batches })
    }

    /// The mean loss and accuracy (two reads); NaN before any step.
    fn means(&self) -> Result<(f64, f64)> {
        if self.batches == 0 {
            return Ok((f64::NAN, f64::NAN));
        }
        Ok((scalar::<f64>(&self.loss_sum)? / self.batches as f64, scalar::<u32>(&self.correct)? as f64 / self.seen as f64))
    }
}

fn evaluate_point(net: &dyn Network, (validation, test): &(EvalSplit, EvalSplit), iteration: usize, running: &Running) -> Result<CurvePoint> {
    let (val_loss, val_acc) = evaluate(net, validation)?;
    let (test_loss, test_acc) = evaluate(net, test)?;
    let (train_loss, train_acc) = running.means()?;
    Ok(CurvePoint { iteration, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc })
}

/// Mean cross-entropy and accuracy of `net` on a split: in one feature-major pass where the
/// network takes one, else in batch-major passes of [`EVAL_CHUNK_VALUES`]; the loss chunk by
/// chunk either way, so both give the same bits. The sums stay on the device until the end
/// (two reads per split), in the arithmetic of host f64 sums.
pub fn evaluate(net: &dyn Network, eval: &EvalSplit) -> Result<(f64, f64)> {
    let split = eval.split;
    let n = split.len();
    let chunk = (EVAL_CHUNK_VALUES / (split.images.elem_count() / n.max(1)).max(1)).max(1);
    let whole = match &eval.feature_major {
        Some((xs_t, width)) => net.forward_feature_major(xs_t, n, *width)?,
        None => None,
    };
    let dev = split.images.device();
    let (mut loss_sum, mut n_correct) = (Tensor::zeros((), DType::F64, dev)?, Tensor::zeros((), DType::U32, dev)?);
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        // Detached, so that the sums below do not hold this chunk's forward graph (its
        // activations) until the last chunk: without it a split's evaluation kept every
        // chunk's activations at once (Conv-6 with dropout: 3.3 GB for 4,000 images).
        let logits = match &whole {
            Some(logits) => logits.narrow(0, start, len)?,
            None => net.forward(&split.images.narrow(0, start, len)?)?,
        }
        .detach();
        let ys = split.labels.narrow(0, start, len)?;
        let loss = crate::ops::loss::cross_entropy(&logits, &ys)?.to_dtype(DType::F64)?;
        loss_sum = (loss_sum + (loss * len as f64)?)?;
        n_correct = (n_correct + hits(&logits, &ys)?)?;
    }
    Ok((scalar::<f64>(&loss_sum)? / n as f64, scalar::<u32>(&n_correct)? as f64 / n as f64))
}

/// How many rows of `logits` have their largest value at the label: a u32 scalar on the device.
fn hits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits.argmax(1)?.eq(labels)?.to_dtype(DType::U32)?.sum_all()?)
}
