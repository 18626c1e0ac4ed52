// Element-wise conversions between host data types and the storage type T:
//   from_raw decodes raw little-endian data of the host type `kind` (lib/decode.wgsl), multiplies
//   it by `scale` and stores T; to_f32 widens T back to f32 (times `scale`) for readback.

struct ConvertParams {
    count: u32,
    scale: f32,
    kind: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ConvertParams;
@group(0) @binding(3) var<storage, read> src_t: array<T>;
@group(0) @binding(4) var<storage, read_write> dst_t: array<T>;
@group(0) @binding(5) var<storage, read_write> dst_f32: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn from_raw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.count) {
        dst_t[i] = T(raw_value(p.kind, i) * p.scale);
    }
}

@compute @workgroup_size(256, 1, 1)
fn to_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.count) {
        dst_f32[i] = f32(src_t[i]) * p.scale;
    }
}
