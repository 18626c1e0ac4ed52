// `--unwrap robust`: the weighted per-pixel likelihood plus a spatial prior, in 1 + PASSES
// dispatches over the same (h*w, image) grid as `classical`. CPU f64 reference and the rule:
// src/ops/classical/robust.rs.
//
//   robust_solve   buckets → `state` (per pixel, planar: phases in turns, weights, anchor, best
//                  order, its cost, the runner-up's cost, reason, quality) and `next` = the best
//                  height (NaN when invalid)
//   robust_prior   `prev` → `next`: every valid pixel re-decided from its neighbours' heights
//   robust_final   the last prior pass, writing `out` as `classical` does (height, quality, reason)
//
// A prior pass, per valid pixel: the threshold t = p.decisive * (lower median of the best costs
// of the valid pixels within p.radius, itself included); the lower median of the finite heights
// of `prev` within p.radius, itself left out; the least-cost anchor candidate of the range within
// ROBUST_REACH fringes of it. The pixel takes that candidate unless its own best costs less by more
// than t; with no neighbour height or no candidate near the median it keeps its own best when the
// runner-up loses by more than t, else it is unresolved (NaN).

@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read> prev: array<f32>;
@group(0) @binding(6) var<storage, read_write> next: array<f32>;

// ops::classical::robust::REACH and the most pixels of a neighbourhood (radius ≤ 3).
const ROBUST_REACH: f32 = 0.5;
const MAX_NEIGHBOURS: u32 = 49u;

var<private> nbr: array<f32, 49>;

fn state_stride() -> u32 {
    return 2u * p.lasers + 6u;
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
    let base = gid.z * nl * p.buckets * plane + i;
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
    quality /= f32(used);
    var reason = OK;
    var height = nan();
    var d = Decision(0, BIG, BIG, OK);
    var a = 0u;
    if (worst == NONFINITE) {
        reason = NONFINITE;
        quality = nan();
    } else if (mask == 0u) {
        reason = worst;
        quality = nan();
    } else {
        a = anchor(mask, nl);
        if (worst != OK && ambiguous(a, mask, nl)) {
            reason = worst;
        } else {
            d = search_weighted(a, nl);
            reason = d.reason;
            if (reason == OK) {
                height = height_weighted(a, nl, d.m);
            }
        }
    }
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
    next[z * plane + i] = height;
}

// Sort the first k values of `nbr` (insertion sort) and return the lower median.
fn lower_median(k: u32) -> f32 {
    for (var j = 1u; j < k; j++) {
        let v = nbr[j];
        var q = j;
        for (; q > 0u; q--) {
            let u = nbr[q - 1u];
            if (u <= v) {
                break;
            }
            nbr[q] = u;
        }
        nbr[q] = v;
    }
    return nbr[(k - 1u) / 2u];
}

// The neighbourhood of pixel (y, x) inside the frame: [y0, y1) x [x0, x1).
fn hood(i: u32) -> vec4<u32> {
    let r = p.radius;
    let y = i / p.w;
    let x = i % p.w;
    return vec4<u32>(select(0u, y - r, y >= r), min(y + r + 1u, p.h), select(0u, x - r, x >= r), min(x + r + 1u, p.w));
}

// What a prior pass decides for pixel i of image z: its height or NaN.
fn prior_height(z: u32, i: u32) -> f32 {
    let plane = p.h * p.w;
    let nl = min(p.lasers, MAX_LASERS);
    if (u32(state[slot(z, 2u * nl + 4u, i)]) != OK) {
        return nan();
    }
    let b = hood(i);
    // The threshold: the lower median best cost of the valid neighbourhood, itself included.
    var k = 0u;
    for (var y = b.x; y < b.y; y++) {
        for (var x = b.z; x < b.w; x++) {
            let j = y * p.w + x;
            if (u32(state[slot(z, 2u * nl + 4u, j)]) == OK && k < MAX_NEIGHBOURS) {
                nbr[k] = state[slot(z, 2u * nl + 2u, j)];
                k += 1u;
            }
        }
    }
    let t = p.decisive * lower_median(k);
    // The lower median of the neighbours' finite heights, itself left out.
    k = 0u;
    for (var y = b.x; y < b.y; y++) {
        for (var x = b.z; x < b.w; x++) {
            let j = y * p.w + x;
            let v = prev[z * plane + j];
            if (j != i && is_finite(v) && k < MAX_NEIGHBOURS) {
                nbr[k] = v;
                k += 1u;
            }
        }
    }
    for (var l = 0u; l < nl; l++) {
        phi[l] = state[slot(z, l, i)];
        wgt[l] = state[slot(z, nl + l, i)];
    }
    let a = u32(state[slot(z, 2u * nl, i)]);
    let m_best = i32(state[slot(z, 2u * nl + 1u, i)]);
    let cost = state[slot(z, 2u * nl + 2u, i)];
    let runner_up = state[slot(z, 2u * nl + 3u, i)];
    let own = height_weighted(a, nl, m_best);
    let alone = select(nan(), own, runner_up - cost > t);
    if (k == 0u) {
        return alone;
    }
    let u = lower_median(k) / (laser_const(a, 0u) + laser_const(a, 1u));
    let fa = phi[a];
    let lo = max(i32(ceil(u - ROBUST_REACH - fa)), i32(ceil(laser_const(a, 2u) - fa)));
    let hi = min(i32(floor(u + ROBUST_REACH - fa)), i32(floor(laser_const(a, 3u) - fa)));
    if (lo > hi) {
        return alone;
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
