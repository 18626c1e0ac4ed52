//! WGSL sources with a precision prelude, and the (shader, entry point) pairs the ops launch.
//!
//! Every shader in `shaders/` is written once against the storage aliases `T` (scalar) and `T4`
//! (vec4). The prelude makes them `f16` (with `enable f16;`) or `f32`; arithmetic is done in f32.

use std::fmt;

/// Storage precision of activations and weights. Accumulation is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Option<Precision>> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(None),
            "f32" | "fp32" => Some(Some(Precision::F32)),
            "f16" | "fp16" => Some(Some(Precision::F16)),
            _ => None,
        }
    }

    /// Bytes per stored element.
    pub fn size(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Precision::F32 => "alias T = f32;\nalias T4 = vec4<f32>;\n",
            Precision::F16 => "enable f16;\nalias T = f16;\nalias T4 = vec4<f16>;\n",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

/// One `.wgsl` file of `shaders/`.
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    pub body: &'static str,
}

impl Shader {
    /// Its entry point `entry`.
    pub const fn kernel(&'static self, entry: &'static str) -> Kernel {
        Kernel { shader: self, entry }
    }

    /// The full WGSL source for `precision`.
    pub fn source(&self, precision: Precision) -> String {
        format!("{}{}", precision.prelude(), self.body)
    }
}

/// An entry point of a shader.
#[derive(Debug)]
pub struct Kernel {
    pub shader: &'static Shader,
    pub entry: &'static str,
}
