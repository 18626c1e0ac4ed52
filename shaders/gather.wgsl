// Gather a batch of tiles from a block of frame rows, converting the raw dtype to T and scaling:
//   dst[k, c, y, x] = raw[c, y, tiles[k].z + x] * scale      for k < count
// The block holds `th` rows of `bw` columns of every channel (c-major); tile k starts at column
// tiles[k].z of the block. Tile descriptors: vec4(y0, x0, block column, neighbour flags).

struct GatherParams {
    c: u32,
    th: u32,
    tw: u32,
    bw: u32,
    count: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read> tiles: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<T>;

// Source element of output pixel i of plane z (= k * c + channel), or none past the batch.
fn source(i: u32, z: u32) -> u32 {
    let k = z / p.c;
    let c = z % p.c;
    return (c * p.th + i / p.tw) * p.bw + tiles[k].z + i % p.tw;
}

fn valid(i: u32, z: u32) -> bool {
    return i < p.th * p.tw && z / p.c < p.count;
}

fn out(i: u32, z: u32, v: f32) {
    dst[z * p.th * p.tw + i] = T(v * p.scale);
}

@compute @workgroup_size(256, 1, 1)
fn gather_u8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (valid(i, gid.z)) {
        out(i, gid.z, raw_u8(source(i, gid.z)));
    }
}

@compute @workgroup_size(256, 1, 1)
fn gather_u16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (valid(i, gid.z)) {
        out(i, gid.z, raw_u16(source(i, gid.z)));
    }
}

@compute @workgroup_size(256, 1, 1)
fn gather_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (valid(i, gid.z)) {
        out(i, gid.z, raw_f16(source(i, gid.z)));
    }
}

@compute @workgroup_size(256, 1, 1)
fn gather_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (valid(i, gid.z)) {
        out(i, gid.z, raw_f32(source(i, gid.z)));
    }
}
