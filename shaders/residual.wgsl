// The residual model's two element-wise kernels around its U-Net (nn::residual):
//   features  the U-Net's input [n, c + f, h, w] (storage type T) from the scaled buckets
//             [n, c, h, w] and the classical solver's output [n, cls_c, h, w] (height, contrast),
//             both f32: channels 0..c the buckets (a non-finite one as 0), then feature k by its
//             4-bit code in `codes` (bits 4k..4k+3):
//               0 sin(2π·h/half)   1 cos(2π·h/half)   (half = the first laser's λ/2)
//               2 the contrast (mean B/A of the lasers the solver used)   3 valid (1)
//             At a pixel whose classical height is NaN every feature is 0 (valid 0), so an
//             invalid pixel puts only finite numbers into its neighbours' convolutions.
//   combine   out = h + bound · tanh(u) (f32) from the classical height h and the U-Net's output
//             u (T); NaN where h is NaN.
// tanh from exp(−2|u|), which cannot overflow; the phase is reduced to turns before the sine.

struct ResidualParams {
    // Pixels of one image (h · w) and images in the batch.
    hw: u32,
    n: u32,
    c: u32,
    f: u32,
    codes: u32,
    cls_c: u32,
    half: f32,
    bound: f32,
}

@group(0) @binding(0) var<uniform> p: ResidualParams;
@group(0) @binding(1) var<storage, read> buckets: array<f32>;
@group(0) @binding(2) var<storage, read> cls: array<f32>;
@group(0) @binding(3) var<storage, read_write> unet_in: array<T>;
@group(0) @binding(4) var<storage, read> unet_out: array<T>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const TAU: f32 = 6.28318530717959;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn feature(code: u32, h: f32, contrast: f32) -> f32 {
    let t = h / p.half;
    let turns = t - floor(t);
    switch code {
        case 0u: {
            return sin(TAU * turns);
        }
        case 1u: {
            return cos(TAU * turns);
        }
        case 2u: {
            return select(0.0, contrast, finite(contrast));
        }
        default: {
            return 1.0;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn features(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n * p.hw) {
        return;
    }
    let z = i / p.hw;
    let px = i % p.hw;
    let ctot = p.c + p.f;
    for (var k = 0u; k < p.c; k++) {
        let v = buckets[(z * p.c + k) * p.hw + px];
        unet_in[(z * ctot + k) * p.hw + px] = T(select(0.0, v, finite(v)));
    }
    let h = cls[z * p.cls_c * p.hw + px];
    var contrast = 0.0;
    if (p.cls_c > 1u) {
        contrast = cls[(z * p.cls_c + 1u) * p.hw + px];
    }
    let valid = finite(h);
    for (var k = 0u; k < p.f; k++) {
        let code = (p.codes >> (4u * k)) & 15u;
        let v = select(0.0, feature(code, h, contrast), valid);
        unet_in[(z * ctot + p.c + k) * p.hw + px] = T(v);
    }
}

@compute @workgroup_size(256, 1, 1)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n * p.hw) {
        return;
    }
    let z = i / p.hw;
    let px = i % p.hw;
    let h = cls[z * p.cls_c * p.hw + px];
    let u = f32(unet_out[i]);
    let e = exp(-2.0 * abs(u));
    let t = sign(u) * (1.0 - e) / (1.0 + e);
    out[i] = select(bitcast<f32>(0x7fc00000u), h + p.bound * t, finite(h));
}
