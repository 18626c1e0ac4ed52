// Training losses (see src/ops/loss.rs), each forward next to its backward.
//
//   loss_ab   per-pixel offset A and modulation B of every laser, estimated from the frame once
//             per frame: A = mean_k I_k, B = (2/N)·sqrt(S² + C²), S = Σ_k I_k sin δ_k,
//             C = Σ_k I_k cos δ_k. Output f32 `ab[((img·L + l)·2 + {0: A, 1: B})·plane + px]`.
//   physics   the physics-consistency loss of a height map h `[n, 1, h, w]` (storage T) against a
//             raw frame I `[n, L·N, h, w]` (f32, channel `laser * N + bucket`):
//               mean_{img,l,k,px} (A + B·cos θ − I)² + w_s·mean_{img,px} (∇²h)²,
//               θ = 4π·h/λ_l + δ_k, ∇² the 5-point Laplacian with zero padding.
//             One invocation per pixel; each workgroup writes its partial sums (data, Laplacian²)
//             to `partials[2·wg]`, `partials[2·wg + 1]` (a fixed tree, so the value is
//             deterministic). With `p.grad = 1` it also writes, in T,
//               dL/dh · scale[0] · p.weight,
//               dL/dh = (2/M)·Σ_{l,k} r·(−B·sin θ)·(4π/λ_l) + w_s·(2/P)·∇²(∇²h)
//             (the zero-padded Laplacian is self-adjoint).
//   mse       supervised mean((h − truth)²), truth f32; the same partials and gradient layout.
//   residual  the residual model's supervised loss of its U-Net output u (T): the height is
//             hc + bound·tanh(u) with hc the classical height (f32, in `frame`), and
//               L = (1/P)·Σ_valid ω·(hc + bound·tanh(u) − truth)²
//             over the pixels where hc and truth are finite and |hc − truth| < cutoff (P = every
//             pixel; the others add 0 and get a zero gradient), ω the pixel's weight (f32, in
//             `pixel_weight`); dL/du = (2/P)·ω·r·bound·(1 − tanh²u), with
//             1 − tanh²u = 4e/(1 + e)², e = exp(−2|u|), exact for any |u|.
//   reduce    second pass: one workgroup sums the partials into
//             value = [total, data, w_s·mean(∇²h)², mean(∇²h)²] (f32).
//
// Storage T, arithmetic f32. The phase is formed in turns (2π = 1) as in synth.wgsl: h and 2/λ
// are split into 12-bit leading parts so the large product is exact and its integer part is
// dropped exactly; cos and sin come from one range reduction and Cephes polynomials (about 1e-7
// absolute), so heights of ±100 µm lose nothing to the built-in (loosely specified) cos/sin.
// The Laplacians are sums of neighbour differences, which stay accurate on smooth surfaces with a
// large offset.

struct LossParams {
    n: u32,
    h: u32,
    w: u32,
    lasers: u32,
    buckets: u32,
    // 1: A, B per pixel from `ab`; 0: the constants `a`, `b`.
    per_pixel: u32,
    // 1: write the gradient.
    grad: u32,
    // Elements (mse) or partial sums (reduce).
    count: u32,
    a: f32,
    b: f32,
    // w_s.
    w_smooth: f32,
    // Raw intensity = frame value × frame_scale.
    frame_scale: f32,
    // 1 / M (data term elements; mse elements).
    inv_m: f32,
    // 1 / P (smoothness term elements).
    inv_p: f32,
    // Host multiplier of the gradient (e.g. 1/N for N accumulated micro-batches).
    weight: f32,
    // The residual loss's bound and cutoff (µm).
    bound: f32,
    cutoff: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> hgt: array<T>;
@group(0) @binding(2) var<storage, read> frame: array<f32>;
// Per laser [2/λ hi, 2/λ lo, 4π/λ, 0], then per bucket [k/N, cos δ_k, sin δ_k, 0].
@group(0) @binding(3) var<storage, read> consts: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> ab: array<f32>;
@group(0) @binding(5) var<storage, read> scale: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<T>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;
@group(0) @binding(8) var<storage, read_write> ab_out: array<f32>;
@group(0) @binding(9) var<storage, read> truth: array<f32>;
@group(0) @binding(10) var<storage, read_write> value: array<f32>;
@group(0) @binding(11) var<storage, read> pixel_weight: array<f32>;

// h at (y, x) of the image starting at `base`, zero outside.
fn height_at(base: u32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w)) {
        return 0.0;
    }
    return f32(hgt[base + u32(y) * p.w + u32(x)]);
}

// The 5-point Laplacian at an in-range (y, x), as a sum of neighbour differences.
fn laplacian(base: u32, y: i32, x: i32) -> f32 {
    let c = height_at(base, y, x);
    return ((height_at(base, y - 1, x) - c) + (height_at(base, y + 1, x) - c))
        + ((height_at(base, y, x - 1) - c) + (height_at(base, y, x + 1) - c));
}

// The Laplacian field, zero outside the image.
fn laplacian_at(base: u32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w)) {
        return 0.0;
    }
    return laplacian(base, y, x);
}

// Tree-sum (a, b) over the workgroup in a fixed order (lib/reduce.wgsl); every invocation gets
// the sums. Must be reached in uniform control flow.
fn tree_sum2(li: u32, a: f32, b: f32) -> vec2<f32> {
    return wg_sum(li, vec4<f32>(a, b, 0.0, 0.0)).xy;
}

// Tree-sum (a, b) over the workgroup and write them to partials[2·wg], partials[2·wg + 1] of
// its workgroup wg. Must be reached in uniform control flow.
fn workgroup_partials(lane: Lane, a: f32, b: f32) {
    let r = tree_sum2(lane.li, a, b);
    let wg = group_index(lane);
    if (lane.li == 0u) {
        partials[2u * wg] = r.x;
        partials[2u * wg + 1u] = r.y;
    }
}

@compute @workgroup_size(256, 1, 1)
fn loss_ab(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= p.n * plane) {
        return;
    }
    let img = i / plane;
    let px = i % plane;
    let nb = p.buckets;
    for (var l = 0u; l < p.lasers; l++) {
        var s = 0.0;
        var c = 0.0;
        var sum = 0.0;
        for (var k = 0u; k < nb; k++) {
            let v = frame[((img * p.lasers + l) * nb + k) * plane + px] * p.frame_scale;
            let d = consts[p.lasers + k];
            c += v * d.y;
            s += v * d.z;
            sum += v;
        }
        let o = (img * p.lasers + l) * 2u * plane + px;
        ab_out[o] = sum / f32(nb);
        ab_out[o + plane] = 2.0 / f32(nb) * sqrt(s * s + c * c);
    }
}

@compute @workgroup_size(256, 1, 1)
fn physics(lane: Lane) {
    let i = flat_index(lane.gid, lane.nwg);
    let plane = p.h * p.w;
    var data = 0.0;
    var lap2 = 0.0;
    if (i < p.n * plane) {
        let img = i / plane;
        let px = i % plane;
        let y = i32(px / p.w);
        let x = i32(px % p.w);
        let base = img * plane;
        let hv = f32(hgt[i]);
        let nb = p.buckets;
        var g = 0.0;
        for (var l = 0u; l < p.lasers; l++) {
            let cl = consts[l];
            let f = fringe_turns(hv, cl.x, cl.y);
            var a = p.a;
            var b = p.b;
            if (p.per_pixel != 0u) {
                let o = (img * p.lasers + l) * 2u * plane + px;
                a = ab[o];
                b = ab[o + plane];
            }
            var gl = 0.0;
            for (var k = 0u; k < nb; k++) {
                let cs = cos_sin_turns(f + consts[p.lasers + k].x);
                let iv = frame[((img * p.lasers + l) * nb + k) * plane + px] * p.frame_scale;
                let r = (a - iv) + b * cs.x;
                data += r * r;
                gl += r * cs.y;
            }
            g -= b * cl.z * gl;
        }
        let lap = laplacian(base, y, x);
        lap2 = lap * lap;
        if (p.grad != 0u) {
            var d = 2.0 * p.inv_m * g;
            if (p.w_smooth != 0.0) {
                let bilap = ((laplacian_at(base, y - 1, x) - lap) + (laplacian_at(base, y + 1, x) - lap))
                    + ((laplacian_at(base, y, x - 1) - lap) + (laplacian_at(base, y, x + 1) - lap));
                d += p.w_smooth * 2.0 * p.inv_p * bilap;
            }
            grad[i] = T(d * scale[0] * p.weight);
        }
    }
    workgroup_partials(lane, data, lap2);
}

@compute @workgroup_size(256, 1, 1)
fn mse(lane: Lane) {
    let i = flat_index(lane.gid, lane.nwg);
    var se = 0.0;
    if (i < p.count) {
        let e = f32(hgt[i]) - truth[i];
        se = e * e;
        if (p.grad != 0u) {
            grad[i] = T(2.0 * p.inv_m * e * scale[0] * p.weight);
        }
    }
    workgroup_partials(lane, se, 0.0);
}

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn residual(lane: Lane) {
    let i = flat_index(lane.gid, lane.nwg);
    var se = 0.0;
    if (i < p.count) {
        let hc = frame[i];
        let t = truth[i];
        let u = f32(hgt[i]);
        let e = exp(-2.0 * abs(u));
        let th = sign(u) * (1.0 - e) / (1.0 + e);
        var d = 0.0;
        if (is_finite(hc) && is_finite(t) && abs(hc - t) < p.cutoff) {
            let r = (hc - t) + p.bound * th;
            let wt = pixel_weight[i];
            se = wt * r * r;
            d = 2.0 * p.inv_m * wt * r * p.bound * (4.0 * e / ((1.0 + e) * (1.0 + e)));
        }
        if (p.grad != 0u) {
            grad[i] = T(d * scale[0] * p.weight);
        }
    }
    workgroup_partials(lane, se, 0.0);
}

@compute @workgroup_size(256, 1, 1)
fn reduce(@builtin(local_invocation_index) li: u32) {
    var a = 0.0;
    var b = 0.0;
    for (var j = li; j < p.count; j += WG) {
        a += partials[2u * j];
        b += partials[2u * j + 1u];
    }
    let r = tree_sum2(li, a, b);
    if (li == 0u) {
        let data = r.x * p.inv_m;
        let lap2 = r.y * p.inv_p;
        value[0] = data + p.w_smooth * lap2;
        value[1] = data;
        value[2] = p.w_smooth * lap2;
        value[3] = lap2;
    }
}
