//! Sparse fully connected layers (`nn::linear`) against candle's dense product: the
//! forward pass and both gradients, on shapes that do not fill the kernels' blocks, including
//! rows and columns with nothing kept; and the first-layer backward that skips the input
//! gradient.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use candle_core::{Device, Tensor, Var};
use lth::nn::linear::{Compact, Linear};
use lth::nn::Params;
use lth::sparsity::masks::{LayerMask, Mask};
use rand::Rng;

fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

struct Case {
    dense: Params,
    mask: Mask,
    xs: Var,
    /// The loss is sum(ys · c), so every output gets its own gradient.
    c: Tensor,
}

fn case(batch: usize, inputs: usize, outputs: usize, density: f64, seed: u64) -> Case {
    let dev = Device::Cpu;
    let mut rng = lth::base::seeds::stream(seed, lth::base::seeds::Purpose::Synthetic);
    let mut keep: Vec<f32> = (0..outputs * inputs).map(|_| if rng.random_bool(density) { 1.0 } else { 0.0 }).collect();
    // An empty row and an empty column.
    keep[inputs..2 * inputs].iter_mut().for_each(|k| *k = 0.0);
    (0..outputs).for_each(|o| keep[o * inputs + 3] = 0.0);
    let w: Vec<f32> = random(&mut rng, outputs * inputs).iter().zip(&keep).map(|(w, k)| w * k).collect();
    let dense: Params = [
        ("fc.weight".to_string(), Var::from_vec(w, (outputs, inputs), &dev).unwrap()),
        ("fc.bias".to_string(), Var::from_vec(random(&mut rng, outputs), outputs, &dev).unwrap()),
    ]
    .into();
    let mask = Mask { layers: [("fc.weight".to_string(), LayerMask { shape: vec![outputs, inputs], keep })].into() };
    let xs = Var::from_vec(random(&mut rng, batch * inputs), (batch, inputs), &dev).unwrap();
    let c = Tensor::from_vec(random(&mut rng, batch * outputs), (batch, outputs), &dev).unwrap();
    Case { dense, mask, xs, c }
}

fn assert_close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tolerance, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn sparse_layers_match_the_dense_product_and_its_gradients() {
    for (batch, inputs, outputs, density) in [(60, 97, 41, 0.1), (130, 300, 100, 0.05), (7, 40, 33, 0.3)] {
        let Case { dense, mask, xs, c } = case(batch, inputs, outputs, density, batch as u64);
        let compact = Compact::choose(&mask, true);
        assert!(compact.is_sparse("fc.weight"), "density {density} is below the threshold");
        let sparse = compact.params(&dense).unwrap();

        let dense_ys = Linear::new(&dense, "fc", &Compact::none()).unwrap().forward(xs.as_tensor(), true).unwrap();
        let sparse_ys = Linear::new(&sparse, "fc", &compact).unwrap().forward(xs.as_tensor(), true).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Sums of up to 300 products of values in [-1, 1] in another order.
        assert_close(&flat(&sparse_ys), &flat(&dense_ys), 1e-4, "forward");

        let dense_grads = dense_ys.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        let sparse_grads = sparse_ys.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        let grad_of = |grads: &candle_core::backprop::GradStore, v: &Var| flat(grads.get(v.as_tensor()).expect("a gradient"));
        assert_close(&grad_of(&sparse_grads, &xs), &grad_of(&dense_grads, &xs), 1e-4, "input gradient");
        assert_close(&grad_of(&sparse_grads, &sparse["fc.bias"]), &grad_of(&dense_grads, &dense["fc.bias"]), 1e-4, "bias gradient");
        // The compact weight gradient is the dense one at the kept positions.
        let dense_grad_w = grad_of(&dense_grads, &dense["fc.weight"]);
        let kept: Vec<f32> = mask.layers["fc.weight"].keep.iter().zip(&dense_grad_w).filter(|(&k, _)| k != 0.0).map(|(_, &g)| g).collect();
        assert_close(&grad_of(&sparse_grads, &sparse["fc.weight"]), &kept, 1e-4, "weight gradient");

        // Compact values go back to the dense store exactly, pruned weights as 0.
        let before = flat(dense["fc.weight"].as_tensor());
        dense["fc.weight"].set(&dense["fc.weight"].zeros_like().unwrap()).unwrap();
        compact.write_back(&sparse, &dense).unwrap();
        assert_eq!(flat(dense["fc.weight"].as_tensor()), before);
    }
}

#[test]
fn dense_layers_stay_dense_and_the_first_layer_skips_the_input_gradient() {
    let Case { dense, mask, xs, c } = case(60, 50, 20, 0.9, 3);
    assert!(!Compact::choose(&mask, true).is_sparse("fc.weight"), "90% kept stays dense");
    assert!(!Compact::choose(&case(60, 50, 20, 0.05, 3).mask, false).is_sparse("fc.weight"), "off the CPU, dense");
    let layer = Linear::new(&dense, "fc", &Compact::none()).unwrap();
    let with = layer.forward(xs.as_tensor(), true).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    let without = layer.forward(xs.as_tensor(), false).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(with.get(xs.as_tensor()).is_some());
    assert!(without.get(xs.as_tensor()).is_none(), "the first layer computed an input gradient");
    let w = dense["fc.weight"].as_tensor();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(with.get(w).unwrap()), flat(without.get(w).unwrap()), "same weight gradient");
}

#[test]
fn dense_layers_match_candles_matmul_including_the_threaded_split() {
    // 64 × 2048 × 300 = 39M multiply-adds: above the size that splits the product by columns
    // across threads (when the harness gives candle two); the small case runs on one thread.
    for (batch, inputs, outputs) in [(60, 97, 41), (64, 2048, 300)] {
        let Case { dense, xs, c, .. } = case(batch, inputs, outputs, 1.0, 9);
        let (w, b) = (dense["fc.weight"].as_tensor(), dense["fc.bias"].as_tensor());
        let ours = Linear::new(&dense, "fc", &Compact::none()).unwrap().forward(xs.as_tensor(), true).unwrap();
        let reference = xs.as_tensor().matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close(&flat(&ours), &flat(&reference), 1e-3, "forward");
        let g_ours = ours.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = reference.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        for (t, what) in [(xs.as_tensor(), "input gradient"), (w, "weight gradient"), (b, "bias gradient")] {
            assert_close(&flat(g_ours.get(t).unwrap()), &flat(g_ref.get(t).unwrap()), 1e-3, what);
        }
    }
}
