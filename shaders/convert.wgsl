// Element-wise conversions between host data types and the storage type T:
//   from_u8 / from_u16 / from_f16 / from_f32 decode raw little-endian data (lib/decode.wgsl),
//   multiply by `scale` and store T; to_f32 widens T back to f32 for readback.

struct ConvertParams {
    count: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ConvertParams;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(3) var<storage, read> src_t: array<T>;
@group(0) @binding(4) var<storage, read_write> dst_t: array<T>;
@group(0) @binding(5) var<storage, read_write> dst_f32: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn from_u8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.count) {
        dst_t[i] = T(raw_u8(i) * p.scale);
    }
}

@compute @workgroup_size(256, 1, 1)
fn from_u16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.count) {
        dst_t[i] = T(raw_u16(i) * p.scale);
    }
}

@compute @workgroup_size(256, 1, 1)
fn from_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.count) {
        dst_t[i] = T(raw_f16(i) * p.scale);
    }
}

@compute @workgroup_size(256, 1, 1)
fn from_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.count) {
        dst_t[i] = T(raw_f32(i) * p.scale);
    }
}

@compute @workgroup_size(256, 1, 1)
fn to_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.count) {
        dst_f32[i] = f32(src_t[i]) * p.scale;
    }
}
