// 2-D convolutions over NCHW tensors with a fused epilogue: y = act(conv(x) * scale + shift).
// `scale`/`shift` carry a folded eval-mode BatchNorm or a bias (scale 1); `relu` picks the
// activation. Inputs and outputs are channel views: image `n`, channel `c` of the view lives at
// channel `coff + c` of a tensor with `ctot` channels, so a layer can read a slice of a tensor and
// write straight into the slot of a concatenation.
//
// Weights are re-laid on upload as vec4 over four consecutive output channels:
// `wt[((oc / 4) * cin + ci) * K*K + ky * K + kx]` (zero-padded to a multiple of four channels).
//
// conv3x3: a workgroup computes a 32 x 8 pixel x 16 output-channel block. Per 8-input-channel
// chunk it stages the 34 x 10 input halo and the 16 x 8 x 9 weights in workgroup memory; each
// invocation then accumulates 4 pixels x 4 output channels (vec4 accumulators) from registers.
// The storage type T is f32 or f16 (see the prelude); arithmetic and workgroup memory are f32.

struct ConvParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    in_ctot: u32,
    in_coff: u32,
    out_ctot: u32,
    out_coff: u32,
    relu: u32,
    oc_tiles: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T4>;
@group(0) @binding(3) var<storage, read> ss: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

const TX: u32 = 32u;   // output columns per workgroup
const TY: u32 = 8u;    // output rows per workgroup
const TOC: u32 = 16u;  // output channels per workgroup
const CI: u32 = 8u;    // input channels per staged chunk
const HX: u32 = 34u;   // TX + 2 (halo)
const HY: u32 = 10u;   // TY + 2
const NTHREADS: u32 = 256u;

var<workgroup> xs: array<f32, 2720>;        // CI * HY * HX
var<workgroup> ws: array<vec4<f32>, 288>;   // CI * 9 * (TOC / 4)

fn store(n: u32, oc: u32, gy: u32, gx: u32, v: f32) {
    var r = v * ss[oc].x + ss[oc].y;
    if (p.relu != 0u) {
        r = max(r, 0.0);
    }
    y[((n * p.out_ctot + p.out_coff + oc) * p.h + gy) * p.w + gx] = T(r);
}

@compute @workgroup_size(8, 8, 4)
fn conv3x3(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n = wid.z / p.oc_tiles;
    let oct = wid.z % p.oc_tiles;
    let tx0 = wid.x * TX;
    let ty0 = wid.y * TY;
    let plane = p.h * p.w;

    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);

    for (var c0 = 0u; c0 < p.cin; c0 += CI) {
        // Stage the input halo of this chunk (zero outside the image: padding 1).
        for (var i = li; i < CI * HY * HX; i += NTHREADS) {
            let ci = i / (HY * HX);
            let r = (i / HX) % HY;
            let cc = i % HX;
            let gy = i32(ty0 + r) - 1;
            let gx = i32(tx0 + cc) - 1;
            var v = 0.0;
            if (c0 + ci < p.cin && gy >= 0 && gx >= 0 && u32(gy) < p.h && u32(gx) < p.w) {
                let base = (n * p.in_ctot + p.in_coff + c0 + ci) * plane;
                v = f32(x[base + u32(gy) * p.w + u32(gx)]);
            }
            xs[i] = v;
        }
        // Stage the weights: ws[(ci * 9 + k) * 4 + q], q = output-channel quad in the tile.
        for (var i = li; i < CI * 9u * 4u; i += NTHREADS) {
            let ci = i / 36u;
            let k = (i / 4u) % 9u;
            let q = i % 4u;
            let ocq = oct * 4u + q;
            var v = vec4<f32>(0.0);
            if (c0 + ci < p.cin && ocq * 4u < p.cout) {
                v = vec4<f32>(wt[(ocq * p.cin + c0 + ci) * 9u + k]);
            }
            ws[i] = v;
        }
        workgroupBarrier();

        for (var ci = 0u; ci < CI; ci++) {
            for (var ky = 0u; ky < 3u; ky++) {
                let b = (ci * HY + lid.y + ky) * HX + lid.x * 4u;
                let v0 = xs[b];
                let v1 = xs[b + 1u];
                let v2 = xs[b + 2u];
                let v3 = xs[b + 3u];
                let v4 = xs[b + 4u];
                let v5 = xs[b + 5u];
                let wb = (ci * 9u + ky * 3u) * 4u + lid.z;
                let w0 = ws[wb];
                let w1 = ws[wb + 4u];
                let w2 = ws[wb + 8u];
                a0 += v0 * w0 + v1 * w1 + v2 * w2;
                a1 += v1 * w0 + v2 * w1 + v3 * w2;
                a2 += v2 * w0 + v3 * w1 + v4 * w2;
                a3 += v3 * w0 + v4 * w1 + v5 * w2;
            }
        }
        workgroupBarrier();
    }

    let gy = ty0 + lid.y;
    let gx = tx0 + lid.x * 4u;
    if (gy >= p.h) {
        return;
    }
    let oc0 = (oct * 4u + lid.z) * 4u;
    var acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var j = 0u; j < 4u; j++) {
        let oc = oc0 + j;
        if (oc >= p.cout) {
            break;
        }
        for (var q = 0u; q < 4u; q++) {
            if (gx + q < p.w) {
                store(n, oc, gy, gx + q, acc[q][j]);
            }
        }
    }
}

// 1x1 convolution: one invocation per pixel and output-channel quad, looping over input channels.
@compute @workgroup_size(64, 1, 1)
fn conv1x1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.h * p.w;
    let pix = gid.x + gid.y * nwg.x * 64u;
    let n = gid.z / p.oc_tiles;
    let ocq = gid.z % p.oc_tiles;
    if (pix >= plane) {
        return;
    }
    var acc = vec4<f32>(0.0);
    let xb = (n * p.in_ctot + p.in_coff) * plane + pix;
    for (var ci = 0u; ci < p.cin; ci++) {
        acc += f32(x[xb + ci * plane]) * vec4<f32>(wt[ocq * p.cin + ci]);
    }
    let gy = pix / p.w;
    let gx = pix % p.w;
    for (var j = 0u; j < 4u; j++) {
        let oc = ocq * 4u + j;
        if (oc < p.cout) {
            store(n, oc, gy, gx, acc[j]);
        }
    }
}

// Reference 3x3 convolution, one invocation per output value, no data reuse. Used only by the
// benchmark, to measure what the tiled kernel gains.
@compute @workgroup_size(64, 1, 1)
fn conv3x3_naive(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.h * p.w;
    let pix = gid.x + gid.y * nwg.x * 64u;
    let n = gid.z / p.cout;
    let oc = gid.z % p.cout;
    if (pix >= plane) {
        return;
    }
    let gy = i32(pix / p.w);
    let gx = i32(pix % p.w);
    var acc = 0.0;
    for (var ci = 0u; ci < p.cin; ci++) {
        let base = (n * p.in_ctot + p.in_coff + ci) * plane;
        for (var k = 0u; k < 9u; k++) {
            let sy = gy + i32(k / 3u) - 1;
            let sx = gx + i32(k % 3u) - 1;
            if (sy >= 0 && sx >= 0 && u32(sy) < p.h && u32(sx) < p.w) {
                acc += f32(x[base + u32(sy) * p.w + u32(sx)]) * f32(wt[((oc / 4u) * p.cin + ci) * 9u + k][oc % 4u]);
            }
        }
    }
    store(n, oc, u32(gy), u32(gx), acc);
}
