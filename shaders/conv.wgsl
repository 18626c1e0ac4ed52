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
//
// Backward (training; the conv is plain there: scale 1, shift = bias, no ReLU) follows the
// forward kernels below: grad_input reuses conv3x3/conv1x1 with a transposed weight copy,
// grad_weight/grad_bias are deterministic reductions, relayout fills the weight buffers from
// f32 master weights on the GPU.

// ConvParams, the bindings 0-4 and store() are in lib/conv_io.wgsl.

const TX: u32 = 32u;   // output columns per workgroup
const TY: u32 = 8u;    // output rows per workgroup
const TOC: u32 = 16u;  // output channels per workgroup
const CI: u32 = 8u;    // input channels per staged chunk
const HX: u32 = 34u;   // TX + 2 (halo)
const HY: u32 = 10u;   // TY + 2
const NTHREADS: u32 = 256u;

// The flat index of an invocation of the 64-lane 1-D kernels below (gpu::grid_1d).
fn flat_index64(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

var<workgroup> xs: array<f32, 2720>;        // CI * HY * HX
var<workgroup> ws: array<vec4<f32>, 288>;   // CI * 9 * (TOC / 4)

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
    let pix = flat_index64(gid, nwg);
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
    let pix = flat_index64(gid, nwg);
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

// ---------------------------------------------------------------------------------------------
// Backward. For y = conv(x, W) + b and the incoming gradient dy:
//
//   dx[n, ci, y, x]     = sum_{oc, ky, kx} dy[n, oc, y + 1 - ky, x + 1 - kx] * W[oc, ci, ky, kx]
//   dW[oc, ci, ky, kx]  = sum_{n, y, x} dy[n, oc, y, x] * x[n, ci, y + ky - 1, x + kx - 1]
//   db[oc]              = sum_{n, y, x} dy[n, oc, y, x]
//
// dx is itself a convolution of dy (padding 1) with the spatially flipped kernel and in/out
// channels swapped, so it runs on conv3x3 / conv1x1 above (affine = 0) with a second weight copy
// in the same vec4 layout: `wtt[((ci / 4) * cout + oc) * K*K + t][ci % 4] = W[oc, ci, K*K-1-t]`.
// dW and db are written as plain f32 in PyTorch's layout.

@group(0) @binding(5) var<storage, read> master: array<f32>;          // f32 [cout, cin, k, k]
@group(0) @binding(6) var<storage, read_write> wt_out: array<T4>;     // forward layout
@group(0) @binding(7) var<storage, read_write> wtt_out: array<T4>;    // transposed layout
@group(0) @binding(8) var<storage, read> bias: array<f32>;            // f32 [cout]
@group(0) @binding(9) var<storage, read_write> ss_out: array<vec2<f32>>;
@group(0) @binding(10) var<storage, read> dy: array<T>;
@group(0) @binding(11) var<storage, read_write> grad: array<f32>;     // dW, db or partial sums
@group(0) @binding(12) var<storage, read> part: array<f32>;

fn put_grad(i: u32, v: f32) {
    if (p.accumulate != 0u) {
        grad[i] += v;
    } else {
        grad[i] = v;
    }
}

// Master f32 weights [cout, cin, k, k] -> the forward layout (wt_out) and the transposed,
// flipped layout for grad_input (wtt_out). One invocation per vec4 of either buffer.
@compute @workgroup_size(64, 1, 1)
fn relayout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index64(gid, nwg);
    let kk = p.kk;
    let nf = ((p.cout + 3u) / 4u) * p.cin * kk;
    let nb = ((p.cin + 3u) / 4u) * p.cout * kk;
    var v = vec4<f32>(0.0);
    if (i < nf) {
        let t = i % kk;
        let ci = (i / kk) % p.cin;
        let q = i / (kk * p.cin);
        for (var j = 0u; j < 4u; j++) {
            let oc = q * 4u + j;
            if (oc < p.cout) {
                v[j] = master[(oc * p.cin + ci) * kk + t];
            }
        }
        wt_out[i] = T4(v);
    } else if (i < nf + nb) {
        let i2 = i - nf;
        let t = i2 % kk;
        let oc = (i2 / kk) % p.cout;
        let q = i2 / (kk * p.cout);
        for (var j = 0u; j < 4u; j++) {
            let ci = q * 4u + j;
            if (ci < p.cin) {
                v[j] = master[(oc * p.cin + ci) * kk + kk - 1u - t];
            }
        }
        wtt_out[i2] = T4(v);
    }
}

// The transposed layout from the forward one (weights uploaded for inference, then used for a
// gradient): one invocation per vec4 of wtt_out.
@compute @workgroup_size(64, 1, 1)
fn transpose_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index64(gid, nwg);
    let kk = p.kk;
    if (i >= ((p.cin + 3u) / 4u) * p.cout * kk) {
        return;
    }
    let t = i % kk;
    let oc = (i / kk) % p.cout;
    let q = i / (kk * p.cout);
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let ci = q * 4u + j;
        if (ci < p.cin) {
            v[j] = f32(wt[((oc / 4u) * p.cin + ci) * kk + kk - 1u - t][oc % 4u]);
        }
    }
    wtt_out[i] = T4(v);
}

// Epilogue of a trainable convolution: scale 1, shift = bias (f32 [cout]).
@compute @workgroup_size(64, 1, 1)
fn relayout_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let oc = gid.x;
    if (oc < p.cout) {
        ss_out[oc] = vec2<f32>(1.0, bias[oc]);
    }
}

// dW of a 3x3 convolution. A workgroup owns 16 input x 32 output channels (x 9 taps) and a chunk
// of pixel strips (one strip = 32 pixels of one row of one image). Per strip it stages, as vec4
// over columns, the 3-row input halo of its 16 input channels (columns x0 - 3 .. x0 + 32, so
// that the loads below are aligned) and dy of its 32 output channels. Invocation (ci, oc pair)
// then walks the strip 4 pixels at a time: the 3 x 6 input window of those pixels makes three
// mat4x3 (one per kernel row, a column per pixel), multiplied by the 4 values of dy: per 4 pixels
// 5 vec4 loads for 72 multiply-adds. Partial sums go to grad[chunk * cout * cin * 9 + ...]; with
// one chunk that is dW itself, otherwise `grad_weight_reduce` sums the chunks in a fixed order.
const GW_CI: u32 = 16u;
const GW_OC: u32 = 32u;
const GW_PX: u32 = 32u;
const GW_R4: u32 = 9u;  // vec4 per staged input row: 36 columns, x0 - 3 .. x0 + 32

var<workgroup> gxs: array<vec4<f32>, 432>;  // GW_CI * 3 * GW_R4
var<workgroup> gds: array<vec4<f32>, 256>;  // GW_OC * GW_PX / 4

@compute @workgroup_size(16, 16, 1)
fn conv3x3_grad_weight(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let ci0 = wid.x * GW_CI;
    let oc0 = wid.y * GW_OC;
    let plane = p.h * p.w;
    let row_strips = (p.w + GW_PX - 1u) / GW_PX;
    let s_begin = wid.z * p.chunk;
    let s_end = min(s_begin + p.chunk, p.strips);

    // Accumulators: a* for output channel oc0 + 2 lid.y, b* for the next; index = kernel row,
    // components = kernel column.
    var a0 = vec3<f32>(0.0);
    var a1 = vec3<f32>(0.0);
    var a2 = vec3<f32>(0.0);
    var b0 = vec3<f32>(0.0);
    var b1 = vec3<f32>(0.0);
    var b2 = vec3<f32>(0.0);

    for (var s = s_begin; s < s_end; s++) {
        let n = s / (p.h * row_strips);
        let gy = (s / row_strips) % p.h;
        let x0 = (s % row_strips) * GW_PX;
        for (var i = li; i < GW_CI * 3u * GW_R4; i += 256u) {
            let c = i / (3u * GW_R4);
            let sy = i32(gy + (i / GW_R4) % 3u) - 1;
            let sx0 = i32(x0 + (i % GW_R4) * 4u) - 3;
            var v = vec4<f32>(0.0);
            if (ci0 + c < p.cin && sy >= 0 && u32(sy) < p.h) {
                let row = (n * p.in_ctot + p.in_coff + ci0 + c) * plane + u32(sy) * p.w;
                for (var j = 0u; j < 4u; j++) {
                    let sx = sx0 + i32(j);
                    if (sx >= 0 && u32(sx) < p.w) {
                        v[j] = f32(x[row + u32(sx)]);
                    }
                }
            }
            gxs[i] = v;
        }
        for (var i = li; i < GW_OC * GW_PX / 4u; i += 256u) {
            let o = i / (GW_PX / 4u);
            let c = (i % (GW_PX / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            if (oc0 + o < p.cout) {
                let row = (n * p.out_ctot + p.out_coff + oc0 + o) * plane + gy * p.w + x0;
                for (var j = 0u; j < 4u; j++) {
                    if (x0 + c + j < p.w) {
                        v[j] = f32(dy[row + c + j]);
                    }
                }
            }
            gds[i] = v;
        }
        workgroupBarrier();

        let xb = lid.x * 3u * GW_R4;
        let da = lid.y * 2u * (GW_PX / 4u);
        // (u, v): the two columns left of the current 4 pixels, per kernel row.
        var u0 = gxs[xb].z;
        var v0 = gxs[xb].w;
        var u1 = gxs[xb + GW_R4].z;
        var v1 = gxs[xb + GW_R4].w;
        var u2 = gxs[xb + 2u * GW_R4].z;
        var v2 = gxs[xb + 2u * GW_R4].w;
        let quads = (min(GW_PX, p.w - x0) + 3u) / 4u;
        for (var q = 0u; q < quads; q++) {
            let e0 = gxs[xb + q + 1u];
            let e1 = gxs[xb + GW_R4 + q + 1u];
            let e2 = gxs[xb + 2u * GW_R4 + q + 1u];
            let d0 = gds[da + q];
            let d1 = gds[da + GW_PX / 4u + q];
            let m0 = mat4x3<f32>(vec3(u0, v0, e0.x), vec3(v0, e0.x, e0.y), e0.xyz, e0.yzw);
            let m1 = mat4x3<f32>(vec3(u1, v1, e1.x), vec3(v1, e1.x, e1.y), e1.xyz, e1.yzw);
            let m2 = mat4x3<f32>(vec3(u2, v2, e2.x), vec3(v2, e2.x, e2.y), e2.xyz, e2.yzw);
            a0 += m0 * d0;
            a1 += m1 * d0;
            a2 += m2 * d0;
            b0 += m0 * d1;
            b1 += m1 * d1;
            b2 += m2 * d1;
            u0 = e0.z;
            v0 = e0.w;
            u1 = e1.z;
            v1 = e1.w;
            u2 = e2.z;
            v2 = e2.w;
        }
        workgroupBarrier();
    }

    let ci = ci0 + lid.x;
    if (ci >= p.cin) {
        return;
    }
    let base = wid.z * p.cout * p.cin * 9u;
    var acc = array<array<vec3<f32>, 3>, 2>(array<vec3<f32>, 3>(a0, a1, a2), array<vec3<f32>, 3>(b0, b1, b2));
    for (var j = 0u; j < 2u; j++) {
        let oc = oc0 + lid.y * 2u + j;
        if (oc < p.cout) {
            let o = base + (oc * p.cin + ci) * 9u;
            for (var r = 0u; r < 3u; r++) {
                for (var k = 0u; k < 3u; k++) {
                    put_grad(o + r * 3u + k, acc[j][r][k]);
                }
            }
        }
    }
}

// dW of a 1x1 convolution: a workgroup owns 16 input x 16 output channels and a chunk of pixel
// strips (64 consecutive pixels of one image plane); invocation (ci, oc) owns one weight.
var<workgroup> g1x: array<vec4<f32>, 256>;  // 16 channels x 16 vec4 (64 pixels)
var<workgroup> g1d: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn conv1x1_grad_weight(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let ci0 = wid.x * 16u;
    let oc0 = wid.y * 16u;
    let plane = p.h * p.w;
    let plane_strips = (plane + 63u) / 64u;
    let s_begin = wid.z * p.chunk;
    let s_end = min(s_begin + p.chunk, p.strips);
    let c = li / 16u;
    let q = li % 16u;
    var acc = 0.0;
    for (var s = s_begin; s < s_end; s++) {
        let n = s / plane_strips;
        let p0 = (s % plane_strips) * 64u + q * 4u;
        var vx = vec4<f32>(0.0);
        var vd = vec4<f32>(0.0);
        let xb = (n * p.in_ctot + p.in_coff + ci0 + c) * plane;
        let db = (n * p.out_ctot + p.out_coff + oc0 + c) * plane;
        for (var j = 0u; j < 4u; j++) {
            if (p0 + j < plane) {
                if (ci0 + c < p.cin) {
                    vx[j] = f32(x[xb + p0 + j]);
                }
                if (oc0 + c < p.cout) {
                    vd[j] = f32(dy[db + p0 + j]);
                }
            }
        }
        g1x[li] = vx;
        g1d[li] = vd;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            acc += dot(g1d[lid.y * 16u + k], g1x[lid.x * 16u + k]);
        }
        workgroupBarrier();
    }
    let ci = ci0 + lid.x;
    let oc = oc0 + lid.y;
    if (ci < p.cin && oc < p.cout) {
        put_grad(wid.z * p.cout * p.cin + oc * p.cin + ci, acc);
    }
}

// Sum of the `chunk` partial dW buffers, in chunk order (deterministic).
@compute @workgroup_size(64, 1, 1)
fn grad_weight_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index64(gid, nwg);
    let total = p.cout * p.cin * p.kk;
    if (i >= total) {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < p.chunk; c++) {
        s += part[c * total + i];
    }
    put_grad(i, s);
}

// db: one workgroup per output channel, strided sums then lib/reduce.wgsl's tree.
@compute @workgroup_size(256, 1, 1)
fn grad_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let oc = wid.x;
    let plane = p.h * p.w;
    var s = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.out_ctot + p.out_coff + oc) * plane;
        for (var i = li; i < plane; i += 256u) {
            s += f32(dy[base + i]);
        }
    }
    let total = wg_sum(li, vec4<f32>(s, 0.0, 0.0, 0.0)).x;
    if (li == 0u) {
        put_grad(oc, total);
    }
}
