//! Every shader parses and validates with naga and translates to SPIR-V, MSL and HLSL. No GPU.

use supcon_wgpu::kernels::{WORKGROUP_MEMORY_BYTES, shaders};

fn parse(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));
    (module, info)
}

const _: () = assert!(WORKGROUP_MEMORY_BYTES <= 16384, "WebGPU default limit");

#[test]
fn every_shader_validates_and_translates() {
    assert_eq!(shaders::ALL.len(), 9);
    for (name, source) in shaders::ALL {
        let (module, info) = parse(name, source);

        // One compute entry point, `main` (the name Burn's raw-kernel path launches).
        assert_eq!(module.entry_points.len(), 1, "{name}: entry points");
        let ep = &module.entry_points[0];
        assert_eq!(ep.name, "main", "{name}");
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "{name}");
        let wg = ep.workgroup_size;
        assert!(
            wg.iter().product::<u32>() <= 256,
            "{name}: workgroup {wg:?} over 256 invocations"
        );

        // Every storage binding read_write (Burn pools tensors in shared buffers).
        let mut workgroup_bytes = 0u32;
        for (_, var) in module.global_variables.iter() {
            match var.space {
                naga::AddressSpace::Storage { access } => assert!(
                    access.contains(naga::StorageAccess::STORE),
                    "{name}: binding {:?} is not read_write",
                    var.name
                ),
                naga::AddressSpace::WorkGroup => {
                    workgroup_bytes += module.types[var.ty].inner.size(module.to_ctx())
                }
                naga::AddressSpace::Uniform | naga::AddressSpace::Handle => {
                    panic!("{name}: only storage buffers are allowed ({:?})", var.name)
                }
                _ => {}
            }
        }
        assert!(
            workgroup_bytes <= WORKGROUP_MEMORY_BYTES,
            "{name}: {workgroup_bytes} bytes of workgroup memory, over {WORKGROUP_MEMORY_BYTES}"
        );

        let spv =
            naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
                .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));
        assert!(
            spv.len() > 5 && spv[0] == 0x0723_0203,
            "{name}: SPIR-V magic"
        );

        let msl_options = naga::back::msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        let (msl, _) = naga::back::msl::write_string(
            &module,
            &info,
            &msl_options,
            &naga::back::msl::PipelineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));
        assert!(msl.contains("kernel void"), "{name}: MSL has no kernel");

        let hlsl_options = naga::back::hlsl::Options {
            shader_model: naga::back::hlsl::ShaderModel::V5_1,
            ..Default::default()
        };
        let mut hlsl = String::new();
        naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &Default::default())
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{name}: HLSL: {e}"));
        assert!(
            hlsl.contains("[numthreads("),
            "{name}: HLSL has no compute entry"
        );
    }
}

#[test]
fn a_broken_shader_is_rejected() {
    // The check above can fail: an undeclared identifier must not validate.
    let broken = shaders::SUPCON_FORWARD.replace("params.inv_temperature", "params.no_such_field");
    assert!(naga::front::wgsl::parse_str(&broken).is_err());
}
