//! LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks"), the
//! layer-wise adaptive rate scaling that SimCLR and SupCon use for large batches.
//!
//! For a weight tensor `w` (rank ≥ 2) with gradient `g`: `g ← g + λw`, then the trust ratio
//! `η‖w‖ / ‖g‖` (1 when either norm is 0) scales `g` before the momentum update
//! `v ← μv + g`, `w ← w − lr·v`. Biases and batch-norm parameters (rank 1) are excluded from
//! the adaptation and the weight decay, as in SimCLR's implementation, and get plain momentum SGD.

use burn::optim::momentum::{Momentum, MomentumConfig};
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, SgdState};
use burn::tensor::{Device, Tensor};

/// LARS settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LarsConfig {
    /// Momentum μ.
    pub momentum: f64,
    /// Weight decay λ (weights of rank ≥ 2 only).
    pub weight_decay: f64,
    /// Trust coefficient η.
    pub trust_coefficient: f64,
}

impl LarsConfig {
    /// The optimizer for a whole module.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(Lars {
            momentum: Momentum::new(
                &MomentumConfig::new()
                    .with_momentum(self.momentum)
                    .with_dampening(0.0),
            ),
            weight_decay: self.weight_decay as f32,
            trust: self.trust_coefficient as f32,
        })
    }
}

/// The LARS optimizer of one parameter tensor (wrap with [`LarsConfig::init`]).
#[derive(Clone)]
pub struct Lars {
    momentum: Momentum,
    weight_decay: f32,
    trust: f32,
}

impl Optimizer for Lars {
    type State<const D: usize> = SgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let grad = if D >= 2 {
            let grad = grad + tensor.clone().mul_scalar(self.weight_decay);
            let w_norm = tensor.clone().powf_scalar(2.0).sum().sqrt();
            let g_norm = grad.clone().powf_scalar(2.0).sum().sqrt();
            let ratio = (w_norm.clone() / g_norm.clone().clamp_min(1e-30)).mul_scalar(self.trust);
            // Trust ratio 1 where a norm is 0 (fresh zero weights, zero gradients).
            let degenerate = w_norm
                .lower_equal_elem(0.0)
                .bool_or(g_norm.lower_equal_elem(0.0));
            let ratio = ratio.mask_fill(degenerate, 1.0);
            grad * ratio.reshape([1usize; D])
        } else {
            grad
        };
        let (update, velocity) = self
            .momentum
            .transform(grad, state.and_then(|s| s.momentum));
        (
            tensor - update.mul_scalar(lr),
            Some(SgdState::new(Some(velocity))),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        SgdState::new(state.momentum.map(|m| m.to_device(device)))
    }
}
