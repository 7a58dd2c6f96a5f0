//! Backward passes on `Autodiff<B, C>`: the fused SupCon backward kernel for the loss, the
//! analytic gradient (Burn ops on `B`) for the cosine similarity. Gradients go only to tracked
//! inputs; the loss's keys are never differentiated (their inner tensor is used, untracked).

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{
    Backend, TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::Shape;

use super::ops::{LossParams, SupConBackend, loss_of};

const NORM_EPS: f32 = 1e-12;

/// `(x / max(|x|, eps), 1 / max(|x|, eps))` row-wise, on `B`.
fn normalize<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let sq = B::float_mul(x.clone(), x.clone());
    let norm = B::float_clamp_min(B::float_sqrt(B::float_sum_dim(sq, 1)), NORM_EPS.into());
    let inv = B::float_recip(norm);
    (B::float_mul(x, inv.clone()), inv)
}

/// dL/dx from dL/dx̂ for `x̂ = x / |x|`: `(g − x̂ (x̂·g)) / |x|`.
fn normalize_backward<B: Backend>(
    x_hat: FloatTensor<B>,
    inv: FloatTensor<B>,
    g: FloatTensor<B>,
) -> FloatTensor<B> {
    let proj = B::float_sum_dim(B::float_mul(x_hat.clone(), g.clone()), 1);
    B::float_mul(B::float_sub(g, B::float_mul(x_hat, proj)), inv)
}

impl<B: SupConBackend, C: CheckpointStrategy> SupConBackend for Autodiff<B, C> {
    fn cosine_similarity(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CosineSimilarityBackward;

        impl<B: Backend> Backward<B, 2> for CosineSimilarityBackward {
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [node_a, node_b] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (a, b) = ops.state;
                let (a_hat, inv_a) = normalize::<B>(a);
                let (b_hat, inv_b) = normalize::<B>(b);
                if let Some(node) = node_b {
                    let g_b = B::float_matmul(B::float_transpose(g.clone()), a_hat.clone());
                    grads
                        .register::<B>(node.id, normalize_backward::<B>(b_hat.clone(), inv_b, g_b));
                }
                if let Some(node) = node_a {
                    let g_a = B::float_matmul(g, b_hat);
                    grads.register::<B>(node.id, normalize_backward::<B>(a_hat, inv_a, g_a));
                }
            }
        }

        let (a, guard_a) = a.into_parts();
        let (b, guard_b) = b.into_parts();
        match CosineSimilarityBackward
            .prepare::<C>([guard_a, guard_b])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::cosine_similarity(a.clone(), b.clone());
                prep.finish((a, b), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cosine_similarity(a, b)),
        }
    }

    fn supcon_forward(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        positives: IntTensor<Self>,
        params: LossParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Statistics, not differentiable outputs: computed on the inner backend, untracked.
        let (stats, inv_norm, output) = B::supcon_forward(
            features.into_primitive(),
            keys.into_primitive(),
            positives,
            params,
        );
        (
            FloatTensor::<Self>::new(stats),
            FloatTensor::<Self>::new(inv_norm),
            FloatTensor::<Self>::new(output),
        )
    }

    fn supcon_backward(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        positives: IntTensor<Self>,
        inv_norm: FloatTensor<Self>,
        anchor_stats: FloatTensor<Self>,
        output: FloatTensor<Self>,
        params: LossParams,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::supcon_backward(
            features.into_primitive(),
            keys.into_primitive(),
            positives,
            inv_norm.into_primitive(),
            anchor_stats.into_primitive(),
            output.into_primitive(),
            params,
        ))
    }

    fn supcon_loss(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        positives: IntTensor<Self>,
        params: LossParams,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SupConLossBackward;

        impl<B: SupConBackend> Backward<B, 1> for SupConLossBackward {
            /// Features, keys, positives and the forward pass's `(inv_norm, anchor_stats,
            /// output)`.
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                IntTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                LossParams,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [node] = ops.parents;
                let upstream = grads.consume::<B>(&ops.node);
                let Some(node) = node else { return };
                let (x, keys, positives, inv_norm, stats, output, params) = ops.state;
                let rank = x.shape().num_dims();
                let grad = B::supcon_backward(x, keys, positives, inv_norm, stats, output, params);
                let upstream = B::float_reshape(upstream, Shape::from(vec![1; rank]));
                grads.register::<B>(node.id, B::float_mul(grad, upstream));
            }
        }

        let (x, guard) = features.into_parts();
        let keys = keys.into_primitive();
        match SupConLossBackward
            .prepare::<C>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (stats, inv_norm, output) =
                    B::supcon_forward(x.clone(), keys.clone(), positives.clone(), params);
                let loss = loss_of::<B>(output.clone(), x.dtype());
                prep.finish((x, keys, positives, inv_norm, stats, output, params), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::supcon_loss(x, keys, positives, params)),
        }
    }
}
