// 2x2 max-pooling with stride 2, flooring odd sizes (PyTorch's MaxPool2d(2)).
// Input: a channel view (`in_ctot` channels, slice at `in_coff`); output: contiguous NCHW.
// One invocation per output value; z indexes the (image, channel) plane.

struct PoolParams {
    c: u32,
    h: u32,
    w: u32,
    in_ctot: u32,
    in_coff: u32,
    oh: u32,
    ow: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256, 1, 1)
fn maxpool2x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.oh * p.ow) {
        return;
    }
    let n = gid.z / p.c;
    let c = gid.z % p.c;
    let oy = i / p.ow;
    let ox = i % p.ow;
    let b = ((n * p.in_ctot + p.in_coff + c) * p.h + 2u * oy) * p.w + 2u * ox;
    let m = max(max(x[b], x[b + 1u]), max(x[b + p.w], x[b + p.w + 1u]));
    y[gid.z * p.oh * p.ow + i] = m;
}
