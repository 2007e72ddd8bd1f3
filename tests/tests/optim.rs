//! The fused masked Adam and SGD kernels against the same updates written as candle ops, and
//! the mask rules: pruned weights and their state stay exactly 0.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use candle_core::{Device, Tensor, Var};
use lth::nn::Params;
use lth::train::optim::{AdamConfig, Implementation, MaskedOptimizer, Rule, SgdConfig, StepMask};
use rand::Rng;
use std::collections::BTreeMap;

const CONFIG: AdamConfig = AdamConfig { lr: 1.2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
// VGG-19's settings (docs/paper.md): momentum 0.9, weight decay 1e-4; lr 0.1 after warmup.
const SGD: SgdConfig = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };

fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Runs `steps` steps of `rule` with loss = sum(w * c_t) (so the gradient is c_t) and returns
/// the final weights of both parameters. `rows` × `cols` weights: large ones go through the
/// multi-threaded path when candle may use two threads.
fn train(rule: Rule, implementation: Implementation, steps: usize, (rows, cols): (usize, usize)) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let mut rng = lth::base::seeds::stream(11, lth::base::seeds::Purpose::Init);
    let mut w0 = random(&mut rng, rows * cols);
    let keep: Vec<f32> = (0..rows * cols).map(|_| if rng.random_bool(0.3) { 1.0 } else { 0.0 }).collect();
    w0.iter_mut().zip(&keep).for_each(|(w, k)| *w *= k);
    let b0 = random(&mut rng, rows);
    let params: Params = [
        ("layer.weight".to_string(), Var::from_slice(&w0, (rows, cols), &dev).unwrap()),
        ("layer.bias".to_string(), Var::from_slice(&b0, rows, &dev).unwrap()),
    ]
    .into();
    let mask_tensor = Tensor::from_slice(&keep, (rows, cols), &dev).unwrap();
    let masks: BTreeMap<String, StepMask> = [("layer.weight".to_string(), StepMask { host: &keep, tensor: mask_tensor.clone() })].into();
    let mut optimizer = MaskedOptimizer::new(rule, implementation);
    for _ in 0..steps {
        let cw = Tensor::from_vec(random(&mut rng, rows * cols), (rows, cols), &dev).unwrap();
        let cb = Tensor::from_vec(random(&mut rng, rows), rows, &dev).unwrap();
        let loss = (params["layer.weight"].as_tensor().mul(&cw).unwrap().sum_all().unwrap()
            + params["layer.bias"].as_tensor().mul(&cb).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        optimizer.step(&params, &grads, &masks).unwrap();
    }
    let get = |name: &str| params[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (get("layer.weight"), get("layer.bias"), keep)
}

/// Both implementations of `rule` agree within `tolerance` and hold pruned weights at 0.
fn check_fused_against_candle_ops(rule: Rule, shape: (usize, usize), tolerance: f32) {
    let (fused_w, fused_b, keep) = train(rule, Implementation::Fused, 25, shape);
    let (ops_w, ops_b, _) = train(rule, Implementation::CandleOps, 25, shape);
    for (a, b) in fused_w.iter().zip(&ops_w).chain(fused_b.iter().zip(&ops_b)) {
        assert!((a - b).abs() <= tolerance, "{rule:?} {shape:?}: fused {a} vs candle ops {b}");
    }
    for (i, &k) in keep.iter().enumerate() {
        if k == 0.0 {
            assert_eq!(fused_w[i], 0.0, "pruned weight {i} moved (fused)");
            assert_eq!(ops_w[i], 0.0, "pruned weight {i} moved (candle ops)");
        }
    }
    // Unpruned weights and biases did move.
    assert!(keep.iter().zip(&fused_w).any(|(&k, &w)| k == 1.0 && w != 0.0));
}

#[test]
fn fused_adam_matches_candle_ops() {
    // Same arithmetic in f32, different operation order: agree to a few ulps of the step size.
    check_fused_against_candle_ops(Rule::Adam(CONFIG), (37, 53), 1e-6);
}

#[test]
fn fused_sgd_matches_candle_ops() {
    // Weights stay O(1..10) over 25 steps of lr 0.1 with momentum; f32 rounding of the
    // differently ordered operations stays far below 1e-5.
    check_fused_against_candle_ops(Rule::Sgd(SGD), (37, 53), 1e-5);
}

#[test]
fn threaded_update_of_a_large_tensor_matches_candle_ops() {
    // 1100 × 1000 weights are split across threads (the test harness gives candle 2 threads on
    // a 2-core machine; on 1 core this checks the serial path again).
    check_fused_against_candle_ops(Rule::Adam(CONFIG), (1100, 1000), 1e-6);
    check_fused_against_candle_ops(Rule::Sgd(SGD), (1100, 1000), 1e-5);
}

#[test]
fn sgd_follows_pytorchs_formula() {
    // Two steps by hand: buf1 = g1 + wd·w0; w1 = w0 − lr·buf1; buf2 = μ·buf1 + g2 + wd·w1.
    let dev = Device::Cpu;
    let w = Var::from_slice(&[0.5f32, -2.0], 2, &dev).unwrap();
    let params: Params = [("w".to_string(), w.clone())].into();
    let mut optimizer = MaskedOptimizer::new(Rule::Sgd(SGD), Implementation::Fused);
    let c = [1.5f32, -0.5];
    let mut expected = [0.5f32, -2.0];
    let mut buf = [0f32; 2];
    for _ in 0..2 {
        let grads = w.as_tensor().mul(&Tensor::new(&c, &dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        optimizer.step(&params, &grads, &BTreeMap::new()).unwrap();
        for j in 0..2 {
            buf[j] = 0.9 * buf[j] + (c[j] + 1e-4 * expected[j]);
            expected[j] -= 0.1 * buf[j];
        }
    }
    let got = w.to_vec1::<f32>().unwrap();
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < 1e-6, "{g} vs {e}");
    }
}

#[test]
fn first_step_is_lr_times_sign() {
    // Adam's first step is lr · g / (|g| + eps/sqrt(1-b2)) ≈ lr · sign(g): a closed form to pin
    // the bias corrections (torch.optim.Adam gives the same for any gradient far from 0).
    let dev = Device::Cpu;
    let w = Var::from_slice(&[0.5f32, -0.25, 1.0], 3, &dev).unwrap();
    let params: Params = [("w".to_string(), w.clone())].into();
    let c = Tensor::new(&[2.0f32, -3.0, 0.5], &dev).unwrap();
    let grads = w.as_tensor().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    let mut adam = MaskedOptimizer::new(Rule::Adam(CONFIG), Implementation::Fused);
    adam.step(&params, &grads, &BTreeMap::new()).unwrap();
    let got = w.to_vec1::<f32>().unwrap();
    for (g, (w0, c)) in got.iter().zip([(0.5f32, 2.0f32), (-0.25, -3.0), (1.0, 0.5)]) {
        let expected = w0 - 1.2e-3 * c.signum();
        assert!((g - expected).abs() < 1e-7, "{g} vs {expected}");
    }
}
