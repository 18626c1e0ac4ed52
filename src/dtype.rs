//! Element types of frames on disk and as uploaded raw to the GPU: [`HostType`] names one,
//! [`HostElement`] is the Rust type of each (what arrays in memory hold).

use half::f16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostType {
    U8,
    U16,
    F16,
    F32,
}

impl HostType {
    pub fn size(self) -> usize {
        match self {
            HostType::U8 => 1,
            HostType::U16 | HostType::F16 => 2,
            HostType::F32 => 4,
        }
    }

    /// The factor a frame of this type is multiplied by before the model unless told otherwise:
    /// integers are mapped to [0, 1], floats are used as they are.
    pub fn default_scale(self) -> f32 {
        match self {
            HostType::U8 => 1.0 / 255.0,
            HostType::U16 => 1.0 / 65535.0,
            HostType::F16 | HostType::F32 => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostType::U8 => "u8",
            HostType::U16 => "u16",
            HostType::F16 => "f16",
            HostType::F32 => "f32",
        }
    }
}

/// An element type a frame can hold on the host.
pub trait HostElement: Copy + Send + Sync + bytemuck::Pod {
    const TYPE: HostType;
    /// Append the value's little-endian bytes.
    fn push_le(self, out: &mut Vec<u8>);

    /// Append the little-endian bytes of `values`.
    fn extend_le(values: &[Self], out: &mut Vec<u8>) {
        if cfg!(target_endian = "little") {
            out.extend_from_slice(bytemuck::cast_slice(values));
        } else {
            for &v in values {
                v.push_le(out);
            }
        }
    }
}

impl HostElement for u8 {
    const TYPE: HostType = HostType::U8;
    fn push_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl HostElement for u16 {
    const TYPE: HostType = HostType::U16;
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl HostElement for f16 {
    const TYPE: HostType = HostType::F16;
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl HostElement for f32 {
    const TYPE: HostType = HostType::F32;
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
