// Bilinear x2 upsampling with align_corners = true, fused with the pad (or crop) to the skip
// connection's size and the write into the concatenation's channel slot:
//   out[n, coff + c, y, x] = up(x_in)[n, c, y - pad_top, x - pad_left], zero outside.
// PyTorch: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) then
// F.pad(x, [dx//2, dx-dx//2, dy//2, dy-dy//2]) then torch.cat([skip, x], 1).

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
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: UpParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

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
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.oh * p.ow) {
        return;
    }
    let n = gid.z / p.c;
    let c = gid.z % p.c;
    let oy = i / p.ow;
    let ox = i % p.ow;
    let uy = i32(oy) - p.pad_top;
    let ux = i32(ox) - p.pad_left;
    var v = 0.0;
    if (uy >= 0 && ux >= 0 && u32(uy) < 2u * p.ih && u32(ux) < 2u * p.iw) {
        let ay = axis(u32(uy), p.ih);
        let ax = axis(u32(ux), p.iw);
        let b = (n * p.in_ctot + p.in_coff + c) * p.ih * p.iw;
        let r0 = b + u32(ay.x) * p.iw;
        let r1 = b + u32(ay.y) * p.iw;
        let x0 = u32(ax.x);
        let x1 = u32(ax.y);
        let top = f32(x[r0 + x0]) * (1.0 - ax.z) + f32(x[r0 + x1]) * ax.z;
        let bot = f32(x[r1 + x0]) * (1.0 - ax.z) + f32(x[r1 + x1]) * ax.z;
        v = top * (1.0 - ay.z) + bot * ay.z;
    }
    y[((n * p.out_ctot + p.out_coff + c) * p.oh + oy) * p.ow + ox] = T(v);
}
