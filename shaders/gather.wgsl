// Gather a batch of tiles from a block of frame rows, converting the raw data of the host type
// `kind` (lib/decode.wgsl) to T and scaling:
//   dst[k, c, y, x] = raw[c, y, tiles[k].z + x] * scale      for k < count
// The block holds `th` rows of `bw` columns of every channel (c-major); tile k starts at column
// tiles[k].z of the block. Tile descriptors: vec4(y0, x0, block column, neighbour flags).
// One invocation per output pixel; z indexes the (tile, channel) plane.

struct GatherParams {
    c: u32,
    th: u32,
    tw: u32,
    bw: u32,
    count: u32,
    scale: f32,
    kind: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(2) var<storage, read> tiles: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(256, 1, 1)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let k = gid.z / p.c;
    if (i >= p.th * p.tw || k >= p.count) {
        return;
    }
    let c = gid.z % p.c;
    let src = (c * p.th + i / p.tw) * p.bw + tiles[k].z + i % p.tw;
    dst[gid.z * p.th * p.tw + i] = T(raw_value(p.kind, src) * p.scale);
}
