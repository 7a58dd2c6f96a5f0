//! Pairwise cosine similarity, `shaders/cosine_similarity.wgsl` (GPUs) and
//! `shaders/cosine_similarity_direct.wgsl` (CPU adapters), and its CPU reference.

use super::plan::{Dispatch, Role, SIMILARITY_KERNELS, similarity_launch};
use super::supcon::Strategy;
use super::{Kernel, check_buffer, check_device, with_error_scope};
use crate::error::to_u32;
use crate::{Error, Result};
use wgpu::util::DeviceExt;

/// The parameter block of both kernels (binding 0; its WGSL declaration is in
/// `shaders/lib/similarity.wgsl`, and a unit test checks that the layouts agree).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    m: u32,
    dim: u32,
    pad: u32,
}

/// Checks an `[n, dim] × [m, dim]` similarity problem before anything is allocated or launched:
/// sizes of at least 1, 32-bit indexing, every binding within `max_binding` bytes, and the
/// workgroups within the grid limit. Returns the dispatch of `strategy`'s kernel. Both launch
/// paths (raw wgpu and Burn) check with it.
pub(crate) fn check_problem(
    strategy: Strategy,
    n: u32,
    m: u32,
    dim: u32,
    max_binding: u64,
    max_groups_per_dim: u32,
) -> Result<Dispatch> {
    if n == 0 || m == 0 || dim == 0 {
        return Err(Error::InvalidShape(format!(
            "cosine similarity needs n, m, dim >= 1, got n = {n}, m = {m}, dim = {dim}"
        )));
    }
    let (n64, m64, d64) = (u64::from(n), u64::from(m), u64::from(dim));
    for (what, elems) in [("a", n64 * d64), ("b", m64 * d64), ("out", n64 * m64)] {
        if elems >= 1 << 32 {
            return Err(Error::InvalidShape(format!(
                "`{what}` has {elems} elements, more than 32-bit indexing allows"
            )));
        }
        super::check_binding_limit(what, elems * 4, max_binding)?;
    }
    let dispatch = similarity_launch(strategy, n, m);
    super::grid(dispatch.kernel.name, dispatch.groups, max_groups_per_dim)?;
    Ok(dispatch)
}

/// The cosine-similarity kernel on a caller's device: `S[i][j] = â_i · b̂_j` for row-major
/// `A [n, dim]`, `B [m, dim]`, rows L2-normalised with an epsilon of 1e-12 (as torch's
/// `F.normalize`). `A` and `B` may be the same buffer. Created once; the pipelines are cached.
///
/// Two kernels give the same result up to float rounding, chosen like the loss's
/// ([`Strategy::for_adapter`]): [`Strategy::Tiles`] stages the rows in workgroup memory (GPUs),
/// [`Strategy::Direct`] reads them straight into 8×8 register blocks with no barrier (CPU
/// adapters; about 1.6× faster on lavapipe at n = m = 2,048, d = 128).
///
/// ```no_run
/// use supcon_wgpu::CosineSimilarity;
/// use supcon_wgpu::device::{Limits, request_device};
///
/// # fn main() -> supcon_wgpu::Result<()> {
/// let gpu = request_device(Limits::WebGpuDefault)?;
/// let cosine = CosineSimilarity::new(&gpu.device)?;
/// // a: [2, 3], b: [3, 3], row-major.
/// let a = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0];
/// let b = [3.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
/// let s = cosine.compute(&gpu.device, &gpu.queue, &a, &b, 3)?; // [2, 3]
/// assert!((s[0] - 1.0).abs() < 1e-6); // a_0 and b_0 point the same way
/// assert!(s[1].abs() < 1e-6); // a_0 and b_1 are orthogonal
/// assert!((s[5] - 0.5f32.sqrt()).abs() < 1e-6); // 45° between a_1 and b_2
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CosineSimilarity {
    /// The pipelines of [`SIMILARITY_KERNELS`], in its order.
    kernels: Vec<Kernel>,
    strategy: Strategy,
}

impl CosineSimilarity {
    /// Builds both pipelines and their bind-group layouts on `device`.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        check_device(device)?;
        with_error_scope(device, || {
            Ok(CosineSimilarity {
                kernels: SIMILARITY_KERNELS
                    .iter()
                    .map(|spec| Kernel::new(device, spec))
                    .collect(),
                strategy: Strategy::for_adapter(&device.adapter_info()),
            })
        })
    }

    /// Uses `strategy` instead of [`Strategy::for_adapter`] (for tests and measurements).
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The kernel in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Records `out[n, m] = cos(a[n, dim], b[m, dim])` into `encoder`. `a`, `b` and `out` need
    /// `STORAGE` usage and at least `n·dim`, `m·dim`, `n·m` f32s. Nothing is read back.
    ///
    /// # Shapes
    /// - `a`: `[n, dim]`, `b`: `[m, dim]`, `out`: `[n, m]`, all row-major f32.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
        n: u32,
        m: u32,
        dim: u32,
    ) -> Result<()> {
        let limits = device.limits();
        let dispatch = check_problem(
            self.strategy,
            n,
            m,
            dim,
            limits.max_storage_buffer_binding_size,
            limits.max_compute_workgroups_per_dimension,
        )?;
        let (n64, m64, d64) = (u64::from(n), u64::from(m), u64::from(dim));
        let storage = wgpu::BufferUsages::STORAGE;
        let a = check_buffer(device, "a", a, n64 * d64 * 4, storage)?;
        let b = check_buffer(device, "b", b, m64 * d64 * 4, storage)?;
        let out = check_buffer(device, "out", out, n64 * m64 * 4, storage)?;
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("cosine_similarity params"),
            contents: bytemuck::bytes_of(&Params { n, m, dim, pad: 0 }),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let buffers: Vec<wgpu::BufferBinding<'_>> = dispatch
            .bindings
            .iter()
            .map(|role| match role {
                Role::Params(_) => params.as_entire_buffer_binding(),
                Role::A => a.clone(),
                Role::B => b.clone(),
                Role::Similarity => out.clone(),
                other => unreachable!("{other:?} in a similarity dispatch"),
            })
            .collect();
        Kernel::find(&self.kernels, dispatch.kernel).dispatch(
            device,
            encoder,
            dispatch.groups,
            &buffers,
        )
    }

    /// Convenience: uploads `a` and `b`, computes, and reads the `[n, m]` result back. Blocks
    /// until the GPU is done; [`compute_async`](Self::compute_async) is its twin for async code
    /// and the browser.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn compute(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        a: &[f32],
        b: &[f32],
        dim: usize,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.compute_async(device, queue, a, b, dim))
    }

    /// [`compute`](Self::compute) as a future, for every target: in a browser (wasm32 + WebGPU)
    /// it awaits the read-back through the event loop; on native targets it blocks in
    /// `device.poll` while the GPU works.
    pub async fn compute_async(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        a: &[f32],
        b: &[f32],
        dim: usize,
    ) -> Result<Vec<f32>> {
        if dim == 0 {
            return Err(Error::InvalidShape("dim must be >= 1".into()));
        }
        for (name, x) in [("a", a), ("b", b)] {
            if x.is_empty() || x.len() % dim != 0 {
                return Err(Error::InvalidShape(format!(
                    "`{name}` has {} elements, not a positive multiple of dim = {dim}",
                    x.len()
                )));
            }
        }
        let (n, m) = (a.len() / dim, b.len() / dim);
        let (n32, m32, d32) = (to_u32(n, "n")?, to_u32(m, "m")?, to_u32(dim, "dim")?);
        let out_bytes = (n as u64) * (m as u64) * 4;
        super::check_binding_size(device, "out", out_bytes)?;
        super::with_error_scope_async(device, async {
            let a_buf = super::upload(device, "a", a);
            let b_buf = super::upload(device, "b", b);
            let out = super::storage_buffer(
                device,
                "similarity",
                out_bytes,
                wgpu::BufferUsages::COPY_SRC,
            );
            let mut encoder = device.create_command_encoder(&Default::default());
            self.encode(device, &mut encoder, &a_buf, &b_buf, &out, n32, m32, d32)?;
            queue.submit([encoder.finish()]);
            super::read_buffer_async(device, queue, &out, out_bytes).await
        })
        .await
    }
}

/// f64 CPU reference of the kernel: `S[i][j] = a_i · b_j / (max(|a_i|, 1e-12) max(|b_j|, 1e-12))`.
pub mod reference {
    /// `[n, m]` cosine similarities of row-major `a [n, dim]` and `b [m, dim]`.
    pub fn cosine_similarity(a: &[f64], b: &[f64], dim: usize) -> Vec<f64> {
        let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        let mut out = Vec::with_capacity(a.len() / dim * (b.len() / dim));
        for ra in a.chunks(dim) {
            let na = norm(ra);
            for rb in b.chunks(dim) {
                let dot: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
                out.push(dot / (na * norm(rb)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Params;
    use crate::kernels::plan::SIMILARITY_TILE;
    use crate::kernels::wgsl_mirror::{constants, module, rust_layout, struct_layout};

    const WGSL: &str = include_str!("../../shaders/lib/similarity.wgsl");

    #[test]
    fn the_wgsl_block_and_tile_match_the_rust_ones() {
        let wgsl = module("lib/similarity.wgsl", WGSL);
        let params = rust_layout!(Params { n, m, dim, pad });
        assert_eq!(struct_layout(&wgsl, "Params"), params);
        let rust = [(
            "TILE".to_string(),
            naga::Literal::U32(SIMILARITY_TILE as u32),
        )]
        .into();
        assert_eq!(constants(&wgsl), rust);
    }
}
