//! Every shader parses and validates with naga and translates to SPIR-V, MSL and HLSL; each is
//! its file joined after the library files of `shaders/lib/` its first comment names, and each
//! library file validates after what it needs. No GPU. (The layouts and constants the host
//! mirrors are checked against the Rust side by unit tests in `src/kernels/`, where the Rust
//! parameter structs are visible.)

use std::collections::BTreeSet;
use std::path::Path;
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

/// A file under `shaders/`, as on disk.
fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shaders")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The library files a kernel file says it is joined after: every `lib/*.wgsl` in its first
/// comment paragraph, in order.
fn joined_after(kernel_file: &str) -> Vec<String> {
    kernel_file
        .lines()
        .take_while(|line| line.starts_with("//") && line.trim_end() != "//")
        .flat_map(str::split_whitespace)
        .map(|word| word.trim_end_matches([',', '.']))
        .filter(|word| word.starts_with("lib/") && word.ends_with(".wgsl"))
        .map(str::to_owned)
        .collect()
}

/// Every file of `shaders/lib/`, as `lib/<name>`.
fn library_files() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/lib");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| format!("lib/{}", entry.unwrap().file_name().to_string_lossy()))
        .collect()
}

#[test]
fn every_shader_is_its_library_files_then_its_own() {
    let mut joined_somewhere = BTreeSet::new();
    for (name, source) in shaders::ALL {
        let own = read(name);
        let libraries = joined_after(&own);
        let mut expected = String::new();
        for library in &libraries {
            let text = read(library);
            assert!(
                text.ends_with('\n'),
                "{library} must end with a newline: the next file starts a line"
            );
            expected += &text;
            joined_somewhere.insert(library.clone());
        }
        expected += &own;
        assert!(
            *source == expected,
            "{name}: the embedded source is not {libraries:?} then {name} (src/kernels/mod.rs and \
             the file's first comment disagree)"
        );
    }
    assert_eq!(
        joined_somewhere,
        library_files(),
        "every library file is joined into some shader"
    );
}

#[test]
fn every_library_file_validates_after_what_it_needs() {
    // On its own, or after the library files joined before it into the first shader that joins
    // it (where a library reads a binding, that is where the binding is declared).
    for library in library_files() {
        let (shader, needs) = shaders::ALL
            .iter()
            .find_map(|(name, _)| {
                let libraries = joined_after(&read(name));
                let at = libraries.iter().position(|l| *l == library)?;
                Some((name, libraries[..at].to_vec()))
            })
            .unwrap_or_else(|| panic!("{library} is joined into no shader"));
        let source: String = needs.iter().chain([&library]).map(|l| read(l)).collect();
        parse(
            &format!("{library} after {needs:?} (as in {shader})"),
            &source,
        );
    }
}

#[test]
fn every_shader_validates_and_translates() {
    // Every kernel file of shaders/ is embedded, once.
    let files: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".wgsl"))
            .collect();
    let embedded: BTreeSet<String> = shaders::ALL.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!((embedded.len(), &embedded), (shaders::ALL.len(), &files));
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
