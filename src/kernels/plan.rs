//! The kernel table and the launch plan that both launch paths follow: the raw-wgpu API
//! ([`SupConPlan`](super::supcon::SupConPlan), [`CosineSimilarity`](super::similarity::CosineSimilarity))
//! and the Burn extension (`backend/cube.rs`). Each path only maps the [`Role`]s of a
//! [`Dispatch`] to its own buffers and launches the list in order; which kernels run, in which
//! order, with which bindings, workgroup sizes and counts is decided here alone.

use super::shaders;
use super::supcon::{
    Pass, PositiveKind, Strategy, SupConOptions, SupConShape, TILE_COLUMNS, backward_passes,
    column_passes, default_pass_columns, kernel_params, partial_grad_bytes, partials_len,
    row_dot_len, running_len, z_stride,
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
/// SupCon step 2 ([`Strategy::Tiles`]); bindings: params, z, positives, partials.
pub(crate) const SUPCON_FORWARD: KernelSpec = KernelSpec {
    name: "supcon_forward",
    source: shaders::SUPCON_FORWARD,
    workgroup_size: [16, 16, 1],
    bindings: 4,
};
/// SupCon step 2 ([`Strategy::Direct`]); bindings as [`SUPCON_FORWARD`].
pub(crate) const SUPCON_FORWARD_DIRECT: KernelSpec = KernelSpec {
    name: "supcon_forward_direct",
    source: shaders::SUPCON_FORWARD_DIRECT,
    workgroup_size: [8, 8, 1],
    bindings: 4,
};
/// SupCon step 2b; bindings: params, partials, running, anchor_stats.
pub(crate) const SUPCON_MERGE: KernelSpec = KernelSpec {
    name: "supcon_merge",
    source: shaders::SUPCON_MERGE,
    workgroup_size: [256, 1, 1],
    bindings: 4,
};
/// SupCon step 3; bindings: params, inv_norm, anchor_stats, output.
pub(crate) const SUPCON_REDUCE: KernelSpec = KernelSpec {
    name: "supcon_reduce",
    source: shaders::SUPCON_REDUCE,
    workgroup_size: [256, 1, 1],
    bindings: 4,
};
/// SupCon step 4 ([`Strategy::Tiles`]); bindings: params, z, positives, anchor_stats, output,
/// scratch (the splits' raw sums), row_dot (the splits' dots).
pub(crate) const SUPCON_BACKWARD: KernelSpec = KernelSpec {
    name: "supcon_backward",
    source: shaders::SUPCON_BACKWARD,
    workgroup_size: [16, 16, 1],
    bindings: 7,
};
/// SupCon step 4b ([`Strategy::Tiles`]); bindings: params, z, inv_norm, output, scratch,
/// row_dot, grad.
pub(crate) const SUPCON_BACKWARD_MERGE: KernelSpec = KernelSpec {
    name: "supcon_backward_merge",
    source: shaders::SUPCON_BACKWARD_MERGE,
    workgroup_size: [256, 1, 1],
    bindings: 7,
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
pub(crate) const SUPCON_KERNELS: [&KernelSpec; 9] = [
    &SUPCON_PREPARE,
    &SUPCON_FORWARD,
    &SUPCON_FORWARD_DIRECT,
    &SUPCON_MERGE,
    &SUPCON_REDUCE,
    &SUPCON_BACKWARD,
    &SUPCON_BACKWARD_MERGE,
    &SUPCON_BACKWARD_WEIGHTS,
    &SUPCON_BACKWARD_APPLY,
];
/// The kernels whose work grows as N²: the ones the splits exist for.
pub(crate) const HEAVY_KERNELS: [&KernelSpec; 5] = [
    &SUPCON_FORWARD,
    &SUPCON_FORWARD_DIRECT,
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
/// Rows (threads) per workgroup of `supcon_prepare.wgsl`, `supcon_merge.wgsl` and
/// `supcon_backward_merge.wgsl` (their `WORKGROUP`).
const PREPARE_ROWS: u64 = 256;

/// Workgroups the heavy dispatches (the forward and backward kernels) of [`Strategy::Tiles`]
/// aim for: a GPU runs a few workgroups per compute unit at once and has up to ~140 units (an
/// H100 has 132), and a workgroup's share of the column loop must stay long enough that the
/// splits' partial results and their merge cost little. Reached from N = 4,096 up.
pub(crate) const TARGET_WORKGROUPS: u64 = 1024;
/// The fewest contrast rows of a split (two column tiles): shorter ones would spend as much on
/// their partial results and the workgroup's final merge as on their tiles.
pub(crate) const MIN_SPLIT_COLUMNS: u32 = 2 * TILE_COLUMNS;

/// The caller's overrides of how the column loops are cut (for tests and measurements; `None`
/// leaves it to the plan). Neither changes the result beyond float rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Columns {
    /// Contrast rows per pass (sequential dispatches), instead of [`default_pass_columns`].
    pub pass: Option<u32>,
    /// Contrast rows per split (side by side in one dispatch), instead of [`split_pass`]'s rule.
    pub split: Option<u32>,
}

/// Cuts the pass over contrast rows `[begin, end)` into splits, for a kernel whose grid has
/// `row_groups` workgroups per split. [`Strategy::Tiles`] takes enough splits that the grid
/// reaches [`TARGET_WORKGROUPS`] (splits of at least [`MIN_SPLIT_COLUMNS`] rows, whole column
/// tiles): one split where N alone fills the device. [`Strategy::Direct`] (CPU adapters, a
/// handful of cores that N/64 workgroups already keep busy) takes one. `split_columns`
/// overrides the length (rounded down to whole tiles, at least one).
pub(crate) fn split_pass(
    strategy: Strategy,
    (begin, end): (u32, u32),
    row_groups: u64,
    split_columns: Option<u32>,
) -> Pass {
    let len = end - begin;
    let columns = match (split_columns, strategy) {
        (Some(c), _) => (c / TILE_COLUMNS).max(1) * TILE_COLUMNS,
        (None, Strategy::Direct) => len,
        (None, Strategy::Tiles) => {
            // Rounded down, so that the splits are at least as many as wanted.
            let want = TARGET_WORKGROUPS.div_ceil(row_groups.max(1));
            let each = (u64::from(len) / want) as u32;
            (each / TILE_COLUMNS * TILE_COLUMNS).max(MIN_SPLIT_COLUMNS)
        }
    }
    .min(len);
    Pass {
        begin,
        end,
        splits: len.div_ceil(columns),
        split_columns: columns,
    }
}
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
    /// The forward kernels' per-split statistics (`[splits, n_anchors, 2]` vec4s).
    Partials,
    /// The backward workspace: the pass's weights (`Strategy::Direct`), or the splits' raw
    /// gradient sums (`Strategy::Tiles`).
    Scratch,
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
    /// The pass of every parameter block [`Role::Params`] names: the forward passes, then the
    /// backward passes.
    pub passes: Vec<Pass>,
    /// Number of forward passes (the first entries of `passes`).
    pub forward_passes: usize,
    /// Prepare, forward and merge (per pass), reduce.
    pub forward: Vec<Dispatch>,
    /// Per backward pass, the backward kernel and its merge (`Tiles`) or the weights and apply
    /// kernels (`Direct`); after a prepare that recomputes `z` when asked for.
    pub backward: Vec<Dispatch>,
    /// Bytes of [`Role::Scratch`].
    pub scratch_bytes: u64,
    /// f32s of [`Role::Partials`], [`Role::Running`] and [`Role::RowDot`].
    pub partials_len: u64,
    pub running_len: u64,
    pub row_dot_len: u64,
}

impl SupConLaunch {
    /// The forward passes.
    pub fn forward_passes(&self) -> &[Pass] {
        &self.passes[..self.forward_passes]
    }
    /// The backward passes.
    pub fn backward_passes(&self) -> &[Pass] {
        &self.passes[self.forward_passes..]
    }
    /// The dispatches of the kernels whose work grows as N² ([`HEAVY_KERNELS`]), forward then
    /// backward.
    pub fn heavy(&self) -> impl Iterator<Item = &Dispatch> {
        self.forward
            .iter()
            .chain(&self.backward)
            .filter(|d| HEAVY_KERNELS.contains(&d.kernel))
    }
}

/// Contrast rows `[begin, end)` of each forward pass (over the N batch rows and the K keys):
/// `pass_columns` rows each, or [`default_pass_columns`] (which bounds the barriers of a split).
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
    columns: Columns,
    recompute_z: bool,
) -> SupConLaunch {
    use Role::*;
    let params = kernel_params(shape, kind, options);
    let rows = shape.rows();
    let n_anchors = u64::from(params.n_anchors());
    let anchor_blocks = n_anchors.div_ceil(FORWARD_ANCHORS);
    let row_blocks = rows.div_ceil(BACKWARD_ROWS);
    let chunks = u64::from(shape.dim).div_ceil(BACKWARD_COLUMNS);
    let forward_ranges = forward_passes(shape, columns.pass);
    let (back_ranges, weights_bytes) =
        backward_passes(strategy, shape, &forward_ranges, columns.pass);
    let forward_passes: Vec<Pass> = forward_ranges
        .iter()
        .map(|&range| split_pass(strategy, range, anchor_blocks, columns.split))
        .collect();
    // The Direct backward's two kernels take their pass whole.
    let back_passes: Vec<Pass> = back_ranges
        .iter()
        .map(|&range| match strategy {
            Strategy::Tiles => split_pass(strategy, range, row_blocks * chunks, columns.split),
            Strategy::Direct => Pass {
                begin: range.0,
                end: range.1,
                splits: 1,
                split_columns: range.1 - range.0,
            },
        })
        .collect();
    let most_splits = |passes: &[Pass]| passes.iter().map(|p| p.splits).max().unwrap_or(1);
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
    for (i, pass) in forward_passes.iter().enumerate() {
        forward.extend([
            Dispatch {
                kernel: forward_kernel,
                groups: anchor_blocks * u64::from(pass.splits),
                bindings: vec![Params(i), Z, Positives, Partials],
            },
            Dispatch {
                kernel: &SUPCON_MERGE,
                groups: n_anchors.div_ceil(PREPARE_ROWS),
                bindings: vec![Params(i), Partials, Running, AnchorStats],
            },
        ]);
    }
    forward.push(Dispatch {
        kernel: &SUPCON_REDUCE,
        groups: 1,
        bindings: vec![Params(0), InvNorm, AnchorStats, Output],
    });

    let mut backward = Vec::new();
    if recompute_z {
        backward.push(prepare(Discard));
    }
    for (pass, p) in (first_back..).zip(&back_passes) {
        // The heavy kernel (the splits' raw sums, or the pass's weights), then the one that
        // turns its output into the gradient.
        let (kernel, groups) = match strategy {
            Strategy::Tiles => (&SUPCON_BACKWARD, row_blocks * chunks * u64::from(p.splits)),
            Strategy::Direct => (&SUPCON_BACKWARD_WEIGHTS, row_blocks),
        };
        backward.push(Dispatch {
            kernel,
            groups,
            bindings: vec![
                Params(pass),
                Z,
                Positives,
                AnchorStats,
                Output,
                Scratch,
                RowDot,
            ],
        });
        backward.push(match strategy {
            Strategy::Tiles => Dispatch {
                kernel: &SUPCON_BACKWARD_MERGE,
                groups: (rows * u64::from(z_stride(shape.dim))).div_ceil(PREPARE_ROWS),
                bindings: vec![Params(pass), Z, InvNorm, Output, Scratch, RowDot, Grad],
            },
            Strategy::Direct => Dispatch {
                kernel: &SUPCON_BACKWARD_APPLY,
                groups: row_blocks * chunks,
                bindings: vec![Params(pass), Z, InvNorm, Output, Scratch, Grad, RowDot],
            },
        });
    }
    let back_splits = most_splits(&back_passes);
    SupConLaunch {
        partials_len: partials_len(n_anchors, most_splits(&forward_passes)),
        running_len: running_len(n_anchors, first_back),
        row_dot_len: row_dot_len(strategy, rows, back_splits),
        scratch_bytes: match strategy {
            Strategy::Tiles => partial_grad_bytes(shape, back_splits),
            Strategy::Direct => weights_bytes,
        },
        passes: forward_passes.into_iter().chain(back_passes).collect(),
        forward_passes: first_back,
        forward,
        backward,
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
            let cuts = [None, Some(64)]
                .into_iter()
                .flat_map(|pass| [None, Some(128)].map(|split| Columns { pass, split }));
            for columns in cuts {
                for recompute_z in [false, true] {
                    let plan = supcon_launch(
                        shape,
                        PositiveKind::Labels,
                        &SupConOptions::default(),
                        strategy,
                        columns,
                        recompute_z,
                    );
                    // Both column loops cover the batch's rows and the keys, in order, and each
                    // pass's splits cover the pass in whole column tiles.
                    for passes in [plan.forward_passes(), plan.backward_passes()] {
                        assert_eq!(passes.first().map(|p| p.begin), Some(0));
                        assert_eq!(passes.last().map(|p| p.end), Some(600 + shape.keys));
                        assert!(passes.windows(2).all(|w| w[0].end == w[1].begin));
                        for p in passes {
                            assert!(p.splits >= 1);
                            assert_eq!(p.begin % TILE_COLUMNS, 0);
                            assert!(p.splits == 1 || p.split_columns % TILE_COLUMNS == 0);
                            assert!((p.splits - 1) * p.split_columns < p.end - p.begin);
                            assert!(p.splits * p.split_columns >= p.end - p.begin);
                        }
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

    fn plan_of(n: u32, dim: u32, strategy: Strategy) -> SupConLaunch {
        supcon_launch(
            SupConShape::new(n / 2, 2, dim),
            PositiveKind::Labels,
            &SupConOptions::default(),
            strategy,
            Columns::default(),
            false,
        )
    }

    /// The occupancy a GPU needs (issue 27): from N = 4,096 up, every dispatch whose work grows
    /// as N² launches at least ~1,024 workgroups, and the extra memory stays O(splits · rows).
    #[test]
    fn heavy_dispatches_fill_a_gpu_from_4096_rows() {
        for (n, dim) in [(4_096u32, 128u32), (16_384, 128), (4_096, 64), (8_192, 256)] {
            let plan = plan_of(n, dim, Strategy::Tiles);
            let heavy: Vec<_> = plan.heavy().collect();
            // One forward and one backward dispatch per pass (N = 16,384 takes two passes at
            // D = 128: lavapipe's barrier bound).
            assert_eq!(heavy.len(), 2 * plan.forward_passes().len(), "N = {n}");
            for d in heavy {
                assert!(
                    d.groups >= TARGET_WORKGROUPS,
                    "N = {n}, D = {dim}: {} launches {} workgroups",
                    d.kernel.name,
                    d.groups
                );
            }
            let splits = |passes: &[Pass]| passes.iter().map(|p| p.splits).max().unwrap();
            let (fs, bs) = (
                splits(plan.forward_passes()),
                splits(plan.backward_passes()),
            );
            assert!(fs > 1 && bs > 1, "N = {n}: {fs}, {bs} splits");
            let rows = u64::from(n);
            assert_eq!(plan.partials_len, 8 * rows * u64::from(fs));
            assert_eq!(plan.row_dot_len, (u64::from(bs) + 1) * rows);
            assert_eq!(
                plan.scratch_bytes,
                u64::from(bs) * rows * u64::from(dim.div_ceil(4)) * 16
            );
            // The split rule keeps splits · rows near TARGET_WORKGROUPS · 64 / chunks: the
            // backward's raw sums stay within 32 MiB whatever N.
            assert!(plan.scratch_bytes <= 32 << 20, "{}", plan.scratch_bytes);
        }
    }

    /// Where N alone fills the device there is one split, and a CPU adapter always takes one
    /// (its cores are busy with N/64 workgroups; splits would only add merges).
    #[test]
    fn one_split_where_rows_suffice_and_on_cpu_adapters() {
        let plan = plan_of(65_536, 128, Strategy::Tiles);
        assert!(
            plan.passes.iter().all(|p| p.splits == 1),
            "{:?}",
            plan.passes
        );
        for n in [1_024, 4_096, 16_384] {
            let plan = plan_of(n, 128, Strategy::Direct);
            assert!(
                plan.passes.iter().all(|p| p.splits == 1),
                "{:?}",
                plan.passes
            );
        }
        // Small problems: splits of at least MIN_SPLIT_COLUMNS rows.
        let plan = plan_of(1_024, 128, Strategy::Tiles);
        for p in &plan.passes {
            assert_eq!((p.splits, p.split_columns), (8, MIN_SPLIT_COLUMNS));
        }
    }
}
