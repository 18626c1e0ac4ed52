//! Element types of frames on disk and as uploaded raw to the GPU.

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
