//! Every WGSL source in `shaders/`, in both precisions, parses, validates and translates to SPIR-V
//! (Vulkan), HLSL (DX12), MSL (Metal) and GLSL (GL): the compile check for backends this Linux box
//! cannot run. GLSL is checked for f32 programs without float atomics: the GL backend has neither
//! f16 nor f32 atomics, and the engine picks the source by the adapter's features.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use psi_gpu::gpu::Precision;
use psi_gpu::ops::shaders;

fn check(name: &str, precision: Precision, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name} ({precision}): {}", e.emit_to_string(source)));
    let mut caps = match precision {
        Precision::F32 => Capabilities::empty(),
        Precision::F16 => Capabilities::SHADER_FLOAT16,
    };
    // Native f32 atomics are only compiled where the adapter has SHADER_FLOAT32_ATOMIC.
    let float_atomics = source.contains("atomic<f32>");
    if float_atomics {
        caps |= Capabilities::SHADER_FLOAT32_ATOMIC;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name} ({precision}) validation: {}", e.emit_to_string(source)));

    spv::write_vec(&module, &info, &spv::Options::default(), None)
        .unwrap_or_else(|e| panic!("{name} ({precision}) SPIR-V: {e}"));

    let hlsl_opts = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
    let hlsl_pipe = hlsl::PipelineOptions { entry_point: None };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_opts, &hlsl_pipe)
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name} ({precision}) HLSL: {e}"));

    let msl_opts = msl::Options { lang_version: (2, 4), ..Default::default() };
    msl::write_string(&module, &info, &msl_opts, &msl::PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name} ({precision}) MSL: {e}"));

    // GL gets neither f16 nor f32 atomics (the engine uses the f32 / compare-and-swap versions).
    if precision == Precision::F32 && !float_atomics {
        for ep in &module.entry_points {
            let opts = glsl::Options { version: glsl::Version::new_gles(310), ..Default::default() };
            let pipe = glsl::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: ep.name.clone(),
                multiview: None,
            };
            let mut out = String::new();
            glsl::Writer::new(&mut out, &module, &info, &opts, &pipe, Default::default())
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{name}::{} GLSL: {e}", ep.name));
        }
    }
}

#[test]
fn every_shader_translates_to_every_backend() {
    let mut checked = 0;
    for shader in shaders() {
        for precision in [Precision::F32, Precision::F16] {
            check(shader.name, precision, &shader.source(precision));
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * shaders().len());
}

/// Every `.wgsl` file under `shaders/` (the shared pieces in `shaders/lib/` included).
fn wgsl_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(wgsl_files(&path));
        } else if path.extension().is_some_and(|e| e == "wgsl") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_shader_file_is_compiled() {
    let files = wgsl_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders"));
    assert!(files.iter().any(|f| f.parent().is_some_and(|d| d.ends_with("lib"))), "shaders/lib is searched");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            shaders().iter().any(|s| s.body.contains(text.as_str())),
            "{} is not part of any program in ops::shaders()",
            path.display()
        );
    }
}
