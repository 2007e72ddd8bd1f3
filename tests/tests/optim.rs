//! The fused masked-Adam kernel against the same update written as candle ops, and the mask
//! rules: pruned weights and their moments stay exactly 0.

use candle_core::{Device, Tensor, Var};
use lth::models::Params;
use lth::optim::{AdamConfig, Implementation, MaskedAdam, StepMask};
use rand::Rng;
use std::collections::BTreeMap;

const CONFIG: AdamConfig = AdamConfig { lr: 1.2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };

fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Runs `steps` Adam steps with loss = sum(w * c_t) (so the gradient is c_t) and returns the
/// final weights of both parameters.
fn train(implementation: Implementation, steps: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let mut rng = lth::seeds::stream(11, lth::seeds::Purpose::Init);
    let (rows, cols) = (37, 53);
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
    let masks: BTreeMap<String, StepMask> = [("layer.weight".to_string(), StepMask { host: &keep, tensor: &mask_tensor })].into();
    let mut adam = MaskedAdam::new(CONFIG, implementation);
    for _ in 0..steps {
        let cw = Tensor::from_vec(random(&mut rng, rows * cols), (rows, cols), &dev).unwrap();
        let cb = Tensor::from_vec(random(&mut rng, rows), rows, &dev).unwrap();
        let loss = (params["layer.weight"].as_tensor().mul(&cw).unwrap().sum_all().unwrap()
            + params["layer.bias"].as_tensor().mul(&cb).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        adam.step(&params, &grads, &masks).unwrap();
    }
    let get = |name: &str| params[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (get("layer.weight"), get("layer.bias"), keep)
}

#[test]
fn fused_kernel_matches_candle_ops() {
    let (fused_w, fused_b, keep) = train(Implementation::Fused, 25);
    let (ops_w, ops_b, _) = train(Implementation::CandleOps, 25);
    // Same arithmetic in f32, different operation order: agree to a few ulps of the step size.
    let tolerance = 1e-6;
    for (a, b) in fused_w.iter().zip(&ops_w).chain(fused_b.iter().zip(&ops_b)) {
        assert!((a - b).abs() <= tolerance, "fused {a} vs candle ops {b}");
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
fn first_step_is_lr_times_sign() {
    // Adam's first step is lr · g / (|g| + eps/sqrt(1-b2)) ≈ lr · sign(g): a closed form to pin
    // the bias corrections (torch.optim.Adam gives the same for any gradient far from 0).
    let dev = Device::Cpu;
    let w = Var::from_slice(&[0.5f32, -0.25, 1.0], 3, &dev).unwrap();
    let params: Params = [("w".to_string(), w.clone())].into();
    let c = Tensor::new(&[2.0f32, -3.0, 0.5], &dev).unwrap();
    let grads = w.as_tensor().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    let mut adam = MaskedAdam::new(CONFIG, Implementation::Fused);
    adam.step(&params, &grads, &BTreeMap::new()).unwrap();
    let got = w.to_vec1::<f32>().unwrap();
    for (g, (w0, c)) in got.iter().zip([(0.5f32, 2.0f32), (-0.25, -3.0), (1.0, 0.5)]) {
        let expected = w0 - 1.2e-3 * c.signum();
        assert!((g - expected).abs() < 1e-7, "{g} vs {expected}");
    }
}
