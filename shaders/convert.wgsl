// Element-wise conversions between host data types and the storage type T:
//   from_u8 / from_u16 / from_f16 read raw little-endian words (packed in u32) and from_f32 reads
//   f32, each multiplying by `scale` and storing T; to_f32 widens T back to f32 for readback.
// f16 input is decoded from its bits, so it needs neither SHADER_F16 nor unpack2x16float (which
// naga gates behind a capability some backends lack).

struct ConvertParams {
    count: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ConvertParams;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read> src_f32: array<f32>;
@group(0) @binding(3) var<storage, read> src_t: array<T>;
@group(0) @binding(4) var<storage, read_write> dst_t: array<T>;
@group(0) @binding(5) var<storage, read_write> dst_f32: array<f32>;

// IEEE binary16 bits (low 16 bits of `b`) to f32, subnormals, infinities and NaN included.
fn half_bits_to_f32(b: u32) -> f32 {
    let e = (b >> 10u) & 0x1fu;
    let m = b & 0x3ffu;
    var v: f32;
    if (e == 0u) {
        v = f32(m) * exp2(-24.0);
    } else if (e == 31u) {
        v = bitcast<f32>(0x7f800000u | (m << 13u));
    } else {
        v = bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
    }
    return select(v, -v, (b & 0x8000u) != 0u);
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn from_u8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.count) {
        return;
    }
    let v = (raw[i / 4u] >> (8u * (i % 4u))) & 0xffu;
    dst_t[i] = T(f32(v) * p.scale);
}

@compute @workgroup_size(256, 1, 1)
fn from_u16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.count) {
        return;
    }
    let v = (raw[i / 2u] >> (16u * (i % 2u))) & 0xffffu;
    dst_t[i] = T(f32(v) * p.scale);
}

@compute @workgroup_size(256, 1, 1)
fn from_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.count) {
        return;
    }
    let v = half_bits_to_f32(raw[i / 2u] >> (16u * (i % 2u)));
    dst_t[i] = T(v * p.scale);
}

@compute @workgroup_size(256, 1, 1)
fn from_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.count) {
        return;
    }
    dst_t[i] = T(src_f32[i] * p.scale);
}

@compute @workgroup_size(256, 1, 1)
fn to_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.count) {
        return;
    }
    dst_f32[i] = f32(src_t[i]) * p.scale;
}
