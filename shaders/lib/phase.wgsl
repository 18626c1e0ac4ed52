// Accurate phase arithmetic shared by the physics kernels (the built-in sin/cos may be off by far
// more than the 1e-7 these need): heights become fringe phases in turns with exact splitting.

const TWO_PI: f32 = 6.28318530717958647692;

// cos(x), sin(x) for |x| <= π/4: Cephes' cosf/sinf polynomials.
fn cos_poly(x: f32) -> f32 {
    let z = x * x;
    return ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
}

fn sin_poly(x: f32) -> f32 {
    let z = x * x;
    return ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * x + x;
}

// (cos 2πt, sin 2πt) for moderate t (turns), about 1e-7 absolute error.
fn cos_sin_turns(t: f32) -> vec2<f32> {
    let r = t - round(t); // [-0.5, 0.5], exact
    let q = round(4.0 * r); // quarter turns, -2..2
    let x = (r - 0.25 * q) * TWO_PI; // |x| <= π/4; the subtraction is exact (Sterbenz)
    let c = cos_poly(x);
    let s = sin_poly(x);
    switch (u32(i32(q) + 4) & 3u) {
        case 1u: {
            return vec2<f32>(-s, c);
        }
        case 2u: {
            return vec2<f32>(-c, -s);
        }
        case 3u: {
            return vec2<f32>(s, -c);
        }
        default: {
            return vec2<f32>(c, s);
        }
    }
}

// v with only its 12 leading significant bits (exact split: v = hi12(v) + (v - hi12(v))).
fn hi12(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) & 0xfffff000u);
}

// frac(h · c) in turns (up to an integer), c = c_hi + c_lo with c_hi of 12 significant bits.
fn fringe_turns(h: f32, c_hi: f32, c_lo: f32) -> f32 {
    let h_hi = hi12(h);
    let h_lo = h - h_hi;
    let big = h_hi * c_hi; // exact: 12 x 12 bits
    let f = big - floor(big); // exact
    return f + (h_hi * c_lo + h_lo * (c_hi + c_lo));
}

