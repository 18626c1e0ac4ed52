//! Drift guard: every program's `#[repr(C)]` parameter struct ([`programs`]) has exactly the
//! size naga's layouter gives its WGSL twin, the struct every entry point of the program binds as
//! `var<uniform>` at @group(0) @binding(0) (what `Dispatch::new` writes the parameters to). A
//! field added on one side only changes one of the two sizes.

use naga::valid::{Capabilities, ValidationFlags, Validator};

use super::*;
use crate::gpu::{Precision, Shader};

/// The name and naga-reflected size of the struct bound as `var<uniform>` at @group(0)
/// @binding(0) of `shader` in `precision`, checking that every entry point uses it.
fn reflected(shader: &Shader, precision: Precision) -> (String, usize) {
    let what = format!("{} ({precision})", shader.name);
    let module = naga::front::wgsl::parse_str(&shader.source(precision)).unwrap_or_else(|e| panic!("{what}: {e}"));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let binding0 = Some(naga::ResourceBinding { group: 0, binding: 0 });
    let (handle, var) = module
        .global_variables
        .iter()
        .find(|(_, v)| v.space == naga::AddressSpace::Uniform && v.binding == binding0)
        .unwrap_or_else(|| panic!("{what}: no var<uniform> at @group(0) @binding(0)"));
    for (i, ep) in module.entry_points.iter().enumerate() {
        assert!(!info.get_entry_point(i)[handle].is_empty(), "{what}: entry point {} ignores its parameters", ep.name);
    }
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let name = module.types[var.ty].name.clone().unwrap_or_default();
    (name, layouter[var.ty].size as usize)
}

#[test]
fn parameter_structs_match_their_wgsl_twins() {
    for Program { shader, params, params_size: rust } in programs() {
        for precision in [Precision::F32, Precision::F16] {
            let (wgsl_name, wgsl) = reflected(shader, precision);
            assert_eq!(wgsl_name, params, "{}: the uniform at binding 0", shader.name);
            assert_eq!(wgsl, rust, "{}: {params} is {wgsl} bytes in WGSL ({precision}), {rust} in Rust", shader.name);
        }
    }
}
