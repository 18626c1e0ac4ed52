// Classical multi-wavelength PSI height solver: one invocation per pixel (1-D over the h*w plane,
// folded by lib/grid.wgsl's flat_index), z = image index in the batch.
//
// Input `frame` is f32 `[n, L*N, h, w]` (channel `laser * N + bucket`), output f32
// `[n, out_c, h, w]`: height (µm), then fringe contrast if out_c == 2. The `T` alias of the
// prelude is unused: heights need f32.
//
// Everything is done in "turns" (fringe units, 1 turn = 2π) so no large angle is ever formed:
//   f_l = atan2(-S_l, C_l) / 2π in (-0.5, 0.5]      the wrapped phase of laser l
//   u   = m + f_1 = 2h / λ_1                         candidate height h_m of the first laser
//   t_l = r_l * u - f_l, r_l = λ_1 / λ_l             laser l's fringe count at h_m minus its phase
//   cost(m) = Σ_{l>0} (t_l - round(t_l))²            (turns²; the argmin equals the radian cost's)
//   h = (1/L) Σ_l (λ_l / 2) (round(t_l) + f_l)
// `consts` (from the host) holds per laser [λ/2 hi, λ/2 lo, r hi, r lo] where `hi` keeps 12
// significant bits, so hi * m is exact for |m| < 4096 and the large parts of t_l and h are
// formed without rounding; then [cos δ_k, sin δ_k] for k < N.

struct ClassicalParams {
    lasers: u32,
    buckets: u32,
    h: u32,
    w: u32,
    out_c: u32,
    m_min: i32,
    m_max: i32,
    _pad0: u32,
    // Height range in turns of the first laser: 2 hmin / λ_1, 2 hmax / λ_1.
    u_min: f32,
    u_max: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ClassicalParams;
@group(0) @binding(1) var<storage, read> frame: array<f32>;
@group(0) @binding(2) var<storage, read> consts: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const MAX_LASERS: u32 = 16u;
const PI: f32 = 3.14159265358979;
const INV_TWO_PI: f32 = 0.159154943091895;
const TAN_PI_8: f32 = 0.414213562373095;
const BIG: f32 = 3.0e38;

// atan(t) for t in [0, 1]: Cephes' atanf (range reduction at tan(π/8), degree-9 odd polynomial),
// about 2e-7 relative error. The builtin atan2 may be as coarse as 4096 ulp by the WGSL spec.
fn atan_unit(t: f32) -> f32 {
    var x = t;
    var y0 = 0.0;
    if (x > TAN_PI_8) {
        y0 = 0.25 * PI;
        x = (x - 1.0) / (x + 1.0);
    }
    let z = x * x;
    let poly = (((0.0805374449538 * z - 0.138776856032) * z + 0.199777106478) * z - 0.333329491539) * z;
    return y0 + (poly * x + x);
}

// atan2(y, x) / 2π in [-0.5, 0.5]; 0 for (0, 0).
fn turns(y: f32, x: f32) -> f32 {
    let ax = abs(x);
    let ay = abs(y);
    var a = 0.0;
    if (ay > ax) {
        a = 0.5 * PI - atan_unit(ax / ay);
    } else if (ax > 0.0) {
        a = atan_unit(ay / ax);
    }
    if (x < 0.0) {
        a = PI - a;
    }
    if (y < 0.0) {
        a = -a;
    }
    return a * INV_TWO_PI;
}

// r_l * (m + f1) - f_l split as (integer part, remainder in about [-0.5, 0.5]), summing to it.
fn fringe(l: u32, m: i32, f1: f32, fl: f32) -> vec2<f32> {
    let r_hi = consts[4u * l + 2u];
    let r_lo = consts[4u * l + 3u];
    let fm = f32(m);
    let a = r_hi * fm; // exact
    let ia = round(a);
    let d = (a - ia) + (r_lo * fm + (r_hi + r_lo) * f1 - fl);
    let id = round(d);
    return vec2<f32>(ia + id, d - id);
}

@compute @workgroup_size(256, 1, 1)
fn classical(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= plane) {
        return;
    }
    let nl = min(p.lasers, MAX_LASERS);
    let nb = p.buckets;
    let trig = 4u * nl;
    let base = gid.z * nl * nb * plane + i;

    // Wrapped phase (in turns) and fringe contrast of each laser.
    var phi: array<f32, 16>;
    var quality = 0.0;
    for (var l = 0u; l < nl; l++) {
        var s = 0.0;
        var c = 0.0;
        var sum = 0.0;
        for (var k = 0u; k < nb; k++) {
            let v = frame[base + (l * nb + k) * plane];
            c += v * consts[trig + 2u * k];
            s += v * consts[trig + 2u * k + 1u];
            sum += v;
        }
        phi[l] = turns(-s, c);
        if (sum != 0.0) {
            quality += 2.0 * sqrt(s * s + c * c) / sum;
        }
    }
    quality /= f32(nl);

    // Exhaustive search over the first laser's fringe orders; candidates outside the height range
    // only win when no candidate is inside it (a range narrower than one fringe). Ties: first.
    let f1 = phi[0];
    var best_m = p.m_min;
    var best_cost = BIG;
    var best_outside = true;
    for (var m = p.m_min; m <= p.m_max; m++) {
        let u = f32(m) + f1;
        let outside = u < p.u_min || u > p.u_max;
        var cost = 0.0;
        for (var l = 1u; l < nl; l++) {
            let d = fringe(l, m, f1, phi[l]).y;
            cost += d * d;
        }
        if ((best_outside && !outside) || (outside == best_outside && cost < best_cost)) {
            best_m = m;
            best_cost = cost;
            best_outside = outside;
        }
    }

    // Refine: every laser's own fringe order at the chosen height, then the mean of their heights.
    // The large exact parts (λ/2 hi * order) are summed apart from the small ones.
    let fm = f32(best_m);
    var big = consts[0] * fm;
    var small = consts[1] * fm + (consts[0] + consts[1]) * f1;
    for (var l = 1u; l < nl; l++) {
        let half_hi = consts[4u * l];
        let half_lo = consts[4u * l + 1u];
        let order = fringe(l, best_m, f1, phi[l]).x;
        big += half_hi * order;
        small += half_lo * order + (half_hi + half_lo) * phi[l];
    }
    let height = (big + small) / f32(nl);

    let o = gid.z * p.out_c * plane + i;
    out[o] = height;
    if (p.out_c > 1u) {
        out[o + plane] = quality;
    }
}
