// `--unwrap robust`: the weighted per-pixel likelihood plus a noise floor and a spatial prior, in
// 2 + PASSES dispatches over the same (h*w, image) grid as `classical`. CPU f64 reference and the
// rule: src/ops/classical/robust.rs.
//
//   robust_solve   buckets → `state` (per pixel, planar: phases in turns, weights, anchor, best
//                  order, its cost, the runner-up's cost, reason, quality, the threshold (which
//                  the first prior pass writes), the best height, the noise variance estimate)
//                  and `next` = the best height (NaN when invalid)
//   robust_noise   a valid pixel whose modulation its neighbourhood's noise explains → reason 1
//                  (low modulation) in `state`, NaN in `next` (the same plane the solve wrote)
//   robust_prior   `prev` → `next`: every valid pixel re-decided from its neighbours' heights
//   robust_final   the last prior pass, writing `out` as `classical` does (height, quality, reason)
//
// The noise floor, per valid pixel: σ̂² = the lower median of the variance estimates (residual sum
// of squares over degrees of freedom of the N-step fits) of the pixels within ROBUST_RADIUS that
// have one, over p.noise_median. Σ_l n_l B_l² / 2σ̂² is a χ² of 2L degrees of freedom for pure
// noise (B = 0): the pixel is dropped when that is below its quantile at p.noise_z_alone, or below
// the one at p.noise_z and so are most of the valid pixels within ROBUST_RADIUS (Wilson–Hilferty
// quantiles).
//
// A prior pass, per valid pixel: the threshold t = p.decisive * (lower median of the best costs
// of the valid pixels within ROBUST_RADIUS, itself included); the lower median of the finite heights
// of `prev` within ROBUST_RADIUS, itself left out; the least-cost anchor candidate of the range within
// ROBUST_REACH fringes of it. The pixel takes that candidate unless its own best costs less by more
// than t; with no neighbour height or no candidate near the median it keeps its own best when the
// runner-up loses by more than t, else it is unresolved (NaN).

@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read> prev: array<f32>;
@group(0) @binding(6) var<storage, read_write> next: array<f32>;

// ops::classical::robust::{REACH, RADIUS}: the neighbourhood is SIDE x SIDE = HOOD pixels, slot
// s at (dy, dx) = (s / SIDE, s % SIDE) - RADIUS; ABSENT marks a slot without a value.
const ROBUST_REACH: f32 = 0.5;
const ROBUST_RADIUS: i32 = 2;
const SIDE: u32 = 5u;
const HOOD: u32 = 25u;
const ABSENT: f32 = 3.4e38;

// A neighbourhood's values, one per slot: a function-local array that only the code that
// gathers and sorts them declares.
alias Hood = array<f32, 25>;

fn state_stride() -> u32 {
    return 2u * p.lasers + 9u;
}

// ops::classical's flag of the first prior pass.
const FIRST_PASS: u32 = 16u;

// The pixel at slot s of the neighbourhood of (y, x), or -1 outside the frame.
fn hood_pixel(y: i32, x: i32, s: u32) -> i32 {
    let yy = y + i32(s / SIDE) - ROBUST_RADIUS;
    let xx = x + i32(s % SIDE) - ROBUST_RADIUS;
    if (yy >= 0 && yy < i32(p.h) && xx >= 0 && xx < i32(p.w)) {
        return yy * i32(p.w) + xx;
    }
    return -1;
}

// Slot j of pixel i of image z in `state`.
fn slot(z: u32, j: u32, i: u32) -> u32 {
    return (z * state_stride() + j) * p.h * p.w + i;
}

@compute @workgroup_size(256, 1, 1)
fn robust_solve(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= plane) {
        return;
    }
    let nl = min(p.lasers, MAX_LASERS);
    let solved = solve_pixel(gid.z * nl * p.buckets * plane + i, plane, nl, true, true);
    let d = solved.decision;
    let a = solved.anchor;
    let reason = solved.reason;
    let quality = solved.quality;
    let height = solved.height;
    let z = gid.z;
    for (var l = 0u; l < nl; l++) {
        state[slot(z, l, i)] = phi[l];
        state[slot(z, nl + l, i)] = wgt[l];
    }
    state[slot(z, 2u * nl, i)] = f32(a);
    state[slot(z, 2u * nl + 1u, i)] = f32(d.m);
    state[slot(z, 2u * nl + 2u, i)] = d.cost;
    state[slot(z, 2u * nl + 3u, i)] = d.runner_up;
    state[slot(z, 2u * nl + 4u, i)] = f32(reason);
    state[slot(z, 2u * nl + 5u, i)] = quality;
    state[slot(z, 2u * nl + 7u, i)] = height;
    // The variance estimate of the fits that used every bucket (-1: none, or an invalid pixel).
    var rss = 0.0;
    var dof = 0u;
    for (var l = 0u; l < nl; l++) {
        if (wgt[l] > 0.0 && resid[l] >= 0.0) {
            rss += resid[l];
            dof += p.buckets - 3u;
        }
    }
    state[slot(z, 2u * nl + 8u, i)] = select(-1.0, rss / f32(max(dof, 1u)), reason == OK && dof > 0u);
    next[z * plane + i] = height;
}

// The quantile of χ² with k degrees of freedom at the normal quantile z (Wilson–Hilferty).
fn chi2_quantile(k: f32, z: f32) -> f32 {
    let v = 2.0 / (9.0 * k);
    let c = 1.0 - v + z * sqrt(v);
    return k * c * c * c;
}

@compute @workgroup_size(256, 1, 1)
fn robust_noise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= plane) {
        return;
    }
    let z = gid.z;
    let nl = min(p.lasers, MAX_LASERS);
    if (u32(state[slot(z, 2u * nl + 4u, i)]) != OK) {
        return;
    }
    // The neighbourhood's variance estimates (its own included); reasons are not read, as this
    // pass rewrites them.
    let y = i32(i / p.w);
    let x = i32(i % p.w);
    var hood: Hood;
    var k = 0u;
    for (var s = 0u; s < HOOD; s++) {
        let q = hood_pixel(y, x, s);
        hood[s] = ABSENT;
        if (q >= 0) {
            let v = state[slot(z, 2u * nl + 8u, u32(q))];
            if (v >= 0.0) {
                hood[s] = v;
                k += 1u;
            }
        }
    }
    if (k == 0u) {
        return;
    }
    let sigma2 = lower_median(&hood, k) / p.noise_median;
    if (sigma2 <= 0.0) {
        return;
    }
    // Above the quantile the noise rarely reaches, the pixel is modulated; below the one it
    // reaches 1 time in 100, it is not; between, its neighbourhood decides: most of the valid
    // pixels there below the first too (each measured against this pixel's σ̂).
    let excess = modulation_excess(z, i, nl, sigma2, p.noise_z);
    if (excess >= 0.0) {
        return;
    }
    var drop = modulation_excess(z, i, nl, sigma2, p.noise_z_alone) < 0.0;
    if (!drop) {
        var j = 0u;
        for (var s = 0u; s < HOOD; s++) {
            let q = hood_pixel(y, x, s);
            hood[s] = ABSENT;
            if (q >= 0) {
                if (state[slot(z, 2u * nl + 8u, u32(q))] >= 0.0) {
                    hood[s] = modulation_excess(z, u32(q), nl, sigma2, p.noise_z);
                    j += 1u;
                }
            }
        }
        drop = lower_median(&hood, j) < 0.0;
    }
    if (drop) {
        state[slot(z, 2u * nl + 4u, i)] = f32(LOW);
        next[z * plane + i] = nan();
    }
}

// Σ_l n_l B_l² of pixel q's usable lasers over 2σ² less its pure-noise χ² quantile at z: below
// 0, the noise explains its modulation.
fn modulation_excess(z: u32, q: u32, nl: u32, sigma2: f32, quantile: f32) -> f32 {
    var modulation = 0.0;
    var used = 0u;
    for (var l = 0u; l < nl; l++) {
        let w = state[slot(z, nl + l, q)];
        if (w > 0.0) {
            modulation += w / laser_const(l, 6u);
            used += 1u;
        }
    }
    return modulation / (2.0 * sigma2) - chi2_quantile(f32(2u * used), quantile);
}

// Compare-exchange slots i < j of `v` (constant arguments: the array stays in registers).
fn cs(v: ptr<function, Hood>, i: u32, j: u32) {
    let a = (*v)[i];
    let b = (*v)[j];
    (*v)[i] = min(a, b);
    (*v)[j] = max(a, b);
}

// The lower median (sorted element ⌊(k−1)/2⌋) of the k values of `v` below ABSENT: Batcher's
// odd-even merge sorting network for 32 slots, less the comparators that touch slots 25..31
// (ABSENT there would never move), 140 compare-exchanges and no branch.
fn lower_median(v: ptr<function, Hood>, k: u32) -> f32 {
    cs(v, 0u, 1u); cs(v, 2u, 3u); cs(v, 0u, 2u); cs(v, 1u, 3u); cs(v, 1u, 2u); cs(v, 4u, 5u); cs(v, 6u, 7u); cs(v, 4u, 6u);
    cs(v, 5u, 7u); cs(v, 5u, 6u); cs(v, 0u, 4u); cs(v, 2u, 6u); cs(v, 2u, 4u); cs(v, 1u, 5u); cs(v, 3u, 7u); cs(v, 3u, 5u);
    cs(v, 1u, 2u); cs(v, 3u, 4u); cs(v, 5u, 6u); cs(v, 8u, 9u); cs(v, 10u, 11u); cs(v, 8u, 10u); cs(v, 9u, 11u); cs(v, 9u, 10u);
    cs(v, 12u, 13u); cs(v, 14u, 15u); cs(v, 12u, 14u); cs(v, 13u, 15u); cs(v, 13u, 14u); cs(v, 8u, 12u); cs(v, 10u, 14u); cs(v, 10u, 12u);
    cs(v, 9u, 13u); cs(v, 11u, 15u); cs(v, 11u, 13u); cs(v, 9u, 10u); cs(v, 11u, 12u); cs(v, 13u, 14u); cs(v, 0u, 8u); cs(v, 4u, 12u);
    cs(v, 4u, 8u); cs(v, 2u, 10u); cs(v, 6u, 14u); cs(v, 6u, 10u); cs(v, 2u, 4u); cs(v, 6u, 8u); cs(v, 10u, 12u); cs(v, 1u, 9u);
    cs(v, 5u, 13u); cs(v, 5u, 9u); cs(v, 3u, 11u); cs(v, 7u, 15u); cs(v, 7u, 11u); cs(v, 3u, 5u); cs(v, 7u, 9u); cs(v, 11u, 13u);
    cs(v, 1u, 2u); cs(v, 3u, 4u); cs(v, 5u, 6u); cs(v, 7u, 8u); cs(v, 9u, 10u); cs(v, 11u, 12u); cs(v, 13u, 14u); cs(v, 16u, 17u);
    cs(v, 18u, 19u); cs(v, 16u, 18u); cs(v, 17u, 19u); cs(v, 17u, 18u); cs(v, 20u, 21u); cs(v, 22u, 23u); cs(v, 20u, 22u); cs(v, 21u, 23u);
    cs(v, 21u, 22u); cs(v, 16u, 20u); cs(v, 18u, 22u); cs(v, 18u, 20u); cs(v, 17u, 21u); cs(v, 19u, 23u); cs(v, 19u, 21u); cs(v, 17u, 18u);
    cs(v, 19u, 20u); cs(v, 21u, 22u); cs(v, 16u, 24u); cs(v, 20u, 24u); cs(v, 18u, 20u); cs(v, 22u, 24u); cs(v, 19u, 21u); cs(v, 17u, 18u);
    cs(v, 19u, 20u); cs(v, 21u, 22u); cs(v, 23u, 24u); cs(v, 0u, 16u); cs(v, 8u, 24u); cs(v, 8u, 16u); cs(v, 4u, 20u); cs(v, 12u, 20u);
    cs(v, 4u, 8u); cs(v, 12u, 16u); cs(v, 20u, 24u); cs(v, 2u, 18u); cs(v, 10u, 18u); cs(v, 6u, 22u); cs(v, 14u, 22u); cs(v, 6u, 10u);
    cs(v, 14u, 18u); cs(v, 2u, 4u); cs(v, 6u, 8u); cs(v, 10u, 12u); cs(v, 14u, 16u); cs(v, 18u, 20u); cs(v, 22u, 24u); cs(v, 1u, 17u);
    cs(v, 9u, 17u); cs(v, 5u, 21u); cs(v, 13u, 21u); cs(v, 5u, 9u); cs(v, 13u, 17u); cs(v, 3u, 19u); cs(v, 11u, 19u); cs(v, 7u, 23u);
    cs(v, 15u, 23u); cs(v, 7u, 11u); cs(v, 15u, 19u); cs(v, 3u, 5u); cs(v, 7u, 9u); cs(v, 11u, 13u); cs(v, 15u, 17u); cs(v, 19u, 21u);
    cs(v, 1u, 2u); cs(v, 3u, 4u); cs(v, 5u, 6u); cs(v, 7u, 8u); cs(v, 9u, 10u); cs(v, 11u, 12u); cs(v, 13u, 14u); cs(v, 15u, 16u);
    cs(v, 17u, 18u); cs(v, 19u, 20u); cs(v, 21u, 22u); cs(v, 23u, 24u);
    let want = (max(k, 1u) - 1u) / 2u;
    var out = 0.0;
    for (var s = 0u; s < HOOD; s++) {
        out = select(out, (*v)[s], s == want);
    }
    return out;
}

// Fill `v` with slot j of the state of the valid pixels (reason OK) of the neighbourhood of
// (y, x) inside the frame, itself included, ABSENT elsewhere; how many were valid.
fn gather_state(v: ptr<function, Hood>, z: u32, y: i32, x: i32, j: u32) -> u32 {
    let nl = min(p.lasers, MAX_LASERS);
    var k = 0u;
    for (var s = 0u; s < HOOD; s++) {
        let q = hood_pixel(y, x, s);
        (*v)[s] = ABSENT;
        if (q >= 0) {
            if (u32(state[slot(z, 2u * nl + 4u, u32(q))]) == OK) {
                (*v)[s] = state[slot(z, j, u32(q))];
                k += 1u;
            }
        }
    }
    return k;
}

// Fill `v` with the finite heights of `prev` in the neighbourhood of (y, x) inside the frame,
// itself left out, ABSENT elsewhere; how many there were.
fn gather_heights(v: ptr<function, Hood>, z: u32, y: i32, x: i32) -> u32 {
    var k = 0u;
    for (var s = 0u; s < HOOD; s++) {
        let q = hood_pixel(y, x, s);
        (*v)[s] = ABSENT;
        if (q >= 0 && s != HOOD / 2u) {
            let value = prev[z * p.h * p.w + u32(q)];
            if (is_finite(value)) {
                (*v)[s] = value;
                k += 1u;
            }
        }
    }
    return k;
}

// What a prior pass decides for pixel i of image z: its height or NaN.
fn prior_height(z: u32, i: u32) -> f32 {
    let nl = min(p.lasers, MAX_LASERS);
    if (u32(state[slot(z, 2u * nl + 4u, i)]) != OK) {
        return nan();
    }
    let y = i32(i / p.w);
    let x = i32(i % p.w);
    // The threshold: the lower median best cost of the valid neighbourhood, itself included,
    // found by the first pass and kept in the pixel's state for the others.
    var t = state[slot(z, 2u * nl + 6u, i)];
    if ((p.flags & FIRST_PASS) != 0u) {
        var costs: Hood;
        t = p.decisive * lower_median(&costs, gather_state(&costs, z, y, x, 2u * nl + 2u));
        state[slot(z, 2u * nl + 6u, i)] = t;
    }
    let cost = state[slot(z, 2u * nl + 2u, i)];
    let runner_up = state[slot(z, 2u * nl + 3u, i)];
    let own = state[slot(z, 2u * nl + 7u, i)];
    // Every other candidate loses by more than t: whatever the neighbours say, the pixel keeps
    // its best (the rule below would too), so neither the median nor its phases are needed.
    if (runner_up - cost > t) {
        return own;
    }
    for (var l = 0u; l < nl; l++) {
        phi[l] = state[slot(z, l, i)];
        wgt[l] = state[slot(z, nl + l, i)];
    }
    let a = u32(state[slot(z, 2u * nl, i)]);
    // The lower median of the neighbours' finite heights, itself left out.
    var heights: Hood;
    let k = gather_heights(&heights, z, y, x);
    if (k == 0u) {
        return nan();
    }
    let median = lower_median(&heights, k);
    let u = median / (laser_const(a, 0u) + laser_const(a, 1u));
    let fa = phi[a];
    let lo = max(i32(ceil(u - ROBUST_REACH - fa)), i32(ceil(laser_const(a, 2u) - fa)));
    let hi = min(i32(floor(u + ROBUST_REACH - fa)), i32(floor(laser_const(a, 3u) - fa)));
    if (lo > hi) {
        return nan();
    }
    var best_m = lo;
    var best_cost = BIG;
    for (var m = lo; m <= hi; m++) {
        let c = spread(a, nl, m).x;
        if (c < best_cost) {
            best_m = m;
            best_cost = c;
        }
    }
    if (best_cost - cost <= t) {
        return height_weighted(a, nl, best_m);
    }
    return own;
}

@compute @workgroup_size(256, 1, 1)
fn robust_prior(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= plane) {
        return;
    }
    next[gid.z * plane + i] = prior_height(gid.z, i);
}

@compute @workgroup_size(256, 1, 1)
fn robust_final(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.h * p.w;
    if (i >= plane) {
        return;
    }
    let z = gid.z;
    let nl = min(p.lasers, MAX_LASERS);
    let height = prior_height(z, i);
    var reason = u32(state[slot(z, 2u * nl + 4u, i)]);
    if (reason == OK && !is_finite(height)) {
        reason = UNRESOLVED;
    }
    let o = z * p.out_c * plane + i;
    out[o] = height;
    var ch = 1u;
    if ((p.flags & QUALITY) != 0u) {
        out[o + plane] = state[slot(z, 2u * nl + 5u, i)];
        ch += 1u;
    }
    if ((p.flags & REASON) != 0u) {
        out[o + ch * plane] = f32(reason);
    }
}
