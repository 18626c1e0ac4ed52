// Synthetic PSI frames, one band of rows at a time (see src/ops/synth.rs).
//
// `surface`: one invocation per pixel of the band (1-D, folded by lib/grid.wgsl's flat_index).
// Writes three planes of `rows * w` f32 into `field`: the height (µm), A and B of the pixel
// (after the A/B variation and the patches).
// `buckets`: one invocation per output u32 word of the band, channel-major: word i of channel ch
// is `out[ch * wpc + i]` and holds 1 (f32), 2 (u16, f16) or 4 (u8) consecutive elements of that
// channel's `rows * w` band, little-endian; the last word of a channel is zero-padded.
//
// Everything is f32 (the `T` alias of the prelude is unused). Precision:
// - Heights of the seed surface come from separable tables the host computed in f64 (one entry
//   per column and per row), so a pixel costs one product, two sums and a square root and lands
//   within about one f32 ulp of the CPU's f64 value.
// - The phase 4π·h/λ + δ is formed in turns (2π = 1), δ/2π from the host's table of each
//   channel's step (k/N, or the calibrated step): u = h · (2/λ) with both factors split
//   into 12-bit leading parts, so the large product hi·hi is exact and its integer part is
//   dropped exactly; only the fraction (|·| < 1) meets rounding. The cosine is a range-reduced
//   Cephes polynomial (about 1e-7 absolute): the built-in cos is only loosely specified.
// - Noise: a counter-based hash of (seed, channel, row, column) and Box–Muller, so every value
//   is independent of how the frame is cut into bands.

struct GenParams {
    w: u32,
    rows: u32,
    row0: u32,
    channels: u32,
    buckets: u32,
    // 0: seed surface (tables), 1: random terms, 2: steep cap (tables).
    shape: u32,
    terms: u32,
    // 0: f32, 1: u8, 2: u16, 3: f16.
    kind: u32,
    // Output words per channel band.
    wpc: u32,
    seed_lo: u32,
    seed_hi: u32,
    _pad0: u32,
    a: f32,
    b: f32,
    ab_var: f32,
    sigma: f32,
    // A and B variation fields: cos(2π(f.x·x + f.y)) · cos(2π(f.z·y + f.w)).
    fa: vec4<f32>,
    fb: vec4<f32>,
    // Steep cap: h = C / (sqrt(cap_q + C) + cap_root) - cap_half_sag, C = col.y + row.y.
    cap_q: f32,
    cap_root: f32,
    cap_half_sag: f32,
    patches: u32,
    // A - B of saturated pixels.
    sat_base: f32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

// A rectangle of rows rect.x .. rect.z, columns rect.y .. rect.w: B × factor, and A = sat_base + B
// when saturate is 1.
struct Patch {
    rect: vec4<u32>,
    factor: f32,
    saturate: u32,
    _pad: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: GenParams;
// Per column (w entries) then per row (h entries): seed tables
// column: [x, 15·exp(-(x-0.2)²/0.2), 5x, 100·(x+0.5)²], row: [y, exp(-(y+0.3)²/0.2), 2.5y, 100·(y-0.4)²];
// steep tables: column [x, c·(w-1-c), 0, 0], row [y, r·(h-1-r), 0, 0].
@group(0) @binding(1) var<storage, read> coords: array<vec4<f32>>;
// Random surface terms, 8 values each: [kind, amplitude, cx, cy, p0, p1, p2, p3].
@group(0) @binding(2) var<storage, read> terms: array<f32>;
// Three planes of rows * w: height, A, B.
@group(0) @binding(3) var<storage, read_write> field: array<f32>;
// Per laser: [2/λ hi, 2/λ lo].
@group(0) @binding(4) var<storage, read> lasers: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;
// Per channel: its phase step δ/2π in [0, 1].
@group(0) @binding(6) var<storage, read> steps: array<f32>;
// `p.patches` patches (at least one entry).
@group(0) @binding(7) var<storage, read> patches: array<Patch>;

const INV_2_24: f32 = 5.9604644775390625e-8;

// The smooth A/B variation shape in [-1, 1].
fn ab_shape(f: vec4<f32>, x: f32, y: f32) -> f32 {
    return cos_sin_turns(f.x * x + f.y).x * cos_sin_turns(f.z * y + f.w).x;
}

fn random_height(x: f32, y: f32) -> f32 {
    var h = 0.0;
    for (var t = 0u; t < p.terms; t++) {
        let o = 8u * t;
        let kind = u32(terms[o]);
        let amp = terms[o + 1u];
        let dx = x - terms[o + 2u];
        let dy = y - terms[o + 3u];
        let p0 = terms[o + 4u];
        let p1 = terms[o + 5u];
        let p2 = terms[o + 6u];
        let p3 = terms[o + 7u];
        let r2 = dx * dx + dy * dy;
        switch kind {
            // Gaussian bump, p0 = 1/σ².
            case 0u: {
                h += amp * exp(-r2 * p0);
            }
            // Rounded cap amp·(1 - ρ²)², ρ² = r²·p0 < 1.
            case 1u: {
                let q = max(1.0 - r2 * p0, 0.0);
                h += amp * q * q;
            }
            // Tilt plane amp·(p0·x + p1·y) through (cx, cy).
            case 2u: {
                h += amp * (p0 * dx + p1 * dy);
            }
            // Smooth step (amp/2)·tanh(p2·(p0·dx + p1·dy)), written with exp for accuracy.
            case 3u: {
                let s = p2 * (p0 * dx + p1 * dy);
                let e = exp(-2.0 * abs(s));
                h += 0.5 * amp * sign(s) * (1.0 - e) / (1.0 + e);
            }
            // Ripple amp·cos(2π(p0·x + p1·y + p2))·exp(-r²·p3).
            default: {
                h += amp * cos_sin_turns(p0 * x + p1 * y + p2).x * exp(-r2 * p3);
            }
        }
    }
    return h;
}

@compute @workgroup_size(256, 1, 1)
fn surface(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let plane = p.rows * p.w;
    if (i >= plane) {
        return;
    }
    let col = coords[i % p.w];
    let row = coords[p.w + p.row0 + i / p.w];
    var h: f32;
    if (p.shape == 0u) {
        h = (col.y * row.y + (col.z + row.z)) + sqrt(col.w + row.w);
    } else if (p.shape == 1u) {
        h = random_height(col.x, row.x);
    } else {
        let c = col.y + row.y;
        let d = sqrt(p.cap_q + c) + p.cap_root;
        h = select(0.0, c / d, d > 0.0) - p.cap_half_sag;
    }
    var a = p.a;
    var b = p.b;
    if (p.ab_var != 0.0) {
        a *= 1.0 + p.ab_var * ab_shape(p.fa, col.x, row.x);
        b *= 1.0 + p.ab_var * ab_shape(p.fb, col.x, row.x);
    }
    let y = p.row0 + i / p.w;
    let x = i % p.w;
    var saturate = 0u;
    for (var k = 0u; k < p.patches; k++) {
        let q = patches[k];
        if (y >= q.rect.x && y < q.rect.z && x >= q.rect.y && x < q.rect.w) {
            b *= q.factor;
            saturate |= q.saturate;
        }
    }
    if (saturate != 0u) {
        a = p.sat_base + b;
    }
    field[i] = h;
    field[plane + i] = a;
    field[2u * plane + i] = b;
}

// PCG-based integer hash (Jarzynski & Olano, "Hash functions for GPU rendering", 2020).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// A standard normal for (channel, row, column) under the frame's seed.
fn gauss(ch: u32, row: u32, col: u32) -> f32 {
    let key = pcg(col + pcg(row + pcg(ch + pcg(p.seed_lo + pcg(p.seed_hi)))));
    let u1 = f32((pcg(key) >> 8u) + 1u) * INV_2_24; // (0, 1]
    let u2 = f32(pcg(key ^ 0x9e3779b9u) >> 8u) * INV_2_24; // [0, 1)
    return sqrt(-2.0 * log(u1)) * cos_sin_turns(u2).x;
}

// Round half away from zero (Rust's f32::round; WGSL's round() goes to even).
fn round_away(v: f32) -> f32 {
    let t = trunc(v);
    return select(t, t + sign(v), abs(v - t) >= 0.5);
}

// IEEE binary16 bits of v, round to nearest even (as half::f16::from_f32).
fn f16_bits(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    let sgn = (bits >> 16u) & 0x8000u;
    let a = bits & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sgn | 0x7e00u; // NaN
    }
    if (a >= 0x477ff000u) {
        return sgn | 0x7c00u; // rounds to infinity
    }
    if (a >= 0x38800000u) {
        let r = a + 0xfffu + ((a >> 13u) & 1u);
        return sgn | ((r >> 13u) - (112u << 10u));
    }
    // Subnormal or zero: units of 2^-24, exact scaling, round() is half-to-even.
    return sgn | u32(round(abs(v) * 16777216.0));
}

@compute @workgroup_size(256, 1, 1)
fn buckets(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.channels * p.wpc) {
        return;
    }
    let ch = i / p.wpc;
    let word_index = i % p.wpc;
    let plane = p.rows * p.w;
    let laser = ch / p.buckets;
    let c_hi = lasers[2u * laser];
    let c_lo = lasers[2u * laser + 1u];
    let shift = steps[ch];
    var per = 1u;
    if (p.kind == 1u) {
        per = 4u;
    } else if (p.kind >= 2u) {
        per = 2u;
    }
    var word = 0u;
    for (var s = 0u; s < per; s++) {
        let e = word_index * per + s;
        if (e >= plane) {
            break;
        }
        let t = fringe_turns(field[e], c_hi, c_lo) + shift;
        var v = field[plane + e] + field[2u * plane + e] * cos_sin_turns(t).x;
        if (p.sigma > 0.0) {
            v += p.sigma * gauss(ch, p.row0 + e / p.w, e % p.w);
        }
        switch p.kind {
            case 1u: {
                word |= u32(clamp(round_away(v), 0.0, 255.0)) << (8u * s);
            }
            case 2u: {
                word |= u32(clamp(round_away(v), 0.0, 65535.0)) << (16u * s);
            }
            case 3u: {
                word |= f16_bits(v) << (16u * s);
            }
            default: {
                word = bitcast<u32>(v);
            }
        }
    }
    out[i] = word;
}
