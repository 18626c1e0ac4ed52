// 2x2 max-pooling with stride 2, flooring odd sizes (PyTorch's MaxPool2d(2)), and its backward.
// Input: a channel view (`in_ctot` channels, slice at `in_coff`); output: contiguous NCHW.
// One invocation per output value; z indexes the (image, channel) plane.
// Backward: dy and dx are channel views too (`dy_*`, `dx_*`); `accumulate` adds into dx.
// Bindings x, y, dy, dx and store_dx: lib/views.wgsl.

struct PoolParams {
    c: u32,
    h: u32,
    w: u32,
    in_ctot: u32,
    in_coff: u32,
    oh: u32,
    ow: u32,
    accumulate: u32,
    dy_ctot: u32,
    dy_coff: u32,
    dx_ctot: u32,
    dx_coff: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;

// Index in x of the top-left value of window (wy, wx) of plane z.
fn window(z: u32, wy: u32, wx: u32) -> u32 {
    return (view_plane(z, p.c, p.in_ctot, p.in_coff) * p.h + 2u * wy) * p.w + 2u * wx;
}

@compute @workgroup_size(256, 1, 1)
fn maxpool2x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.oh * p.ow) {
        let b = window(gid.z, i / p.ow, i % p.ow);
        y[gid.z * p.oh * p.ow + i] = max(max(x[b], x[b + 1u]), max(x[b + p.w], x[b + p.w + 1u]));
    }
}

// Backward: dx[argmax of each window] = dy, 0 elsewhere (the last row / column of an odd input
// included). The argmax is recomputed from x with PyTorch's tie-breaking: the first maximum in
// row-major window order, a NaN winning over numbers. Windows do not overlap, so one invocation
// per window of ceil(h / 2) x ceil(w / 2) writes its (up to) four cells and nothing else.
@compute @workgroup_size(256, 1, 1)
fn maxpool2x2_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let cw = (p.w + 1u) / 2u;
    let i = flat_index(gid, nwg);
    if (i >= ((p.h + 1u) / 2u) * cw) {
        return;
    }
    let wy = i / cw;
    let wx = i % cw;
    var k = 4u;  // argmax in window order; 4 = none (a partial window at an odd edge)
    var g = 0.0;
    if (wy < p.oh && wx < p.ow) {
        let b = window(gid.z, wy, wx);
        let v = vec4<f32>(f32(x[b]), f32(x[b + 1u]), f32(x[b + p.w]), f32(x[b + p.w + 1u]));
        var m = v.x;
        k = 0u;
        for (var j = 1u; j < 4u; j++) {
            if (v[j] > m || v[j] != v[j]) {
                m = v[j];
                k = j;
            }
        }
        g = f32(dy[(view_plane(gid.z, p.c, p.dy_ctot, p.dy_coff) * p.oh + wy) * p.ow + wx]);
    }
    let dx_plane = view_plane(gid.z, p.c, p.dx_ctot, p.dx_coff);
    for (var j = 0u; j < 4u; j++) {
        let yy = 2u * wy + j / 2u;
        let xx = 2u * wx + j % 2u;
        if (yy < p.h && xx < p.w) {
            store_dx((dx_plane * p.h + yy) * p.w + xx, select(0.0, g, j == k));
        }
    }
}
