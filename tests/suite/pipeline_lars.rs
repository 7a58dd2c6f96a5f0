//! LARS against a hand computation on the Flex backend: one and two steps of a linear layer
//! (trust-scaled, weight-decayed update of the weight matrix; plain momentum for the bias).
#![cfg(feature = "pipeline")]

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use supcon_wgpu::pipeline::lars::LarsConfig;

fn device() -> Device {
    Device::flex().autodiff()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn two_steps_match_the_formula() {
    let dev = device();
    let mut layer: Linear = LinearConfig::new(3, 2).init(&dev);
    let w0: Vec<f64> = vec![0.3, -0.2, 0.5, 0.1, -0.4, 0.25];
    let b0: Vec<f64> = vec![0.05, -0.1];
    layer.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w0.iter().map(|&v| v as f32).collect(), [3, 2]),
        &dev,
    ));
    layer.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b0.iter().map(|&v| v as f32).collect(), [2]),
        &dev,
    )));
    let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, -1.0], [1, 3]), &dev);
    let (lr, mu, wd, eta) = (0.5, 0.9, 0.01, 0.001);
    let mut optim = LarsConfig {
        momentum: mu,
        weight_decay: wd,
        trust_coefficient: eta,
    }
    .init();
    // Loss = sum(layer(x)): dL/dW[i][j] = x[i], dL/db[j] = 1.
    let g_w: Vec<f64> = vec![1.0, 1.0, 2.0, 2.0, -1.0, -1.0];
    let (mut w, mut b) = (w0.clone(), b0.clone());
    let (mut vw, mut vb) = (vec![0.0; 6], vec![0.0; 2]);
    for step in 0..2 {
        let loss = layer.forward(x.clone()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(lr, layer, grads);
        // The formula in f64.
        let g: Vec<f64> = g_w.iter().zip(&w).map(|(g, w)| g + wd * w).collect();
        let trust = eta * norm(&w) / norm(&g);
        for i in 0..6 {
            vw[i] = if step == 0 {
                trust * g[i]
            } else {
                mu * vw[i] + trust * g[i]
            };
            w[i] -= lr * vw[i];
        }
        for j in 0..2 {
            vb[j] = if step == 0 { 1.0 } else { mu * vb[j] + 1.0 };
            b[j] -= lr * vb[j];
        }
        let got_w = values(layer.weight.val());
        let got_b = values(layer.bias.as_ref().unwrap().val());
        for (a, e) in got_w.iter().zip(&w) {
            assert!(
                (a - e).abs() < 1e-6,
                "step {step}: weight {got_w:?} vs {w:?}"
            );
        }
        for (a, e) in got_b.iter().zip(&b) {
            assert!((a - e).abs() < 1e-6, "step {step}: bias {got_b:?} vs {b:?}");
        }
    }
    // The adaptation matters: a plain SGD step would have moved the weights by lr·g (~1).
    assert!(w.iter().zip(&w0).all(|(a, b)| (a - b).abs() < 0.01));
    assert_eq!(layer.num_params(), 8);
}
