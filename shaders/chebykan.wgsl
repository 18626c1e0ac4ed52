// Scaled-cPIKAN (Chebyshev Kolmogorov-Arnold network) layers and their backward, always in f32
// (the precision prelude's T is not used: these models are small and need the precision).
//
// Layouts (C-order, batch-major): activations (batch, features); Chebyshev coefficients as
// PyTorch's (n_in, n_out, degree + 1); LayerNorm weight / bias (features).
// Forward-mode input derivatives along D = p.n_dir > 0 directions: activations are then
// (batch, features, 1 + 2 D), channel 0 the value, 1 + a its derivative along physical axis a,
// 1 + D + a its second derivative along a; the backward kernels take the gradients of those
// channels. affine_scale, cheby_backward_coeffs and layernorm_tanh_forward serve both (D = 0: the
// values alone); cheby_forward, cheby_backward_input and layernorm_tanh_backward are the values'
// own kernels (a cheaper loop, or another formula) beside their *_derivatives twins.
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

// Channels per feature of a derivative activation: the value, D first and D second derivatives.
fn n_channels() -> u32 {
    return 1u + 2u * p.n_dir;
}

// The tangents along axis a of the feature whose channels start at x[xi]: (first, second
// derivative).
fn tangents(xi: u32, a: u32) -> vec2<f32> {
    return vec2<f32>(x[xi + 1u + a], x[xi + 1u + p.n_dir + a]);
}

// The same for the output gradient dy.
fn dy_tangents(go: u32, a: u32) -> vec2<f32> {
    return vec2<f32>(dy[go + 1u + a], dy[go + 1u + p.n_dir + a]);
}

// ---------------------------------------------------------------------------------------------
// Batch reductions.

// Chunks of p.chunk samples covering the batch (at least one).
fn n_chunks() -> u32 {
    return max((p.batch + p.chunk - 1u) / p.chunk, 1u);
}

// The samples of chunk ch: [first, end) as (x, y).
fn chunk_range(ch: u32) -> vec2<u32> {
    let lo = ch * p.chunk;
    return vec2<u32>(lo, min(lo + p.chunk, p.batch));
}

// Invocations of a first-stage coefficient reduction: chunks × (n_in, n_out, degree + 1).
fn n_coeff_tasks() -> u32 {
    return p.n_in * p.n_out * (p.degree + 1u) * n_chunks();
}

// Where the degree + 1 coefficients of edge (i, o) start in c.
fn coeff_base(i: u32, o: u32) -> u32 {
    return (i * p.n_out + o) * (p.degree + 1u);
}

// Invocation tc of a first-stage coefficient reduction: (chunk, i, o, k).
fn coeff_task(tc: u32) -> vec4<u32> {
    let kk = p.degree + 1u;
    let np = p.n_in * p.n_out * kk;
    let t = tc % np;
    let io = t / kk;
    return vec4<u32>(tc / np, io / p.n_out, io % p.n_out, t % kk);
}

// Second stage of a batch reduction: sum_ch x[ch, t] over the n_chunks() partials of len values
// each, in chunk order.
fn chunk_sum(t: u32, len: u32) -> f32 {
    var acc = 0.0;
    for (var ch = 0u; ch < n_chunks(); ch++) {
        acc += x[ch * len + t];
    }
    return acc;
}

// dw[t] = chunk_sum(t, n_out).
@compute @workgroup_size(64, 1, 1)
fn sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.n_out) {
        return;
    }
    dw[t] = chunk_sum(t, p.n_out);
}

// ---------------------------------------------------------------------------------------------
// Affine input scaling.

// Coordinate i % n_in of sample i / n_in in physical units: x[i], or with use_grid the pixel's
// column (coordinate 0) or row (coordinate 1).
fn coordinate(i: u32) -> f32 {
    if (p.use_grid != 0u) {
        let b = i / p.n_in;
        return f32(select(b / p.grid_w, b % p.grid_w, i % p.n_in == 0u));
    }
    return x[i];
}

// max_d - min_d of coordinate d (c holds the n_in minima, then the n_in maxima).
fn domain_span(d: u32) -> f32 {
    return c[p.n_in + d] - c[d];
}

// Coordinate i mapped to [-1, 1]: 2 (v - min) / (max - min) - 1.
fn scaled_coordinate(i: u32) -> f32 {
    let d = i % p.n_in;
    return 2.0 * (coordinate(i) - c[d]) / domain_span(d) - 1.0;
}

// y = scaled_coordinate(i) per (sample, coordinate), and with D = n_dir > 0 (D = n_in) the
// tangents: d xhat_j / d x_a = 2 / (max_j - min_j) if a == j, else 0; second derivatives 0.
@compute @workgroup_size(64, 1, 1)
fn affine_scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.batch * p.n_in) {
        return;
    }
    let d = i % p.n_in;
    let nd = p.n_dir;
    let o = i * n_channels();
    y[o] = scaled_coordinate(i);
    for (var a = 0u; a < nd; a++) {
        y[o + 1u + a] = select(0.0, 2.0 / domain_span(d), a == d);
        y[o + 1u + nd + a] = 0.0;
    }
}

// ---------------------------------------------------------------------------------------------
// Chebyshev layers.

// One step of the recurrences: (T, T', T'', T''') at k + 1 from t1 (at k) and t0 (at k - 1):
// T_{k+1} = 2 x T_k - T_{k-1}, T'_{k+1} = 2 T_k + 2 x T'_k - T'_{k-1},
// T''_{k+1} = 4 T'_k + 2 x T''_k - T''_{k-1}, T'''_{k+1} = 6 T''_k + 2 x T'''_k - T'''_{k-1}.
// Kernels that need fewer derivatives use the first components (the others are dead code).
fn cheby_next(xv: f32, t1: vec4<f32>, t0: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(
        2.0 * xv * t1.x - t0.x,
        2.0 * t1.x + 2.0 * xv * t1.y - t0.y,
        4.0 * t1.y + 2.0 * xv * t1.z - t0.z,
        6.0 * t1.z + 2.0 * xv * t1.w - t0.w,
    );
}

// (T_k, T_k', T_k'', T_k''') at xv.
fn cheby_at(k: u32, xv: f32) -> vec4<f32> {
    var t0 = vec4<f32>(1.0, 0.0, 0.0, 0.0);
    var t1 = vec4<f32>(xv, 1.0, 0.0, 0.0);
    var tk = select(t1, t0, k == 0u);
    for (var j = 2u; j <= k; j++) {
        let t2 = cheby_next(xv, t1, t0);
        t0 = t1;
        t1 = t2;
        tk = t2;
    }
    return tk;
}

// sum_k c[base + k] T_k(xv), k = 0..=degree: cheby_sums(base, xv).x in scalars (the plain forward
// is the hot loop of evaluating a network on a frame, and not every compiler drops the dead
// vector components: llvmpipe then spends ~20 % more).
fn cheby_sum(base: u32, xv: f32) -> f32 {
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
    return s;
}

// S_q = sum_k c[base + k] T_k^(q)(xv), k = 0..=degree, for q = 0..3 (the value, first, second
// and third derivative).
fn cheby_sums(base: u32, xv: f32) -> vec4<f32> {
    var t0 = vec4<f32>(1.0, 0.0, 0.0, 0.0);
    var t1 = vec4<f32>(xv, 1.0, 0.0, 0.0);
    var s = vec4<f32>(c[base], 0.0, 0.0, 0.0);
    if (p.degree >= 1u) {
        s += c[base + 1u] * t1;
    }
    for (var k = 2u; k <= p.degree; k++) {
        let t2 = cheby_next(xv, t1, t0);
        s += c[base + k] * t2;
        t0 = t1;
        t1 = t2;
    }
    return s;
}

// y[b, o] = sum_i sum_k c[i, o, k] T_k(x[b, i]).
@compute @workgroup_size(64, 1, 1)
fn cheby_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.batch * p.n_out) {
        return;
    }
    let b = t / p.n_out;
    let o = t % p.n_out;
    var acc = 0.0;
    for (var i = 0u; i < p.n_in; i++) {
        acc += cheby_sum(coeff_base(i, o), x[b * p.n_in + i]);
    }
    y[t] = acc;
}

// cheby_forward with tangents: per input i, S0 = sum_k c T_k, S1 = sum_k c T_k', S2 = sum_k c T_k''
// (cheby_sums); then y = sum_i S0, y'_a = sum_i S1 x'_a, y''_a = sum_i S2 x'_a^2 + S1 x''_a.
// One invocation per (b, o).
@compute @workgroup_size(64, 1, 1)
fn cheby_forward_derivatives(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.batch * p.n_out) {
        return;
    }
    let b = t / p.n_out;
    let o = t % p.n_out;
    let nd = p.n_dir;
    let ch = n_channels();
    let out = t * ch;
    for (var q = 0u; q < ch; q++) {
        y[out + q] = 0.0;
    }
    var acc = 0.0;
    for (var i = 0u; i < p.n_in; i++) {
        let xi = (b * p.n_in + i) * ch;
        let s = cheby_sums(coeff_base(i, o), x[xi]);
        acc += s.x;
        for (var a = 0u; a < nd; a++) {
            let d = tangents(xi, a);
            y[out + 1u + a] += s.y * d.x;
            y[out + 1u + nd + a] += s.z * d.x * d.x + s.y * d.y;
        }
    }
    y[out] = acc;
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
    let xv = x[t];
    var acc = 0.0;
    for (var o = 0u; o < p.n_out; o++) {
        let base = coeff_base(i, o);
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

// Adjoint of cheby_forward_derivatives for the inputs (dy, dx: the gradients of its output and
// input channels), one invocation per (b, i): with
// S_q = sum_k c T_k^(q) (cheby_sums) and g = dy[b, o, :],
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
    let nd = p.n_dir;
    let ch = n_channels();
    let xi = t * ch;
    let xv = x[xi];
    for (var q = 0u; q < ch; q++) {
        dx[xi + q] = 0.0;
    }
    var acc0 = 0.0;
    for (var o = 0u; o < p.n_out; o++) {
        let s = cheby_sums(coeff_base(i, o), xv);
        let go = (b * p.n_out + o) * ch;
        acc0 += dy[go] * s.y;
        for (var a = 0u; a < nd; a++) {
            let d = tangents(xi, a);
            let g = dy_tangents(go, a);
            acc0 += g.x * s.z * d.x + g.y * (s.w * d.x * d.x + s.z * d.y);
            dx[xi + 1u + a] += g.x * s.y + 2.0 * g.y * s.z * d.x;
            dx[xi + 1u + nd + a] += g.y * s.y;
        }
    }
    dx[xi] = acc0;
}

// dc[i, o, k] = sum_b dy[b, o] T_k(x[b, i]), and with D > 0 also the tangent terms
// sum_a g1 T_k' x'_a + g2 (T_k'' x'_a^2 + T_k' x''_a) (g = dy[b, o, :]). First stage: per chunk ch,
// y[ch, i, o, k] = the sum over the chunk's samples in order; one invocation per (chunk, i, o, k);
// sum_chunks adds the chunks.
@compute @workgroup_size(64, 1, 1)
fn cheby_backward_coeffs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tc = lane(gid, nwg);
    if (tc >= n_coeff_tasks()) {
        return;
    }
    let task = coeff_task(tc);
    let range = chunk_range(task.x);
    let ch = n_channels();
    var acc = 0.0;
    for (var b = range.x; b < range.y; b++) {
        let xi = (b * p.n_in + task.y) * ch;
        let tk = cheby_at(task.w, x[xi]);
        let go = (b * p.n_out + task.z) * ch;
        var s = dy[go] * tk.x;
        for (var a = 0u; a < p.n_dir; a++) {
            let d = tangents(xi, a);
            let g = dy_tangents(go, a);
            s += g.x * tk.y * d.x + g.y * (tk.z * d.x * d.x + tk.y * d.y);
        }
        acc += s;
    }
    y[tc] = acc;
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + tanh.

// Mean and 1 / sqrt(biased variance + eps) of the n values x[row + j * stride] (two passes).
fn ln_stats(row: u32, n: u32, stride: u32) -> vec2<f32> {
    let nf = f32(n);
    var m = 0.0;
    for (var j = 0u; j < n; j++) {
        m += x[row + j * stride];
    }
    m /= nf;
    var v = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = x[row + j * stride] - m;
        v += e * e;
    }
    v /= nf;
    return vec2<f32>(m, inverseSqrt(v + LN_EPS));
}

// tanh with the argument clamped (|u| >= 15 is +-1 in f32), so no backend's exp overflows.
fn tanh_clamped(u: f32) -> f32 {
    return tanh(clamp(u, -15.0, 15.0));
}

// Feature j's output for its normalised value xh: tanh(xh gamma_j + beta_j).
fn ln_tanh(xh: f32, j: u32) -> f32 {
    return tanh_clamped(xh * gamma[j] + beta[j]);
}

// One sample's LayerNorm statistics along one axis (axis_stats).
struct AxisStats {
    // The channels of the first and the second derivative.
    c1: u32,
    c2: u32,
    // The means of z' and z''.
    m1: f32,
    m2: f32,
    // The variance's derivatives v' = 2 mean(e e'), v'' = 2 mean(e'^2 + e e'').
    v1: f32,
    v2: f32,
    // Those of r = (v + eps)^(-1/2): r' = -r^3 v' / 2, r'' = 3 r^5 v'^2 / 4 - r^3 v'' / 2.
    r1: f32,
    r2: f32,
}

// AxisStats along axis a of the n features at row (stride ch) with value mean m and r.
fn axis_stats(row: u32, n: u32, ch: u32, a: u32, m: f32, r: f32) -> AxisStats {
    let nf = f32(n);
    let c1 = 1u + a;
    let c2 = 1u + p.n_dir + a;
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
    v1 = v1 * 2.0 / nf;
    v2 = v2 * 2.0 / nf;
    let r3 = r * r * r;
    return AxisStats(c1, c2, m1, m2, v1, v2, -0.5 * r3 * v1, 0.75 * r3 * r * r * v1 * v1 - 0.5 * r3 * v2);
}

// (e, e', e'') of the feature whose value channel is x[o]: its channels minus their means.
fn deviations(o: u32, m: f32, s: AxisStats) -> vec3<f32> {
    return vec3<f32>(x[o] - m, x[o + s.c1] - s.m1, x[o + s.c2] - s.m2);
}

// (xhat', xhat'') = (e' r + e r', e'' r + 2 e' r' + e r'') for the deviations e.
fn xhat_tangents(e: vec3<f32>, r: f32, s: AxisStats) -> vec2<f32> {
    return vec2<f32>(e.y * r + e.x * s.r1, e.z * r + 2.0 * e.y * s.r1 + e.x * s.r2);
}

// y[b, :] = tanh(LayerNorm(x[b, :]) * gamma + beta) over n_out features, one invocation per
// sample; with D > 0 also the tangents. Along each axis a, with e = z - mean z, v = mean e^2,
// r = (v + eps)^(-1/2), xhat = e r:
// e' = z' - mean z', v' = 2 mean(e e'), r' = -r^3 v' / 2, xhat' = e' r + e r';
// e'' = z'' - mean z'', v'' = 2 mean(e'^2 + e e''), r'' = 3 r^5 v'^2 / 4 - r^3 v'' / 2,
// xhat'' = e'' r + 2 e' r' + e r''; h = gamma xhat + beta; t = tanh h,
// t' = (1 - t^2) h', t'' = (1 - t^2) h'' - 2 t (1 - t^2) h'^2.
@compute @workgroup_size(64, 1, 1)
fn layernorm_tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = lane(gid, nwg);
    if (b >= p.batch) {
        return;
    }
    let n = p.n_out;
    let ch = n_channels();
    let row = b * n * ch;
    let st = ln_stats(row, n, ch);
    let m = st.x;
    let r = st.y;
    for (var j = 0u; j < n; j++) {
        y[row + j * ch] = ln_tanh((x[row + j * ch] - m) * r, j);
    }
    for (var a = 0u; a < p.n_dir; a++) {
        let ax = axis_stats(row, n, ch, a, m, r);
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            let k = xhat_tangents(deviations(o, m, ax), r, ax);
            let h1 = gamma[j] * k.x;
            let h2 = gamma[j] * k.y;
            let tv = y[o];
            let s = 1.0 - tv * tv;
            y[o + ax.c1] = s * h1;
            y[o + ax.c2] = s * h2 - 2.0 * tv * s * h1 * h1;
        }
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
    let st = ln_stats(b * n, n, 1u);
    var mg = 0.0;
    var mgx = 0.0;
    for (var j = 0u; j < n; j++) {
        let o = b * n + j;
        let xh = (x[o] - st.x) * st.y;
        let a = ln_tanh(xh, j);
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

// Adjoint of layernorm_tanh_forward with D > 0, one invocation per sample (n_out features):
// from the pre-norm channels x and dy = d(output channels), writes dx = d(x channels),
// du = d(pre-tanh value) and dux = the sample's dgamma contribution for
// layernorm_params_backward. Reverse of the formulas there: per axis the adjoints of t' = s h1, t'' = s h2 - 2 t s h1^2 (s = 1 - t^2) give
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
    let ch = n_channels();
    let row = b * n * ch;
    let st = ln_stats(row, n, ch);
    let m = st.x;
    let r = st.y;
    let r3 = r * r * r;
    // du: adjoint of t; dux: dgamma contribution; dx channel 0: adjoint of e.
    for (var j = 0u; j < n; j++) {
        du[b * n + j] = dy[row + j * ch];
        dux[b * n + j] = 0.0;
        dx[row + j * ch] = 0.0;
    }
    var rb = 0.0;
    for (var a = 0u; a < p.n_dir; a++) {
        let ax = axis_stats(row, n, ch, a, m, r);
        // v', v'' and below e, e', e'' as named scalars, like the formulas: llvmpipe's GL compiler
        // rounds some struct-field and vector-component forms of these expressions differently.
        let v1 = ax.v1;
        let v2 = ax.v2;
        var r1b = 0.0;
        var r2b = 0.0;
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            let ee = deviations(o, m, ax);
            let e = ee.x;
            let e1 = ee.y;
            let e2 = ee.z;
            let tv = ln_tanh(e * r, j);
            let s = 1.0 - tv * tv;
            let kk = xhat_tangents(ee, r, ax);
            let k1 = kk.x;
            let k2 = kk.y;
            let h1 = gamma[j] * k1;
            let h2 = gamma[j] * k2;
            let o1 = dy[o + ax.c1];
            let o2 = dy[o + ax.c2];
            let sb = o1 * h1 + o2 * (h2 - 2.0 * tv * h1 * h1);
            du[b * n + j] += -2.0 * s * h1 * h1 * o2 - 2.0 * tv * sb;
            let h1b = o1 * s - 4.0 * tv * s * h1 * o2;
            let h2b = o2 * s;
            dux[b * n + j] += h1b * k1 + h2b * k2;
            let g1 = h1b * gamma[j];
            let g2 = h2b * gamma[j];
            dx[o + ax.c1] = g1 * r + 2.0 * g2 * ax.r1;
            dx[o + ax.c2] = g2 * r;
            dx[o] += g1 * ax.r1 + g2 * ax.r2;
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
            let ee = deviations(o, m, ax);
            let e = ee.x;
            let e1 = ee.y;
            let e2 = ee.z;
            dx[o] += 2.0 / nf * (v1b * e1 + v2b * e2);
            let b1 = dx[o + ax.c1] + 2.0 / nf * v1b * e + 4.0 / nf * v2b * e1;
            let b2 = dx[o + ax.c2] + 2.0 / nf * v2b * e;
            dx[o + ax.c1] = b1;
            dx[o + ax.c2] = b2;
            mb1 += b1;
            mb2 += b2;
        }
        mb1 /= nf;
        mb2 /= nf;
        for (var j = 0u; j < n; j++) {
            let o = row + j * ch;
            dx[o + ax.c1] -= mb1;
            dx[o + ax.c2] -= mb2;
        }
    }
    for (var j = 0u; j < n; j++) {
        let o = row + j * ch;
        let e = x[o] - m;
        let tv = ln_tanh(e * r, j);
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
    dw[j] = chunk_sum(j, 2u * n);
    db[j] = chunk_sum(n + j, 2u * n);
}
