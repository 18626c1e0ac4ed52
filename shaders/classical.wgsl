// Classical multi-wavelength PSI height solver: one invocation per pixel (1-D over the h*w plane,
// folded by lib/grid.wgsl's flat_index), z = image index in the batch. Launcher and f64 reference:
// src/ops/classical/ (its module docs state the method).
//
// Input `frame` is f32 `[n, L*N, h, w]` (channel `laser * N + bucket`), output f32
// `[n, out_c, h, w]`: height (µm, NaN when the pixel cannot be solved), then the fringe contrast
// if asked, then the reason code (0 ok, 1 low modulation, 2 saturated, 3 non-finite input,
// 4 unresolved) if asked. The `T` alias of the prelude is unused: heights need f32.
//
// Everything is done in "turns" (fringe units, 1 turn = 2π) so no large angle is ever formed:
//   f_l = atan2(B sin φ, B cos φ) / 2π in (-0.5, 0.5]  the wrapped phase of laser l
//   u   = m + f_a = 2h / λ_a                           candidate height h_m of the anchor laser a
//   t_l = r_al * u - f_l, r_al = λ_a / λ_l             laser l's fringe count at h_m minus its phase
//   per-pixel: cost(m) = Σ_{l≠a} (t_l - round(t_l))²; h = mean_l (λ_l / 2) (round(t_l) + f_l)
//   weighted:  d_l = h_l - h_a = -(λ_l / 2)(t_l - round(t_l)), h̄ - h_a = Σ w d / Σ w,
//              cost(m) = Σ w (d - d̄)²; h = h_a + d̄
// `consts` (from the host, see `constants` in the launcher) holds per laser LASER_STRIDE values
// [λ/2 hi, λ/2 lo, u_min, u_max, m_min, m_max, 1/λ², shifts] where `hi` keeps 12 significant
// bits, so hi * m is exact for |m| < 4096 and the large parts of t_l and h are formed without
// rounding; then [r hi, r lo] per laser pair (a, l); then [cos δ, sin δ] per laser and bucket.

struct ClassicalParams {
    lasers: u32,
    buckets: u32,
    h: u32,
    w: u32,
    out_c: u32,
    // WEIGHTED | NOMINAL | QUALITY | REASON | FIRST_PASS (robust) | EXHAUSTIVE
    flags: u32,
    _pad0: u32,
    // Robust passes: the threshold's factor over the median best cost (classical_robust.wgsl).
    decisive: f32,
    // A laser with B = 0, B < min_b or B < min_contrast * A is dropped; a bucket <= clip_lo or
    // >= clip_hi is clipped (left out of its laser's fit if the fit of all buckets agrees).
    min_b: f32,
    min_contrast: f32,
    clip_lo: f32,
    clip_hi: f32,
    // Robust noise floor (classical_robust.wgsl): median(χ²_k)/k of the per-pixel variance's k
    // degrees of freedom; the normal quantiles of the modulation test with and without the
    // neighbourhood's agreement.
    noise_median: f32,
    noise_z: f32,
    noise_z_alone: f32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ClassicalParams;
@group(0) @binding(1) var<storage, read> frame: array<f32>;
@group(0) @binding(2) var<storage, read> consts: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const MAX_LASERS: u32 = 16u;
const LASER_STRIDE: u32 = 8u;
const PI: f32 = 3.14159265358979;
const INV_TWO_PI: f32 = 0.159154943091895;
const TAN_PI_8: f32 = 0.414213562373095;
const BIG: f32 = 3.0e38;
// ops::classical::DECISIVE and phase::MIN_STEP_CONDITION.
const DECISIVE: f32 = 1.0e-3;
const MIN_STEP_CONDITION: f32 = 1.0e-3;

const WEIGHTED: u32 = 1u;
const NOMINAL: u32 = 2u;
const QUALITY: u32 = 4u;
const REASON: u32 = 8u;
const EXHAUSTIVE: u32 = 32u;
// ops::classical::prune::SLACK: the relative margin of the weighted search's bound.
const PRUNE_SLACK: f32 = 1.0e-5;

// Pixel reasons (ops::classical::Reason); a laser's status is one of the first four (OK: usable;
// LOW: low modulation or dark; SATURATED: too few buckets kept, some at the saturation level).
const OK: u32 = 0u;
const LOW: u32 = 1u;
const SATURATED: u32 = 2u;
const NONFINITE: u32 = 3u;
const UNRESOLVED: u32 = 4u;

// Per invocation: each laser's phase (turns) and weight n·B²/λ² (0 when dropped); per-pixel
// search: 1 for the usable lasers after the anchor, else 0.
var<private> phi: array<f32, 16>;
var<private> wgt: array<f32, 16>;
var<private> keep: array<f32, 16>;
// Per laser, the residual sum of squares of its N-step fit when that fit used every bucket
// (counts², N − 3 degrees of freedom), else -1: the robust solver's noise estimate.
var<private> resid: array<f32, 16>;

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

// The bit pattern decides: WGSL lets compilers assume float comparisons never see NaN or ∞.
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn laser_const(l: u32, j: u32) -> f32 {
    return consts[LASER_STRIDE * l + j];
}

fn trig_base() -> u32 {
    return (LASER_STRIDE + 2u * p.lasers) * p.lasers;
}

// r_al * (m + fa) - fl split as (integer part, remainder in about [-0.5, 0.5]), summing to it.
fn fringe(a: u32, l: u32, m: i32, fa: f32, fl: f32) -> vec2<f32> {
    let r = LASER_STRIDE * p.lasers + 2u * (a * p.lasers + l);
    let r_hi = consts[r];
    let r_lo = consts[r + 1u];
    let fm = f32(m);
    let x = r_hi * fm; // exact
    let ix = round(x);
    let d = (x - ix) + (r_lo * fm + (r_hi + r_lo) * fa - fl);
    let id = round(d);
    return vec2<f32>(ix + id, d - id);
}

struct LaserFit {
    status: u32,
    // B / A, 0 when A = 0.
    contrast: f32,
}

// (A, B cos φ, B sin φ, buckets used) by least squares at laser l's own steps over its buckets,
// leaving out (if `censor`) each clipped bucket that the fit `all` of every bucket predicts
// clipped too; w = 0 when fewer than 3 are left or their steps cannot separate the three.
// Rows [1, cos δ, -sin δ].
fn glsq(base: u32, plane: u32, l: u32, all: vec3<f32>, censor: bool) -> vec4<f32> {
    let nb = p.buckets;
    let trig = trig_base() + 2u * l * nb;
    var m00 = 0.0;
    var m01 = 0.0;
    var m02 = 0.0;
    var m11 = 0.0;
    var m12 = 0.0;
    var m22 = 0.0;
    var r = vec3<f32>(0.0);
    for (var k = 0u; k < nb; k++) {
        let v = frame[base + (l * nb + k) * plane];
        let c = consts[trig + 2u * k];
        let s = -consts[trig + 2u * k + 1u];
        let predicted = all.x + all.y * c + all.z * s;
        if (censor && ((v >= p.clip_hi && predicted >= p.clip_hi) || (v <= p.clip_lo && predicted <= p.clip_lo))) {
            continue;
        }
        m00 += 1.0;
        m01 += c;
        m02 += s;
        m11 += c * c;
        m12 += c * s;
        m22 += s * s;
        r += v * vec3<f32>(1.0, c, s);
    }
    let c0 = vec3<f32>(m11 * m22 - m12 * m12, m02 * m12 - m01 * m22, m01 * m12 - m02 * m11);
    let c11 = m00 * m22 - m02 * m02;
    let c12 = m01 * m02 - m00 * m12;
    let c22 = m00 * m11 - m01 * m01;
    let det = m00 * c0.x + m01 * c0.y + m02 * c0.z;
    if (m00 < 3.0 || det < MIN_STEP_CONDITION * m00 * m00 * m00 / 4.0) {
        return vec4<f32>(0.0);
    }
    let x = vec3<f32>(dot(c0, r), c0.y * r.x + c11 * r.y + c12 * r.z, c0.z * r.x + c12 * r.y + c22 * r.z) / det;
    return vec4<f32>(x, m00);
}

// Fit laser l of the pixel whose first bucket is at `base`: phi[l], wgt[l] and its status. The
// N-step sums serve while the steps are nominal and no bucket is left out (reference::fit_laser).
fn fit_laser(base: u32, plane: u32, l: u32) -> LaserFit {
    let nb = p.buckets;
    let trig = trig_base() + 2u * l * nb;
    let nominal = (p.flags & NOMINAL) != 0u;
    var s = 0.0;
    var c = 0.0;
    var sum = 0.0;
    var sq = 0.0;
    var clipped = false;
    var top = false;
    var finite = true;
    for (var k = 0u; k < nb; k++) {
        let v = frame[base + (l * nb + k) * plane];
        finite = finite && is_finite(v);
        clipped = clipped || v <= p.clip_lo || v >= p.clip_hi;
        top = top || v >= p.clip_hi;
        c += v * consts[trig + 2u * k];
        s += v * consts[trig + 2u * k + 1u];
        sum += v;
        sq += v * v;
    }
    wgt[l] = 0.0;
    resid[l] = -1.0;
    if (!finite) {
        return LaserFit(NONFINITE, 0.0);
    }
    var n = f32(nb);
    var x = vec4<f32>(0.0);
    var sums = nominal && !clipped;
    if (!sums) {
        var all = vec3<f32>(sum / n, 2.0 * c / n, -2.0 * s / n);
        if (!nominal) {
            all = glsq(base, plane, l, all, false).xyz;
        }
        x = vec4<f32>(all, n);
        if (clipped) {
            x = glsq(base, plane, l, all, true);
        }
        sums = nominal && x.w == n;
    }
    var a = 0.0;
    var b = 0.0;
    var contrast = 0.0;
    if (sums) {
        phi[l] = turns(-s, c);
        if (sum != 0.0) {
            contrast = 2.0 * sqrt(s * s + c * c) / sum;
        }
        a = sum / n;
        b = 2.0 * sqrt(s * s + c * c) / n;
        // Σ (v − fit)² = Σ v² − N·A² − N/2·B² for nominal steps (1, cos, sin are orthogonal).
        if (nb > 3u) {
            resid[l] = max(sq - n * a * a - 0.5 * n * b * b, 0.0);
        }
    } else {
        if (x.w == 0.0) {
            return LaserFit(select(LOW, SATURATED, top), 0.0);
        }
        n = x.w;
        a = x.x;
        b = sqrt(x.y * x.y + x.z * x.z);
        phi[l] = turns(x.z, x.y);
        if (a != 0.0) {
            contrast = b / a;
        }
    }
    if (b <= 0.0 || b < p.min_b || b < p.min_contrast * a) {
        return LaserFit(LOW, contrast);
    }
    wgt[l] = n * b * b * laser_const(l, 6u);
    return LaserFit(OK, contrast);
}

// The lasers of `mask` cannot tell two heights of the range apart from anchor a: a whole-fringe
// shift of the anchor inside the range costs them under DECISIVE (reference::ambiguity).
fn ambiguous(a: u32, mask: u32, nl: u32) -> bool {
    let shifts = i32(laser_const(a, 7u));
    for (var j = 1; j <= shifts; j++) {
        var cost = 0.0;
        for (var l = 0u; l < nl; l++) {
            if (l != a && (mask & (1u << l)) != 0u) {
                let d = fringe(a, l, j, 0.0, 0.0).y;
                cost += d * d;
            }
        }
        if (cost < DECISIVE) {
            return true;
        }
    }
    return false;
}

// What the search decided: the anchor's order, its cost and the runner-up's (weighted only; a
// later spatial pass re-decides where they are close), and the reason (OK or UNRESOLVED).
struct Decision {
    m: i32,
    cost: f32,
    runner_up: f32,
    reason: u32,
}

// Per-pixel cost of the anchor's order m: Σ (t_l - round t_l)² over the usable lasers after the
// anchor (the first usable one): `keep` is 1 for those, 0 else (no branch in the hot loop).
fn residuals(a: u32, nl: u32, m: i32, fa: f32) -> f32 {
    var cost = 0.0;
    for (var l = 1u; l < nl; l++) {
        let d = fringe(a, l, m, fa, phi[l]).y;
        cost += d * d * keep[l];
    }
    return cost;
}

// The laser of `mask` other than the anchor (and after it when `after`) whose residual moves
// most from one anchor candidate to the next (|r_al − round r_al| largest, ties to the first):
// its term alone bounds a candidate's cost from below (ops::classical::prune); nl when none.
fn sharpest(a: u32, mask: u32, nl: u32, after: bool) -> u32 {
    var k = nl;
    var best = -1.0;
    for (var l = 0u; l < nl; l++) {
        if (l != a && (l > a || !after) && (mask & (1u << l)) != 0u) {
            let r = LASER_STRIDE * p.lasers + 2u * (a * p.lasers + l);
            let v = consts[r] + consts[r + 1u];
            let step = abs(v - round(v));
            if (step > best) {
                best = step;
                k = l;
            }
        }
    }
    return k;
}

// The searches skip candidates that cannot win unless told to score every one (the tests).
fn pruned() -> bool {
    return (p.flags & EXHAUSTIVE) == 0u;
}

// Per-pixel search over the anchor's orders with a fringe of margin; candidates outside the height
// range only win when no candidate is inside it (a range narrower than one fringe). Ties: first.
// Pruned: a candidate that could only win on cost is skipped when the sharpest laser's term
// alone is not below the best cost (a sum of non-negative terms only grows, in f32 too).
fn search_per_pixel(a: u32, mask: u32, nl: u32) -> Decision {
    for (var l = 0u; l < nl; l++) {
        keep[l] = select(0.0, 1.0, l > a && (mask & (1u << l)) != 0u);
    }
    let fa = phi[a];
    let m_min = i32(laser_const(a, 4u));
    let m_max = i32(laser_const(a, 5u));
    let u_min = laser_const(a, 2u);
    let u_max = laser_const(a, 3u);
    var k = nl;
    if (pruned()) {
        k = sharpest(a, mask, nl, true);
    }
    var best_m = m_min;
    var best_cost = BIG;
    var best_outside = true;
    for (var m = m_min; m <= m_max; m++) {
        let u = f32(m) + fa;
        let outside = u < u_min || u > u_max;
        if (k < nl && !(best_outside && !outside)) {
            let d = fringe(a, k, m, fa, phi[k]).y;
            if (d * d >= best_cost) {
                continue;
            }
        }
        let cost = residuals(a, nl, m, fa);
        if ((best_outside && !outside) || (outside == best_outside && cost < best_cost)) {
            best_m = m;
            best_cost = cost;
            best_outside = outside;
        }
    }
    return Decision(best_m, best_cost, BIG, OK);
}

// Per-pixel height: every usable laser's own order at the chosen height, then the mean of their
// heights. The large exact parts (λ/2 hi * order) are summed apart from the small ones.
fn height_per_pixel(a: u32, mask: u32, nl: u32, m: i32) -> f32 {
    let fa = phi[a];
    let fm = f32(m);
    var big = laser_const(a, 0u) * fm;
    var small = laser_const(a, 1u) * fm + (laser_const(a, 0u) + laser_const(a, 1u)) * fa;
    var count = 1u;
    for (var l = 0u; l < nl; l++) {
        if (l != a && (mask & (1u << l)) != 0u) {
            let half_hi = laser_const(l, 0u);
            let half_lo = laser_const(l, 1u);
            let order = fringe(a, l, m, fa, phi[l]).x;
            big += half_hi * order;
            small += half_lo * order + (half_hi + half_lo) * phi[l];
            count += 1u;
        }
    }
    return (big + small) / f32(count);
}

// Weighted: (cost, d̄) of the anchor's order m, d_l = h_l - h_a.
fn spread(a: u32, nl: u32, m: i32) -> vec2<f32> {
    let fa = phi[a];
    var sw = 0.0;
    var swd = 0.0;
    var swdd = 0.0;
    // Every laser's weight; the anchor's own d is 0 (r_aa = 1) and a dropped laser weighs 0, so
    // neither adds to the sums of w·d and w·d² (their fringe is not computed).
    for (var l = 0u; l < nl; l++) {
        let w = wgt[l];
        sw += w;
        if (l == a || w == 0.0) {
            continue;
        }
        let d = -(laser_const(l, 0u) + laser_const(l, 1u)) * fringe(a, l, m, fa, phi[l]).y;
        swd += w * d;
        swdd += w * d * d;
    }
    let mean = swd / sw;
    return vec2<f32>(max(swdd - swd * mean, 0.0), mean);
}

// Weighted search: every anchor order whose candidate lies inside the height range. Ties: first.
// Pruned (unless the exact runner-up cost is wanted: the robust solver's, where a bound against
// it skipped too few candidates to pay for itself): the anchor and the sharpest laser k alone
// spread at least w_a·w_k/(w_a + w_k)·d_k² (a subset's spread about its own mean is below the
// whole's about the whole's), so a candidate whose bound, less the f32 slack, is above the best
// cost so far cannot win and is skipped. The slack covers the cost's rounding: PRUNE_SLACK times
// Σ w_l (λ_l/4)², the most Σ w d² can be (|d_l| ≤ λ_l/4).
fn search_weighted(a: u32, nl: u32, runner_up: bool) -> Decision {
    let fa = phi[a];
    let m_min = i32(ceil(laser_const(a, 2u) - fa));
    let m_max = i32(floor(laser_const(a, 3u) - fa));
    var k = nl;
    var pair = 0.0;
    var slack = 0.0;
    if (pruned() && !runner_up) {
        var mask = 0u;
        for (var l = 0u; l < nl; l++) {
            mask |= select(0u, 1u << l, wgt[l] > 0.0);
            slack += wgt[l] / (16.0 * laser_const(l, 6u));
        }
        k = sharpest(a, mask, nl, false);
        if (k < nl) {
            pair = wgt[a] * wgt[k] / (wgt[a] + wgt[k]);
        }
        slack *= PRUNE_SLACK;
    }
    let half_k = laser_const(min(k, nl - 1u), 0u) + laser_const(min(k, nl - 1u), 1u);
    var d = Decision(m_min, BIG, BIG, UNRESOLVED);
    for (var m = m_min; m <= m_max; m++) {
        if (k < nl) {
            let dk = half_k * fringe(a, k, m, fa, phi[k]).y;
            let bound = pair * dk * dk;
            if (bound * (1.0 - PRUNE_SLACK) - slack > d.cost) {
                continue;
            }
        }
        let cost = spread(a, nl, m).x;
        if (cost < d.cost) {
            d.runner_up = d.cost;
            d.m = m;
            d.cost = cost;
            d.reason = OK;
        } else if (cost < d.runner_up) {
            d.runner_up = cost;
        }
    }
    return d;
}

// Weighted height: h_a + d̄, the large exact part of h_a summed last.
fn height_weighted(a: u32, nl: u32, m: i32) -> f32 {
    let fm = f32(m);
    let big = laser_const(a, 0u) * fm;
    let small = laser_const(a, 1u) * fm + (laser_const(a, 0u) + laser_const(a, 1u)) * phi[a];
    return big + (small + spread(a, nl, m).y);
}

// The anchor of the usable lasers `mask`: the first (per-pixel) or the one of most weight.
fn anchor(mask: u32, nl: u32) -> u32 {
    var a = firstTrailingBit(mask);
    if ((p.flags & WEIGHTED) != 0u) {
        for (var l = a + 1u; l < nl; l++) {
            if ((mask & (1u << l)) != 0u && wgt[l] > wgt[a]) {
                a = l;
            }
        }
    }
    return a;
}

// Every laser of the pixel fitted (`fit_laser`, which caches its phase and weight): the mask of
// the usable ones, their mean fringe contrast, and the worst status of the others.
struct Lasers {
    mask: u32,
    quality: f32,
    worst: u32,
}

fn fit_lasers(base: u32, plane: u32, nl: u32) -> Lasers {
    var quality = 0.0;
    var used = 0u;
    var mask = 0u;
    var worst = OK;
    for (var l = 0u; l < nl; l++) {
        let fit = fit_laser(base, plane, l);
        if (fit.status == OK) {
            mask |= 1u << l;
            quality += fit.contrast;
            used += 1u;
        } else {
            worst = max(worst, fit.status);
        }
    }
    return Lasers(mask, quality / f32(used), worst);
}

// One pixel solved: its height (NaN unless reason is OK), quality, reason, the anchor and what
// its search decided (the robust solver keeps the last two for its prior passes).
struct Solved {
    height: f32,
    quality: f32,
    reason: u32,
    anchor: u32,
    decision: Decision,
}

// Fit the lasers of the pixel whose first bucket is at `base`, then decide its order: per pixel,
// or weighted (`runner_up`: keeping the runner-up's cost exactly, for the robust passes). Dropped
// lasers leave a pixel NaN when the others cannot decide (all together do: the host checked); the
// worst drop names the reason.
fn solve_pixel(base: u32, plane: u32, nl: u32, weighted: bool, runner_up: bool) -> Solved {
    let lasers = fit_lasers(base, plane, nl);
    let mask = lasers.mask;
    let worst = lasers.worst;
    var out = Solved(nan(), lasers.quality, OK, 0u, Decision(0, BIG, BIG, OK));
    if (worst == NONFINITE || mask == 0u) {
        out.reason = select(worst, NONFINITE, worst == NONFINITE);
        out.quality = nan();
        return out;
    }
    out.anchor = anchor(mask, nl);
    let a = out.anchor;
    if (worst != OK && ambiguous(a, mask, nl)) {
        out.reason = worst;
    } else if (weighted) {
        out.decision = search_weighted(a, nl, runner_up);
        out.reason = out.decision.reason;
        if (out.reason == OK) {
            out.height = height_weighted(a, nl, out.decision.m);
        }
    } else {
        out.decision = search_per_pixel(a, mask, nl);
        out.height = height_per_pixel(a, mask, nl, out.decision.m);
    }
    return out;
}

@compute @workgroup_size(256, 1, 1)
fn classical(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= plane) {
        return;
    }
    let nl = min(p.lasers, MAX_LASERS);
    let solved = solve_pixel(gid.z * nl * p.buckets * plane + i, plane, nl, (p.flags & WEIGHTED) != 0u, false);
    let height = solved.height;
    let quality = solved.quality;
    let reason = solved.reason;

    let o = gid.z * p.out_c * plane + i;
    out[o] = height;
    var ch = 1u;
    if ((p.flags & QUALITY) != 0u) {
        out[o + plane] = quality;
        ch += 1u;
    }
    if ((p.flags & REASON) != 0u) {
        out[o + ch * plane] = f32(reason);
    }
}
