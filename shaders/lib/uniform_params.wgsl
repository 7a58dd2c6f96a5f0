// The parameter block as a workgroup-uniform value, for kernels whose loops hold barriers:
// invocation 0 copies `params` into workgroup memory and every invocation loads it from there.
// Needs `Params` and the `params` binding (lib/supcon_host.wgsl or lib/similarity.wgsl).

var<workgroup> wp: Params;

// Call first thing in main (uniform control flow) with local_invocation_index.
fn uniform_params(lid: u32) -> Params {
    if (lid == 0u) {
        wp = params;
    }
    return workgroupUniformLoad(&wp);
}
