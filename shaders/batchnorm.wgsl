// BatchNorm2d (PyTorch semantics), in training mode or frozen (eval mode: running statistics,
// treated as constants by the backward), and the backward of ReLU.
//
// All tensors are channel views: image `n`, channel `c` of a view lives at channel `coff + c` of a
// tensor with `ctot` channels (see ChannelView). Storage is T (f32 or f16); statistics, parameters
// and gradients of parameters are f32, and all arithmetic is f32.
//
// Reductions are deterministic (no atomics): pass 1 splits each channel's N*H*W values into
// chunks of CHUNK values, one workgroup per (chunk, channel), and writes one partial result per
// chunk; pass 2, one workgroup per channel, combines the partials in a fixed order.
//   statistics: per chunk (mean, M2) by two passes over values held in registers, combined with
//               Chan et al.'s parallel formula;
//   backward:   per chunk (sum dy', sum dy' * xhat), plain sums.
//
// Buffers (one binding number per variable across the module; each entry point uses a subset):
//   stats  [2 * c]: mean[c] ++ biased variance[c]
//   coef   [2 * c] vec4: (mean, 1 / sigma, gamma / sigma, beta), (mean dy', mean dy' * xhat, 0, 0)

struct BnParams {
    c: u32,
    hw: u32,
    n: u32,
    count: u32,        // n * hw values per channel
    chunks: u32,       // ceil(count / CHUNK)
    x_ctot: u32,
    x_coff: u32,
    y_ctot: u32,       // view of the forward output (ReLU mask)
    y_coff: u32,
    d_ctot: u32,       // view of dy
    d_coff: u32,
    o_ctot: u32,       // output view: y (forward) or dx (backward)
    o_coff: u32,
    mode: u32,         // ReLU: 0 none, 1 mask y > 0 from y, 2 mask recomputed from x
    accumulate: u32,   // add into the output view instead of overwriting it
    accumulate_params: u32,  // add into dgamma / dbeta
    eps: f32,
    momentum: f32,
    unbias: f32,       // count / (count - 1)
    frozen: u32,       // stats are the running statistics (eval mode): dx = gamma / sigma * dy'
}

@group(0) @binding(0) var<uniform> p: BnParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> y: array<T>;
@group(0) @binding(3) var<storage, read> dy: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats_out: array<f32>;
@group(0) @binding(7) var<storage, read> gamma: array<f32>;
@group(0) @binding(8) var<storage, read> beta: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials_out: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> coef_out: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> coef: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(14) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(15) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(16) var<storage, read_write> running_var: array<f32>;

const PER: u32 = 16u;
const CHUNK: u32 = 4096u;  // WG * PER (WG, red and wg_sum: lib/reduce.wgsl)

// Pixel `i` of plane z = (n, c) of a view with `ctot` channels at `coff`.
fn view_at(z: u32, ctot: u32, coff: u32, i: u32) -> u32 {
    return view_plane(z, p.c, ctot, coff) * p.hw + i;
}

// Element `e` (0 <= e < n * hw) of channel `c` of a view: the reductions' order over N·H·W.
fn at(e: u32, c: u32, ctot: u32, coff: u32) -> u32 {
    return view_at((e / p.hw) * p.c + c, ctot, coff, e % p.hw);
}

// out[o] = v, or out[o] + v with `accumulate`.
fn put_out(o: u32, v: f32) {
    var r = v;
    if (p.accumulate != 0u) {
        r += f32(out[o]);
    }
    out[o] = T(r);
}

// Chan et al.: combine (count, mean, M2) of two disjoint sets.
fn chan(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (b.x == 0.0) {
        return a;
    }
    if (a.x == 0.0) {
        return b;
    }
    let n = a.x + b.x;
    let d = b.y - a.y;
    let f = b.x / n;
    return vec4<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f, 0.0);
}

fn chunk_count(k: u32) -> u32 {
    return min(CHUNK, p.count - k * CHUNK);
}

// Pass 1 of the statistics: (count, mean, M2) of chunk wid.x of channel wid.y.
@compute @workgroup_size(256, 1, 1)
fn bn_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let k = wid.x;
    let c = wid.y;
    let start = k * CHUNK;
    let cnt = chunk_count(k);
    var v: array<f32, 16>;
    var s = 0.0;
    for (var j = 0u; j < PER; j++) {
        let e = li + j * WG;
        var val = 0.0;
        if (e < cnt) {
            val = f32(x[at(start + e, c, p.x_ctot, p.x_coff)]);
        }
        v[j] = val;
        s += val;
    }
    let mean = wg_sum(li, vec4<f32>(s, 0.0, 0.0, 0.0)).x / f32(cnt);
    var q = 0.0;
    for (var j = 0u; j < PER; j++) {
        if (li + j * WG < cnt) {
            let d = v[j] - mean;
            q += d * d;
        }
    }
    let m2 = wg_sum(li, vec4<f32>(q, 0.0, 0.0, 0.0)).x;
    if (li == 0u) {
        partials_out[c * p.chunks + k] = vec4<f32>(f32(cnt), mean, m2, 0.0);
    }
}

// Pass 2 of the statistics: combine channel wid.x's chunks; stats = (mean, M2 / count).
@compute @workgroup_size(256, 1, 1)
fn bn_stats_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wid.x;
    var acc = vec4<f32>(0.0);
    for (var k = li; k < p.chunks; k += WG) {
        acc = chan(acc, partials[c * p.chunks + k]);
    }
    red[li] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = chan(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let r = red[0];
        stats_out[c] = r.y;
        stats_out[p.c + c] = r.z / f32(p.count);
    }
}

// y = relu?(gamma * (x - mean) / sqrt(var + eps) + beta). One invocation per value; z = (n, c).
@compute @workgroup_size(256, 1, 1)
fn bn_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.hw) {
        let c = gid.z % p.c;
        let inv = 1.0 / sqrt(stats[p.c + c] + p.eps);
        let scale = gamma[c] * inv;
        var v = (f32(x[view_at(gid.z, p.x_ctot, p.x_coff, i)]) - stats[c]) * scale + beta[c];
        if (p.mode != 0u) {
            v = max(v, 0.0);
        }
        out[view_at(gid.z, p.o_ctot, p.o_coff, i)] = T(v);
    }
}

// running = (1 - m) * running + m * batch (variance unbiased). One invocation per channel.
@compute @workgroup_size(64, 1, 1)
fn bn_update_running(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) {
        return;
    }
    let m = p.momentum;
    running_mean[c] = (1.0 - m) * running_mean[c] + m * stats[c];
    running_var[c] = (1.0 - m) * running_var[c] + m * stats[p.c + c] * p.unbias;
}

// Eval mode: stats = (running_mean, running_var), what bn_forward and the backward then use.
@compute @workgroup_size(64, 1, 1)
fn bn_stats_from_running(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) {
        return;
    }
    stats_out[c] = running_mean[c];
    stats_out[p.c + c] = running_var[c];
}

// Backward step 1: per-channel coefficients (the same expressions as bn_forward).
@compute @workgroup_size(64, 1, 1)
fn bn_backward_prep(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) {
        return;
    }
    let inv = 1.0 / sqrt(stats[p.c + c] + p.eps);
    coef_out[2u * c] = vec4<f32>(stats[c], inv, gamma[c] * inv, beta[c]);
}

// dy' = dy * [y > 0] (mode 1), dy * [pre-activation > 0] (mode 2) or dy (mode 0).
fn masked_dy(c: u32, d: u32, xv: f32, yi: u32) -> f32 {
    let g = f32(dy[d]);
    if (p.mode == 1u) {
        return select(0.0, g, f32(y[yi]) > 0.0);
    }
    if (p.mode == 2u) {
        let k = coef[2u * c];
        return select(0.0, g, (xv - k.x) * k.z + k.w > 0.0);
    }
    return g;
}

// Backward step 2: (sum dy', sum dy' * xhat) of chunk wid.x of channel wid.y.
@compute @workgroup_size(256, 1, 1)
fn bn_backward_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let k = wid.x;
    let c = wid.y;
    let start = k * CHUNK;
    let cnt = chunk_count(k);
    let kc = coef[2u * c];
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < PER; j++) {
        let e = li + j * WG;
        if (e < cnt) {
            let xv = f32(x[at(start + e, c, p.x_ctot, p.x_coff)]);
            let g = masked_dy(c, at(start + e, c, p.d_ctot, p.d_coff), xv, at(start + e, c, p.y_ctot, p.y_coff));
            s += vec4<f32>(g, g * (xv - kc.x) * kc.y, 0.0, 0.0);
        }
    }
    let r = wg_sum(li, s);
    if (li == 0u) {
        partials_out[c * p.chunks + k] = r;
    }
}

// Backward step 3: sum channel wid.x's partials; dgamma, dbeta (+)= sums; coef gets the means.
@compute @workgroup_size(256, 1, 1)
fn bn_backward_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wid.x;
    var acc = vec4<f32>(0.0);
    for (var k = li; k < p.chunks; k += WG) {
        acc += partials[c * p.chunks + k];
    }
    let r = wg_sum(li, acc);
    if (li == 0u) {
        var dg = r.y;
        var db = r.x;
        if (p.accumulate_params != 0u) {
            dg += dgamma[c];
            db += dbeta[c];
        }
        dgamma[c] = dg;
        dbeta[c] = db;
        coef_out[2u * c + 1u] = vec4<f32>(r.x / f32(p.count), r.y / f32(p.count), 0.0, 0.0);
    }
}

// Backward step 4: dx (+)= gamma / sigma * (dy' - mean(dy') - xhat * mean(dy' * xhat)), or
// gamma / sigma * dy' when the statistics are frozen (they do not depend on x).
@compute @workgroup_size(256, 1, 1)
fn bn_backward_dx(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.hw) {
        let z = gid.z;
        let c = z % p.c;
        let k = coef[2u * c];
        let m = coef[2u * c + 1u];
        let xv = f32(x[view_at(z, p.x_ctot, p.x_coff, i)]);
        let g = masked_dy(c, view_at(z, p.d_ctot, p.d_coff, i), xv, view_at(z, p.y_ctot, p.y_coff, i));
        let xhat = (xv - k.x) * k.y;
        var v = k.z * g;
        if (p.frozen == 0u) {
            v = k.z * (g - m.x - xhat * m.y);
        }
        put_out(view_at(z, p.o_ctot, p.o_coff, i), v);
    }
}

// ReLU backward: dx (+)= dy * [y > 0]. One invocation per value; z = (n, c).
@compute @workgroup_size(256, 1, 1)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.hw) {
        let positive = f32(y[view_at(gid.z, p.y_ctot, p.y_coff, i)]) > 0.0;
        let g = f32(dy[view_at(gid.z, p.d_ctot, p.d_coff, i)]);
        put_out(view_at(gid.z, p.o_ctot, p.o_coff, i), select(0.0, g, positive));
    }
}
