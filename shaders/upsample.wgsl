// Bilinear x2 upsampling with align_corners = true, fused with the pad (or crop) to the skip
// connection's size and the write into the concatenation's channel slot:
//   out[n, coff + c, y, x] = up(x_in)[n, c, y - pad_top, x - pad_left], zero outside.
// PyTorch: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) then
// F.pad(x, [dx//2, dx-dx//2, dy//2, dy-dy//2]) then torch.cat([skip, x], 1).
// Backward (`upsample2x_pad_backward`): the adjoint, as a gather. In its parameters the `in_*`
// view is dx (input-shaped) and the `out_*` view is dy (output-shaped, e.g. the concatenation
// gradient's slot); `accumulate` adds into dx. Bindings x, y, dy, dx and store_dx: lib/views.wgsl.

struct UpParams {
    c: u32,
    ih: u32,
    iw: u32,
    in_ctot: u32,
    in_coff: u32,
    oh: u32,
    ow: u32,
    out_ctot: u32,
    out_coff: u32,
    pad_top: i32,
    pad_left: i32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: UpParams;

// Source coordinate and neighbours along one axis (align_corners = true).
fn axis(o: u32, isz: u32) -> vec3<f32> {
    let osz = 2u * isz;
    var scale = 0.0;
    if (osz > 1u) {
        scale = f32(isz - 1u) / f32(osz - 1u);
    }
    let src = scale * f32(o);
    let i0 = min(u32(floor(src)), isz - 1u);
    let i1 = min(i0 + 1u, isz - 1u);
    return vec3<f32>(f32(i0), f32(i1), src - f32(i0));
}

@compute @workgroup_size(256, 1, 1)
fn upsample2x_pad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.oh * p.ow) {
        return;
    }
    let uy = i32(i / p.ow) - p.pad_top;
    let ux = i32(i % p.ow) - p.pad_left;
    var v = 0.0;
    if (uy >= 0 && ux >= 0 && u32(uy) < 2u * p.ih && u32(ux) < 2u * p.iw) {
        let ay = axis(u32(uy), p.ih);
        let ax = axis(u32(ux), p.iw);
        let b = view_plane(gid.z, p.c, p.in_ctot, p.in_coff) * p.ih * p.iw;
        let r0 = b + u32(ay.x) * p.iw;
        let r1 = b + u32(ay.y) * p.iw;
        let x0 = u32(ax.x);
        let x1 = u32(ax.y);
        let top = f32(x[r0 + x0]) * (1.0 - ax.z) + f32(x[r0 + x1]) * ax.z;
        let bot = f32(x[r1 + x0]) * (1.0 - ax.z) + f32(x[r1 + x1]) * ax.z;
        v = top * (1.0 - ay.z) + bot * ay.z;
    }
    y[view_plane(gid.z, p.c, p.out_ctot, p.out_coff) * p.oh * p.ow + i] = T(v);
}

// Weight of input index `i` in upsampled index `u` along one axis (0 outside the upsampled map or
// outside the padded/cropped output), from the same `axis` arithmetic as the forward.
fn adjoint_weight(u: i32, i: u32, isz: u32, pad: i32, osz: u32) -> f32 {
    let o = u + pad;
    if (u < 0 || u >= i32(2u * isz) || o < 0 || o >= i32(osz)) {
        return 0.0;
    }
    let a = axis(u32(u), isz);
    var w = 0.0;
    if (u32(a.x) == i) {
        w += 1.0 - a.z;
    }
    if (u32(a.y) == i) {
        w += a.z;
    }
    return w;
}

// dx[n, c, iy, ix] (+)= sum over output pixels of weight * dy. With align_corners the source
// coordinate of upsampled index u is u * (isz - 1) / (2 isz - 1), so input index i is referenced
// only by u in [2i - 2, 2i + 2]; the window [2i - 3, 2i + 3] leaves a margin for rounding and
// every candidate's weight is recomputed exactly as the forward computes it.
@compute @workgroup_size(256, 1, 1)
fn upsample2x_pad_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.ih * p.iw) {
        return;
    }
    let b = view_plane(gid.z, p.c, p.out_ctot, p.out_coff) * p.oh;  // dy's first row
    let iy = i / p.iw;
    let ix = i % p.iw;
    var wx: array<f32, 7>;
    for (var k = 0u; k < 7u; k++) {
        wx[k] = adjoint_weight(i32(2u * ix + k) - 3, ix, p.iw, p.pad_left, p.ow);
    }
    var acc = 0.0;
    for (var ky = 0u; ky < 7u; ky++) {
        let uy = i32(2u * iy + ky) - 3;
        let wy = adjoint_weight(uy, iy, p.ih, p.pad_top, p.oh);
        if (wy == 0.0) {
            continue;
        }
        let row = (b + u32(uy + p.pad_top)) * p.ow;
        var r = 0.0;
        for (var kx = 0u; kx < 7u; kx++) {
            if (wx[kx] != 0.0) {
                r += wx[kx] * f32(dy[row + u32(i32(2u * ix + kx) - 3 + p.pad_left)]);
            }
        }
        acc += wy * r;
    }
    store_dx(view_plane(gid.z, p.c, p.in_ctot, p.in_coff) * p.ih * p.iw + i, acc);
}
