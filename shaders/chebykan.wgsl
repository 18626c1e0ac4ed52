// Scaled-cPIKAN (Chebyshev Kolmogorov-Arnold network) layers and their backward, always in f32
// (the precision prelude's T is not used: these models are small and need the precision).
//
// Layouts (C-order, batch-major): activations (batch, features); Chebyshev coefficients as
// PyTorch's (n_in, n_out, degree + 1); LayerNorm weight / bias (features).
// One invocation per output element, 64 lanes, indexed `gid.x + gid.y * nwg.x * 64` (grid_1d).
// Every reduction is a serial loop in a fixed order: results are deterministic. Sums over the batch
// (the parameter gradients) are two-stage: a first kernel writes one partial sum per chunk of
// `p.chunk` samples (summed in batch order; one invocation per (chunk, parameter)) to `y` laid out
// (chunks, parameters), and sum_chunks / layernorm_params_reduce add the partials in chunk order.

struct ChebyParams {
    batch: u32,
    n_in: u32,
    n_out: u32,
    degree: u32,
    // affine_scale: 1 = generate the coordinates of an image grid (x = column, y = row) of
    // `grid_w` columns instead of reading them.
    use_grid: u32,
    grid_w: u32,
    // *_derivatives kernels: number of input directions D; every activation carries
    // 1 + 2 D channels per feature: value, D first derivatives, D second derivatives (along axes).
    n_dir: u32,
    // Samples per chunk of the two-stage batch reductions.
    chunk: u32,
}

@group(0) @binding(0) var<uniform> p: ChebyParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// Output; for the first stage of a batch reduction the per-chunk partial sums.
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// Coefficients (n_in, n_out, degree + 1); for affine_scale the domain: n_in minima then n_in maxima.
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
// A reduced parameter gradient (sum_chunks) or the LayerNorm weight gradient (layernorm_params_reduce).
@group(0) @binding(8) var<storage, read_write> dw: array<f32>;
@group(0) @binding(9) var<storage, read_write> db: array<f32>;
// LayerNorm backward scratch (batch, features): du = d(pre-tanh), dux = du * xhat.
@group(0) @binding(10) var<storage, read_write> du: array<f32>;
@group(0) @binding(11) var<storage, read_write> dux: array<f32>;

const LN_EPS: f32 = 1e-5;

fn lane(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// Chunks of p.chunk samples covering the batch (at least one).
fn n_chunks() -> u32 {
    return max((p.batch + p.chunk - 1u) / p.chunk, 1u);
}

// The samples of chunk ch: [first, end) as (x, y).
fn chunk_range(ch: u32) -> vec2<u32> {
    let lo = ch * p.chunk;
    return vec2<u32>(lo, min(lo + p.chunk, p.batch));
}

// Invocation tc of a first-stage coefficient reduction: (chunk, i, o, k), with tc running over
// chunks × (n_in, n_out, degree + 1) coefficients.
fn coeff_task(tc: u32) -> vec4<u32> {
    let kk = p.degree + 1u;
    let np = p.n_in * p.n_out * kk;
    let t = tc % np;
    let io = t / kk;
    return vec4<u32>(tc / np, io / p.n_out, io % p.n_out, t % kk);
}

// Second stage of a batch reduction: dw[t] = sum_ch x[ch, t] over the n_chunks() partials of
// n_out values each, in chunk order.
@compute @workgroup_size(64, 1, 1)
fn sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.n_out) {
        return;
    }
    var acc = 0.0;
    for (var ch = 0u; ch < n_chunks(); ch++) {
        acc += x[ch * p.n_out + t];
    }
    dw[t] = acc;
}

// tanh with the argument clamped (|u| >= 15 is +-1 in f32), so no backend's exp overflows.
fn tanh_clamped(u: f32) -> f32 {
    return tanh(clamp(u, -15.0, 15.0));
}

// Physical coordinates -> [-1, 1]: 2 (x - min) / (max - min) - 1, per coordinate (n_in of them).
@compute @workgroup_size(64, 1, 1)
fn affine_scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.batch * p.n_in) {
        return;
    }
    let d = i % p.n_in;
    var v: f32;
    if (p.use_grid != 0u) {
        let b = i / p.n_in;
        v = f32(select(b / p.grid_w, b % p.grid_w, d == 0u));
    } else {
        v = x[i];
    }
    let lo = c[d];
    let hi = c[p.n_in + d];
    y[i] = 2.0 * (v - lo) / (hi - lo) - 1.0;
}

// y[b, o] = sum_i sum_k c[i, o, k] T_k(x[b, i]); T_0 = 1, T_1 = x, T_k = 2 x T_{k-1} - T_{k-2}.
@compute @workgroup_size(64, 1, 1)
fn cheby_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.batch * p.n_out) {
        return;
    }
    let b = t / p.n_out;
    let o = t % p.n_out;
    let kk = p.degree + 1u;
    var acc = 0.0;
    for (var i = 0u; i < p.n_in; i++) {
        let xv = x[b * p.n_in + i];
        let base = (i * p.n_out + o) * kk;
        var t0 = 1.0;
        var t1 = xv;
        var s = c[base];
        if (p.degree >= 1u) {
            s += c[base + 1u] * xv;
        }
        for (var k = 2u; k <= p.degree; k++) {
            let t2 = 2.0 * xv * t1 - t0;
            s += c[base + k] * t2;
            t0 = t1;
            t1 = t2;
        }
        acc += s;
    }
    y[t] = acc;
}

// dx[b, i] = sum_o dy[b, o] sum_k c[i, o, k] T_k'(x[b, i]), with T_k' = k U_{k-1}
// (U_0 = 1, U_1 = 2 x, U_k = 2 x U_{k-1} - U_{k-2}).
@compute @workgroup_size(64, 1, 1)
fn cheby_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.batch * p.n_in) {
        return;
    }
    let b = t / p.n_in;
    let i = t % p.n_in;
    let kk = p.degree + 1u;
    let xv = x[t];
    var acc = 0.0;
    for (var o = 0u; o < p.n_out; o++) {
        let base = (i * p.n_out + o) * kk;
        var u0 = 0.0;  // U_{k-2}
        var u1 = 1.0;  // U_{k-1}
        var s = 0.0;
        for (var k = 1u; k <= p.degree; k++) {
            s += f32(k) * c[base + k] * u1;
            let u2 = 2.0 * xv * u1 - u0;
            u0 = u1;
            u1 = u2;
        }
        acc += dy[b * p.n_out + o] * s;
    }
    dx[t] = acc;
}

// First stage of dw[i, o, k] = sum_b dy[b, o] T_k(x[b, i]): y[ch, i, o, k] = the sum over chunk
// ch's samples in order; one invocation per (chunk, i, o, k).
@compute @workgroup_size(64, 1, 1)
fn cheby_backward_coeffs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tc = lane(gid, nwg);
    if (tc >= p.n_in * p.n_out * (p.degree + 1u) * n_chunks()) {
        return;
    }
    let task = coeff_task(tc);
    let range = chunk_range(task.x);
    let i = task.y;
    let o = task.z;
    let k = task.w;
    var acc = 0.0;
    for (var b = range.x; b < range.y; b++) {
        let xv = x[b * p.n_in + i];
        var t0 = 1.0;
        var t1 = xv;
        var tk = select(xv, 1.0, k == 0u);
        for (var j = 2u; j <= k; j++) {
            let t2 = 2.0 * xv * t1 - t0;
            t0 = t1;
            t1 = t2;
            tk = t2;
        }
        acc += dy[b * p.n_out + o] * tk;
    }
    y[tc] = acc;
}

// Mean and 1 / sqrt(biased variance + eps) of sample b's n_out features of x (two passes).
fn ln_stats(b: u32) -> vec2<f32> {
    let n = p.n_out;
    var m = 0.0;
    for (var j = 0u; j < n; j++) {
        m += x[b * n + j];
    }
    m /= f32(n);
    var v = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = x[b * n + j] - m;
        v += e * e;
    }
    v /= f32(n);
    return vec2<f32>(m, inverseSqrt(v + LN_EPS));
}

// y[b, :] = tanh(LayerNorm(x[b, :]) * gamma + beta) over n_out features; one invocation per sample.
@compute @workgroup_size(64, 1, 1)
fn layernorm_tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = lane(gid, nwg);
    if (b >= p.batch) {
        return;
    }
    let st = ln_stats(b);
    for (var j = 0u; j < p.n_out; j++) {
        let xh = (x[b * p.n_out + j] - st.x) * st.y;
        y[b * p.n_out + j] = tanh_clamped(xh * gamma[j] + beta[j]);
    }
}

// Backward of layernorm_tanh_forward for sample b: from the pre-norm input x and dy = d(output),
// dx[b, :] = rstd (g - mean(g) - xhat mean(g xhat)) with g = du gamma, du = dy (1 - tanh^2).
// Also writes du and du * xhat for layernorm_params_backward.
@compute @workgroup_size(64, 1, 1)
fn layernorm_tanh_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = lane(gid, nwg);
    if (b >= p.batch) {
        return;
    }
    let n = p.n_out;
    let st = ln_stats(b);
    var mg = 0.0;
    var mgx = 0.0;
    for (var j = 0u; j < n; j++) {
        let o = b * n + j;
        let xh = (x[o] - st.x) * st.y;
        let a = tanh_clamped(xh * gamma[j] + beta[j]);
        let d = dy[o] * (1.0 - a * a);
        du[o] = d;
        dux[o] = d * xh;
        let g = d * gamma[j];
        mg += g;
        mgx += g * xh;
    }
    mg /= f32(n);
    mgx /= f32(n);
    for (var j = 0u; j < n; j++) {
        let o = b * n + j;
        let xh = (x[o] - st.x) * st.y;
        dx[o] = st.y * (du[o] * gamma[j] - mg - xh * mgx);
    }
}

// First stage of dgamma[j] = sum_b dux[b, j] (du xhat), dbeta[j] = sum_b du[b, j]: per chunk ch,
// y[ch, 0, j] and y[ch, 1, j] the sums over its samples in order; one invocation per (chunk, j).
@compute @workgroup_size(64, 1, 1)
fn layernorm_params_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = p.n_out;
    let tc = lane(gid, nwg);
    if (tc >= n * n_chunks()) {
        return;
    }
    let ch = tc / n;
    let j = tc % n;
    let range = chunk_range(ch);
    var sw = 0.0;
    var sb = 0.0;
    for (var b = range.x; b < range.y; b++) {
        sw += dux[b * n + j];
        sb += du[b * n + j];
    }
    y[(2u * ch) * n + j] = sw;
    y[(2u * ch + 1u) * n + j] = sb;
}

// Second stage: dgamma[j] = sum_ch x[ch, 0, j], dbeta[j] = sum_ch x[ch, 1, j] in chunk order.
@compute @workgroup_size(64, 1, 1)
fn layernorm_params_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = p.n_out;
    let j = lane(gid, nwg);
    if (j >= n) {
        return;
    }
    var sw = 0.0;
    var sb = 0.0;
    for (var ch = 0u; ch < n_chunks(); ch++) {
        sw += x[(2u * ch) * n + j];
        sb += x[(2u * ch + 1u) * n + j];
    }
    dw[j] = sw;
    db[j] = sb;
}

// ---------------------------------------------------------------------------------------------
// Forward-mode input derivatives. Activations are (batch, features, 1 + 2 D): channel 0 the
// value, 1 + a its derivative along physical axis a, 1 + D + a its second derivative along a.

// affine_scale plus the tangents: d xhat_j / d x_a = 2 / (max_j - min_j) if a == j, else 0;
// second derivatives 0. One invocation per (sample, coordinate).
@compute @workgroup_size(64, 1, 1)
fn affine_scale_derivatives(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.batch * p.n_in) {
        return;
    }
    let d = i % p.n_in;
    var v: f32;
    if (p.use_grid != 0u) {
        let b = i / p.n_in;
        v = f32(select(b / p.grid_w, b % p.grid_w, d == 0u));
    } else {
        v = x[i];
    }
    let lo = c[d];
    let hi = c[p.n_in + d];
    let nd = p.n_dir;
    let o = i * (1u + 2u * nd);
    y[o] = 2.0 * (v - lo) / (hi - lo) - 1.0;
    for (var a = 0u; a < nd; a++) {
        y[o + 1u + a] = select(0.0, 2.0 / (hi - lo), a == d);
        y[o + 1u + nd + a] = 0.0;
    }
}

// cheby_forward with tangents: per input i, S0 = sum_k c T_k, S1 = sum_k c T_k', S2 = sum_k c T_k''
// (T'_{k+1} = 2 T_k + 2 x T'_k - T'_{k-1}, T''_{k+1} = 4 T'_k + 2 x T''_k - T''_{k-1}); then
// y = sum_i S0, y'_a = sum_i S1 x'_a, y''_a = sum_i S2 x'_a^2 + S1 x''_a. One invocation per (b, o).
@compute @workgroup_size(64, 1, 1)
fn cheby_forward_derivatives(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.batch * p.n_out) {
        return;
    }
    let b = t / p.n_out;
    let o = t % p.n_out;
    let kk = p.degree + 1u;
    let nd = p.n_dir;
    let ch = 1u + 2u * nd;
    let out = t * ch;
    for (var q = 0u; q < ch; q++) {
        y[out + q] = 0.0;
    }
    var acc = 0.0;
    for (var i = 0u; i < p.n_in; i++) {
        let xi = (b * p.n_in + i) * ch;
        let xv = x[xi];
        let base = (i * p.n_out + o) * kk;
        // (T, T', T'') at k - 1 and k.
        var t0 = vec3<f32>(1.0, 0.0, 0.0);
        var t1 = vec3<f32>(xv, 1.0, 0.0);
        var s = vec3<f32>(c[base], 0.0, 0.0);
        if (p.degree >= 1u) {
            s += c[base + 1u] * t1;
        }
        for (var k = 2u; k <= p.degree; k++) {
            let t2 = vec3<f32>(
                2.0 * xv * t1.x - t0.x,
                2.0 * t1.x + 2.0 * xv * t1.y - t0.y,
                4.0 * t1.y + 2.0 * xv * t1.z - t0.z,
            );
            s += c[base + k] * t2;
            t0 = t1;
            t1 = t2;
        }
        acc += s.x;
        for (var a = 0u; a < nd; a++) {
            let d1 = x[xi + 1u + a];
            let d2 = x[xi + 1u + nd + a];
            y[out + 1u + a] += s.y * d1;
            y[out + 1u + nd + a] += s.z * d1 * d1 + s.y * d2;
        }
    }
    y[out] = acc;
}

// Mean and biased variance over the n features of a sample's value channel (stride ch).
fn value_stats(row: u32, n: u32, ch: u32) -> vec2<f32> {
    let nf = f32(n);
    var m = 0.0;
    for (var j = 0u; j < n; j++) {
        m += x[row + j * ch];
    }
    m /= nf;
    var v = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = x[row + j * ch] - m;
        v += e * e;
    }
    return vec2<f32>(m, v / nf);
}

// Along one axis (tangent channels c1, c2 of the value channel's mean m): the means of z' and z''
// and the variance's derivatives v' = 2 mean(e e'), v'' = 2 mean(e'^2 + e e'').
fn tangent_stats(row: u32, n: u32, ch: u32, c1: u32, c2: u32, m: f32) -> vec4<f32> {
    let nf = f32(n);
    var m1 = 0.0;
    var m2 = 0.0;
    for (var j = 0u; j < n; j++) {
        m1 += x[row + j * ch + c1];
        m2 += x[row + j * ch + c2];
    }
    m1 /= nf;
    m2 /= nf;
    var v1 = 0.0;
    var v2 = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = x[row + j * ch] - m;
        let e1 = x[row + j * ch + c1] - m1;
        let e2 = x[row + j * ch + c2] - m2;
        v1 += e * e1;
        v2 += e1 * e1 + e * e2;
    }
    return vec4<f32>(m1, m2, v1 * 2.0 / nf, v2 * 2.0 / nf);
}

// layernorm_tanh_forward with tangents, one invocation per sample (n_out features). Along each
// axis a, with e = z - mean z, v = mean e^2, r = (v + eps)^(-1/2), xhat = e r:
// e' = z' - mean z', v' = 2 mean(e e'), r' = -r^3 v' / 2, xhat' = e' r + e r';
// e'' = z'' - mean z'', v'' = 2 mean(e'^2 + e e''), r'' = 3 r^5 v'^2 / 4 - r^3 v'' / 2,
// xhat'' = e'' r + 2 e' r' + e r''; h = gamma xhat + beta; t = tanh h,
// t' = (1 - t^2) h', t'' = (1 - t^2) h'' - 2 t (1 - t^2) h'^2.
@compute @workgroup_size(64, 1, 1)
fn layernorm_tanh_derivatives(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = lane(gid, nwg);
    if (b >= p.batch) {
        return;
    }
    let n = p.n_out;
    let nf = f32(n);
    let nd = p.n_dir;
    let ch = 1u + 2u * nd;
    let row = b * n * ch;
    let mv = value_stats(row, n, ch);
    let m = mv.x;
    let v = mv.y;
    let r = inverseSqrt(v + LN_EPS);
    for (var j = 0u; j < n; j++) {
        let xh = (x[row + j * ch] - m) * r;
        y[row + j * ch] = tanh_clamped(xh * gamma[j] + beta[j]);
    }
    for (var a = 0u; a < nd; a++) {
        let c1 = 1u + a;
        let c2 = 1u + nd + a;
        let t = tangent_stats(row, n, ch, c1, c2, m);
        let m1 = t.x;
        let m2 = t.y;
        let v1 = t.z;
        let v2 = t.w;
        let r3 = r * r * r;
        let r1 = -0.5 * r3 * v1;
        let r2 = 0.75 * r3 * r * r * v1 * v1 - 0.5 * r3 * v2;
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            let e = x[o] - m;
            let e1 = x[o + c1] - m1;
            let e2 = x[o + c2] - m2;
            let h1 = gamma[j] * (e1 * r + e * r1);
            let h2 = gamma[j] * (e2 * r + 2.0 * e1 * r1 + e * r2);
            let tv = y[o];
            let s = 1.0 - tv * tv;
            y[o + c1] = s * h1;
            y[o + c2] = s * h2 - 2.0 * tv * s * h1 * h1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward of the forward-mode derivative pass: dy is the gradient of the (batch, n_out, 1 + 2 D)
// output channels, dx that of the input channels.

// Adjoint of cheby_forward_derivatives for the inputs, one invocation per (b, i): with
// S_q = sum_k c T_k^(q) (T'''_{k+1} = 6 T''_k + 2 x T'''_k - T'''_{k-1}) and g = dy[b, o, :],
// dx0 = sum_o g0 S1 + sum_a g1 S2 x'_a + g2 (S3 x'_a^2 + S2 x''_a), dx'_a = sum_o g1 S1 + 2 g2 S2 x'_a,
// dx''_a = sum_o g2 S1.
@compute @workgroup_size(64, 1, 1)
fn cheby_backward_derivatives_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.batch * p.n_in) {
        return;
    }
    let b = t / p.n_in;
    let i = t % p.n_in;
    let kk = p.degree + 1u;
    let nd = p.n_dir;
    let ch = 1u + 2u * nd;
    let xi = t * ch;
    let xv = x[xi];
    for (var q = 0u; q < ch; q++) {
        dx[xi + q] = 0.0;
    }
    var acc0 = 0.0;
    for (var o = 0u; o < p.n_out; o++) {
        let base = (i * p.n_out + o) * kk;
        // (T, T', T'', T''') at k - 1 and k.
        var t0 = vec4<f32>(1.0, 0.0, 0.0, 0.0);
        var t1 = vec4<f32>(xv, 1.0, 0.0, 0.0);
        var s = vec4<f32>(c[base], 0.0, 0.0, 0.0);
        if (p.degree >= 1u) {
            s += c[base + 1u] * t1;
        }
        for (var k = 2u; k <= p.degree; k++) {
            let t2 = vec4<f32>(
                2.0 * xv * t1.x - t0.x,
                2.0 * t1.x + 2.0 * xv * t1.y - t0.y,
                4.0 * t1.y + 2.0 * xv * t1.z - t0.z,
                6.0 * t1.z + 2.0 * xv * t1.w - t0.w,
            );
            s += c[base + k] * t2;
            t0 = t1;
            t1 = t2;
        }
        let go = (b * p.n_out + o) * ch;
        acc0 += dy[go] * s.y;
        for (var a = 0u; a < nd; a++) {
            let d1 = x[xi + 1u + a];
            let d2 = x[xi + 1u + nd + a];
            let g1 = dy[go + 1u + a];
            let g2 = dy[go + 1u + nd + a];
            acc0 += g1 * s.z * d1 + g2 * (s.w * d1 * d1 + s.z * d2);
            dx[xi + 1u + a] += g1 * s.y + 2.0 * g2 * s.z * d1;
            dx[xi + 1u + nd + a] += g2 * s.y;
        }
    }
    dx[xi] = acc0;
}

// Adjoint of cheby_forward_derivatives for the coefficients, first stage: per chunk ch and (i, o, k),
// y[ch, i, o, k] = sum over the chunk's samples in order of
// g0 T_k + sum_a g1 T_k' x'_a + g2 (T_k'' x'_a^2 + T_k' x''_a); sum_chunks adds the chunks.
@compute @workgroup_size(64, 1, 1)
fn cheby_backward_derivatives_coeffs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tc = lane(gid, nwg);
    if (tc >= p.n_in * p.n_out * (p.degree + 1u) * n_chunks()) {
        return;
    }
    let task = coeff_task(tc);
    let range = chunk_range(task.x);
    let i = task.y;
    let o = task.z;
    let k = task.w;
    let nd = p.n_dir;
    let ch = 1u + 2u * nd;
    var acc = 0.0;
    for (var b = range.x; b < range.y; b++) {
        let xi = (b * p.n_in + i) * ch;
        let xv = x[xi];
        var t0 = vec3<f32>(1.0, 0.0, 0.0);
        var t1 = vec3<f32>(xv, 1.0, 0.0);
        var tk = select(t1, t0, k == 0u);
        for (var j = 2u; j <= k; j++) {
            let t2 = vec3<f32>(
                2.0 * xv * t1.x - t0.x,
                2.0 * t1.x + 2.0 * xv * t1.y - t0.y,
                4.0 * t1.y + 2.0 * xv * t1.z - t0.z,
            );
            t0 = t1;
            t1 = t2;
            tk = t2;
        }
        let go = (b * p.n_out + o) * ch;
        var s = dy[go] * tk.x;
        for (var a = 0u; a < nd; a++) {
            let d1 = x[xi + 1u + a];
            let d2 = x[xi + 1u + nd + a];
            s += dy[go + 1u + a] * tk.y * d1 + dy[go + 1u + nd + a] * (tk.z * d1 * d1 + tk.y * d2);
        }
        acc += s;
    }
    y[tc] = acc;
}

// Adjoint of layernorm_tanh_derivatives, one invocation per sample (n_out features): from the
// pre-norm channels x and dy = d(output channels), writes dx = d(x channels), du = d(pre-tanh
// value) and dux = the sample's dgamma contribution for layernorm_params_backward. Reverse of the
// formulas there: per axis the adjoints of t' = s h1, t'' = s h2 - 2 t s h1^2 (s = 1 - t^2) give
// those of t, h1, h2, then of e', e'', e, r', r'', r, v', v'', and finally of e, r, v; each e
// adjoint minus its mean is the input's.
@compute @workgroup_size(64, 1, 1)
fn layernorm_tanh_derivatives_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = lane(gid, nwg);
    if (b >= p.batch) {
        return;
    }
    let n = p.n_out;
    let nf = f32(n);
    let nd = p.n_dir;
    let ch = 1u + 2u * nd;
    let row = b * n * ch;
    let mv = value_stats(row, n, ch);
    let m = mv.x;
    let v = mv.y;
    let r = inverseSqrt(v + LN_EPS);
    let r3 = r * r * r;
    // du: adjoint of t; dux: dgamma contribution; dx channel 0: adjoint of e.
    for (var j = 0u; j < n; j++) {
        du[b * n + j] = dy[row + j * ch];
        dux[b * n + j] = 0.0;
        dx[row + j * ch] = 0.0;
    }
    var rb = 0.0;
    for (var a = 0u; a < nd; a++) {
        let c1 = 1u + a;
        let c2 = 1u + nd + a;
        let t = tangent_stats(row, n, ch, c1, c2, m);
        let m1 = t.x;
        let m2 = t.y;
        let v1 = t.z;
        let v2 = t.w;
        let r1 = -0.5 * r3 * v1;
        let r2 = 0.75 * r3 * r * r * v1 * v1 - 0.5 * r3 * v2;
        var r1b = 0.0;
        var r2b = 0.0;
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            let e = x[o] - m;
            let e1 = x[o + c1] - m1;
            let e2 = x[o + c2] - m2;
            let tv = tanh_clamped(e * r * gamma[j] + beta[j]);
            let s = 1.0 - tv * tv;
            let k1 = e1 * r + e * r1;
            let k2 = e2 * r + 2.0 * e1 * r1 + e * r2;
            let h1 = gamma[j] * k1;
            let h2 = gamma[j] * k2;
            let o1 = dy[o + c1];
            let o2 = dy[o + c2];
            let sb = o1 * h1 + o2 * (h2 - 2.0 * tv * h1 * h1);
            du[b * n + j] += -2.0 * s * h1 * h1 * o2 - 2.0 * tv * sb;
            let h1b = o1 * s - 4.0 * tv * s * h1 * o2;
            let h2b = o2 * s;
            dux[b * n + j] += h1b * k1 + h2b * k2;
            let g1 = h1b * gamma[j];
            let g2 = h2b * gamma[j];
            dx[o + c1] = g1 * r + 2.0 * g2 * r1;
            dx[o + c2] = g2 * r;
            dx[o] += g1 * r1 + g2 * r2;
            rb += g1 * e1 + g2 * e2;
            r1b += g1 * e + 2.0 * g2 * e1;
            r2b += g2 * e;
        }
        rb += r2b * (3.75 * r3 * r * v1 * v1 - 1.5 * r * r * v2) - 1.5 * r * r * v1 * r1b;
        let v1b = 1.5 * r3 * r * r * v1 * r2b - 0.5 * r3 * r1b;
        let v2b = -0.5 * r3 * r2b;
        var mb1 = 0.0;
        var mb2 = 0.0;
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            let e = x[o] - m;
            let e1 = x[o + c1] - m1;
            let e2 = x[o + c2] - m2;
            dx[o] += 2.0 / nf * (v1b * e1 + v2b * e2);
            let b1 = dx[o + c1] + 2.0 / nf * v1b * e + 4.0 / nf * v2b * e1;
            let b2 = dx[o + c2] + 2.0 / nf * v2b * e;
            dx[o + c1] = b1;
            dx[o + c2] = b2;
            mb1 += b1;
            mb2 += b2;
        }
        mb1 /= nf;
        mb2 /= nf;
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            dx[o + c1] -= mb1;
            dx[o + c2] -= mb2;
        }
    }
    for (var j = 0u; j < n; j++) {
        let o = row + j * ch;
        let e = x[o] - m;
        let tv = tanh_clamped(e * r * gamma[j] + beta[j]);
        let h0b = du[b * n + j] * (1.0 - tv * tv);
        du[b * n + j] = h0b;
        dux[b * n + j] += h0b * e * r;
        dx[o] += h0b * gamma[j] * r;
        rb += h0b * gamma[j] * e;
    }
    let vb = -0.5 * r3 * rb;
    var mb = 0.0;
    for (var j = 0u; j < n; j++) {
        let o = row + j * ch;
        let eb = dx[o] + 2.0 / nf * vb * (x[o] - m);
        dx[o] = eb;
        mb += eb;
    }
    mb /= nf;
    for (var j = 0u; j < n; j++) {
        dx[row + j * ch] -= mb;
    }
}
