//! The kernel table and the launch plan that both launch paths follow: the raw-wgpu API
//! ([`SupConPlan`](super::supcon::SupConPlan), [`CosineSimilarity`](super::similarity::CosineSimilarity))
//! and the Burn extension (`backend/cube.rs`). Each path only maps the [`Role`]s of a
//! [`Dispatch`] to its own buffers and launches the list in order; which kernels run, in which
//! order, with which bindings, workgroup sizes and counts is decided here alone.

use super::shaders;
use super::supcon::{
    PositiveKind, Strategy, SupConOptions, SupConShape, backward_passes, column_passes,
    default_pass_columns, kernel_params, row_dot_len, running_len,
};

/// One WGSL kernel: its source (entry point `main`), its workgroup size, and its storage
/// bindings (group 0, bindings `0..bindings`, all `read_write`). A unit test checks the size and
/// the binding count against naga's reading of the source.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KernelSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub workgroup_size: [u32; 3],
    pub bindings: u32,
}

/// Pairwise cosine similarity ([`Strategy::Tiles`]); bindings: params, a, b, out.
pub(crate) const COSINE_SIMILARITY: KernelSpec = KernelSpec {
    name: "cosine_similarity",
    source: shaders::COSINE_SIMILARITY,
    workgroup_size: [16, 16, 1],
    bindings: 4,
};
/// Pairwise cosine similarity ([`Strategy::Direct`]); bindings as [`COSINE_SIMILARITY`].
pub(crate) const COSINE_SIMILARITY_DIRECT: KernelSpec = KernelSpec {
    name: "cosine_similarity_direct",
    source: shaders::COSINE_SIMILARITY_DIRECT,
    workgroup_size: [8, 8, 1],
    bindings: 4,
};
/// SupCon step 1; bindings: params, features, inv_norm, z, keys.
pub(crate) const SUPCON_PREPARE: KernelSpec = KernelSpec {
    name: "supcon_prepare",
    source: shaders::SUPCON_PREPARE,
    workgroup_size: [256, 1, 1],
    bindings: 5,
};
/// SupCon step 2 ([`Strategy::Tiles`]); bindings: params, z, positives, anchor_stats, running.
pub(crate) const SUPCON_FORWARD: KernelSpec = KernelSpec {
    name: "supcon_forward",
    source: shaders::SUPCON_FORWARD,
    workgroup_size: [16, 16, 1],
    bindings: 5,
};
/// SupCon step 2 ([`Strategy::Direct`]); bindings as [`SUPCON_FORWARD`].
pub(crate) const SUPCON_FORWARD_DIRECT: KernelSpec = KernelSpec {
    name: "supcon_forward_direct",
    source: shaders::SUPCON_FORWARD_DIRECT,
    workgroup_size: [8, 8, 1],
    bindings: 5,
};
/// SupCon step 3; bindings: params, inv_norm, anchor_stats, output.
pub(crate) const SUPCON_REDUCE: KernelSpec = KernelSpec {
    name: "supcon_reduce",
    source: shaders::SUPCON_REDUCE,
    workgroup_size: [256, 1, 1],
    bindings: 4,
};
/// SupCon step 4 ([`Strategy::Tiles`]); bindings: params, z, positives, inv_norm,
/// anchor_stats, output, grad, row_dot.
pub(crate) const SUPCON_BACKWARD: KernelSpec = KernelSpec {
    name: "supcon_backward",
    source: shaders::SUPCON_BACKWARD,
    workgroup_size: [16, 16, 1],
    bindings: 8,
};
/// SupCon step 4a ([`Strategy::Direct`]); bindings: params, z, positives, anchor_stats,
/// output, weights, row_dot.
pub(crate) const SUPCON_BACKWARD_WEIGHTS: KernelSpec = KernelSpec {
    name: "supcon_backward_weights",
    source: shaders::SUPCON_BACKWARD_WEIGHTS,
    workgroup_size: [8, 8, 1],
    bindings: 7,
};
/// SupCon step 4b ([`Strategy::Direct`]); bindings: params, z, inv_norm, output, weights, grad,
/// row_dot.
pub(crate) const SUPCON_BACKWARD_APPLY: KernelSpec = KernelSpec {
    name: "supcon_backward_apply",
    source: shaders::SUPCON_BACKWARD_APPLY,
    workgroup_size: [8, 8, 1],
    bindings: 7,
};

/// Every kernel of the SupCon loss.
pub(crate) const SUPCON_KERNELS: [&KernelSpec; 7] = [
    &SUPCON_PREPARE,
    &SUPCON_FORWARD,
    &SUPCON_FORWARD_DIRECT,
    &SUPCON_REDUCE,
    &SUPCON_BACKWARD,
    &SUPCON_BACKWARD_WEIGHTS,
    &SUPCON_BACKWARD_APPLY,
];
/// Every kernel of the cosine similarity.
pub(crate) const SIMILARITY_KERNELS: [&KernelSpec; 2] =
    [&COSINE_SIMILARITY, &COSINE_SIMILARITY_DIRECT];

/// Output rows and columns per workgroup of both similarity kernels (`TILE` of
/// `shaders/lib/similarity.wgsl`; a unit test checks the value).
pub(crate) const SIMILARITY_TILE: u64 = 64;
/// Rows per workgroup of `supcon_prepare.wgsl`.
const PREPARE_ROWS: u64 = 256;
/// Anchors per workgroup of both forward kernels (`TILE_A` of `shaders/lib/supcon_host.wgsl`,
/// as are the WGSL names below; a unit test checks the values).
pub(crate) const FORWARD_ANCHORS: u64 = 64;
/// Output rows and columns per workgroup of the backward kernels (`TILE_R`, `CHUNK_D`).
pub(crate) const BACKWARD_ROWS: u64 = 64;
pub(crate) const BACKWARD_COLUMNS: u64 = 128;

/// Which buffer a binding of a [`Dispatch`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The parameter block for contrast rows `passes[i]` of the [`SupConLaunch`] (for the
    /// similarity: its one block, index 0).
    Params(usize),
    /// SupCon: the raw features, the keys (any buffer when there are none), the positives
    /// (any buffer when there are none), and the buffers of
    /// [`SupConPlan`](super::supcon::SupConPlan) of the same names.
    Features,
    Keys,
    Positives,
    InvNorm,
    /// `N + K` f32s that the kernel writes and nothing reads afterwards (the inverse norms when
    /// the backward pass recomputes `z`).
    Discard,
    Z,
    AnchorStats,
    Running,
    Output,
    Grad,
    RowDot,
    Weights,
    /// Similarity: the inputs `a`, `b` and the `[n, m]` result.
    A,
    B,
    Similarity,
}

/// One dispatch: the kernel, its workgroup count (spread over a 2-D grid by
/// [`grid`](super::grid)), and the buffer of each binding, in binding order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dispatch {
    pub kernel: &'static KernelSpec,
    pub groups: u64,
    pub bindings: Vec<Role>,
}

/// The ordered dispatches of one SupCon problem.
#[derive(Clone, Debug)]
pub(crate) struct SupConLaunch {
    /// Contrast rows `[begin, end)` of every parameter block [`Role::Params`] names: the forward
    /// passes, then the backward passes.
    pub passes: Vec<(u32, u32)>,
    /// Number of forward passes (the first entries of `passes`).
    pub forward_passes: usize,
    /// Prepare, forward (one dispatch per pass), reduce.
    pub forward: Vec<Dispatch>,
    /// Per backward pass, the backward kernel(s); after a prepare that recomputes `z` when asked
    /// for.
    pub backward: Vec<Dispatch>,
    /// Bytes of one backward pass's weights (the workspace of [`Strategy::Direct`]).
    pub weights_bytes: u64,
    /// f32s of [`Role::Running`] and of [`Role::RowDot`].
    pub running_len: u64,
    pub row_dot_len: u64,
}

impl SupConLaunch {
    /// Contrast rows `[begin, end)` of the forward passes.
    pub fn forward_passes(&self) -> &[(u32, u32)] {
        &self.passes[..self.forward_passes]
    }
    /// The same for the backward passes.
    pub fn backward_passes(&self) -> &[(u32, u32)] {
        &self.passes[self.forward_passes..]
    }
}

/// Contrast rows `[begin, end)` of each forward pass (over the N batch rows and the K keys):
/// `pass_columns` rows each, or [`default_pass_columns`].
pub(crate) fn forward_passes(shape: SupConShape, pass_columns: Option<u32>) -> Vec<(u32, u32)> {
    column_passes(
        shape.contrast_rows() as u32,
        pass_columns.unwrap_or_else(|| default_pass_columns(shape.dim)),
    )
}

/// The launch plan of a SupCon problem (checked by the caller). `recompute_z`: the backward
/// list starts with a prepare that rebuilds `z` (for a caller that does not keep the forward's
/// copy alive).
pub(crate) fn supcon_launch(
    shape: SupConShape,
    kind: PositiveKind,
    options: &SupConOptions,
    strategy: Strategy,
    pass_columns: Option<u32>,
    recompute_z: bool,
) -> SupConLaunch {
    use Role::*;
    let params = kernel_params(shape, kind, options);
    let rows = shape.rows();
    let forward_passes = forward_passes(shape, pass_columns);
    let (back_passes, weights_bytes) =
        backward_passes(strategy, shape, &forward_passes, pass_columns);
    let first_back = forward_passes.len();

    let prepare = |inv_norm| Dispatch {
        kernel: &SUPCON_PREPARE,
        groups: shape.contrast_rows().div_ceil(PREPARE_ROWS),
        bindings: vec![Params(0), Features, inv_norm, Z, Keys],
    };
    let forward_kernel = match strategy {
        Strategy::Tiles => &SUPCON_FORWARD,
        Strategy::Direct => &SUPCON_FORWARD_DIRECT,
    };
    let mut forward = vec![prepare(InvNorm)];
    forward.extend((0..forward_passes.len()).map(|pass| Dispatch {
        kernel: forward_kernel,
        groups: u64::from(params.n_anchors()).div_ceil(FORWARD_ANCHORS),
        bindings: vec![Params(pass), Z, Positives, AnchorStats, Running],
    }));
    forward.push(Dispatch {
        kernel: &SUPCON_REDUCE,
        groups: 1,
        bindings: vec![Params(0), InvNorm, AnchorStats, Output],
    });

    let row_blocks = rows.div_ceil(BACKWARD_ROWS);
    let groups = row_blocks * u64::from(shape.dim).div_ceil(BACKWARD_COLUMNS);
    let mut backward = Vec::new();
    if recompute_z {
        backward.push(prepare(Discard));
    }
    for pass in first_back..first_back + back_passes.len() {
        match strategy {
            Strategy::Tiles => backward.push(Dispatch {
                kernel: &SUPCON_BACKWARD,
                groups,
                bindings: vec![
                    Params(pass),
                    Z,
                    Positives,
                    InvNorm,
                    AnchorStats,
                    Output,
                    Grad,
                    RowDot,
                ],
            }),
            Strategy::Direct => backward.extend([
                Dispatch {
                    kernel: &SUPCON_BACKWARD_WEIGHTS,
                    groups: row_blocks,
                    bindings: vec![
                        Params(pass),
                        Z,
                        Positives,
                        AnchorStats,
                        Output,
                        Weights,
                        RowDot,
                    ],
                },
                Dispatch {
                    kernel: &SUPCON_BACKWARD_APPLY,
                    groups,
                    bindings: vec![Params(pass), Z, InvNorm, Output, Weights, Grad, RowDot],
                },
            ]),
        }
    }
    SupConLaunch {
        running_len: running_len(u64::from(params.n_anchors()), first_back),
        row_dot_len: row_dot_len(strategy, rows, back_passes.len()),
        passes: forward_passes.into_iter().chain(back_passes).collect(),
        forward_passes: first_back,
        forward,
        backward,
        weights_bytes,
    }
}

/// The one dispatch of an `[n, dim] × [m, dim]` cosine similarity.
pub(crate) fn similarity_launch(strategy: Strategy, n: u32, m: u32) -> Dispatch {
    let kernel = match strategy {
        Strategy::Tiles => &COSINE_SIMILARITY,
        Strategy::Direct => &COSINE_SIMILARITY_DIRECT,
    };
    Dispatch {
        kernel,
        groups: u64::from(n).div_ceil(SIMILARITY_TILE) * u64::from(m).div_ceil(SIMILARITY_TILE),
        bindings: vec![Role::Params(0), Role::A, Role::B, Role::Similarity],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::wgsl_mirror::module;

    /// `(workgroup size, storage bindings)` of a kernel as naga reads its source.
    fn naga_reading(spec: &KernelSpec) -> ([u32; 3], u32) {
        let module = module(spec.name, spec.source);
        assert_eq!(module.entry_points.len(), 1, "{}", spec.name);
        let entry = &module.entry_points[0];
        assert_eq!(entry.name, "main", "{}", spec.name);
        let bindings: Vec<u32> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| g.binding.as_ref())
            .map(|b| {
                assert_eq!(b.group, 0, "{}", spec.name);
                b.binding
            })
            .collect();
        let count = bindings.len() as u32;
        let mut sorted = bindings.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "{}", spec.name);
        (entry.workgroup_size, count)
    }

    #[test]
    fn every_kernel_spec_matches_its_wgsl() {
        // Pipelines are looked up by name (`Kernel::find`).
        let names: std::collections::BTreeSet<_> = SUPCON_KERNELS
            .iter()
            .chain(&SIMILARITY_KERNELS)
            .map(|spec| spec.name)
            .collect();
        assert_eq!(names.len(), SUPCON_KERNELS.len() + SIMILARITY_KERNELS.len());
        for spec in SUPCON_KERNELS.iter().chain(&SIMILARITY_KERNELS) {
            assert_eq!(
                naga_reading(spec),
                (spec.workgroup_size, spec.bindings),
                "{}: (workgroup_size, bindings) of the WGSL vs the KernelSpec",
                spec.name
            );
        }
    }

    #[test]
    fn every_dispatch_binds_what_its_kernel_declares() {
        let plain = SupConShape::new(300, 2, 96);
        for (shape, strategy) in [plain, plain.with_keys(130)]
            .into_iter()
            .flat_map(|s| [(s, Strategy::Tiles), (s, Strategy::Direct)])
        {
            for columns in [None, Some(64)] {
                for recompute_z in [false, true] {
                    let plan = supcon_launch(
                        shape,
                        PositiveKind::Labels,
                        &SupConOptions::default(),
                        strategy,
                        columns,
                        recompute_z,
                    );
                    // Both column loops cover the batch's rows and the keys, in order.
                    for passes in [plan.forward_passes(), plan.backward_passes()] {
                        assert_eq!(passes.first().map(|p| p.0), Some(0));
                        assert_eq!(passes.last().map(|p| p.1), Some(600 + shape.keys));
                        assert!(passes.windows(2).all(|w| w[0].1 == w[1].0));
                    }
                    assert_eq!(
                        plan.forward[0].groups,
                        (600 + u64::from(shape.keys)).div_ceil(PREPARE_ROWS)
                    );
                    for d in plan.forward.iter().chain(&plan.backward) {
                        assert_eq!(
                            d.bindings.len() as u32,
                            d.kernel.bindings,
                            "{}",
                            d.kernel.name
                        );
                        assert!(d.groups >= 1);
                        for role in &d.bindings {
                            if let Role::Params(i) = role {
                                assert!(*i < plan.passes.len());
                            }
                        }
                    }
                }
            }
        }
        for strategy in [Strategy::Tiles, Strategy::Direct] {
            let d = similarity_launch(strategy, 65, 1);
            assert_eq!(d.bindings.len() as u32, d.kernel.bindings);
            assert_eq!(d.groups, 2);
        }
    }
}
